"""Resizing a radiograph to the square training size and carrying its keypoints into the new
frame (pixel-centre convention, as PIL resamples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
from PIL import Image

from radsynth.core.settings.data import ResizeMode

RESIZE_MODES = get_args(ResizeMode)
#: Background of a positive radiograph (air is black once negatives are inverted): letterbox
#: padding.
BACKGROUND = 0.0


@dataclass(frozen=True)
class Affine:
    """Axis-aligned map from original to new pixel coordinates: x' = x * scale_x + offset_x."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float


@dataclass(frozen=True)
class ResizeGeometry:
    """Where the resampled content sits on the square canvas."""

    height: int
    width: int
    pad_y: int
    pad_x: int


def resize_geometry(height: int, width: int, size: int, mode: str) -> ResizeGeometry:
    """Content size and padding of a (height, width) image resized to a size x size canvas."""
    if mode == "resize":
        return ResizeGeometry(size, size, 0, 0)
    if mode == "letterbox":
        scale = size / max(height, width)
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        return ResizeGeometry(
            new_height, new_width, (size - new_height) // 2, (size - new_width) // 2
        )
    raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")


def resize_affine(height: int, width: int, geometry: ResizeGeometry) -> Affine:
    """Original -> canvas coordinates, pixel-centre convention as in PIL (pixel i covers
    [i - 0.5, i + 0.5]): x' = (x + 0.5) * s - 0.5 + pad."""
    scale_x, scale_y = geometry.width / width, geometry.height / height
    return Affine(
        scale_x, scale_y, 0.5 * scale_x - 0.5 + geometry.pad_x, 0.5 * scale_y - 0.5 + geometry.pad_y
    )


def resize_image(image: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, Affine]:
    """Float image -> (size, size) float32, and the map of its coordinates.

    "resize" stretches to a square (the paper's choice; distorts aspect), "letterbox" keeps the
    aspect and pads with BACKGROUND. Resampling is PIL BILINEAR on float32, which widens its
    kernel when reducing (antialiased, no overshoot) and is what torchvision's Resize in the
    I-SynMed/lucidrains data loader uses.
    """
    geometry = resize_geometry(image.shape[0], image.shape[1], size, mode)
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    content = np.asarray(
        source.resize((geometry.width, geometry.height), Image.Resampling.BILINEAR)
    )
    canvas = np.full((size, size), BACKGROUND, dtype=np.float32)
    canvas[
        geometry.pad_y : geometry.pad_y + geometry.height,
        geometry.pad_x : geometry.pad_x + geometry.width,
    ] = content
    return canvas, resize_affine(image.shape[0], image.shape[1], geometry)


def map_spacing(mm_per_pixel: float, affine: Affine) -> np.ndarray:
    """(x, y) mm per pixel in the resized frame of an image with square pixels of side
    `mm_per_pixel`: the original spacing divided by each axis's scale (padding moves the content
    without changing its spacing). NaN (no spacing known) stays NaN."""
    return float(mm_per_pixel) / np.array([affine.scale_x, affine.scale_y])


def map_keypoints(points: np.ndarray, affine: Affine) -> np.ndarray:
    """(..., 2) points as (x, y) into the resized frame; NaN stays NaN."""
    points = np.asarray(points, dtype=np.float64)
    scale = np.array([affine.scale_x, affine.scale_y])
    offset = np.array([affine.offset_x, affine.offset_y])
    return points * scale + offset
