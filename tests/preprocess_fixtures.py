"""Fixture builders shared by the preprocessing and QC tests: tiny spine-like images, PNG and
LabelMe writers, and the detector settings and provenance they run with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from radsynth.data.negatives import PAPER_NEGATIVE_DETECTION
from radsynth.data.preprocess import to_uint8

DETECTION = PAPER_NEGATIVE_DETECTION
PROVENANCE = {"config_hash": "abc123", "code_revision": "deadbeef", "radsynth_version": "0.1.0"}


def spine_like(
    rng: np.random.Generator, height: int, width: int, collimation: int = 0
) -> np.ndarray:
    """A crude positive lateral c-spine: dark air, grey neck, bright vertebrae, skull and
    shoulder."""
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = np.full((height, width), rng.uniform(0.02, 0.12))
    front, back = rng.uniform(0.2, 0.35), rng.uniform(0.75, 0.95)
    image[(xs > front + 0.05 * np.sin(6 * ys)) & (xs < back)] = rng.uniform(0.3, 0.45)
    spine_left = rng.uniform(0.42, 0.5)
    for top in np.arange(rng.uniform(0.05, 0.12), 0.9, 0.13):
        image[(ys > top) & (ys < top + 0.1) & (xs > spine_left) & (xs < spine_left + 0.14)] = (
            rng.uniform(0.65, 0.85)
        )
    image[((xs - rng.uniform(0.6, 0.8)) / 0.35) ** 2 + ((ys + 0.05) / 0.15) ** 2 < 1] = rng.uniform(
        0.6, 0.8
    )
    image[((xs - 0.7) / 0.35) ** 2 + ((ys - 1.05) / 0.12) ** 2 < 1] = rng.uniform(0.55, 0.75)
    image += rng.normal(0, 0.02, image.shape)
    if collimation:
        level = rng.uniform(0.85, 1.0)
        image[:collimation], image[-collimation:] = level, level
        image[:, :collimation], image[:, -collimation:] = level, level
    return np.clip(image, 0, 1).astype(np.float32)


def write_png(path: Path, image: np.ndarray, mode: str = "L") -> Path:
    """Save a [0, 1] float image as a PNG of the given PIL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = Image.fromarray(to_uint8(image))
    if mode == "I;16":
        Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(
            path
        )  # 12-bit codes in 16 bits
    else:
        grey.convert(mode).save(path)
    return path


def labelme(
    points: dict[str, tuple[float, float]], height: int, width: int, **extra_shapes
) -> dict:
    shapes = [
        {"label": label, "points": [list(xy)], "shape_type": "point"}
        for label, xy in points.items()
    ]
    return {
        "version": "5.2.1",
        "shapes": shapes,
        "imageHeight": height,
        "imageWidth": width,
        **extra_shapes,
    }


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path
