import numpy as np
import pandas as pd
import pytest

from radsynth.core.tables import read_table_provenance, write_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.split import read_manifest, split_manifest, split_sizes, write_split_for_atlas


def test_paper_split_sizes():
    sizes = split_sizes(4963, 0.15)
    assert (sizes.train, sizes.val) == (4219, 744)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_fraction_out_of_range_names_key(fraction):
    with pytest.raises(ValueError, match="split.val_fraction"):
        split_sizes(100, fraction)


def test_empty_subset_is_an_error():
    with pytest.raises(ValueError, match="empty subset"):
        split_sizes(3, 0.1)


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
