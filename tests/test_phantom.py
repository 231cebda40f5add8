import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radsynth.data.csxa import KEYPOINT_LABELS, STEM_PATTERN
from radsynth.data.csxa_metadata import read_pixel_spacing
from radsynth.demo import phantom
from radsynth.demo.phantom import (
    Storage,
    build_scene,
    encode_image,
    generate_atlas,
    labelme_document,
    mm_per_pixel,
    render_phantom,
    sample_params,
)

SETTINGS = dict(
    seed=5,
    negative_fraction=0.25,
    sixteen_bit_fraction=0.15,
    rgb_fraction=0.15,
    min_side=96,
    max_side=160,
    progress=False,
)
N_IMAGES = 40
LABELME_KEYS = ["version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"]


def make_atlas(root: Path, n_images: int, **overrides) -> tuple[Path, pd.DataFrame]:
    settings = {**SETTINGS, **overrides}
    generate_atlas(root, root / "truth.csv", n_images=n_images, **settings)
    return root, pd.read_csv(
        root / "truth.csv",
        dtype={"stem": str, "polygon_labels": str, "duplicate_label": str},
        keep_default_na=False,
    )


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    return make_atlas(tmp_path_factory.mktemp("atlas"), N_IMAGES)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def as_grey(path: Path, value_max: int) -> np.ndarray:
    """A stored film back in [0, 1], whatever mode it was written in."""
    with Image.open(path) as image:
        array = np.asarray(image).astype(np.float64)
    return (array[..., 0] if array.ndim == 3 else array) / value_max


def test_same_seed_gives_byte_identical_files(atlas, tmp_path):
    root, _ = atlas
    again, _ = make_atlas(tmp_path / "again", N_IMAGES)
    assert files_of(again) == files_of(root)
    other, _ = make_atlas(tmp_path / "other", N_IMAGES, seed=6)
    images = {content for name, content in files_of(root).items() if name.startswith("images/")}
    assert images.isdisjoint(
        content for name, content in files_of(other).items() if name.startswith("images/")
    )


def test_a_smaller_atlas_is_a_prefix_of_a_larger_one(atlas, tmp_path):
    root, truth = atlas
    small, small_truth = make_atlas(tmp_path / "small", 10)
    assert list(small_truth["stem"]) == list(truth["stem"][:10])
    pd.testing.assert_frame_equal(small_truth, truth.iloc[:10])
    small_files = files_of(small)
    small_files.pop("truth.csv")
    small_files.pop("metadata.csv")
    large_files = files_of(root)
    assert small_files == {name: large_files[name] for name in small_files}


def test_stems_are_valid_unique_and_match_the_files(atlas):
    root, truth = atlas
    assert truth["stem"].is_unique and len(truth) == N_IMAGES
    assert all(STEM_PATTERN.match(stem) for stem in truth["stem"])
    assert list(truth["case"]) == list(range(1, N_IMAGES + 1))
    assert [int(stem[4:]) for stem in truth["stem"]] == list(truth["age"])
    assert sorted(p.stem for p in (root / "images").iterdir()) == sorted(truth["stem"])
    assert sorted(p.stem for p in (root / "annotations").iterdir()) == sorted(truth["stem"])
    assert sorted(p.name for p in root.iterdir()) == [
        "annotations",
        "images",
        "metadata.csv",
        "truth.csv",
    ]


def test_metadata_table_gives_each_film_the_spacing_of_a_16_mm_body(atlas):
    """CSXA's sheet layout (Number, Pixel equivalent): 16 mm over the film's body depth in px
    (`unit_px`, rounded to 3 decimals in the truth table)."""
    root, truth = atlas
    spacing = read_pixel_spacing(root / "metadata.csv")
    assert list(spacing) == list(truth["stem"])
    np.testing.assert_allclose(list(spacing.values()), 16.0 / truth["unit_px"], rtol=1e-3)


