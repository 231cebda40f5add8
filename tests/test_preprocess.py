"""Tests of the atlas build (radsynth.data.preprocess and the modules it drives): reading every
image flavour, negative detection, LabelMe quirks, geometry, and the atlas HDF5 with its rejects
table. Fixtures are tiny images made here and in preprocess_fixtures."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from preprocess_fixtures import (
    DETECTION,
    PROVENANCE,
    labelme,
    spine_like,
    write_json,
    write_png,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from radsynth.core.tables import read_table, read_table_provenance
from radsynth.data.atlas import atlas_digest, atlas_from_images, load_atlas, write_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.csxa_metadata import read_pixel_spacing
from radsynth.data.image_reading import UnreadableImage, read_radiograph
from radsynth.data.labelme import AnnotationError, read_labelme
from radsynth.data.negatives import (
    NegativeDetection,
    _flat_run,
    _side_and_centre_strips,
    _trim_flat_borders,
    is_negative,
    negative_score,
)
from radsynth.data.preprocess import (
    TooManyRejected,
    annotation_for,
    prepare_image,
    preprocess_atlas,
    to_uint8,
)
from radsynth.data.rejects import RejectRow
from radsynth.data.resize import Affine, map_keypoints, map_spacing, resize_image


def write_dicom(
    path: Path, stored: np.ndarray, photometric: str, slope: float, intercept: float
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = (
        16,
        12,
        11,
        0,
    )
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------- reading


@pytest.fixture
def ramp() -> np.ndarray:
    """40 x 60 image with distinct values, min 0 and max 1."""
    return (np.arange(40 * 60).reshape(40, 60) / (40 * 60 - 1)).astype(np.float32)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
def test_eight_bit_modes_read_as_luminance_over_255(tmp_path, ramp, mode):
    path = write_png(tmp_path / f"x_{mode}.png", ramp, mode)
    pixels, info = read_radiograph(path)
    expected = to_uint8(ramp) / 255.0
    assert pixels.dtype == np.float32 and pixels.shape == (40, 60)
    np.testing.assert_allclose(pixels, expected, atol=1.5 / 255 if mode == "P" else 1e-6)
    assert (info.source, info.height, info.width, info.bit_depth, info.mode) == (
        path.name,
        40,
        60,
        8,
        mode,
    )


def test_rgb_luminance_weights_and_alpha_ignored(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # pure red, fully transparent
    rgba[0, 0, :3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    pixels, _ = read_radiograph(tmp_path / "red.png")
    assert pixels[1, 1] == pytest.approx(round(200 * 299 / 1000) / 255)  # ITU-R 601-2 luma
    assert pixels[0, 0] == pytest.approx(1.0)


def test_sixteen_bit_png_is_min_max_scaled(tmp_path, ramp):
    path = write_png(tmp_path / "x16.png", 0.25 + 0.5 * ramp, "I;16")
    pixels, info = read_radiograph(path)
    codes = np.rint((0.25 + 0.5 * ramp) * 4095)
    np.testing.assert_allclose(
        pixels, (codes - codes.min()) / (codes.max() - codes.min()), atol=1e-6
    )
    assert (info.bit_depth, info.mode) == (16, "I;16")


def test_dicom_monochrome2_applies_rescale(tmp_path):
    stored = np.arange(30 * 40).reshape(30, 40) % 4096
    # A negative slope is the only linear rescale min-max scaling cannot hide: it flips the image.
    pixels, info = read_radiograph(
        write_dicom(tmp_path / "a.dcm", stored, "MONOCHROME2", -1.5, 5000.0)
    )
    real = stored * -1.5 + 5000.0
    np.testing.assert_allclose(pixels, (real - real.min()) / (real.max() - real.min()), atol=1e-6)
    assert (info.bit_depth, info.mode, info.height, info.width) == (12, "DICOM MONOCHROME2", 30, 40)


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    stored = np.full((20, 20), 3000, np.uint16)  # MONOCHROME1: air has the high values
    stored[5:15, 5:15] = 1000  # soft tissue
    stored[8:12, 8:12] = 300  # bone, the lowest
    pixels, info = read_radiograph(
        write_dicom(tmp_path / "m1.dicom", stored, "MONOCHROME1", 2.0, -100.0)
    )
    assert pixels[10, 10] == pytest.approx(1.0) and pixels[0, 0] == pytest.approx(0.0)
    assert pixels[6, 6] == pytest.approx(1.0 - (1900.0 - 500.0) / (5900.0 - 500.0))
    assert info.mode == "DICOM MONOCHROME1"


def test_dicom_named_png_is_detected_by_its_preamble(tmp_path):
    stored = np.arange(100).reshape(10, 10)
    pixels, info = read_radiograph(
        write_dicom(tmp_path / "actually_dicom.png", stored, "MONOCHROME2", 1.0, 0.0)
    )
    assert info.mode == "DICOM MONOCHROME2" and pixels[9, 9] == pytest.approx(1.0)


def test_bad_files_raise_unreadable_with_reason(tmp_path, ramp):
    good = write_png(tmp_path / "good.png", ramp).read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom at all" * 20)
    write_png(tmp_path / "flat.png", np.full((10, 10), 0.5))
    expected = {
        "empty.png": "empty file",
        "truncated.png": "truncated",
        "junk.dcm": "MONOCHROME",
        "flat.png": "constant",
    }
    for name, reason in expected.items():
        with pytest.raises(UnreadableImage, match=reason) as caught:
            read_radiograph(tmp_path / name)
        assert caught.value.path == tmp_path / name and name in str(caught.value)


# ----------------------------------------------------------------------------- negative detection


def test_negative_detection_on_fixtures_and_their_inverses():
    rng = np.random.default_rng(7)
    for number in range(40):
        height, width = int(rng.integers(60, 121)), int(rng.integers(50, 111))
        collimation = int(rng.choice([0, 1, 2]) * 0.04 * min(height, width))
        image = spine_like(rng, height, width, collimation)
        assert not is_negative(negative_score(image, DETECTION), DETECTION), (
            f"fixture {number} (collimation {collimation}) called negative"
        )
        assert is_negative(negative_score(1.0 - image, DETECTION), DETECTION), (
            f"inverse of fixture {number} called positive"
        )


def test_bright_collimation_border_does_not_flip_a_positive():
    image = spine_like(
        np.random.default_rng(3), 100, 80, collimation=9
    )  # 11% of the width, all sides
    untrimmed = NegativeDetection(**{**DETECTION.__dict__, "max_trim_fraction": 0.0})
    assert negative_score(image, untrimmed) > 0  # without trimming the band would win
    assert negative_score(image, DETECTION) < -0.05
    assert negative_score(1 - image, DETECTION) == pytest.approx(
        -negative_score(image, DETECTION), abs=1e-6
    )


def stripes() -> np.ndarray:
    """16 x 16 columns: side strips 0.75 (4 wide), centre column 0.25 (columns 6-9), else 0.5."""
    image = np.full((16, 16), 0.5)
    image[:, :4] = image[:, 12:] = 0.75
    image[:, 6:10] = 0.25
    return image


def boundary_detection(threshold: float) -> NegativeDetection:
    """Strips of 4 columns at 16 px with no trimming and all rows: the score of `stripes()` is
    mean(sides) - mean(centre) = 0.75 - 0.25 = 0.5 exactly (dyadic, no resampling at 16 px)."""
    return NegativeDetection(
        analysis_size=16,
        uniform_tolerance=0.02,
        max_trim_fraction=0.0,
        side_fraction=0.25,
        centre_fraction=0.25,
        row_margin_fraction=0.0,
        threshold=threshold,
    )


@pytest.mark.parametrize(
    ("image", "score"), [(stripes(), 0.5), (1.0 - stripes(), -0.5)], ids=["bright", "dark"]
)
def test_negative_decision_is_strictly_above_the_threshold(image, score):
    below, above = math.nextafter(score, -math.inf), math.nextafter(score, math.inf)
    assert negative_score(image, boundary_detection(score)) == score
    for threshold, negative in ((below, True), (score, False), (above, False)):
        detection = boundary_detection(threshold)
        assert is_negative(score, detection) is negative, threshold
        prepared = prepare_image(
            image,
            np.zeros((1, 2)),
            mm_per_pixel=math.nan,
            size=16,
            resize_mode="resize",
            detection=detection,
        )
        assert np.isnan(prepared.mm_per_pixel).all() and prepared.mm_per_pixel.shape == (2,)
        assert prepared.inverted is negative, threshold
        assert prepared.negative_score == score
        # An inverted image is stored as 1 - x: its side strips become dark.
        side = 1.0 - image[0, 0] if negative else image[0, 0]
        assert prepared.pixels[0, 0] == round(side * 255)


def test_detection_settings_are_validated():
    with pytest.raises(
        ValueError, match=r"negative_detection.side_fraction 0.6 is not in \[0.001, 0.4\]"
    ):
        NegativeDetection(**{**DETECTION.__dict__, "side_fraction": 0.6})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("analysis_size", 8, "negative_detection.analysis_size 8 is below 16 px"),
        (
            "max_trim_fraction",
            0.5,
            r"negative_detection.max_trim_fraction 0.5 is not in \[0, 0.4\]",
        ),
        ("centre_fraction", 1.5, r"negative_detection.centre_fraction 1.5 is not in \[0.001, 1\]"),
        (
            "row_margin_fraction",
            0.5,
            r"negative_detection.row_margin_fraction 0.5 is not in \[0, 0.4\]",
        ),
    ],
)
def test_detection_settings_out_of_range_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        NegativeDetection(**{**DETECTION.__dict__, name: value})


def test_detection_settings_at_their_bounds_are_accepted():
    upper = {"max_trim_fraction": 0.4, "side_fraction": 0.4, "row_margin_fraction": 0.4}
    NegativeDetection(**{**DETECTION.__dict__, **upper, "centre_fraction": 1.0})
    NegativeDetection(**{**DETECTION.__dict__, "analysis_size": 16, "side_fraction": 1e-3})


def test_flat_run_counts_leading_spreads_at_or_below_tolerance_up_to_limit():
    assert _flat_run(np.array([0.0, 0.25, 0.5, 0.75, 0.0]), 0.25, 4) == 2  # 0.25 is flat
    assert _flat_run(np.array([0.5, 0.0]), 0.25, 2) == 0
    assert _flat_run(np.array([0.0, 0.0, 0.0, 1.0]), 0.25, 2) == 2  # capped at the limit
    assert _flat_run(np.array([0.0, 0.0]), 0.25, 2) == 2


def banded(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """A textured image (every row and column spans > 0.5) inside flat bands of 0.9."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = ((3 * ys + 7 * xs) % 11) / 10.0
    image[:top], image[height - bottom :] = 0.9, 0.9
    image[:, :left], image[:, width - right :] = 0.9, 0.9
    return image


