"""Training-run files made by hand for the checkpoint-selection and loss-figure tests: an index
and a loss log with losses shaped like the paper's Figure 1, and an FID table through training.

Kept in one place so that a test module never imports another test module.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsynth.evaluate.table import write_fid_table
from radsynth.train.checkpoint_io import (
    CHECKPOINT_DIR,
    INDEX_COLUMNS,
    INDEX_CSV,
    LOSS_LOG_COLUMNS,
    checkpoint_filename,
    loss_log_row,
)

PAPER_EVERY = 2000  # paper: a checkpoint every 2,000 steps, 80 checkpoints = 160,000 steps


def paper_shaped_losses(
    n_checkpoints: int, turning: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) per checkpoint 1..n shaped like the paper's Figure 1 reading.

    Both fall steeply at first; the training loss keeps falling to the end, the validation loss
    flattens into its minimum at `turning` and rises faster after it (overfitting). Train noise
    is a one-batch loss (10%), validation noise small (fixed draws).
    """
    rng = np.random.default_rng(seed)
    k = np.arange(1, n_checkpoints + 1)
    shared = 0.02 + 0.08 * np.exp(-k / 3)
    train = (shared - 0.00008 * k) * rng.lognormal(0, 0.1, n_checkpoints)
    bowl = np.where(k < turning, 0.000004, 0.000012) * (k - turning) ** 2
    val = shared + bowl + rng.normal(0, 0.00005, n_checkpoints)
    return train, val


def write_index(
    run_dir: Path,
    every: int,
    train: np.ndarray,
    val: np.ndarray | None,
    val_ema: np.ndarray | None,
) -> Path:
    """run_dir/checkpoints/index.csv with the loop's columns, plus a small file per checkpoint."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, loss in enumerate(train):
        step = (i + 1) * every
        (folder / checkpoint_filename(step)).write_bytes(b"weights")
        rows.append(
            {
                "step": step,
                "checkpoint": i + 1,
                "path": f"{CHECKPOINT_DIR}/{checkpoint_filename(step)}",
                "bytes": 7,
                "train_loss": repr(float(loss)),
                "val_loss": "" if val is None else repr(float(val[i])),
                "val_loss_ema": "" if val_ema is None else repr(float(val_ema[i])),
            }
        )
    path = folder / INDEX_CSV
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_loss_log(
    run_dir: Path, train_per_step: np.ndarray, val_at: dict[int, tuple[float, float | None]]
) -> Path:
    """run_dir/loss_log.csv written with the loop's own header and `loss_log_row`."""
    path = run_dir / "loss_log.csv"
    lines = [",".join(LOSS_LOG_COLUMNS) + "\n"]
    for step, loss in enumerate(train_per_step, start=1):
        val, val_ema = val_at.get(step, (None, None))
        lines.append(loss_log_row(step, float(loss), val, val_ema, 5e-5, step * 0.5))
    path.write_text("".join(lines))
    return path


def write_fid_csv(
    path: Path, steps: Sequence[int], checkpoints: Sequence[int], fids: Sequence[float]
) -> Path:
    """An FID table through training (the evaluate stage's writer) with the given FIDs; the other
    metrics are placeholders the selection does not read."""
    records = [
        {
            "step": step,
            "checkpoint": checkpoint,
            "n_real": 200,
            "n_synthetic": 64,
            "sampler": "ddpm",
            "steps": 25,
            "weights": "ema",
            "extractor": "inception-v3 (test)",
            "extractor_weights": "ab" * 32,
            "fid": fid,
            "kid_mean": fid / 1000,
            "kid_std": 0.001,
            "precision": 0.5,
            "recall": 0.4,
            "density": 0.9,
            "coverage": 0.3,
        }
        for step, checkpoint, fid in zip(steps, checkpoints, fids, strict=True)
    ]
    write_fid_table(records, path, provenance={"config_hash": "test"})
    return path