def test_a_phantoms_spacing_is_16_mm_over_its_measured_body_depth():
    """Hand check on one phantom: the C3-C7 endplates measured between the annotated corners,
    times the spacing, give 16 mm x their depth factor (`body_depths`, about 1) x 0.93. The 0.93:
    the corners are clicked at the middle of rounded corners of radius 0.15 x the body height
    (0.8 depths), which shortens each endplate by 2 x 0.12 x (1 - 1/sqrt 2) = 0.07 depths."""
    rng = np.random.default_rng([21, 0])
    params = sample_params(rng, min_side=96, max_side=144, negative=False)
    keypoints = render_phantom(rng, params).keypoints
    assert mm_per_pixel(params) == 16.0 / params.anatomy.unit
    depths_px = [
        (
            math.dist(keypoints[f"C{level} top left"], keypoints[f"C{level} top right"])
            + math.dist(keypoints[f"C{level} bottom left"], keypoints[f"C{level} bottom right"])
        )
        / 2
        for level in range(3, 8)
    ]
    expected_mm = 16.0 * 0.93 * np.mean(params.anatomy.body_depths[1:])
    assert np.mean(depths_px) * mm_per_pixel(params) == pytest.approx(expected_mm, rel=0.03)


def test_labelme_files_have_csxa_keys_and_all_23_labels(atlas):
    root, truth = atlas
    for row in truth.itertuples():
        document = json.loads((root / "annotations" / f"{row.stem}.json").read_text())
        assert list(document) == LABELME_KEYS
        assert document["imagePath"] == f"{row.stem}.png" and document["imageData"] is None
        assert (document["imageWidth"], document["imageHeight"]) == (row.width, row.height)
        for shape in document["shapes"]:
            assert list(shape) == ["label", "points", "group_id", "shape_type", "flags"]
            assert shape["group_id"] is None and shape["flags"] == {}
            assert len(shape["points"]) == 1 and len(shape["points"][0]) == 2
            x, y = shape["points"][0]
            assert 0 <= x < row.width and 0 <= y < row.height, (row.stem, shape)
        assert set(shape["label"] for shape in document["shapes"]) == set(KEYPOINT_LABELS)


def test_quirks_polygons_and_exactly_one_repeated_label(atlas):
    root, truth = atlas
    repeated, polygons = {}, {}
    for stem in truth["stem"]:
        shapes = json.loads((root / "annotations" / f"{stem}.json").read_text())["shapes"]
        counts = Counter(shape["label"] for shape in shapes)
        repeated.update((stem, label) for label, n in counts.items() if n > 1)
        polygons[stem] = ";".join(s["label"] for s in shapes if s["shape_type"] == "polygon")
        assert {s["shape_type"] for s in shapes} <= {"point", "polygon"}
    assert dict(zip(truth["stem"], truth["polygon_labels"])) == polygons
    assert any(polygons.values())
    assert len(repeated) == 1
    ((stem, label),) = repeated.items()
    assert truth.set_index("stem").loc[stem, "duplicate_label"] == label
    shapes = json.loads((root / "annotations" / f"{stem}.json").read_text())["shapes"]
    first, second = (np.array(s["points"][0]) for s in shapes if s["label"] == label)
    unit = truth.set_index("stem").loc[stem, "unit_px"]
    assert 0 < np.linalg.norm(first - second) < 0.15 * unit


def test_truth_matches_the_stored_pngs(atlas):
    root, truth = atlas
    for row in truth.itertuples():
        with Image.open(root / "images" / f"{row.stem}.png") as image:
            assert (image.mode, image.size) == (row.mode, (row.width, row.height))
            array = np.asarray(image)
        assert row.bit_depth == (16 if row.mode == "I;16" else 8)
        assert array.max() <= row.value_max
        if row.mode == "I;16":
            assert array.max() > (255 if row.value_max == 4095 else 4095)
        if row.mode in ("RGB", "RGBA"):
            assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
        if row.mode in ("RGBA", "LA"):
            assert (array[..., -1] == 255).all()
    assert set(truth["mode"]) >= {"L", "I;16", "RGB"}
    assert set(truth["value_max"][truth["mode"] == "I;16"]) == {4095, 65535}