def test_flat_borders_are_trimmed_per_side_up_to_the_limit():
    image = banded(20, 10, top=2, bottom=3, left=1, right=2)
    # limits: int(0.25 * 20) = 5 rows and int(0.25 * 10) = 2 columns per side
    assert np.array_equal(_trim_flat_borders(image, 0.02, 0.25), image[2:17, 1:8])
    wide = banded(20, 10, top=7, bottom=6, left=3, right=4)
    assert np.array_equal(_trim_flat_borders(wide, 0.02, 0.25), wide[5:15, 2:8])


def test_flat_means_the_central_90_percent_spans_at_most_the_tolerance():
    """np.percentile's linear interpolation over 10 values: the 5th percentile sits 0.45 of the
    way from the lowest to the next, the 95th 0.55 of the way from the 9th to the highest."""
    low_outlier = np.ones((10, 10))
    low_outlier[0, 0] = 0.0  # row 0 and column 0 span 1 - 0.45 = 0.55
    high_outlier = np.zeros((10, 10))
    high_outlier[0, 0] = 1.0  # row 0 and column 0 span 0.55 - 0 = 0.55
    for image in (low_outlier, high_outlier):
        # the flat last row and column go either way (limit int(0.1 * 10) = 1 per side)
        assert np.array_equal(_trim_flat_borders(image, 0.5, 0.1), image[:9, :9])  # 0.55 > 0.5
        assert np.array_equal(_trim_flat_borders(image, 0.6, 0.1), image[1:9, 1:9])


