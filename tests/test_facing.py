"""Tests of radsynth.sample.facing on a small phantom atlas: the anatomical labelling rule against
the
phantom truth, the classifier's accuracy on held-out phantoms, determinism, the flip to
left-facing, the classifier file and the whole stage with a split manifest."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from radsynth.core.config import ConfigError
from radsynth.core.settings.sample import Architecture, LabelRule
from radsynth.core.tables import write_table
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.negatives import PAPER_NEGATIVE_DETECTION
from radsynth.data.preprocess import preprocess_atlas
from radsynth.data.split import split_manifest
from radsynth.demo.phantom import generate_atlas
from radsynth.sample.facing import (
    FacingClassifier,
    accuracy,
    facing_labels_from_anatomy,
    load_classifier,
    mirror_accuracy,
    predict_facing,
    save_classifier,
    settings_from_config,
    settings_to_config,
    standardize_left,
    train_facing_classifier,
    train_from_atlas,
)

N_IMAGES, N_FIT, SIZE = 200, 150, 64
RULE = LabelRule(band_start=0.25, band_stop=1.5, min_contrast=0.03, min_levels=3)
ARCHITECTURE = Architecture(channels=(8, 16, 32, 64), analysis_size=32)
CONFIG = {
    "label_rule": {"band_start": 0.25, "band_stop": 1.5, "min_contrast": 0.03, "min_levels": 3},
    "classifier": {"channels": [8, 16, 32, 64], "analysis_size": 32},
    "training": {"seed": 3, "steps": 60, "batch_size": 32, "lr": 3e-3, "holdout_fraction": 0.2},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """200 phantoms at 128 px, 10% negatives, preprocessed to 64 px, with their true facing."""
    root = tmp_path_factory.mktemp("facing_atlas")
    generate_atlas(
        root / "raw",
        root / "truth.csv",
        n_images=N_IMAGES,
        seed=11,
        negative_fraction=0.1,
        sixteen_bit_fraction=0.03,
        rgb_fraction=0.03,
        min_side=128,
        max_side=128,
        progress=False,
    )
    preprocess_atlas(
        root / "raw" / "images",
        root / "raw" / "annotations",
        root / "atlas.h5",
        root / "rejects.csv",
        size=SIZE,
        resize_mode="resize",
        max_rejected_fraction=0.0,
        detection=PAPER_NEGATIVE_DETECTION,
        metadata_table=None,
        provenance={},
        progress=False,
    )
    with h5py.File(root / "atlas.h5", "r") as h5:
        images, keypoints = h5["images"][()], h5["keypoints"][()]
        names = list(h5["meta/source_name"].asstr()[()])
    truth = pd.read_csv(root / "truth.csv", dtype={"stem": str}).set_index("stem")
    facing = truth.loc[[name.removesuffix(".png") for name in names], "facing"].to_numpy()
    assert set(facing) == {"left", "right"}
    return {"root": root, "images": images, "keypoints": keypoints, "names": names, "truth": facing}


@pytest.fixture(scope="module")
def classifier(atlas: dict) -> FacingClassifier:
    """Trained on the first 150 images with rule labels (never the truth)."""
    torch.set_num_threads(1)
    labels = facing_labels_from_anatomy(atlas["images"][:N_FIT], atlas["keypoints"][:N_FIT], RULE)
    assert (labels.facing != "").all()
    return train_facing_classifier(
        atlas["images"][:N_FIT],
        labels.facing,
        architecture=ARCHITECTURE,
        seed=7,
        steps=200,
        batch_size=32,
        lr=3e-3,
        progress=False,
    )


def mirror_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints of the mirrored images: x -> width - 1 - x, and each left label swapped with its
    right."""
    mirrored = keypoints.copy()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    swap = [
        KEYPOINT_LABELS.index(
            label.replace("left", "#").replace("right", "left").replace("#", "right")
        )
        for label in KEYPOINT_LABELS
    ]
    return mirrored[:, swap]


def test_anatomical_rule_agrees_with_phantom_truth(atlas: dict) -> None:
    labels = facing_labels_from_anatomy(atlas["images"], atlas["keypoints"], RULE)
    agreement = accuracy(labels.facing, atlas["truth"])
    print(
        f"\nanatomical rule vs truth: {agreement:.4f} of {N_IMAGES}; min |contrast| "
        f"{np.abs(labels.contrast).min():.3f}"
    )
    assert (labels.n_levels == 5).all()
    assert agreement == 1.0
    assert np.abs(labels.contrast).min() > 5 * RULE.min_contrast  # a wide margin, not a coin toss


