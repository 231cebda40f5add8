"""Statistics of the clinical Turing test, computed in R (paper: "Statistical analysis").

Python validates and reshapes; R (``radsynth/turing/R/turing_stats.R`` via rpy2) computes, as in
the paper: identification accuracy with an exact binomial CI and test against chance,
Fleiss' kappa, each rater's mean rating per group, paired two-sided Wilcoxon signed-rank
tests of the real group against each checkpoint, Holm-adjusted. The tests run with R's default
``digits.rank`` (Inf), as the paper's R 4.4.2 did, and again at ``digits.rank = 7`` as a
sensitivity analysis (see `SENSITIVITY_REASON`).

Two kappas are reported because "agreement on the identification task" can mean either:
the category is the chosen position (1-4) of each quartet, or whether the choice was
correct. Subjects are quartets and raters are the raters in both.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from radsynth.core.atomic import atomic_output
from radsynth.core.tables import write_table
from radsynth.turing.ratings import (
    REAL_GROUP,
    load_key,
    load_ratings,
    positions_of,
    require_simulated_flag,
    with_groups,
)

R_SCRIPT = Path(__file__).resolve().parent / "R" / "turing_stats.R"
#: Chance of picking the real image of a quartet by guessing: 1 of 4.
#: Significant digits of the sensitivity analysis's signed-rank tests; ?wilcox.test suggests
#: `digits.rank = 7` so that ties do not depend on very small numeric differences.
WILCOXON_SENSITIVITY_DIGITS_RANK = 7.0
SENSITIVITY_REASON = (
    "The primary analysis ranks the per-rater mean differences as R does by default "
    "(digits.rank = Inf), as the paper's R 4.4.2 run did. Per-rater means are ratios such as "
    "166/50 and 161/50, so differences equal on paper (3.32 - 3.22 and 3.42 - 3.32) may differ "
    "in floating point and then are not counted as ties under Inf, which changes their ranks "
    "and can turn R's tie-corrected normal approximation into its exact test. The sensitivity "
    "analysis rounds the differences to {digits} significant digits before ranking, so such "
    "differences count as ties."
)
SIMULATED_BANNER = "SIMULATED RATINGS - NOT EXPERT DATA: these numbers only exercise the pipeline"
KAPPA_POSITION_LABEL = (
    "Fleiss' kappa, identification task (category: chosen position 1-4; subjects: quartets)"
)
KAPPA_CORRECT_LABEL = "Fleiss' kappa, identification correct vs incorrect (subjects: quartets)"


@dataclass(frozen=True)
class Identification:
    """How often the real image was picked, over all rater x quartet trials."""

    n_correct: int
    n_trials: int
    accuracy: float
    ci_low: float
    ci_high: float
    conf_level: float
    chance: float
    p_value: float
    method: str


@dataclass(frozen=True)
class Kappa:
    """Fleiss' kappa with its standard error under no agreement (Fleiss, Nee & Landis 1979)."""

    label: str
    kappa: float
    se0: float
    z: float
    p_value: float
    n_subjects: int
    n_raters: int
    n_categories: int
    p_observed: float
    p_expected: float


@dataclass(frozen=True)
class SignedRankTest:
    """Paired Wilcoxon signed-rank test of per-rater means, reference group vs one checkpoint."""

    reference: str
    group: str
    n_pairs: int
    n_nonzero: int
    digits_rank: float  # significant digits of the ranked differences (R's digits.rank)
    statistic_v: float
    p_value: float
    p_holm: float
    method: str
    exact: bool
    continuity_correction: bool
    warnings: str


@dataclass(frozen=True)
class TuringResults:
    """Everything the paper's Results paragraph reports, plus how it was computed."""

    simulated: bool
    n_raters: int
    n_quartets: int
    identification: Identification
    kappa_position: Kappa
    kappa_correct: Kappa
    per_rater_means: pd.DataFrame
    group_means: dict[str, float]
    tests: tuple[SignedRankTest, ...]  # primary: R's default digits.rank (Inf)
    sensitivity_tests: tuple[
        SignedRankTest, ...
    ]  # digits.rank = settings["sensitivity_digits_rank"]
    settings: dict[str, Any]
    r_version: str


