"""Training: settings, data order, a tiny run's outputs, exact resume after SIGKILL, and the errors
bad input must raise (the EMA is tested in test_ema.py)."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import N_TRAIN, N_VAL
from denoising_diffusion_pytorch import GaussianDiffusion, Trainer
from denoising_diffusion_pytorch.denoising_diffusion_pytorch import (
    sigmoid_beta_schedule as lucidrains_sigmoid_beta_schedule,
)
from ema_pytorch import EMA
from helpers import (
    BASE_MODEL,
    PROVENANCE,
    TINY_MODEL,
    loss_columns,
    read_rows,
    tiny_config,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import radsynth.train.loop as loop
from radsynth.core.config import ConfigError
from radsynth.core.preemption import EXIT_RESUME_LATER
from radsynth.core.seeds import micro_batch_positions
from radsynth.data.atlas import atlas_from_images, load_atlas, write_atlas
from radsynth.train.checkpoint_io import (
    RunMarker,
    latest_state_dir,
    load_checkpoint_weights,
    marker_checkpoint,
    read_checkpoint_settings,
    read_run_marker,
    save_history_checkpoint,
)
from radsynth.train.loop import train, train_job
from radsynth.train.model import UNetSettings, build_unet, parameter_count
from radsynth.train.seeds import micro_batch_draws
from radsynth.train.settings import RunSettings, run_settings_from_dict

torch.set_num_threads(1)

DEMO_MODEL = {
    **BASE_MODEL,
    "sample_size": 32,
    "base_channels": 16,
    "channel_multipliers": [1, 2, 4],
    "attention_levels": [False, False, True],
    "attention_head_dim": 16,
    "norm_num_groups": 8,
}


# ---------------------------------------------------------------- settings and model size


def preset(name: str) -> dict:
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / name).read_text())
    return {key: config[key] for key in ("model", "diffusion", "training")}


def test_preset_parameter_counts_and_checkpoint_budget() -> None:
    paper = run_settings_from_dict(preset("csxa.yaml"))
    # lucidrains' Unet(64, (1, 2, 4, 8), channels=1), which I-SynMed trained (tests/test_model.py
    # builds it).
    assert parameter_count(paper.model) == 35_705_089
    # The demo's diffusers UNet2DModel (16, 32, 64 channels, 1 ResNet block per encoder level).
    assert parameter_count(run_settings_from_dict(preset("config.yaml")).model) == 716_929
    # The diffusers architecture at the paper's shape, with 1 ResNet block per encoder level.
    diffusers = UNetSettings(**{**BASE_MODEL, "layers_per_block": 1})
    assert parameter_count(diffusers) == 43_859_201
    # A history checkpoint holds online + EMA weights: at most half of I-SynMed's checkpoint,
    # which holds model, Adam's two moments, the EMA model and its online copy (5 x 35,705,089 x 4
    # B).
    bytes_per_value = {"float32": 4, "float16": 2}[paper.training.checkpoint_dtype]
    assert 2 * bytes_per_value * parameter_count(paper.model) <= 0.5 * 5 * 35_705_089 * 4


def test_paper_preset_is_i_synmed() -> None:
    """Where I-SynMed kept lucidrains' defaults, the preset equals the installed library's defaults;
    where its command line overrode them, the preset holds I-SynMed's values."""

    def defaults(function) -> dict:
        return {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
        }

    trainer, diffusion, ema = (
        defaults(Trainer.__init__),
        defaults(GaussianDiffusion.__init__),
        defaults(EMA.__init__),
    )
    paper = run_settings_from_dict(preset("csxa.yaml"))
    training = paper.training
    # Kept: the Trainer's optimizer, clipping and augmentation ...
    assert training.adam_betas == trainer["adam_betas"]
    assert training.max_grad_norm == trainer["max_grad_norm"]
    assert training.horizontal_flip == trainer["augment_horizontal_flip"]
    # ... its EMA(model, beta=ema_decay, update_every=ema_update_every), the rest EMA's own defaults
    # ...
    assert (training.ema.decay, training.ema.update_every) == (
        trainer["ema_decay"],
        trainer["ema_update_every"],
    )
    assert (training.ema.update_after_step, training.ema.inv_gamma, training.ema.power) == (
        ema["update_after_step"],
        ema["inv_gamma"],
        ema["power"],
    )
    # ... and GaussianDiffusion's schedule, which radsynth.train.diffusion rebuilds with the v
    # objective
    # and the unclipped snr weight.
    assert (
        diffusion["objective"],
        diffusion["beta_schedule"],
        diffusion["min_snr_loss_weight"],
    ) == ("pred_v", "sigmoid", False)
    assert paper.diffusion.timesteps == diffusion["timesteps"]
    torch.testing.assert_close(
        paper.diffusion.betas(),
        lucidrains_sigmoid_beta_schedule(diffusion["timesteps"]),
        rtol=1e-12,
        atol=0,
    )
    # Overridden on I-SynMed's command line (and in the paper): --batch_size 8, gradient
    # accumulation 2,
    # --lr 5e-5, 160,000 steps, a checkpoint every 2,000 steps, --amp (the Trainer's fp16).
    assert (training.batch_size, training.gradient_accumulation_steps) == (8, 2)
    assert training.learning_rate == 5e-5
    assert (training.num_steps, training.checkpoint_every) == (160_000, 2_000)
    assert training.mixed_precision == "fp16" == trainer["mixed_precision_type"]


