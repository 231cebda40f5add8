"""Figure 1 (loss curves): size, provenance metadata, and pixels that follow the data and
selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from checkpoint_fixtures import paper_shaped_losses, write_index, write_loss_log
from helpers import PROVENANCE
from PIL import Image

from radsynth.train.figures import SELECTED_COLOUR, VAL_COLOURS, plot_loss_curves

EVERY = 20  # steps per checkpoint: 80 checkpoints in 1,600 logged steps keep the test fast


def write_run(run_dir: Path, with_val: bool) -> tuple[Path, Path]:
    """loss_log.csv and checkpoints/index.csv of an 80-checkpoint run with paper-shaped losses."""
    train_at_checkpoint, val = paper_shaped_losses(80, 35, seed=0)
    rng = np.random.default_rng(1)
    per_step = np.repeat(train_at_checkpoint, EVERY) * rng.lognormal(0, 0.3, 80 * EVERY)
    per_step[EVERY - 1 :: EVERY] = train_at_checkpoint  # the index holds the checkpoint step's loss
    val_at = (
        {(i + 1) * EVERY: (float(v), float(v) * 0.98) for i, v in enumerate(val)}
        if with_val
        else {}
    )
    index = write_index(
        run_dir,
        EVERY,
        train_at_checkpoint,
        val if with_val else None,
        val * 0.98 if with_val else None,
    )
    return write_loss_log(run_dir, per_step, val_at), index


def colour_pixels(path: Path, hex_colour: str) -> int:
    """Pixels within a small distance of one of the figure's line colours."""
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - target).sum(axis=-1) < 40).sum())


def test_split_run_figure_carries_provenance_and_shows_selection(tmp_path: Path) -> None:
    log, index = write_run(tmp_path / "split", with_val=True)
    plain = plot_loss_curves(
        log,
        index,
        tmp_path / "fig" / "plain.png",
        title="Split run",
        smoothing_window=51,
        provenance=PROVENANCE,
    )
    marked = plot_loss_curves(
        log,
        index,
        tmp_path / "fig" / "marked.png",
        title="Split run",
        smoothing_window=51,
        provenance=PROVENANCE,
        selected=[34, 40, 80],
    )
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["marked.png", "plain.png"]
    image = Image.open(marked)
    assert image.size == (1125, 780)  # 7.5 x 5.2 inches at 150 dpi
    assert json.loads(image.text["provenance"]) == PROVENANCE
    assert image.text["Title"] == "Split run"
    assert (
        "validation loss (online weights) and validation loss (EMA weights)"
        in image.text["Description"]
    )
    assert "80 checkpoints" in image.text["Description"]
    assert image.text["Description"].endswith("dashed: selected checkpoints 34, 40, 80.")
    assert (
        colour_pixels(plain, SELECTED_COLOUR) == 0
    )  # nothing selected: no highlight, no legend entry
    assert colour_pixels(marked, SELECTED_COLOUR) > 1000  # three dashed lines and their labels
    assert colour_pixels(marked, VAL_COLOURS["val_loss"]) > 500

    other = plot_loss_curves(
        log,
        index,
        tmp_path / "fig" / "other.png",
        title="Split run",
        smoothing_window=51,
        provenance=PROVENANCE,
        selected=[34, 41, 80],
    )
    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in (marked, other))
    changed = np.flatnonzero(np.any(a != b, axis=(0, 2)))  # columns of the image that differ
    assert 0 < len(changed) and changed.max() - changed.min() < 60  # only around checkpoints 40/41


def test_full_run_figure_has_training_loss_only(tmp_path: Path) -> None:
    log, index = write_run(tmp_path / "full", with_val=False)
    out = plot_loss_curves(
        log,
        index,
        tmp_path / "full.png",
        title="Full-data run",
        smoothing_window=51,
        provenance=PROVENANCE,
        selected=[80],
    )
    assert colour_pixels(out, VAL_COLOURS["val_loss"]) == 0
    assert colour_pixels(out, VAL_COLOURS["val_loss_ema"]) == 0
    assert colour_pixels(out, "#1f77b4") > 1000  # the training-loss average
    assert "no validation loss (full-data run)" in Image.open(out).text["Description"]


def test_selected_checkpoint_must_be_in_the_index(tmp_path: Path) -> None:
    log, index = write_run(tmp_path / "run", with_val=True)
    with pytest.raises(ValueError, match=rf"selected checkpoint 81 is not in {index}"):
        plot_loss_curves(
            log,
            index,
            tmp_path / "f.png",
            title="t",
            smoothing_window=5,
            provenance=PROVENANCE,
            selected=[34, 81],
        )
    assert not (tmp_path / "f.png").exists()
