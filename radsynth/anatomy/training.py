"""Training the landmark model: seeded, early-stopped on a held-out slice of the train subset, and
resumable after a kill.

Randomness is a function of (seed, step) (`radsynth.core.seeds`): the held-out slice, the
initial weights, each step's batch (epochs of seeded permutations) and its augmentation draws. A
resume state (network, best network so far, Adam, step, validation history) is written atomically
every `state_every` steps through the training run's state files (`save_state`/`read_state`,
which verify each file's hash and the run identity), so a killed job rerun continues where the
last state left it and, on the CPU with the same thread count, ends with the same weights as an
uninterrupted run. Early stopping keeps the weights of the best validation MRE (px) and stops
after `patience` evaluations without a better one.

The network trains on `network_device()` (CUDA when present, else the CPU). The seeded draws stay
on the CPU and the batches move to the device after them, and what is saved (resume states, the
best weights, the model file) is a CPU copy, so a state written on a GPU resumes on a CPU. A
progress bar on stderr (the job's log) counts the steps, with the last loss and validation MRE.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from radsynth.anatomy.augment import augment_batch, flip_permutation
from radsynth.anatomy.heatmaps import gaussian_targets, js_divergence, soft_argmax
from radsynth.anatomy.landmark_model import (
    LandmarkModel,
    new_landmark_model,
    predict_landmarks,
    save_landmark_model,
    to_network_input,
)
from radsynth.anatomy.metrics import landmark_scores
from radsynth.core.device import cpu_state_dict, network_device
from radsynth.core.seeds import (
    STREAM_INIT,
    STREAM_MICRO_BATCH,
    STREAM_VALIDATION,
    derived_seed,
    micro_batch_positions,
    seeded_generator,
)
from radsynth.core.settings.anatomy import LandmarkArchitecture, LandmarkTraining
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.train.checkpoint_io import latest_state_dir, read_state, save_state

log = logging.getLogger(__name__)

MODEL_PART, BEST_PART, OPTIMIZER_PART = "model.safetensors", "best.safetensors", "optimizer.pt"


@dataclass(frozen=True)
class TrainingOutcome:
    """Where training stands: `finished` once stopped early or at max_steps (the model file is
    then written), else it stopped at `until_step` and a rerun continues it."""

    step: int
    finished: bool
    stopped_early: bool
    best_step: int
    best_val_mre_px: float
    history: list[dict[str, float]]  # per evaluation: step, train_loss, val_mre_px


def holdout_slice(n_images: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions (fit, held out) of a seeded partition of the train subset."""
    n_val = max(1, round(n_images * val_fraction))
    if n_val >= n_images:
        raise ValueError(
            f"anatomy.training.val_fraction {val_fraction} of {n_images} training images leaves "
            "none to fit on"
        )
    order = torch.randperm(n_images, generator=seeded_generator(seed, STREAM_VALIDATION, 0))
    return np.sort(order[n_val:].numpy()), np.sort(order[:n_val].numpy())


def run_identity(
    images: np.ndarray,
    keypoints: np.ndarray,
    labels: Sequence[str],
    architecture: LandmarkArchitecture,
    training: LandmarkTraining,
) -> str:
    """SHA-256 of everything that changes the result: data, labels and settings (not the state
    cadence, which only decides where a rerun may resume)."""
    settings = {
        "architecture": architecture.model_dump(mode="json"),
        "training": training.model_dump(mode="json", exclude={"state_every"}),
        "labels": list(labels),
        "shapes": [list(images.shape), list(keypoints.shape)],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8"))
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(keypoints, dtype=np.float32).tobytes())
    return digest.hexdigest()


def resume_folder(root: Path, identity: str) -> Path:
    """Where a run of this identity keeps its resume states under `root`: another data set or
    setting starts a new folder, where a state of other settings would be refused."""
    return Path(root) / identity[:16]


