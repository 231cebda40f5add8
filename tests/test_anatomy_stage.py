"""The anatomy stage's job functions on hand-made atlases: the keypoint check that skips the stage,
the label check, the held-out evaluation's mean-shape figures worked out by hand, and the
utility experiment's refusal of samples of the full run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from anatomy_fixtures import ARCHITECTURE, PROVENANCE, training_settings
from conftest import load_demo_config

from radsynth.anatomy.landmark_export import read_landmark_table
from radsynth.anatomy.landmark_model import new_landmark_model, save_landmark_model
from radsynth.anatomy.stage import (
    evaluate_split_landmark_model,
    record_anatomy_stage,
    record_atlas_keypoints,
    sampled_run,
    train_split_landmark_model,
    utility_students,
)
from radsynth.core.config import ConfigError, check_config, load_settings
from radsynth.core.settings.anatomy import AnatomySettings
from radsynth.core.settings.sample import Architecture
from radsynth.core.tables import read_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.sample.facing import new_classifier, save_classifier

SIDE = ARCHITECTURE.image_size
NETWORK = ARCHITECTURE.model_dump(exclude={"image_size"})


def write_split(path: Path, names: list[str], subsets: list[str]) -> Path:
    pd.DataFrame({"index": range(len(names)), "source_name": names, "subset": subsets}).to_csv(
        path, index=False
    )
    return path


def hand_atlas(path: Path, labels: tuple[str, ...] = KEYPOINT_LABELS) -> list[str]:
    """Eight blank images: train rows 0-5 with every keypoint at (10, 10) (rows 0-2) or (12, 10)
    (rows 3-5), so the mean shape is (11, 10); held-out rows 6 and 7 with every keypoint at
    (14, 14), 5 px (a 3-4-5 triangle) from it. Only row 6 records a spacing: 0.5 mm per pixel."""
    names = [f"{i:07d}.png" for i in range(8)]
    atlas = atlas_from_images(np.zeros((8, SIDE, SIDE), np.uint8), names)
    keypoints = np.empty((8, len(labels), 2), np.float32)
    keypoints[:3], keypoints[3:6], keypoints[6:] = (10, 10), (12, 10), (14, 14)
    spacing = np.full((8, 2), np.nan)
    spacing[6] = 0.5
    write_atlas(
        path, dataclasses.replace(atlas, keypoints=keypoints, labels=labels, mm_per_pixel=spacing)
    )
    return names


def test_an_atlas_without_keypoints_skips_the_stage(tmp_path: Path, caplog) -> None:
    names = [f"{i:07d}.png" for i in range(3)]
    write_atlas(
        tmp_path / "atlas.h5", atlas_from_images(np.zeros((3, SIDE, SIDE), np.uint8), names)
    )
    record = record_atlas_keypoints(
        tmp_path / "atlas.h5", tmp_path / "keypoints.json", provenance=PROVENANCE
    )
    assert record["annotated_images"] == 0 and record["n_images"] == 3
    assert "anatomy stage will be skipped" in caplog.text
    stage = record_anatomy_stage(
        tmp_path / "keypoints.json", [], tmp_path / "stage.json", provenance=PROVENANCE
    )
    assert stage["skipped"] and "atlas.h5 has no keypoints" in stage["reason"]
    assert json.loads((tmp_path / "stage.json").read_text())["skipped"] is True


def test_the_keypoint_record_counts_annotated_images(tmp_path: Path) -> None:
    hand_atlas(tmp_path / "atlas.h5")
    record = record_atlas_keypoints(
        tmp_path / "atlas.h5", tmp_path / "keypoints.json", provenance=PROVENANCE
    )
    assert record["annotated_images"] == 8 and record["labels"] == list(KEYPOINT_LABELS)
    stage = record_anatomy_stage(
        tmp_path / "keypoints.json",
        [Path("b.csv"), Path("a.csv")],
        tmp_path / "stage.json",
        provenance=PROVENANCE,
    )
    assert not stage["skipped"] and stage["outputs"] == ["a.csv", "b.csv"]


def test_keypoints_of_another_label_list_are_an_error_naming_them(tmp_path: Path) -> None:
    labels = tuple(f"point {i}" for i in range(len(KEYPOINT_LABELS)))
    names = hand_atlas(tmp_path / "atlas.h5", labels)
    manifest = write_split(tmp_path / "split.csv", names, ["train"] * 6 + ["val"] * 2)
    with pytest.raises(ValueError, match=r"atlas\.h5: keypoint labels \['point 0'"):
        train_split_landmark_model(
            tmp_path / "atlas.h5",
            manifest,
            model_path=tmp_path / "model.safetensors",
            work_root=tmp_path / "work",
            network=NETWORK,
            training=training_settings(max_steps=2).model_dump(),
            image_size=SIDE,
            inference_batch_size=4,
            provenance=PROVENANCE,
        )
    assert not (tmp_path / "model.safetensors").exists()


def test_held_out_evaluation_scores_the_mean_shape_as_worked_out_by_hand(tmp_path: Path) -> None:
    names = hand_atlas(tmp_path / "atlas.h5")
    manifest = write_split(tmp_path / "split.csv", names, ["train"] * 6 + ["val"] * 2)
    torch.manual_seed(0)
    model_file = tmp_path / "model.safetensors"
    save_landmark_model(
        model_file,
        new_landmark_model(ARCHITECTURE, KEYPOINT_LABELS),
        training={},
        provenance=PROVENANCE,
    )
    save_classifier(
        new_classifier(Architecture(channels=(4, 8), analysis_size=16), image_size=SIDE, seed=3),
        tmp_path / "facing.safetensors",
    )
    out = tmp_path / "evaluation"
    evaluate_split_landmark_model(
        model_file,
        tmp_path / "atlas.h5",
        manifest,
        tmp_path / "facing.safetensors",
        summary_csv=out / "summary.csv",
        per_landmark_csv=out / "per_landmark.csv",
        held_out_csv=out / "held_out.csv",
        curvature_thresholds_deg=(-6.1, 6.4),
        batch_size=4,
        facing_batch_size=4,
        provenance=PROVENANCE,
    )
    summary = read_table(out / "summary.csv").set_index("predictor")
    baseline = summary.loc["mean shape"]
    # 2 images x 23 landmarks, all 5 px off; only row 6 (23 landmarks) in mm: 2.5 mm
    assert baseline["mre_px"] == pytest.approx(5.0)
    assert baseline["mre_mm"] == pytest.approx(2.5)
    assert [baseline[f"sdr_{r}mm"] for r in ("2", "2.5", "3", "4")] == [0.0, 1.0, 1.0, 1.0]
    assert (baseline["n_landmarks"], baseline["n_landmarks_mm"]) == (46, 23)
    assert (baseline["n_images_with_spacing"], baseline["n_images_without_spacing"]) == (1, 1)
    assert np.isfinite(summary.loc["landmark model", "mre_px"])
    per_landmark = read_table(out / "per_landmark.csv")
    assert len(per_landmark) == 2 * len(KEYPOINT_LABELS)
    assert per_landmark.loc[per_landmark["predictor"] == "mean shape", "mre_px"].tolist() == (
        pytest.approx([5.0] * len(KEYPOINT_LABELS))
    )
    held_out = read_landmark_table(out / "held_out.csv")
    assert held_out["image_id"].tolist() == names[6:]


def test_utility_refuses_samples_of_the_full_run(tmp_path: Path) -> None:
    stores = []
    for run in ("split", "full"):
        store = tmp_path / f"{run}.zarr"
        group = zarr.open_group(store, mode="w", zarr_format=3)
        group.attrs["provenance"] = {
            "checkpoint_file": f"results/train/{run}/0123abcd/checkpoints/step600.safetensors"
        }
        stores.append(store)
    assert [sampled_run(store) for store in stores] == ["split", "full"]
    with pytest.raises(ValueError, match="full.zarr: utility needs samples of the 'split' run"):
        utility_students(
            tmp_path / "teacher.safetensors",
            tmp_path / "atlas.h5",
            tmp_path / "split.csv",
            stores,
            tmp_path / "students.csv",
            fractions=[0.5],
            seeds=[0],
            training=training_settings().model_dump(),
            work_root=tmp_path / "work",
            inference_batch_size=4,
            provenance=PROVENANCE,
        )


def test_the_utility_set_name_is_reserved() -> None:
    config = load_demo_config()
    config["sampling"]["sets"]["utility"] = {"n_images": 4, "images_per_shard": 4}
    with pytest.raises(
        ConfigError, match="sampling.sets.utility: the name is taken by the anatomy"
    ):
        check_config(config)


def test_curvature_thresholds_must_be_ordered() -> None:
    anatomy = load_demo_config()["anatomy"]
    anatomy["curvature_thresholds_deg"] = [6.4, -6.1]
    with pytest.raises(ConfigError, match="anatomy.curvature_thresholds_deg"):
        load_settings(AnatomySettings, anatomy, "anatomy")