@functools.cache
def _robjects() -> Any:
    """rpy2's robjects with the embedded R started, once per process.

    Starting R writes R's library paths into os.environ["LD_LIBRARY_PATH"] (its ldpaths include
    /usr/lib/x86_64-linux-gnu). The running process is unaffected (the loader reads it at start),
    but every later child would inherit it, and a child Python would then load the system's
    libpython instead of its own and fail (e.g. on `import ssl`). So the variable is restored.
    """
    saved = os.environ.get("LD_LIBRARY_PATH")
    import rpy2.robjects as ro

    if saved is None:
        os.environ.pop("LD_LIBRARY_PATH", None)
    else:
        os.environ["LD_LIBRARY_PATH"] = saved
    return ro


@functools.cache
def _r_functions() -> Any:
    """The R environment with turing_stats.R sourced, once per process."""
    ro = _robjects()
    environment = ro.r["new.env"]()
    ro.r["source"](str(R_SCRIPT), local=environment)
    return environment


def _value(vector: Any) -> Any:
    """An R length-1 vector as a Python scalar."""
    value = vector[0]
    return value if isinstance(value, (str, bool, int)) else float(value)


def _record(r_list: Any) -> dict[str, Any]:
    return {name: _value(value) for name, value in zip(r_list.names, r_list)}


def _frame(r_frame: Any) -> pd.DataFrame:
    return pd.DataFrame({name: list(column) for name, column in zip(r_frame.names, r_frame)})


def _signed_rank_tests(r_frame: Any) -> tuple[SignedRankTest, ...]:
    return tuple(SignedRankTest(**row) for row in _frame(r_frame).to_dict("records"))


def fleiss_kappa(counts: pd.DataFrame, *, label: str) -> Kappa:
    """Fleiss' kappa in R of a subjects x categories table of rater counts."""
    ro = _robjects()
    matrix = ro.r["matrix"](
        ro.IntVector(counts.to_numpy().T.ravel().tolist()), nrow=counts.shape[0]
    )
    return Kappa(label=label, **_record(_r_functions()["fleiss_kappa"](matrix)))


def _input_problems(
    grouped: pd.DataFrame, reference_group: str, sensitivity_digits_rank: float
) -> list[str]:
    problems = []
    if reference_group not in set(grouped["group"]):
        problems.append(f"reference_group {reference_group!r} is not a group of the answer key")
    if not (math.isfinite(sensitivity_digits_rank) and sensitivity_digits_rank >= 1):
        problems.append(
            f"sensitivity_digits_rank {sensitivity_digits_rank} must be a finite number of "
            "significant digits >= 1 (the primary analysis already uses R's default, Inf)"
        )
    if grouped["rater"].nunique() < 2:
        problems.append("Fleiss' kappa and paired tests need at least 2 raters")
    return problems


def _call_r(grouped: pd.DataFrame, settings: Mapping[str, Any]) -> Any:
    ro = _robjects()
    return _r_functions()["turing_statistics"](
        rater=ro.StrVector(grouped["rater"].astype(str).tolist()),
        quartet=ro.IntVector(grouped["quartet"].tolist()),
        position=ro.IntVector(grouped["position"].tolist()),
        group=ro.StrVector(grouped["group"].tolist()),
        chosen_real=ro.IntVector(grouped["chosen_real"].tolist()),
        rating=ro.IntVector(grouped["rating"].tolist()),
        positions=ro.IntVector(list(positions_of(grouped))),
        real_group=REAL_GROUP,
        reference_group=settings["reference_group"],
        chance=1.0 / len(positions_of(grouped)),  # one real image among the study's positions
        conf_level=settings["conf_level"],
        sensitivity_digits_rank=settings["sensitivity_digits_rank"],
    )


def turing_statistics(
    ratings: pd.DataFrame,
    key: pd.DataFrame,
    *,
    reference_group: str = REAL_GROUP,
    conf_level: float = 0.95,
    sensitivity_digits_rank: float = WILCOXON_SENSITIVITY_DIGITS_RANK,
    simulated: bool,
) -> TuringResults:
    """The paper's Turing test statistics from ratings validated by `load_ratings`."""
    require_simulated_flag(ratings, simulated)
    grouped = with_groups(ratings, key)
    problems = _input_problems(grouped, reference_group, sensitivity_digits_rank)
    if problems:
        raise ValueError("; ".join(problems))
    settings = {
        "reference_group": reference_group,
        "conf_level": conf_level,
        "sensitivity_digits_rank": sensitivity_digits_rank,
    }
    r_out = _call_r(grouped, settings)
    out = dict(zip(r_out.names, r_out))
    return TuringResults(
        simulated=simulated,
        n_raters=grouped["rater"].nunique(),
        n_quartets=grouped["quartet"].nunique(),
        identification=Identification(**_record(out["identification"])),
        kappa_position=Kappa(label=KAPPA_POSITION_LABEL, **_record(out["kappa_position"])),
        kappa_correct=Kappa(label=KAPPA_CORRECT_LABEL, **_record(out["kappa_correct"])),
        per_rater_means=_frame(out["per_rater_means"]),
        group_means=_frame(out["group_means"]).set_index("group")["mean_rating"].to_dict(),
        tests=_signed_rank_tests(out["tests"]),
        sensitivity_tests=_signed_rank_tests(out["sensitivity_tests"]),
        settings=settings,
        r_version=_value(out["r_version"]),
    )


