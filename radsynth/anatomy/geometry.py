"""Geometry measured from the 23 landmarks, per image: the C2-C7 angle, a curvature class from it,
and the vertebral body heights and depths of C3-C7.

C2-C7 angle (the Cobb method, the usual clinical definition): the angle between the lower endplate
of C2 (the line through "C2 bottom left" and "C2 bottom right") and the lower endplate of C7
("C7 bottom left", "C7 bottom right"). Sign: each endplate's direction is taken from its posterior
to its anterior corner, in the patient's frame (anterior = +x, cranial = +y); the angle is C7's
direction minus C2's, in degrees within [-180, 180). Negative is lordosis (the column convex
anteriorly), positive kyphosis; that is the phantoms' convention and the one of the SRS-style
"C2-7 Cobb" of e.g. Zhu et al. 2022 (mean -7.7 deg in adolescents). CSXA names corners by image x,
so which corner is anterior depends on where the patient faces: the caller passes the facing
("left": face on the image's left, as radsynth standardises samples; from
`radsynth.sample.facing`). An unknown facing ("") or a missing corner gives NaN.

How it relates to the phantoms' `cobb_deg`: the generator turns the spine axis linearly in
arclength by `cobb_deg` from the top of C2 to the bottom of C7, and each body sits square to the
axis at its centre. The endplates therefore span the turn between the C2 and the C7 body centres,
(L - (h2 + h7)/2) / L of `cobb_deg`, L the column length from the top of C2 to the bottom of C7;
at the generator's mean proportions (C2 1.35, C3-C7 0.8 body depths high, discs 0.26) that is
5.575 / 6.65 = 0.838. C7's anterior wedging (0 to 12% height loss, mean 4.5%) tilts its lower
endplate by about atan(wedge x height / (2 x depth)), +1.0 deg on average. So on phantoms,
angle ~ 0.838 x cobb_deg + 1.0 deg; tests/test_anatomy_geometry.py states the scatter.
CSXA's own parameters: the atlas's descriptor lists quantitative parameters derived from the same
23 keypoints, but the material available here does not define them or the angle behind its
curvature categories, so no agreement with them is claimed.

Curvature class: CSXA's thresholds between its curvature categories are not stated in any
material available here (the paper, its related work, the reference notes). The thresholds are a
config key, `anatomy.curvature_thresholds_deg`; both presets carry the DEMO RULE, derived from the
phantom generator's class ranges (lordotic -40..-12, straight -5..5, kyphotic 8..25 deg of
`cobb_deg`): the midpoints of the gaps between them (-8.5 and 6.5 deg) carried onto the endplate
angle as above (x 0.838 + 1.0): lordotic below -6.1 deg, kyphotic above 6.4 deg, straight
between. Replace them when CSXA's thresholds are known.

Body height and depth of C3-C7, from the four corners: height = the mean length of the two side
walls (top left to bottom left, top right to bottom right), depth = the mean length of the two
endplates (top left to top right, bottom left to bottom right). Both are independent of facing.
Lengths are in the unit of `spacing` (per image, (x, y) per pixel; px when none is given), which
also corrects angles for an atlas resized without keeping the aspect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from radsynth.anatomy.metrics import spacing_xy
from radsynth.anatomy.tables import ANGLE_MEASURE, CURVATURE_MEASURE
from radsynth.data.csxa import KEYPOINT_LABELS

BODY_LEVELS: tuple[str, ...] = ("C3", "C4", "C5", "C6", "C7")
FACINGS = ("left", "right")


def _points(
    keypoints: np.ndarray, labels: Sequence[str], wanted: Sequence[str], spacing: np.ndarray
) -> np.ndarray:
    """(N, len(wanted), 2) scaled positions of the named keypoints; a missing name fails."""
    absent = [name for name in wanted if name not in labels]
    if absent:
        raise ValueError(f"keypoint labels {absent} are not among {list(labels)}")
    index = [list(labels).index(name) for name in wanted]
    return np.asarray(keypoints, np.float64)[:, index, :] * spacing[:, None, :]


def _scale(spacing: np.ndarray | None, n_images: int) -> np.ndarray:
    """(N, 2) per-axis scale: 1 (px) without a spacing, NaN rows where an image has none."""
    return np.ones((n_images, 2)) if spacing is None else spacing_xy(spacing, n_images)


def _check(keypoints: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (len(labels), 2):
        raise ValueError(f"keypoints must be (N, {len(labels)}, 2), got {keypoints.shape}")
    return keypoints


def c2_c7_angle_deg(
    keypoints: np.ndarray,
    facing: Sequence[str],
    spacing: np.ndarray | None = None,
    labels: Sequence[str] = KEYPOINT_LABELS,
) -> np.ndarray:
    """(N,) signed C2-C7 Cobb angles in degrees (lordosis negative; see the module docstring)."""
    keypoints = _check(keypoints, labels)
    facing = np.asarray(facing, dtype=object)
    bad = sorted({str(f) for f in facing} - {*FACINGS, ""})
    if len(facing) != len(keypoints) or bad:
        raise ValueError(
            f"facing must give 'left', 'right' or '' for each of {len(keypoints)} images; "
            f"got {len(facing)} values{', including ' + repr(bad) if bad else ''}"
        )
    corners = _points(
        keypoints,
        labels,
        ("C2 bottom left", "C2 bottom right", "C7 bottom left", "C7 bottom right"),
        _scale(spacing, len(keypoints)),
    )
    # +1 when the right-hand corner is anterior (the patient faces right), -1 when it is posterior
    sign = np.select([facing == "right", facing == "left"], [1.0, -1.0], default=np.nan)
    along = corners[:, 1::2, :] - corners[:, 0::2, :]  # (N, 2 endplates, 2): right minus left
    theta = np.degrees(np.arctan2(-sign[:, None] * along[..., 1], along[..., 0]))
    angle = theta[:, 1] - theta[:, 0]
    return (angle + 180.0) % 360.0 - 180.0


def curvature_class(angle_deg: np.ndarray, thresholds_deg: Sequence[float]) -> np.ndarray:
    """Class of each C2-C7 angle: "lordotic" below the lower threshold, "kyphotic" above the
    upper, "straight" between (inclusive); "" where the angle is NaN. The thresholds are
    `anatomy.curvature_thresholds_deg` (the demo rule of the module docstring in both presets)."""
    angle = np.asarray(angle_deg, np.float64)
    lower, upper = thresholds_deg
    classes = np.where(angle < lower, "lordotic", np.where(angle > upper, "kyphotic", "straight"))
    return np.where(np.isnan(angle), "", classes).astype(object)


def body_sizes(
    keypoints: np.ndarray,
    spacing: np.ndarray | None = None,
    labels: Sequence[str] = KEYPOINT_LABELS,
) -> pd.DataFrame:
    """Height and depth of each C3-C7 body per image (columns c3_height, c3_depth, ...)."""
    keypoints = _check(keypoints, labels)
    scale = _scale(spacing, len(keypoints))
    columns = {}
    for level in BODY_LEVELS:
        tl, tr, bl, br = _points(
            keypoints,
            labels,
            [f"{level} {c}" for c in ("top left", "top right", "bottom left", "bottom right")],
            scale,
        ).transpose(1, 0, 2)
        walls = (np.linalg.norm(tl - bl, axis=1) + np.linalg.norm(tr - br, axis=1)) / 2
        endplates = (np.linalg.norm(tl - tr, axis=1) + np.linalg.norm(bl - br, axis=1)) / 2
        columns[f"{level.lower()}_height"] = walls
        columns[f"{level.lower()}_depth"] = endplates
    return pd.DataFrame(columns)


def geometry_table(
    keypoints: np.ndarray,
    facing: Sequence[str],
    spacing: np.ndarray | None = None,
    labels: Sequence[str] = KEYPOINT_LABELS,
    *,
    curvature_thresholds_deg: Sequence[float],
) -> pd.DataFrame:
    """One row per image: c2_c7_angle_deg, curvature_class (`curvature_class` at the given
    thresholds) and the C3-C7 body heights and depths."""
    angle = c2_c7_angle_deg(keypoints, facing, spacing, labels)
    classes = curvature_class(angle, curvature_thresholds_deg)
    sizes = body_sizes(keypoints, spacing, labels)
    return pd.concat(
        [pd.DataFrame({ANGLE_MEASURE: angle, CURVATURE_MEASURE: classes}), sizes], axis=1
    )