def test_negatives_invert_spine_versus_background(atlas):
    root, truth = atlas
    for row in truth.itertuples():
        grey = as_grey(root / "images" / f"{row.stem}.png", row.value_max)
        shapes = json.loads((root / "annotations" / f"{row.stem}.json").read_text())["shapes"]
        points = np.array([s["points"][0] for s in shapes])
        (x0, y0), (x1, y1) = points.min(axis=0).astype(int), points.max(axis=0).astype(int)
        spine_brighter = grey[y0:y1, x0:x1].mean() > np.median(grey)
        assert spine_brighter == (row.negative == 0), row.stem


def test_fractions_are_honoured_in_every_prefix(atlas):
    _, truth = atlas
    for n in (10, 20, N_IMAGES):
        head = truth.iloc[:n]
        assert abs(head["negative"].sum() - 0.25 * n) <= 3
        assert abs((head["bit_depth"] == 16).sum() - 0.15 * n) <= 3
        assert abs(head["mode"].isin(["RGB", "RGBA", "LA"]).sum() - 0.15 * n) <= 3
    assert set(truth["facing"]) == {"left", "right"}
    assert set(truth["curvature"]) <= set(phantom.CURVATURES)


def test_sizes_stay_within_bounds_and_films_are_not_wide(atlas):
    _, truth = atlas
    assert truth["width"].between(96, 160).all() and truth["height"].between(96, 160).all()
    assert (truth["height"] >= 0.95 * truth["width"] - 1).all()
    assert truth["width"].nunique() > 10


def params_for(index: int, **changes) -> phantom.PhantomParams:
    params = sample_params(
        np.random.default_rng([11, index]), min_side=128, max_side=192, negative=False
    )
    return dataclasses.replace(params, **changes)


@pytest.mark.parametrize("index", range(6))
def test_keypoints_lie_on_the_film_and_left_is_smaller_x(index):
    params = params_for(index)
    keypoints = build_scene(params).keypoints
    assert list(keypoints) == list(KEYPOINT_LABELS)
    for label, (x, y) in keypoints.items():
        assert 0 <= x < params.width and 0 <= y < params.height, label
        if label.endswith("left"):
            assert x < keypoints[label.replace("left", "right")][0], label
    tops = [keypoints[f"C{level} top left"][1] for level in range(3, 8)]
    assert tops == sorted(tops) and keypoints["C2 centroid"][1] < tops[0]


@pytest.mark.parametrize("facing, sign", [("right", 1), ("left", -1)])
def test_the_airway_lies_on_the_side_the_patient_faces(facing, sign):
    scene = build_scene(params_for(1, facing=facing, rotation_deg=0.0))
    airway_x = scene.airway[0].points[:, 0].mean()
    spine_x = np.mean([scene.keypoints[f"C4 {c}"][0] for c in ("top left", "top right")])
    assert sign * (airway_x - spine_x) > 0


def test_mirroring_swaps_left_and_right_keypoints():
    right = build_scene(params_for(2, facing="right")).keypoints
    left = build_scene(params_for(2, facing="left")).keypoints
    width = params_for(2).width
    for label, (x, y) in right.items():
        twin = label.replace("left", "#").replace("right", "left").replace("#", "right")
        assert left[twin] == pytest.approx((width - x, y), abs=1e-9)


@pytest.mark.parametrize(
    "curvature, cobb, sign", [("lordotic", -30.0, 1), ("straight", 0.0, 0), ("kyphotic", 25.0, -1)]
)
def test_curvature_bends_the_mid_column_anterior_or_posterior(curvature, cobb, sign):
    params = params_for(3, facing="right", rotation_deg=0.0, curvature=curvature)
    params = dataclasses.replace(params, anatomy=dataclasses.replace(params.anatomy, cobb_deg=cobb))
    keypoints = build_scene(params).keypoints
    top, bottom = np.array(keypoints["C2 bottom right"]), np.array(keypoints["C7 bottom right"])
    middle = np.array(keypoints["C4 bottom right"])
    chord = (bottom - top) / np.linalg.norm(bottom - top)
    offset = middle - top
    anterior_offset = chord[1] * offset[0] - chord[0] * offset[1]  # facing right: anterior is +x
    unit = params.anatomy.unit
    if sign == 0:
        assert abs(anterior_offset) < 0.1 * unit
    else:
        assert sign * anterior_offset > 0.15 * unit