def _origin(simulated: bool) -> str:
    return "SIMULATED" if simulated else "expert raters"


def _json_safe(value: Any) -> Any:
    """NaN (a p-value R could not compute) as null and infinity as "Inf": JSON has neither."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if isinstance(value, dict):
        return {name: _json_safe(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def results_record(results: TuringResults, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The statistics.json content: every number plus how and from what it was computed."""
    record = {
        "label": SIMULATED_BANNER if results.simulated else "Expert ratings",
        "simulated": results.simulated,
        "n_raters": results.n_raters,
        "n_quartets": results.n_quartets,
        "identification": asdict(results.identification),
        "kappa": {
            "identification_position": asdict(results.kappa_position),
            "identification_correct": asdict(results.kappa_correct),
        },
        "group_means": results.group_means,
        "tests": [asdict(test) for test in results.tests],
        "sensitivity": {
            "label": sensitivity_label(results),
            "why": sensitivity_reason(results),
            "tests": [asdict(test) for test in results.sensitivity_tests],
        },
        "settings": results.settings,
        "r_version": results.r_version,
        "provenance": dict(provenance),
    }
    return _json_safe(record)


def _digits(value: float) -> str:
    """A digits.rank as R prints it (Inf, 7)."""
    return "Inf" if math.isinf(value) else f"{value:g}"


def sensitivity_label(results: TuringResults) -> str:
    """The one label every output gives the sensitivity analysis, so they can be matched up."""
    return f"sensitivity: digits.rank = {_digits(results.settings['sensitivity_digits_rank'])}"


def sensitivity_reason(results: TuringResults) -> str:
    """Why the sensitivity analysis is reported beside the primary one (stated in every output)."""
    return SENSITIVITY_REASON.format(digits=_digits(results.settings["sensitivity_digits_rank"]))


def _p(value: float) -> str:
    if math.isnan(value):
        return "NA"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _kappa_cell(kappa: Kappa) -> str:
    return f"{kappa.kappa:.3f} (SE0 {kappa.se0:.3f}, z = {kappa.z:.2f}, p = {_p(kappa.p_value)})"


def _identification_rows(results: TuringResults) -> list[str]:
    ident = results.identification
    return [
        "| Measure | Value |",
        "|---|---|",
        f"| Identification accuracy | {100 * ident.accuracy:.1f}% "
        f"({ident.n_correct}/{ident.n_trials} trials) |",
        f"| {100 * ident.conf_level:.0f}% CI, exact binomial "
        f"| {100 * ident.ci_low:.1f}% to {100 * ident.ci_high:.1f}% |",
        f"| Exact binomial test vs chance {100 * ident.chance:.1f}%, two-sided "
        f"| p = {_p(ident.p_value)} |",
        f"| {results.kappa_position.label} | {_kappa_cell(results.kappa_position)} |",
        f"| {results.kappa_correct.label} | {_kappa_cell(results.kappa_correct)} |",
    ]


def _rating_rows(results: TuringResults) -> list[str]:
    reference, label = results.settings["reference_group"], sensitivity_label(results)
    rows = [
        f"| Group | Mean rating (mean of {results.n_raters} per-rater means) "
        f"| Wilcoxon p vs {reference} "
        f"| Holm-adjusted p | {label}: Wilcoxon p | {label}: Holm-adjusted p |",
        "|---|---|---|---|---|---|",
        f"| {reference} | {results.group_means[reference]:.3f} | - | - | - | - |",
    ]
    rows += [
        f"| {t.group} | {results.group_means[t.group]:.3f} | {_p(t.p_value)} | {_p(t.p_holm)} "
        f"| {_p(s.p_value)} | {_p(s.p_holm)} |"
        for t, s in zip(results.tests, results.sensitivity_tests, strict=True)
    ]
    return rows


def _method_line(test: SignedRankTest, analysis: str) -> str:
    return (
        f"- {test.group}, {analysis} (digits.rank = {_digits(test.digits_rank)}): {test.method}, "
        f"V = {test.statistic_v:g}, {test.n_nonzero} of {test.n_pairs} differences non-zero"
        + (f"; R warned: {test.warnings}" if test.warnings else "")
    )


