"""Which checkpoints to sample from: the loss and FID evidence, and the recorded choice.

The paper (sections 2.2 and 3) trained a split run (85/15) with a validation loss at every
2,000-step checkpoint, read that "training and validation losses converged between checkpoints
30 and 40, diverging thereafter", followed FID every 20,000 steps on the full-data run, and
sampled from checkpoints 34 and 40 (the convergence window) and 80 (the last, 160k steps).
The choice was made by eye. This module makes the same evidence explicit: it reads the files
`radsynth.train.loop` writes, finds the convergence window by a stated rule
(`convergence_window`), proposes checkpoints with reasons (`suggest_checkpoints`) and writes
the selection next to that proposal (`write_selection`): with `checkpoints.selected: auto` the
proposal itself, with a configured list that list, plus a warning and a `disagreements` record
for each listed checkpoint the evidence does not back, so a reader sees where a by-eye choice
departs from the data.

Checkpoint numbers are the paper's: number = step / checkpoint_every (34 -> step 68,000).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radsynth.core.atomic import atomic_output
from radsynth.train.checkpoint_io import INDEX_COLUMNS, LOSS_LOG_COLUMNS
from radsynth.train.labels import checkpoint_label

#: Index columns that may hold validation losses (blank in a full-data run).
VAL_COLUMNS = ("val_loss", "val_loss_ema")
#: Columns of the FID table written by the FID stage (one row per evaluated checkpoint).
FID_COLUMNS = ("step", "checkpoint", "fid")
#: The recorded attribute naming the CSV a frame was read from, for error messages and paths.
SOURCE_ATTR = "source"

log = logging.getLogger(__name__)

WINDOW_DEFINITION = (
    "validation loss smoothed by a centred moving average over `smoothing` checkpoints; the "
    "window is the contiguous run of checkpoints around its minimum whose smoothed value is at "
    "most (1 + tolerance) x that minimum; 'diverged' means the smoothed validation loss leaves "
    "that band again before the last checkpoint"
)


# ----------------------------------------------------------------------------------------------
# Reading and validating the training files


def _read_text_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """The CSV as strings (blanks kept as ""), after checking that every expected column is there.

    Leading '#' provenance lines (radsynth.core.tables) are skipped; the frame's index is each row's
    line number in the file, so errors name the line a person sees in an editor."""
    try:
        comment_lines = _leading_comment_lines(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skiprows=comment_lines)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: file not found") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    frame.index = pd.RangeIndex(comment_lines + 2, comment_lines + 2 + len(frame))
    return frame.fillna("")


def _leading_comment_lines(path: Path) -> int:
    with Path(path).open(encoding="utf-8") as handle:
        return sum(1 for _ in itertools.takewhile(lambda line: line.startswith("#"), handle))


def _line(values: pd.Series, row: int) -> int:
    """The file line of a row (the index `_read_text_table` set)."""
    return int(values.index[row])


def _numeric(
    frame: pd.DataFrame, path: Path, column: str, *, integer: bool, optional: bool
) -> pd.Series:
    """One column as numbers; the first blank (unless `optional`), non-numeric, non-finite or
    non-integer cell raises naming the file, its line (header = line 1) and the column."""
    text = frame[column].str.strip()
    blank = text == ""
    values = pd.to_numeric(text.where(~blank), errors="coerce").astype(float)
    bad = ~blank & ~np.isfinite(values)
    if not optional:
        bad |= blank
    if integer:
        bad |= ~blank & np.isfinite(values) & (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer" if integer else "a finite number"
        raise ValueError(
            f"{path} line {_line(text, row)}, column {column!r}: {text.iloc[row]!r} is not {kind}"
        )
    return values.astype("int64") if integer and not optional else values


def _require_increasing(values: pd.Series, path: Path, column: str) -> None:
    """Rows must be in strictly increasing order of `column`, as radsynth.train.loop appends them."""
    steps = values.to_numpy()
    bad = np.flatnonzero(np.diff(steps) <= 0)
    if len(bad):
        row = int(bad[0]) + 1
        raise ValueError(
            f"{path} line {_line(values, row)}, column {column!r}: {steps[row]} does not follow {steps[row - 1]}"
        )


def _require_all_or_none(values: pd.Series, path: Path, column: str) -> None:
    """A validation column is filled at every checkpoint (split run) or at none (full run)."""
    blank = values.isna().to_numpy()
    if blank.any() and not blank.all():
        row = int(np.flatnonzero(blank)[0])
        raise ValueError(
            f"{path} line {_line(values, row)}, column {column!r}: blank, but other checkpoints have a value"
        )


def read_loss_log(path: Path) -> pd.DataFrame:
    """`loss_log.csv` of a run as numbers (val columns NaN between checkpoints).

    Steps must run 1, 2, 3, ... without gaps: radsynth.train.loop writes one row per optimizer step and
    the figure's moving average counts rows as steps.
    """
    path = Path(path)
    text = _read_text_table(path, LOSS_LOG_COLUMNS)
    frame = pd.DataFrame(
        {
            "step": _numeric(text, path, "step", integer=True, optional=False),
            "train_loss": _numeric(text, path, "train_loss", integer=False, optional=False),
            "val_loss": _numeric(text, path, "val_loss", integer=False, optional=True),
            "val_loss_ema": _numeric(text, path, "val_loss_ema", integer=False, optional=True),
            "lr": _numeric(text, path, "lr", integer=False, optional=False),
            "wall_time_s": _numeric(text, path, "wall_time_s", integer=False, optional=False),
        }
    )
    gaps = np.flatnonzero(frame["step"].to_numpy() != np.arange(1, len(frame) + 1))
    if len(gaps):
        row = int(gaps[0])
        found = frame["step"].iloc[row]
        raise ValueError(
            f"{path} line {_line(frame, row)}, column 'step': {found} where step {row + 1} was expected"
        )
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def read_checkpoint_index(path: Path) -> pd.DataFrame:
    """`checkpoints/index.csv` of a run as typed columns, one row per checkpoint.

    Checked: integer step/checkpoint/bytes, a path on every row, finite losses, increasing
    steps, one constant step/checkpoint ratio (the run's checkpoint_every) and validation
    columns filled on all rows or none. The source path is kept in `frame.attrs["source"]`.
    """
    path = Path(path)
    text = _read_text_table(path, INDEX_COLUMNS)
    frame = pd.DataFrame(
        {
            "step": _numeric(text, path, "step", integer=True, optional=False),
            "checkpoint": _numeric(text, path, "checkpoint", integer=True, optional=False),
            "path": text["path"].str.strip(),
            "bytes": _numeric(text, path, "bytes", integer=True, optional=False),
            "train_loss": _numeric(text, path, "train_loss", integer=False, optional=False),
            **{c: _numeric(text, path, c, integer=False, optional=True) for c in VAL_COLUMNS},
        }
    )
    empty_path = np.flatnonzero(frame["path"].to_numpy() == "")
    if len(empty_path):
        raise ValueError(f"{path} line {_line(frame, int(empty_path[0]))}, column 'path': blank")
    _require_increasing(frame["step"], path, "step")
    not_positive = np.flatnonzero(frame["checkpoint"].to_numpy() < 1)
    if len(not_positive):
        row = int(not_positive[0])
        found = frame["checkpoint"].iloc[row]
        raise ValueError(
            f"{path} line {_line(frame, row)}, column 'checkpoint': {found} is below 1"
        )
    every = frame["step"] / frame["checkpoint"].where(frame["checkpoint"] > 0)
    inconsistent = np.flatnonzero(every.to_numpy() != every.iloc[0]) if len(frame) else []
    if len(inconsistent):
        row = int(inconsistent[0])
        raise ValueError(
            f"{path} line {_line(frame, row)}, column 'checkpoint': checkpoint {frame['checkpoint'].iloc[row]} "
            f"at step {frame['step'].iloc[row]} breaks the spacing of line 2 "
            f"(step {frame['step'].iloc[0]} = checkpoint {frame['checkpoint'].iloc[0]})"
        )
    for column in VAL_COLUMNS:
        _require_all_or_none(frame[column], path, column)
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def read_fid_table(path: Path) -> pd.DataFrame:
    """The FID table (step, checkpoint, fid), checked like the index."""
    path = Path(path)
    text = _read_text_table(path, FID_COLUMNS)
    frame = pd.DataFrame(
        {
            "step": _numeric(text, path, "step", integer=True, optional=False),
            "checkpoint": _numeric(text, path, "checkpoint", integer=True, optional=False),
            "fid": _numeric(text, path, "fid", integer=False, optional=False),
        }
    )
    _require_increasing(frame["step"], path, "step")
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def source_of(frame: pd.DataFrame, what: str) -> str:
    """The file a frame was read from, or a description when it was built in memory."""
    return str(frame.attrs.get(SOURCE_ATTR, f"<{what} given as a DataFrame>"))


def checkpoint_every(index: pd.DataFrame) -> int:
    """Steps between checkpoints of a run (its training.checkpoint_every), from its first row."""
    if index.empty:
        raise ValueError(f"{source_of(index, 'checkpoint index')}: no checkpoints yet")
    return int(index["step"].iloc[0]) // int(index["checkpoint"].iloc[0])


# ----------------------------------------------------------------------------------------------
# Convergence window


def moving_average(values: pd.Series, window: int) -> pd.Series:
    """Centred moving average over `window` rows, shrinking at the ends (no NaN edges).

    Centred so that the smoothed minimum sits where the raw minimum is, not `window`/2 later.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"moving-average window must be a positive integer, got {window!r}")
    return values.rolling(window, center=True, min_periods=1).mean()


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


