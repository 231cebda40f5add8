"""Preprocessing: a raw radiograph atlas in the CSXA layout -> one HDF5 file ready for training.

The paper resampled every CSXA radiograph to 256x256 and intensity-inverted the negative scans
(bone dark). This module reads each image (PNG of any common mode, or DICOM), detects and
inverts negatives, resizes it, maps its LabelMe keypoints into the new frame and writes the lot
to HDF5. Problems never stop the run silently: an unreadable image, a missing or broken
annotation and every annotation quirk become rows of a rejects CSV.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from tqdm import tqdm

from radsynth.core.atomic import atomic_output
from radsynth.data.atlas import Atlas, write_metadata
from radsynth.data.csxa import KEYPOINT_LABELS

IMAGE_SUFFIXES = (".png", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
RESIZE_MODES = ("resize", "letterbox")
#: Background of a positive radiograph (air is black once negatives are inverted): letterbox padding.
BACKGROUND = 0.0
REJECT_COLUMNS = ("source", "kind", "reason")
IMAGE_REJECTED = "image_rejected"
ANNOTATION_MISSING = "annotation_missing"
ANNOTATION_REJECTED = "annotation_rejected"
ANNOTATION_NOTE = "annotation_note"

#: Bits per channel of the PIL modes read as 8-bit display images (scaled by 1/255).
_EIGHT_BIT_MODES = {"1": 1, "L": 8, "LA": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8}
#: Bits per pixel of the PIL modes holding raw detector values (min-max scaled).
_HIGH_BIT_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_DICOM_ERRORS = (
    InvalidDicomError,
    OSError,
    ValueError,
    AttributeError,
    KeyError,
    TypeError,
    NotImplementedError,
    RuntimeError,
    EOFError,
)


class UnreadableImage(Exception):
    """An image file that cannot become a training image; recorded as a rejection, not fatal."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class AnnotationError(ValueError):
    """A LabelMe file that cannot be used at all (its image is kept, with NaN keypoints)."""


class TooManyRejected(RuntimeError):
    """More images were unreadable than the configured tolerance: the atlas is probably wrong."""


@dataclass(frozen=True)
class ImageInfo:
    """What the source file was, kept in the HDF5 so every training image traces back to it."""

    source: str
    height: int
    width: int
    bit_depth: int
    mode: str


@dataclass(frozen=True)
class Affine:
    """Axis-aligned map from original to new pixel coordinates: x' = x * scale_x + offset_x."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float


@dataclass(frozen=True)
class NegativeDetection:
    """Settings of the negative-scan detector (radsynth choices; the paper gives no method)."""

    analysis_size: int  # side of the downsampled square copy the statistics are taken on
    uniform_tolerance: (
        float  # spread (5th-95th percentile) at or below which an edge line is a flat band
    )
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


@dataclass(frozen=True)
class RejectRow:
    """One row of the rejects CSV."""

    source: str
    kind: str
    reason: str


@dataclass(frozen=True)
class PreparedImage:
    """One radiograph after inversion and resizing, ready to be stored."""

    pixels: np.ndarray  # uint8 (size, size)
    keypoints: np.ndarray  # float32 (n_labels, 2), new frame
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


# ----------------------------------------------------------------------------- reading images


def read_radiograph(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Greyscale float32 in [0, 1] with bone bright as stored, plus what the file was.

    Scaling: 8-bit modes are divided by 255 (they are display images already, so their contrast
    is kept as the paper saw it); 16-bit PNGs and all DICOMs are min-max scaled over their own
    pixels, because their stored range rarely fills the nominal bit depth. Colour is reduced to
    luminance (ITU-R 601-2, PIL's "L"); alpha is ignored. DICOM is recognised by suffix or by the
    "DICM" preamble; RescaleSlope/Intercept are applied and MONOCHROME1 is inverted.
    """
    path = Path(path)
    try:
        n_bytes = path.stat().st_size
    except OSError as err:
        raise UnreadableImage(path, f"cannot stat file ({err})") from err
    if n_bytes == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return _read_dicom(path)
    return _read_pil(path)


