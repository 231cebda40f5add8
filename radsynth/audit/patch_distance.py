"""MediSyn's patch-based normalized L2 distance between a real and a synthetic image.

After Carlini et al. 2023 ("Extracting training data from diffusion models"), as MediSyn applies
it: both images as floats in [0, 1] (uint8 / 255), each cut into a 4 x 4 grid of 16
non-overlapping patches; per patch the L2 norm of the difference divided by the square root of
the patch's pixel count (a root-mean-square difference); the distance is the maximum over the
16 patches, so a pair is close only where every region of it is close.
"""

from __future__ import annotations

import numpy as np

#: Patches per side: MediSyn's 16 non-overlapping patches.
GRID = 4
#: MediSyn's flag: pairs at or below this distance are taken as possibly memorized.
MEDISYN_FLAG = 0.15
#: Flag thresholds: MediSyn's sweep, 0.05 to 0.25.
FLAG_THRESHOLDS = (0.05, 0.10, MEDISYN_FLAG, 0.20, 0.25)


def flag_column(threshold: float) -> str:
    """The name of a threshold's boolean column ("flag_le_0.15")."""
    return f"flag_le_{threshold:.2f}"


def check_pairs(real: np.ndarray, synthetic: np.ndarray) -> None:
    """Paired uint8 gray images (N, H, W) of one shape, with sides divisible by the grid."""
    for what, images in (("real", real), ("synthetic", synthetic)):
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"{what} images must be uint8 gray (N, H, W), got {images.dtype} {images.shape}"
            )
    if real.shape != synthetic.shape:
        raise ValueError(
            f"paired images differ in shape: real {real.shape}, synthetic {synthetic.shape}"
        )
    height, width = real.shape[1:]
    if height % GRID or width % GRID:
        raise ValueError(
            f"images are {width}x{height}: both sides must be divisible by {GRID} "
            f"for {GRID * GRID} equal patches"
        )


def patch_distances(real_images: np.ndarray, synthetic_images: np.ndarray) -> np.ndarray:
    """The distance (float64, N) between real_images[i] and synthetic_images[i] for every i."""
    real, synthetic = np.asarray(real_images), np.asarray(synthetic_images)
    check_pairs(real, synthetic)
    n, height, width = real.shape
    ph, pw = height // GRID, width // GRID
    difference = (real.astype(np.float64) - synthetic.astype(np.float64)) / 255.0
    squared = np.square(difference).reshape(n, GRID, ph, GRID, pw).sum(axis=(2, 4))
    return np.sqrt(squared / (ph * pw)).max(axis=(1, 2))


def patch_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The distance between two uint8 gray images (H, W) of one shape."""
    return float(patch_distances(np.asarray(a)[None], np.asarray(b)[None])[0])
