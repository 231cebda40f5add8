"""Checkpoint labels, importable without torch or pandas (the Snakefile builds its DAG from
them)."""

from __future__ import annotations

import json
import numbers
from pathlib import Path


def checkpoint_label(number: int) -> str:
    """Zero-padded label ("ckpt034") used as the group name in the Turing-test answer key.

    Padding to three digits makes labels sort in checkpoint order (ckpt034 < ckpt080 < ckpt100
    for the paper's 80 checkpoints), which the answer key and figures rely on.
    """
    if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number < 0:
        raise ValueError(f"checkpoint number must be a non-negative integer, got {number!r}")
    return f"ckpt{int(number):03d}"


def read_selected_checkpoints(selection_json: str | Path) -> dict[str, int]:
    """Label -> checkpoint number of the checkpoints to sample, in the file's (checkpoint) order.

    Reads the `selected` list that `radsynth.evaluate.selection.write_selection` writes in both
    modes; json only, because the Snakefile calls it in a checkpoint's input function. Each
    stored label must match its number, so a hand edit cannot sample one checkpoint under
    another's name.
    """
    path = Path(selection_json)
    try:
        selection = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    entries = selection.get("selected") if isinstance(selection, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: key 'selected' must be a non-empty list of checkpoints")
    selected: dict[str, int] = {}
    for position, entry in enumerate(entries):
        number = entry.get("checkpoint") if isinstance(entry, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(
                f"{path}: selected[{position}] has no checkpoint number, got {entry!r}"
            )
        label = checkpoint_label(number)
        if entry.get("label") != label:
            raise ValueError(
                f"{path}: selected[{position}] label {entry.get('label')!r} does not match "
                f"checkpoint {number} ({label})"
            )
        if label in selected:
            raise ValueError(f"{path}: selected[{position}] repeats checkpoint {number}")
        selected[label] = number
    return selected


def read_selected_labels(selection_json: str | Path) -> list[str]:
    """Labels of the checkpoints to sample ("ckpt034", ...), in checkpoint order: the `ckpt`
    wildcard values of the sampling jobs."""
    return list(read_selected_checkpoints(selection_json))
