"""The release's privacy gate: no packaged image may be a real patient's radiograph or a near copy
of one. It runs over the exact pixels about to be packaged, before anything is written.

Two checks, every failing image collected and named in one error:

- identical: each packaged image's SHA-256 (shape and pixels) is looked up in a table of the
  atlas' real images, as stored and mirrored left-right (the synthetic images are mirrored to
  face left, the atlas is not), so the check costs one pass over the atlas, not all pairs;
- near copy: the patch distance (`radsynth.audit.patch_distance`, MediSyn's) between each
  packaged image and its nearest real image by the audit's encoder (`nearest_real.csv`) must
  be above the configured threshold. Whether the audit embedded the real images as stored or
  made left-facing, the distance is taken as the minimum over the real image as stored and
  mirrored, so a near copy of either orientation fails.

A packaged image missing from `nearest_real.csv`, or whose nearest real image is not in the
atlas, fails too: an image the audit never compared is never taken as private.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from radsynth.audit.patch_distance import patch_distance
from radsynth.core.provenance import file_sha256
from radsynth.core.tables import read_table, read_table_provenance
from radsynth.data.atlas import Atlas, load_atlas

NEAREST_REAL_COLUMNS = ("image_id", "nearest_real_id", "similarity")
#: Atlas images hashed per HDF5 read: bounds memory at the paper's 256 px.
HASH_BLOCK = 256
AS_STORED, MIRRORED = "as stored", "mirrored"


class PrivacyGateError(ValueError):
    """Packaged images that match real ones; the message names every one."""


class Candidate(NamedTuple):
    """An image about to be packaged: its id, its file in the package and its pixels."""

    image_id: str
    file: str
    pixels: np.ndarray


def pixel_key(image: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels: equal keys mean equal images."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.dtype}{image.shape}".encode())
    digest.update(memoryview(image))
    return digest.hexdigest()


def real_image_keys(atlas: Atlas) -> dict[str, tuple[str, str]]:
    """pixel_key -> (real image id, orientation) of every atlas image as stored and mirrored."""
    keys: dict[str, tuple[str, str]] = {}
    for first in range(0, len(atlas), HASH_BLOCK):
        block = np.asarray(atlas.images[first : first + HASH_BLOCK])
        for real_id, image in zip(atlas.source_names[first : first + HASH_BLOCK], block):
            keys.setdefault(pixel_key(image), (real_id, AS_STORED))
            keys.setdefault(pixel_key(image[:, ::-1]), (real_id, MIRRORED))
    return keys


def read_nearest_real(path: Path) -> dict[str, tuple[str, float]]:
    """image_id -> (nearest real id, cosine similarity) from the audit's nearest_real.csv."""
    frame = read_table(
        Path(path), dtype={"image_id": str, "nearest_real_id": str}, keep_default_na=False
    )
    missing = [column for column in NEAREST_REAL_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {', '.join(missing)}")
    repeated = frame["image_id"][frame["image_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"{path}: image id {repeated.iloc[0]!r} has more than one row")
    return {
        row.image_id: (row.nearest_real_id, float(row.similarity)) for row in frame.itertuples()
    }


def nearest_distance(pixels: np.ndarray, real: np.ndarray) -> tuple[float, str]:
    """The smaller patch distance to the real image as stored or mirrored, and which it was."""
    stored, mirrored = patch_distance(real, pixels), patch_distance(real[:, ::-1], pixels)
    return (stored, AS_STORED) if stored <= mirrored else (mirrored, MIRRORED)


def check_privacy(
    candidates: Iterable[Candidate],
    atlas_h5: Path,
    nearest_real_csv: Path,
    *,
    near_duplicate_patch_distance: float,
) -> dict[str, Any]:
    """Raise PrivacyGateError naming every candidate identical to a real atlas image (either
    orientation), within `near_duplicate_patch_distance` of its nearest real image, or unknown to
    `nearest_real_csv`; otherwise return the gate's record (written as privacy_gate.json)."""
    nearest = read_nearest_real(nearest_real_csv)
    problems: list[str] = []
    checked, closest, most_similar = 0, (np.inf, "", ""), (-np.inf, "", "")
    with load_atlas(Path(atlas_h5), lazy=True) as atlas:
        keys = real_image_keys(atlas)
        position = {real_id: index for index, real_id in enumerate(atlas.source_names)}
        for candidate in candidates:
            checked += 1
            where = f"{candidate.file} ({candidate.image_id})"
            if candidate.pixels.shape != atlas.images.shape[1:]:
                problems.append(
                    f"{where}: {candidate.pixels.shape} pixels, the atlas' images are "
                    f"{atlas.images.shape[1:]}"
                )
                continue
            identical = keys.get(pixel_key(candidate.pixels))
            if identical:
                problems.append(
                    f"{where}: pixel-identical to real image {identical[0]} {identical[1]}"
                )
            if candidate.image_id not in nearest:
                problems.append(
                    f"{where}: not in {nearest_real_csv}, so never compared with the real images"
                )
                continue
            real_id, similarity = nearest[candidate.image_id]
            if real_id not in position:
                problems.append(
                    f"{where}: its nearest real image {real_id!r} ({nearest_real_csv}) is not in "
                    f"{atlas_h5}"
                )
                continue
            distance, orientation = nearest_distance(
                candidate.pixels, np.asarray(atlas.images[position[real_id]])
            )
            if distance <= near_duplicate_patch_distance:
                problems.append(
                    f"{where}: patch distance {distance:.4f} <= {near_duplicate_patch_distance} "
                    f"to real image {real_id} {orientation}"
                )
            closest = min(closest, (distance, candidate.image_id, real_id))
            most_similar = max(most_similar, (similarity, candidate.image_id, real_id))
        n_real = len(atlas)
    if problems:
        raise PrivacyGateError(
            f"privacy gate: {len(problems)} problem(s) in {checked} packaged images, nothing "
            f"was written:\n  " + "\n  ".join(problems)
        )
    if not checked:
        raise PrivacyGateError(
            "privacy gate: no image to check; a release needs at least one kept image"
        )
    return gate_record(
        checked,
        n_real,
        closest,
        most_similar,
        atlas_h5=Path(atlas_h5),
        nearest_real_csv=Path(nearest_real_csv),
        threshold=near_duplicate_patch_distance,
    )


def gate_record(
    checked: int,
    n_real: int,
    closest: tuple[float, str, str],
    most_similar: tuple[float, str, str],
    *,
    atlas_h5: Path,
    nearest_real_csv: Path,
    threshold: float,
) -> dict[str, Any]:
    """What the gate compared and how close the closest image came: file names and digests, not
    paths, so a public package leaks no local folder."""
    return {
        "passed": True,
        "n_checked": checked,
        "n_real_images": n_real,
        "atlas_file": atlas_h5.name,
        "atlas_sha256": file_sha256(atlas_h5),
        "identical_rule": "SHA-256 of each packaged image's pixels looked up among the real "
        "images as stored and mirrored left-right",
        "identical_matches": 0,
        "near_duplicate_rule": "fail where the patch distance to the nearest real image (as "
        "stored or mirrored, the smaller) is at or below the threshold",
        "near_duplicate_patch_distance": threshold,
        "min_patch_distance": round(closest[0], 6),
        "min_patch_distance_image_id": closest[1],
        "min_patch_distance_real_id": closest[2],
        "nearest_real_file": nearest_real_csv.name,
        "nearest_real_encoder": read_table_provenance(nearest_real_csv).get("encoder_name"),
        "max_similarity": round(most_similar[0], 6),
        "max_similarity_image_id": most_similar[1],
        "max_similarity_real_id": most_similar[2],
    }
