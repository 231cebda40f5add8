"""Checkpoint selection: reading training.py's files, the convergence window, suggestion, selection file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radsynth.train.labels import checkpoint_label
from radsynth.train.selection import (
    convergence_window,
    missing_validation_reason,
    read_checkpoint_index,
    read_fid_table,
    read_loss_log,
    suggest_checkpoints,
    write_selection,
)
from radsynth.train.checkpoint_io import (
    CHECKPOINT_DIR,
    INDEX_COLUMNS,
    INDEX_CSV,
    LOSS_LOG_COLUMNS,
    checkpoint_filename,
    loss_log_row,
)

PROVENANCE = {"code_revision": "abc123", "config_hash": "none"}
PAPER_EVERY = 2000  # paper: a checkpoint every 2,000 steps, 80 checkpoints = 160,000 steps


def paper_shaped_losses(n_checkpoints: int, turning: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
    """run_dir/checkpoints/index.csv with training.py's columns, plus a small file per checkpoint."""
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
    """run_dir/loss_log.csv written with training.py's own header and `loss_log_row`."""
    path = run_dir / "loss_log.csv"
    lines = [",".join(LOSS_LOG_COLUMNS) + "\n"]
    for step, loss in enumerate(train_per_step, start=1):
        val, val_ema = val_at.get(step, (None, None))
        lines.append(loss_log_row(step, float(loss), val, val_ema, 5e-5, step * 0.5))
    path.write_text("".join(lines))
    return path


def paper_run(run_dir: Path, n_checkpoints: int, turning: int, with_val: bool, seed: int) -> Path:
    """Index of a paper-scale run (checkpoint every 2,000 steps) with paper-shaped losses."""
    train, val = paper_shaped_losses(n_checkpoints, turning, seed)
    return write_index(
        run_dir, PAPER_EVERY, train, val if with_val else None, val * 1.01 if with_val else None
    )


# ----------------------------------------------------------------------------------------------
# Labels and readers


