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
    assert kappa.label == "Fleiss 1971"
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
        assert (results.n_raters, results.n_quartets) == (8, 50)
        assert results.r_version.startswith("R version 4.")
        assert results.kappa_position.label == (
            "Fleiss' kappa, identification task (category: chosen position 1-4; subjects: quartets)"
        )
        assert results.kappa_correct.label == (
            "Fleiss' kappa, identification correct vs incorrect (subjects: quartets)"
        )
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
    assert results.simulated is False
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


def hand_results(*, simulated: bool) -> stats.TuringResults:
    """Results written by hand (no R), so every output line below can be written by hand too."""
    inf = math.inf

    def test(group, digits, v, p, holm, method, exact, warnings=""):
        return stats.SignedRankTest(
            "real", group, 4, 4, digits, v, p, holm, method, exact, not exact, warnings
        )

    exact, approx = "Wilcoxon signed rank exact test", "Wilcoxon signed rank test"
    return stats.TuringResults(
        simulated=simulated,
        n_raters=4,
        n_quartets=5,
        identification=stats.Identification(
            7, 20, 0.35, 0.15391, 0.59219, 0.95, 0.25, 0.3828, "Exact binomial test"
        ),
        kappa_position=stats.Kappa(
            stats.KAPPA_POSITION_LABEL, 0.1234, 0.0456, 2.706, 0.0068, 5, 4, 4, 0.4, 0.3
        ),
        kappa_correct=stats.Kappa(
            stats.KAPPA_CORRECT_LABEL, -0.05, 0.1, -0.5, 0.6171, 5, 4, 2, 0.5, 0.52
        ),
        per_rater_means=pd.DataFrame(
            {"rater": ["a", "a"], "group": ["real", "ckpt034"], "mean_rating": [3.5, 3.0]}
        ),
        group_means={"real": 3.3, "ckpt034": 3.2, "ckpt040": 3.25},
        tests=(
            test("ckpt034", inf, 9.0, 0.001, 0.002, exact, True),
            test("ckpt040", inf, 5.5, 0.0004, 0.0008, exact, True),
        ),
        sensitivity_tests=(
            test("ckpt034", 7.0, 9.0, 0.125, 0.25, approx, False, "cannot compute exact p-value"),
            test("ckpt040", 7.0, 5.5, math.nan, math.nan, approx, False),
        ),
        settings={"reference_group": "real", "conf_level": 0.95, "sensitivity_digits_rank": 7.0},
        r_version="R version 4.4.2 (2024-10-31)",
    )