def test_side_strips_and_centre_column_over_the_middle_rows():
    image = np.arange(100.0).reshape(10, 10)  # pixel (r, c) holds 10 r + c
    sides, column = _side_and_centre_strips(image, 0.1, 0.4, 0.2)
    middle = range(2, 8)  # int(0.2 * 10) = 2 rows left out at the top and the bottom
    assert sides.tolist() == [10 * r for r in middle] + [10 * r + 9 for r in middle]
    assert column.tolist() == [[10 * r + c for c in range(3, 7)] for r in middle]
    sides, column = _side_and_centre_strips(image, 0.2, 0.1, 0.0)
    assert sides.tolist() == [10 * r + c for r in range(10) for c in (0, 1)] + [
        10 * r + c for r in range(10) for c in (8, 9)
    ]
    assert column.tolist() == [[10 * r + 4] for r in range(10)]


def test_negative_score_averages_in_double_precision():
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    sides = np.concatenate([image[:, :4].ravel(), image[:, 12:].ravel()]).astype(np.float64)
    centre = image[:, 6:10].astype(np.float64)
    assert negative_score(image, boundary_detection(0.0)) == sides.mean() - centre.mean()


# ----------------------------------------------------------------------------- LabelMe


def test_labelme_points_polygons_duplicates_unknown_and_missing(tmp_path):
    document = labelme({"C2 centroid": (10.0, 20.0), "C3 top left": (1.5, 2.5)}, 50, 40)
    document["shapes"] += [
        {"label": "C3 top right", "points": [[4.0, 5.0]], "shape_type": "polygon"},
        {
            "label": "C4 top left",
            "points": [[0.0, 0.0], [2.0, 0.0], [2.0, 4.0]],
            "shape_type": "polygon",
        },
        {"label": "C2 centroid", "points": [[99.0, 99.0]], "shape_type": "point"},
        {"label": "C9 nowhere", "points": [[1.0, 1.0]], "shape_type": "point"},
        {"label": "C5 top left", "points": [[1.0, 1.0], [3.0, 3.0]], "shape_type": "rectangle"},
    ]
    path = write_json(tmp_path / "0001035.json", document)
    points, notes = read_labelme(path, KEYPOINT_LABELS)
    index = {label: i for i, label in enumerate(KEYPOINT_LABELS)}
    assert points.shape == (23, 2)
    np.testing.assert_array_equal(
        points[index["C2 centroid"]], [10.0, 20.0]
    )  # first of the repeated
    np.testing.assert_array_equal(points[index["C3 top right"]], [4.0, 5.0])
    np.testing.assert_allclose(points[index["C4 top left"]], [4 / 3, 4 / 3])
    assert (
        np.isnan(points[index["C5 top left"]]).all()
        and np.isnan(points[index["C7 bottom right"]]).all()
    )
    assert "0001035.json shape 4 label 'C2 centroid': label repeated; kept the first" in notes
    assert "0001035.json shape 5 label 'C9 nowhere': unknown label; ignored" in notes
    assert (
        "0001035.json shape 3 label 'C4 top left': polygon with 3 vertices; used their mean"
        in notes
    )
    assert (
        "0001035.json shape 6 label 'C5 top left': shape_type 'rectangle' is not a point; ignored"
        in notes
    )
    assert notes[-1].startswith(
        "0001035.json: missing labels: C2 bottom left, C2 bottom right, C3 bottom left"
    )


