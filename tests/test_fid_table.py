"""The FID table and its figure: rows gathered in step order, mixed extractors refused, the figure
drawn from the table (checked in its PNG metadata and pixel content)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import radsynth.evaluate.table as table_module
from radsynth.core.features import ExtractorDescription
from radsynth.core.tables import read_table, read_table_provenance
from radsynth.evaluate.metrics import FidelityRow
from radsynth.evaluate.table import (
    LEADING_COLUMNS,
    checkpoint_record,
    fid_table,
    plot_fid_curve,
    read_fid_table,
    write_fid_table,
)

EXTRACTOR = ExtractorDescription(
    name="inception-v3 (test)",
    weights="ab" * 32,
    input_size=299,
    resize="bilinear",
    antialias=True,
    channel_rule="gray",
    scaling="(x - 128) / 128",
    num_features=2048,
)
SAMPLING = {"sampler": "dpmsolver++", "steps": 25, "weights": "online", "image_size": 32}


def fidelity(fid: float, warnings: tuple[str, ...] = (), precision: float = 0.5) -> FidelityRow:
    return FidelityRow(
        n_real=200,
        n_synthetic=64,
        extractor=EXTRACTOR,
        atlas_digest="cd" * 32,
        fid=fid,
        kid_mean=fid / 1000,
        kid_std=0.001,
        kid_subsets=100,
        kid_subset_size=64,
        precision=precision,
        recall=0.4,
        density=0.9,
        coverage=0.3,
        prdc_k=5,
        warnings=warnings,
    )


def record(step: int, fid: float, **kwargs) -> dict:
    return checkpoint_record(
        fidelity(fid, **kwargs),
        step=step,
        checkpoint=step // 50,
        sampling=SAMPLING,
        synthetic_source=f"results/samples/fid/ckpt{step // 50:03d}",
    )


def test_rows_come_in_step_order_with_the_issue_columns_first():
    frame = fid_table([record(300, 80.0), record(150, 200.0), record(450, 60.0)])
    assert list(frame.columns[: len(LEADING_COLUMNS)]) == [
        "step",
        "checkpoint",
        "n_real",
        "n_synthetic",
        "sampler",
        "steps",
        "weights",
        "extractor",
        "fid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "density",
        "coverage",
    ]
    assert frame["step"].tolist() == [150, 300, 450]
    assert frame["checkpoint"].tolist() == [3, 6, 9]
    assert frame["fid"].tolist() == [200.0, 80.0, 60.0]
    assert frame["extractor"].iloc[0] == "inception-v3 (test)"
    assert frame["extractor_weights"].iloc[0] == "ab" * 32
    assert frame["sampler"].iloc[0] == "dpmsolver++" and frame["steps"].iloc[0] == 25


def test_nan_metrics_become_blank_cells_not_nan_text(tmp_path):
    rows = [record(150, 200.0, precision=float("nan"), warnings=("too few images",))]
    assert rows[0]["precision"] is None
    write_fid_table(rows, tmp_path / "fid.csv", provenance={"radsynth_version": "test"})
    text = (tmp_path / "fid.csv").read_text()
    assert "nan" not in text.lower().replace("synthetic", "")
    assert read_table(tmp_path / "fid.csv")["precision"].isna().all()


def test_rows_from_two_extractors_are_refused():
    other = record(300, 80.0)
    other["extractor_weights"] = "ef" * 32
    with pytest.raises(ValueError, match="different extractors"):
        fid_table([record(150, 200.0), other])


def test_a_step_twice_and_no_rows_are_refused():
    with pytest.raises(ValueError, match=r"repeat step\(s\) \[150\]"):
        fid_table([record(150, 200.0), record(150, 190.0)])
    with pytest.raises(ValueError, match="at least one evaluated checkpoint"):
        fid_table([])


def test_the_written_table_carries_provenance_and_feeds_checkpoint_selection(tmp_path):
    path = tmp_path / "fid.csv"
    write_fid_table([record(300, 80.0), record(150, 200.0)], path, provenance={"config_hash": "x1"})
    assert read_table_provenance(path) == {"config_hash": "x1"}
    fid = read_fid_table(path)
    assert fid["step"].tolist() == [150, 300] and fid["fid"].tolist() == [200.0, 80.0]


def test_reader_names_the_file_line_after_provenance_lines(tmp_path):
    path = tmp_path / "fid.csv"
    write_fid_table([record(150, 200.0), record(300, 80.0)], path, provenance={"a": "1", "b": "2"})
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(
        "80.0", "eighty", 1
    )  # 2 provenance lines, header, row 1, row 2 = line 5
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=rf"{path} line 5, column 'fid': 'eighty' is not a finite number"
    ):
        read_fid_table(path)


def test_reader_refuses_missing_columns_and_non_integer_cells(tmp_path):
    path = tmp_path / "fid.csv"
    write_fid_table([record(150, 200.0), record(300, 80.0)], path, provenance={"a": "1"})
    lines = path.read_text().splitlines()
    # line 1 provenance, line 2 header, line 3 step 150, line 4 step 300
    columns = lines[1].split(",")
    steps_at = columns.index("steps")
    cells = lines[3].split(",")
    cells[steps_at] = "25.5"
    path.write_text("\n".join([*lines[:3], ",".join(cells)]) + "\n")
    with pytest.raises(
        ValueError, match=rf"{path} line 4, column 'steps': '25.5' is not an integer"
    ):
        read_fid_table(path)
    path.write_text("\n".join([lines[0], lines[1].replace("n_real", "real"), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=rf"{path}: missing column\(s\) \['n_real'\]"):
        read_fid_table(path)
    path.write_text("\n".join([lines[0], lines[1], lines[3], lines[2]]) + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 4, column 'step': 150 does not follow 300"):
        read_fid_table(path)


def test_figure_marks_the_best_fid_and_records_its_provenance(tmp_path, monkeypatch):
    """The marker sits on the lowest FID (step 300, checkpoint 6, FID 80): not the first row, not
    the last, and lower than the warned row's 95, so marking any other row fails."""
    drawn = []
    save = table_module.save_figure

    def keep_figure(figure, *args, **kwargs):
        drawn.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(table_module, "save_figure", keep_figure)
    frame = fid_table(
        [record(150, 200.0), record(300, 80.0), record(450, 95.0, warnings=("small set",))]
    )
    out = plot_fid_curve(
        frame, tmp_path / "fid.png", provenance={"config_hash": "x1"}, title="FID test"
    )
    (figure,) = drawn
    fid_axes = figure.axes[0]
    (marker,) = [text for text in fid_axes.texts if text.get_text().startswith("best FID")]
    assert marker.get_text() == "best FID 80.00\ncheckpoint 6"
    assert tuple(float(v) for v in marker.xy) == (300.0, 80.0)
    with Image.open(out) as image:
        assert json.loads(image.text["provenance"]) == {"config_hash": "x1"}
        assert image.text["Description"] == "3 evaluated checkpoints; 1 with warnings"
        pixels = np.asarray(image.convert("RGB"))
    blue = np.all(np.abs(pixels.astype(int) - (0x1F, 0x77, 0xB4)) < 30, axis=-1)
    assert blue.sum() > 100  # the FID line and points are drawn


def test_table_of_one_row_still_plots(tmp_path):
    frame = fid_table([record(150, 200.0, precision=float("nan"))])
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    assert plot_fid_curve(frame, tmp_path / "one.png", provenance={}, title="one").is_file()