REASON_AT_7 = (
    "The primary analysis ranks the per-rater mean differences as R does by default "
    "(digits.rank = Inf), as the paper's R 4.4.2 run did. Per-rater means are ratios such as "
    "166/50 and 161/50, so differences equal on paper (3.32 - 3.22 and 3.42 - 3.32) may differ "
    "in floating point and then are not counted as ties under Inf, which changes their ranks "
    "and can turn R's tie-corrected normal approximation into its exact test. The sensitivity "
    "analysis rounds the differences to 7 significant digits before ranking, so such "
    "differences count as ties."
)
EXPERT_MARKDOWN = "\n".join(
    [
        "# Clinical Turing test results",
        "",
        "4 raters x 5 quartets (1 real + 1 image per checkpoint).",
        "",
        "| Measure | Value |",
        "|---|---|",
        "| Identification accuracy | 35.0% (7/20 trials) |",
        "| 95% CI, exact binomial | 15.4% to 59.2% |",
        "| Exact binomial test vs chance 25.0%, two-sided | p = 0.383 |",
        "| Fleiss' kappa, identification task (category: chosen position 1-4; subjects: "
        "quartets) | 0.123 (SE0 0.046, z = 2.71, p = 0.007) |",
        "| Fleiss' kappa, identification correct vs incorrect (subjects: quartets) "
        "| -0.050 (SE0 0.100, z = -0.50, p = 0.617) |",
        "",
        "Trials are pooled over raters as in the paper. SE0: standard error of kappa under no "
        "agreement (Fleiss, Nee & Landis 1979); its p-value is the two-sided z-test of kappa = 0.",
        "",
        "Realism ratings (1 = unrealistic, 4 = fully realistic); paired two-sided Wilcoxon "
        "signed-rank tests.",
        "",
        "| Group | Mean rating (mean of 4 per-rater means) | Wilcoxon p vs real | Holm-adjusted p "
        "| sensitivity: digits.rank = 7: Wilcoxon p "
        "| sensitivity: digits.rank = 7: Holm-adjusted p |",
        "|---|---|---|---|---|---|",
        "| real | 3.300 | - | - | - | - |",
        "| ckpt034 | 3.200 | 0.001 | 0.002 | 0.125 | 0.250 |",
        "| ckpt040 | 3.250 | < 0.001 | < 0.001 | NA | NA |",
        "",
        f"Why the sensitivity: digits.rank = 7 columns exist: {REASON_AT_7}",
        "",
        "How R computed the tests:",
        "",
        "- ckpt034, primary (digits.rank = Inf): Wilcoxon signed rank exact test, V = 9, "
        "4 of 4 differences non-zero",
        "- ckpt034, sensitivity (digits.rank = 7): Wilcoxon signed rank test, V = 9, "
        "4 of 4 differences non-zero; R warned: cannot compute exact p-value",
        "- ckpt040, primary (digits.rank = Inf): Wilcoxon signed rank exact test, V = 5.5, "
        "4 of 4 differences non-zero",
        "- ckpt040, sensitivity (digits.rank = 7): Wilcoxon signed rank test, V = 5.5, "
        "4 of 4 differences non-zero",
        "- R version 4.4.2 (2024-10-31).",
        "",
        "Provenance:",
        "",
        "- code_revision: test",
        "- config_hash: none",
        "",
    ]
)


def test_results_markdown_line_by_line() -> None:
    assert stats.results_markdown(hand_results(simulated=False), PROVENANCE) == EXPERT_MARKDOWN
    banner = "> **SIMULATED RATINGS - NOT EXPERT DATA: these numbers only exercise the pipeline**"
    simulated = EXPERT_MARKDOWN.replace(
        "# Clinical Turing test results\n\n",
        f"# Clinical Turing test results (SIMULATED)\n\n{banner}\n\n",
    )
    assert stats.results_markdown(hand_results(simulated=True), PROVENANCE) == (
        f"{simulated}\n{banner}\n"
    )


def test_outputs_refuse_primary_and_sensitivity_tests_that_do_not_pair_up() -> None:
    results = hand_results(simulated=False)
    unpaired = stats.TuringResults(
        **{**results.__dict__, "sensitivity_tests": results.sensitivity_tests[:1]}
    )
    with pytest.raises(ValueError, match="zip"):
        stats.results_markdown(unpaired, PROVENANCE)
    twice = stats.TuringResults(**{**results.__dict__, "tests": results.tests[:1] * 2})
    with pytest.raises(pd.errors.MergeError):
        stats.tests_frame(twice)