def _check_inputs(
    images: np.ndarray, keypoints: np.ndarray, labels: Sequence[str], side: int
) -> None:
    if tuple(labels) != KEYPOINT_LABELS:
        raise ValueError(
            f"keypoint labels {list(labels)} are not CSXA's 23 labels in radsynth's order "
            f"{list(KEYPOINT_LABELS)}: the geometry and the left/right flips rely on them"
        )
    if images.dtype != np.uint8 or images.shape[1:] != (side, side) or images.ndim != 3:
        raise ValueError(
            f"training images must be uint8 (N, {side}, {side}) (anatomy.model.image_size), "
            f"got {images.dtype} {images.shape}"
        )
    if keypoints.shape != (len(images), len(labels), 2):
        raise ValueError(
            f"keypoints {keypoints.shape} do not match {len(images)} images x {len(labels)} labels"
        )


@dataclass
class _Progress:
    """What a resume state records beside the tensors (JSON in its state.json)."""

    step: int
    best_step: int
    best_val_mre_px: float
    stale: int
    finished: bool
    stopped_early: bool
    history: list[dict[str, float]]


def step_loss(
    model: LandmarkModel,
    images: torch.Tensor,
    keypoints: torch.Tensor,
    generator: torch.Generator,
    training: LandmarkTraining,
    permutation: Sequence[int],
) -> torch.Tensor:
    """One augmented batch's loss over its annotated keypoints: the L1 distance (px) of the
    soft-argmax positions plus the Jensen-Shannon divergence of each map to its Gaussian target."""
    warped, moved = augment_batch(images, keypoints, generator, training, permutation)
    architecture = model.architecture
    stride = architecture.stem_stride
    predicted, probabilities = soft_argmax(model.net(warped), stride)
    targets, weight = gaussian_targets(
        moved, probabilities.shape[-1], stride, architecture.heatmap_sigma_px
    )
    distance = (predicted - torch.nan_to_num(moved)).abs().sum(dim=-1)
    per_keypoint = distance + js_divergence(probabilities, targets)
    return (per_keypoint * weight).sum() / weight.sum().clamp_min(1.0)


def _restore(
    work_dir: Path, identity: str, model: LandmarkModel, optimizer: torch.optim.Optimizer
) -> tuple[_Progress, dict[str, torch.Tensor] | None]:
    """Load the latest complete state into the model and Adam (a fresh start without one)."""
    folder = latest_state_dir(work_dir)
    if folder is None:
        return _Progress(0, 0, float("inf"), 0, False, False, []), None
    info, parts = read_state(folder, identity)
    model.net.load_state_dict(parts[MODEL_PART], strict=True)
    optimizer.load_state_dict(parts[OPTIMIZER_PART])
    log.info("resuming landmark training from %s (step %d)", folder, info["step"])
    progress = _Progress(**{k: info[k] for k in _Progress.__dataclass_fields__})
    return progress, parts.get(BEST_PART)


def _save(
    work_dir: Path,
    identity: str,
    model: LandmarkModel,
    optimizer: torch.optim.Optimizer,
    best: dict[str, torch.Tensor] | None,
    progress: _Progress,
    provenance: Mapping[str, str],
) -> None:
    parts: dict[str, Any] = {
        MODEL_PART: cpu_state_dict(model.net.state_dict()),
        OPTIMIZER_PART: optimizer.state_dict(),  # read back onto the CPU, then Adam's device
    }
    if best is not None:
        parts[BEST_PART] = best
    info = {k: v for k, v in progress.__dict__.items() if k != "step"}  # save_state adds it
    save_state(
        work_dir,
        progress.step,
        parts,
        {**info, "identity": identity, "provenance": dict(provenance)},
    )


def _evaluate(
    model: LandmarkModel,
    images: np.ndarray,
    keypoints: np.ndarray,
    labels: Sequence[str],
    batch_size: int,
) -> float:
    predicted = predict_landmarks(model, images, batch_size=batch_size)
    model.net.train()
    return landmark_scores(predicted.xy, keypoints, labels).mre_px


