"""The landmark CSV format: its one writer and one reader (radsynth.anatomy.landmark_export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radsynth.anatomy.landmark_export import read_landmark_table, write_landmark_table
from radsynth.core.tables import read_table_provenance

PROVENANCE = {"radsynth_version": "test", "config_hash": "abc"}

#: The format's columns written out by hand: CSXA's 23 labels in order, then the geometry.
LABEL_STEMS = [
    "c2_centroid",
    "c2_bottom_left",
    "c2_bottom_right",
    *(
        f"c{level}_{corner}"
        for level in range(3, 8)
        for corner in ("top_left", "top_right", "bottom_left", "bottom_right")
    ),
]
GEOMETRY = [
    "c2_c7_angle_deg",
    "curvature_class",
    *(f"c{level}_{size}" for level in range(3, 8) for size in ("height", "depth")),
]
COLUMNS = [
    "image_id",
    *(f"{stem}_{field}" for stem in LABEL_STEMS for field in ("x", "y", "confidence")),
    *GEOMETRY,
]


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.uniform(0, 32, (3, len(COLUMNS))), columns=COLUMNS)
    table["image_id"] = ["a#1", "b", "0001035"]
    table["curvature_class"] = ["lordotic", "", "kyphotic"]
    table.loc[1, "c2_c7_angle_deg"] = np.nan  # unknown facing
    table.loc[2, [f"c{level}_height" for level in range(3, 8)]] = np.nan  # no spacing
    return table


def test_round_trip_keeps_every_value_and_the_provenance(tmp_path: Path) -> None:
    table = _table()
    path = tmp_path / "landmarks.csv"
    write_landmark_table(table, path, provenance=PROVENANCE)
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# radsynth_version: test", "# config_hash: abc"]
    assert lines[2].split(",") == COLUMNS
    assert len(COLUMNS) == 1 + 23 * 3 + 2 + 10
    back = read_landmark_table(path)
    pd.testing.assert_frame_equal(back, table)
    assert back["image_id"].tolist() == ["a#1", "b", "0001035"]  # stems stay text
    assert read_table_provenance(path) == PROVENANCE
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_the_writer_refuses_a_frame_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "landmarks.csv"
    with pytest.raises(ValueError, match=r"missing column\(s\) \['c4_top_right_y'\]"):
        write_landmark_table(_table().drop(columns="c4_top_right_y"), path, provenance=PROVENANCE)
    swapped = _table()[[COLUMNS[0], COLUMNS[2], COLUMNS[1], *COLUMNS[3:]]]
    with pytest.raises(ValueError, match="columns out of order"):
        write_landmark_table(swapped, path, provenance=PROVENANCE)
    assert not path.exists()


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "landmarks.csv"
    write_landmark_table(_table(), path, provenance=PROVENANCE)
    lines = path.read_text().splitlines()
    drop = COLUMNS.index("c5_bottom_left_confidence")
    kept = [",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines[2:]]
    path.write_text("\n".join(lines[:2] + kept) + "\n")
    with pytest.raises(ValueError, match=rf"{path}: missing column\(s\) \['c5_bottom_left_conf"):
        read_landmark_table(path)


def test_a_bad_value_is_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "landmarks.csv"
    write_landmark_table(_table(), path, provenance=PROVENANCE)
    frame = pd.read_csv(path, skiprows=2, dtype=str, keep_default_na=False)
    frame.loc[1, "c6_top_left_x"] = "twelve"
    path.write_text("# radsynth_version: test\n# config_hash: abc\n" + frame.to_csv(index=False))
    # two provenance lines, the header on line 3, the second row on line 5
    with pytest.raises(ValueError, match=rf"{path} line 5, column 'c6_top_left_x': 'twelve'"):
        read_landmark_table(path)
    frame.loc[1, "c6_top_left_x"] = ""  # a landmark is never blank
    path.write_text(frame.to_csv(index=False))
    with pytest.raises(ValueError, match=rf"{path} line 3, column 'c6_top_left_x': ''"):
        read_landmark_table(path)
    frame.loc[1, "c6_top_left_x"] = "1.5"
    frame.loc[0, "curvature_class"] = "sideways"
    path.write_text(frame.to_csv(index=False))
    with pytest.raises(ValueError, match=r"line 2, column 'curvature_class': 'sideways'"):
        read_landmark_table(path)
    frame.loc[0, "curvature_class"] = "straight"
    frame.loc[2, "image_id"] = "b"
    path.write_text(frame.to_csv(index=False))
    with pytest.raises(ValueError, match=r"line 4, column 'image_id': 'b' repeats"):
        read_landmark_table(path)