def test_labelme_broken_json_and_wrong_size_name_the_file(tmp_path):
    broken = tmp_path / "0002040.json"
    broken.write_text('{"shapes": [')
    with pytest.raises(AnnotationError, match="0002040.json: not a readable JSON"):
        read_labelme(broken, KEYPOINT_LABELS)
    sized = write_json(tmp_path / "0003050.json", labelme({"C2 centroid": (1, 1)}, 50, 40))
    with pytest.raises(
        AnnotationError, match=r"0003050.json: annotated for a 40x50 image but the image is 40x60"
    ):
        read_labelme(sized, KEYPOINT_LABELS, image_size=(60, 40))


# ----------------------------------------------------------------------------- geometry


def test_resize_mode_maps_pixel_centres_exactly():
    image = np.zeros((80, 120), np.float32)
    image[30, 70] = 1.0
    resized, affine = resize_image(image, 40, "resize")
    assert resized.shape == (40, 40) and resized.dtype == np.float32
    assert affine == Affine(40 / 120, 0.5, 0.5 * 40 / 120 - 0.5, -0.25)
    mapped = map_keypoints(np.array([[70.0, 30.0], [np.nan, np.nan]]), affine)
    np.testing.assert_allclose(mapped[0], [(70.5) * 40 / 120 - 0.5, 30.5 * 0.5 - 0.5])
    assert np.isnan(mapped[1]).all()
    rows, cols = np.indices(resized.shape)
    centroid = [(resized * cols).sum() / resized.sum(), (resized * rows).sum() / resized.sum()]
    np.testing.assert_allclose(centroid, mapped[0], atol=1e-4)


def test_letterbox_keeps_aspect_pads_background_and_dot_stays_under_keypoint():
    image = np.full((50, 100), 0.2, np.float32)
    image[10:13, 80:83] = 1.0  # a bright 3x3 dot centred on (x=81, y=11)
    resized, affine = resize_image(image, 100, "letterbox")
    assert resized.shape == (100, 100)
    assert (resized[:25] == 0).all() and (resized[75:] == 0).all()  # padding rows
    np.testing.assert_allclose(resized[25:75], 0.2, atol=0.9)
    assert affine == Affine(1.0, 1.0, 0.0, 25.0)
    x, y = map_keypoints(np.array([81.0, 11.0]), affine)
    assert resized[int(y), int(x)] == pytest.approx(1.0)
    small, small_affine = resize_image(image, 40, "letterbox")
    x, y = map_keypoints(np.array([81.0, 11.0]), small_affine)
    assert small.shape == (40, 40) and np.unravel_index(np.argmax(small), small.shape) == (
        round(y),
        round(x),
    )


