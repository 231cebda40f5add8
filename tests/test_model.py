"""The two network architectures: settings, lucidrains' own Unet built through radsynth, the paper's
parameter count, and a tiny lucidrains-architecture run through training, resume and sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from denoising_diffusion_pytorch import Unet
from diffusers import UNet2DModel
from helpers import PROVENANCE, TINY_MODEL, loss_columns, shard_kwargs, tiny_config
from safetensors.torch import load_file

from radsynth.cli import main
from radsynth.core.config import ConfigError, load_settings
from radsynth.core.settings.train import DIFFUSERS_ONLY
from radsynth.sample.denoising import sample_batch
from radsynth.sample.sampler import sample_shard
from radsynth.sample.schedulers import make_sampler_scheduler
from radsynth.sample.store import open_samples
from radsynth.train.checkpoint_io import load_checkpoint_weights
from radsynth.train.loop import train
from radsynth.train.model import UNetSettings, build_unet
from radsynth.train.settings import run_settings_from_dict

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
LUCIDRAINS_MODEL = {
    **{k: v for k, v in TINY_MODEL.items() if k not in DIFFUSERS_ONLY},
    "architecture": "lucidrains",
}
#: The diffusers model section as settings stored it before `model.architecture` existed.
UNNAMED_MODEL = {k: v for k, v in TINY_MODEL.items() if k != "architecture"}


def lucidrains_config(**training: object) -> dict:
    """tiny_config() with lucidrains' Unet(dim=8, dim_mults=(1, 2)) at 16 px."""
    return {**tiny_config(**training), "model": dict(LUCIDRAINS_MODEL)}


def model_settings(**values: object) -> UNetSettings:
    return load_settings(UNetSettings, values, "model")


# ---------------------------------------------------------------- settings


def test_diffusers_only_keys_are_required_or_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        model_settings(**{**LUCIDRAINS_MODEL, "layers_per_block": 1, "norm_num_groups": 4})
    assert str(caught.value).splitlines() == [
        f"model.{key}: diffusers-only key: remove it for architecture lucidrains"
        for key in DIFFUSERS_ONLY
    ]
    with pytest.raises(
        ConfigError,
        match=r"^model\.norm_num_groups: missing key \(architecture diffusers needs it\)$",
    ):
        model_settings(**{k: v for k, v in TINY_MODEL.items() if k != "norm_num_groups"})
    with pytest.raises(
        ConfigError,
        match=r"^model\.architecture: expected 'lucidrains' or 'diffusers', got 'unet'$",
    ):
        model_settings(**{**LUCIDRAINS_MODEL, "architecture": "unet"})


def test_stored_settings_round_trip_and_keep_diffusers_settings_as_before() -> None:
    lucidrains = model_settings(**LUCIDRAINS_MODEL)
    stored = lucidrains.model_dump(mode="json")
    assert stored["architecture"] == "lucidrains" and not set(DIFFUSERS_ONLY) & set(stored)
    assert model_settings(**stored) == lucidrains
    diffusers = model_settings(**TINY_MODEL)
    assert TINY_MODEL["architecture"] == "diffusers"
    # Written without `architecture`, as before the key existed: old checkpoints and states still
    # match.
    assert diffusers.model_dump(mode="json") == UNNAMED_MODEL
    assert model_settings(**UNNAMED_MODEL) == diffusers


# ---------------------------------------------------------------- the networks


@pytest.mark.parametrize("architecture", ["lucidrains", "diffusers"])
def test_both_architectures_build_and_predict_a_tensor(architecture: str) -> None:
    values = LUCIDRAINS_MODEL if architecture == "lucidrains" else TINY_MODEL
    net = build_unet(model_settings(**values)).eval()
    assert isinstance(net, {"lucidrains": Unet, "diffusers": UNet2DModel}[architecture])
    assert (net.channels, net.sample_size, net.dtype) == (1, 16, torch.float32)
    x = torch.randn(3, 1, 16, 16)
    prediction = net(x, torch.tensor([0, 500, 999]))
    assert isinstance(prediction, torch.Tensor) and prediction.shape == x.shape


@pytest.mark.parametrize("attention_levels", [[False, True], [True, True], [False, False]])
def test_lucidrains_network_is_lucidrains_unet(attention_levels: list[bool]) -> None:
    settings = model_settings(
        **{**LUCIDRAINS_MODEL, "attention_levels": attention_levels, "dropout": 0.1}
    )
    ours = build_unet(settings).eval()
    theirs = Unet(
        dim=8,
        dim_mults=(1, 2),
        channels=1,
        attn_dim_head=8,
        dropout=0.1,
        full_attn=tuple(attention_levels),
        flash_attn=True,
    ).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert [type(m) for m in ours.modules()][1:] == [type(m) for m in theirs.modules()][1:]
    theirs.load_state_dict(ours.state_dict())
    x, t = (
        torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)),
        torch.tensor([3, 870]),
    )
    with torch.no_grad():
        assert torch.equal(ours(x, t), theirs(x, t))