def test_render_is_a_float_film_with_dark_air_on_positives():
    params = params_for(4)
    film = render_phantom(np.random.default_rng(0), params).image
    negative = render_phantom(
        np.random.default_rng(0), dataclasses.replace(params, negative=True)
    ).image
    assert film.dtype == np.float32 and film.shape == (params.height, params.width)
    assert film.min() >= 0.0 and film.max() <= 1.0
    np.testing.assert_allclose(negative, 1.0 - film, atol=1e-6)
    assert np.percentile(film, 2) < 0.1 and 0.2 < np.median(film) < 0.8


@pytest.mark.parametrize(
    "storage, expected_mode, codes",
    [
        (Storage("L", 255), "L", [0, 128, 255]),
        (Storage("I;16", 4095), "I;16", [0, 2048, 4095]),
        (Storage("I;16", 65535), "I;16", [0, 32768, 65535]),
        (Storage("RGB", 255), "RGB", [0, 128, 255]),
        (Storage("RGBA", 255), "RGBA", [0, 128, 255]),
        (Storage("LA", 255), "LA", [0, 128, 255]),
    ],
)
def test_encode_image_writes_the_requested_mode_and_codes(storage, expected_mode, codes):
    film = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    image = encode_image(film, storage)
    array = np.asarray(image)
    assert image.mode == expected_mode
    assert list((array[..., 0] if array.ndim == 3 else array).ravel()) == codes


def test_labelme_document_marks_polygons_and_repeats_one_label():
    keypoints = {label: (float(i), float(i) + 0.5) for i, label in enumerate(KEYPOINT_LABELS)}
    document = labelme_document(
        "0001035", keypoints, 300, 400, ["C3 top left"], ("C5 bottom right", (9.0, 9.0))
    )
    shapes = document["shapes"]
    assert len(shapes) == 24
    assert [s["label"] for s in shapes if s["shape_type"] == "polygon"] == ["C3 top left"]
    repeat = [s["points"] for s in shapes if s["label"] == "C5 bottom right"]
    assert repeat == [
        [[keypoints["C5 bottom right"][0], keypoints["C5 bottom right"][1]]],
        [[9.0, 9.0]],
    ]
    assert (document["imageWidth"], document["imageHeight"], document["imagePath"]) == (
        300,
        400,
        "0001035.png",
    )


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(n_images=0), "data.demo.n_images"),
        (dict(negative_fraction=1.5), "data.demo.negative_fraction"),
        (dict(sixteen_bit_fraction=0.6, rgb_fraction=0.6), "data.demo.rgb_fraction: sixteen_bit"),
        (dict(min_side=200, max_side=100), "data.demo.max_side: must be at least min_side 200"),
    ],
)
def test_bad_settings_name_the_config_key(tmp_path, change, key):
    settings = {**SETTINGS, "n_images": 5, **change}
    with pytest.raises(ValueError, match=key):
        generate_atlas(tmp_path / "atlas", tmp_path / "truth.csv", **settings)


def test_refuses_to_write_into_a_non_empty_atlas(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "stale.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="images"):
        generate_atlas(tmp_path, tmp_path / "truth.csv", n_images=4, **SETTINGS)


def test_a_failure_part_way_leaves_no_partial_output(tmp_path, monkeypatch):
    real = phantom.build_atlas_item

    def failing(settings, index):
        if index == 3:
            raise RuntimeError("killed")
        return real(settings, index)

    monkeypatch.setattr(phantom, "build_atlas_item", failing)
    with pytest.raises(RuntimeError, match="killed"):
        generate_atlas(tmp_path, tmp_path / "truth.csv", n_images=6, **SETTINGS)
    assert list(tmp_path.iterdir()) == []
