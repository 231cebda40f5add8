"""Figure 1 of the paper: training and validation loss over training, by step and checkpoint.

The per-step training loss of a diffusion model is one random mini-batch at random noise
levels, so it is drawn faint, with a centred moving average on top; the validation losses
(fixed images, fixed noise: radsynth.train.loop) are drawn at the checkpoints where they were
measured. The y axis is logarithmic because the loss falls by orders of magnitude in the
first few thousand steps and the late, small differences between train and validation loss
(the convergence and divergence the paper reads) would be flat on a linear axis. The bottom
axis counts steps, the top one checkpoints (step / checkpoint_every), because the paper names
checkpoints (34, 40, 80) while the run logs steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from radsynth.core.figures import save_figure
from radsynth.core.smoothing import moving_average
from radsynth.train.checkpoint_io import checkpoint_every, read_checkpoint_index, read_loss_log
from radsynth.train.labels import checkpoint_label

TRAIN_COLOUR = "#1f77b4"
VAL_COLOURS = {"val_loss": "#d62728", "val_loss_ema": "#ff7f0e"}
VAL_LABELS = {
    "val_loss": "validation loss (online weights)",
    "val_loss_ema": "validation loss (EMA weights)",
}
VAL_STYLES = {
    "val_loss": {
        "marker": "o",
        "linestyle": "-",
        "markerfacecolor": VAL_COLOURS["val_loss"],
        "zorder": 4,
    },
    "val_loss_ema": {"marker": "s", "linestyle": "--", "markerfacecolor": "white", "zorder": 3},
}
#: Blank space right of the last step, as a fraction of it, so a selected final checkpoint's
#: line and label are not drawn on the frame.
RIGHT_MARGIN = 0.02
SELECTED_COLOUR = "#2ca02c"
CHECKPOINT_TICK_COLOUR = "0.55"


def _steps_formatter(value: float, _: int) -> str:
    """Step ticks as 0, 20k, 40k ... (the paper's scale is 160,000 steps)."""
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _draw_train(axes: Axes, log: pd.DataFrame, smoothing_window: int) -> None:
    axes.plot(
        log["step"],
        log["train_loss"],
        color=TRAIN_COLOUR,
        alpha=0.25,
        linewidth=0.5,
        label="training loss (per step)",
    )
    axes.plot(
        log["step"],
        moving_average(log["train_loss"], smoothing_window),
        color=TRAIN_COLOUR,
        linewidth=1.6,
        label=f"training loss ({smoothing_window}-step moving average)",
    )


def _draw_validation(axes: Axes, index: pd.DataFrame) -> list[str]:
    """Validation curves present in the index; returns the columns drawn (none for a full run)."""
    drawn = [c for c in VAL_COLOURS if index[c].notna().any()]
    for column in drawn:
        axes.plot(
            index["step"],
            index[column],
            color=VAL_COLOURS[column],
            markersize=3.5,
            linewidth=1.2,
            label=VAL_LABELS[column],
            **VAL_STYLES[column],
        )
    return drawn


def _draw_checkpoints(axes: Axes, index: pd.DataFrame, selected: Sequence[int]) -> None:
    """Light ticks at every checkpoint along the bottom; a labelled line at each selected one."""
    axes.vlines(
        index["step"],
        0,
        0.025,
        transform=axes.get_xaxis_transform(),
        color=CHECKPOINT_TICK_COLOUR,
        linewidth=0.7,
        label="checkpoints",
    )
    steps = index.set_index("checkpoint")["step"]
    for position, number in enumerate(selected):
        step = int(steps.loc[number])
        axes.axvline(
            step,
            color=SELECTED_COLOUR,
            linestyle="--",
            linewidth=1.1,
            label="selected checkpoints" if position == 0 else None,
            zorder=2,
        )
        axes.text(
            step,
            0.97,
            f" {checkpoint_label(number)} ",
            transform=axes.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
            color=SELECTED_COLOUR,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )


def _check_selected(selected: Sequence[int], index: pd.DataFrame, index_csv: Path) -> None:
    present = set(int(n) for n in index["checkpoint"])
    for number in selected:
        checkpoint_label(number)
        if int(number) not in present:
            raise ValueError(f"selected checkpoint {number} is not in {index_csv}")


def _label_axes(axes: Axes, index: pd.DataFrame, last_step: int) -> None:
    axes.set_yscale("log")
    axes.set_xlim(0, last_step * (1 + RIGHT_MARGIN))
    axes.set_xlabel("Training step")
    axes.set_ylabel("Loss (weighted v-prediction MSE)")
    axes.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
    axes.grid(True, which="major", color="0.9", linewidth=0.6)
    axes.set_axisbelow(True)
    if not index.empty:
        every = checkpoint_every(index)
        top = axes.secondary_xaxis("top", functions=(lambda s: s / every, lambda c: c * every))
        top.set_xlabel("Checkpoint")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3, fontsize=8, frameon=False)


def _description(
    smoothing_window: int, drawn: list[str], n_checkpoints: int, selected: Sequence[int]
) -> str:
    """What the figure shows, for the PNG's Description field."""
    validation = (
        f"{' and '.join(VAL_LABELS[c] for c in drawn)} at each checkpoint"
        if drawn
        else "no validation loss (full-data run)"
    )
    marked = (
        f"selected checkpoints {', '.join(map(str, selected))}"
        if selected
        else "no checkpoints selected"
    )
    return (
        f"Training loss per step (faint) and its {smoothing_window}-step centred moving average; "
        f"{validation}; grey ticks: {n_checkpoints} checkpoints; dashed: {marked}."
    )


def plot_loss_curves(
    loss_log_csv: Path,
    index_csv: Path,
    out_png: Path,
    *,
    title: str,
    smoothing_window: int,
    provenance: Mapping[str, Any],
    selected: Sequence[int] = (),
) -> Path:
    """Paper Figure 1 as a PNG (written atomically) with the provenance in its text metadata.

    `smoothing_window` is the moving average of the training loss in steps (a display choice;
    the paper does not state one). `selected` checkpoints (paper: 34, 40, 80) are highlighted
    and must be in the index. A full-data run has no validation loss: only the training loss
    is drawn. The empty default of `selected` draws no highlight, which changes no number.
    """
    loss_log_csv, index_csv, out_png = Path(loss_log_csv), Path(index_csv), Path(out_png)
    log = read_loss_log(loss_log_csv)
    if log.empty:
        raise ValueError(f"{loss_log_csv}: no training steps logged yet")
    index = read_checkpoint_index(index_csv)
    _check_selected(selected, index, index_csv)
    figure = Figure(figsize=(7.5, 5.2), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    _draw_train(axes, log, smoothing_window)
    drawn = _draw_validation(axes, index)
    _draw_checkpoints(axes, index, selected)
    _label_axes(axes, index, int(log["step"].iloc[-1]))
    figure.suptitle(title, fontsize=11)
    description = _description(smoothing_window, drawn, len(index), selected)
    return save_figure(
        figure,
        out_png,
        title=title,
        description=description,
        provenance=provenance,
        Source=f"{loss_log_csv} {index_csv}",
    )