def _has_dicom_preamble(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def _scale_to_unit(values: np.ndarray, full_scale: float | None, path: Path) -> np.ndarray:
    """Divide by `full_scale`, or min-max scale when it is None; a constant image carries nothing."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise UnreadableImage(path, f"constant image (every pixel is {low:g})")
    if full_scale is None:
        return ((values - low) / (high - low)).astype(np.float32)
    return (values / full_scale).astype(np.float32)


def _read_pil(path: Path) -> tuple[np.ndarray, ImageInfo]:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in _HIGH_BIT_MODES:
                pixels = _scale_to_unit(np.asarray(img, dtype=np.float64), None, path)
            elif mode in _EIGHT_BIT_MODES:
                pixels = _scale_to_unit(np.asarray(img.convert("L"), dtype=np.float64), 255.0, path)
            else:
                raise UnreadableImage(path, f"unsupported image mode {mode!r}")
    except _PIL_ERRORS as err:
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err
    bit_depth = {**_EIGHT_BIT_MODES, **_HIGH_BIT_MODES}[mode]
    return pixels, ImageInfo(path.name, pixels.shape[0], pixels.shape[1], bit_depth, mode)


def _read_dicom(path: Path) -> tuple[np.ndarray, ImageInfo]:
    try:
        dataset = pydicom.dcmread(path, force=True)
        photometric = str(dataset.get("PhotometricInterpretation") or "missing")
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UnreadableImage(
                path, f"PhotometricInterpretation {photometric} is not MONOCHROME1/2"
            )
        raw = dataset.pixel_array
        if raw.ndim != 2:
            raise UnreadableImage(
                path, f"pixel data of shape {raw.shape} is not a single greyscale frame"
            )
        values = np.asarray(apply_modality_lut(raw, dataset), dtype=np.float64)
        bit_depth = int(dataset.get("BitsStored") or raw.dtype.itemsize * 8)
    except _DICOM_ERRORS as err:
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err
    pixels = _scale_to_unit(values, None, path)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels, ImageInfo(
        path.name, pixels.shape[0], pixels.shape[1], bit_depth, f"DICOM {photometric}"
    )


# ----------------------------------------------------------------------------- negative scans


def negative_score(image: np.ndarray, detection: NegativeDetection) -> float:
    """Mean of the two side strips minus mean of the central column (> threshold: negative).

    A lateral c-spine radiograph has the spine running down its middle and air in front of and
    behind the neck, so in a positive the side strips (air, soft tissue) are darker than the
    central column (vertebrae), in a negative brighter. Only the middle rows count: the top and
    bottom (`row_margin_fraction`) hold skull and shoulders, bone that would brighten a
    positive's edges. Flat bands at the edges (collimator shutters, bright in a positive;
    padding) would swamp the side strips, so flat edge rows/columns (5th-95th percentile spread
    at most `uniform_tolerance`) are trimmed first, at most `max_trim_fraction` of each side
    (air trimmed by mistake costs little: the strip moves inward, still in air). Statistics are taken
    on an `analysis_size` square copy, so the tolerance means the same at every resolution and
    the cost is constant. The score is antisymmetric: negative_score(1 - x) == -negative_score(x).
    Assumes an upright lateral view with the spine near the middle third of the width.
    """
    view, _ = resize_image(image, detection.analysis_size, "resize")
    core = _trim_flat_borders(view, detection.uniform_tolerance, detection.max_trim_fraction)
    sides, column = _side_and_centre_strips(
        core, detection.side_fraction, detection.centre_fraction, detection.row_margin_fraction
    )
    return float(sides.mean(dtype=np.float64) - column.mean(dtype=np.float64))


def is_negative(image: np.ndarray, detection: NegativeDetection) -> bool:
    """True when the image is a negative scan (bone dark, background bright); see negative_score."""
    return negative_score(image, detection) > detection.threshold


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
    """Pixels of the left and right strips together, and of the central column, over the middle rows."""
    height, width = image.shape
    margin = int(row_margin_fraction * height)
    rows = image[margin : height - margin]
    side = max(1, round(side_fraction * width))
    centre = max(1, round(centre_fraction * width))
    left = (width - centre) // 2
    sides = np.concatenate([rows[:, :side].ravel(), rows[:, width - side :].ravel()])
    return sides, rows[:, left : left + centre]


# ----------------------------------------------------------------------------- annotations


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


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ResizeGeometry:
    """Where the resampled content sits on the square canvas."""

    height: int
    width: int
    pad_y: int
    pad_x: int


def resize_geometry(height: int, width: int, size: int, mode: str) -> ResizeGeometry:
    """Content size and padding of a (height, width) image resized to a size x size canvas."""
    if mode == "resize":
        return ResizeGeometry(size, size, 0, 0)
    if mode == "letterbox":
        scale = size / max(height, width)
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        return ResizeGeometry(
            new_height, new_width, (size - new_height) // 2, (size - new_width) // 2
        )
    raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")


def resize_affine(height: int, width: int, geometry: ResizeGeometry) -> Affine:
    """Original -> canvas coordinates, pixel-centre convention as in PIL (pixel i covers
    [i - 0.5, i + 0.5]): x' = (x + 0.5) * s - 0.5 + pad."""
    scale_x, scale_y = geometry.width / width, geometry.height / height
    return Affine(
        scale_x, scale_y, 0.5 * scale_x - 0.5 + geometry.pad_x, 0.5 * scale_y - 0.5 + geometry.pad_y
    )


