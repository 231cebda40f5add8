"""Train/validation partition of the atlas for the split training run.

The paper (section 2.2) split CSXA by random sampling into 4,219 training and 744 validation
images (85/15 of 4,963); the full-data run uses every image. The partition is a manifest
CSV so that the training stage, the audit and a reader of the results all see the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.core.tables import read_table, write_table
from radsynth.data.atlas import load_atlas

MANIFEST_COLUMNS = ("index", "source_name", "subset")


@dataclass(frozen=True)
class SplitSizes:
    train: int
    val: int


@dataclass(frozen=True)
class Subsets:
    """Atlas row indices of the training and validation images (sorted)."""

    train: np.ndarray
    val: np.ndarray


def split_sizes(n_images: int, val_fraction: float) -> SplitSizes:
    """Validation size rounds to the nearest image: 0.15 x 4,963 = 744.45 -> 744, as in the
    paper."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"split.val_fraction must lie strictly between 0 and 1, got {val_fraction}"
        )
    n_val = int(round(n_images * val_fraction))
    sizes = SplitSizes(train=n_images - n_val, val=n_val)
    if sizes.train == 0 or sizes.val == 0:
        raise ValueError(
            f"split of {n_images} images with split.val_fraction={val_fraction} leaves an empty "
            f"subset (train {sizes.train}, val {sizes.val})"
        )
    return sizes


def split_manifest(source_names: Sequence[str], *, val_fraction: float, seed: int) -> pd.DataFrame:
    """Seeded random partition; rows keep the atlas order so `index` is the HDF5 row."""
    sizes = split_sizes(len(source_names), val_fraction)
    order = np.random.default_rng(seed).permutation(len(source_names))
    subset = np.full(len(source_names), "train", dtype=object)
    subset[order[: sizes.val]] = "val"
    return pd.DataFrame(
        {"index": np.arange(len(source_names)), "source_name": list(source_names), "subset": subset}
    )


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest, failing with the file name when columns or subsets are wrong."""
    manifest = read_table(path, dtype={"source_name": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"{path}: split manifest lacks column(s) {', '.join(missing)}")
    bad = manifest.loc[~manifest["subset"].isin(["train", "val"])]
    if not bad.empty:
        row = int(bad.index[0]) + 1
        raise ValueError(
            f"{path}: data row {row} has subset {bad['subset'].iloc[0]!r}, expected train or val"
        )
    return manifest


def read_subsets(path: Path, source_names: Sequence[str]) -> Subsets:
    """Train/val atlas rows of a manifest checked against the atlas it claims to partition.

    Every atlas row must appear exactly once under its own source name, and neither subset may
    be empty: a manifest of another atlas fails here, naming the first row at fault.
    """
    manifest = read_manifest(path)
    n_images = len(source_names)
    index = pd.to_numeric(manifest["index"], errors="coerce")
    bad = manifest.index[~index.between(0, n_images - 1) | (index % 1 != 0)]
    if len(bad):
        raise ValueError(
            f"{path}: data row {bad[0] + 1}: index {manifest['index'].iloc[bad[0]]} is not a row "
            f"of the atlas (0..{n_images - 1})"
        )
    if index.duplicated().any():
        raise ValueError(
            f"{path}: atlas index {int(index[index.duplicated()].iloc[0])} appears more than once"
        )
    if len(index) != n_images:
        raise ValueError(f"{path}: lists {len(index)} images but the atlas holds {n_images}")
    expected = [source_names[int(i)] for i in index]
    mismatched = [
        row for row, (got, want) in enumerate(zip(manifest["source_name"], expected)) if got != want
    ]
    if mismatched:
        row = mismatched[0]
        raise ValueError(
            f"{path}: data row {row + 1}: source_name {manifest['source_name'].iloc[row]!r} "
            "differs from "
            f"the atlas's {expected[row]!r} at index {int(index.iloc[row])}"
        )
    rows = {
        name: np.sort(index[manifest["subset"] == name].to_numpy(dtype=np.int64))
        for name in ("train", "val")
    }
    for name, selected in rows.items():
        if not len(selected):
            raise ValueError(f"{path}: the {name!r} subset is empty")
    return Subsets(rows["train"], rows["val"])


def write_split_for_atlas(
    atlas_h5: Path, out_csv: Path, *, val_fraction: float, seed: int, provenance: dict[str, str]
) -> pd.DataFrame:
    """The split stage: partition the preprocessed atlas's images and write the manifest."""
    with load_atlas(atlas_h5, lazy=True) as atlas:
        names = atlas.source_names
    manifest = split_manifest(names, val_fraction=val_fraction, seed=seed)
    write_table(manifest, out_csv, provenance=provenance)
    return manifest