def test_rule_is_mirror_consistent(atlas: dict) -> None:
    images, keypoints = atlas["images"][:20], atlas["keypoints"][:20]
    labels = facing_labels_from_anatomy(images, keypoints, RULE)
    mirrored = facing_labels_from_anatomy(
        images[:, :, ::-1], mirror_keypoints(keypoints, SIZE), RULE
    )
    assert (mirrored.facing == np.where(labels.facing == "left", "right", "left")).all()
    np.testing.assert_allclose(mirrored.contrast, -labels.contrast, atol=0.02)


def test_missing_keypoints_and_flat_images_stay_unlabelled(atlas: dict) -> None:
    images, keypoints = atlas["images"][:4].copy(), atlas["keypoints"][:4].copy()
    keypoints[0] = np.nan
    for level in ("C3", "C5", "C7"):  # two levels left, below min_levels = 3
        keypoints[1, KEYPOINT_LABELS.index(f"{level} top left")] = np.nan
    keypoints[2, KEYPOINT_LABELS.index("C4 bottom right")] = (
        np.nan
    )  # four levels left: still labelled
    images[3] = 90  # no contrast between the sides at all
    labels = facing_labels_from_anatomy(images, keypoints, RULE)
    assert labels.facing.tolist()[:3] == ["", "", atlas["truth"][2]]
    assert labels.n_levels.tolist() == [0, 2, 4, 5]
    assert labels.too_few_levels.tolist() == [True, True, False, False]
    assert labels.weak_contrast.tolist() == [False, False, False, True]
    assert labels.contrast[3] == 0.0


def test_classifier_accuracy_on_held_out_phantoms(
    atlas: dict, classifier: FacingClassifier
) -> None:
    held_out = atlas["images"][N_FIT:]
    truth = atlas["truth"][N_FIT:]
    scores = mirror_accuracy(classifier, held_out, truth, batch_size=64)
    print(
        f"\nheld-out accuracy vs truth ({N_IMAGES - N_FIT} images + mirrors): {scores}; "
        f"training accuracy {classifier.metadata['training_accuracy']:.4f}"
    )
    assert scores["both"] >= 0.98
    assert classifier.metadata["training_accuracy"] >= 0.98


def test_prediction_is_antisymmetric_under_mirroring(
    atlas: dict, classifier: FacingClassifier
) -> None:
    images = atlas["images"][N_FIT:]
    facing, p_left = predict_facing(classifier, images, batch_size=16)
    mirror_facing, mirror_p_left = predict_facing(classifier, images[:, :, ::-1], batch_size=7)
    np.testing.assert_allclose(mirror_p_left, 1.0 - p_left, atol=1e-6)
    assert (mirror_facing != facing).all()
    assert ((p_left >= 0.5) == (facing == "left")).all()


def test_training_is_deterministic_for_a_seed(atlas: dict) -> None:
    images = atlas["images"][:60]
    labels = facing_labels_from_anatomy(images, atlas["keypoints"][:60], RULE).facing

    def weights(seed: int) -> dict[str, torch.Tensor]:
        trained = train_facing_classifier(
            images,
            labels,
            architecture=ARCHITECTURE,
            seed=seed,
            steps=15,
            batch_size=8,
            lr=3e-3,
            progress=False,
        )
        return trained.net.state_dict()

    first, again, other = weights(5), weights(5), weights(6)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])


def test_standardize_left_flips_exactly_the_right_facing() -> None:
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    out, flipped = standardize_left(images, np.array(["right", "left", "right"]))
    assert flipped.tolist() == [True, False, True]
    assert out[0].tolist() == [[3, 2, 1, 0], [7, 6, 5, 4]]
    assert np.array_equal(out[1], images[1])
    assert np.array_equal(out[2], images[2, :, ::-1])
    assert images[0, 0, 0] == 0  # the input is left alone
    with pytest.raises(ValueError, match="'left' or 'right'"):
        standardize_left(images, np.array(["left", "", "right"]))


def test_standardized_images_are_predicted_left(atlas: dict, classifier: FacingClassifier) -> None:
    images = atlas["images"][N_FIT:]
    facing, _ = predict_facing(classifier, images, batch_size=32)
    standardized, flipped = standardize_left(images, facing)
    assert flipped.sum() == (facing == "right").sum() > 0
    assert (predict_facing(classifier, standardized, batch_size=32)[0] == "left").all()


def test_save_load_round_trip_and_size_check(
    atlas: dict, classifier: FacingClassifier, tmp_path: Path
) -> None:
    path = tmp_path / "models" / "facing.safetensors"
    save_classifier(classifier, path)
    loaded = load_classifier(path, image_size=SIZE)
    assert loaded.architecture == ARCHITECTURE and loaded.metadata == classifier.metadata
    images = atlas["images"][N_FIT:]
    np.testing.assert_array_equal(
        predict_facing(loaded, images, batch_size=50)[1],
        predict_facing(classifier, images, batch_size=50)[1],
    )
    assert [p.name for p in path.parent.iterdir()] == ["facing.safetensors"]  # no temp file left
    with pytest.raises(ValueError, match=r"facing\.safetensors.*64x64.*256x256"):
        load_classifier(path, image_size=256)
    with pytest.raises(ValueError, match="uint8 images"):
        predict_facing(loaded, np.zeros((2, 32, 32), dtype=np.uint8), batch_size=2)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_classifier(tmp_path / "junk.safetensors", image_size=SIZE)


