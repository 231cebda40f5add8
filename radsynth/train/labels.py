"""Checkpoint labels, importable without torch or pandas (the Snakefile builds its DAG from them)."""

from __future__ import annotations

import numbers


def checkpoint_label(number: int) -> str:
    """Zero-padded label ("ckpt034") used as the group name in the Turing-test answer key.

    Padding to three digits makes labels sort in checkpoint order (ckpt034 < ckpt080 < ckpt100
    for the paper's 80 checkpoints), which the answer key and figures rely on.
    """
    if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number < 0:
        raise ValueError(f"checkpoint number must be a non-negative integer, got {number!r}")
    return f"ckpt{int(number):03d}"
