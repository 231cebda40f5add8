"""The training EMA is ema_pytorch.EMA called as lucidrains' Trainer calls it: an independent EMA
replayed over a run's online weights must give the run's EMA weights at every step."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ema_pytorch import EMA
from helpers import PROVENANCE, tiny_config
from safetensors.torch import load_file, save_file

from radsynth.core.settings.train import EmaSettings
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.train.checkpoint_io import latest_state_dir
from radsynth.train.ema import build_ema
from radsynth.train.loop import train
from radsynth.train.model import build_unet
from radsynth.train.settings import RunSettings, run_settings_from_dict

torch.set_num_threads(1)

# Small enough to cross every branch of EMA.update in 14 steps: the first call copies (step 1),
# calls at counter 3 <= update_after_step copy (step 4), calls at counters 6, 9, 12 lerp (steps 7,
# 10, 13), the last with its decay 1 - 8^(-2/3) = 0.75 capped at beta 0.7; every other step skips.
EMA_SETTINGS = {
    "decay": 0.7,
    "update_every": 3,
    "update_after_step": 5,
    "inv_gamma": 1.0,
    "power": 2 / 3,
}
N_STEPS = 14


def settings() -> RunSettings:
    return run_settings_from_dict(
        tiny_config(num_steps=N_STEPS, checkpoint_every=1, state_every=7, ema=EMA_SETTINGS)
    )


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("atlas") / "atlas.h5"
    images = np.random.default_rng(1).integers(0, 256, (20, 16, 16), dtype=np.uint8)
    write_atlas(path, atlas_from_images(images, [f"img{i:03d}" for i in range(20)]))
    return path


@pytest.fixture(scope="module")
def whole_run(atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-data run (no validation) with a history checkpoint of online and EMA weights every
    step."""
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    train(atlas, None, run_dir, settings(), provenance=PROVENANCE, progress=False)
    return run_dir


def weights(run_dir: Path, step: int, prefix: str) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run_dir / "checkpoints" / f"step{step:06d}.safetensors"))
    return {
        name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_ema_equals_ema_pytorch_replayed_once_after_every_optimizer_step(whole_run: Path) -> None:
    online = build_unet(settings().model)
    # as Trainer.__init__ builds it: EMA(model, beta=ema_decay, update_every=ema_update_every), the
    # rest given
    reference = EMA(
        online, beta=0.7, update_every=3, update_after_step=5, inv_gamma=1.0, power=2 / 3
    )
    copies, changes, previous = [], [], None
    for step in range(1, N_STEPS + 1):
        online.load_state_dict(weights(whole_run, step, "online."))
        reference.update()  # the Trainer: opt.step(), then step += 1, then ema.update()
        ema = weights(whole_run, step, "ema.")
        assert same(ema, reference.ema_model.state_dict()), (
            f"EMA weights differ from ema_pytorch after step {step}"
        )
        copies += [step] if same(ema, online.state_dict()) else []
        changes += [step] if previous is None or not same(ema, previous) else []
        previous = ema
    # the trajectory crossed update_after_step and the update_every boundaries
    assert copies == [1, 4] and changes == [1, 4, 7, 10, 13]


def test_resume_state_holds_the_ema_counters_not_the_online_weights_twice(whole_run: Path) -> None:
    state = load_file(str(whole_run / "state" / f"step{N_STEPS:06d}" / "ema.safetensors"))
    names = set(build_unet(settings().model).state_dict())
    assert set(state) == {"initted", "step"} | {f"ema_model.{name}" for name in names}
    assert bool(state["initted"]) and int(state["step"]) == N_STEPS
    assert same({n: state[f"ema_model.{n}"] for n in names}, weights(whole_run, N_STEPS, "ema."))


def test_resume_between_ema_updates_continues_the_schedule(
    atlas: Path, whole_run: Path, tmp_path: Path
) -> None:
    """Stopped after step 8 (counter 8: the next update lerps at step 10), then resumed to the
    end."""
    first = train(
        atlas, None, tmp_path, settings(), provenance=PROVENANCE, until_step=8, progress=False
    )
    assert (first.step, latest_state_dir(tmp_path).name) == (8, "step000008")
    assert train(atlas, None, tmp_path, settings(), provenance=PROVENANCE, progress=False).finished
    for step in range(1, N_STEPS + 1):
        assert same(weights(tmp_path, step, "ema."), weights(whole_run, step, "ema.")), step
    name = f"state/step{N_STEPS:06d}/ema.safetensors"
    assert same(load_file(str(tmp_path / name)), load_file(str(whole_run / name)))


def test_state_without_ema_counters_is_refused_naming_the_file(
    atlas: Path, whole_run: Path, tmp_path: Path
) -> None:
    """A resume state written by the hand-written EMA (inner weights only) cannot continue the
    schedule."""
    run_dir = tmp_path / "run"
    shutil.copytree(whole_run, run_dir)
    folder = latest_state_dir(run_dir)
    path = folder / "ema.safetensors"
    prefix = "ema_model."
    inner = {
        name[len(prefix) :]: value
        for name, value in load_file(str(path)).items()
        if name.startswith(prefix)
    }
    save_file(inner, str(path))
    info = json.loads((folder / "state.json").read_text())
    info["files"]["ema.safetensors"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "state.json").write_text(json.dumps(info))
    missing = r'Missing key\(s\) in state_dict: "initted", "step"'
    with pytest.raises(
        ValueError, match=rf"(?s)^{re.escape(str(path))}: not an ema_pytorch\.EMA state .*{missing}"
    ):
        train(atlas, None, run_dir, settings(), provenance=PROVENANCE, progress=False)


def test_build_ema_passes_every_setting_and_keeps_the_online_model_out_of_its_state() -> None:
    """Non-default inv_gamma and power, checked by the first lerp's hand-derived decay: the online
    weight goes 0 -> 1 between the first update (a copy) and the second (step 2, epoch 1)."""
    online = torch.nn.Linear(1, 1, bias=False)
    ema = build_ema(
        online,
        EmaSettings(decay=0.99, update_every=1, update_after_step=0, inv_gamma=4.0, power=0.5),
    )
    assert set(ema.state_dict()) == {"initted", "step", "ema_model.weight"}
    with torch.no_grad():
        online.weight.fill_(0.0)
        ema.update()
        online.weight.fill_(1.0)
        ema.update()
    # decay = 1 - (1 + 1/4)^-0.5, so the EMA weight is 0 + (1 - decay) x (1 - 0) = 1.25^-0.5
    assert ema.ema_model.weight.item() == pytest.approx(1.25**-0.5, rel=1e-6)
    assert ema.beta == 0.99 and ema.update_every == 1 and ema.update_after_step == 0