def test_model_command_prints_the_paper_network_size(capsys: pytest.CaptureFixture[str]) -> None:
    with torch.device("meta"):
        paper = Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1, flash_attn=True)
    assert main(["model", "--configfile", str(REPO / "config" / "csxa.yaml")]) == 0
    expected = sum(p.numel() for p in paper.parameters())
    assert expected == 35_705_089
    assert capsys.readouterr().out == f"model.architecture lucidrains: {expected:,} parameters\n"


def test_model_command_names_the_file_and_key(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": UNNAMED_MODEL}))
    assert main(["model", "--configfile", str(config)]) == 2
    assert f"{config}: model.architecture: missing key" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"model": {**LUCIDRAINS_MODEL, "norm_num_groups": 4}}))
    assert main(["model", "--configfile", str(config)]) == 2
    assert f"{config}: model.norm_num_groups: diffusers-only key" in capsys.readouterr().err


# ---------------------------------------------------------------- a tiny lucidrains run


@pytest.fixture(scope="module")
def lucidrains_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("lucidrains") / "run"
    result = train(
        *data,
        run_dir,
        run_settings_from_dict(lucidrains_config()),
        provenance=PROVENANCE,
        progress=False,
    )
    assert (result.step, result.finished) == (12, True)
    return run_dir


def test_lucidrains_run_resumes_bit_identically(
    data: tuple[Path, Path], lucidrains_run: Path, tmp_path: Path
) -> None:
    settings = run_settings_from_dict(lucidrains_config())
    first = train(*data, tmp_path, settings, provenance=PROVENANCE, until_step=5, progress=False)
    assert (first.step, first.finished) == (5, False)
    assert train(*data, tmp_path, settings, provenance=PROVENANCE, progress=False).finished
    assert loss_columns(tmp_path) == loss_columns(lucidrains_run)
    for name in ("online.safetensors", "ema.safetensors"):
        whole, resumed = (
            load_file(str(run / "state" / "step000012" / name))
            for run in (lucidrains_run, tmp_path)
        )
        assert whole.keys() == resumed.keys() and all(
            torch.equal(whole[k], resumed[k]) for k in whole
        ), name


def test_lucidrains_checkpoint_loads_and_samples(lucidrains_run: Path, tmp_path: Path) -> None:
    checkpoint = lucidrains_run / "checkpoints" / "step000012.safetensors"
    settings = run_settings_from_dict(lucidrains_config())
    net = load_checkpoint_weights(checkpoint, "online", settings.model)
    state = load_file(str(lucidrains_run / "state" / "step000012" / "online.safetensors"))
    assert isinstance(net, Unet) and all(torch.equal(net.state_dict()[k], state[k]) for k in state)
    times: list[torch.Tensor] = []
    net.register_forward_pre_hook(lambda module, args: times.append(args[1]))
    betas = settings.diffusion.betas()
    store = sample_shard(
        net,
        betas,
        tmp_path / "shard0.zarr",
        **shard_kwargs(
            tmp_path,
            checkpoint_label="step000012",
            n_images=3,
            sampler="ddim",
            steps=4,
            weights="online",
        ),
    )
    # lucidrains' Unet takes one timestep per image, as GaussianDiffusion passes them: shape (B,),
    # integers.
    assert [(tuple(t.shape), t.dtype) for t in times] == [((3,), torch.int64)] * 4
    assert [int(t[0]) for t in times] == [999, 749, 499, 249] and all(
        bool((t == t[0]).all()) for t in times
    )
    samples = open_samples([store])
    scheduler = make_sampler_scheduler(
        "ddim",
        betas,
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=len(betas),
        solver_order=None,
    )
    again = sample_batch(
        net,
        scheduler,
        [s.seed for s in samples],
        steps=4,
        image_size=16,
        device="cpu",
        quantization="round",
    )
    assert np.array_equal(samples.images([0, 1, 2]), again) and again.shape == (3, 16, 16)


def test_checkpoint_of_the_other_architecture_is_refused(lucidrains_run: Path) -> None:
    checkpoint = lucidrains_run / "checkpoints" / "step000004.safetensors"
    diffusers = run_settings_from_dict(tiny_config()).model
    with pytest.raises(
        ValueError, match=r"step000004\.safetensors: model config differs .*'architecture'"
    ):
        load_checkpoint_weights(checkpoint, "ema", diffusers)
