import io

import numpy as np
from PIL import Image

from radsynth.core.images import png_bytes


def test_png_bytes_round_trip_gray_without_metadata_and_deterministic():
    image = np.arange(48, dtype=np.uint8).reshape(6, 8)[:, ::-1]  # not contiguous
    data = png_bytes(image)
    assert data == png_bytes(image.copy())
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "L" and decoded.info == {}
        np.testing.assert_array_equal(np.asarray(decoded), image)
    assert b"tEXt" not in data and b"tIME" not in data
