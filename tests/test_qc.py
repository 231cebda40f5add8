"""Tests of radsynth.data.qc: the preprocessing QC figure, its caption, metadata and legibility
caps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from preprocess_fixtures import DETECTION, PROVENANCE, labelme, spine_like, write_json, write_png

from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.preprocess import preprocess_atlas
from radsynth.data.qc import (
    MAX_INVERTED_SHOWN,
    THUMBNAIL_PX,
    caption,
    choose_examples,
    inverted_mosaic,
    mosaic_columns,
    plot_preprocess_qc,
    read_qc_content,
)


def build_atlas(root: Path, n_positive: int, n_negative: int, side: int) -> Path:
    """An atlas of fixtures, the negatives stored inverted, one unreadable file; returns the HDF5
    path."""
    rng = np.random.default_rng(1)
    for number in range(n_positive + n_negative):
        image = spine_like(rng, side + number % 7, side - 8 + number % 5)
        name = f"{number:04d}0{number % 90 + 10:02d}"
        write_png(root / "png" / f"{name}.png", image if number < n_positive else 1.0 - image)
        height, width = image.shape
        corners = {
            label: (width * (0.4 + 0.01 * k), height * (0.1 + 0.035 * k))
            for k, label in enumerate(KEYPOINT_LABELS)
        }
        write_json(root / "json" / f"{name}.json", labelme(corners, height, width))
    (root / "png" / "9999001.png").write_bytes(b"")
    preprocess_atlas(
        root / "png",
        root / "json",
        root / "atlas.h5",
        root / "rejects.csv",
        size=48,
        resize_mode="resize",
        max_rejected_fraction=0.5,
        detection=DETECTION,
        metadata_table=None,
        provenance=PROVENANCE,
        progress=False,
    )
    return root / "atlas.h5"


@pytest.fixture(scope="module")
def small_atlas(tmp_path_factory) -> Path:
    return build_atlas(tmp_path_factory.mktemp("qc"), n_positive=9, n_negative=3, side=72)


def test_content_counts_examples_and_inverted(small_atlas):
    content = read_qc_content(small_atlas, n_examples=5, seed=3)
    assert (content.n_images, content.n_inverted, content.n_rejected) == (12, 3, 1)
    assert content.inverted_names == ["0009019.png", "0010020.png", "0011021.png"]
    assert content.example_names == [
        f"{index:04d}0{index % 90 + 10:02d}.png" for index in choose_examples(12, 5, 3)
    ]
    assert content.examples.shape == (5, 48, 48) and content.inverted_thumbnails.shape == (
        3,
        THUMBNAIL_PX,
        THUMBNAIL_PX,
    )
    assert caption(content) == "12 images, 3 inverted, 1 rejected  |  config abc123  code deadbeef"


def test_figure_png_carries_provenance_and_is_written_atomically(small_atlas, tmp_path):
    out = tmp_path / "qc" / "preprocess_qc.png"
    plot_preprocess_qc(small_atlas, out, n_examples=8, seed=0)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width == 1800
        assert json.loads(png.text["provenance"]) == PROVENANCE
        assert png.text["provenance_config_hash"] == "abc123"
    assert [path.name for path in out.parent.iterdir()] == ["preprocess_qc.png"]
    plot_preprocess_qc(small_atlas, Path("/tmp/qc_example.png"), n_examples=8, seed=0)


def test_examples_are_capped_by_the_atlas_size(small_atlas):
    assert read_qc_content(small_atlas, n_examples=50, seed=0).examples.shape[0] == 12
    np.testing.assert_array_equal(choose_examples(12, 4, 9), choose_examples(12, 4, 9))


def test_mosaic_places_each_thumbnail_under_its_label_band():
    thumbnails = np.stack(
        [np.full((THUMBNAIL_PX, THUMBNAIL_PX), value, np.uint8) for value in (10, 20, 30)]
    )
    mosaic, label_px = inverted_mosaic(thumbnails, columns=2)
    cell = THUMBNAIL_PX + label_px
    assert mosaic.shape == (2 * cell, 2 * cell)
    assert (
        mosaic[label_px + 1, label_px // 2 + 1] == 10
        and mosaic[label_px + 1, cell + label_px // 2 + 1] == 20
    )
    assert mosaic[cell + label_px + 1, label_px // 2 + 1] == 30 and (mosaic[:label_px] == 255).all()


def test_many_inverted_images_stay_legible_up_to_the_cap(tmp_path):
    assert (mosaic_columns(3), mosaic_columns(100), mosaic_columns(600), mosaic_columns(5000)) == (
        8,
        10,
        20,
        20,
    )
    atlas = build_atlas(tmp_path, n_positive=2, n_negative=MAX_INVERTED_SHOWN + 5, side=40)
    content = read_qc_content(atlas, n_examples=4, seed=0)
    assert (
        content.n_inverted == MAX_INVERTED_SHOWN + 5
        and len(content.inverted_names) == MAX_INVERTED_SHOWN
    )
    assert caption(content).startswith(
        f"607 images, 605 inverted ({MAX_INVERTED_SHOWN} shown), 1 rejected"
    )
    out = tmp_path / "many.png"
    plot_preprocess_qc(atlas, out, n_examples=4, seed=0)
    with Image.open(out) as png:
        assert png.width == 1800 and png.height < 5000
