"""The convergence window of a split run, read from its checkpoint index by a stated rule.

The paper (sections 2.2 and 3) trained a split run (85/15) with a validation loss at every
2,000-step checkpoint and read that "training and validation losses converged between
checkpoints 30 and 40, diverging thereafter", by eye. `convergence_window` makes that reading a
rule (WINDOW_DEFINITION) with its evidence (`window_evidence`), so the checkpoint suggestion
(radsynth.evaluate.suggestion) can name the window it samples from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from radsynth.core.checked_csv import source_of
from radsynth.core.smoothing import moving_average
from radsynth.train.checkpoint_io import VAL_COLUMNS

WINDOW_DEFINITION = (
    "validation loss smoothed by a centred moving average over `smoothing` checkpoints; the "
    "window is the contiguous run of checkpoints around its minimum whose smoothed value is at "
    "most (1 + tolerance) x that minimum; 'diverged' means the smoothed validation loss leaves "
    "that band again before the last checkpoint"
)


def _check_val_column(val_column: str) -> None:
    if val_column not in VAL_COLUMNS:
        raise ValueError(f"val_column must be one of {VAL_COLUMNS}, got {val_column!r}")


def missing_validation_reason(index: pd.DataFrame, val_column: str) -> str | None:
    """Why no convergence window can be computed from `index`, or None when it can."""
    _check_val_column(val_column)
    source = source_of(index, "checkpoint index")
    if index.empty:
        return f"{source}: no checkpoints yet"
    if val_column not in index.columns or index[val_column].isna().all():
        return (
            f"{source}: column {val_column!r} has no values (a full-data run has no validation set)"
        )
    return None


def check_window_settings(smoothing: int, tolerance: float, val_column: str) -> None:
    _check_val_column(val_column)
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, int)
        or smoothing < 1
        or smoothing % 2 == 0
    ):
        raise ValueError(
            f"smoothing must be an odd positive number of checkpoints, got {smoothing!r}"
        )
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")


def _window_positions(smoothed: np.ndarray, tolerance: float) -> tuple[int, int, int]:
    """(start, minimum, end) row positions of the band around the smoothed minimum."""
    lowest = int(np.argmin(smoothed))
    inside = smoothed <= smoothed[lowest] * (1 + tolerance)
    start, end = lowest, lowest
    while start > 0 and inside[start - 1]:
        start -= 1
    while end < len(smoothed) - 1 and inside[end + 1]:
        end += 1
    return start, lowest, end


def convergence_window(
    index: pd.DataFrame, *, smoothing: int, tolerance: float, val_column: str
) -> tuple[int, int] | None:
    """(first, last) checkpoint number of the split run's convergence window, None without
    validation.

    Definition (WINDOW_DEFINITION): the validation loss `val_column` is smoothed by a centred
    moving average over `smoothing` checkpoints (odd); the window is the contiguous run of
    checkpoints around the smoothed minimum whose smoothed loss is at most (1 + `tolerance`)
    times that minimum. Before the window the validation loss is still falling with the
    training loss; after it, it rises while the training loss keeps falling: the paper's
    "converged between checkpoints 30 and 40, diverging thereafter". The tolerance is relative
    so one value fits any loss scale. Only the validation loss decides: it is computed with
    fixed noise on fixed images (radsynth.train.loop), whereas the training loss at a checkpoint
    is one noisy mini-batch. `missing_validation_reason` says why the result is None.
    """
    check_window_settings(smoothing, tolerance, val_column)
    if missing_validation_reason(index, val_column) is not None:
        return None
    smoothed = moving_average(index[val_column], smoothing).to_numpy()
    start, _, end = _window_positions(smoothed, tolerance)
    return int(index["checkpoint"].iloc[start]), int(index["checkpoint"].iloc[end])


def window_evidence(
    index: pd.DataFrame, smoothing: int, tolerance: float, val_column: str
) -> dict[str, Any]:
    """The numbers behind the window: its minimum, whether the loss left the band again, and the
    smoothed generalization gap (val - train) at the window's end and at the last checkpoint."""
    val = moving_average(index[val_column], smoothing).to_numpy()
    train = moving_average(index["train_loss"], smoothing).to_numpy()
    start, lowest, end = _window_positions(val, tolerance)
    checkpoints = index["checkpoint"].to_numpy()
    return {
        "start": int(checkpoints[start]),
        "end": int(checkpoints[end]),
        "minimum_checkpoint": int(checkpoints[lowest]),
        "minimum_smoothed_val_loss": float(val[lowest]),
        "diverged": bool(end < len(val) - 1),
        "gap_at_end": float(val[end] - train[end]),
        "gap_at_last_checkpoint": float(val[-1] - train[-1]),
    }