def test_statistics_json_exactly(tmp_path: Path) -> None:
    results = hand_results(simulated=False)
    write_results(results, tmp_path, provenance=PROVENANCE)

    def test(group, digits, v, p, holm, method, exact, warnings=""):
        names = ["reference", "group", "n_pairs", "n_nonzero", "digits_rank", "statistic_v"]
        names += ["p_value", "p_holm", "method", "exact", "continuity_correction", "warnings"]
        values = ["real", group, 4, 4, digits, v, p, holm, method, exact, not exact, warnings]
        return dict(zip(names, values))

    exact, approx = "Wilcoxon signed rank exact test", "Wilcoxon signed rank test"
    kappa_names = ["label", "kappa", "se0", "z", "p_value", "n_subjects", "n_raters"]
    kappa_names += ["n_categories", "p_observed", "p_expected"]
    expected = {
        "label": "Expert ratings",
        "simulated": False,
        "n_raters": 4,
        "n_quartets": 5,
        "identification": {
            "n_correct": 7,
            "n_trials": 20,
            "accuracy": 0.35,
            "ci_low": 0.15391,
            "ci_high": 0.59219,
            "conf_level": 0.95,
            "chance": 0.25,
            "p_value": 0.3828,
            "method": "Exact binomial test",
        },
        "kappa": {
            "identification_position": dict(
                zip(kappa_names, [stats.KAPPA_POSITION_LABEL, 0.1234, 0.0456, 2.706, 0.0068, 5])
            )
            | {"n_raters": 4, "n_categories": 4, "p_observed": 0.4, "p_expected": 0.3},
        },
        "group_means": {"real": 3.3, "ckpt034": 3.2, "ckpt040": 3.25},
        "tests": [
            test("ckpt034", "Inf", 9.0, 0.001, 0.002, exact, True),
            test("ckpt040", "Inf", 5.5, 0.0004, 0.0008, exact, True),
        ],
        "sensitivity": {
            "label": "sensitivity: digits.rank = 7",
            "why": REASON_AT_7,
            "tests": [
                test(
                    "ckpt034", 7.0, 9.0, 0.125, 0.25, approx, False, "cannot compute exact p-value"
                ),
                test("ckpt040", 7.0, 5.5, None, None, approx, False),
            ],
        },
        "settings": {"reference_group": "real", "conf_level": 0.95, "sensitivity_digits_rank": 7.0},
        "r_version": "R version 4.4.2 (2024-10-31)",
        "provenance": PROVENANCE,
    }
    expected["kappa"]["identification_correct"] = dict(
        zip(kappa_names, [stats.KAPPA_CORRECT_LABEL, -0.05, 0.1, -0.5, 0.6171, 5, 4, 2, 0.5, 0.52])
    )
    text = (tmp_path / "statistics.json").read_text()
    assert json.loads(text) == expected
    assert text == json.dumps(expected, indent=2) + "\n"


def test_json_safe_spells_out_what_json_cannot_hold() -> None:
    assert stats._json_safe({"p": [math.nan, math.inf, -math.inf, 0.5], "t": (1, "x")}) == {
        "p": [None, "Inf", "-Inf", 0.5],
        "t": [1, "x"],
    }


def test_two_raters_one_digit_and_a_position_nobody_chose() -> None:
    """The smallest study the checks allow (2 raters, sensitivity digits.rank 1) runs; position 4,
    never chosen, still counts as one of the kappa's 4 categories."""
    key = key_frame(4)
    rows = [
        {"rater": rater, "quartet": q, "position": p, "chosen_real": int(p == 1 + (q + r) % 3)}
        | {"rating": 1 + (p + q + r) % 4}
        for r, rater in enumerate(["expert-1", "expert-2"])
        for q in range(1, 5)
        for p in range(1, 5)
    ]
    results = turing_statistics(pd.DataFrame(rows), key, sensitivity_digits_rank=1, simulated=False)
    assert results.n_raters == 2
    assert results.kappa_position.n_categories == 4
    assert {t.digits_rank for t in results.sensitivity_tests} == {1.0}


def test_run_stats_passes_its_settings_on(tmp_path: Path) -> None:
    key = key_frame(50)
    key.to_csv(tmp_path / "key.csv", index=False)
    sums = {
        "real": [160, 152, 148, 151],
        "ckpt034": [150, 150, 150, 150],
        "ckpt040": [155, 149, 147, 150],
        "ckpt080": [151, 153, 140, 149],
    }
    ratings = ratings_with_sums(key, sums)
    write_ratings_csv(ratings, tmp_path / "ratings" / "all.csv")
    settings = {"reference_group": "ckpt080", "conf_level": 0.9, "sensitivity_digits_rank": 5.0}
    results = run_stats(
        tmp_path / "ratings",
        tmp_path / "key.csv",
        tmp_path / "out",
        simulated=False,
        provenance=PROVENANCE,
        **settings,
    )
    assert results.settings == settings and results.identification.conf_level == 0.9
    assert {t.digits_rank for t in results.sensitivity_tests} == {5.0}
    assert [(t.reference, t.group) for t in results.tests] == [
        ("ckpt080", "ckpt034"),
        ("ckpt080", "ckpt040"),
        ("ckpt080", "real"),
    ]
