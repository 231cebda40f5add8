"""The run's own proposal of checkpoints to sample, each with its step and reason: picks spread
over the split run's convergence window (radsynth.evaluate.convergence), the lowest-FID
checkpoint of the FID table through training, and the full run's last checkpoint, the paper's
three kinds (34 and 40 from the window, 80 the last). It reads the training runs' checkpoint
indexes and this stage's FID table, so it runs after both, never inside training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from radsynth.core.checked_csv import source_of
from radsynth.evaluate.convergence import (
    WINDOW_DEFINITION,
    check_window_settings,
    missing_validation_reason,
    window_evidence,
)
from radsynth.train.labels import checkpoint_label

#: The FID-table columns the lowest-FID choice reads (radsynth.evaluate.table writes more).
FID_CHOICE_COLUMNS = ("step", "checkpoint", "fid")


def _entry(row: pd.Series, why: str) -> dict[str, Any]:
    number = int(row["checkpoint"])
    return {
        "checkpoint": number,
        "label": checkpoint_label(number),
        "step": int(row["step"]),
        "why": why,
    }


def _full_run_entry(full_index: pd.DataFrame, step: int, why: str) -> dict[str, Any]:
    """The full-run checkpoint at `step`, or the nearest one (earlier on a tie) when it has none."""
    distance = (full_index["step"] - step).abs().to_numpy()
    row = full_index.iloc[int(np.argmin(distance))]
    if int(row["step"]) != step:
        why += (
            f"; the full run has no checkpoint at step {step}, nearest is step {int(row['step'])}"
        )
    return _entry(row, why)


def _window_picks(
    split_index: pd.DataFrame, start: int, end: int, n_window: int
) -> list[pd.Series]:
    """`n_window` split-run checkpoints spread over the window, ending at its last checkpoint.

    Positions end - (end - start) * i / n_window, i = 0..n-1: for the paper's window 30-40 and
    two picks, 40 and 35 (the paper took 40 and 34). Duplicates (narrow windows) are dropped.
    """
    rows = split_index.set_index("checkpoint", drop=False)
    inside = rows.loc[start:end]
    picks: list[pd.Series] = []
    for i in range(n_window):
        target = end - (end - start) * i / n_window
        row = inside.iloc[int(np.argmin(np.abs(inside["checkpoint"].to_numpy() - target)))]
        if all(int(p["checkpoint"]) != int(row["checkpoint"]) for p in picks):
            picks.append(row)
    return picks


def _window_suggestion(
    split_index: pd.DataFrame | None,
    full_index: pd.DataFrame,
    smoothing: int,
    tolerance: float,
    val_column: str,
    n_window: int,
) -> dict[str, Any]:
    """The convergence-window part of the suggestion (or its reason for being null)."""
    reason = (
        "no split run given"
        if split_index is None
        else missing_validation_reason(split_index, val_column)
    )
    if reason is not None:
        return {
            "convergence_window": None,
            "convergence_window_reason": reason,
            "window_checkpoints": [],
        }
    evidence = window_evidence(split_index, smoothing, tolerance, val_column)
    by_number = split_index.set_index("checkpoint", drop=False)
    start_step = int(by_number.loc[evidence["start"], "step"])
    end_step = int(by_number.loc[evidence["end"], "step"])
    window = {
        "split_run": {**evidence, "source": source_of(split_index, "split-run index")},
        "start": _full_run_entry(
            full_index,
            start_step,
            f"first checkpoint of the split run's convergence window ({evidence['start']})",
        ),
        "end": _full_run_entry(
            full_index,
            end_step,
            f"last checkpoint of the split run's convergence window ({evidence['end']})",
        ),
    }
    picks = [
        _full_run_entry(
            full_index,
            int(row["step"]),
            f"split-run checkpoint {int(row['checkpoint'])}: pick {i + 1} of {n_window} spread "
            f"over the convergence window {evidence['start']}-{evidence['end']}, counted back "
            "from its end",
        )
        for i, row in enumerate(
            _window_picks(split_index, evidence["start"], evidence["end"], n_window)
        )
    ]
    return {"convergence_window": window, "window_checkpoints": picks}


def _fid_suggestion(fid: pd.DataFrame | None, full_index: pd.DataFrame) -> dict[str, Any]:
    """The lowest-FID checkpoint (earliest on a tie), which must exist in the full run."""
    if fid is None:
        return {"best_fid": None, "best_fid_reason": "no FID yet"}
    source = source_of(fid, "FID table")
    missing = [c for c in FID_CHOICE_COLUMNS if c not in fid.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; expected {list(FID_CHOICE_COLUMNS)}"
        )
    if fid.empty:
        return {"best_fid": None, "best_fid_reason": f"{source}: no FID rows yet"}
    if not np.isfinite(fid["fid"].to_numpy(dtype=float)).all():
        raise ValueError(f"{source}: column 'fid' holds a blank or non-finite value")
    row = fid.iloc[int(np.argmin(fid["fid"].to_numpy()))]
    number = int(row["checkpoint"])
    if number not in set(full_index["checkpoint"]):
        raise ValueError(
            f"{source}: checkpoint {number} (lowest FID) is not in "
            f"{source_of(full_index, 'full-run index')}"
        )
    entry = _entry(row, f"lowest FID ({float(row['fid']):.3f}) of {len(fid)} evaluated checkpoints")
    return {"best_fid": {**entry, "fid": float(row["fid"])}}


def suggest_checkpoints(
    split_index: pd.DataFrame | None,
    full_index: pd.DataFrame,
    fid: pd.DataFrame | None,
    *,
    smoothing: int,
    tolerance: float,
    val_column: str,
    n_window: int,
) -> dict[str, Any]:
    """A JSON-able proposal of the paper's three kinds of checkpoint, each with step and reason.

    - `convergence_window`: the split run's window (`convergence_window`) with its evidence,
      its first and last checkpoint mapped by step to the full run (nearest when absent), and
      `window_checkpoints`: `n_window` full-run checkpoints spread over it (paper: 34 and 40);
    - `best_fid`: lowest FID of the full run, null with reason "no FID yet" without a table;
    - `final`: the last checkpoint of the full run (paper: 80, step 160,000).
    A null field comes with a `<field>_reason`.
    """
    check_window_settings(smoothing, tolerance, val_column)
    if isinstance(n_window, bool) or not isinstance(n_window, int) or n_window < 1:
        raise ValueError(f"n_window must be a positive integer, got {n_window!r}")
    if full_index.empty:
        raise ValueError(
            f"{source_of(full_index, 'full-run index')}: the full run has no checkpoints yet"
        )
    final = full_index.iloc[-1]
    return {
        "criterion": {
            "definition": WINDOW_DEFINITION,
            "val_column": val_column,
            "smoothing": smoothing,
            "tolerance": tolerance,
            "n_window": n_window,
        },
        **_window_suggestion(split_index, full_index, smoothing, tolerance, val_column, n_window),
        **_fid_suggestion(fid, full_index),
        "final": _entry(final, f"last checkpoint of the full run (step {int(final['step'])})"),
        "full_run_index": source_of(full_index, "full-run index"),
    }
