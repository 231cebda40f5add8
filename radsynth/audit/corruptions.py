"""Corrupted copies of radiographs with known keypoints, and ROC AUCs of screens telling the
corrupted from the clean: how the anatomical screen, the plausibility screen and their
combination are measured (issue 21, item 4).

Each corruption breaks anatomy in a different way, localised with the image's true keypoints:
- `flip_spine`: the spine's box (the keypoints' bounding box, padded) mirrored top to bottom:
  texture and intensities stay real, the vertebral order is reversed.
- `swap_vertebrae`: the bands holding C3 and C6 exchanged: plausible bodies, wrong sizes and
  order.
- `blank_spine`: the spine's box filled with the image's median: no vertebra left to find.
- `invert`: every intensity inverted (255 - x): anatomy intact, the image a negative.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from radsynth.data.csxa import KEYPOINT_LABELS

#: Pixels added around the keypoints' bounding box to cover the vertebral bodies' edges.
BOX_PADDING_PX = 2


def spine_box(keypoints: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive: the keypoints' box, padded and
    clipped to the image."""
    x, y = keypoints[:, 0], keypoints[:, 1]
    top = max(int(np.floor(np.nanmin(y))) - BOX_PADDING_PX, 0)
    bottom = min(int(np.ceil(np.nanmax(y))) + BOX_PADDING_PX + 1, shape[0])
    left = max(int(np.floor(np.nanmin(x))) - BOX_PADDING_PX, 0)
    right = min(int(np.ceil(np.nanmax(x))) + BOX_PADDING_PX + 1, shape[1])
    return top, bottom, left, right


def flip_spine(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    top, bottom, left, right = spine_box(keypoints, image.shape)
    out = image.copy()
    out[top:bottom, left:right] = image[top:bottom, left:right][::-1]
    return out


def blank_spine(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    top, bottom, left, right = spine_box(keypoints, image.shape)
    out = image.copy()
    out[top:bottom, left:right] = np.median(image)
    return out


def _corner_index(level: str) -> list[int]:
    return [
        KEYPOINT_LABELS.index(f"{level} {edge} {side}")
        for edge in ("top", "bottom")
        for side in ("left", "right")
    ]


def swap_vertebrae(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """C3's and C6's bands (rows from each body's top to bottom corner, full width) swapped,
    both cut to the shorter band's height around their centres."""
    bands = []
    for level in ("C3", "C6"):
        ys = keypoints[_corner_index(level), 1]
        bands.append((float(ys.min()), float(ys.max())))
    height = max(1, int(round(min(b - a for a, b in bands))) + 1)
    starts = [
        int(np.clip(round((a + b) / 2 - height / 2), 0, image.shape[0] - height)) for a, b in bands
    ]
    out = image.copy()
    first, second = (image[s : s + height].copy() for s in starts)
    out[starts[0] : starts[0] + height] = second
    out[starts[1] : starts[1] + height] = first
    return out


def invert(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    return 255 - image


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "flip_spine": flip_spine,
    "swap_vertebrae": swap_vertebrae,
    "blank_spine": blank_spine,
    "invert": invert,
}


def corrupt(images: np.ndarray, keypoints: np.ndarray, corruption: str) -> np.ndarray:
    """Corrupted uint8 copies of (N, S, S) images with their (N, K, 2) true keypoints."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {list(CORRUPTIONS)}")
    apply = CORRUPTIONS[corruption]
    return np.stack([apply(image, points) for image, points in zip(images, keypoints, strict=True)])


def screen_aucs(
    clean: Mapping[str, np.ndarray], corrupted: Mapping[str, Mapping[str, np.ndarray]]
) -> pd.DataFrame:
    """ROC AUC of each screen per corruption: clean images are negatives, corrupted ones
    positives, higher score = more suspicious. `clean` maps screen -> scores of the clean images,
    `corrupted` corruption -> screen -> scores of its copies. 1 = every corrupted image ranked
    above every clean one, 0.5 = chance."""
    rows = []
    for corruption, screens in corrupted.items():
        for screen, scores in screens.items():
            labels = np.r_[np.zeros(len(clean[screen])), np.ones(len(scores))]
            auc = roc_auc_score(labels, np.r_[clean[screen], scores])
            rows.append({"corruption": corruption, "screen": screen, "roc_auc": float(auc)})
    return pd.DataFrame(rows)
