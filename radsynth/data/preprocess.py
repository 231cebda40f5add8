"""Preprocessing: a raw radiograph atlas in the CSXA layout -> one HDF5 file ready for training.

The paper resampled every CSXA radiograph to 256x256 and intensity-inverted the negative scans
(bone dark). This module drives the build: it finds every image and its LabelMe file, reads the
image (`image_reading`), detects and inverts negatives (`negatives`), resizes it and maps its
keypoints and its pixel spacing (from the source's metadata table, `csxa_metadata`) into the new
frame (`resize`, `labelme`) and writes the lot to HDF5. Problems never stop the run silently: an
unreadable image, a missing or broken annotation and every annotation quirk become rows of the
rejects table (`rejects`); images without a recorded spacing are counted in the log and in the
atlas's `n_without_spacing` attribute.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from radsynth.core.atomic import atomic_output
from radsynth.data.atlas import Atlas, write_metadata
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.csxa_metadata import read_pixel_spacing
from radsynth.data.image_reading import IMAGE_SUFFIXES, ImageInfo, UnreadableImage, read_radiograph
from radsynth.data.labelme import AnnotationError, read_labelme
from radsynth.data.negatives import NegativeDetection, is_negative, negative_score
from radsynth.data.rejects import (
    ANNOTATION_MISSING,
    ANNOTATION_NOTE,
    ANNOTATION_REJECTED,
    IMAGE_REJECTED,
    RejectRow,
    write_rejects,
)
from radsynth.data.resize import map_keypoints, map_spacing, resize_geometry, resize_image

log = logging.getLogger(__name__)


class TooManyRejected(RuntimeError):
    """More images were unreadable than the configured tolerance: the atlas is probably wrong."""


@dataclass(frozen=True)
class PreparedImage:
    """One radiograph after inversion and resizing, ready to be stored."""

    pixels: np.ndarray  # uint8 (size, size)
    keypoints: np.ndarray  # float32 (n_labels, 2), new frame
    mm_per_pixel: np.ndarray  # float64 (2,): x, y in the new frame; NaN when unknown
    inverted: bool
    negative_score: float


@dataclass(frozen=True)
class PreprocessSummary:
    """Counts of one preprocessing run."""

    n_found: int
    n_images: int
    n_rejected: int
    n_inverted: int
    n_annotation_missing: int
    n_annotation_rejected: int
    n_annotation_notes: int
    n_without_spacing: int


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by rounding (not truncation, so mid-grey stays mid-grey).

    Halves round to even (numpy's `rint`, IEEE 754's default): 126.5 -> 126, 127.5 -> 128. The
    sampler's "round" rounds halves up instead (torchvision's save_image); the two never meet,
    one writes the real atlas and the other the synthetic images.
    """
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare_image(
    image: np.ndarray,
    points: np.ndarray,
    *,
    mm_per_pixel: float,
    size: int,
    resize_mode: str,
    detection: NegativeDetection,
) -> PreparedImage:
    """Invert a negative, resize, and carry the keypoints and the pixel spacing (mm per original
    pixel, NaN when unknown) along: one image's whole transformation."""
    score = negative_score(image, detection)
    inverted = is_negative(score, detection)
    positive = 1.0 - image if inverted else image
    resized, affine = resize_image(positive, size, resize_mode)
    keypoints = map_keypoints(points, affine).astype(np.float32)
    spacing = map_spacing(mm_per_pixel, affine)
    return PreparedImage(to_uint8(resized), keypoints, spacing, bool(inverted), score)


