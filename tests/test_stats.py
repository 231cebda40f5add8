"""Turing test statistics in R, checked against scipy/statsmodels and Fleiss (1971)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rpy2.rinterface_lib.embedded import RRuntimeError
from scipy.stats import binomtest, wilcoxon
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.multitest import multipletests

from radsynth.core.tables import read_table, read_table_provenance
from radsynth.turing import stats
from radsynth.turing.ratings import RatingsError, simulate_ratings, write_ratings_csv
from radsynth.turing.stats import fleiss_kappa, run_stats, turing_statistics, write_results

MEANS = {"real": 3.323, "ckpt034": 3.228, "ckpt040": 3.258, "ckpt080": 3.320}  # paper, Results
PROVENANCE = {"code_revision": "test", "config_hash": "none"}

# Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. Psychological
# Bulletin 76(5), 378-382, Table 1: 30 patients, 6 psychiatrists each, 5 diagnoses
# (depression, personality disorder, schizophrenia, neurosis, other); kappa = .430.
# Transcription as in JonasMoss/quadagree data_raw/fleiss1971.csv (= irr's `diagnoses`).
FLEISS_1971_TABLE_1 = np.array(
    [
        [0, 0, 0, 6, 0],
        [0, 3, 0, 0, 3],
        [0, 1, 4, 0, 1],
        [0, 0, 0, 0, 6],
        [0, 3, 0, 3, 0],
        [2, 0, 4, 0, 0],
        [0, 0, 4, 0, 2],
        [2, 0, 3, 1, 0],
        [2, 0, 0, 4, 0],
        [0, 0, 0, 0, 6],
        [1, 0, 0, 5, 0],
        [1, 1, 0, 4, 0],
        [0, 3, 3, 0, 0],
        [1, 0, 0, 5, 0],
        [0, 2, 0, 3, 1],
        [0, 0, 5, 0, 1],
        [3, 0, 0, 1, 2],
        [5, 1, 0, 0, 0],
        [0, 2, 0, 4, 0],
        [1, 0, 2, 0, 3],
        [0, 0, 0, 0, 6],
        [0, 1, 0, 5, 0],
        [0, 2, 0, 1, 3],
        [2, 0, 0, 4, 0],
        [1, 0, 0, 4, 1],
        [0, 5, 0, 1, 0],
        [4, 0, 0, 0, 2],
        [0, 2, 0, 4, 0],
        [1, 0, 5, 0, 0],
        [0, 0, 0, 0, 6],
    ]
)


@pytest.fixture(scope="module", autouse=True)
def r_session() -> None:
    """Start embedded R and source turing_stats.R once for the module."""
    stats._r_functions()


def key_frame(n_quartets: int) -> pd.DataFrame:
    groups = ["real", "ckpt034", "ckpt040", "ckpt080"]
    return pd.DataFrame(
        [
            {"quartet": q, "position": p, "group": groups[(p + q) % 4], "image": f"q{q}_p{p}.png"}
            for q in range(1, n_quartets + 1)
            for p in range(1, 5)
        ]
    )


def null_se_fleiss_nee_landis(table: np.ndarray) -> float:
    """Var0(kappa) of Fleiss, Nee & Landis (1979), written independently of the R code."""
    n_subjects, m = table.shape[0], table[0].sum()
    p = table.sum(axis=0) / table.sum()
    pq = p * (1 - p)
    return math.sqrt(
        2 * (pq.sum() ** 2 - (pq * (1 - 2 * p)).sum()) / (n_subjects * m * (m - 1) * pq.sum() ** 2)
    )


def test_fleiss_1971_worked_example() -> None:
    kappa = fleiss_kappa(pd.DataFrame(FLEISS_1971_TABLE_1), label="Fleiss 1971")
    assert round(kappa.kappa, 3) == 0.430
    assert kappa.kappa == pytest.approx(sm_fleiss_kappa(FLEISS_1971_TABLE_1), rel=1e-12)
    assert (kappa.n_subjects, kappa.n_raters, kappa.n_categories) == (30, 6, 5)
    assert kappa.se0 == pytest.approx(null_se_fleiss_nee_landis(FLEISS_1971_TABLE_1), rel=1e-12)
    assert kappa.z == pytest.approx(kappa.kappa / kappa.se0, rel=1e-12)
    assert kappa.z == pytest.approx(17.65, abs=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_matches_statsmodels_on_random_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_subjects, n_categories, n_raters = (
        rng.integers(5, 60),
        rng.integers(2, 6),
        rng.integers(2, 10),
    )
    table = np.stack(
        [rng.multinomial(n_raters, rng.dirichlet(np.ones(n_categories))) for _ in range(n_subjects)]
    )
    kappa = fleiss_kappa(pd.DataFrame(table), label="random")
    assert kappa.kappa == pytest.approx(sm_fleiss_kappa(table), rel=1e-10, abs=1e-12)
    assert kappa.se0 == pytest.approx(null_se_fleiss_nee_landis(table), rel=1e-10)


def test_fleiss_kappa_needs_equal_raters_per_subject() -> None:
    with pytest.raises(RRuntimeError, match="every subject needs the same number of raters"):
        fleiss_kappa(pd.DataFrame([[2, 1], [1, 1]]), label="unequal")


def signif7(values: np.ndarray) -> np.ndarray:
    """What R ranks with digits.rank = 7 (the sensitivity analysis)."""
    return np.array([float(f"{value:.7g}") for value in values])


def check_signed_rank_tests(
    tests: tuple[stats.SignedRankTest, ...], wide: pd.DataFrame, rounding
) -> None:
    """p-values against scipy on the differences R ranks, Holm against statsmodels."""
    for test in tests:
        differences = rounding((wide["real"] - wide[test.group]).to_numpy())
        method = "exact" if test.exact else "approx"
        assert test.p_value == pytest.approx(
            wilcoxon(differences, zero_method="wilcox", correction=True, method=method).pvalue,
            rel=1e-9,
        ), test
    finite = [t for t in tests if not math.isnan(t.p_value)]
    # R's p.adjust counts only the non-missing p-values, as multipletests on the finite ones
    assert [t.p_holm for t in finite] == pytest.approx(
        list(multipletests([t.p_value for t in finite], method="holm")[1]), rel=1e-12
    )


def check_against_python(
    results: stats.TuringResults, ratings: pd.DataFrame, key: pd.DataFrame
) -> None:
    """Every number R returned, recomputed with pandas / scipy / statsmodels."""
    grouped = ratings.merge(key, on=["quartet", "position"])
    chosen = grouped[grouped["chosen_real"] == 1]
    n_correct = int((chosen["group"] == "real").sum())
    binomial = binomtest(n_correct, len(chosen), 0.25)
    ident = results.identification
    assert (ident.n_correct, ident.n_trials) == (n_correct, len(chosen))
    assert ident.p_value == pytest.approx(binomial.pvalue, rel=1e-9)
    ci = binomial.proportion_ci(confidence_level=0.95, method="exact")
    assert (ident.ci_low, ident.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)

    by_position = pd.crosstab(chosen["quartet"], chosen["position"]).reindex(
        columns=[1, 2, 3, 4], fill_value=0
    )
    assert results.kappa_position.kappa == pytest.approx(
        sm_fleiss_kappa(by_position.to_numpy()), rel=1e-10, abs=1e-12
    )
    correct_table, _ = aggregate_raters(
        chosen.pivot(index="quartet", columns="rater", values="group").eq("real").to_numpy()
    )
    assert results.kappa_correct.kappa == pytest.approx(
        sm_fleiss_kappa(correct_table), rel=1e-10, abs=1e-12
    )

    expected_means = grouped.groupby(["rater", "group"])["rating"].mean()
    got_means = results.per_rater_means.set_index(["rater", "group"])["mean_rating"]
    pd.testing.assert_series_equal(
        got_means.sort_index(), expected_means.sort_index(), rtol=1e-12, check_names=False
    )
    wide = expected_means.unstack("group")
    assert results.group_means == pytest.approx(wide.mean().to_dict(), rel=1e-12)

    assert {t.digits_rank for t in results.tests} == {math.inf}  # R's default
    check_signed_rank_tests(results.tests, wide, rounding=lambda differences: differences)
    assert {t.digits_rank for t in results.sensitivity_tests} == {7.0}
    check_signed_rank_tests(results.sensitivity_tests, wide, rounding=signif7)


def test_statistics_match_python_references() -> None:
    key = key_frame(50)
    methods = set()
    for seed in range(4):
        ratings = simulate_ratings(key, n_raters=8, seed=seed, p_identify=0.29, mean_ratings=MEANS)
        results = turing_statistics(ratings, key, simulated=True)
        check_against_python(results, ratings, key)
        methods |= {t.method for t in results.tests}
        assert [t.group for t in results.tests] == ["ckpt034", "ckpt040", "ckpt080"]
    # both of R's branches were compared with scipy: exact (no ties) and normal approximation
    assert methods == {
        "Wilcoxon signed rank exact test",
        "Wilcoxon signed rank test with continuity correction",
    }


def ratings_with_zero_differences(key: pd.DataFrame) -> pd.DataFrame:
    """ckpt040 rated exactly like real for raters 1-3 (zero differences); ckpt080 for everyone."""
    ratings = simulate_ratings(key, n_raters=8, seed=7, p_identify=0.29, mean_ratings=MEANS).merge(
        key, on=["quartet", "position"]
    )
    real = ratings[ratings["group"] == "real"].set_index(["rater", "quartet"])["rating"]
    copy_of_real = ratings.set_index(["rater", "quartet"]).index.map(real)
    copies = (ratings["group"] == "ckpt080") | (
        (ratings["group"] == "ckpt040")
        & ratings["rater"].isin(["simulated-01", "simulated-02", "simulated-03"])
    )
    ratings["rating"] = np.where(copies, copy_of_real, ratings["rating"])
    return ratings.drop(columns=["group", "image"])


def test_zero_differences_follow_r_and_scipy_wilcox_method() -> None:
    key = key_frame(50)
    ratings = ratings_with_zero_differences(key)
    results = turing_statistics(ratings, key, simulated=True)
    by_group = {t.group: t for t in results.tests}
    assert by_group["ckpt040"].n_nonzero == 5
    assert "cannot compute exact p-value with zeroes" in by_group["ckpt040"].warnings
    assert by_group["ckpt040"].exact is False
    assert math.isnan(by_group["ckpt080"].p_value) and math.isnan(by_group["ckpt080"].p_holm)
    assert by_group["ckpt080"].n_nonzero == 0
    assert math.isnan(results.sensitivity_tests[2].p_value)
    wide = results.per_rater_means.pivot(index="rater", columns="group", values="mean_rating")
    finite = [t for t in results.tests if not math.isnan(t.p_value)]
    check_signed_rank_tests(tuple(finite), wide, rounding=lambda differences: differences)
    check_signed_rank_tests(results.sensitivity_tests[:2], wide, rounding=signif7)


def test_write_results_simulated_and_nan(tmp_path: Path) -> None:
    key = key_frame(50)
    results = turing_statistics(ratings_with_zero_differences(key), key, simulated=True)
    write_results(results, tmp_path, provenance=PROVENANCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "per_rater_means.csv",
        "results.md",
        "statistics.json",
        "tests.csv",
    ]
    for path in tmp_path.iterdir():
        assert "SIMULATED" in path.read_text(), path
    record = json.loads((tmp_path / "statistics.json").read_text())
    assert record["simulated"] is True and record["provenance"] == PROVENANCE
    assert record["identification"]["n_correct"] == results.identification.n_correct
    assert record["kappa"]["identification_position"]["kappa"] == results.kappa_position.kappa
    assert record["tests"][2]["group"] == "ckpt080" and record["tests"][2]["p_value"] is None
    for name in ("per_rater_means.csv", "tests.csv"):
        assert read_table_provenance(tmp_path / name) == PROVENANCE, name
        assert (
            (tmp_path / name)
            .read_text()
            .startswith("# code_revision: test\n# config_hash: none\nratings_origin,")
        ), name
    per_rater = read_table(tmp_path / "per_rater_means.csv")
    assert per_rater["ratings_origin"].eq("SIMULATED").all()
    pd.testing.assert_frame_equal(per_rater.drop(columns="ratings_origin"), results.per_rater_means)
    tests = read_table(tmp_path / "tests.csv")
    assert tests["group"].tolist() == ["ckpt034", "ckpt040", "ckpt080"]
    assert tests["p_holm"].tolist()[:2] == pytest.approx([t.p_holm for t in results.tests][:2])
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith(
        "# Clinical Turing test results (SIMULATED)\n\n> **SIMULATED RATINGS - NOT EXPERT DATA"
    )
    assert f"| real | {results.group_means['real']:.3f} | - | - | - | - |" in markdown
    assert f"| ckpt080 | {results.group_means['ckpt080']:.3f} | NA | NA | NA | NA |" in markdown


def test_run_stats_from_files_expert_labels(tmp_path: Path) -> None:
    key = key_frame(20)
    key.to_csv(tmp_path / "key.csv", index=False)
    ratings = simulate_ratings(key, n_raters=6, seed=2, p_identify=0.5, mean_ratings=MEANS)
    ratings["rater"] = ratings["rater"].str.replace("simulated-", "expert-")
    ratings.attrs.clear()  # stand-in for expert ratings: exercise the non-simulated labels
    for rater, rows in ratings.groupby("rater"):
        write_ratings_csv(rows, tmp_path / "ratings" / f"{rater}.csv")
    results = run_stats(
        tmp_path / "ratings",
        tmp_path / "key.csv",
        tmp_path / "out",
        simulated=False,
        provenance=PROVENANCE,
    )
    direct = turing_statistics(ratings.drop_duplicates(), key, simulated=False)
    assert results.identification == direct.identification and results.tests == direct.tests
    ident = results.identification
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert (
        f"| Identification accuracy | {100 * ident.accuracy:.1f}% ({ident.n_correct}/120 trials) |"
        in markdown
    )
    assert (
        f"| 95% CI, exact binomial | {100 * ident.ci_low:.1f}% to {100 * ident.ci_high:.1f}% |"
        in markdown
    )
    for path in (tmp_path / "out").iterdir():
        assert "SIMULATED" not in path.read_text(), path
    assert read_table(tmp_path / "out" / "tests.csv")["ratings_origin"].eq("expert raters").all()


def ratings_with_sums(key: pd.DataFrame, sums: dict[str, list[int]]) -> pd.DataFrame:
    """Expert ratings whose sum over a group's 50 quartets is sums[group][rater] (100-200):
    ratings of 2 or 4 added to 3s. Rater r picks position 1 + (quartet + r) % 4 as real."""
    rows = []
    for rater in range(len(sums["real"])):
        for group, cells in key.groupby("group"):
            total = sums[group][rater]
            assert 100 <= total <= 200, (group, rater, total)
            n_four, n_two = max(total - 150, 0), max(150 - total, 0)
            values = [4] * n_four + [2] * n_two + [3] * (len(cells) - n_four - n_two)
            for (quartet, position), rating in zip(
                cells[["quartet", "position"]].to_numpy(), values
            ):
                rows.append(
                    {
                        "rater": f"expert-{rater + 1}",
                        "quartet": int(quartet),
                        "position": int(position),
                        "chosen_real": int(position == 1 + (quartet + rater) % 4),
                        "rating": rating,
                    }
                )
    return pd.DataFrame(rows)


def r_wilcox_p(x: np.ndarray, y: np.ndarray, **options: float) -> float:
    """R's own paired wilcox.test p-value, called directly (not through turing_stats.R)."""
    import rpy2.robjects as ro  # R is already started by the module fixture

    test = ro.r["wilcox.test"](ro.FloatVector(x), ro.FloatVector(y), paired=True, **options)
    return float(test.rx2("p.value")[0])


