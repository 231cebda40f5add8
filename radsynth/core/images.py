"""Image bytes shared by the stages that write images for people (study, review pages, release)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 gray image (H, W) as an 8-bit grayscale PNG without time or text chunks: the same
    pixels always give the same bytes, and the file carries no source metadata."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