def _method_lines(results: TuringResults) -> list[str]:
    lines = [
        line
        for t, s in zip(results.tests, results.sensitivity_tests, strict=True)
        for line in (_method_line(t, "primary"), _method_line(s, "sensitivity"))
    ]
    return lines + [f"- {results.r_version}."]


def results_markdown(results: TuringResults, provenance: Mapping[str, Any]) -> str:
    """results.md: the paper's Results paragraph as tables, SIMULATED banners when simulated."""
    banner = [f"> **{SIMULATED_BANNER}**", ""] if results.simulated else []
    title = "# Clinical Turing test results" + (" (SIMULATED)" if results.simulated else "")
    lines = [
        title,
        "",
        *banner,
        f"{results.n_raters} raters x {results.n_quartets} quartets "
        "(1 real + 1 image per checkpoint).",
        "",
        *_identification_rows(results),
        "",
        "Trials are pooled over raters as in the paper. "
        "SE0: standard error of kappa under no agreement "
        "(Fleiss, Nee & Landis 1979); its p-value is the two-sided z-test of kappa = 0.",
        "",
        "Realism ratings (1 = unrealistic, 4 = fully realistic); "
        "paired two-sided Wilcoxon signed-rank tests.",
        "",
        *_rating_rows(results),
        "",
        f"Why the {sensitivity_label(results)} columns exist: {sensitivity_reason(results)}",
        "",
        "How R computed the tests:",
        "",
        *_method_lines(results),
        "",
        "Provenance:",
        "",
        *[f"- {name}: {value}" for name, value in provenance.items()],
        "",
        *banner,
    ]
    return "\n".join(lines)


def _with_origin(frame: pd.DataFrame, simulated: bool) -> pd.DataFrame:
    """A CSV whose first column says, on every row, whether the ratings were simulated."""
    labelled = frame.reset_index(drop=True)
    labelled.insert(0, "ratings_origin", _origin(simulated))
    return labelled


def tests_frame(results: TuringResults) -> pd.DataFrame:
    """tests.csv: one row per group, the primary test's columns, then the sensitivity analysis's
    as `sensitivity_*` columns (zeros and pairs do not depend on digits.rank, so not repeated)."""
    primary = pd.DataFrame([asdict(test) for test in results.tests])
    sensitivity = pd.DataFrame([asdict(test) for test in results.sensitivity_tests])
    sensitivity = sensitivity.drop(columns=["reference", "n_pairs", "n_nonzero"]).rename(
        columns=lambda name: name if name == "group" else f"sensitivity_{name}"
    )
    return primary.merge(sensitivity, on="group", how="left", validate="one_to_one")


def write_results(results: TuringResults, out_dir: Path, *, provenance: Mapping[str, Any]) -> None:
    """statistics.json, per_rater_means.csv, tests.csv and results.md, each written atomically
    and each with the provenance (the CSVs as '#' lines before the header)."""
    out_dir = Path(out_dir)
    with atomic_output(out_dir / "statistics.json") as temp:
        temp.write_text(
            json.dumps(results_record(results, provenance), indent=2, allow_nan=False) + "\n"
        )
    write_table(
        _with_origin(results.per_rater_means, results.simulated),
        out_dir / "per_rater_means.csv",
        provenance=provenance,
    )
    write_table(
        _with_origin(tests_frame(results), results.simulated),
        out_dir / "tests.csv",
        provenance=provenance,
    )
    with atomic_output(out_dir / "results.md") as temp:
        temp.write_text(results_markdown(results, provenance))


def run_stats(
    ratings_dir: Path,
    key_csv: Path,
    out_dir: Path,
    *,
    simulated: bool,
    provenance: Mapping[str, Any],
    reference_group: str = REAL_GROUP,
    conf_level: float = 0.95,
    sensitivity_digits_rank: float = WILCOXON_SENSITIVITY_DIGITS_RANK,
) -> TuringResults:
    """`radsynth stats`: load and validate key and ratings, compute in R, write the results."""
    key = load_key(Path(key_csv))
    ratings = load_ratings(Path(ratings_dir), key)
    results = turing_statistics(
        ratings,
        key,
        reference_group=reference_group,
        conf_level=conf_level,
        sensitivity_digits_rank=sensitivity_digits_rank,
        simulated=simulated,
    )
    write_results(results, Path(out_dir), provenance=provenance)
    return results