def test_primary_is_r_default_and_digits_rank_7_is_the_sensitivity_analysis(tmp_path: Path) -> None:
    key = key_frame(50)
    real = [166, 171, 180, 175, 160, 190, 185, 170]
    # x 50: ckpt034 differs from real by 166/50 - 161/50 for rater 1 and 171/50 - 166/50 for rater 2
    sums = {
        "real": real,
        "ckpt034": [r - d for r, d in zip(real, [5, 5, 8, -3, 9, 11, -2, 7])],
        "ckpt040": [r - d for r, d in zip(real, [1, -4, 6, 10, 12, 13, 14, 15])],
        "ckpt080": [r - d for r, d in zip(real, [2, 4, -6, 8, 10, 12, 14, -16])],
    }
    ratings = ratings_with_sums(key, sums)
    results = turing_statistics(ratings, key, simulated=False)
    wide = (
        ratings.merge(key, on=["quartet", "position"])
        .groupby(["rater", "group"])["rating"]
        .mean()
        .unstack()
    )
    differences = (wide["real"] - wide["ckpt034"]).to_numpy()
    # the data do what the test needs: equal on paper, different in floating point, equal at 7
    # digits
    assert differences[0] != differences[1] and signif7(differences)[0] == signif7(differences)[1]

    r_primary = {g: r_wilcox_p(wide["real"], wide[g]) for g in ("ckpt034", "ckpt040", "ckpt080")}
    r_sensitivity = {
        g: r_wilcox_p(wide["real"], wide[g], **{"digits.rank": 7})
        for g in ("ckpt034", "ckpt040", "ckpt080")
    }
    assert {t.group: t.p_value for t in results.tests} == pytest.approx(r_primary, rel=1e-12)
    assert {t.group: t.p_value for t in results.sensitivity_tests} == pytest.approx(
        r_sensitivity, rel=1e-12
    )
    primary, sensitivity = results.tests[0], results.sensitivity_tests[0]
    assert (primary.group, primary.exact, primary.warnings) == ("ckpt034", True, "")
    assert (sensitivity.exact, sensitivity.continuity_correction) == (False, True)
    assert sensitivity.warnings == "cannot compute exact p-value with ties"
    assert (
        f"{primary.p_value:.3f}" != f"{sensitivity.p_value:.3f}"
    )  # so the outputs tell them apart
    check_against_python(results, ratings, key)

    write_results(results, tmp_path, provenance=PROVENANCE)
    record = json.loads((tmp_path / "statistics.json").read_text())
    assert record["tests"][0]["p_value"] == pytest.approx(r_primary["ckpt034"], rel=1e-12)
    assert record["tests"][0]["digits_rank"] == "Inf"
    assert record["sensitivity"]["label"] == "sensitivity: digits.rank = 7"
    assert (
        "166/50" in record["sensitivity"]["why"]
        and "not counted as ties" in record["sensitivity"]["why"]
    )
    assert record["sensitivity"]["tests"][0]["p_value"] == pytest.approx(
        r_sensitivity["ckpt034"], rel=1e-12
    )
    assert record["sensitivity"]["tests"][0]["digits_rank"] == 7
    assert record["settings"]["sensitivity_digits_rank"] == 7
    table = read_table(tmp_path / "tests.csv").set_index("group")
    assert table["p_value"].to_dict() == pytest.approx(r_primary, rel=1e-12)
    assert table["sensitivity_p_value"].to_dict() == pytest.approx(r_sensitivity, rel=1e-12)
    assert table["sensitivity_digits_rank"].eq(7).all() and np.isinf(table["digits_rank"]).all()
    markdown = (tmp_path / "results.md").read_text()
    assert (
        "| sensitivity: digits.rank = 7: Wilcoxon p "
        "| sensitivity: digits.rank = 7: Holm-adjusted p |" in markdown
    )
    assert (
        f"| ckpt034 | {results.group_means['ckpt034']:.3f} | {r_primary['ckpt034']:.3f} "
        f"| {primary.p_holm:.3f} "
        f"| {r_sensitivity['ckpt034']:.3f} | {sensitivity.p_holm:.3f} |"
    ) in markdown
    assert (
        "Why the sensitivity: digits.rank = 7 columns exist:" in markdown and "166/50" in markdown
    )
    assert "ckpt034, primary (digits.rank = Inf): Wilcoxon signed rank exact test" in markdown


