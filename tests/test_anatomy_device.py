"""The anatomy networks run where `radsynth.core.device.network_device` says, and report their
progress.

No GPU here, so the device path is proven on torch's "meta" device: tensors there have a shape
but no data, and an operation mixing them with CPU tensors fails. Patching `network_device` to
return it, a training step, a prediction or a two-sample step succeeds only if the network and
every tensor it meets (batches, keypoints, heatmap grids, targets) were moved to that device; the
forward hooks record where the network ran. Reading results back to the CPU is where a meta run
has to stop (it has no data), so the hooks stop it at the first forward where needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anatomy_fixtures import ARCHITECTURE, INFERENCE_BATCH, PROVENANCE, training_settings

import radsynth.anatomy.landmark_model
import radsynth.anatomy.training
import radsynth.anatomy.two_sample
from radsynth.anatomy.landmark_model import load_landmark_model, new_landmark_model
from radsynth.anatomy.network import LandmarkNet
from radsynth.anatomy.training import train_landmark_model
from radsynth.anatomy.two_sample import synthetic_logits, train_two_sample_classifier
from radsynth.core.device import cpu_state_dict, network_device
from radsynth.data.csxa import KEYPOINT_LABELS

META = torch.device("meta")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StopAtForward(Exception):
    """Raised by a hook once it has seen where a forward runs."""


def record_forwards(module_type: type, seen: list[tuple[str, str]], stop: bool):
    """Record (input device, parameter device) of every forward of a `module_type` module; with
    `stop`, end the run at the first one. Returns the hook's handle."""

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, module_type):
            seen.append((inputs[0].device.type, next(module.parameters()).device.type))
            if stop:
                raise StopAtForward

    return torch.nn.modules.module.register_module_forward_pre_hook(hook)


def random_data(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    keypoints = rng.uniform(2, 29, (n, len(KEYPOINT_LABELS), 2)).astype(np.float32)
    return images, keypoints


def test_the_device_is_the_cpu_without_cuda() -> None:
    assert not torch.cuda.is_available()  # this machine: the CPU path is the one measured
    assert network_device() == torch.device("cpu")


def test_saved_state_is_a_contiguous_cpu_copy() -> None:
    """A copy, so the best weights kept during training do not follow later steps."""
    weight = torch.arange(6.0).reshape(2, 3)
    state = {"weight": weight, "transposed": weight.t()}
    copies = cpu_state_dict(state)
    weight.add_(100.0)
    assert copies["weight"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert copies["transposed"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert copies["transposed"].is_contiguous()
    assert {value.device.type for value in copies.values()} == {"cpu"}


def test_landmark_training_runs_on_the_helpers_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three steps (no evaluation, no state: those read back to the CPU) on the meta device."""
    monkeypatch.setattr(radsynth.anatomy.training, "network_device", lambda: META)
    seen: list[tuple[str, str]] = []
    handle = record_forwards(LandmarkNet, seen, stop=False)
    try:
        outcome = train_landmark_model(
            *random_data(),
            KEYPOINT_LABELS,
            model_path=tmp_path / "model.safetensors",
            work_dir=tmp_path / "work",
            architecture=ARCHITECTURE,
            training=training_settings(batch_size=4, max_steps=8, eval_every=4, state_every=8),
            inference_batch_size=INFERENCE_BATCH,
            provenance=PROVENANCE,
            until_step=3,
        )
    finally:
        handle.remove()
    assert (outcome.step, outcome.finished) == (3, False)
    assert seen == [("meta", "meta")] * 3


def test_prediction_runs_on_the_helpers_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radsynth.anatomy.landmark_model, "network_device", lambda: META)
    torch.manual_seed(0)
    model = new_landmark_model(ARCHITECTURE, KEYPOINT_LABELS)
    seen: list[tuple[str, str]] = []
    handle = record_forwards(LandmarkNet, seen, stop=True)
    try:
        with pytest.raises(StopAtForward):
            radsynth.anatomy.landmark_model.predict_landmarks(
                model, random_data(3)[0], batch_size=2
            )
    finally:
        handle.remove()
    assert seen == [("meta", "meta")]


def test_two_sample_classifier_trains_and_scores_on_the_helpers_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(radsynth.anatomy.two_sample, "network_device", lambda: META)
    images = random_data(8)[0]
    network = train_two_sample_classifier(
        images[:4], images[4:], steps=2, batch_size=4, learning_rate=1e-3, seed=0, trunk_levels=2
    )
    assert {parameter.device.type for parameter in network.parameters()} == {"meta"}
    seen: list[tuple[str, str]] = []
    handle = record_forwards(torch.nn.Sequential, seen, stop=True)
    try:
        with pytest.raises(StopAtForward):
            synthetic_logits(network, images, batch_size=4)
    finally:
        handle.remove()
    assert seen == [("meta", "meta")]


def test_training_reports_its_steps_and_resumes_its_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress bar (stderr, the job's log) counts steps of max_steps, with the validation
    MRE once evaluated; a resumed run counts on from the step its state holds. The model file
    the run writes loads with every weight on the CPU."""
    arguments = dict(
        model_path=tmp_path / "model.safetensors",
        work_dir=tmp_path / "work",
        architecture=ARCHITECTURE,
        training=training_settings(batch_size=4, max_steps=4, eval_every=2, state_every=2),
        inference_batch_size=INFERENCE_BATCH,
        provenance=PROVENANCE,
    )
    train_landmark_model(*random_data(), KEYPOINT_LABELS, until_step=2, **arguments)
    first = capsys.readouterr().err
    assert "landmark training" in first and "2/4" in first and "4/4" not in first
    assert "val_mre_px=" in first
    train_landmark_model(*random_data(), KEYPOINT_LABELS, **arguments)
    second = capsys.readouterr().err
    assert "4/4" in second and "0/4" not in second
    model = load_landmark_model(tmp_path / "model.safetensors")
    assert {parameter.device.type for parameter in model.net.parameters()} == {"cpu"}
