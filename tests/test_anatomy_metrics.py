"""Landmarking metrics against hand-derived values: known offsets give known radial errors, MRE,
SDR and per-landmark rows; the mean-shape baseline is the per-keypoint mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radsynth.anatomy.metrics import landmark_scores, mean_shape, radial_errors

LABELS = ("a", "b")


def test_known_offsets_give_known_errors_in_px_and_mm() -> None:
    truth = np.zeros((2, 2, 2))
    predicted = np.array(
        [
            [[3.0, 4.0], [0.0, 1.0]],  # image 0: errors 5 px and 1 px
            [[6.0, 8.0], [0.0, 0.0]],  # image 1: errors 10 px and 0 px
        ]
    )
    # image 0 at 0.5 mm/px -> 2.5 mm and 0.5 mm; image 1 has no spacing
    scores = landmark_scores(predicted, truth, LABELS, mm_per_pixel=np.array([0.5, np.nan]))
    assert scores.mre_px == pytest.approx((5 + 1 + 10 + 0) / 4)
    assert scores.mre_mm == pytest.approx((2.5 + 0.5) / 2)
    assert scores.sdr == {2.0: 0.5, 2.5: 1.0, 3.0: 1.0, 4.0: 1.0}
    assert (scores.n_landmarks, scores.n_landmarks_mm) == (4, 2)
    rows = scores.per_landmark.set_index("label")
    assert rows.loc["a", "mre_px"] == pytest.approx(7.5)
    assert rows.loc["b", "mre_px"] == pytest.approx(0.5)
    assert rows.loc["a", "mre_mm"] == pytest.approx(2.5)
    assert rows.loc["a", "sdr_2mm"] == 0.0 and rows.loc["a", "sdr_2.5mm"] == 1.0
    assert rows.loc["b", "n"] == 2


def test_without_spacing_the_mm_figures_are_nan() -> None:
    scores = landmark_scores(np.ones((1, 2, 2)), np.zeros((1, 2, 2)), LABELS)
    assert scores.mre_px == pytest.approx(math.sqrt(2))
    assert math.isnan(scores.mre_mm) and all(math.isnan(v) for v in scores.sdr.values())


def test_anisotropic_spacing_scales_each_axis() -> None:
    """An offset of (1, 1) px at 0.3 mm/px across and 0.4 mm/px down is 0.5 mm."""
    px, mm = radial_errors(np.ones((1, 1, 2)), np.zeros((1, 1, 2)), np.array([[0.3, 0.4]]))
    assert px[0, 0] == pytest.approx(math.sqrt(2)) and mm[0, 0] == pytest.approx(0.5)


def test_missing_true_keypoints_are_left_out() -> None:
    truth = np.array([[[0.0, 0.0], [np.nan, np.nan]]])
    scores = landmark_scores(np.array([[[0.0, 2.0], [50.0, 50.0]]]), truth, LABELS)
    assert scores.mre_px == pytest.approx(2.0) and scores.n_landmarks == 1
    assert scores.per_landmark["n"].tolist() == [1, 0]


def test_mean_shape_is_the_per_keypoint_mean_ignoring_missing_points() -> None:
    train = np.array(
        [
            [[0.0, 0.0], [10.0, 10.0]],
            [[2.0, 4.0], [np.nan, np.nan]],
            [[4.0, 8.0], [20.0, 30.0]],
        ]
    )
    np.testing.assert_allclose(mean_shape(train), [[2.0, 4.0], [15.0, 20.0]])
    train[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"keypoint\(s\) \[1\] are missing on every"):
        mean_shape(train)


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(1, 3, 2\)"):
        radial_errors(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"mm per pixel must be \(1,\) or \(1, 2\)"):
        radial_errors(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.zeros(3))
