"""The HDF5 atlas file written by preprocessing, read by every later stage.

Layout: `/images` uint8 (N, size, size); `/keypoints` float32 (N, labels, 2) with the label names
in its `labels` attribute (NaN where a point is missing); per-image `/meta/*`, among them
`/meta/mm_per_pixel` float64 (N, 2): x and y millimetres per atlas pixel, NaN where the source
records no spacing; root attributes `size`, `n_images`, `provenance` (JSON) and whatever else the
writer records.

Reading needs only h5py and numpy, so a stage that reads the atlas (training, facing, the
Turing study) never imports the preprocessing code or its DICOM reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from radsynth.core.atomic import atomic_output
from radsynth.data.csxa import KEYPOINT_LABELS


@dataclass
class Atlas:
    """A preprocessed atlas; `images` is a lazy h5py dataset when loaded with lazy=True."""

    images: np.ndarray | h5py.Dataset
    keypoints: np.ndarray
    labels: tuple[str, ...]
    source_names: list[str]
    inverted: np.ndarray
    negative_scores: np.ndarray
    original_height: np.ndarray
    original_width: np.ndarray
    bit_depth: np.ndarray
    modes: list[str]
    mm_per_pixel: np.ndarray  # float64 (N, 2): x, y mm per atlas pixel; NaN where unknown
    attrs: dict[str, object]
    provenance: dict[str, str]
    _file: h5py.File | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.source_names)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REQUIRED_KEYS = (
    "images",
    "keypoints",
    "meta/source_name",
    "meta/original_height",
    "meta/original_width",
    "meta/bit_depth",
    "meta/mode",
    "meta/inverted",
    "meta/negative_score",
    "meta/mm_per_pixel",
)


def load_atlas(path: Path, *, lazy: bool = False) -> Atlas:
    """Read a preprocessed atlas; with lazy=True the images stay on disk until indexed (close
    it)."""
    path = Path(path)
    h5 = h5py.File(path, "r")
    try:
        missing = [key for key in _REQUIRED_KEYS if key not in h5]
        if missing:
            raise KeyError(f"{path}: not a radsynth atlas, missing {', '.join(missing)}")
        attrs = {key: _plain(value) for key, value in h5.attrs.items()}
        atlas = Atlas(
            images=h5["images"] if lazy else h5["images"][()],
            keypoints=h5["keypoints"][()],
            labels=tuple(str(label) for label in h5["keypoints"].attrs["labels"]),
            source_names=list(h5["meta/source_name"].asstr()[()]),
            inverted=h5["meta/inverted"][()],
            negative_scores=h5["meta/negative_score"][()],
            original_height=h5["meta/original_height"][()],
            original_width=h5["meta/original_width"][()],
            bit_depth=h5["meta/bit_depth"][()],
            modes=list(h5["meta/mode"].asstr()[()]),
            mm_per_pixel=h5["meta/mm_per_pixel"][()],
            attrs=attrs,
            provenance=json.loads(attrs.get("provenance", "{}")),
            _file=h5 if lazy else None,
        )
    except BaseException:
        h5.close()
        raise
    if not lazy:
        h5.close()
    return atlas


def atlas_digest(images: np.ndarray, source_names: Sequence[str]) -> str:
    """SHA-256 of the atlas content later stages read: the images (a C-contiguous array: dtype,
    shape, bytes) and the source names. Not the HDF5 file's bytes, which hold a creation time.
    Training keys its run folders on it, evaluation its cached real-image features."""
    header = {
        "dtype": str(images.dtype),
        "shape": list(images.shape),
        "source_names": list(source_names),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8"))
    digest.update(memoryview(images))
    return digest.hexdigest()


def _plain(value: object) -> object:
    """HDF5 attribute -> plain Python (numpy scalars and bytes are awkward downstream)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def atlas_from_images(
    images: np.ndarray, source_names: list[str], *, provenance: dict[str, str] | None = None
) -> Atlas:
    """An atlas of images that are already square uint8 and upright (tests, benchmarks, imports):
    no keypoints and no pixel spacing (NaN), nothing inverted, the stored size taken as the
    original size."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"atlas images must be uint8 (N, size, size), got {images.dtype} {images.shape}"
        )
    if len(source_names) != len(images):
        raise ValueError(f"{len(source_names)} source names for {len(images)} images")
    n, size = len(images), images.shape[1]
    return Atlas(
        images=images,
        keypoints=np.full((n, len(KEYPOINT_LABELS), 2), np.nan, dtype=np.float32),
        labels=KEYPOINT_LABELS,
        source_names=list(source_names),
        inverted=np.zeros(n, dtype=bool),
        negative_scores=np.zeros(n, dtype=np.float64),
        original_height=np.full(n, size, dtype=np.int32),
        original_width=np.full(n, size, dtype=np.int32),
        bit_depth=np.full(n, 8, dtype=np.int32),
        modes=["L"] * n,
        mm_per_pixel=np.full((n, 2), np.nan),
        attrs={"size": size},
        provenance=dict(provenance or {}),
    )


def write_metadata(h5: h5py.File, atlas: Atlas) -> None:
    """Everything but `/images` (which a writer may stream in first): keypoints, meta,
    attributes."""
    text = h5py.string_dtype("utf-8")
    keypoints = h5.create_dataset("keypoints", data=np.asarray(atlas.keypoints, dtype=np.float32))
    keypoints.attrs["labels"] = list(atlas.labels)
    h5.create_dataset("meta/source_name", data=list(atlas.source_names), dtype=text)
    h5.create_dataset(
        "meta/original_height", data=np.asarray(atlas.original_height, dtype=np.int32)
    )
    h5.create_dataset("meta/original_width", data=np.asarray(atlas.original_width, dtype=np.int32))
    h5.create_dataset("meta/bit_depth", data=np.asarray(atlas.bit_depth, dtype=np.int32))
    h5.create_dataset("meta/mode", data=list(atlas.modes), dtype=text)
    h5.create_dataset("meta/inverted", data=np.asarray(atlas.inverted, dtype=bool))
    h5.create_dataset(
        "meta/negative_score", data=np.asarray(atlas.negative_scores, dtype=np.float64)
    )
    spacing = np.asarray(atlas.mm_per_pixel, dtype=np.float64)
    if spacing.shape != (len(atlas.source_names), 2):
        raise ValueError(
            f"mm per pixel must be ({len(atlas.source_names)}, 2) (x, y per image), "
            f"got {spacing.shape}"
        )
    h5.create_dataset("meta/mm_per_pixel", data=spacing)
    for key, value in atlas.attrs.items():
        h5.attrs[key] = value
    h5.attrs["n_images"] = len(atlas.source_names)
    for key, value in atlas.provenance.items():
        h5.attrs[f"provenance_{key}"] = str(value)
    h5.attrs["provenance"] = json.dumps(dict(atlas.provenance), sort_keys=True)


def write_atlas(path: Path, atlas: Atlas) -> None:
    """Write an in-memory atlas atomically, in the layout `load_atlas` reads."""
    with atomic_output(Path(path)) as temporary, h5py.File(temporary, "w") as h5:
        h5.create_dataset(
            "images",
            data=np.asarray(atlas.images),
            chunks=(1, *atlas.images.shape[1:]),
            compression="gzip",
            compression_opts=4,
        )
        write_metadata(h5, atlas)