def test_spacing_is_divided_by_each_axis_scale():
    """A 200 x 300 (h x w) film of 0.2 mm pixels: stretched to 100 x 100, an x pixel spans
    300 / 100 original pixels (0.6 mm) and a y pixel 200 / 100 (0.4 mm); letterboxed, the
    content is 100 x round(200 / 3) = 67 px, so y spans 200 / 67 original pixels and the padding
    changes nothing."""
    image = np.zeros((200, 300), np.float32)
    _, stretched = resize_image(image, 100, "resize")
    np.testing.assert_allclose(map_spacing(0.2, stretched), [0.6, 0.4], rtol=1e-12)
    _, boxed = resize_image(image, 100, "letterbox")
    np.testing.assert_allclose(map_spacing(0.2, boxed), [0.6, 0.2 * 200 / 67], rtol=1e-12)
    assert np.isnan(map_spacing(math.nan, boxed)).all()


def test_unknown_resize_mode_is_rejected():
    with pytest.raises(ValueError, match="resize mode 'crop'"):
        resize_image(np.zeros((4, 4), np.float32), 2, "crop")


def test_to_uint8_rounds_halves_to_even():
    """The atlas rounds half to even (np.rint): k + 0.5 goes to the even neighbour."""
    scaled = np.array([125.5, 126.5, 127.5, 0.4, 254.6])
    image = scaled / 255.0
    assert (image * 255.0 == scaled).all()  # these values scale back exactly in float64
    assert to_uint8(image).tolist() == [126, 126, 128, 0, 255]
    assert to_uint8(np.array([-0.2, 1.3])).tolist() == [0, 255]


# ----------------------------------------------------------------------------- the atlas


