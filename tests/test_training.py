"""Training: settings, EMA schedule, data order, a tiny run's outputs, exact resume after SIGKILL,
and the errors bad input must raise."""

from __future__ import annotations

import copy
import csv
import multiprocessing
import os
import random
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
from safetensors import safe_open
from safetensors.torch import load_file

from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.train.model import UNetSettings, build_unet, parameter_count
from radsynth.train.checkpoint_io import (
    latest_state_dir,
    load_checkpoint_weights,
    read_checkpoint_settings,
    save_history_checkpoint,
)
from radsynth.train.ema import ema_action, ema_decay, update_ema
from radsynth.train.loop import train
from radsynth.train.seeds import micro_batch_draws, micro_batch_positions
from radsynth.train.settings import EmaSettings, RunSettings, run_settings_from_dict

torch.set_num_threads(1)

# Shape fields the smaller test models inherit (the paper preset itself is read from config/csxa.yaml).
BASE_MODEL = {
    "sample_size": 256,
    "base_channels": 64,
    "channel_multipliers": [1, 2, 4, 8],
    "layers_per_block": 2,
    "attention_levels": [False, False, False, True],
    "attention_head_dim": 32,
    "norm_num_groups": 32,
    "dropout": 0.0,
}
DEMO_MODEL = {
    **BASE_MODEL,
    "sample_size": 32,
    "base_channels": 16,
    "channel_multipliers": [1, 2, 4],
    "attention_levels": [False, False, True],
    "attention_head_dim": 16,
    "norm_num_groups": 8,
}
TINY_MODEL = {
    **BASE_MODEL,
    "sample_size": 16,
    "base_channels": 8,
    "channel_multipliers": [1, 2],
    "layers_per_block": 1,
    "attention_levels": [False, True],
    "attention_head_dim": 8,
    "norm_num_groups": 4,
}
PAPER_EMA = {"decay": 0.995, "update_every": 10, "update_after_step": 100, "inv_gamma": 1.0, "power": 2 / 3}
N_TRAIN, N_VAL = 20, 4
PROVENANCE = {"code_revision": "test"}


