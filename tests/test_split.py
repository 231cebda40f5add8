import re

import numpy as np
import pandas as pd
import pytest

from radsynth.core.tables import read_table_provenance, write_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.split import (
    SplitSizes,
    read_manifest,
    read_subsets,
    split_manifest,
    split_sizes,
    write_split_for_atlas,
)


def test_paper_split_sizes():
    sizes = split_sizes(4963, 0.15)
    assert (sizes.train, sizes.val) == (4219, 744)


@pytest.mark.parametrize(
    ("n_images", "fraction", "train", "val"),
    [
        (9, 0.25, 7, 2),  # 9 x 1/4 = 2.25: fractional part below 0.5 rounds down
        (14, 0.25, 10, 4),  # 3.5: exactly 0.5 (1/4 is exact in binary) rounds up to the even 4
        (11, 0.25, 8, 3),  # 2.75: above 0.5 rounds up
        (19, 0.15, 16, 3),  # 2.85 rounds up
        (5, 0.15, 4, 1),  # 0.75 rounds up to one validation image
    ],
)
def test_split_sizes_round_to_the_nearest_image(n_images, fraction, train, val):
    sizes = split_sizes(n_images, fraction)
    assert (sizes.train, sizes.val) == (train, val)
    manifest = split_manifest([f"{i}.png" for i in range(n_images)], val_fraction=fraction, seed=0)
    assert manifest["subset"].value_counts().to_dict() == {"train": train, "val": val}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_out_of_range_names_key(fraction):
    with pytest.raises(ValueError, match=r"split.val_fraction must lie strictly between 0 and 1"):
        split_sizes(100, fraction)


def test_empty_subset_is_an_error():
    with pytest.raises(ValueError, match="empty subset"):
        split_sizes(3, 0.1)


def test_one_image_per_subset_is_enough():
    assert split_sizes(2, 0.5) == SplitSizes(train=1, val=1)


