"""Figures 3 and 4 of the paper: an example quartet with its answer revealed, and violin plots
of realism ratings, real vs each checkpoint.

A violin is drawn over per-image mean ratings (each image's 1-4 ratings averaged over
raters) rather than over raw ratings: raw Likert scores take only four values, whose
density estimate would show bumps at 1, 2, 3, 4 rather than how realism varies between
images. The group mean (the paper's reported number) is marked on each violin.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import cbook
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from radsynth.core.figures import save_figure
from radsynth.turing.ratings import LIKERT_LEVELS, REAL_GROUP, require_simulated_flag, with_groups

#: Smallest KDE bandwidth, in rating units: keeps a group whose images all share one mean
#: drawable (Scott's bandwidth would be 0) without smoothing real spreads (steps of 1/raters).
MIN_BANDWIDTH = 0.05
LIKERT_TICK_LABELS = ("1\nunrealistic", "2", "3", "4\nfully realistic")
SIMULATED_WATERMARK = "SIMULATED"


def per_image_means(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Each image's mean rating over raters, with its group: one row per key row."""
    grouped = with_groups(ratings, key)
    means = grouped.groupby(["quartet", "position"], as_index=False).agg(
        mean_rating=("rating", "mean"), n_raters=("rater", "nunique")
    )
    return key.merge(means, on=["quartet", "position"], how="left", validate="one_to_one")


def group_order(groups: list[str]) -> list[str]:
    """The real group first, then the checkpoints in label order (ckpt034, ckpt040, ...)."""
    return [REAL_GROUP] * (REAL_GROUP in groups) + sorted(set(groups) - {REAL_GROUP})


def _gaussian_kde(values: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Gaussian density with Scott's bandwidth, floored at MIN_BANDWIDTH."""
    bandwidth = max(
        float(np.std(values, ddof=1)) * len(values) ** (-1 / 5) if len(values) > 1 else 0.0,
        MIN_BANDWIDTH,
    )
    z = (coords[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).sum(axis=1) / (len(values) * bandwidth * np.sqrt(2 * np.pi))


def _caption(n_raters: int, n_images: int, simulated: bool) -> str:
    prefix = "SIMULATED ratings - not expert data. " if simulated else ""
    return (
        f"{prefix}Violins: per-image mean realism rating over {n_raters} raters "
        f"({n_images} images per group); lines: medians; diamonds: group means."
    )


GROUP_COLOURS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def _draw_violins(axes: Axes, values: list[np.ndarray]) -> None:
    """Violins with median lines, a diamond at each group mean and the mean written below."""
    positions = np.arange(1, len(values) + 1)
    stats = cbook.violin_stats(values, _gaussian_kde)
    parts = axes.violin(stats, positions=positions, widths=0.8, showextrema=False, showmedians=True)
    for body, colour in zip(parts["bodies"], GROUP_COLOURS):
        body.set_facecolor(colour)
        body.set_alpha(0.6)
    parts["cmedians"].set_color("black")
    means = [float(np.mean(group)) for group in values]
    axes.scatter(
        positions, means, marker="D", color="white", edgecolor="black", zorder=3, label="group mean"
    )
    for x, mean in zip(positions, means):
        axes.text(x, LIKERT_LEVELS[0] + 0.15, f"mean {mean:.3f}", ha="center", fontsize=8)


def _label(figure: Figure, axes: Axes, labels: list[str], caption: str, simulated: bool) -> None:
    axes.set_xticks(
        np.arange(1, len(labels) + 1),
        [label if label == REAL_GROUP else f"synthetic\n{label}" for label in labels],
    )
    axes.set_yticks(LIKERT_LEVELS, LIKERT_TICK_LABELS)
    axes.set_ylim(LIKERT_LEVELS[0] - 0.1, LIKERT_LEVELS[-1] + 0.1)
    axes.set_ylabel("Mean realism rating per image")
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 0.12), fontsize=8)
    axes.set_title(
        ("SIMULATED - " if simulated else "") + "Realism ratings per group (per-image means)"
    )
    figure.text(0.5, 0.01, caption, ha="center", fontsize=7, wrap=True)
    if simulated:
        figure.text(
            0.5,
            0.5,
            SIMULATED_WATERMARK,
            ha="center",
            va="center",
            rotation=30,
            fontsize=60,
            color="red",
            alpha=0.2,
            weight="bold",
        )


def plot_rating_violins(
    ratings: pd.DataFrame,
    key: pd.DataFrame,
    out_png: Path,
    *,
    simulated: bool,
    provenance: Mapping[str, Any],
) -> Path:
    """Paper Figure 4 as a PNG (written atomically) with provenance in its text metadata."""
    require_simulated_flag(ratings, simulated)
    images = per_image_means(ratings, key)
    labels = group_order(sorted(set(images["group"])))
    values = [
        images.loc[images["group"] == label, "mean_rating"].to_numpy(dtype=float)
        for label in labels
    ]
    caption = _caption(ratings["rater"].nunique(), min(len(v) for v in values), simulated)
    figure = Figure(figsize=(7, 5), dpi=150)
    axes = figure.add_subplot()
    _draw_violins(axes, values)
    _label(figure, axes, labels, caption, simulated)
    figure.subplots_adjust(left=0.2, bottom=0.18)
    return save_figure(
        figure,
        out_png,
        title="Clinical Turing test realism ratings" + (" (SIMULATED)" if simulated else ""),
        description=caption,
        provenance=provenance,
        simulated=str(simulated).lower(),
    )


def plot_example_quartet(
    study_dir: Path, out_png: Path, *, quartet: int, provenance: Mapping[str, Any]
) -> Path:
    """The images of one quartet in the raters' order, each captioned with its group (the
    answer)."""
    study_dir = Path(study_dir)
    key = pd.read_csv(study_dir / "key" / "key.csv")
    rows = key[key["quartet"] == quartet].sort_values("position")
    if rows.empty:
        raise ValueError(f"{study_dir / 'key' / 'key.csv'}: no quartet {quartet}")
    figure = Figure(figsize=(2.4 * len(rows), 2.9), layout="constrained")
    for slot, row in enumerate(rows.itertuples(), start=1):
        axes = figure.add_subplot(1, len(rows), slot)
        axes.imshow(
            np.asarray(Image.open(study_dir / "images" / row.image)), cmap="gray", vmin=0, vmax=255
        )
        axes.set_axis_off()
        answer = "REAL" if row.group == REAL_GROUP else f"synthetic, {row.group}"
        axes.set_title(
            f"{chr(64 + row.position)}: {answer}",
            fontsize=9,
            color="tab:green" if row.group == REAL_GROUP else "0.2",
        )
    title = f"Example quartet {quartet} with the answer key revealed"
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, out_png, title=title, provenance=provenance)