def test_unknown_missing_and_mistyped_keys_are_named() -> None:
    config = tiny_config()
    config["training"]["ema"]["beta"] = 0.9
    with pytest.raises(ConfigError, match=r"^training\.ema\.beta: unknown key$"):
        run_settings_from_dict(config)
    config = tiny_config()
    del config["model"]["dropout"]
    with pytest.raises(ConfigError, match=r"^model\.dropout: missing key$"):
        run_settings_from_dict(config)
    with pytest.raises(ConfigError, match=r"^training\.batch_size: expected an integer, got 8\.5$"):
        run_settings_from_dict(tiny_config(batch_size=8.5))
    with pytest.raises(ConfigError, match=r"^training\.batch_size: expected an integer, got '8'$"):
        run_settings_from_dict(tiny_config(batch_size="8"))
    with pytest.raises(
        ConfigError,
        match=r"^training\.mixed_precision: expected 'no', 'fp16' or 'bf16', got 'fp32'$",
    ):
        run_settings_from_dict(tiny_config(mixed_precision="fp32"))
    with pytest.raises(
        ConfigError, match=r"^training\.adam_betas: expected at least 2 values, got \[0\.9\]$"
    ):
        run_settings_from_dict(tiny_config(adam_betas=[0.9]))
    with pytest.raises(ConfigError, match=r"^training\.state_every: must be at least 1, got 0$"):
        run_settings_from_dict(tiny_config(state_every=0))
    settings = run_settings_from_dict(tiny_config())
    assert isinstance(settings, RunSettings)
    assert settings.training.adam_betas == (0.9, 0.99) and settings.model.channel_multipliers == (
        1,
        2,
    )
    assert settings.diffusion.sigmoid_start == -3.0 and isinstance(
        settings.diffusion.sigmoid_start, float
    )


def test_every_bad_key_is_named_in_one_error() -> None:
    config = tiny_config(horizontal_flip="yes")
    config["model"]["attention_levels"] = [False, 1]
    del config["diffusion"]["timesteps"]
    with pytest.raises(ConfigError) as caught:
        run_settings_from_dict(config)
    assert str(caught.value).splitlines() == [
        "model.attention_levels[1]: expected true or false, got 1",
        "diffusion.timesteps: missing key",
        "training.horizontal_flip: expected true or false, got 'yes'",
    ]


