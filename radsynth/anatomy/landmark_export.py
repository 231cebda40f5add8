"""One CSV row per image with every landmark's x, y and confidence and the geometry measured from
them: what `radsynth landmarks` writes (issue 21, item 7).

The images come from the readers of their format: a PNG folder or a Zarr sample store through
`radsynth.audit.image_sets.load_synthetic_with_ids` (ids: file stems, or the stores' image ids),
an atlas through `radsynth.data.atlas.load_atlas` (ids: its source names). They must be at the
size the model was trained at (the atlas size); x and y are then in each image's own pixel frame
(pixel-centre convention: pixel i covers [i - 0.5, i + 0.5]), y growing downwards.

The CSV format has one writer (`write_landmark_table`) and one reader (`read_landmark_table`):
the columns are image_id, then x, y and confidence of each landmark in CSXA's label order
(`label_column`), then the geometry columns `geometry_table` makes, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.anatomy.geometry import geometry_table
from radsynth.anatomy.landmark_model import LandmarkModel, predict_landmarks
from radsynth.anatomy.tables import CURVATURE_CLASSES, CURVATURE_MEASURE
from radsynth.core.checked_csv import SOURCE_ATTR, line_of, numeric_column, read_text_table
from radsynth.core.tables import write_table
from radsynth.data.csxa import KEYPOINT_LABELS

LANDMARK_FIELDS: tuple[str, ...] = ("x", "y", "confidence")


def label_column(label: str, field: str) -> str:
    """`C2 bottom left`, `x` -> `c2_bottom_left_x`."""
    return f"{label.lower().replace(' ', '_')}_{field}"


def landmark_table(
    model: LandmarkModel,
    images: np.ndarray,
    image_ids: Sequence[str],
    facing: Sequence[str],
    mm_per_pixel: np.ndarray | None = None,
    *,
    curvature_thresholds_deg: Sequence[float],
    batch_size: int,
) -> pd.DataFrame:
    """image_id, then x, y and confidence of each landmark in the model's label order, then the
    geometry (`geometry_table`: angle NaN where the facing is "" (unknown); lengths in mm where
    `mm_per_pixel` is given, else px). The model predicts `batch_size` images at a time."""
    if len(image_ids) != len(images):
        raise ValueError(f"{len(image_ids)} image ids for {len(images)} images")
    predicted = predict_landmarks(model, images, batch_size=batch_size)
    columns: dict[str, object] = {"image_id": list(image_ids)}
    for k, label in enumerate(model.labels):
        columns[label_column(label, "x")] = predicted.xy[:, k, 0]
        columns[label_column(label, "y")] = predicted.xy[:, k, 1]
        columns[label_column(label, "confidence")] = predicted.confidence[:, k]
    geometry = geometry_table(
        predicted.xy,
        facing,
        mm_per_pixel,
        model.labels,
        curvature_thresholds_deg=curvature_thresholds_deg,
    )
    return pd.concat([pd.DataFrame(columns), geometry], axis=1)


def _geometry_columns() -> list[str]:
    """The columns `geometry_table` writes, taken from it so the two cannot drift apart."""
    empty = np.zeros((0, len(KEYPOINT_LABELS), 2))
    # no image to classify: the thresholds do not matter
    columns = geometry_table(empty, [], None, KEYPOINT_LABELS, curvature_thresholds_deg=(0, 0))
    return list(columns.columns)


def _landmark_value_columns() -> list[str]:
    return [label_column(label, f) for label in KEYPOINT_LABELS for f in LANDMARK_FIELDS]


def landmark_columns() -> list[str]:
    """Every column of a landmark table, in order."""
    return ["image_id", *_landmark_value_columns(), *_geometry_columns()]


def _check_header(columns: Sequence[str], where: str) -> None:
    expected = landmark_columns()
    if list(columns) == expected:
        return
    missing = [c for c in expected if c not in columns]
    unexpected = [c for c in columns if c not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{where}: missing column(s) {missing}, unexpected column(s) {unexpected}; "
            f"a landmark table has {expected}"
        )
    raise ValueError(f"{where}: columns out of order; a landmark table has {expected}")


def write_landmark_table(table: pd.DataFrame, path: Path, *, provenance: Mapping[str, str]) -> None:
    """Write a `landmark_table` atomically with its provenance lines (`write_table`)."""
    _check_header(table.columns, f"landmark table for {path}")
    write_table(table, Path(path), provenance=provenance)


def read_landmark_table(path: Path) -> pd.DataFrame:
    """A landmark table written by `write_landmark_table`, typed: ids and curvature classes as
    text, everything else as floats (landmarks required; geometry NaN where blank). Errors name
    the file, the line and the column."""
    path = Path(path)
    text = read_text_table(path, landmark_columns())
    _check_header(text.columns, str(path))
    ids = text["image_id"].str.strip()
    blank = np.flatnonzero((ids == "").to_numpy())
    if len(blank):
        raise ValueError(
            f"{path} line {line_of(ids, int(blank[0]))}, column 'image_id': blank image id"
        )
    repeated = np.flatnonzero(ids.duplicated().to_numpy())
    if len(repeated):
        row = int(repeated[0])
        raise ValueError(
            f"{path} line {line_of(ids, row)}, column 'image_id': {ids.iloc[row]!r} repeats"
        )
    classes = text[CURVATURE_MEASURE].str.strip()
    unknown = np.flatnonzero((~classes.isin(["", *CURVATURE_CLASSES])).to_numpy())
    if len(unknown):
        row = int(unknown[0])
        raise ValueError(
            f"{path} line {line_of(classes, row)}, column {CURVATURE_MEASURE!r}: "
            f"{classes.iloc[row]!r} is not one of {list(CURVATURE_CLASSES)} or blank"
        )
    columns: dict[str, pd.Series] = {"image_id": ids}
    landmark_names = set(_landmark_value_columns())
    for column in text.columns[1:]:
        if column == CURVATURE_MEASURE:
            columns[column] = classes
        else:
            optional = column not in landmark_names
            columns[column] = numeric_column(text, path, column, integer=False, optional=optional)
    table = pd.DataFrame(columns).reset_index(drop=True)
    table.attrs[SOURCE_ATTR] = str(path)
    return table
