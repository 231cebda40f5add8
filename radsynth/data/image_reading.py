"""Reading one radiograph file (PNG of any common mode, or DICOM) as greyscale floats in [0, 1].

A file that cannot become a training image raises `UnreadableImage` with the reason, which the
atlas build records as a row of the rejects table instead of stopping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

IMAGE_SUFFIXES = (".png", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")

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


@dataclass(frozen=True)
class ImageInfo:
    """What the source file was, kept in the HDF5 so every training image traces back to it."""

    source: str
    height: int
    width: int
    bit_depth: int
    mode: str


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
    """Divide by `full_scale`, or min-max scale when it is None; a constant image carries
    nothing."""
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
