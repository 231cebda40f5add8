"""Checkpoint selection: reading the training runs' files (radsynth.train.checkpoint_io), the
convergence window, the suggestion and the selection file (radsynth.evaluate)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from checkpoint_fixtures import (
    PAPER_EVERY,
    paper_shaped_losses,
    write_fid_csv,
    write_index,
    write_loss_log,
)
from helpers import PROVENANCE

from radsynth.core.smoothing import moving_average
from radsynth.evaluate.convergence import convergence_window, missing_validation_reason
from radsynth.evaluate.selection import select_checkpoints, write_selection
from radsynth.evaluate.suggestion import suggest_checkpoints
from radsynth.evaluate.table import read_fid_table
from radsynth.train.checkpoint_io import (
    add_index_row,
    read_checkpoint_index,
    read_loss_log,
    truncate_history,
)
from radsynth.train.labels import checkpoint_label, read_selected_checkpoints, read_selected_labels


def floor_val() -> np.ndarray:
    """Validation loss of 80 checkpoints: 0.1 on checkpoints 30..40, falling into that floor at
    0.001 per checkpoint and rising out of it at 0.002 per checkpoint."""
    k = np.arange(1, 81)
    return 0.1 + 0.001 * np.maximum(0, 30 - k) + 0.002 * np.maximum(0, k - 40)


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
    assert (
        log["val_loss"].notna().sum() == 3 and log.loc[log["step"] == 40, "val_loss"].item() == 0.3
    )
    assert log["train_loss"].iloc[0] == 1.0 and log["lr"].eq(5e-5).all()


def test_reader_errors_name_file_line_and_column(tmp_path: Path) -> None:
    index_csv = write_index(
        tmp_path, 20, np.array([0.5, 0.4, 0.3]), np.array([0.6, 0.5, 0.4]), None
    )
    lines = index_csv.read_text().splitlines()

    index_csv.write_text(
        "\n".join([lines[0], lines[1], lines[2].replace("0.4", "abc", 1), lines[3]]) + "\n"
    )
    with pytest.raises(
        ValueError, match=rf"{index_csv} line 3, column 'train_loss': 'abc' is not a finite number"
    ):
        read_checkpoint_index(index_csv)

    parts = lines[2].split(",")
    parts[5] = ""  # val_loss blank on one checkpoint only
    index_csv.write_text("\n".join([lines[0], lines[1], ",".join(parts), lines[3]]) + "\n")
    with pytest.raises(
        ValueError, match=r"line 3, column 'val_loss': blank, but other checkpoints"
    ):
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


INDEX_HEADER = "step,checkpoint,path,bytes,train_loss,val_loss,val_loss_ema\n"


def test_index_rows_from_a_remade_step_on_are_replaced_and_earlier_ones_kept(
    tmp_path: Path,
) -> None:
    index_csv = write_index(
        tmp_path, 20, np.array([0.5, 0.25, 0.125]), np.array([0.6, 0.3, 0.2]), None
    )
    first = "20,1,checkpoints/step000020.safetensors,7,0.5,0.6,\n"
    assert index_csv.read_text().startswith(INDEX_HEADER + first)
    # A resumed run remakes checkpoint 2: its row is replaced, the row of step 60 dropped.
    add_index_row(tmp_path, 40, 2, 99, 0.1 + 0.2, 0.7, None)
    assert index_csv.read_text() == (
        INDEX_HEADER
        + first
        + "40,2,checkpoints/step000040.safetensors,99,0.30000000000000004,0.7,\n"
    )
    truncate_history(tmp_path, 20)
    assert index_csv.read_text() == INDEX_HEADER + first
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.safetensors")] == [
        "step000020.safetensors"
    ]
    index_csv.write_text(INDEX_HEADER + first.replace("20,1", "twenty,1"))
    with pytest.raises(ValueError, match=rf"{index_csv} line 2, column 'step': 'twenty' is not"):
        add_index_row(tmp_path, 40, 2, 99, 0.3, 0.7, None)


def test_a_full_run_index_is_written_with_blank_validation_cells(tmp_path: Path) -> None:
    add_index_row(tmp_path, 4, 1, 10, 0.25, None, None)
    add_index_row(tmp_path, 8, 2, 10, 0.125, None, None)
    assert (tmp_path / "checkpoints" / "index.csv").read_text() == (
        INDEX_HEADER
        + "4,1,checkpoints/step000004.safetensors,10,0.25,,\n"
        + "8,2,checkpoints/step000008.safetensors,10,0.125,,\n"
    )
    index = read_checkpoint_index(tmp_path / "checkpoints" / "index.csv")
    assert index["val_loss"].isna().all() and index["train_loss"].tolist() == [0.25, 0.125]


# ----------------------------------------------------------------------------------------------
# Convergence window


def test_moving_average_is_centred_and_shrinks_at_the_ends() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 10.0])
    # (1+2)/2, (1+2+3)/3, (2+3+10)/3, (3+10)/2
    assert moving_average(values, 3).tolist() == [1.5, 2.0, 5.0, 6.5]
    assert moving_average(values, 1).tolist() == values.tolist()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="window must be a positive integer"):
            moving_average(values, bad)


@pytest.mark.parametrize("turning", [20, 35, 55])
def test_window_brackets_the_turning_point_of_paper_shaped_curves(
    tmp_path: Path, turning: int
) -> None:
    for seed in range(3):
        index = read_checkpoint_index(
            paper_run(tmp_path / f"{turning}-{seed}", 80, turning, True, seed)
        )
        start, end = convergence_window(index, smoothing=5, tolerance=0.01, val_column="val_loss")
        assert start <= turning <= end
        assert turning - 9 <= start and end <= turning + 6, (start, end)


def test_window_of_a_hand_computed_floor(tmp_path: Path) -> None:
    val = floor_val()
    index = read_checkpoint_index(write_index(tmp_path, PAPER_EVERY, val * 0.9, val, None))
    # Centred 5-checkpoint means minus the floor 0.1, by hand:
    #   k <= 28: (30 - k) * 0.001;  k = 29: (3+2+1) * 0.001 / 5 = 0.0012;
    #   k = 30: (2+1) * 0.001 / 5 = 0.0006
    #   31..39: at most 1 * 0.002 / 5 = 0.0004;  k = 40: (1+2) * 0.002 / 5 = 0.0012
    #   k = 41: (1+2+3) * 0.002 / 5 = 0.0024;  k >= 42: (k - 40) * 0.002
    # Tolerance 0.01 keeps excesses <= 0.001: checkpoints 30..39.
    assert convergence_window(index, smoothing=5, tolerance=0.01, val_column="val_loss") == (30, 39)
    # Tolerance 0.045 keeps excesses <= 0.0045: checkpoints 26 (0.004) .. 42 (0.004).
    assert convergence_window(index, smoothing=5, tolerance=0.045, val_column="val_loss") == (
        26,
        42,
    )
    # Unsmoothed, tolerance 0.015 keeps raw excesses <= 0.0015: 29 (0.001) .. 40 (0; 41 has 0.002).
    assert convergence_window(index, smoothing=1, tolerance=0.015, val_column="val_loss") == (
        29,
        40,
    )


def test_window_without_validation_is_none_with_reason(tmp_path: Path) -> None:
    index = read_checkpoint_index(paper_run(tmp_path, 10, 5, with_val=False, seed=0))
    assert convergence_window(index, smoothing=3, tolerance=0.01, val_column="val_loss") is None
    reason = missing_validation_reason(index, "val_loss")
    assert "'val_loss' has no values" in reason and "full-data run" in reason
    assert missing_validation_reason(index.iloc[:0], "val_loss").endswith("no checkpoints yet")


def test_window_edge_cases(tmp_path: Path) -> None:
    single = read_checkpoint_index(
        write_index(tmp_path / "one", 20, np.array([0.3]), np.array([0.4]), None)
    )
    assert convergence_window(single, smoothing=5, tolerance=0.01, val_column="val_loss") == (1, 1)

    falling = np.array([0.9, 0.5, 0.3, 0.2, 0.15, 0.149, 0.1489])
    index = read_checkpoint_index(
        write_index(tmp_path / "fall", 20, falling * 0.9, falling, falling * 1.2)
    )
    assert convergence_window(index, smoothing=1, tolerance=0.01, val_column="val_loss") == (5, 7)
    assert convergence_window(index, smoothing=1, tolerance=0.0, val_column="val_loss_ema") == (
        7,
        7,
    )
    with pytest.raises(ValueError, match="smoothing must be an odd"):
        convergence_window(index, smoothing=4, tolerance=0.01, val_column="val_loss")
    with pytest.raises(ValueError, match="val_column must be one of"):
        convergence_window(index, smoothing=3, tolerance=0.01, val_column="train_loss")


# ----------------------------------------------------------------------------------------------
# Suggestion and selection


def fid_table(full_index: pd.DataFrame, every_n: int, best: int) -> pd.DataFrame:
    """FID every `every_n` checkpoints (paper: every 20,000 steps = 10 checkpoints), lowest at
    `best`."""
    rows = full_index[full_index["checkpoint"] % every_n == 0]
    fid = 20 + (rows["checkpoint"] - best).abs() * 0.5
    return pd.DataFrame({"step": rows["step"], "checkpoint": rows["checkpoint"], "fid": fid})


def test_suggestion_on_paper_shaped_runs(tmp_path: Path) -> None:
    split = read_checkpoint_index(paper_run(tmp_path / "split", 80, 35, True, seed=1))
    full = read_checkpoint_index(paper_run(tmp_path / "full", 80, 35, False, seed=2))
    fid = fid_table(full, 10, best=80)
    fid_csv = write_fid_csv(tmp_path / "fid.csv", fid["step"], fid["checkpoint"], fid["fid"])
    suggestion = suggest_checkpoints(
        split,
        full,
        read_fid_table(fid_csv),
        smoothing=5,
        tolerance=0.01,
        val_column="val_loss",
        n_window=2,
    )
    json.dumps(suggestion)  # JSON-able
    window = suggestion["convergence_window"]
    start, end = convergence_window(split, smoothing=5, tolerance=0.01, val_column="val_loss")
    assert (window["split_run"]["start"], window["split_run"]["end"]) == (start, end)
    assert window["start"]["checkpoint"] == start and window["start"]["step"] == start * PAPER_EVERY
    assert window["end"]["checkpoint"] == end and window["end"]["label"] == checkpoint_label(end)
    assert window["split_run"]["diverged"] is True
    assert window["split_run"]["gap_at_last_checkpoint"] > 5 * abs(
        window["split_run"]["gap_at_end"]
    )
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
    entry = suggestion["convergence_window"][
        "start"
    ]  # split checkpoint 4 = step 80 = full checkpoint 2
    assert (entry["checkpoint"], entry["step"]) == (2, 80)
    val = np.array(
        [0.9, 0.5, 0.2, 0.3, 0.4]
    )  # minimum at split step 60: no full-run checkpoint there
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
        suggest_checkpoints(
            None, full, fid, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1
        )


#: The floor's window with smoothing 5 and tolerance 0.01 is 30..39
#: (test_window_of_a_hand_computed_floor); two picks over it: 39 (its end) and the nearest to
#: 39 - 9 / 2 = 34.5, the earlier of 34 and 35 on the tie.
FLOOR_CONVERGENCE = {"val_column": "val_loss", "smoothing": 5, "tolerance": 0.01, "n_window": 2}
FINAL_WHY = "last checkpoint of the full run (step 160000)"


def floor_runs(tmp_path: Path) -> tuple[Path, Path]:
    """(split index.csv, full index.csv): the floor as split run, 80 full-run checkpoints."""
    split_csv = write_index(tmp_path / "split", PAPER_EVERY, floor_val() * 0.9, floor_val(), None)
    full_csv = write_index(tmp_path / "full", PAPER_EVERY, np.full(80, 0.05), None, None)
    return split_csv, full_csv


def floor_suggestion(tmp_path: Path, fid: pd.DataFrame | None) -> tuple[dict, pd.DataFrame]:
    """(suggestion, full index) of `floor_runs` with FLOOR_CONVERGENCE."""
    split_csv, full_csv = floor_runs(tmp_path)
    full = read_checkpoint_index(full_csv)
    suggestion = suggest_checkpoints(
        read_checkpoint_index(split_csv), full, fid, **FLOOR_CONVERGENCE
    )
    return suggestion, full


def test_auto_selects_window_picks_final_and_best_fid(tmp_path: Path) -> None:
    split_csv, full_csv = floor_runs(tmp_path)
    fid_csv = write_fid_csv(
        tmp_path / "fid.csv", [40000, 80000, 120000, 160000], [20, 40, 60, 80], [50, 31, 28.5, 29]
    )
    out = tmp_path / "selection.json"
    written = select_checkpoints(
        split_csv,
        full_csv,
        fid_csv,
        out,
        configured="auto",
        convergence=FLOOR_CONVERGENCE,
        provenance=PROVENANCE,
    )
    assert json.loads(out.read_text()) == written
    assert written["mode"] == "auto" and written["disagreements"] == []
    assert [(e["checkpoint"], e["label"], e["step"]) for e in written["selected"]] == [
        (34, "ckpt034", 68000),
        (39, "ckpt039", 78000),
        (60, "ckpt060", 120000),
        (80, "ckpt080", 160000),
    ]
    why = {e["checkpoint"]: e["why"] for e in written["selected"]}
    assert why[39][0].startswith("split-run checkpoint 39: pick 1 of 2") and len(why[39]) == 1
    assert why[34][0].startswith("split-run checkpoint 34: pick 2 of 2") and len(why[34]) == 1
    assert why[60] == ["lowest FID (28.500) of 4 evaluated checkpoints"]
    assert why[80] == [FINAL_WHY]
    assert written["selected"][0]["path"] == str(
        tmp_path / "full" / "checkpoints" / "step068000.safetensors"
    )
    assert written["comparison"]["configured"] == "auto"
    assert written["comparison"]["selected"] == [34, 39, 60, 80]
    assert read_selected_labels(out) == ["ckpt034", "ckpt039", "ckpt060", "ckpt080"]


def test_auto_merges_a_checkpoint_proposed_twice_and_works_without_fid(tmp_path: Path) -> None:
    fid = pd.DataFrame({"step": [80000, 160000], "checkpoint": [40, 80], "fid": [31.0, 20.0]})
    suggestion, full = floor_suggestion(tmp_path / "fid", fid)
    written = write_selection("auto", suggestion, full, tmp_path / "a.json", provenance=PROVENANCE)
    assert [e["checkpoint"] for e in written["selected"]] == [34, 39, 80]
    assert written["selected"][2]["why"] == [
        FINAL_WHY,
        "lowest FID (20.000) of 2 evaluated checkpoints",
    ]

    suggestion, full = floor_suggestion(tmp_path / "nofid", None)
    written = write_selection("auto", suggestion, full, tmp_path / "b.json", provenance=PROVENANCE)
    assert [e["checkpoint"] for e in written["selected"]] == [34, 39, 80]
    assert (
        written["suggestion"]["best_fid"] is None
        and written["suggestion"]["best_fid_reason"] == "no FID yet"
    )


def test_configured_checkpoints_outside_the_evidence_are_recorded_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    suggestion, full = floor_suggestion(tmp_path, None)
    out = tmp_path / "selection" / "selection.json"
    with caplog.at_level(logging.WARNING, logger="radsynth.evaluate.selection"):
        written = write_selection(
            [80, 40, 12, 36, 34], suggestion, full, out, provenance=PROVENANCE
        )
    assert json.loads(out.read_text()) == written
    assert [p.name for p in out.parent.iterdir()] == ["selection.json"]  # no temp file left
    assert written["mode"] == "configured"
    assert [e["label"] for e in written["selected"]] == [
        "ckpt012",
        "ckpt034",
        "ckpt036",
        "ckpt040",
        "ckpt080",
    ]
    assert [e["step"] for e in written["selected"]] == [24000, 68000, 72000, 80000, 160000]
    assert all(Path(e["path"]).is_file() for e in written["selected"])
    why = {e["checkpoint"]: e["why"] for e in written["selected"]}
    assert why[12] == ["listed in checkpoints.selected"]
    assert why[36] == [
        "listed in checkpoints.selected",
        "inside the convergence window 30..39 of the split run",
    ]
    assert why[40] == ["listed in checkpoints.selected"]
    assert why[80] == ["listed in checkpoints.selected", FINAL_WHY]
    assert why[34][1].startswith("split-run checkpoint 34: pick 2 of 2")
    assert written["disagreements"] == [
        {"checkpoint": 12, "reason": "before the convergence window 30..39 of the split run"},
        {"checkpoint": 40, "reason": "after the convergence window 30..39 of the split run"},
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "checkpoints.selected: checkpoint 12 is before the convergence window 30..39"
    )
    assert warnings[1].startswith(
        "checkpoints.selected: checkpoint 40 is after the convergence window 30..39"
    )
    assert all(w.endswith("the run's own evidence proposes [34, 39, 80]") for w in warnings)
    assert written["comparison"] == {
        "configured": [80, 40, 12, 36, 34],
        "selected": [12, 34, 36, 40, 80],
        "suggested": {"window": [39, 34], "best_fid": None, "final": 80},
    }
    assert written["full_run_index"] == str(tmp_path / "full" / "checkpoints" / "index.csv")
    assert written["provenance"] == PROVENANCE


def test_best_fid_backs_a_configured_checkpoint_and_no_window_is_a_reason(tmp_path: Path) -> None:
    fid = pd.DataFrame({"step": [80000, 160000], "checkpoint": [40, 80], "fid": [19.0, 20.0]})
    suggestion, full = floor_suggestion(tmp_path, fid)
    written = write_selection(
        [34, 40, 80], suggestion, full, tmp_path / "a.json", provenance=PROVENANCE
    )
    assert written["disagreements"] == []
    assert written["selected"][1]["why"] == [
        "listed in checkpoints.selected",
        "lowest FID (19.000) of 2 evaluated checkpoints",
    ]
    no_split = suggest_checkpoints(
        None, full, None, smoothing=5, tolerance=0.01, val_column="val_loss", n_window=2
    )
    written = write_selection([34, 80], no_split, full, tmp_path / "b.json", provenance=PROVENANCE)
    assert written["disagreements"] == [
        {"checkpoint": 34, "reason": "outside any convergence window (no split run given)"}
    ]


def test_write_selection_rejects_bad_configured_checkpoints(tmp_path: Path) -> None:
    full_csv = paper_run(tmp_path / "full", 80, 35, False, seed=2)
    full = read_checkpoint_index(full_csv)
    suggestion = suggest_checkpoints(
        None, full, None, smoothing=1, tolerance=0.0, val_column="val_loss", n_window=1
    )
    out = tmp_path / "selection.json"
    with pytest.raises(
        ValueError,
        match=(
            r"checkpoints.selected: checkpoint 81 is beyond the last checkpoint 80 of the full "
            rf"run \({full_csv}\)"
        ),
    ):
        write_selection([34, 81], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(
        ValueError,
        match=r"checkpoints.selected: checkpoint 0 is not in .* \(it has checkpoints 1..80\)",
    ):
        write_selection([0, 34], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(
        ValueError, match=r"checkpoints.selected: checkpoint\(s\) \[40\] listed more than once"
    ):
        write_selection([40, 40], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(
        ValueError, match=r"checkpoints.selected must be 'auto' or a list .* got 'Auto'"
    ):
        write_selection("Auto", suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(ValueError, match=r"checkpoints.selected is empty"):
        write_selection([], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(ValueError, match=r"checkpoints.selected: 3.5 is not a checkpoint number"):
        write_selection([34, 3.5], suggestion, full, out, provenance=PROVENANCE)
    (tmp_path / "full" / "checkpoints" / "step080000.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"checkpoints.selected: checkpoint 40: file .*step080000.safetensors",
    ):
        write_selection([34, 40], suggestion, full, out, provenance=PROVENANCE)
    with pytest.raises(ValueError, match="must come from read_checkpoint_index"):
        write_selection([34], suggestion, pd.DataFrame(full), out, provenance=PROVENANCE)
    assert not out.exists()


def test_reader_returns_selected_labels_in_order(tmp_path: Path) -> None:
    path = tmp_path / "selection.json"
    path.write_text(
        '{"mode": "configured", "selected": ['
        '{"checkpoint": 34, "label": "ckpt034", "step": 68000, "why": []},'
        '{"checkpoint": 40, "label": "ckpt040", "step": 80000, "why": []},'
        '{"checkpoint": 80, "label": "ckpt080", "step": 160000, "why": []}]}'
    )
    assert read_selected_labels(path) == ["ckpt034", "ckpt040", "ckpt080"]
    assert read_selected_checkpoints(str(path)) == {"ckpt034": 34, "ckpt040": 40, "ckpt080": 80}

    path.write_text('{"mode": "auto", "configured": [34]}')
    with pytest.raises(ValueError, match=rf"{path}: key 'selected' must be a non-empty list"):
        read_selected_labels(path)
    path.write_text('{"selected": [{"checkpoint": 34, "label": "ckpt040"}]}')
    with pytest.raises(
        ValueError, match=r"selected\[0\] label 'ckpt040' does not match checkpoint 34 \(ckpt034\)"
    ):
        read_selected_labels(path)
    path.write_text('{"selected": [{"label": "ckpt034"}]}')
    with pytest.raises(ValueError, match=r"selected\[0\] has no checkpoint number"):
        read_selected_labels(path)
    with pytest.raises(FileNotFoundError, match=r"missing.json: file not found"):
        read_selected_labels(tmp_path / "missing.json")
