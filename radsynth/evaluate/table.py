"""The FID table through training (one row per evaluated checkpoint of the full run): its writer,
its reader and its figure, the paper's Figure 2: FID against training step, with KID and
precision/recall/density/coverage.

Each FID job writes its row as JSON (`checkpoint_record`); the table job gathers them. A row holds
the sampling settings of its synthetic set (sampler, steps, weights: the FID set has its own) and
the extractor that made the features (name and weights sha256), so numbers from other settings or
extractors are never compared unknowingly: the table refuses rows that mix extractors.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from radsynth.core.checked_csv import (
    SOURCE_ATTR,
    numeric_column,
    read_text_table,
    require_increasing,
)
from radsynth.core.figures import save_figure
from radsynth.core.tables import write_table
from radsynth.evaluate.metrics import FidelityRow

#: The table's leading columns (issue #10); the extractor's other fields, KID/PRDC settings and
#: warnings follow.
LEADING_COLUMNS = (
    "step",
    "checkpoint",
    "n_real",
    "n_synthetic",
    "sampler",
    "steps",
    "weights",
    "extractor",
    "fid",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "density",
    "coverage",
)
#: Integer columns of the table; the reader checks their type (and `fid`'s) row by row.
INTEGER_COLUMNS = ("step", "checkpoint", "n_real", "n_synthetic", "steps")
#: Characters per title line: the extractor's name would run off the figure otherwise.
TITLE_WIDTH = 90
FID_COLOUR = "#1f77b4"
KID_COLOUR = "#ff7f0e"
PRDC_STYLES = {"precision": "o-", "recall": "s-", "density": "^--", "coverage": "v--"}


def checkpoint_record(
    row: FidelityRow,
    *,
    step: int,
    checkpoint: int,
    sampling: Mapping[str, Any],
    synthetic_source: str,
) -> dict[str, Any]:
    """One table row: where the synthetic set came from and how it was sampled, then the metrics."""
    record = row.as_record()
    return {
        "step": step,
        "checkpoint": checkpoint,
        "sampler": sampling["sampler"],
        "steps": sampling["steps"],
        "weights": sampling["weights"],
        "extractor": record.pop("extractor_name"),
        **record,
        "synthetic_source": synthetic_source,
    }


def fid_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows in step order; rows from different extractors or with a step twice are refused."""
    if not records:
        raise ValueError("no FID rows: the FID table needs at least one evaluated checkpoint")
    frame = pd.DataFrame(list(records))
    missing = [column for column in LEADING_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"FID rows lack column(s) {missing}")
    extractors = frame[["extractor", "extractor_weights"]].drop_duplicates()
    if len(extractors) > 1:
        found = "; ".join(
            f"{name} ({weights})" for name, weights in extractors.itertuples(index=False)
        )
        raise ValueError(
            f"FID rows come from different extractors ({found}): their numbers do not compare"
        )
    repeated = frame["step"][frame["step"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"FID rows repeat step(s) {repeated}")
    frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    rest = [column for column in frame.columns if column not in LEADING_COLUMNS]
    return frame[[*LEADING_COLUMNS, *rest]]


def write_fid_table(
    records: Sequence[Mapping[str, Any]], out_csv: Path, *, provenance: Mapping[str, str]
) -> pd.DataFrame:
    frame = fid_table(records)
    write_table(frame, out_csv, provenance=provenance)
    return frame


def read_fid_table(path: Path) -> pd.DataFrame:
    """The table `write_fid_table` wrote: every leading column present, integer step, checkpoint,
    set sizes and sampling steps, a finite FID on every row, steps increasing. Other columns stay
    text (blank where a metric is undefined). Errors name the file, line and column; the source
    path is kept in `frame.attrs["source"]`."""
    path = Path(path)
    frame = read_text_table(path, LEADING_COLUMNS)
    for column in INTEGER_COLUMNS:
        frame[column] = numeric_column(frame, path, column, integer=True, optional=False)
    frame["fid"] = numeric_column(frame, path, "fid", integer=False, optional=False)
    require_increasing(frame["step"], path, "step")
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def _steps_formatter(value: float, _: int) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def plot_fid_curve(
    frame: pd.DataFrame, out_png: Path, *, provenance: Mapping[str, str], title: str
) -> Path:
    """FID (left axis) and KID (right axis) against step, best FID marked; PRDC in a panel below.

    Rows with warnings (sets too small for a stable covariance) are drawn hollow and the warning
    count is in the caption line, so a doubtful number is not read as a firm one.
    """
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    steps = frame["step"].to_numpy()
    warned = frame["warnings"].fillna("").astype(str).str.len().to_numpy() > 0
    top.plot(steps, frame["fid"], "-", color=FID_COLOUR, label="FID")
    top.scatter(steps[~warned], frame["fid"][~warned], color=FID_COLOUR, zorder=3)
    top.scatter(
        steps[warned],
        frame["fid"][warned],
        facecolor="white",
        edgecolor=FID_COLOUR,
        zorder=3,
        label="FID (with a warning, see the table)" if warned.any() else None,
    )
    best = int(np.nanargmin(frame["fid"].to_numpy()))
    top.annotate(
        f"best FID {frame['fid'].iloc[best]:.2f}\ncheckpoint {frame['checkpoint'].iloc[best]}",
        (steps[best], frame["fid"].iloc[best]),
        xytext=(0, 18),
        textcoords="offset points",
        ha="center",
        arrowprops={"arrowstyle": "->"},
    )
    top.set_ylabel("FID (lower is better)")
    kid_axes = top.twinx()
    kid_axes.errorbar(
        steps,
        frame["kid_mean"],
        yerr=frame["kid_std"],
        fmt="s--",
        color=KID_COLOUR,
        markersize=4,
        capsize=3,
        label="KID (mean ± std over subsets)",
    )
    kid_axes.set_ylabel("KID")
    handles = [*top.get_legend_handles_labels()[0], *kid_axes.get_legend_handles_labels()[0]]
    top.legend(handles=handles, loc="upper right", fontsize=8)
    row = frame.iloc[0]
    subtitle = (
        f"{row['n_synthetic']} synthetic ({row['sampler']}, {row['steps']} steps, "
        f"{row['weights']} weights) vs {row['n_real']} real; {row['extractor']}"
    )
    top.set_title("\n".join([title, *textwrap.wrap(subtitle, TITLE_WIDTH)]), fontsize=9)
    for name, style in PRDC_STYLES.items():
        if not frame[name].isna().all():
            bottom.plot(steps, frame[name], style, markersize=4, label=name)
    bottom.set_ylabel(f"k-NN manifold metrics (k = {row['prdc_k']})")
    bottom.set_xlabel("training step")
    bottom.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize=8, ncols=4, loc="lower right")
    else:
        bottom.text(
            0.5,
            0.5,
            "precision/recall/density/coverage undefined: too few images (see warnings)",
            transform=bottom.transAxes,
            ha="center",
            va="center",
            fontsize=8,
        )
    n_warned = int(warned.sum())
    return save_figure(
        figure,
        out_png,
        title=title,
        provenance=provenance,
        description=f"{len(frame)} evaluated checkpoints; {n_warned} with warnings",
    )
