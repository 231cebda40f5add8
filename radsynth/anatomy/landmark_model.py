"""The landmark model file and batch prediction.

A model file is one safetensors file: the network's float32 weights, and in its metadata the
format tag, the architecture (which rebuilds the network), the keypoint labels in heatmap order,
the training settings and summary, and the provenance of the job that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from radsynth.anatomy.heatmaps import confidence, soft_argmax
from radsynth.anatomy.network import LandmarkNet
from radsynth.core.atomic import atomic_output
from radsynth.core.config import ConfigError, load_settings
from radsynth.core.device import cpu_state_dict, network_device
from radsynth.core.settings.anatomy import LandmarkArchitecture

FORMAT = "radsynth-landmark-model/1"


@dataclass
class LandmarkModel:
    """A network with what it needs to be applied: its architecture and its label order."""

    net: LandmarkNet
    architecture: LandmarkArchitecture
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Landmarks:
    """Predicted keypoints of N images: (N, K, 2) x, y in each image's pixel frame, and the
    (N, K) heatmap peaks relative to the target's (the confidence; 1 = as sharp as a target)."""

    xy: np.ndarray
    confidence: np.ndarray


def new_landmark_model(architecture: LandmarkArchitecture, labels: Sequence[str]) -> LandmarkModel:
    """A freshly initialised network (torch's default initialisation: seed torch first)."""
    return LandmarkModel(LandmarkNet(architecture, len(labels)), architecture, tuple(labels))


def to_network_input(
    images: np.ndarray | torch.Tensor, device: torch.device | None = None
) -> torch.Tensor:
    """uint8 (N, S, S) -> float32 (N, 1, S, S) in [-1, 1], on `device` (without one, where the
    images are: the CPU for an array). The uint8 images move, a quarter of the float bytes."""
    pixels = torch.as_tensor(images)
    if device is not None:
        pixels = pixels.to(device)
    return pixels.to(torch.float32)[:, None] / 127.5 - 1.0


def predict_landmarks(model: LandmarkModel, images: np.ndarray, *, batch_size: int) -> Landmarks:
    """Keypoints and confidences of uint8 (N, S, S) images, S the size the model was trained at,
    `batch_size` images at a time on `network_device()` (the model is moved there)."""
    images = np.asarray(images)
    side = model.architecture.image_size
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (side, side):
        raise ValueError(
            f"the landmark model was trained at {side} x {side} px and takes uint8 (N, {side}, "
            f"{side}) images; got {images.dtype} {images.shape}"
        )
    device = network_device()
    model.net.to(device).eval()
    xy, peaks = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model.net(to_network_input(images[start : start + batch_size], device))
            stride = model.architecture.stem_stride
            points, probabilities = soft_argmax(logits, stride)
            peak = confidence(probabilities, model.architecture.heatmap_sigma_px, stride)
            xy.append(points.double().cpu().numpy())
            peaks.append(peak.double().cpu().numpy())
    n_keys = len(model.labels)
    return Landmarks(
        np.concatenate(xy) if xy else np.zeros((0, n_keys, 2)),
        np.concatenate(peaks) if peaks else np.zeros((0, n_keys)),
    )


def save_landmark_model(
    path: Path,
    model: LandmarkModel,
    *,
    training: Mapping[str, Any],
    provenance: Mapping[str, str],
) -> None:
    """Write the model file atomically; `training` records the settings and how training went."""
    metadata = {
        "format": FORMAT,
        "architecture": json.dumps(model.architecture.model_dump(mode="json"), sort_keys=True),
        "labels": json.dumps(list(model.labels)),
        "training": json.dumps(dict(training), sort_keys=True),
        "provenance": json.dumps(dict(provenance), sort_keys=True),
    }
    tensors = cpu_state_dict(model.net.state_dict())
    with atomic_output(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata)


def read_model_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of a model file (architecture, labels, training, provenance)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable landmark model file ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: format {metadata.get('format')!r} is not a radsynth landmark model ({FORMAT})"
        )
    return {key: json.loads(value) for key, value in metadata.items() if key != "format"}


def load_landmark_model(path: Path) -> LandmarkModel:
    """The model a file holds, in eval mode; a file of another format or shape fails naming it."""
    path = Path(path)
    metadata = read_model_metadata(path)
    try:
        architecture = load_settings(
            LandmarkArchitecture, metadata["architecture"], "anatomy.model"
        )
    except ConfigError as exc:
        raise ValueError(f"{path}: architecture in the metadata does not load:\n{exc}") from exc
    model = new_landmark_model(architecture, metadata["labels"])
    with safe_open(str(path), framework="pt") as handle:
        weights = {key: handle.get_tensor(key) for key in handle.keys()}
    try:
        model.net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the stored architecture ({exc})") from exc
    model.net.eval()
    return model
