"""Preprocessing throughput: radsynth's stage against the bare floor of reading every PNG and
resizing it with PIL (no detection, keypoints or HDF5). The ratio is the stage's overhead."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from radsynth.data.negatives import PAPER_NEGATIVE_DETECTION
from radsynth.data.preprocess import find_images, preprocess_atlas
from radsynth.demo.phantom import generate_atlas


def bare_read_resize(image_dir: Path, size: int) -> int:
    """The floor: decode each PNG and resize it, keeping nothing."""
    names = find_images(image_dir)
    for name in names:
        with Image.open(image_dir / name) as image:
            np.asarray(image.convert("F").resize((size, size), Image.Resampling.BILINEAR))
    return len(names)


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def bench_atlas(label: str, *, n_images: int, min_side: int, max_side: int, size: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_seconds = timed(
            generate_atlas,
            root / "atlas",
            root / "truth.csv",
            n_images=n_images,
            seed=1,
            negative_fraction=0.1,
            sixteen_bit_fraction=0.03,
            rgb_fraction=0.03,
            min_side=min_side,
            max_side=max_side,
            progress=False,
        )
        images, annotations = root / "atlas/images", root / "atlas/annotations"
        floor_seconds = timed(bare_read_resize, images, size)
        stage_seconds = timed(
            preprocess_atlas,
            images,
            annotations,
            root / "atlas.h5",
            root / "rejects.csv",
            size=size,
            resize_mode="resize",
            max_rejected_fraction=0.05,
            detection=PAPER_NEGATIVE_DETECTION,
            metadata_table=root / "atlas/metadata.csv",
            provenance={},
            progress=False,
        )
    return [
        f"{label}: demo-atlas generation {n_images / generate_seconds:8.1f} images/s",
        f"{label}: bare read+resize       {n_images / floor_seconds:8.1f} images/s",
        f"{label}: preprocess stage       {n_images / stage_seconds:8.1f} images/s "
        f"(ratio to bare read+resize {floor_seconds / stage_seconds:.2f})",
    ]


def run() -> list[str]:
    return [
        *bench_atlas(
            "demo atlas (200 images, 256-512 px -> 64)",
            n_images=200,
            min_side=256,
            max_side=512,
            size=64,
        ),
        *bench_atlas(
            "CSXA-sized (4,963 images, 256 px -> 256)",
            n_images=4963,
            min_side=256,
            max_side=256,
            size=256,
        ),
    ]
