"""Detecting negative scans (bone dark, background bright) so the atlas build can invert them.

The paper intensity-inverted the negative CSXA scans but gives no detection method; this score
and its settings are radsynth's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radsynth.data.resize import resize_image


@dataclass(frozen=True)
class NegativeDetection:
    """Settings of the negative-scan detector (radsynth choices; the paper gives no method)."""

    analysis_size: int  # side of the downsampled square copy the statistics are taken on
    uniform_tolerance: float  # 5th-95th percentile spread at or below which an edge line is flat
    max_trim_fraction: float  # at most this fraction of each side is trimmed as flat band
    side_fraction: float  # width of each side strip, as a fraction of the trimmed width
    centre_fraction: float  # width of the central column, as a fraction of the trimmed width
    row_margin_fraction: float  # rows left out at the top and at the bottom (skull, shoulders)
    threshold: float  # score above which the image is called negative

    def __post_init__(self) -> None:
        if self.analysis_size < 16:
            raise ValueError(
                f"negative_detection.analysis_size {self.analysis_size} is below 16 px"
            )
        bounds = {
            "max_trim_fraction": (0.0, 0.4),
            "side_fraction": (1e-3, 0.4),
            "centre_fraction": (1e-3, 1.0),
            "row_margin_fraction": (0.0, 0.4),
        }
        for name, (low, high) in bounds.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(
                    f"negative_detection.{name} {getattr(self, name)} is not in [{low:g}, {high:g}]"
                )


#: The detector settings of both presets (config/config.yaml and config/csxa.yaml set the same
#: values; a test keeps them equal). Chosen on the demo phantoms: 0 errors in 1,000.
PAPER_NEGATIVE_DETECTION = NegativeDetection(
    analysis_size=128,
    uniform_tolerance=0.02,
    max_trim_fraction=0.2,
    side_fraction=0.15,
    centre_fraction=0.34,
    row_margin_fraction=0.1,
    threshold=0.0,
)


def negative_score(image: np.ndarray, detection: NegativeDetection) -> float:
    """Mean of the two side strips minus mean of the central column (> threshold: negative).

    A lateral c-spine radiograph has the spine running down its middle and air in front of and
    behind the neck, so in a positive the side strips (air, soft tissue) are darker than the
    central column (vertebrae), in a negative brighter. Only the middle rows count: the top and
    bottom (`row_margin_fraction`) hold skull and shoulders, bone that would brighten a
    positive's edges. Flat bands at the edges (collimator shutters, bright in a positive;
    padding) would swamp the side strips, so flat edge rows/columns (5th-95th percentile spread
    at most `uniform_tolerance`) are trimmed first, at most `max_trim_fraction` of each side
    (air trimmed by mistake costs little: the strip moves inward, still in air). Statistics are
    taken on an `analysis_size` square copy, so the tolerance means the same at every resolution
    and the cost is constant. The score is antisymmetric:
    negative_score(1 - x) == -negative_score(x). Assumes an upright lateral view with the spine
    near the middle third of the width.
    """
    view, _ = resize_image(image, detection.analysis_size, "resize")
    core = _trim_flat_borders(view, detection.uniform_tolerance, detection.max_trim_fraction)
    sides, column = _side_and_centre_strips(
        core, detection.side_fraction, detection.centre_fraction, detection.row_margin_fraction
    )
    return float(sides.mean(dtype=np.float64) - column.mean(dtype=np.float64))


def is_negative(score: float, detection: NegativeDetection) -> bool:
    """The decision on a `negative_score`: negative only strictly above the threshold, so a score
    at the threshold (a featureless image scores 0, the presets' threshold) is left as it is."""
    return score > detection.threshold


def _flat_run(spreads: np.ndarray, tolerance: float, limit: int) -> int:
    """Number of leading entries of `spreads` at or below `tolerance`, at most `limit`."""
    above = np.flatnonzero(spreads[:limit] > tolerance)
    return int(above[0]) if above.size else limit


def _trim_flat_borders(image: np.ndarray, tolerance: float, max_fraction: float) -> np.ndarray:
    """Drop edge rows/columns whose central 90% of values spans at most `tolerance`.

    The central 90% (not the interquartile range): a shutter band is flat along its whole
    length, while an edge line that is merely mostly air also crosses skin or skull and is kept.
    """
    row_low, row_high = np.percentile(image, [5, 95], axis=1)
    col_low, col_high = np.percentile(image, [5, 95], axis=0)
    rows, cols = row_high - row_low, col_high - col_low
    row_limit, col_limit = int(max_fraction * image.shape[0]), int(max_fraction * image.shape[1])
    top, bottom = _flat_run(rows, tolerance, row_limit), _flat_run(rows[::-1], tolerance, row_limit)
    left, right = _flat_run(cols, tolerance, col_limit), _flat_run(cols[::-1], tolerance, col_limit)
    return image[top : image.shape[0] - bottom, left : image.shape[1] - right]


def _side_and_centre_strips(
    image: np.ndarray, side_fraction: float, centre_fraction: float, row_margin_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the left and right strips together, and of the central column, over the
    middle rows."""
    height, width = image.shape
    margin = int(row_margin_fraction * height)
    rows = image[margin : height - margin]
    side = max(1, round(side_fraction * width))
    centre = max(1, round(centre_fraction * width))
    left = (width - centre) // 2
    sides = np.concatenate([rows[:, :side].ravel(), rows[:, width - side :].ravel()])
    return sides, rows[:, left : left + centre]