def test_manifest_is_seeded_and_keeps_atlas_order():
    names = [f"{i:07d}.png" for i in range(200)]
    first = split_manifest(names, val_fraction=0.15, seed=7)
    again = split_manifest(names, val_fraction=0.15, seed=7)
    other = split_manifest(names, val_fraction=0.15, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first["subset"].equals(other["subset"])
    assert list(first["index"]) == list(range(200))
    assert list(first["source_name"]) == names
    assert (first["subset"] == "val").sum() == 30


def test_manifest_round_trip_with_provenance(tmp_path):
    names = ["a.png", "b.png", "c.png", "d.png"]
    manifest = split_manifest(names, val_fraction=0.25, seed=1)
    out = tmp_path / "split" / "manifest.csv"
    write_table(manifest, out, provenance={"config_hash": "abc", "radsynth_version": "0.1.0"})
    assert out.read_text().startswith("# config_hash: abc\n# radsynth_version: 0.1.0\n")
    assert read_table_provenance(out) == {"config_hash": "abc", "radsynth_version": "0.1.0"}
    pd.testing.assert_frame_equal(read_manifest(out), manifest, check_dtype=False)


def test_read_manifest_names_file_and_row(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("index,source_name,subset\n0,a.png,train\n1,b.png,test\n")
    with pytest.raises(ValueError, match=r"m.csv: data row 2 has subset 'test'"):
        read_manifest(bad)
    missing = tmp_path / "n.csv"
    missing.write_text("index,source_name\n0,a.png\n")
    with pytest.raises(ValueError, match="lacks column.*subset"):
        read_manifest(missing)
    bare = tmp_path / "o.csv"
    bare.write_text("index\n0\n")
    with pytest.raises(
        ValueError, match=r"o.csv: split manifest lacks column\(s\) source_name, subset$"
    ):
        read_manifest(bare)


def test_read_manifest_keeps_numeric_looking_source_names(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("index,source_name,subset\n0,0007,train\n1,0100,val\n")
    assert list(read_manifest(path)["source_name"]) == ["0007", "0100"]


def test_split_for_atlas_reads_source_names(tmp_path):
    atlas = tmp_path / "atlas.h5"
    write_atlas(
        atlas,
        atlas_from_images(
            np.zeros((20, 8, 8), dtype=np.uint8), [f"{i:07d}.png" for i in range(20)]
        ),
    )
    manifest = write_split_for_atlas(
        atlas, tmp_path / "m.csv", val_fraction=0.15, seed=3, provenance={}
    )
    assert manifest["source_name"].iloc[5] == "0000005.png"
    assert (manifest["subset"] == "val").sum() == 3
    again = write_split_for_atlas(
        atlas, tmp_path / "again.csv", val_fraction=0.15, seed=3, provenance={}
    )
    pd.testing.assert_frame_equal(again, manifest)


# An atlas of five images whose names look numeric (CSXA names are digits): a manifest that lists
# them out of atlas order, with its expected train/val atlas rows.
ATLAS_NAMES = ["0007", "0001", "0100", "0002", "0003"]
GOOD_ROWS = [
    (3, "0002", "val"),
    (0, "0007", "train"),
    (4, "0003", "train"),
    (1, "0001", "val"),
    (2, "0100", "train"),
]


def manifest_file(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    lines = ["# config_hash: abc", "index,source_name,subset"]
    path.write_text("\n".join(lines + [",".join(map(str, row)) for row in rows]) + "\n")
    return path


def test_read_subsets_gives_sorted_atlas_rows(tmp_path):
    subsets = read_subsets(manifest_file(tmp_path, GOOD_ROWS), ATLAS_NAMES)
    assert subsets.train.tolist() == [0, 2, 4] and subsets.val.tolist() == [1, 3]
    assert subsets.train.dtype == np.int64 and subsets.val.dtype == np.int64


@pytest.mark.parametrize("index", ["5", "-1", "1.5", "x"])
def test_read_subsets_refuses_an_index_outside_the_atlas(tmp_path, index):
    rows = [*GOOD_ROWS]
    rows[1] = (index, "0007", "train")
    with pytest.raises(
        ValueError,
        match=rf"manifest.csv: data row 2: index {re.escape(index)} is not a row of the atlas "
        r"\(0\.\.4\)",
    ):
        read_subsets(manifest_file(tmp_path, rows), ATLAS_NAMES)


def test_read_subsets_refuses_a_repeated_index(tmp_path):
    rows = [*GOOD_ROWS]
    rows[2] = (2, "0100", "train")
    with pytest.raises(ValueError, match="manifest.csv: atlas index 2 appears more than once"):
        read_subsets(manifest_file(tmp_path, rows), ATLAS_NAMES)


def test_read_subsets_refuses_a_manifest_of_fewer_images(tmp_path):
    with pytest.raises(ValueError, match="manifest.csv: lists 4 images but the atlas holds 5"):
        read_subsets(manifest_file(tmp_path, GOOD_ROWS[:4]), ATLAS_NAMES)


def test_read_subsets_refuses_a_source_name_of_another_atlas(tmp_path):
    rows = [*GOOD_ROWS]
    rows[2] = (4, "0004", "train")
    with pytest.raises(
        ValueError,
        match="manifest.csv: data row 3: source_name '0004' differs from the atlas's '0003' at "
        "index 4",
    ):
        read_subsets(manifest_file(tmp_path, rows), ATLAS_NAMES)


@pytest.mark.parametrize(("only", "empty"), [("train", "val"), ("val", "train")])
def test_read_subsets_refuses_an_empty_subset(tmp_path, only, empty):
    rows = [(index, name, only) for index, name, _ in GOOD_ROWS]
    with pytest.raises(ValueError, match=f"manifest.csv: the '{empty}' subset is empty"):
        read_subsets(manifest_file(tmp_path, rows), ATLAS_NAMES)


def test_read_subsets_gives_integer_rows_for_an_index_written_as_floats(tmp_path):
    """A manifest re-saved by a spreadsheet may write 3 as 3.0: still atlas row 3, as int64."""
    rows = [(f"{index}.0", name, subset) for index, name, subset in GOOD_ROWS]
    subsets = read_subsets(manifest_file(tmp_path, rows), ATLAS_NAMES)
    assert subsets.train.tolist() == [0, 2, 4] and subsets.val.tolist() == [1, 3]
    assert subsets.train.dtype == np.int64 and subsets.val.dtype == np.int64
