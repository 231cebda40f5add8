"""The sampling stage's files, as later stages read them: complete Zarr v3 shard stores of one
checkpoint, and the gathered manifest that names each sample and the flip that makes it
left-facing. Reading needs zarr, numpy and pandas only, never torch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from radsynth.core.tables import read_table

STORE_FORMAT = "radsynth-samples/1"
#: Attributes that may differ between the shards of one checkpoint's sample set.
SHARD_KEYS = ("shard_index", "first_global_index", "n_images", "batch_size")
#: Attributes a store records about its run rather than about the images it holds.
RUN_KEYS = ("provenance", "resume_provenance", "complete")
MANIFEST_COLUMNS = (
    "image_id",
    "shard",
    "index",
    "global_index",
    "seed",
    "facing",
    "probability_left",
    "flipped",
)


def image_id(seed_label: str, global_index: int) -> str:
    """A sample's name across the pipeline, unique over sets and checkpoints: the label its stores
    record (`<sample set>/<checkpoint>`, "/" written "-" so the id is a file name) and its global
    index ("large-ckpt034_000123")."""
    return f"{seed_label.replace('/', '-')}_{global_index:06d}"


def read_store_attrs(store: Path) -> dict[str, Any]:
    try:
        return dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{store}: not a readable Zarr v3 sample store ({exc})") from exc


@dataclass(frozen=True)
class Sample:
    global_index: int
    seed: int
    image: np.ndarray


@dataclass(frozen=True)
class SampleSet:
    """Read view over the complete shard stores of one checkpoint, in global-index order."""

    stores: tuple[Path, ...]
    attrs: dict[str, Any]
    global_indices: np.ndarray
    seeds: np.ndarray
    _store_of: np.ndarray = field(repr=False)
    _local_of: np.ndarray = field(repr=False)
    _arrays: tuple[zarr.Array, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.global_indices)

    def __iter__(self) -> Iterator[Sample]:
        block = 256
        for first in range(0, len(self), block):
            chunk = self.global_indices[first : first + block]
            for index, seed, image in zip(
                chunk, self.seeds[first : first + block], self.images(chunk)
            ):
                yield Sample(int(index), int(seed), image)

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """Images (k, H, W) for the given global indices, in the order given."""
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        positions = np.searchsorted(self.global_indices, wanted)
        clipped = np.minimum(positions, len(self) - 1)
        absent = wanted[self.global_indices[clipped] != wanted]
        if absent.size:
            raise KeyError(
                f"global index {int(absent[0])} is not in the stores "
                f"{', '.join(map(str, self.stores))}"
            )
        size = int(self.attrs["image_size"])
        out = np.empty((len(wanted), size, size), dtype=np.uint8)
        for store in np.unique(self._store_of[positions]):
            mine = np.flatnonzero(self._store_of[positions] == store)
            local = self._local_of[positions[mine]]
            order = np.argsort(local)
            out[mine[order]] = self._arrays[store].get_orthogonal_selection((local[order],))
        return out


def open_samples(stores: Sequence[Path]) -> SampleSet:
    """Open complete shard stores of one checkpoint, refusing incomplete, mismatched or overlapping
    shards."""
    if not stores:
        raise ValueError("open_samples needs at least one store")
    groups = [_open_complete(Path(store)) for store in stores]
    common = _common_attrs([Path(s) for s in stores], groups)
    global_parts = [group["global_index"][:] for group in groups]
    all_global = np.concatenate(global_parts)
    order = np.argsort(all_global, kind="stable")
    sorted_global = all_global[order]
    _check_coverage([Path(s) for s in stores], global_parts, sorted_global)
    store_of = np.concatenate([np.full(len(part), i) for i, part in enumerate(global_parts)])[order]
    local_of = np.concatenate([np.arange(len(part)) for part in global_parts])[order]
    seeds = np.concatenate([group["seed"][:] for group in groups])[order]
    return SampleSet(
        stores=tuple(Path(s) for s in stores),
        attrs=common,
        global_indices=sorted_global,
        seeds=seeds,
        _store_of=store_of,
        _local_of=local_of,
        _arrays=tuple(group["images"] for group in groups),
    )


def _open_complete(store: Path) -> zarr.Group:
    attrs = read_store_attrs(store)
    if attrs.get("complete") is not True:
        raise ValueError(
            f"{store}: sample store is incomplete (its job has not finished); rerun the job"
        )
    if attrs.get("format") != STORE_FORMAT:
        raise ValueError(f"{store}: format {attrs.get('format')!r} is not {STORE_FORMAT!r}")
    return zarr.open_group(store, mode="r", zarr_format=3)


def _common_attrs(stores: Sequence[Path], groups: Sequence[zarr.Group]) -> dict[str, Any]:
    """Attributes every shard must share (model, sampler, seed, ...), checked key by key."""
    per_store = [dict(group.attrs) for group in groups]
    common = {k: v for k, v in per_store[0].items() if k not in SHARD_KEYS + RUN_KEYS}
    for store, attrs in zip(stores[1:], per_store[1:]):
        for key, value in common.items():
            if attrs.get(key) != value:
                raise ValueError(
                    f"{store}: {key}={attrs.get(key)!r} differs from {stores[0]} ({key}={value!r})"
                )
    return common


def _check_coverage(
    stores: Sequence[Path], parts: Sequence[np.ndarray], sorted_global: np.ndarray
) -> None:
    """Global indices must be unique across shards and leave no gap between the first and the
    last."""
    repeated = np.unique(sorted_global[1:][np.diff(sorted_global) == 0])
    if repeated.size:
        holders = [str(s) for s, part in zip(stores, parts) if repeated[0] in part]
        raise ValueError(
            f"global index {int(repeated[0])} ({repeated.size} repeated in all) is in several "
            f"stores: {', '.join(holders)}"
        )
    expected = np.arange(sorted_global[0], sorted_global[-1] + 1)
    missing = np.setdiff1d(expected, sorted_global)
    if missing.size:
        raise ValueError(
            f"global indices {int(missing[0])}..{int(missing[-1])} ({missing.size} in all) are in "
            "none "
            f"of the stores {', '.join(map(str, stores))}"
        )


@dataclass(frozen=True)
class LeftFacingSamples(MappingABC):
    """Read-only mapping image_id -> left-facing uint8 image over a checkpoint's shards."""

    manifest: pd.DataFrame
    samples: SampleSet

    def __getitem__(self, key: str) -> np.ndarray:
        row = self.manifest.loc[key]
        image = self.samples.images([int(row["global_index"])])[0]
        return image[:, ::-1].copy() if row["flipped"] else image

    def __iter__(self) -> Iterator[str]:
        return iter(self.manifest.index)

    def __len__(self) -> int:
        return len(self.manifest)


def open_left_facing(manifest_csv: Path) -> LeftFacingSamples:
    """The standardized samples of one checkpoint, through its manifest (shards beside it)."""
    manifest_csv = Path(manifest_csv)
    manifest = read_table(manifest_csv).set_index("image_id")
    missing = [c for c in MANIFEST_COLUMNS[1:] if c not in manifest.columns]
    if missing:
        raise ValueError(f"{manifest_csv}: sample manifest lacks column(s) {', '.join(missing)}")
    stores = [manifest_csv.parent / name for name in sorted(manifest["shard"].unique())]
    return LeftFacingSamples(manifest, open_samples(stores))