def test_train_from_atlas_uses_the_train_subset_and_counts_exclusions(
    atlas: dict, tmp_path: Path
) -> None:
    atlas_h5 = tmp_path / "atlas.h5"
    atlas_h5.write_bytes((atlas["root"] / "atlas.h5").read_bytes())
    manifest = split_manifest(atlas["names"], val_fraction=0.15, seed=1)
    train_rows = manifest.index[manifest["subset"] == "train"].to_numpy()
    blanked = train_rows[[0, 5]]
    with h5py.File(atlas_h5, "r+") as h5:
        keypoints = h5["keypoints"][()]
        keypoints[blanked] = np.nan
        h5["keypoints"][...] = keypoints
    write_table(manifest, tmp_path / "split.csv", provenance={"config_hash": "x"})
    settings = settings_from_config(CONFIG)
    report = train_from_atlas(
        atlas_h5,
        tmp_path / "split.csv",
        tmp_path / "facing.safetensors",
        tmp_path / "facing.json",
        settings=settings,
        provenance={"config_hash": "x"},
        progress=False,
    )
    assert report == json.loads((tmp_path / "facing.json").read_text())
    assert report["settings"] == settings_to_config(settings) == CONFIG
    assert (
        report["n_atlas_images"] == N_IMAGES
        and report["n_training_subset"] == len(train_rows) == 170
    )
    assert report["n_unlabelled_too_few_levels"] == 2 and report["n_unlabelled_weak_contrast"] == 0
    assert report["unlabelled_too_few_levels"] == [atlas["names"][i] for i in blanked]
    assert report["n_labelled"] == 168 == report["n_left"] + report["n_right"]
    assert report["n_holdout"] == round(0.2 * 168) and report["n_fit"] == 168 - report["n_holdout"]
    assert report["holdout_accuracy"]["both"] >= 0.9
    loaded = load_classifier(tmp_path / "facing.safetensors", image_size=SIZE)
    assert loaded.metadata["holdout_accuracy"] == report["holdout_accuracy"]
    assert loaded.metadata["provenance"] == {"config_hash": "x"}


def test_bad_inputs_name_their_source(atlas: dict, tmp_path: Path) -> None:
    manifest = split_manifest(atlas["names"], val_fraction=0.15, seed=1)
    manifest.loc[3, "source_name"] = "9999999.png"
    write_table(manifest, tmp_path / "split.csv", provenance={})
    with pytest.raises(
        ValueError, match=r"split.csv: data row 4: source_name .9999999.png. differs"
    ):
        train_from_atlas(
            atlas["root"] / "atlas.h5",
            tmp_path / "split.csv",
            tmp_path / "m.safetensors",
            tmp_path / "r.json",
            settings=settings_from_config(CONFIG),
            provenance={},
            progress=False,
        )
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(ConfigError, match=r"^facing\.training\.lr: missing key$"):
        settings_from_config(
            {**CONFIG, "training": {k: v for k, v in CONFIG["training"].items() if k != "lr"}}
        )
    with pytest.raises(
        ConfigError, match=r"^facing\.label_rule\.band_stop: must be greater than band_start 1\.0"
    ):
        settings_from_config(
            {**CONFIG, "label_rule": {**CONFIG["label_rule"], "band_start": 1.0, "band_stop": 0.5}}
        )
    with pytest.raises(
        ConfigError, match=r"^facing\.classifier\.analysis_size: 4 halving blocks .*got 8$"
    ):
        settings_from_config(
            {**CONFIG, "classifier": {"channels": [8, 16, 32, 64], "analysis_size": 8}}
        )
    bad_training = {**CONFIG["training"], "steps": 0, "holdout_fraction": 1.0, "lr": "fast"}
    with pytest.raises(ConfigError) as caught:
        settings_from_config(
            {
                **CONFIG,
                "training": bad_training,
                "classifier": {"channels": [8, 0], "analysis_size": 32},
            }
        )
    assert str(caught.value).splitlines() == [
        "facing.classifier.channels[1]: must be greater than 0, got 0",
        "facing.training.steps: must be at least 1, got 0",
        "facing.training.lr: expected a number, got 'fast'",
        "facing.training.holdout_fraction: must be less than 1.0, got 1.0",
    ]