def find_images(image_dir: Path) -> list[str]:
    """Image files under `image_dir` (any depth, suffix case-insensitive) as sorted relative paths.

    Hidden files and folders (".*", e.g. the "._name.png" AppleDouble copies macOS puts in zips)
    and "__MACOSX" folders hold no images and are not listed.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image directory {image_dir} does not exist")
    found = [
        path.relative_to(image_dir).as_posix()
        for path in image_dir.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not _is_hidden(path.relative_to(image_dir))
    ]
    if not found:
        raise FileNotFoundError(
            f"image directory {image_dir} holds no {'/'.join(IMAGE_SUFFIXES)} files"
        )
    return sorted(found)


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def index_annotations(annotation_dir: Path) -> dict[str, list[Path]]:
    """LabelMe files under `annotation_dir` (any depth) by stem; a stem may (wrongly) occur
    twice."""
    annotation_dir = Path(annotation_dir)
    if not annotation_dir.is_dir():
        raise FileNotFoundError(f"annotation directory {annotation_dir} does not exist")
    index: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(annotation_dir.rglob("*")):
        if (
            path.suffix.lower() == ".json"
            and path.is_file()
            and not _is_hidden(path.relative_to(annotation_dir))
        ):
            index[path.stem].append(path)
    return dict(index)


def annotation_for(
    source: str, candidates: Sequence[Path], image_size: tuple[int, int], labels: Sequence[str]
) -> tuple[np.ndarray, list[RejectRow]]:
    """The keypoints of one image (NaN when unusable) and the rows recording why."""
    missing = np.full((len(labels), 2), np.nan)
    if not candidates:
        return missing, [
            RejectRow(source, ANNOTATION_MISSING, f"no {Path(source).stem}.json found")
        ]
    if len(candidates) > 1:
        listed = ", ".join(str(path) for path in candidates)
        return missing, [
            RejectRow(source, ANNOTATION_REJECTED, f"several annotation files: {listed}")
        ]
    try:
        points, notes = read_labelme(candidates[0], labels, image_size=image_size)
    except AnnotationError as err:
        return missing, [RejectRow(source, ANNOTATION_REJECTED, str(err))]
    return points, [RejectRow(source, ANNOTATION_NOTE, note) for note in notes]


def check_rejected_fraction(
    n_rejected: int, n_found: int, max_fraction: float, rejects_csv: Path
) -> None:
    """Refuse an atlas with too many unreadable images: that is a wrong download, not bad luck."""
    fraction = n_rejected / n_found
    if fraction > max_fraction:
        raise TooManyRejected(
            f"{n_rejected} of {n_found} images rejected (fraction {fraction:.4f}) exceeds "
            f"max_rejected_fraction {max_fraction:.4f}; see {rejects_csv}"
        )


@dataclass
class _Collected:
    """Per-image metadata gathered while the pixels stream into the HDF5 file."""

    keypoints: list[np.ndarray] = field(default_factory=list)
    spacings: list[np.ndarray] = field(default_factory=list)
    infos: list[ImageInfo] = field(default_factory=list)
    inverted: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rows: list[RejectRow] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(row.kind == kind for row in self.rows)

    def without_spacing(self) -> int:
        return sum(bool(np.isnan(spacing).any()) for spacing in self.spacings)


@dataclass(frozen=True)
class _Settings:
    """The arguments of a run that shape its output, stored with it as JSON."""

    size: int
    resize_mode: str
    max_rejected_fraction: float
    detection: NegativeDetection


def preprocess_atlas(
    image_dir: Path,
    annotation_dir: Path,
    out_h5: Path,
    rejects_csv: Path,
    *,
    metadata_table: Path | None,
    size: int,
    resize_mode: str,
    max_rejected_fraction: float,
    detection: NegativeDetection,
    provenance: Mapping[str, str],
    progress: bool = True,
) -> PreprocessSummary:
    """Read, invert negatives, resize and annotate every image of an atlas into one HDF5 file.

    `metadata_table` is the source's per-image table in CSXA's layout (`read_pixel_spacing`),
    or None for a source without one: then no image has a pixel spacing. The rejects CSV is
    written whatever happens; the HDF5 file appears only when the run succeeds (temp file +
    os.replace). Images are stored sorted by source name.
    """
    image_dir, out_h5 = Path(image_dir), Path(out_h5)
    settings = _Settings(size, resize_mode, max_rejected_fraction, detection)
    resize_geometry(1, 1, size, resize_mode)  # fail on a bad mode before any work
    collected = _Collected()
    try:
        sources = find_images(image_dir)
        annotations = index_annotations(annotation_dir)
        spacing = {} if metadata_table is None else read_pixel_spacing(Path(metadata_table))
        with atomic_output(out_h5) as temporary, h5py.File(temporary, "w") as h5:
            _fill_images(
                h5, image_dir, sources, annotations, spacing, settings, collected, progress
            )
            _check_outcome(
                collected, len(sources), max_rejected_fraction, image_dir, Path(rejects_csv)
            )
            _write_tables(h5, collected, settings, provenance)
    finally:
        write_rejects(rejects_csv, collected.rows, provenance)
    log.info(
        "%d of %d images have no pixel spacing (%s); their atlas spacing is NaN",
        collected.without_spacing(),
        len(collected.infos),
        "no metadata table" if metadata_table is None else f"not given in {metadata_table}",
    )
    return _summarise(collected, len(sources))


def _fill_images(
    h5: h5py.File,
    image_dir: Path,
    sources: Sequence[str],
    annotations: Mapping[str, list[Path]],
    spacing: Mapping[str, float],
    settings: _Settings,
    collected: _Collected,
    progress: bool,
) -> None:
    """Stream every readable image into /images (sized for all, shrunk to the readable ones)."""
    images = _create_image_dataset(h5, len(sources), settings.size)
    for source in tqdm(sources, desc="preprocess", unit="image", disable=not progress):
        _add_image(image_dir, source, annotations, spacing, images, collected, settings)
    images.resize(len(collected.infos), axis=0)


def _check_outcome(
    collected: _Collected,
    n_found: int,
    max_rejected_fraction: float,
    image_dir: Path,
    rejects_csv: Path,
) -> None:
    check_rejected_fraction(
        collected.count(IMAGE_REJECTED), n_found, max_rejected_fraction, rejects_csv
    )
    if not collected.infos:
        raise TooManyRejected(f"no readable image in {image_dir}; see {rejects_csv}")


def _add_image(
    image_dir: Path,
    source: str,
    annotations: Mapping[str, list[Path]],
    spacing: Mapping[str, float],
    images: h5py.Dataset,
    collected: _Collected,
    settings: _Settings,
) -> None:
    """Process one source file, appending its pixels and metadata, or a rejection row."""
    try:
        pixels, info = read_radiograph(image_dir / source)
    except UnreadableImage as err:
        collected.rows.append(RejectRow(source, IMAGE_REJECTED, err.reason))
        return
    candidates = annotations.get(Path(source).stem, [])
    points, rows = annotation_for(source, candidates, (info.height, info.width), KEYPOINT_LABELS)
    prepared = prepare_image(
        pixels,
        points,
        mm_per_pixel=spacing.get(Path(source).stem, math.nan),
        size=settings.size,
        resize_mode=settings.resize_mode,
        detection=settings.detection,
    )
    images[len(collected.infos)] = prepared.pixels
    collected.rows.extend(rows)
    collected.keypoints.append(prepared.keypoints)
    collected.spacings.append(prepared.mm_per_pixel)
    collected.infos.append(ImageInfo(source, info.height, info.width, info.bit_depth, info.mode))
    collected.inverted.append(prepared.inverted)
    collected.scores.append(prepared.negative_score)


def _create_image_dataset(h5: h5py.File, capacity: int, size: int) -> h5py.Dataset:
    """Resizable so pixels stream to disk (the full atlas would not fit in memory comfortably)."""
    return h5.create_dataset(
        "images",
        shape=(capacity, size, size),
        maxshape=(None, size, size),
        dtype=np.uint8,
        chunks=(1, size, size),
        compression="gzip",
        compression_opts=4,
    )


def _write_tables(
    h5: h5py.File, collected: _Collected, settings: _Settings, provenance: Mapping[str, str]
) -> None:
    infos = collected.infos
    write_metadata(
        h5,
        Atlas(
            images=h5["images"],
            keypoints=np.stack(collected.keypoints),
            labels=KEYPOINT_LABELS,
            source_names=[info.source for info in infos],
            inverted=np.array(collected.inverted, dtype=bool),
            negative_scores=np.array(collected.scores, dtype=np.float64),
            original_height=np.array([info.height for info in infos]),
            original_width=np.array([info.width for info in infos]),
            bit_depth=np.array([info.bit_depth for info in infos]),
            modes=[info.mode for info in infos],
            mm_per_pixel=np.stack(collected.spacings),
            attrs={
                "size": settings.size,
                "resize_mode": settings.resize_mode,
                "n_rejected": collected.count(IMAGE_REJECTED),
                "n_without_spacing": collected.without_spacing(),
                "settings": json.dumps(asdict(settings), sort_keys=True),
            },
            provenance=dict(provenance),
        ),
    )


def _summarise(collected: _Collected, n_found: int) -> PreprocessSummary:
    return PreprocessSummary(
        n_found=n_found,
        n_images=len(collected.infos),
        n_rejected=collected.count(IMAGE_REJECTED),
        n_inverted=sum(collected.inverted),
        n_annotation_missing=collected.count(ANNOTATION_MISSING),
        n_annotation_rejected=collected.count(ANNOTATION_REJECTED),
        n_annotation_notes=collected.count(ANNOTATION_NOTE),
        n_without_spacing=collected.without_spacing(),
    )
