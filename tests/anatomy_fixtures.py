"""Shared test data of the anatomy tests: demo phantoms at the 32 px atlas size with their truth,
and the landmark model settings recommended for that size."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from radsynth.anatomy.training import TrainingOutcome, train_landmark_model
from radsynth.core.settings.anatomy import LandmarkArchitecture, LandmarkTraining
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.resize import map_keypoints, map_spacing, resize_image
from radsynth.demo.phantom import mm_per_pixel, render_phantom, sample_params

PROVENANCE = {"radsynth_version": "test", "code_revision": "test", "config_hash": "abc"}
#: Images per prediction (anatomy.batch_size of both presets).
INFERENCE_BATCH = 64

#: The demo-size network (the settings recommended for a 32 px atlas).
ARCHITECTURE = LandmarkArchitecture(
    image_size=32,
    stem_stride=4,
    trunk_levels=3,
    fpn_channels=64,
    head_channels=64,
    heatmap_sigma_px=2.0,
)


def training_settings(**overrides: object) -> LandmarkTraining:
    values = dict(
        seed=3,
        batch_size=16,
        learning_rate=2e-3,
        max_steps=120,
        eval_every=20,
        patience=3,
        val_fraction=0.15,
        state_every=50,
        flip=True,
        max_rotation_deg=8.0,
        max_scale_change=0.1,
        max_shift_fraction=0.08,
    )
    return LandmarkTraining(**{**values, **overrides})


@cache
def phantoms(first: int, n: int) -> dict[str, np.ndarray]:
    """n demo phantoms resized to the 32 px atlas frame as preprocessing does ("resize"), with
    their keypoints, facing, truth and spacing (the generator's, in mm per atlas pixel).
    Cached: callers must not modify the arrays."""
    images, keypoints, facing, cobb, spacing = [], [], [], [], []
    for index in range(first, first + n):
        rng = np.random.default_rng([21, index])
        params = sample_params(rng, min_side=96, max_side=144, negative=False)
        phantom = render_phantom(rng, params)
        resized, affine = resize_image(phantom.image, 32, "resize")
        images.append(np.round(np.clip(resized, 0, 1) * 255).astype(np.uint8))
        points = np.array([phantom.keypoints[label] for label in KEYPOINT_LABELS])
        keypoints.append(map_keypoints(points, affine))
        facing.append(params.facing)
        cobb.append(params.anatomy.cobb_deg)
        spacing.append(map_spacing(mm_per_pixel(params), affine))
    return {
        "images": np.stack(images),
        "keypoints": np.stack(keypoints).astype(np.float32),
        "facing": np.array(facing),
        "cobb": np.array(cobb),
        "spacing": np.array(spacing),
    }


@cache
def demo_teacher(folder: Path) -> tuple[Path, TrainingOutcome]:
    """The landmark model trained once per test session (in `folder`) on phantoms 0-119 with the
    demo-size settings: one intra-op thread, so its weights are the same in every process."""
    train = phantoms(0, 120)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = train_landmark_model(
            train["images"],
            train["keypoints"],
            KEYPOINT_LABELS,
            model_path=folder / "teacher.safetensors",
            work_dir=folder / "teacher_work",
            architecture=ARCHITECTURE,
            training=training_settings(),
            inference_batch_size=INFERENCE_BATCH,
            provenance=PROVENANCE,
        )
    finally:
        torch.set_num_threads(before)
    return folder / "teacher.safetensors", outcome