def test_checkpoint_label_pads_to_three_digits() -> None:
    assert [checkpoint_label(n) for n in (34, 40, 80, 120, 0)] == [
        "ckpt034",
        "ckpt040",
        "ckpt080",
        "ckpt120",
        "ckpt000",
    ]
    assert sorted(checkpoint_label(n) for n in (100, 80, 9)) == ["ckpt009", "ckpt080", "ckpt100"]
    for bad in (-1, 3.0, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            checkpoint_label(bad)


def test_readers_return_typed_values(tmp_path: Path) -> None:
    train = np.array([0.5, 0.25, 0.125])
    index_csv = write_index(tmp_path, 20, train, np.array([0.6, 0.3, 0.2]), None)
    log_csv = write_loss_log(
        tmp_path, np.linspace(1, 0.1, 60), {20: (0.6, None), 40: (0.3, None), 60: (0.2, None)}
    )
    index = read_checkpoint_index(index_csv)
    assert index["checkpoint"].tolist() == [1, 2, 3]
    assert index["step"].tolist() == [20, 40, 60]
    assert index["train_loss"].tolist() == [0.5, 0.25, 0.125]
    assert index["val_loss"].tolist() == [0.6, 0.3, 0.2]
    assert index["val_loss_ema"].isna().all()
    assert index.attrs["source"] == str(index_csv)
    log = read_loss_log(log_csv)
    assert len(log) == 60 and log["step"].tolist() == list(range(1, 61))
    assert log["val_loss"].notna().sum() == 3 and log.loc[log["step"] == 40, "val_loss"].item() == 0.3
    assert log["train_loss"].iloc[0] == 1.0 and log["lr"].eq(5e-5).all()


def test_reader_errors_name_file_line_and_column(tmp_path: Path) -> None:
    index_csv = write_index(tmp_path, 20, np.array([0.5, 0.4, 0.3]), np.array([0.6, 0.5, 0.4]), None)
    lines = index_csv.read_text().splitlines()

    index_csv.write_text("\n".join([lines[0], lines[1], lines[2].replace("0.4", "abc", 1), lines[3]]) + "\n")
    with pytest.raises(
        ValueError, match=rf"{index_csv} line 3, column 'train_loss': 'abc' is not a finite number"
    ):
        read_checkpoint_index(index_csv)

    parts = lines[2].split(",")
    parts[5] = ""  # val_loss blank on one checkpoint only
    index_csv.write_text("\n".join([lines[0], lines[1], ",".join(parts), lines[3]]) + "\n")
    with pytest.raises(ValueError, match=r"line 3, column 'val_loss': blank, but other checkpoints"):
        read_checkpoint_index(index_csv)

    index_csv.write_text("\n".join([lines[0].replace("bytes", "size")] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match=r"index.csv: missing column\(s\) \['bytes'\]"):
        read_checkpoint_index(index_csv)

    parts = lines[3].split(",")
    parts[1] = "4"  # step 60 labelled checkpoint 4: breaks step = 20 x checkpoint
    index_csv.write_text("\n".join(lines[:3] + [",".join(parts)]) + "\n")
    with pytest.raises(ValueError, match=r"line 4, column 'checkpoint': checkpoint 4 at step 60"):
        read_checkpoint_index(index_csv)

    log_csv = write_loss_log(tmp_path, np.array([0.9, 0.8, 0.7, 0.6]), {})
    log_lines = log_csv.read_text().splitlines()
    log_csv.write_text("\n".join(log_lines[:3] + log_lines[4:]) + "\n")  # step 3 missing
    with pytest.raises(ValueError, match=rf"{log_csv} line 4, column 'step': 4 where step 3"):
        read_loss_log(log_csv)
    log_csv.write_text("\n".join(log_lines[:2] + [log_lines[2].replace("5e-05", "nan")]) + "\n")
    with pytest.raises(ValueError, match=r"line 3, column 'lr': 'nan' is not a finite number"):
        read_loss_log(log_csv)


# ----------------------------------------------------------------------------------------------
# Convergence window


@pytest.mark.parametrize("turning", [20, 35, 55])
def test_window_brackets_the_turning_point_of_paper_shaped_curves(tmp_path: Path, turning: int) -> None:
    for seed in range(3):
        index = read_checkpoint_index(paper_run(tmp_path / f"{turning}-{seed}", 80, turning, True, seed))
        start, end = convergence_window(index, smoothing=5, tolerance=0.01, val_column="val_loss")
        assert start <= turning <= end
        assert turning - 9 <= start and end <= turning + 6, (start, end)


def test_window_on_the_paper_run_is_near_30_to_40(tmp_path: Path) -> None:
    index = read_checkpoint_index(paper_run(tmp_path, 80, 35, True, seed=0))
    start, end = convergence_window(index, smoothing=5, tolerance=0.01, val_column="val_loss")
    assert 27 <= start <= 33 and 36 <= end <= 41  # paper: "between checkpoints 30 and 40"
    wider = convergence_window(index, smoothing=5, tolerance=0.05, val_column="val_loss")
    assert wider[0] <= start and wider[1] >= end and wider != (start, end)


def test_window_without_validation_is_none_with_reason(tmp_path: Path) -> None:
    index = read_checkpoint_index(paper_run(tmp_path, 10, 5, with_val=False, seed=0))
    assert convergence_window(index, smoothing=3, tolerance=0.01, val_column="val_loss") is None
    reason = missing_validation_reason(index, "val_loss")
    assert "'val_loss' has no values" in reason and "full-data run" in reason
    assert missing_validation_reason(index.iloc[:0], "val_loss").endswith("no checkpoints yet")


def test_window_edge_cases(tmp_path: Path) -> None:
    single = read_checkpoint_index(write_index(tmp_path / "one", 20, np.array([0.3]), np.array([0.4]), None))
    assert convergence_window(single, smoothing=5, tolerance=0.01, val_column="val_loss") == (1, 1)

    falling = np.array([0.9, 0.5, 0.3, 0.2, 0.15, 0.149, 0.1489])
    index = read_checkpoint_index(write_index(tmp_path / "fall", 20, falling * 0.9, falling, falling * 1.2))
    assert convergence_window(index, smoothing=1, tolerance=0.01, val_column="val_loss") == (5, 7)
    assert convergence_window(index, smoothing=1, tolerance=0.0, val_column="val_loss_ema") == (7, 7)
    with pytest.raises(ValueError, match="smoothing must be an odd"):
        convergence_window(index, smoothing=4, tolerance=0.01, val_column="val_loss")
    with pytest.raises(ValueError, match="val_column must be one of"):
        convergence_window(index, smoothing=3, tolerance=0.01, val_column="train_loss")


# ----------------------------------------------------------------------------------------------
# Suggestion and selection


def fid_table(full_index: pd.DataFrame, every_n: int, best: int) -> pd.DataFrame:
    """FID every `every_n` checkpoints (paper: every 20,000 steps = 10 checkpoints), lowest at `best`."""
    rows = full_index[full_index["checkpoint"] % every_n == 0]
    fid = 20 + (rows["checkpoint"] - best).abs() * 0.5
    return pd.DataFrame({"step": rows["step"], "checkpoint": rows["checkpoint"], "fid": fid})


def test_suggestion_on_paper_shaped_runs(tmp_path: Path) -> None:
    split = read_checkpoint_index(paper_run(tmp_path / "split", 80, 35, True, seed=1))
    full = read_checkpoint_index(paper_run(tmp_path / "full", 80, 35, False, seed=2))
    fid_csv = tmp_path / "fid.csv"
    fid_table(full, 10, best=80).to_csv(fid_csv, index=False)
    suggestion = suggest_checkpoints(
        split, full, read_fid_table(fid_csv), smoothing=5, tolerance=0.01, val_column="val_loss", n_window=2
    )
    json.dumps(suggestion)  # JSON-able
    window = suggestion["convergence_window"]
    start, end = convergence_window(split, smoothing=5, tolerance=0.01, val_column="val_loss")
    assert (window["split_run"]["start"], window["split_run"]["end"]) == (start, end)
    assert window["start"]["checkpoint"] == start and window["start"]["step"] == start * PAPER_EVERY
    assert window["end"]["checkpoint"] == end and window["end"]["label"] == checkpoint_label(end)
    assert window["split_run"]["diverged"] is True
    assert window["split_run"]["gap_at_last_checkpoint"] > 5 * abs(window["split_run"]["gap_at_end"])
    picks = [e["checkpoint"] for e in suggestion["window_checkpoints"]]
    assert picks == [end, round(end - (end - start) / 2)]
    assert suggestion["best_fid"]["checkpoint"] == 80 and suggestion["best_fid"]["fid"] == 20.0
    assert suggestion["final"] == {
        "checkpoint": 80,
        "label": "ckpt080",
        "step": 160000,
        "why": "last checkpoint of the full run (step 160000)",
    }
    assert suggestion["criterion"]["tolerance"] == 0.01

    no_fid = suggest_checkpoints(
        split, full, None, smoothing=5, tolerance=0.01, val_column="val_loss", n_window=3
    )
    assert no_fid["best_fid"] is None and no_fid["best_fid_reason"] == "no FID yet"
    assert len(no_fid["window_checkpoints"]) == 3
    no_split = suggest_checkpoints(
        None, full, None, smoothing=5, tolerance=0.01, val_column="val_loss", n_window=2
    )
    assert no_split["convergence_window"] is None and no_split["window_checkpoints"] == []
    assert no_split["convergence_window_reason"] == "no split run given"
    full_as_split = suggest_checkpoints(
        full, full, None, smoothing=5, tolerance=0.01, val_column="val_loss", n_window=2
    )
    assert "has no values" in full_as_split["convergence_window_reason"]


def test_suggestion_maps_window_to_nearest_full_run_checkpoint(tmp_path: Path) -> None:
    val = np.array([0.9, 0.5, 0.3, 0.2, 0.25, 0.4, 0.6])
    split = read_checkpoint_index(write_index(tmp_path / "split", 20, val * 0.9, val, None))
    full = read_checkpoint_index(
        write_index(tmp_path / "full", 40, np.full(4, 0.2), None, None)
    )  # steps 40..160
    suggestion = suggest_checkpoints(
        split, full, None, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1
    )
    entry = suggestion["convergence_window"]["start"]  # split checkpoint 4 = step 80 = full checkpoint 2
    assert (entry["checkpoint"], entry["step"]) == (2, 80)
    val = np.array([0.9, 0.5, 0.2, 0.3, 0.4])  # minimum at split step 60: no full-run checkpoint there
    split = read_checkpoint_index(write_index(tmp_path / "split2", 20, val, val, None))
    entry = suggest_checkpoints(
        split, full, None, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1
    )["convergence_window"]["end"]
    assert (entry["checkpoint"], entry["step"]) == (1, 40)
    assert "no checkpoint at step 60, nearest is step 40" in entry["why"]


def test_fid_for_a_checkpoint_missing_from_the_full_run_is_an_error(tmp_path: Path) -> None:
    full = read_checkpoint_index(paper_run(tmp_path, 20, 10, False, seed=0))
    fid = pd.DataFrame({"step": [40000, 200000], "checkpoint": [20, 100], "fid": [30.0, 10.0]})
    with pytest.raises(ValueError, match=r"checkpoint 100 \(lowest FID\) is not in .*index.csv"):
        suggest_checkpoints(None, full, fid, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1)


def test_write_selection_records_configured_checkpoints_beside_the_suggestion(tmp_path: Path) -> None:
    split = read_checkpoint_index(paper_run(tmp_path / "split", 80, 35, True, seed=1))
    full_csv = paper_run(tmp_path / "full", 80, 35, False, seed=2)
    full = read_checkpoint_index(full_csv)
    suggestion = suggest_checkpoints(
        split, full, None, smoothing=5, tolerance=0.01, val_column="val_loss", n_window=2
    )
    out = tmp_path / "selection" / "selection.json"
    returned = write_selection([34, 40, 80], suggestion, full, out, provenance=PROVENANCE)
    written = json.loads(out.read_text())
    assert written == returned
    assert [p.name for p in out.parent.iterdir()] == ["selection.json"]  # no temp file left
    assert [e["label"] for e in written["configured"]] == ["ckpt034", "ckpt040", "ckpt080"]
    assert [e["step"] for e in written["configured"]] == [68000, 80000, 160000]
    paths = [Path(e["path"]) for e in written["configured"]]
    assert paths[0] == tmp_path / "full" / "checkpoints" / "step068000.safetensors" and all(
        p.is_file() for p in paths
    )
    assert written["comparison"]["configured"] == [34, 40, 80]
    assert written["comparison"]["suggested"] == {
        "window": [e["checkpoint"] for e in suggestion["window_checkpoints"]],
        "best_fid": None,
        "final": 80,
    }
    assert written["suggestion"]["best_fid_reason"] == "no FID yet"
    assert written["full_run_index"] == str(full_csv) and written["provenance"] == PROVENANCE


def test_write_selection_rejects_bad_configured_checkpoints(tmp_path: Path) -> None:
    full_csv = paper_run(tmp_path / "full", 80, 35, False, seed=2)
    full = read_checkpoint_index(full_csv)
    suggestion = suggest_checkpoints(
        None, full, None, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1
    )
    out = tmp_path / "selection.json"
    with pytest.raises(
        ValueError, match=rf"configured checkpoint 81 is not in {full_csv} \(it has checkpoints 1..80\)"
    ):
        write_selection([34, 81], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(ValueError, match=r"configured checkpoint\(s\) \[40\] listed more than once"):
        write_selection([40, 40], suggestion, full, out, provenance=PROVENANCE)
    (tmp_path / "full" / "checkpoints" / "step080000.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"configured checkpoint 40: file .*step080000.safetensors"):
        write_selection([34, 40], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(ValueError, match="must come from read_checkpoint_index"):
        write_selection([34], suggestion, pd.DataFrame(full), out, provenance=PROVENANCE)
    assert not out.exists()
