"""Reading LabelMe keypoint annotations: every quirk becomes a note, an unusable file an
`AnnotationError` (its image is kept, with NaN keypoints)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """A LabelMe file that cannot be used at all (its image is kept, with NaN keypoints)."""


def read_labelme(
    path: Path, labels: Sequence[str], *, image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Keypoints (len(labels), 2) as (x, y), NaN where missing, plus notes on every quirk.

    A shape gives `points[0]` ("point", or a "polygon" holding one point); a polygon with
    several vertices gives the mean of its vertices. A repeated label keeps its first shape.
    `image_size` = (height, width): when given, a file annotated for another size is rejected,
    since its points would be in a different frame.
    """
    path = Path(path)
    document = _load_json_object(path)
    shapes = document.get("shapes")
    if not isinstance(shapes, list):
        raise AnnotationError(f"{path}: no 'shapes' list")
    if image_size is not None:
        _check_annotated_size(document, image_size, path)
    index = {label: position for position, label in enumerate(labels)}
    points = np.full((len(labels), 2), np.nan)
    notes: list[str] = []
    seen: set[str] = set()
    for number, shape in enumerate(shapes):
        label = shape.get("label") if isinstance(shape, dict) else None
        where = f"{path.name} shape {number} label {label!r}"
        if not isinstance(label, str) or label not in index:
            notes.append(f"{where}: unknown label; ignored")
            continue
        if label in seen:
            notes.append(f"{where}: label repeated; kept the first")
            continue
        seen.add(label)
        point, note = _shape_point(shape, where)
        notes.extend([note] if note else [])
        if point is not None:
            points[index[label]] = point
    missing = [label for label in labels if np.isnan(points[index[label]]).any()]
    if missing:
        notes.append(f"{path.name}: missing labels: {', '.join(missing)}")
    return points, notes


def _load_json_object(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(document, dict):
        raise AnnotationError(
            f"{path}: top level is {type(document).__name__}, not a LabelMe object"
        )
    return document


def _check_annotated_size(document: dict, image_size: tuple[int, int], path: Path) -> None:
    annotated = (document.get("imageHeight"), document.get("imageWidth"))
    if None not in annotated and tuple(annotated) != tuple(image_size):
        raise AnnotationError(
            f"{path}: annotated for a {annotated[1]}x{annotated[0]} image but the image is "
            f"{image_size[1]}x{image_size[0]} (width x height)"
        )


def _shape_point(shape: dict, where: str) -> tuple[np.ndarray | None, str | None]:
    """The keypoint one LabelMe shape stands for, or None and a note saying why it has none."""
    kind = shape.get("shape_type") or "polygon"  # LabelMe before 4.0 wrote no shape_type: polygons
    try:
        vertices = np.asarray(shape.get("points"), dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"{where}: points are not numbers; ignored"
    if vertices.ndim != 2 or vertices.shape[1:] != (2,) or len(vertices) == 0:
        return None, f"{where}: points are not a list of [x, y] pairs; ignored"
    if not np.isfinite(vertices).all():
        return None, f"{where}: points are not finite; ignored"
    if kind not in ("point", "polygon"):
        return None, f"{where}: shape_type {kind!r} is not a point; ignored"
    if len(vertices) == 1:
        return vertices[0], None
    if kind == "polygon":
        return vertices.mean(
            axis=0
        ), f"{where}: polygon with {len(vertices)} vertices; used their mean"
    return vertices[0], f"{where}: point shape with {len(vertices)} points; used the first"