def _check_window_settings(smoothing: int, tolerance: float, val_column: str) -> None:
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
    """(first, last) checkpoint number of the split run's convergence window, None without validation.

    Definition (WINDOW_DEFINITION): the validation loss `val_column` is smoothed by a centred
    moving average over `smoothing` checkpoints (odd); the window is the contiguous run of
    checkpoints around the smoothed minimum whose smoothed loss is at most (1 + `tolerance`)
    times that minimum. Before the window the validation loss is still falling with the
    training loss; after it, it rises while the training loss keeps falling: the paper's
    "converged between checkpoints 30 and 40, diverging thereafter". The tolerance is relative
    so one value fits any loss scale. Only the validation loss decides: it is computed with
    fixed noise on fixed images (radsynth.train.loop), whereas the training loss at a checkpoint is one
    noisy mini-batch. `missing_validation_reason` says why the result is None.
    """
    _check_window_settings(smoothing, tolerance, val_column)
    if missing_validation_reason(index, val_column) is not None:
        return None
    smoothed = moving_average(index[val_column], smoothing).to_numpy()
    start, _, end = _window_positions(smoothed, tolerance)
    return int(index["checkpoint"].iloc[start]), int(index["checkpoint"].iloc[end])


def _window_evidence(
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


# ----------------------------------------------------------------------------------------------
# Suggestion


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
    evidence = _window_evidence(split_index, smoothing, tolerance, val_column)
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
            f"split-run checkpoint {int(row['checkpoint'])}: pick {i + 1} of {n_window} spread over the "
            f"convergence window {evidence['start']}-{evidence['end']}, counted back from its end",
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
    missing = [c for c in FID_COLUMNS if c not in fid.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(FID_COLUMNS)}")
    if fid.empty:
        return {"best_fid": None, "best_fid_reason": f"{source}: no FID rows yet"}
    if not np.isfinite(fid["fid"].to_numpy(dtype=float)).all():
        raise ValueError(f"{source}: column 'fid' holds a blank or non-finite value")
    row = fid.iloc[int(np.argmin(fid["fid"].to_numpy()))]
    number = int(row["checkpoint"])
    if number not in set(full_index["checkpoint"]):
        raise ValueError(
            f"{source}: checkpoint {number} (lowest FID) is not in {source_of(full_index, 'full-run index')}"
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
    _check_window_settings(smoothing, tolerance, val_column)
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


# ----------------------------------------------------------------------------------------------
# Selection file

#: The config key behind the selection, named in its errors and warnings.
SELECTED_KEY = "checkpoints.selected"
#: `checkpoints.selected: auto` samples what the run's own evidence proposes.
AUTO = "auto"


def _suggested_numbers(suggestion: Mapping[str, Any]) -> dict[str, Any]:
    """The suggestion reduced to checkpoint numbers, to read beside the configured list."""
    best = suggestion.get("best_fid")
    return {
        "window": [e["checkpoint"] for e in suggestion.get("window_checkpoints", [])],
        "best_fid": None if best is None else best["checkpoint"],
        "final": suggestion["final"]["checkpoint"],
    }


def _selection_mode(configured: Any) -> str:
    """The mode, "auto" or "configured", of a `checkpoints.selected` value; anything else is an error."""
    if configured == AUTO:
        return AUTO
    if isinstance(configured, str) or not isinstance(configured, Sequence):
        raise ValueError(
            f"{SELECTED_KEY} must be {AUTO!r} or a list of checkpoint numbers, got {configured!r}"
        )
    return "configured"


def auto_selection(suggestion: Mapping[str, Any]) -> dict[int, list[str]]:
    """Checkpoint number -> reasons, in checkpoint order: the window picks, the final checkpoint
    and the lowest-FID one when FID exists. A checkpoint proposed twice (the final one may also
    have the lowest FID) is sampled once, with both reasons kept."""
    best = suggestion.get("best_fid")
    proposed = [
        *suggestion.get("window_checkpoints", []),
        suggestion["final"],
        *([best] if best else []),
    ]
    reasons: dict[int, list[str]] = {}
    for entry in proposed:
        reasons.setdefault(int(entry["checkpoint"]), []).append(entry["why"])
    return dict(sorted(reasons.items()))


def _window_text(window: Mapping[str, Any]) -> str:
    """The window in full-run checkpoint numbers (what `checkpoints.selected` lists), with the
    split run's own numbers when its checkpoints are spaced differently."""
    start, end = window["start"]["checkpoint"], window["end"]["checkpoint"]
    split = window["split_run"]
    text = f"the convergence window {start}..{end} of the split run"
    if (split["start"], split["end"]) != (start, end):
        text += f" (split-run checkpoints {split['start']}..{split['end']}, mapped by step)"
    return text


def _support(number: int, suggestion: Mapping[str, Any]) -> list[str]:
    """Why the run's own evidence backs checkpoint `number` (empty when it does not): proposed
    by the suggestion, or at least inside the convergence window."""
    reasons = auto_selection(suggestion).get(number, [])
    window = suggestion.get("convergence_window")
    inside = (
        window is not None
        and window["start"]["checkpoint"] <= number <= window["end"]["checkpoint"]
    )
    if not reasons and inside:
        return [f"inside {_window_text(window)}"]
    return reasons


def _disagreement_reason(number: int, suggestion: Mapping[str, Any]) -> str:
    """Where an unbacked checkpoint lies relative to the window (or why there is no window)."""
    window = suggestion.get("convergence_window")
    if window is None:
        return f"outside any convergence window ({suggestion.get('convergence_window_reason')})"
    side = "before" if number < window["start"]["checkpoint"] else "after"
    return f"{side} {_window_text(window)}"


def configured_disagreements(
    configured: Sequence[int], suggestion: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Configured checkpoints the run's evidence does not back: outside the convergence window,
    not final, not lowest FID. They are still sampled (the config decides); the record shows
    which choices were made against the data rather than from it."""
    return [
        {"checkpoint": number, "reason": _disagreement_reason(number, suggestion)}
        for number in sorted(configured)
        if not _support(number, suggestion)
    ]


def _warn_disagreements(
    disagreements: Sequence[Mapping[str, Any]], suggestion: Mapping[str, Any]
) -> None:
    """One WARNING per disagreement, naming the checkpoint, the window and what auto would pick,
    so the choice is visible in the job's log, not only in selection.json."""
    proposed = list(auto_selection(suggestion))
    for item in disagreements:
        log.warning(
            "%s: checkpoint %d is %s, and is neither the final nor the lowest-FID checkpoint; "
            "the run's own evidence proposes %s",
            SELECTED_KEY,
            item["checkpoint"],
            item["reason"],
            proposed,
        )


def _check_configured(configured: Sequence[Any], full_index: pd.DataFrame) -> list[int]:
    """The configured numbers, each a checkpoint of the full run listed once."""
    if not configured:
        raise ValueError(f"{SELECTED_KEY} is empty: list checkpoint numbers or write {AUTO!r}")
    for number in configured:
        if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number < 0:
            raise ValueError(
                f"{SELECTED_KEY}: {number!r} is not a checkpoint number (a non-negative integer)"
            )
    repeated = sorted({int(n) for n in configured if list(configured).count(n) > 1})
    if repeated:
        raise ValueError(f"{SELECTED_KEY}: checkpoint(s) {repeated} listed more than once")
    index_csv = source_of(full_index, "full-run index")
    if full_index.empty:
        raise ValueError(f"{index_csv}: the full run has no checkpoints yet")
    first, last = int(full_index["checkpoint"].iloc[0]), int(full_index["checkpoint"].iloc[-1])
    held = set(full_index["checkpoint"])
    for number in configured:
        if number > last:
            raise ValueError(
                f"{SELECTED_KEY}: checkpoint {number} is beyond the last checkpoint {last} of the full run ({index_csv})"
            )
        if number not in held:
            raise ValueError(
                f"{SELECTED_KEY}: checkpoint {number} is not in {index_csv} (it has checkpoints {first}..{last})"
            )
    return [int(n) for n in configured]


def _selected_entries(
    chosen: Mapping[int, list[str]], full_index: pd.DataFrame
) -> list[dict[str, Any]]:
    """Each chosen checkpoint with label, step, file and reasons; the file must exist, since
    sampling reads the `path` written here.

    Paths in index.csv are relative to the run directory, which radsynth.train.loop lays out as
    run_dir/checkpoints/index.csv; they are written joined to that directory.
    """
    if SOURCE_ATTR not in full_index.attrs:
        raise ValueError(
            "full_index must come from read_checkpoint_index (its file locates the checkpoints)"
        )
    index_csv = Path(full_index.attrs[SOURCE_ATTR])
    run_dir = index_csv.parent.parent
    rows = full_index.set_index("checkpoint", drop=False)
    entries = []
    for number, why in chosen.items():
        path = run_dir / str(rows.loc[number, "path"])
        if not path.is_file():
            raise FileNotFoundError(
                f"{SELECTED_KEY}: checkpoint {number}: file {path} listed in {index_csv} is missing"
            )
        step = int(rows.loc[number, "step"])
        entries.append(
            {
                "checkpoint": number,
                "label": checkpoint_label(number),
                "step": step,
                "path": str(path),
                "why": why,
            }
        )
    return entries


def write_selection(
    configured: str | Sequence[int],
    suggestion: Mapping[str, Any],
    full_index: pd.DataFrame,
    out_json: Path,
    *,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Write (atomically) and return the selection: the checkpoints to sample, beside the suggestion.

    `configured` is `checkpoints.selected`: "auto" samples `auto_selection(suggestion)`; a list
    (paper: 34, 40, 80) is sampled as given, each entry a checkpoint of the full run index read
    by `read_checkpoint_index`, and the entries the evidence does not back are logged as
    warnings and kept under `disagreements`. `selected` is in checkpoint order in both modes
    (labels sort the same way) and is what sampling reads (`labels.read_selected_labels`).
    """
    mode = _selection_mode(configured)
    if mode == AUTO:
        listed, chosen, disagreements = AUTO, auto_selection(suggestion), []
    else:
        listed = _check_configured(configured, full_index)
        chosen = {
            n: [f"listed in {SELECTED_KEY}", *_support(n, suggestion)] for n in sorted(listed)
        }
        disagreements = configured_disagreements(listed, suggestion)
        _warn_disagreements(disagreements, suggestion)
    selected = _selected_entries(chosen, full_index)
    selection = {
        "mode": mode,
        "selected": selected,
        "disagreements": disagreements,
        "comparison": {
            "configured": listed,
            "selected": [e["checkpoint"] for e in selected],
            "suggested": _suggested_numbers(suggestion),
        },
        "suggestion": dict(suggestion),
        "full_run_index": full_index.attrs[SOURCE_ATTR],
        "provenance": dict(provenance),
    }
    out_json = Path(out_json)
    with atomic_output(out_json) as temp:
        temp.write_text(json.dumps(selection, indent=2, sort_keys=False) + "\n")
    return selection


def select_checkpoints(
    split_index_csv: Path,
    full_index_csv: Path,
    fid_csv: Path | None,
    out_json: Path,
    *,
    configured: str | Sequence[int],
    convergence: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The selection stage: suggest from both runs' indexes (and FID once it exists), write the file.

    `configured` is `checkpoints.selected` ("auto" or a list); see `write_selection`.
    """
    full_index = read_checkpoint_index(full_index_csv)
    suggestion = suggest_checkpoints(
        read_checkpoint_index(split_index_csv),
        full_index,
        None if fid_csv is None else read_fid_table(fid_csv),
        smoothing=convergence["smoothing"],
        tolerance=convergence["tolerance"],
        val_column=convergence["val_column"],
        n_window=convergence["n_window"],
    )
    return write_selection(configured, suggestion, full_index, out_json, provenance=provenance)