def make_atlas(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Six images of different flavours (one negative), their LabelMe files and two bad apples."""
    images, annotations = root / "png", root / "json"
    flavours = {
        "0003020.png": "L",
        "0001035.png": "RGB",
        "sub/0002045.png": "I;16",
        "0004050.png": "LA",
    }
    originals = {}
    for number, (name, mode) in enumerate(flavours.items()):
        image = spine_like(rng, 60 + 8 * number, 50 + 4 * number)
        originals[name] = image
        write_png(images / name, 1.0 - image if name == "0004050.png" else image, mode)
        height, width = image.shape
        write_json(
            annotations / f"{Path(name).stem}.json",
            labelme({"C2 centroid": (width / 2, height / 3)}, height, width),
        )
    originals["0005060.dcm"] = spine_like(rng, 70, 56)
    stored = np.rint((1.0 - originals["0005060.dcm"]) * 4000)  # MONOCHROME1 stores bone dark
    write_dicom(images / "0005060.dcm", stored, "MONOCHROME1", 1.0, 0.0)
    (images / "0006070.PNG").write_bytes(b"")  # empty: rejected; upper-case suffix still found
    write_png(images / "0007080.png", spine_like(rng, 64, 64))  # no annotation
    (annotations / "0005060.json").write_text("{broken")
    (images / ".hidden.png").write_bytes(b"")  # hidden: not an image of the atlas
    # CSXA's metadata sheet: a spreadsheet's numbers lose the stem's leading zeros ("2045"); one
    # image has a blank pixel equivalent, 0007080 has no row, 0009090 is not in the atlas.
    (root / "datasets.csv").write_text(
        "Number,Age,Pixel equivalent\n0001035,35,0.1\n0003020,20,0.125\n2045,45,0.2\n"
        "0004050,50,\n0005060,60,0.15\n0009090,90,0.3\n"
    )
    return originals


def run(root: Path, **overrides):
    arguments = dict(
        metadata_table=root / "datasets.csv",
        size=32,
        resize_mode="resize",
        max_rejected_fraction=0.5,
        detection=DETECTION,
        provenance=PROVENANCE,
        progress=False,
    )
    arguments.update(overrides)
    return preprocess_atlas(
        root / "png",
        root / "json",
        root / "out" / "atlas.h5",
        root / "out" / "rejects.csv",
        **arguments,
    )


def read_rejects(path: Path) -> list[dict[str, str]]:
    return read_table(path, dtype=str, keep_default_na=False).to_dict("records")


def test_atlas_layout_content_and_rejects(tmp_path):
    originals = make_atlas(tmp_path, np.random.default_rng(11))
    summary = run(tmp_path)
    assert (summary.n_found, summary.n_images, summary.n_rejected, summary.n_inverted) == (
        7,
        6,
        1,
        1,
    )
    assert (summary.n_annotation_missing, summary.n_annotation_rejected) == (1, 1)
    assert summary.n_without_spacing == 2
    with h5py.File(tmp_path / "out" / "atlas.h5") as h5:
        assert h5["images"].dtype == np.uint8 and h5["images"].shape == (6, 32, 32)
        assert h5["images"].chunks == (1, 32, 32) and h5["images"].compression == "gzip"
        assert h5["keypoints"].dtype == np.float32 and h5["keypoints"].shape == (6, 23, 2)
        assert tuple(h5["keypoints"].attrs["labels"]) == KEYPOINT_LABELS
        assert h5["meta/source_name"].dtype == h5py.string_dtype("utf-8")
        assert h5["meta/inverted"].dtype == bool and h5["meta/negative_score"].dtype == np.float64
        assert (
            h5.attrs["size"],
            h5.attrs["resize_mode"],
            h5.attrs["n_images"],
            h5.attrs["n_rejected"],
        ) == (
            32,
            "resize",
            6,
            1,
        )
        assert h5.attrs["provenance_config_hash"] == "abc123"
        assert h5.attrs["n_without_spacing"] == 2
        assert h5["meta/mm_per_pixel"].dtype == np.float64
        assert json.loads(h5.attrs["provenance"]) == PROVENANCE
    atlas = load_atlas(tmp_path / "out" / "atlas.h5")
    assert atlas.source_names == [
        "0001035.png",
        "0003020.png",
        "0004050.png",
        "0005060.dcm",
        "0007080.png",
        "sub/0002045.png",
    ]
    assert atlas.inverted.tolist() == [False, False, True, False, False, False]
    assert atlas.modes == ["RGB", "L", "LA", "DICOM MONOCHROME1", "L", "I;16"]
    assert atlas.bit_depth.tolist() == [8, 8, 8, 12, 8, 16]
    assert (atlas.original_height[2], atlas.original_width[2]) == originals["0004050.png"].shape
    # The inverted negative equals its positive original, resized.
    expected, _ = resize_image(to_uint8(originals["0004050.png"]) / 255.0, 32, "resize")
    np.testing.assert_allclose(atlas.images[2], to_uint8(expected), atol=2)
    height, width = originals["0001035.png"].shape
    np.testing.assert_allclose(
        atlas.keypoints[0, 0],
        [(width / 2 + 0.5) * 32 / width - 0.5, (height / 3 + 0.5) * 32 / height - 0.5],
        rtol=1e-6,
    )
    assert np.isnan(atlas.keypoints[3]).all() and np.isnan(atlas.keypoints[4]).all()
    # mm per atlas pixel: the sheet's value times original pixels per atlas pixel on each axis
    sheet = {"0001035.png": 0.1, "0003020.png": 0.125, "0005060.dcm": 0.15, "sub/0002045.png": 0.2}
    for name, mm in sheet.items():
        height, width = originals[name].shape
        np.testing.assert_allclose(
            atlas.mm_per_pixel[atlas.source_names.index(name)],
            [mm * width / 32, mm * height / 32],
            rtol=1e-12,
        )
    for name in ("0004050.png", "0007080.png"):  # a blank value, and an image without a row
        assert np.isnan(atlas.mm_per_pixel[atlas.source_names.index(name)]).all()
    assert read_table_provenance(tmp_path / "out" / "rejects.csv") == PROVENANCE
    rows = read_rejects(tmp_path / "out" / "rejects.csv")
    kinds = {(row["source"], row["kind"]) for row in rows}
    assert {
        ("0006070.PNG", "image_rejected"),
        ("0007080.png", "annotation_missing"),
        ("0005060.dcm", "annotation_rejected"),
    } <= kinds
    assert {row["kind"] for row in rows} == {
        "image_rejected",
        "annotation_missing",
        "annotation_rejected",
        "annotation_note",
    }
    assert (
        next(row for row in rows if row["kind"] == "image_rejected")["reason"]
        == "empty file (0 bytes)"
    )


def test_rerun_gives_identical_content(tmp_path):
    make_atlas(tmp_path, np.random.default_rng(5))
    run(tmp_path)
    first, first_rejects = (
        load_atlas(tmp_path / "out" / "atlas.h5"),
        (tmp_path / "out" / "rejects.csv").read_bytes(),
    )
    run(tmp_path)
    second = load_atlas(tmp_path / "out" / "atlas.h5")
    assert first.source_names == second.source_names
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.keypoints, second.keypoints)
    np.testing.assert_array_equal(first.negative_scores, second.negative_scores)
    assert (tmp_path / "out" / "rejects.csv").read_bytes() == first_rejects


def test_without_a_metadata_table_no_image_has_a_spacing_and_the_digest_is_unchanged(tmp_path):
    """The spacing is metadata: the atlas digest (images and names, which key training runs)
    does not depend on it."""
    make_atlas(tmp_path, np.random.default_rng(5))
    run(tmp_path)
    with_table = load_atlas(tmp_path / "out" / "atlas.h5")
    summary = run(tmp_path, metadata_table=None)
    without = load_atlas(tmp_path / "out" / "atlas.h5")
    assert summary.n_without_spacing == 6 and without.attrs["n_without_spacing"] == 6
    assert np.isnan(without.mm_per_pixel).all() and without.mm_per_pixel.shape == (6, 2)
    assert atlas_digest(with_table.images, with_table.source_names) == atlas_digest(
        without.images, without.source_names
    )


def test_atlas_round_trip_keeps_the_spacing_and_requires_it(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    atlas = dataclasses.replace(
        atlas_from_images(images, ["a", "b", "c"]),
        mm_per_pixel=np.array([[0.1, 0.2], [np.nan, np.nan], [0.3, 0.3]]),
    )
    write_atlas(tmp_path / "atlas.h5", atlas)
    back = load_atlas(tmp_path / "atlas.h5")
    np.testing.assert_array_equal(back.mm_per_pixel, atlas.mm_per_pixel)
    assert back.mm_per_pixel.dtype == np.float64
    assert np.isnan(atlas_from_images(images, ["a", "b", "c"]).mm_per_pixel).all()
    with h5py.File(tmp_path / "atlas.h5", "a") as h5:
        del h5["meta/mm_per_pixel"]
    with pytest.raises(KeyError, match="atlas.h5: not a radsynth atlas, missing meta/mm_per_pixel"):
        load_atlas(tmp_path / "atlas.h5")
    with pytest.raises(
        ValueError, match=r"mm per pixel must be \(3, 2\) \(x, y per image\), got \(3,\)"
    ):
        write_atlas(tmp_path / "bad.h5", dataclasses.replace(atlas, mm_per_pixel=np.ones(3)))
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0001035,abc\n", r"line 2, column 'Pixel equivalent': 'abc' is not a finite number"),
        (
            "0001035,0.1\n0002045,-0.1\n",
            r"line 3, column 'Pixel equivalent': '-0.1' is not a positive",
        ),
        ("0001035,0\n", r"line 2, column 'Pixel equivalent': '0' is not a positive mm per pixel"),
        ("12345678,0.1\n", r"line 2, column 'Number': '12345678' is not a 7-digit CSXA"),
        ("abc,0.1\n", r"line 2, column 'Number': 'abc' is not a 7-digit CSXA image stem"),
        ("1035,0.1\n0001035,0.2\n", r"line 3, column 'Number': image 0001035 is already on line 2"),
    ],
)
def test_a_malformed_metadata_row_is_named(tmp_path, rows, message):
    path = tmp_path / "datasets.csv"
    path.write_text("Number,Pixel equivalent\n" + rows)
    with pytest.raises(ValueError, match=rf"{path} {message}"):
        read_pixel_spacing(path)


def test_metadata_table_reads_stems_and_blanks_and_names_a_missing_column(tmp_path):
    path = tmp_path / "datasets.csv"
    path.write_text("Number,Pixel equivalent\n1035,0.125\n0002045,\n")
    spacing = read_pixel_spacing(path)
    assert list(spacing) == ["0001035", "0002045"] and spacing["0001035"] == 0.125
    assert math.isnan(spacing["0002045"])
    path.write_text("Number,Pixel spacing\n0001035,0.1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Pixel equivalent'\]"):
        read_pixel_spacing(path)


def test_metadata_spreadsheet_as_csxa_ships_it(tmp_path):
    """datasets.xlsx: Sheet1, header in row 1, the stem stored as a number (leading zeros lost);
    a bad row is named by its sheet row."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for row in (["Number", "Sex", "Pixel equivalent"], [1035, "F", 0.125], [2045, "M", None]):
        sheet.append(row)
    book.save(tmp_path / "datasets.xlsx")
    spacing = read_pixel_spacing(tmp_path / "datasets.xlsx")
    assert list(spacing) == ["0001035", "0002045"] and spacing["0001035"] == 0.125
    assert math.isnan(spacing["0002045"])
    sheet.append([3020, "F", "n/a"])
    book.save(tmp_path / "datasets.xlsx")
    with pytest.raises(ValueError, match=r"datasets.xlsx line 4, column 'Pixel equivalent': 'n/a'"):
        read_pixel_spacing(tmp_path / "datasets.xlsx")


def test_too_many_rejected_fails_but_writes_rejects_and_no_atlas(tmp_path):
    make_atlas(tmp_path, np.random.default_rng(2))
    (tmp_path / "png" / "0008090.png").write_bytes(b"garbage")
    with pytest.raises(TooManyRejected) as caught:
        run(tmp_path, max_rejected_fraction=0.2)
    message = str(caught.value)
    assert (
        "2 of 8 images rejected (fraction 0.2500) exceeds max_rejected_fraction 0.2000" in message
    )
    assert str(tmp_path / "out" / "rejects.csv") in message
    assert not (tmp_path / "out" / "atlas.h5").exists()
    assert list((tmp_path / "out").iterdir()) == [
        tmp_path / "out" / "rejects.csv"
    ]  # no temp file left
    rejected = [
        row["source"]
        for row in read_rejects(tmp_path / "out" / "rejects.csv")
        if row["kind"] == "image_rejected"
    ]
    assert rejected == ["0006070.PNG", "0008090.png"]


def test_empty_image_dir_names_it_and_writes_header_only_rejects(tmp_path):
    (tmp_path / "png").mkdir()
    (tmp_path / "json").mkdir()
    with pytest.raises(FileNotFoundError, match=f"image directory {tmp_path / 'png'} holds no"):
        run(tmp_path)
    assert (tmp_path / "out" / "rejects.csv").read_text() == (
        "# config_hash: abc123\n# code_revision: deadbeef\n# radsynth_version: 0.1.0\n"
        "source,kind,reason\n"
    )
    assert not (tmp_path / "out" / "atlas.h5").exists()


def test_lazy_atlas_reads_on_demand(tmp_path):
    make_atlas(tmp_path, np.random.default_rng(4))
    run(tmp_path, resize_mode="letterbox", size=24)
    with load_atlas(tmp_path / "out" / "atlas.h5", lazy=True) as atlas:
        assert isinstance(atlas.images, h5py.Dataset) and atlas.images[1].shape == (24, 24)
        assert atlas.attrs["resize_mode"] == "letterbox" and atlas.provenance == PROVENANCE


def test_odd_shapes_and_ambiguous_annotations_are_recorded_not_fatal(tmp_path):
    document = labelme({"C2 centroid": (3.0, 4.0)}, 10, 10)
    document["shapes"] += [
        {"label": ["C3 top left"], "points": [[1, 1]]},
        "not a shape",
        {"label": "C3 top left"},
    ]
    path = write_json(tmp_path / "a" / "0001035.json", document)
    points, notes = read_labelme(path, KEYPOINT_LABELS)
    np.testing.assert_array_equal(points[0], [3.0, 4.0])
    assert "0001035.json shape 1 label ['C3 top left']: unknown label; ignored" in notes
    assert "0001035.json shape 2 label None: unknown label; ignored" in notes
    assert (
        "0001035.json shape 3 label 'C3 top left': points are not a list of [x, y] pairs; ignored"
        in notes
    )
    twin = write_json(tmp_path / "b" / "0001035.json", document)
    keypoints, rows = annotation_for("0001035.png", [path, twin], (10, 10), KEYPOINT_LABELS)
    assert np.isnan(keypoints).all()
    assert rows == [
        RejectRow("0001035.png", "annotation_rejected", f"several annotation files: {path}, {twin}")
    ]


def test_missing_directories_and_foreign_files_are_named(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=f"image directory {tmp_path / 'nowhere'} does not exist"
    ):
        preprocess_atlas(
            tmp_path / "nowhere",
            tmp_path,
            tmp_path / "a.h5",
            tmp_path / "r.csv",
            metadata_table=None,
            size=8,
            resize_mode="resize",
            max_rejected_fraction=0.1,
            detection=DETECTION,
            provenance={},
            progress=False,
        )
    assert (tmp_path / "r.csv").read_text() == "source,kind,reason\n"
    h5py.File(tmp_path / "other.h5", "w").close()
    with pytest.raises(KeyError, match="other.h5: not a radsynth atlas, missing images, keypoints"):
        load_atlas(tmp_path / "other.h5")


def test_a_source_without_annotations_gives_an_atlas_without_keypoints(tmp_path):
    """An empty annotation folder (say a local source whose files were all lost) is no error: the
    atlas keeps every image with NaN keypoints, which is what the anatomy stage's keypoint check
    reads, and the rejects table names each image as annotation_missing."""
    rng = np.random.default_rng(5)
    for stem in ("0001035", "0002040"):
        write_png(tmp_path / "png" / f"{stem}.png", spine_like(rng, 48, 40))
    (tmp_path / "json").mkdir()
    summary = run(tmp_path, metadata_table=None)
    assert (summary.n_images, summary.n_annotation_missing, summary.n_without_spacing) == (2, 2, 2)
    with load_atlas(tmp_path / "out" / "atlas.h5") as atlas:
        assert atlas.keypoints.shape == (2, len(KEYPOINT_LABELS), 2)
        assert np.isnan(atlas.keypoints).all() and np.isnan(atlas.mm_per_pixel).all()
    assert [
        (row["source"], row["kind"], row["reason"])
        for row in read_rejects(tmp_path / "out" / "rejects.csv")
    ] == [
        ("0001035.png", "annotation_missing", "no 0001035.json found"),
        ("0002040.png", "annotation_missing", "no 0002040.json found"),
    ]