def test_settings_written_by_the_dataclass_code_still_load(tmp_path: Path) -> None:
    """Checkpoint metadata as the dataclass settings (before pydantic) wrote it for tiny_config()
    still loads."""
    written = (
        '{"diffusion": {"beta_clamp_max": 0.999, "sigmoid_end": 3.0, "sigmoid_start": -3.0, '
        '"sigmoid_tau": 1.0, "timesteps": 1000}, "model": {"attention_head_dim": 8, '
        '"attention_levels": [false, true], "base_channels": 8, "channel_multipliers": [1, 2], '
        '"dropout": 0.0, "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 16}, '
        '"training": {"adam_betas": [0.9, 0.99], "batch_size": 3, "checkpoint_dtype": "float32", '
        '"checkpoint_every": 4, "ema": {"decay": 0.995, "inv_gamma": 1.0, '
        '"power": 0.6666666666666666, "update_after_step": 100, "update_every": 10}, '
        '"gradient_accumulation_steps": 2, "horizontal_flip": true, "learning_rate": 0.001, '
        '"max_grad_norm": 1.0, "mixed_precision": "no", "num_steps": 12, "seed": 7, '
        '"state_every": 4, "val_batch_size": 3}}'
    )
    save_file({"x": torch.zeros(1)}, str(tmp_path / "old.safetensors"), {"settings": written})
    settings = read_checkpoint_settings(tmp_path / "old.safetensors")
    assert settings == run_settings_from_dict(tiny_config())
    save_file(
        {"x": torch.zeros(1)},
        str(tmp_path / "bad.safetensors"),
        {"settings": written.replace("seed", "sed")},
    )
    with pytest.raises(
        ValueError, match=r"(?s)bad\.safetensors: settings .*training\.sed: unknown key"
    ):
        read_checkpoint_settings(tmp_path / "bad.safetensors")


def test_model_shape_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.attention_levels"):
        build_unet(UNetSettings(**{**TINY_MODEL, "attention_levels": [True]}))
    with pytest.raises(ValueError, match="model.sample_size"):
        shape = {
            "sample_size": 18,
            "channel_multipliers": [1, 2, 4],
            "attention_levels": [False, False, True],
        }
        build_unet(UNetSettings(**{**TINY_MODEL, **shape}))


# ---------------------------------------------------------------- data order and draws


def test_each_epoch_is_a_permutation_with_a_short_last_batch() -> None:
    batches = [micro_batch_positions(10, 4, seed=3, micro_index=m) for m in range(6)]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3]).tolist()) == list(range(10))
    assert sorted(np.concatenate(batches[3:]).tolist()) == list(range(10))
    assert np.concatenate(batches[:3]).tolist() != np.concatenate(batches[3:]).tolist()
    assert micro_batch_positions(10, 4, seed=3, micro_index=4).tolist() == batches[4].tolist()


def test_draws_depend_only_on_seed_and_micro_batch() -> None:
    first = micro_batch_draws(5, 17, 3, 8, 1000, flip=True)
    micro_batch_draws(5, 16, 3, 8, 1000, flip=True)
    again = micro_batch_draws(5, 17, 3, 8, 1000, flip=True)
    assert torch.equal(first.noise, again.noise) and torch.equal(first.timesteps, again.timesteps)
    assert not micro_batch_draws(5, 17, 3, 8, 1000, flip=False).flips.any()
    assert not torch.equal(micro_batch_draws(6, 17, 3, 8, 1000, flip=True).noise, first.noise)


# ---------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def tiny_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    result = train(
        *data, run_dir, run_settings_from_dict(tiny_config()), provenance=PROVENANCE, progress=False
    )
    assert (result.step, result.finished) == (12, True)
    return run_dir