def tiny_config(**training: object) -> dict:
    return {
        "model": dict(TINY_MODEL),
        "diffusion": {
            "timesteps": 1000,
            "sigmoid_start": -3,
            "sigmoid_end": 3,
            "sigmoid_tau": 1,
            "beta_clamp_max": 0.999,
        },
        "training": {
            "seed": 7,
            "num_steps": 12,
            "batch_size": 3,
            "gradient_accumulation_steps": 2,
            "learning_rate": 1e-3,
            "adam_betas": [0.9, 0.99],
            "max_grad_norm": 1.0,
            "mixed_precision": "no",
            "horizontal_flip": True,
            "checkpoint_every": 4,
            "state_every": 4,
            "checkpoint_dtype": "float32",
            "val_batch_size": 3,
            "ema": dict(PAPER_EMA),
            **training,
        },
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16x16 atlas of 24 images and a manifest with the last 4 as validation."""
    folder = tmp_path_factory.mktemp("data")
    images = np.random.default_rng(0).integers(0, 256, (N_TRAIN + N_VAL, 16, 16), dtype=np.uint8)
    write_atlas(folder / "atlas.h5", atlas_from_images(images, [f"img{i:03d}" for i in range(N_TRAIN + N_VAL)]))
    rows = [f"{i},img{i:03d},{'val' if i >= N_TRAIN else 'train'}\n" for i in range(N_TRAIN + N_VAL)]
    (folder / "manifest.csv").write_text("index,source_name,subset\n" + "".join(rows))
    return folder / "atlas.h5", folder / "manifest.csv"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def loss_columns(run_dir: Path) -> list[tuple[str, ...]]:
    """The loss log without wall time (which differs between runs)."""
    return [
        (r["step"], r["train_loss"], r["val_loss"], r["val_loss_ema"], r["lr"])
        for r in read_rows(run_dir / "loss_log.csv")
    ]


# ---------------------------------------------------------------- settings and model size


def preset(name: str) -> dict:
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / name).read_text())
    return {key: config[key] for key in ("model", "diffusion", "training")}


def test_preset_parameter_counts_and_checkpoint_budget() -> None:
    paper = run_settings_from_dict(preset("csxa.yaml"))
    # lucidrains' Unet(64, (1, 2, 4, 8), channels=1), which I-SynMed trained, has 35,705,089.
    assert parameter_count(paper.model) == 43_859_201
    assert parameter_count(run_settings_from_dict(preset("config.yaml")).model) == 1_033_937
    # A history checkpoint holds online + EMA weights: at most half of I-SynMed's checkpoint,
    # which holds model, Adam's two moments, the EMA model and its online copy (5 x 35,705,089 x 4 B).
    bytes_per_value = {"float32": 4, "float16": 2}[paper.training.checkpoint_dtype]
    assert 2 * bytes_per_value * parameter_count(paper.model) <= 0.5 * 5 * 35_705_089 * 4


def test_paper_preset_is_i_synmed() -> None:
    paper = run_settings_from_dict(preset("csxa.yaml"))
    assert (paper.training.batch_size, paper.training.gradient_accumulation_steps) == (8, 2)
    assert paper.training.learning_rate == 5e-5 and paper.training.adam_betas == (0.9, 0.99)
    assert (paper.training.num_steps, paper.training.checkpoint_every) == (160_000, 2_000)
    assert paper.training.ema == EmaSettings(**PAPER_EMA)
    assert paper.training.mixed_precision == "fp16" and paper.training.horizontal_flip
    assert (paper.diffusion.timesteps, paper.diffusion.sigmoid_start, paper.diffusion.sigmoid_end) == (1000, -3, 3)


def test_unknown_missing_and_mistyped_keys_are_named() -> None:
    config = tiny_config()
    config["training"]["ema"]["beta"] = 0.9
    with pytest.raises(ValueError, match=r"training\.ema\.beta: unknown key"):
        run_settings_from_dict(config)
    config = tiny_config()
    del config["model"]["dropout"]
    with pytest.raises(ValueError, match=r"model\.dropout: missing key"):
        run_settings_from_dict(config)
    with pytest.raises(ValueError, match=r"training\.batch_size: expected int"):
        run_settings_from_dict(tiny_config(batch_size=8.0))
    with pytest.raises(ValueError, match=r"training\.mixed_precision: 'fp32' is not one of"):
        run_settings_from_dict(tiny_config(mixed_precision="fp32"))
    with pytest.raises(ValueError, match=r"training\.adam_betas: expected a list of 2"):
        run_settings_from_dict(tiny_config(adam_betas=[0.9]))
    settings = run_settings_from_dict(tiny_config())
    assert isinstance(settings, RunSettings)
    assert settings.training.adam_betas == (0.9, 0.99) and settings.model.channel_multipliers == (1, 2)


def test_model_shape_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.attention_levels"):
        build_unet(UNetSettings(16, 8, (1, 2), 1, (True,), 8, 4, 0.0))
    with pytest.raises(ValueError, match="model.sample_size"):
        build_unet(UNetSettings(18, 8, (1, 2, 4), 1, (False, False, True), 8, 4, 0.0))


# ---------------------------------------------------------------- EMA (ema_pytorch via lucidrains' Trainer)


def test_ema_schedule_matches_ema_pytorch() -> None:
    ema = EmaSettings(**PAPER_EMA)
    actions = {step: ema_action(step, ema) for step in (1, 2, 10, 11, 12, 101, 102, 110, 111, 112, 121)}
    assert actions == {
        1: "copy",
        2: "skip",
        10: "skip",
        11: "copy",
        12: "skip",
        101: "copy",
        102: "skip",
        110: "skip",
        111: "lerp",
        112: "skip",
        121: "lerp",
    }
    assert ema_decay(101, ema) == 0.0
    # step 111: e = 111 - 100 - 1 = 10, decay = 1 - 11^(-2/3), evaluated in float32
    assert ema_decay(111, ema) == float(np.float32(1) - np.float32(11) ** np.float32(-2 / 3))
    assert ema_decay(111, ema) == pytest.approx(1 - 11 ** (-2 / 3), rel=1e-6)
    assert ema_decay(1001, ema) == pytest.approx(1 - 901 ** (-2 / 3), rel=1e-6)
    assert ema_decay(5001, ema) == float(np.float32(0.995))  # capped at the configured decay


def test_ema_update_copies_skips_and_lerps() -> None:
    ema = EmaSettings(**PAPER_EMA)
    online = torch.nn.Linear(2, 1)
    shadow = copy.deepcopy(online).requires_grad_(False)
    with torch.no_grad():
        online.weight.fill_(1.0)
    update_ema(shadow, online, 1, ema)
    assert torch.equal(shadow.weight, online.weight)
    with torch.no_grad():
        online.weight.fill_(3.0)
    update_ema(shadow, online, 2, ema)
    assert shadow.weight.tolist() == [[1.0, 1.0]]
    update_ema(shadow, online, 111, ema)
    expected = torch.tensor(1.0).lerp(torch.tensor(3.0), 1 - ema_decay(111, ema)).item()
    assert shadow.weight.tolist() == [[expected, expected]]
    assert expected == pytest.approx(1 + 2 * (11 ** (-2 / 3)), rel=1e-6)


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
            UNetSettings(**{**TINY_MODEL, "channel_multipliers": (1, 2), "attention_levels": (False, True)})
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
    model = build_unet(UNetSettings(16, 8, (1, 2), 1, (False, True), 8, 4, 0.0))
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
    train(atlas, manifest, run_dir, run_settings_from_dict(config), provenance=PROVENANCE, progress=False)


def test_sigkilled_run_resumes_to_identical_log_and_weights(data: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(num_steps=24, checkpoint_every=6, state_every=3)
    settings = run_settings_from_dict(config)
    train(*data, tmp_path / "whole", settings, provenance=PROVENANCE, progress=False)

    kill_after = random.randint(4, 20)  # rows in the loss log; the first state is saved at step 3
    killed = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(target=_train_child, args=(*data, killed, config))
    child.start()
    log = killed / "loss_log.csv"
    while child.is_alive() and (not log.exists() or len(log.read_text().splitlines()) <= kill_after):
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL, f"run finished before the kill at step {kill_after}"
    restored = latest_state_dir(killed)
    assert restored is not None and int(restored.name[4:]) < 24

    result = train(*data, killed, settings, provenance=PROVENANCE, progress=False)
    assert result.finished, kill_after
    assert loss_columns(killed) == loss_columns(tmp_path / "whole"), f"killed after step {kill_after}"
    for name in ("online.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "whole" / "state" / "step000024" / name))
        b = load_file(str(killed / "state" / "step000024" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), (name, kill_after)
    index = [
        {k: v for k, v in r.items() if k != "bytes"} for r in read_rows(killed / "checkpoints" / "index.csv")
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
    second = train(*data, tmp_path, settings, provenance=PROVENANCE, max_wall_time_s=0.0, progress=False)
    assert (second.step, second.finished) == (6, False)
    third = train(*data, tmp_path, settings, provenance=PROVENANCE, progress=False)
    assert third.finished and loss_columns(tmp_path) == loss_columns(tiny_run)


# ---------------------------------------------------------------- bad input


def test_image_size_mismatch_names_key_and_file(data: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config()
    config["model"]["sample_size"] = 32
    with pytest.raises(ValueError, match=rf"{data[0].name}: /images is uint8 \(24, 16, 16\), but model.sample_size 32"):
        train(*data, tmp_path, run_settings_from_dict(config), provenance=PROVENANCE, progress=False)


def good_rows() -> list[list[str]]:
    """The fixture's manifest rows (index, source_name, subset), one list per image."""
    return [[str(i), f"img{i:03d}", "val" if i >= N_TRAIN else "train"] for i in range(N_TRAIN + N_VAL)]


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
        (with_cell(2, 1, "other"), "data row 3: source_name 'other' differs from the atlas's 'img002'"),
    ],
)
def test_bad_manifest_names_the_file(
    data: tuple[Path, Path], tmp_path: Path, rows: list[list[str]], message: str
) -> None:
    manifest = tmp_path / "bad_manifest.csv"
    manifest.write_text("index,source_name,subset\n" + "".join(",".join(row) + "\n" for row in rows))
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
    other = UNetSettings(**{**TINY_MODEL, "channel_multipliers": (1, 2), "attention_levels": (False, False)})
    with pytest.raises(ValueError, match=r"step000004.safetensors: model config differs .*down_block_types"):
        load_checkpoint_weights(tiny_run / "checkpoints" / "step000004.safetensors", "ema", other)