def resize_image(image: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, Affine]:
    """Float image -> (size, size) float32, and the map of its coordinates.

    "resize" stretches to a square (the paper's choice; distorts aspect), "letterbox" keeps the
    aspect and pads with BACKGROUND. Resampling is PIL BILINEAR on float32, which widens its
    kernel when reducing (antialiased, no overshoot) and is what torchvision's Resize in the
    I-SynMed/lucidrains data loader uses.
    """
    geometry = resize_geometry(image.shape[0], image.shape[1], size, mode)
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    content = np.asarray(
        source.resize((geometry.width, geometry.height), Image.Resampling.BILINEAR)
    )
    canvas = np.full((size, size), BACKGROUND, dtype=np.float32)
    canvas[
        geometry.pad_y : geometry.pad_y + geometry.height,
        geometry.pad_x : geometry.pad_x + geometry.width,
    ] = content
    return canvas, resize_affine(image.shape[0], image.shape[1], geometry)


def map_keypoints(points: np.ndarray, affine: Affine) -> np.ndarray:
    """(..., 2) points as (x, y) into the resized frame; NaN stays NaN."""
    points = np.asarray(points, dtype=np.float64)
    scale = np.array([affine.scale_x, affine.scale_y])
    offset = np.array([affine.offset_x, affine.offset_y])
    return points * scale + offset


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by rounding (not truncation, so mid-grey stays mid-grey)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare_image(
    image: np.ndarray,
    points: np.ndarray,
    *,
    size: int,
    resize_mode: str,
    detection: NegativeDetection,
) -> PreparedImage:
    """Invert a negative, resize, and carry the keypoints along: one image's whole transformation."""
    score = negative_score(image, detection)
    inverted = score > detection.threshold
    positive = 1.0 - image if inverted else image
    resized, affine = resize_image(positive, size, resize_mode)
    keypoints = map_keypoints(points, affine).astype(np.float32)
    return PreparedImage(to_uint8(resized), keypoints, bool(inverted), score)


# ----------------------------------------------------------------------------- the atlas


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
    """LabelMe files under `annotation_dir` (any depth) by stem; a stem may (wrongly) occur twice."""
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


def write_rejects(path: Path, rows: Iterable[RejectRow]) -> None:
    """The rejects CSV (header only when there is nothing to report), written atomically."""
    with (
        atomic_output(Path(path)) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(REJECT_COLUMNS)
        writer.writerows((row.source, row.kind, row.reason) for row in rows)


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
    infos: list[ImageInfo] = field(default_factory=list)
    inverted: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rows: list[RejectRow] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(row.kind == kind for row in self.rows)


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
    size: int,
    resize_mode: str,
    max_rejected_fraction: float,
    detection: NegativeDetection,
    provenance: Mapping[str, str],
    progress: bool = True,
) -> PreprocessSummary:
    """Read, invert negatives, resize and annotate every image of an atlas into one HDF5 file.

    The rejects CSV is written whatever happens; the HDF5 file appears only when the run
    succeeds (temp file + os.replace). Images are stored sorted by source name.
    """
    image_dir, out_h5 = Path(image_dir), Path(out_h5)
    settings = _Settings(size, resize_mode, max_rejected_fraction, detection)
    resize_geometry(1, 1, size, resize_mode)  # fail on a bad mode before any work
    collected = _Collected()
    try:
        sources = find_images(image_dir)
        annotations = index_annotations(annotation_dir)
        with atomic_output(out_h5) as temporary, h5py.File(temporary, "w") as h5:
            _fill_images(h5, image_dir, sources, annotations, settings, collected, progress)
            _check_outcome(
                collected, len(sources), max_rejected_fraction, image_dir, Path(rejects_csv)
            )
            _write_tables(h5, collected, settings, provenance)
    finally:
        write_rejects(rejects_csv, collected.rows)
    return _summarise(collected, len(sources))


def _fill_images(
    h5: h5py.File,
    image_dir: Path,
    sources: Sequence[str],
    annotations: Mapping[str, list[Path]],
    settings: _Settings,
    collected: _Collected,
    progress: bool,
) -> None:
    """Stream every readable image into /images (sized for all, shrunk to the readable ones)."""
    images = _create_image_dataset(h5, len(sources), settings.size)
    for source in tqdm(sources, desc="preprocess", unit="image", disable=not progress):
        _add_image(image_dir, source, annotations, images, collected, settings)
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
        size=settings.size,
        resize_mode=settings.resize_mode,
        detection=settings.detection,
    )
    images[len(collected.infos)] = prepared.pixels
    collected.rows.extend(rows)
    collected.keypoints.append(prepared.keypoints)
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
            attrs={
                "size": settings.size,
                "resize_mode": settings.resize_mode,
                "n_rejected": collected.count(IMAGE_REJECTED),
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
    )
