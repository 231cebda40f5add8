"""Landmarking metrics: mean radial error (MRE) in px and mm, successful detection rate (SDR),
per-landmark errors, and the mean-shape baseline.

Conventions (ISBI 2015 cephalometric challenge): a landmark's radial error is the Euclidean
distance between predicted and true position; MRE is its mean over every annotated landmark of
every image; SDR at r mm is the share of those within r mm. Pixel spacing may differ between x and
y (an atlas resized to a square without keeping the aspect), so mm errors scale each axis by its
own spacing. Images without a spacing count in the px figures only; the mm figures are NaN when
no image has one. Missing true keypoints (NaN) are left out everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Detection radii of the landmarking convention, mm.
SDR_RADII_MM: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)


def sdr_column(radius_mm: float) -> str:
    return f"sdr_{radius_mm:g}mm"


def spacing_xy(mm_per_pixel: np.ndarray | None, n_images: int) -> np.ndarray:
    """Per-image (x, y) spacing in mm per pixel, (N, 2); NaN rows where none is known.
    Accepts None, (N,) isotropic spacings or (N, 2)."""
    if mm_per_pixel is None:
        return np.full((n_images, 2), np.nan)
    spacing = np.asarray(mm_per_pixel, dtype=np.float64)
    if spacing.shape == (n_images,):
        spacing = np.repeat(spacing[:, None], 2, axis=1)
    if spacing.shape != (n_images, 2):
        raise ValueError(
            f"mm per pixel must be ({n_images},) or ({n_images}, 2), got {spacing.shape}"
        )
    return spacing


def radial_errors(
    predicted: np.ndarray, truth: np.ndarray, mm_per_pixel: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) radial errors in px and in mm (NaN where the truth or the spacing is missing)."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape or truth.ndim != 3 or truth.shape[-1] != 2:
        raise ValueError(
            f"predicted {predicted.shape} and true {truth.shape} keypoints must both be (N, K, 2)"
        )
    offset = predicted - truth
    spacing = spacing_xy(mm_per_pixel, len(truth))
    return np.hypot(*offset.transpose(2, 0, 1)), np.hypot(
        *(offset * spacing[:, None, :]).transpose(2, 0, 1)
    )


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _share_within(values: np.ndarray, radius: float) -> float:
    finite = values[np.isfinite(values)]
    return float((finite <= radius).mean()) if finite.size else float("nan")


@dataclass(frozen=True)
class LandmarkScores:
    """Overall figures and a per-landmark table (one row per label, same columns)."""

    mre_px: float
    mre_mm: float
    sdr: dict[float, float]  # radius mm -> share of landmarks within it
    n_landmarks: int  # annotated landmarks scored in px
    n_landmarks_mm: int  # of which with a known spacing
    per_landmark: pd.DataFrame

    def summary(self) -> dict[str, float]:
        """The overall figures as one flat row."""
        return {
            "mre_px": self.mre_px,
            "mre_mm": self.mre_mm,
            **{sdr_column(r): share for r, share in self.sdr.items()},
            "n_landmarks": self.n_landmarks,
            "n_landmarks_mm": self.n_landmarks_mm,
        }


def landmark_scores(
    predicted: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[str],
    mm_per_pixel: np.ndarray | None = None,
    radii_mm: Sequence[float] = SDR_RADII_MM,
) -> LandmarkScores:
    """MRE, SDR and per-landmark errors of (N, K, 2) predictions against the truth."""
    px, mm = radial_errors(predicted, truth, mm_per_pixel)
    if px.shape[1] != len(labels):
        raise ValueError(f"{px.shape[1]} keypoints per image but {len(labels)} labels")
    rows = [
        {
            "label": label,
            "n": int(np.isfinite(px[:, k]).sum()),
            "mre_px": _mean(px[:, k]),
            "mre_mm": _mean(mm[:, k]),
            **{sdr_column(r): _share_within(mm[:, k], r) for r in radii_mm},
        }
        for k, label in enumerate(labels)
    ]
    return LandmarkScores(
        mre_px=_mean(px),
        mre_mm=_mean(mm),
        sdr={float(r): _share_within(mm, r) for r in radii_mm},
        n_landmarks=int(np.isfinite(px).sum()),
        n_landmarks_mm=int(np.isfinite(mm).sum()),
        per_landmark=pd.DataFrame(rows),
    )


def mean_shape(train_keypoints: np.ndarray) -> np.ndarray:
    """The baseline's (K, 2) prediction: each keypoint's mean position over the training images
    (missing ones left out); the same for every image."""
    keypoints = np.asarray(train_keypoints, np.float64)
    present = np.isfinite(keypoints).all(axis=-1)
    empty = np.flatnonzero(~present.any(axis=0))
    if len(empty):
        raise ValueError(f"keypoint(s) {empty.tolist()} are missing on every training image")
    return np.nanmean(np.where(present[..., None], keypoints, np.nan), axis=0)