def test_corrupt_state_or_changed_settings_refuse_to_resume(
    data: tuple[Path, Path], tiny_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    settings = run_settings_from_dict(tiny_config(num_steps=16))
    with pytest.raises(ValueError, match="state.json: state was written under different settings"):
        train(*data, run_dir, settings, provenance=PROVENANCE, progress=False)
    optimizer = run_dir / "state" / "step000012" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-10])
    with pytest.raises(ValueError, match="optimizer.pt: state file is missing or corrupt"):
        train(*data, run_dir, run_settings_from_dict(tiny_config()), provenance=PROVENANCE, progress=False)


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
    command = [str(Path(sys.executable).parent / "radsynth"), "sample", "--checkpoint", str(checkpoint), "--n", "3",
               "--out", str(tmp_path / "s.zarr"), "--sampler", "ddim", "--steps", "3", "--batch-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    samples = open_samples([tmp_path / "s.zarr"])
    assert len(samples) == 3 and samples.images([0, 1, 2]).shape == (3, 16, 16)
    assert samples.attrs["sampler"] == "ddim" and samples.attrs["weights"] == "online"
    stored = zarr.open_group(tmp_path / "s.zarr", mode="r", zarr_format=3).attrs
    assert stored["provenance"]["checkpoint_file"] == str(checkpoint)