def test_tiny_run_writes_loss_log_index_and_checkpoints(tiny_run: Path) -> None:
    log = read_rows(tiny_run / "loss_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 13))
    assert all(float(r["lr"]) == 1e-3 and float(r["train_loss"]) > 0 for r in log)
    with_val = [int(r["step"]) for r in log if r["val_loss"]]
    assert with_val == [4, 8, 12] == [int(r["step"]) for r in log if r["val_loss_ema"]]
    index = read_rows(tiny_run / "checkpoints" / "index.csv")
    assert [(r["step"], r["checkpoint"], r["path"]) for r in index] == [
        (str(4 * n), str(n), f"checkpoints/step{4 * n:06d}.safetensors") for n in (1, 2, 3)
    ]
    by_step = {r["step"]: r for r in log}
    for row in index:
        assert int(row["bytes"]) == (tiny_run / row["path"]).stat().st_size
        logged = by_step[row["step"]]
        assert (row["train_loss"], row["val_loss"], row["val_loss_ema"]) == (
            logged["train_loss"],
            logged["val_loss"],
            logged["val_loss_ema"],
        )
    assert "checkpoint 3" in (tiny_run / "train.log").read_text()
    assert [p.name for p in (tiny_run / "state").iterdir()] == ["step000012"]


def test_checkpoint_holds_online_and_ema_weights_with_metadata(tiny_run: Path) -> None:
    path = tiny_run / "checkpoints" / "step000012.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
    assert (metadata["step"], metadata["checkpoint"], metadata["dtype"]) == ("12", "3", "float32")
    assert '"code_revision": "test"' in metadata["provenance"]
    names = set(
        build_unet(
            UNetSettings(
                **{**TINY_MODEL, "channel_multipliers": (1, 2), "attention_levels": (False, True)}
            )
        ).state_dict()
    )
    assert keys == {f"online.{n}" for n in names} | {f"ema.{n}" for n in names}
    settings = run_settings_from_dict(tiny_config()).model
    online = load_checkpoint_weights(path, "online", settings)
    state = load_file(str(tiny_run / "state" / "step000012" / "online.safetensors"))
    assert all(torch.equal(online.state_dict()[k], state[k]) for k in state)
    ema = load_checkpoint_weights(path, "ema", settings)
    # EMA last copied the online weights after step 11 (update_after_step 100, every 10 steps).
    assert not torch.equal(ema.conv_in.weight, online.conv_in.weight)


def test_float16_history_halves_the_bytes(tmp_path: Path) -> None:
    model = build_unet(UNetSettings(**TINY_MODEL))
    n = sum(p.numel() for p in model.parameters())
    ema = copy.deepcopy(model)
    full = save_history_checkpoint(tmp_path / "a.safetensors", model, ema, "float32", {"step": "1"})
    half = save_history_checkpoint(tmp_path / "b.safetensors", model, ema, "float16", {"step": "1"})

    def data_bytes(path: Path, size: int) -> int:  # safetensors: 8-byte header length, header, data
        return size - 8 - int.from_bytes(path.read_bytes()[:8], "little")

    assert data_bytes(tmp_path / "a.safetensors", full) == 2 * n * 4  # online + EMA, float32
    assert data_bytes(tmp_path / "b.safetensors", half) == 2 * n * 2  # online + EMA, float16


# ---------------------------------------------------------------- exact resume after SIGKILL


def _train_child(atlas: Path, manifest: Path, run_dir: Path, config: dict) -> None:
    torch.set_num_threads(1)
    train(
        atlas,
        manifest,
        run_dir,
        run_settings_from_dict(config),
        provenance=PROVENANCE,
        progress=False,
    )


def test_sigkilled_run_resumes_to_identical_log_and_weights(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    config = tiny_config(num_steps=24, checkpoint_every=6, state_every=3)
    settings = run_settings_from_dict(config)
    train(*data, tmp_path / "whole", settings, provenance=PROVENANCE, progress=False)

    kill_after = random.randint(4, 20)  # rows in the loss log; the first state is saved at step 3
    killed = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(
        target=_train_child, args=(*data, killed, config)
    )
    child.start()
    log = killed / "loss_log.csv"
    while child.is_alive() and (
        not log.exists() or len(log.read_text().splitlines()) <= kill_after
    ):
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL, f"run finished before the kill at step {kill_after}"
    restored = latest_state_dir(killed)
    assert restored is not None and int(restored.name[4:]) < 24

    result = train(*data, killed, settings, provenance=PROVENANCE, progress=False)
    assert result.finished, kill_after
    assert loss_columns(killed) == loss_columns(tmp_path / "whole"), (
        f"killed after step {kill_after}"
    )
    for name in ("online.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "whole" / "state" / "step000024" / name))
        b = load_file(str(killed / "state" / "step000024" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), (name, kill_after)
    index = [
        {k: v for k, v in r.items() if k != "bytes"}
        for r in read_rows(killed / "checkpoints" / "index.csv")
    ]
    assert index == [
        {k: v for k, v in r.items() if k != "bytes"}
        for r in read_rows(tmp_path / "whole" / "checkpoints" / "index.csv")
    ]


def test_unfinished_state_write_is_ignored(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "state" / ".tmp-abc").mkdir()
    (run_dir / "state" / ".tmp-abc" / "online.safetensors").write_bytes(b"partial")
    assert latest_state_dir(run_dir) == run_dir / "state" / "step000012"


def test_until_step_and_wall_time_budget_split_a_run(
    data: tuple[Path, Path], tiny_run: Path, tmp_path: Path
) -> None:
    settings = run_settings_from_dict(tiny_config())
    first = train(*data, tmp_path, settings, provenance=PROVENANCE, until_step=5, progress=False)
    assert (first.step, first.finished) == (5, False)
    assert latest_state_dir(tmp_path).name == "step000005"
    second = train(
        *data, tmp_path, settings, provenance=PROVENANCE, max_wall_time_s=0.0, progress=False
    )
    assert (second.step, second.finished) == (6, False)
    third = train(*data, tmp_path, settings, provenance=PROVENANCE, progress=False)
    assert third.finished and loss_columns(tmp_path) == loss_columns(tiny_run)


# ---------------------------------------------------------------- bad input


def test_image_size_mismatch_names_key_and_file(data: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config()
    config["model"]["sample_size"] = 32
    with pytest.raises(
        ValueError,
        match=rf"{data[0].name}: /images is uint8 \(24, 16, 16\), but model.sample_size 32",
    ):
        train(
            *data, tmp_path, run_settings_from_dict(config), provenance=PROVENANCE, progress=False
        )


def good_rows() -> list[list[str]]:
    """The fixture's manifest rows (index, source_name, subset), one list per image."""
    return [
        [str(i), f"img{i:03d}", "val" if i >= N_TRAIN else "train"] for i in range(N_TRAIN + N_VAL)
    ]


def all_subsets(subset: str) -> list[list[str]]:
    return [[index, name, subset] for index, name, _ in good_rows()]


def with_cell(row: int, column: int, value: str) -> list[list[str]]:
    rows = good_rows()
    rows[row][column] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (all_subsets("train"), "the 'val' subset is empty"),
        (all_subsets("val"), "the 'train' subset is empty"),
        (with_cell(1, 2, "test"), "data row 2 has subset 'test'"),
        (with_cell(1, 0, "99"), "data row 2: index 99 is not a row"),
        (with_cell(1, 0, "0"), "atlas index 0 appears more than once"),
        (good_rows()[:-1], "lists 23 images but the atlas holds 24"),
        (
            with_cell(2, 1, "other"),
            "data row 3: source_name 'other' differs from the atlas's 'img002'",
        ),
    ],
)
def test_bad_manifest_names_the_file(
    data: tuple[Path, Path], tmp_path: Path, rows: list[list[str]], message: str
) -> None:
    manifest = tmp_path / "bad_manifest.csv"
    manifest.write_text(
        "index,source_name,subset\n" + "".join(",".join(row) + "\n" for row in rows)
    )
    with pytest.raises(ValueError, match=f"bad_manifest.csv.*{message}"):
        train(
            data[0],
            manifest,
            tmp_path / "run",
            run_settings_from_dict(tiny_config()),
            provenance=PROVENANCE,
            progress=False,
        )


def test_bad_checkpoints_name_the_file(tiny_run: Path, tmp_path: Path) -> None:
    settings = run_settings_from_dict(tiny_config()).model
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_checkpoint_weights(tmp_path / "missing.safetensors", "ema", settings)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((tiny_run / "checkpoints" / "step000004.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.safetensors: not a readable safetensors"):
        load_checkpoint_weights(broken, "ema", settings)
    other = UNetSettings(
        **{**TINY_MODEL, "channel_multipliers": (1, 2), "attention_levels": (False, False)}
    )
    with pytest.raises(
        ValueError, match=r"step000004.safetensors: model config differs .*down_block_types"
    ):
        load_checkpoint_weights(tiny_run / "checkpoints" / "step000004.safetensors", "ema", other)


def test_corrupt_state_or_changed_settings_refuse_to_resume(
    data: tuple[Path, Path], tiny_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    settings = run_settings_from_dict(tiny_config(learning_rate=2e-3))
    with pytest.raises(
        ValueError, match="state.json: state was written for different inputs or settings"
    ):
        train(*data, run_dir, settings, provenance=PROVENANCE, progress=False)
    optimizer = run_dir / "state" / "step000012" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-10])
    with pytest.raises(ValueError, match="optimizer.pt: state file is missing or corrupt"):
        train(
            *data,
            run_dir,
            run_settings_from_dict(tiny_config()),
            provenance=PROVENANCE,
            progress=False,
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of fp16")
def test_fp16_without_cuda_is_refused(data: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training.mixed_precision is 'fp16'.*no CUDA device"):
        train(
            *data,
            tmp_path,
            run_settings_from_dict(tiny_config(mixed_precision="fp16")),
            provenance=PROVENANCE,
            progress=False,
        )


def test_checkpoint_carries_its_run_settings(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = tiny_run / "checkpoints" / "step000004.safetensors"
    assert read_checkpoint_settings(checkpoint) == run_settings_from_dict(tiny_config())
    (tmp_path / "other.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="other.safetensors: not a readable checkpoint"):
        read_checkpoint_settings(tmp_path / "other.safetensors")


def test_sample_command_samples_a_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    """`radsynth sample` needs only the checkpoint: its model and schedule come from the file."""
    import zarr

    from radsynth.sample.store import open_samples

    checkpoint = tiny_run / "checkpoints" / "step000008.safetensors"
    command = [
        str(Path(sys.executable).parent / "radsynth"),
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--n",
        "3",
        "--out",
        str(tmp_path / "s.zarr"),
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--batch-size",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    samples = open_samples([tmp_path / "s.zarr"])
    assert len(samples) == 3 and samples.images([0, 1, 2]).shape == (3, 16, 16)
    assert samples.attrs["sampler"] == "ddim" and samples.attrs["weights"] == "online"
    stored = zarr.open_group(tmp_path / "s.zarr", mode="r", zarr_format=3).attrs
    assert stored["provenance"]["checkpoint_file"] == str(checkpoint)


# ---------------------------------------------------------------- run identity, segments and
# markers (train_job)


def job(
    data: tuple[Path, Path], runs_root: Path, config: dict, marker: Path, **options: object
) -> int:
    return train_job(
        *data, runs_root, config, marker, max_wall_time_s=None, provenance=PROVENANCE, **options
    )


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, record the step index of every optimizer step the loop takes."""
    taken: list[int] = []
    real = loop._optimizer_step

    def counting(run: object, step: int) -> float:
        taken.append(step)
        return real(run, step)

    monkeypatch.setattr(loop, "_optimizer_step", counting)
    return taken


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def weight_bytes(path: Path) -> dict[str, bytes]:
    return {name: tensor.numpy().tobytes() for name, tensor in load_file(str(path)).items()}


def reordered(value: object) -> object:
    """The same config with the keys of every mapping in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    return value


def test_raising_num_steps_continues_the_run_exactly(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert job(data, tmp_path / "grown", tiny_config(num_steps=12), tmp_path / "12.json") == 0
    first = read_run_marker(tmp_path / "12.json")
    rows_at_12 = (first.run_dir / "loss_log.csv").read_text().splitlines()
    taken = count_steps(monkeypatch)
    assert job(data, tmp_path / "grown", tiny_config(num_steps=16), tmp_path / "16.json") == 0
    grown = read_run_marker(tmp_path / "16.json")
    assert (grown.run_dir, grown.step) == (first.run_dir, 16)
    assert taken == [12, 13, 14, 15]  # only steps 13..16 were trained ...
    assert (grown.run_dir / "loss_log.csv").read_text().splitlines()[
        :13
    ] == rows_at_12  # ... rows 1..12 kept

    assert job(data, tmp_path / "direct", tiny_config(num_steps=16), tmp_path / "direct.json") == 0
    direct = read_run_marker(tmp_path / "direct.json")
    assert direct.identity == grown.identity
    assert loss_columns(grown.run_dir) == loss_columns(direct.run_dir)
    index = "checkpoints/index.csv"
    assert (grown.run_dir / index).read_bytes() == (direct.run_dir / index).read_bytes()
    names = sorted(p.name for p in (direct.run_dir / "checkpoints").glob("*.safetensors"))
    assert names == [f"step{s:06d}.safetensors" for s in (4, 8, 12, 16)]
    assert sorted(p.name for p in (grown.run_dir / "checkpoints").glob("*.safetensors")) == names
    for name in names:
        assert weight_bytes(grown.run_dir / "checkpoints" / name) == weight_bytes(
            direct.run_dir / "checkpoints" / name
        )


@pytest.mark.parametrize("change", ["atlas", "manifest"])
def test_changed_atlas_or_manifest_trains_a_new_run_beside_the_old(
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    change: str,
) -> None:
    atlas, manifest = data
    runs = tmp_path / "runs"
    assert job(data, runs, tiny_config(num_steps=4), tmp_path / "old.json") == 0
    old = read_run_marker(tmp_path / "old.json")
    old_files = tree_bytes(old.run_dir)
    if change == "atlas":
        stored = load_atlas(atlas)
        images = stored.images.copy()
        images[5, 3, 3] ^= 1
        atlas = tmp_path / "atlas.h5"
        write_atlas(atlas, atlas_from_images(images, stored.source_names))
    else:
        text = manifest.read_text()
        assert "\n3,img003,train\n" in text
        manifest = tmp_path / "manifest.csv"
        manifest.write_text(text.replace("\n3,img003,train\n", "\n3,img003,val\n"))
    # a folder a failed start left: its record, but no state (the job died before the first one)
    failed_start = runs / "failed-start"
    failed_start.mkdir()
    (failed_start / "identity.json").write_text(json.dumps({"identity": "x", "inputs": {}}))
    taken = count_steps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="radsynth.train.loop"):
        assert job((atlas, manifest), runs, tiny_config(num_steps=4), tmp_path / "new.json") == 0
    new = read_run_marker(tmp_path / "new.json")
    assert new.run_dir.parent == runs == old.run_dir.parent and new.run_dir != old.run_dir
    assert taken == [0, 1, 2, 3]
    assert [row[0] for row in loss_columns(new.run_dir)] == ["1", "2", "3", "4"]
    assert tree_bytes(old.run_dir) == old_files
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "radsynth.train.loop" and r.levelno == logging.INFO
    ]
    assert any("inputs changed" in m and str(old.run_dir) in m for m in messages), messages
    assert not any(str(failed_start) in m for m in messages), messages
    old_inputs = json.loads((tmp_path / "old.json").read_text())["inputs"]
    new_inputs = json.loads((tmp_path / "new.json").read_text())["inputs"]
    assert (old_inputs["atlas_digest"] != new_inputs["atlas_digest"]) == (change == "atlas")
    assert (old_inputs["manifest_digest"] != new_inputs["manifest_digest"]) == (
        change == "manifest"
    )
    assert old_inputs["result_settings_hash"] == new_inputs["result_settings_hash"]


def test_identity_ignores_key_order_operational_keys_and_the_atlas_file(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    assert job(data, runs, tiny_config(num_steps=4), tmp_path / "base.json") == 0
    base = read_run_marker(tmp_path / "base.json")
    rewritten = tmp_path / "rewritten.h5"  # the same content in a new HDF5 file
    stored = load_atlas(data[0])
    write_atlas(rewritten, atlas_from_images(stored.images, stored.source_names))
    same = {
        "reordered": (data, reordered(tiny_config(num_steps=4))),
        "val_batch_size": (data, tiny_config(num_steps=4, val_batch_size=2)),
        "state_every": (data, tiny_config(num_steps=4, state_every=1)),
        "rewritten atlas": ((rewritten, data[1]), tiny_config(num_steps=4)),
    }
    assert list(same["reordered"][1]) == ["training", "diffusion", "model"]
    taken = count_steps(monkeypatch)
    for name, (inputs, config) in same.items():
        assert job(inputs, runs, config, tmp_path / f"{name}.json") == 0
        marker = read_run_marker(tmp_path / f"{name}.json")
        assert (marker.identity, marker.run_dir, marker.step) == (base.identity, base.run_dir, 4), (
            name
        )
    assert taken == []
    assert job(data, runs, tiny_config(num_steps=4, learning_rate=2e-3), tmp_path / "lr.json") == 0
    other = read_run_marker(tmp_path / "lr.json")
    assert other.identity != base.identity and other.run_dir != base.run_dir


def test_segments_write_markers_and_earlier_ones_need_no_training(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, config = tmp_path / "runs", tiny_config()  # 12 steps, a checkpoint every 4
    out_of_time = train_job(
        *data,
        runs,
        config,
        tmp_path / "s6.json",
        until_step=6,
        max_wall_time_s=0.0,
        provenance=PROVENANCE,
    )
    assert out_of_time == EXIT_RESUME_LATER and not (tmp_path / "s6.json").exists()
    assert job(data, runs, config, tmp_path / "s6.json", until_step=6) == 0
    s6 = read_run_marker(tmp_path / "s6.json")
    assert (s6.step, s6.checkpoint) == (6, None)
    assert job(data, runs, config, tmp_path / "s12.json") == 0
    record = json.loads((tmp_path / "s12.json").read_text())
    assert record == {
        "run_dir": str(s6.run_dir),
        "identity": s6.identity,
        "step": 12,
        "checkpoint": str(s6.run_dir / "checkpoints" / "step000012.safetensors"),
        "checkpoint_index": str(s6.run_dir / "checkpoints" / "index.csv"),
        "loss_log": str(s6.run_dir / "loss_log.csv"),
        "inputs": record["inputs"],
        "provenance": PROVENANCE,
    }
    assert sorted(record["inputs"]) == ["atlas_digest", "manifest_digest", "result_settings_hash"]

    taken = count_steps(monkeypatch)
    assert job(data, runs, config, tmp_path / "s8.json", until_step=8) == 0
    s8 = read_run_marker(tmp_path / "s8.json")
    assert (s8.run_dir, s8.step) == (s6.run_dir, 8)
    assert s8.checkpoint == s6.run_dir / "checkpoints" / "step000008.safetensors"
    assert (
        job(data, runs, tiny_config(num_steps=8), tmp_path / "n8.json") == 0
    )  # lowered onto a checkpoint
    assert read_run_marker(tmp_path / "n8.json").checkpoint == s8.checkpoint
    folder = re.escape(str(s6.run_dir))
    with pytest.raises(
        ValueError, match=rf"^until_step 6 is below step 12, which run {folder} already reached"
    ):
        job(data, runs, config, tmp_path / "again6.json", until_step=6)
    with pytest.raises(
        ValueError, match=rf"^training\.num_steps 10 is below step 12, which run {folder}"
    ):
        job(data, runs, tiny_config(num_steps=10), tmp_path / "n10.json")
    assert (
        taken == []
        and not (tmp_path / "again6.json").exists()
        and not (tmp_path / "n10.json").exists()
    )

    assert (
        marker_checkpoint(tmp_path / "s8.json", 4)
        == s6.run_dir / "checkpoints" / "step000004.safetensors"
    )
    with pytest.raises(
        ValueError, match=r"s8\.json: the run reached step 8 only; no checkpoint of step 12"
    ):
        marker_checkpoint(tmp_path / "s8.json", 12)
    with pytest.raises(FileNotFoundError, match=r"s8\.json: run .* has no checkpoint of step 6"):
        marker_checkpoint(tmp_path / "s8.json", 6)


def test_bad_run_markers_name_the_file_and_key(tmp_path: Path) -> None:
    good = {"run_dir": "runs/abc", "identity": "abc", "step": 8, "checkpoint": None}
    marker = tmp_path / "marker.json"
    marker.write_text(json.dumps(good))
    assert read_run_marker(marker) == RunMarker(Path("runs/abc"), "abc", 8, None)
    marker.write_text(
        json.dumps({**good, "checkpoint": "runs/abc/checkpoints/step000008.safetensors"})
    )
    assert read_run_marker(marker).checkpoint == Path("runs/abc/checkpoints/step000008.safetensors")
    marker.write_text(json.dumps({k: v for k, v in good.items() if k != "identity"}))
    with pytest.raises(ValueError, match=r"marker\.json: run marker lacks the key 'identity'"):
        read_run_marker(marker)
    marker.write_text(json.dumps({**good, "step": "8"}))
    with pytest.raises(ValueError, match=r"marker\.json: run marker key 'step' holds '8'"):
        read_run_marker(marker)
    with pytest.raises(ValueError, match=r"absent\.json: missing or unreadable run marker"):
        read_run_marker(tmp_path / "absent.json")