def test_simulated_ratings_cannot_pass_as_experts() -> None:
    key = key_frame(4)
    ratings = simulate_ratings(key, n_raters=3, seed=0, p_identify=0.3, mean_ratings=MEANS)
    with pytest.raises(RatingsError, match="pass simulated=True"):
        turing_statistics(ratings, key, simulated=False)


def test_bad_settings_are_rejected() -> None:
    key = key_frame(4)
    ratings = simulate_ratings(key, n_raters=1, seed=0, p_identify=0.3, mean_ratings=MEANS)
    with pytest.raises(ValueError) as caught:
        turing_statistics(
            ratings,
            key,
            reference_group="truth",
            sensitivity_digits_rank=math.inf,
            simulated=True,
        )
    assert str(caught.value) == (
        "reference_group 'truth' is not a group of the answer key; sensitivity_digits_rank inf "
        "must be a finite number of significant digits >= 1 (the primary analysis already uses "
        "R's default, Inf); Fleiss' kappa and paired tests need at least 2 raters"
    )


def test_starting_r_leaves_child_pythons_their_own_libpython() -> None:
    """R's start-up exports its LD_LIBRARY_PATH (with the system's libpython); a child Python of
    this process (snakemake, the radsynth CLI) must still start and import ssl."""
    before = os.environ.get("LD_LIBRARY_PATH")
    fleiss_kappa(pd.DataFrame([[2, 0], [1, 1]]), label="warm-up")
    assert os.environ.get("LD_LIBRARY_PATH") == before
    subprocess.run([sys.executable, "-c", "import ssl"], check=True, timeout=60)