def train_landmark_model(
    images: np.ndarray,
    keypoints: np.ndarray,
    labels: Sequence[str],
    *,
    model_path: Path,
    work_dir: Path,
    architecture: LandmarkArchitecture,
    training: LandmarkTraining,
    inference_batch_size: int,
    provenance: Mapping[str, str],
    until_step: int | None = None,
) -> TrainingOutcome:
    """Train on uint8 (N, S, S) images and their (N, K, 2) keypoints (the split's train subset),
    keeping resume states in `work_dir`; writes `model_path` (the best validation weights) once
    finished. A rerun with the same inputs continues from the latest state. The validation
    passes predict `inference_batch_size` images at a time (anatomy.batch_size)."""
    images, keypoints = np.asarray(images), np.asarray(keypoints, dtype=np.float32)
    _check_inputs(images, keypoints, labels, architecture.image_size)
    permutation = flip_permutation(labels)
    fit, held_out = holdout_slice(len(images), training.val_fraction, training.seed)
    identity = run_identity(images, keypoints, labels, architecture, training)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(training.seed, STREAM_INIT, 0))
        model = new_landmark_model(architecture, labels)
    device = network_device()
    model.net.to(device)  # before Adam is made and restored: its state follows the parameters
    optimizer = torch.optim.Adam(model.net.parameters(), lr=training.learning_rate)
    progress, best = _restore(Path(work_dir), identity, model, optimizer)
    fit_images, fit_keypoints = torch.as_tensor(images[fit]), torch.as_tensor(keypoints[fit])
    stop_at = training.max_steps if until_step is None else min(until_step, training.max_steps)
    model.net.train()
    bar = tqdm(
        total=training.max_steps,
        initial=progress.step,
        desc="landmark training",
        unit="step",
        file=sys.stderr,
        disable=progress.finished or progress.step >= stop_at,
    )
    with bar:
        while not progress.finished and progress.step < stop_at:
            progress.step += 1
            rows = micro_batch_positions(
                len(fit), training.batch_size, training.seed, progress.step - 1
            )
            generator = seeded_generator(training.seed, STREAM_MICRO_BATCH, progress.step)
            loss = step_loss(
                model,
                to_network_input(fit_images[rows], device),
                fit_keypoints[rows].to(device),
                generator,
                training,
                permutation,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            if progress.step % training.eval_every == 0 or progress.step == training.max_steps:
                mre = _evaluate(
                    model, images[held_out], keypoints[held_out], labels, inference_batch_size
                )
                progress.history.append(
                    {"step": progress.step, "train_loss": loss.item(), "val_mre_px": mre}
                )
                bar.set_postfix(loss=f"{loss.item():.4f}", val_mre_px=f"{mre:.3f}")
                if mre < progress.best_val_mre_px:
                    progress.best_step, progress.best_val_mre_px = progress.step, mre
                    progress.stale = 0
                    best = cpu_state_dict(model.net.state_dict())
                else:
                    progress.stale += 1
                progress.stopped_early = progress.stale >= training.patience
                progress.finished = progress.stopped_early or progress.step == training.max_steps
            if progress.finished or progress.step % training.state_every == 0:
                _save(Path(work_dir), identity, model, optimizer, best, progress, provenance)
    if progress.finished:
        model.net.load_state_dict(best, strict=True)
        summary = {
            "settings": training.model_dump(mode="json"),
            "n_fit": len(fit),
            "n_held_out": len(held_out),
            **{k: v for k, v in progress.__dict__.items() if k != "stale"},
        }
        save_landmark_model(model_path, model, training=summary, provenance=provenance)
    return TrainingOutcome(
        progress.step,
        progress.finished,
        progress.stopped_early,
        progress.best_step,
        progress.best_val_mre_px,
        list(progress.history),
    )
