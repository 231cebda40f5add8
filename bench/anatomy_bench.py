"""Landmark model throughput on the CPU: training and inference images/s at the demo's 32 px and
the paper's 256 px, and what that projects for the paper's scale.

Measured in this one process with the settings recommended for each preset (the network of
`radsynth.anatomy.network`, soft-argmax heatmap loss, seeded augmentation), on uniform-noise
images (the cost does not depend on the pixels). Training figures time whole optimizer steps
through the real loss (`radsynth.anatomy.training`), inference figures `predict_landmarks`. Each
figure is the median of REPEATS timings, after one warm-up, to damp the noise of shared cores.
Projections: landmarking the paper's 27,000 generated images (Table S1), and a training run of
PAPER_TRAINING_STEPS steps of batch PAPER_BATCH on its 4,219-image train subset.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_common import torch_threads

from radsynth.anatomy.augment import flip_permutation
from radsynth.anatomy.landmark_model import new_landmark_model, predict_landmarks, to_network_input
from radsynth.anatomy.training import step_loss
from radsynth.core.settings.anatomy import LandmarkArchitecture, LandmarkTraining
from radsynth.data.csxa import KEYPOINT_LABELS

#: One intra-op thread, as the training bench: two on the shared 2 cores ran erratically slower.
TORCH_THREADS = 1
REPEATS = 3
#: Table S1 of the paper: 27,000 generated images.
PAPER_IMAGES = 27_000
PAPER_BATCH = 16
PAPER_TRAINING_STEPS = 20_000

PRESETS = {
    "demo 32 px": LandmarkArchitecture(
        image_size=32,
        stem_stride=4,
        trunk_levels=3,
        fpn_channels=64,
        head_channels=64,
        heatmap_sigma_px=2.0,
    ),
    "paper 256 px": LandmarkArchitecture(
        image_size=256,
        stem_stride=4,
        trunk_levels=4,
        fpn_channels=128,
        head_channels=128,
        heatmap_sigma_px=4.0,
    ),
}
#: Batches timed per preset: (training batch, inference batch).
BATCHES = {"demo 32 px": (16, 64), "paper 256 px": (PAPER_BATCH, 16)}


def _median_seconds(work: Callable[[], None]) -> float:
    work()
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _training_step(architecture: LandmarkArchitecture, batch: int) -> Callable[[], None]:
    """One optimizer step of the real loss (augmentation, soft-argmax, divergence) and Adam."""
    training = LandmarkTraining(
        seed=0,
        batch_size=batch,
        learning_rate=1e-3,
        max_steps=1,
        eval_every=1,
        patience=1,
        val_fraction=0.1,
        state_every=1,
        flip=True,
        max_rotation_deg=8.0,
        max_scale_change=0.1,
        max_shift_fraction=0.08,
    )
    torch.manual_seed(0)
    model = new_landmark_model(architecture, KEYPOINT_LABELS)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=training.learning_rate)
    side = architecture.image_size
    rng = np.random.default_rng(0)
    images = to_network_input(rng.integers(0, 256, (batch, side, side), dtype=np.uint8))
    keypoints = torch.as_tensor(rng.uniform(0, side - 1, (batch, len(KEYPOINT_LABELS), 2)))
    permutation = flip_permutation(KEYPOINT_LABELS)
    generator = torch.Generator().manual_seed(0)
    model.net.train()

    def step() -> None:
        loss = step_loss(model, images, keypoints.float(), generator, training, permutation)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _inference(architecture: LandmarkArchitecture, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = new_landmark_model(architecture, KEYPOINT_LABELS)
    side = architecture.image_size
    images = np.random.default_rng(1).integers(0, 256, (batch, side, side), dtype=np.uint8)
    return lambda: predict_landmarks(model, images, batch_size=batch)


def _hours(n_images: float, per_second: float) -> str:
    return f"{n_images / per_second / 3600:.1f} h"


def preset_lines(name: str, architecture: LandmarkArchitecture) -> list[str]:
    train_batch, infer_batch = BATCHES[name]
    train_rate = train_batch / _median_seconds(_training_step(architecture, train_batch))
    infer_rate = infer_batch / _median_seconds(_inference(architecture, infer_batch))
    lines = [
        f"landmark model, {name}: training {train_rate:.1f} images/s (batch {train_batch}), "
        f"inference {infer_rate:.1f} images/s (batch {infer_batch}); inference/training "
        f"{infer_rate / train_rate:.1f}x"
    ]
    if architecture.image_size == 256:
        lines.append(
            f"  projection on this CPU at {name}: landmarking the paper's {PAPER_IMAGES:,} "
            f"generated images {_hours(PAPER_IMAGES, infer_rate)}; training "
            f"{PAPER_TRAINING_STEPS:,} steps of {PAPER_BATCH} "
            f"{_hours(PAPER_TRAINING_STEPS * PAPER_BATCH, train_rate)}"
        )
    return lines


def run() -> list[str]:
    with torch_threads(TORCH_THREADS):
        lines = [f"anatomy bench with {TORCH_THREADS} torch thread, median of {REPEATS} timings"]
        for name, architecture in PRESETS.items():
            lines += preset_lines(name, architecture)
        return lines


if __name__ == "__main__":
    print("\n".join(run()))
