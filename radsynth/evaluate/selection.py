"""The selection record: which checkpoints to sample, written next to the run's own proposal.

With `checkpoints.selected: auto` the proposal (radsynth.evaluate.suggestion) itself is
sampled; with a configured list (the paper's by-eye choice: 34, 40, 80) that list, plus a
warning and a `disagreements` record for each listed checkpoint the evidence does not back, so
a reader sees where a by-eye choice departs from the data. The file stays at
`results/train/selection.json` (what sampling reads, through radsynth.train.labels); the rule
runs after the FID table, so it belongs to this stage, not to training.

Checkpoint numbers are the paper's: number = step / checkpoint_every (34 -> step 68,000).
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from radsynth.core.atomic import atomic_output
from radsynth.core.checked_csv import SOURCE_ATTR, source_of
from radsynth.evaluate.suggestion import suggest_checkpoints
from radsynth.evaluate.table import read_fid_table
from radsynth.train.checkpoint_io import read_checkpoint_index
from radsynth.train.labels import checkpoint_label

log = logging.getLogger(__name__)

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
    """The mode, "auto" or "configured", of a `checkpoints.selected` value; anything else is an
    error."""
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
                f"{SELECTED_KEY}: checkpoint {number} is beyond the last checkpoint {last} of "
                f"the full run ({index_csv})"
            )
        if number not in held:
            raise ValueError(
                f"{SELECTED_KEY}: checkpoint {number} is not in {index_csv} "
                f"(it has checkpoints {first}..{last})"
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
    """Write (atomically) and return the selection: the checkpoints to sample, beside the
    suggestion.

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
    """The selection rule: suggest from both runs' indexes (and the FID table when given), write
    the file.

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
