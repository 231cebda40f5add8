"""One CSV row per image with every landmark's x, y and confidence and the geometry measured from
them: what `radsynth landmarks` writes (issue 21, item 7).

The images come from the readers of their format: a PNG folder or a Zarr sample store through
`radsynth.audit.image_sets.load_synthetic_with_ids` (ids: file stems, or the stores' image ids),
an atlas through `radsynth.data.atlas.load_atlas` (ids: its source names). They must be at the
size the model was trained at (the atlas size); x and y are then in each image's own pixel frame
(pixel-centre convention: pixel i covers [i - 0.5, i + 0.5]), y growing downwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from radsynth.anatomy.geometry import geometry_table
from radsynth.anatomy.landmark_model import LandmarkModel, predict_landmarks


def label_column(label: str, field: str) -> str:
    """`C2 bottom left`, `x` -> `c2_bottom_left_x`."""
    return f"{label.lower().replace(' ', '_')}_{field}"


def landmark_table(
    model: LandmarkModel,
    images: np.ndarray,
    image_ids: Sequence[str],
    facing: Sequence[str],
    mm_per_pixel: np.ndarray | None = None,
) -> pd.DataFrame:
    """image_id, then x, y and confidence of each landmark in the model's label order, then the
    geometry (`geometry_table`: angle NaN where the facing is "" (unknown); lengths in mm where
    `mm_per_pixel` is given, else px)."""
    if len(image_ids) != len(images):
        raise ValueError(f"{len(image_ids)} image ids for {len(images)} images")
    predicted = predict_landmarks(model, images)
    columns: dict[str, object] = {"image_id": list(image_ids)}
    for k, label in enumerate(model.labels):
        columns[label_column(label, "x")] = predicted.xy[:, k, 0]
        columns[label_column(label, "y")] = predicted.xy[:, k, 1]
        columns[label_column(label, "confidence")] = predicted.confidence[:, k]
    geometry = geometry_table(predicted.xy, facing, mm_per_pixel, model.labels)
    return pd.concat([pd.DataFrame(columns), geometry], axis=1)
