"""DDPM training as I-SynMed ran lucidrains' `Trainer`, rebuilt on diffusers + accelerate, with the
validation loss, weights-only checkpoint history and exact resume that I-SynMed lacks.

Reproduced from lucidrains' Trainer (denoising_diffusion_pytorch v2.x) and ema_pytorch (0.8.x):
Adam(lr, betas=(0.9, 0.99)), no LR schedule, gradient-norm clip 1.0, optional fp16 autocast with a
gradient scaler, micro-batches of 8 accumulated twice with each micro-batch loss divided by 2,
random horizontal flips (p = 0.5), a shuffling loader that cycles epochs and ends each epoch with a
short batch (DataLoader drop_last=False), and the EMA schedule of `ema_pytorch.EMA` (see
`ema_action`). The loss is lucidrains' weighted v-loss (`radsynth.diffusion`).

Randomness is a pure function of (seed, position), never a stream carried across steps: micro-batch
m (= step x accumulation + j) draws its flips, timesteps and noise from a generator seeded by
(seed, m), reseeds the global RNG from (seed, m) for dropout, and takes its images from epoch
m // batches_per_epoch's seeded permutation. Validation image i always gets the timestep and noise
seeded by (seed, atlas index i), so validation losses compare across checkpoints. A restored run
therefore needs no RNG state: resuming from step s repeats exactly what the uninterrupted run did
after s on the CPU (same thread count and library versions); on CUDA, nondeterministic kernels
(cuDNN convolution backward) make a resumed run statistically, not bitwise, equal.

Run directory:
- `checkpoints/step{step:06d}.safetensors` every `checkpoint_every` steps: online and EMA weights
  only (keys `online.*`, `ema.*`, stored as `checkpoint_dtype`), metadata with step, checkpoint
  number, model config, settings and provenance; `checkpoints/index.csv` lists them.
- `state/step{step:06d}/`: the full training state of the latest resume point only (online and
  EMA weights in float32, optimizer, gradient scaler, step, data position, wall time, file
  hashes). It is written to a temporary directory and renamed into place; older states are removed
  only afterwards, so a kill at any moment leaves at least one complete state (or none yet).
- `loss_log.csv`: one row per step (val columns filled at checkpoints); `train.log`: messages.

Runs longer than a cluster's time limit: each job calls `train` with the same arguments (and
optionally `until_step` or `max_wall_time_s`); it resumes from the latest state, trains until the
step or budget is reached, saves a state and returns `TrainResult(finished=False)`. The next job
continues. A killed job loses at most `state_every` steps, which are recomputed identically; rows
and checkpoints after the restored step are dropped first.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, TextIO

import h5py
import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from diffusers import UNet2DModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from radsynth.diffusion import (
    DiffusionTables,
    make_tables,
    q_sample,
    sigmoid_beta_schedule,
    uint8_to_model_range,
    v_target,
    weighted_v_loss_per_image,
)
from radsynth.model import UNetSettings, build_unet
from radsynth.atomic import atomic_output, publish_permissions, write_text_atomic
from radsynth.provenance import config_hash
from radsynth.split import read_manifest

# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class DiffusionSettings:
    """Config section `diffusion`: lucidrains' sigmoid schedule; its defaults are the paper's values."""

    timesteps: int  # I-SynMed --timesteps 1000
    sigmoid_start: float  # lucidrains sigmoid_beta_schedule start -3
    sigmoid_end: float  # end 3
    sigmoid_tau: float  # tau 1
    beta_clamp_max: float  # betas clipped at 0.999

    def betas(self) -> torch.Tensor:
        return sigmoid_beta_schedule(
            self.timesteps, self.sigmoid_start, self.sigmoid_end, self.sigmoid_tau, self.beta_clamp_max
        )


@dataclass(frozen=True)
class EmaSettings:
    """Config section `training.ema`: ema_pytorch.EMA as lucidrains' Trainer constructs it."""

    decay: float  # Trainer ema_decay 0.995 (I-SynMed --ema_decay 0.995)
    update_every: int  # Trainer ema_update_every 10
    update_after_step: int  # ema_pytorch default 100
    inv_gamma: float  # ema_pytorch default 1.0
    power: float  # ema_pytorch default 2/3


@dataclass(frozen=True)
class TrainingSettings:
    """Config section `training`."""

    seed: int
    num_steps: int  # paper: up to 160,000 optimizer steps
    batch_size: int  # paper 8 (micro-batch)
    gradient_accumulation_steps: int  # I-SynMed pretrain_ddpm.sh: 2
    learning_rate: float  # paper 5e-5
    adam_betas: tuple[float, float]  # lucidrains Trainer (0.9, 0.99)
    max_grad_norm: float  # lucidrains Trainer 1.0
    mixed_precision: Literal["no", "fp16", "bf16"]  # I-SynMed --amp: fp16 (needs CUDA)
    horizontal_flip: bool  # lucidrains augment_horizontal_flip True
    checkpoint_every: int  # paper 2,000 steps
    state_every: int  # radsynth: spacing of resume points
    checkpoint_dtype: Literal["float32", "float16"]  # storage of history weights
    val_batch_size: int  # images per validation forward pass (does not change the value)
    ema: EmaSettings

    def __post_init__(self) -> None:
        for key in (
            "num_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "checkpoint_every",
            "state_every",
            "val_batch_size",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"training.{key} must be at least 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class RunSettings:
    """The whole training config: sections `model`, `diffusion`, `training`."""

    model: UNetSettings
    diffusion: DiffusionSettings
    training: TrainingSettings


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check one config value against its annotated type; YAML lists become tuples."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return settings_from_dict(kind, value, key)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"{key}: {value!r} is not one of {typing.get_args(kind)}")
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(value) != len(kinds):
            raise ValueError(f"{key}: expected a list of {len(kinds)} values, got {value!r}")
        return tuple(_coerce(v, k, f"{key}[{i}]") for i, (v, k) in enumerate(zip(value, kinds)))
    numeric = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, numeric):
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def settings_from_dict(cls: type, values: Any, section: str) -> Any:
    """Build a settings dataclass from a config mapping; unknown or missing keys name their path."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{section or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    path = (lambda k: f"{section}.{k}") if section else (lambda k: k)
    for key in values:
        if key not in names:
            raise ValueError(f"{path(key)}: unknown key")
    for key in names:
        if key not in values:
            raise ValueError(f"{path(key)}: missing key")
    return cls(**{k: _coerce(values[k], hints[k], path(k)) for k in names})


def run_settings_from_dict(config: Mapping[str, Any]) -> RunSettings:
    """RunSettings from the config's {model, diffusion, training} sections."""
    return settings_from_dict(RunSettings, config, "")


def settings_hash(settings: RunSettings) -> str:
    """Hash stored in the state so a run never resumes under different settings."""
    return config_hash(dataclasses.asdict(settings))


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Subsets:
    """Atlas row indices of the training and validation images (sorted)."""

    train: np.ndarray
    val: np.ndarray


def read_atlas_images(atlas_h5: Path, sample_size: int) -> np.ndarray:
    """All images of the atlas as uint8 (N, size, size), after checking them against the config."""
    try:
        with h5py.File(atlas_h5, "r") as handle:
            if "images" not in handle or "size" not in handle.attrs:
                raise ValueError(f"{atlas_h5}: needs dataset /images and root attribute 'size'")
            size = int(handle.attrs["size"])
            images = handle["images"]
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
                raise ValueError(
                    f"{atlas_h5}: /images is {images.dtype} {images.shape}, expected uint8 (N, {size}, {size})"
                )
            if size != sample_size:
                raise ValueError(f"model.sample_size is {sample_size} but {atlas_h5} has size {size}")
            return images[...]
    except OSError as exc:
        raise OSError(f"{atlas_h5}: cannot read the HDF5 atlas ({exc})") from exc


def read_split_manifest(manifest_csv: Path, n_images: int) -> Subsets:
    """Train/val atlas indices from the split manifest; any bad row or empty subset is an error."""
    manifest = read_manifest(manifest_csv)
    index = pd.to_numeric(manifest["index"], errors="coerce")
    bad = manifest.index[~index.between(0, n_images - 1) | (index % 1 != 0)]
    if len(bad):
        raise ValueError(
            f"{manifest_csv}: data row {bad[0] + 1}: index {manifest['index'].iloc[bad[0]]} is not a row "
            f"of the atlas (0..{n_images - 1})"
        )
    if index.duplicated().any():
        raise ValueError(f"{manifest_csv}: atlas index {int(index[index.duplicated()].iloc[0])} appears more than once")
    subsets = {name: np.sort(index[manifest["subset"] == name].to_numpy(dtype=np.int64)) for name in ("train", "val")}
    for name, rows in subsets.items():
        if not len(rows):
            raise ValueError(f"{manifest_csv}: the {name!r} subset is empty")
    return Subsets(subsets["train"], subsets["val"])


def all_images(n_images: int, atlas_h5: Path) -> Subsets:
    """The full-data run: every atlas image trains, none validates."""
    if n_images == 0:
        raise ValueError(f"{atlas_h5}: the atlas holds no images to train on")
    return Subsets(np.arange(n_images), np.array([], dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# Randomness: pure functions of (seed, stream, index)

_STREAM_INIT, _STREAM_EPOCH, _STREAM_MICRO_BATCH, _STREAM_DROPOUT, _STREAM_VALIDATION = range(5)


def derived_seed(seed: int, stream: int, index: int) -> int:
    """A 64-bit seed for one (stream, index), independent across streams and indices."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)[0])


def seeded_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for one (stream, index): the same draws on any device or after any resume."""
    generator = torch.Generator()
    generator.manual_seed(derived_seed(seed, stream, index))
    return generator


def micro_batch_positions(n_train: int, batch_size: int, seed: int, micro_index: int) -> np.ndarray:
    """Positions (into the train list) of micro-batch `micro_index`.

    Each epoch is a seeded permutation cut into consecutive batches, the last one short, as
    lucidrains' cycled DataLoader(shuffle=True, drop_last=False) delivers them.
    """
    batches_per_epoch = -(-n_train // batch_size)
    epoch, batch = divmod(micro_index, batches_per_epoch)
    order = torch.randperm(n_train, generator=seeded_generator(seed, _STREAM_EPOCH, epoch)).numpy()
    return order[batch * batch_size : (batch + 1) * batch_size]


@dataclass(frozen=True)
class NoiseDraws:
    """The random inputs of one loss evaluation, drawn on the CPU."""

    flips: torch.Tensor  # (B,) bool
    timesteps: torch.Tensor  # (B,) int64
    noise: torch.Tensor  # (B, 1, H, W) float32

    def select(self, rows: slice) -> NoiseDraws:
        return NoiseDraws(self.flips[rows], self.timesteps[rows], self.noise[rows])


def micro_batch_draws(
    seed: int, micro_index: int, batch: int, size: int, num_timesteps: int, flip: bool
) -> NoiseDraws:
    """Flips (p = 0.5, torchvision's rule), uniform timesteps and Gaussian noise of one micro-batch."""
    generator = seeded_generator(seed, _STREAM_MICRO_BATCH, micro_index)
    flips = (torch.rand(batch, generator=generator) < 0.5) & flip
    timesteps = torch.randint(0, num_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, 1, size, size), generator=generator)
    return NoiseDraws(flips, timesteps, noise)


def validation_draws(seed: int, atlas_indices: np.ndarray, size: int, num_timesteps: int) -> NoiseDraws:
    """One fixed timestep and noise per validation image, seeded by its atlas index; no flips."""
    generators = [seeded_generator(seed, _STREAM_VALIDATION, int(i)) for i in atlas_indices]
    timesteps = torch.cat([torch.randint(0, num_timesteps, (1,), generator=g) for g in generators])
    noise = torch.cat([torch.randn((1, 1, size, size), generator=g) for g in generators])
    return NoiseDraws(torch.zeros(len(generators), dtype=torch.bool), timesteps, noise)


def process_rows(batch: int, rank: int, world: int) -> slice:
    """This process' rows of a global micro-batch (lucidrains' split_batches=True)."""
    bounds = np.linspace(0, batch, world + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


# ----------------------------------------------------------------------------------------------
# Loss and EMA


def diffusion_loss_per_image(
    model: torch.nn.Module,
    tables: DiffusionTables,
    images: torch.Tensor,
    draws: NoiseDraws,
    device: torch.device,
) -> torch.Tensor:
    """lucidrains' weighted v-loss of each image (uint8 (B, H, W) in), flipping where drawn."""
    x0 = uint8_to_model_range(images.to(device)).unsqueeze(1)
    x0 = torch.where(draws.flips.to(device).view(-1, 1, 1, 1), x0.flip(-1), x0)
    t, noise = draws.timesteps.to(device), draws.noise.to(device)
    prediction = model(q_sample(tables, x0, noise, t), t).sample
    return weighted_v_loss_per_image(tables, prediction, v_target(tables, x0, noise, t), t)


def ema_action(step: int, ema: EmaSettings) -> Literal["copy", "lerp", "skip"]:
    """What `ema_pytorch.EMA.update()` does when lucidrains' Trainer calls it after optimizer step `step`.

    The Trainer calls update() once per optimizer step (1-based `step`), so EMA's own counter is
    step - 1 at the call. ema_pytorch 0.8 `EMA.update`: the first call copies the online weights;
    afterwards only every `update_every`-th call acts, copying while the counter is at most
    `update_after_step` and lerping after it. Steps 1, 11, ..., 101 copy; 111, 121, ... lerp.
    """
    counter = step - 1
    if counter == 0:
        return "copy"
    if counter % ema.update_every:
        return "skip"
    return "copy" if counter <= ema.update_after_step else "lerp"


def ema_decay(step: int, ema: EmaSettings) -> float:
    """The decay ema_pytorch's `get_current_decay` gives at the update after optimizer step `step`.

    Its counter has been incremented to `step` by then: e = step - update_after_step - 1,
    decay = min(1 - (1 + e / inv_gamma) ** -power, decay), 0 when e <= 0; computed in float32
    like ema_pytorch's tensor arithmetic (reaches 0.995 after about 2,930 steps).
    """
    epoch = torch.tensor(float(max(step - ema.update_after_step - 1, 0)), dtype=torch.float32)
    if epoch.item() <= 0:
        return 0.0
    value = 1 - (1 + epoch / ema.inv_gamma) ** -ema.power
    return float(value.clamp(max=ema.decay))


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, online: torch.nn.Module, step: int, ema: EmaSettings) -> None:
    """Apply `ema_action(step)` to every floating parameter and buffer, as ema_pytorch does."""
    action = ema_action(step, ema)
    if action == "skip":
        return
    weight = 1.0 - ema_decay(step, ema)
    pairs = [*zip(ema_model.parameters(), online.parameters()), *zip(ema_model.buffers(), online.buffers())]
    for shadow, current in pairs:
        if not torch.is_floating_point(shadow):
            continue
        if action == "copy":
            shadow.copy_(current)
        else:
            shadow.lerp_(current, weight)


# ----------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoint history, full state, logs

CHECKPOINT_DIR = "checkpoints"
STATE_DIR = "state"
LOSS_LOG = "loss_log.csv"
INDEX_CSV = "index.csv"
LOSS_LOG_COLUMNS = ("step", "train_loss", "val_loss", "val_loss_ema", "lr", "wall_time_s")
INDEX_COLUMNS = ("step", "checkpoint", "path", "bytes", "train_loss", "val_loss", "val_loss_ema")
_STATE_NAME = re.compile(r"^step(\d{6,})$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def checkpoint_filename(step: int) -> str:
    return f"step{step:06d}.safetensors"


def _csv_text(columns: tuple[str, ...], rows: list[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: float | int | str | None) -> str:
    """CSV cell: blank for None, shortest round-trip repr for floats (bit-exact comparisons)."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def loss_log_row(
    step: int, train_loss: float, val: float | None, val_ema: float | None, lr: float, wall: float
) -> str:
    return ",".join(_cell(v) for v in (step, train_loss, val, val_ema, lr, round(wall, 3))) + "\n"


def model_config_json(model: UNet2DModel) -> str:
    """The diffusers config that rebuilds the network, without diffusers' private keys."""
    public = {k: v for k, v in model.config.items() if not k.startswith("_")}
    return json.dumps(public, sort_keys=True)


def _save_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> int:
    """Atomically write a safetensors file; returns its size in bytes."""
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), dict(metadata))
    return path.stat().st_size


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; unreadable files raise naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc


def save_history_checkpoint(
    path: Path, online: torch.nn.Module, ema_model: torch.nn.Module, dtype: str, metadata: Mapping[str, str]
) -> int:
    """Weights-only checkpoint (online and EMA, `dtype`); returns bytes written."""
    tensors = {f"online.{k}": v.to(_DTYPES[dtype]) for k, v in online.state_dict().items()}
    tensors.update({f"ema.{k}": v.to(_DTYPES[dtype]) for k, v in ema_model.state_dict().items()})
    return _save_safetensors(path, tensors, {**metadata, "dtype": dtype})


def read_checkpoint_settings(path: Path) -> RunSettings:
    """The run settings a history checkpoint was trained under (stored in its metadata)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if "settings" not in metadata:
        raise ValueError(f"{path}: no settings in the checkpoint metadata (not a radsynth history checkpoint)")
    return run_settings_from_dict(json.loads(metadata["settings"]))


def load_checkpoint_weights(
    path: Path, which: Literal["ema", "online"], settings: UNetSettings
) -> UNet2DModel:
    """A float32 U-Net in eval mode with the `which` weights of a history checkpoint made under `settings`."""
    if which not in ("ema", "online"):
        raise ValueError(f"which must be 'ema' or 'online', got {which!r}")
    tensors, metadata = _read_safetensors(Path(path))
    model = build_unet(settings)
    if "model_config" not in metadata:
        raise ValueError(f"{path}: no model_config in the checkpoint metadata")
    stored, expected = json.loads(metadata["model_config"]), json.loads(model_config_json(model))
    differing = sorted(k for k in stored.keys() | expected.keys() if stored.get(k) != expected.get(k))
    if differing:
        raise ValueError(f"{path}: model config differs from the model settings in {differing}")
    prefix = f"{which}."
    weights = {k[len(prefix) :]: v.to(torch.float32) for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: {which} weights do not fit the model ({exc})") from exc
    return model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latest_state_dir(run_dir: Path) -> Path | None:
    """The complete state with the highest step; `.tmp-*` directories are unfinished writes."""
    root = run_dir / STATE_DIR
    found = [p for p in root.iterdir() if _STATE_NAME.match(p.name) and p.is_dir()] if root.is_dir() else []
    return max(found, key=lambda p: int(_STATE_NAME.match(p.name).group(1)), default=None)


def _write_state_files(folder: Path, parts: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Write the state's files, then state.json with their hashes (all fsynced before the rename)."""
    for name, part in parts.items():
        if name.endswith(".safetensors"):
            save_file({k: v.detach().contiguous().cpu() for k, v in part.items()}, str(folder / name))
        else:
            torch.save(part, folder / name)
    hashes = {name: _sha256(folder / name) for name in parts}
    (folder / "state.json").write_text(json.dumps({**info, "files": hashes}, indent=1, sort_keys=True))
    for name in [*parts, "state.json"]:
        publish_permissions(folder / name, 0o666)
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    publish_permissions(folder, 0o777)


def save_state(run_dir: Path, step: int, parts: Mapping[str, Any], info: Mapping[str, Any]) -> Path:
    """Write the full state for `step` as a new directory, then remove every older one."""
    root = run_dir / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    _write_state_files(tmp, parts, {**info, "step": step})
    final = root / f"step{step:06d}"
    os.rename(tmp, final)
    for other in root.iterdir():
        if other != final:
            shutil.rmtree(other, ignore_errors=True)
    return final


def read_state(folder: Path, expected_settings_hash: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(info, parts) of a saved state, verifying settings and every file's hash."""
    info_path = folder / "state.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{info_path}: missing or unreadable training state ({exc})") from exc
    if info.get("settings_hash") != expected_settings_hash:
        raise ValueError(f"{info_path}: state was written under different settings; use a new run directory")
    if not isinstance(info.get("files"), dict) or "step" not in info:
        raise ValueError(f"{info_path}: lacks the 'files' and 'step' entries of a training state")
    parts: dict[str, Any] = {}
    for name, digest in info["files"].items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise ValueError(f"{path}: state file is missing or corrupt (hash mismatch)")
        if name.endswith(".safetensors"):
            parts[name] = _read_safetensors(path)[0]
        else:
            parts[name] = torch.load(path, map_location="cpu", weights_only=True)
    return info, parts


def truncate_loss_log(path: Path, step: int) -> None:
    """Keep the header and the rows of steps 1..`step`; later rows will be recomputed."""
    header = ",".join(LOSS_LOG_COLUMNS) + "\n"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else [header]
    if lines[0] != header:
        raise ValueError(f"{path}: header is not {header.strip()!r}")
    kept = lines[1 : step + 1]
    for number, line in enumerate(kept, start=1):
        if not line.endswith("\n") or line.split(",")[0] != str(number):
            raise ValueError(f"{path} line {number + 1}: expected the complete row of step {number}")
    if len(kept) != step:
        raise ValueError(f"{path}: has {len(kept)} step rows but the restored state is at step {step}")
    write_text_atomic(path, header + "".join(kept))


def read_index(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _truncate_history(run_dir: Path, step: int) -> None:
    """Drop checkpoints (files and index rows) made after `step`: the resumed run remakes them."""
    folder = run_dir / CHECKPOINT_DIR
    kept = [row for row in read_index(folder / INDEX_CSV) if int(row["step"]) <= step]
    write_text_atomic(folder / INDEX_CSV, _csv_text(INDEX_COLUMNS, kept))
    for path in folder.glob("step*.safetensors"):
        if int(path.stem[len("step") :]) > step:
            path.unlink()


# ----------------------------------------------------------------------------------------------
# The training run


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps completed
    finished: bool  # True when training.num_steps is reached


@dataclass
class _Run:
    """Everything one `train` call works on."""

    settings: RunSettings
    run_dir: Path
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by accelerate (DDP-wrapped on several GPUs)
    ema_model: UNet2DModel
    optimizer: Any
    tables: DiffusionTables
    train_images: torch.Tensor  # uint8 (N, H, W) on the CPU
    val_images: torch.Tensor
    val_indices: np.ndarray
    logger: logging.Logger
    provenance: Mapping[str, str]
    wall_before_s: float = 0.0  # training wall time of earlier jobs
    job_start: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def online(self) -> UNet2DModel:
        return self.accelerator.unwrap_model(self.model)

    def wall_time_s(self) -> float:
        return self.wall_before_s + time.monotonic() - self.job_start


def _check_mixed_precision(training: TrainingSettings) -> None:
    """Refuse fp16 without CUDA rather than silently training with other numerics."""
    if training.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError(
            "training.mixed_precision is 'fp16' (I-SynMed's --amp) but no CUDA device is available; "
            "fp16 autocast needs a GPU: set it to 'no' for CPU runs"
        )


def _check_sharding(training: TrainingSettings, n_train: int, world: int) -> None:
    """Every process needs at least one image of every micro-batch, the epoch's short one included."""
    short = n_train % training.batch_size
    if training.batch_size < world or 0 < short < world:
        raise ValueError(
            f"training.batch_size {training.batch_size} with {n_train} training images leaves a "
            f"batch smaller than the {world} processes"
        )


@contextlib.contextmanager
def _run_logger(run_dir: Path, enabled: bool) -> Iterator[logging.Logger]:
    """A logger writing to run_dir/train.log (main process only) for the duration of one call."""
    logger = logging.getLogger(f"radsynth.training.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(run_dir / "train.log") if enabled else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def _load_images(
    atlas_h5: Path, manifest_csv: Path | None, sample_size: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    images = read_atlas_images(atlas_h5, sample_size)
    subsets = (
        all_images(len(images), atlas_h5)
        if manifest_csv is None
        else read_split_manifest(manifest_csv, len(images))
    )
    return torch.from_numpy(images[subsets.train]), torch.from_numpy(images[subsets.val]), subsets.val


def _build_run(
    settings: RunSettings,
    images: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    run_dir: Path,
    logger: logging.Logger,
    provenance: Mapping[str, str],
) -> _Run:
    """Accelerator, seeded model init, EMA copy, Adam and the diffusion tables."""
    training = settings.training
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
    )
    _check_sharding(training, len(images[0]), accelerator.num_processes)
    torch.manual_seed(derived_seed(training.seed, _STREAM_INIT, 0))
    online = build_unet(settings.model)
    ema_model = copy.deepcopy(online).requires_grad_(False).to(accelerator.device)
    optimizer = torch.optim.Adam(online.parameters(), lr=training.learning_rate, betas=training.adam_betas)
    model, optimizer = accelerator.prepare(online, optimizer)
    tables = make_tables(settings.diffusion.betas()).to(accelerator.device)
    return _Run(
        settings, run_dir, accelerator, model, ema_model, optimizer, tables, *images, logger, provenance
    )


def _state_parts(run: _Run) -> dict[str, Any]:
    parts = {
        "online.safetensors": run.online.state_dict(),
        "ema.safetensors": run.ema_model.state_dict(),
        "optimizer.pt": run.optimizer.state_dict(),
    }
    if run.accelerator.scaler is not None:
        parts["scaler.pt"] = run.accelerator.scaler.state_dict()
    return parts


def _save_run_state(run: _Run, step: int) -> None:
    training = run.settings.training
    micro = step * training.gradient_accumulation_steps
    per_epoch = -(-len(run.train_images) // training.batch_size)
    info = {
        "settings_hash": settings_hash(run.settings),
        "wall_time_s": run.wall_time_s(),
        "micro_batches_done": micro,
        "epoch": micro // per_epoch,
        "batch_in_epoch": micro % per_epoch,
        "randomness": "derived from (training.seed, micro-batch index); no RNG state needed",
        "provenance": dict(run.provenance),
    }
    folder = save_state(run.run_dir, step, _state_parts(run), info)
    run.logger.info("saved training state %s", folder)


def _restore(run: _Run) -> int:
    """Load the latest state (every process) and cut logs back to it (main); 0 for a fresh run."""
    folder = latest_state_dir(run.run_dir)
    main = run.accelerator.is_main_process
    if folder is None:
        if main:
            write_text_atomic(run.run_dir / LOSS_LOG, ",".join(LOSS_LOG_COLUMNS) + "\n")
            shutil.rmtree(run.run_dir / CHECKPOINT_DIR, ignore_errors=True)
        run.logger.info("starting a new run in %s", run.run_dir)
        return 0
    info, parts = read_state(folder, settings_hash(run.settings))
    run.online.load_state_dict(parts["online.safetensors"])
    run.ema_model.load_state_dict(parts["ema.safetensors"])
    run.optimizer.load_state_dict(parts["optimizer.pt"])
    if run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(parts["scaler.pt"])
    run.wall_before_s = float(info["wall_time_s"])
    if main:
        truncate_loss_log(run.run_dir / LOSS_LOG, info["step"])
        _truncate_history(run.run_dir, info["step"])
    run.logger.info("resumed from %s at step %d", folder, info["step"])
    return int(info["step"])


def _optimizer_step(run: _Run, step: int) -> float:
    """Optimizer step `step` + 1: accumulated micro-batches, clipping, Adam; returns the mean loss."""
    training, accelerator = run.settings.training, run.accelerator
    size = run.settings.model.sample_size
    losses = []
    for j in range(training.gradient_accumulation_steps):
        micro = step * training.gradient_accumulation_steps + j
        positions = micro_batch_positions(len(run.train_images), training.batch_size, training.seed, micro)
        draws = micro_batch_draws(
            training.seed, micro, len(positions), size, run.tables.num_timesteps, training.horizontal_flip
        )
        rows = process_rows(len(positions), accelerator.process_index, accelerator.num_processes)
        torch.manual_seed(derived_seed(training.seed, _STREAM_DROPOUT, micro))
        with accelerator.accumulate(run.model):
            with accelerator.autocast():
                images = run.train_images[torch.from_numpy(positions[rows])]
                loss = diffusion_loss_per_image(
                    run.model, run.tables, images, draws.select(rows), accelerator.device
                ).mean()
            accelerator.backward(loss)  # divides by gradient_accumulation_steps, as lucidrains does
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(run.model.parameters(), training.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
        losses.append(loss.detach())
    return float(accelerator.reduce(torch.stack(losses).mean(), "mean"))


@torch.no_grad()
def validation_loss(run: _Run, model: torch.nn.Module) -> float:
    """Mean per-image weighted v-loss over the validation set with its fixed draws."""
    training, size = run.settings.training, run.settings.model.sample_size
    model.eval()
    total = 0.0
    for start in range(0, len(run.val_indices), training.val_batch_size):
        chunk = slice(start, start + training.val_batch_size)
        draws = validation_draws(training.seed, run.val_indices[chunk], size, run.tables.num_timesteps)
        with run.accelerator.autocast():
            losses = diffusion_loss_per_image(
                model, run.tables, run.val_images[chunk], draws, run.accelerator.device
            )
        total += float(losses.double().sum())
    model.train()
    return total / len(run.val_indices)


def _write_checkpoint(run: _Run, step: int, train_loss: float) -> tuple[float | None, float | None]:
    """Validation losses (split run), history checkpoint and its index row; returns the losses."""
    training = run.settings.training
    has_val = len(run.val_indices) > 0
    val = validation_loss(run, run.online) if has_val else None
    val_ema = validation_loss(run, run.ema_model) if has_val else None
    number = step // training.checkpoint_every
    relative = f"{CHECKPOINT_DIR}/{checkpoint_filename(step)}"
    metadata = {
        "step": str(step),
        "checkpoint": str(number),
        "model_config": model_config_json(run.online),
        "settings": json.dumps(dataclasses.asdict(run.settings), sort_keys=True),
        "provenance": json.dumps(dict(run.provenance), sort_keys=True),
    }
    nbytes = save_history_checkpoint(
        run.run_dir / relative, run.online, run.ema_model, training.checkpoint_dtype, metadata
    )
    index_path = run.run_dir / CHECKPOINT_DIR / INDEX_CSV
    rows = [r for r in read_index(index_path) if int(r["step"]) < step]
    rows.append(
        {
            "step": step,
            "checkpoint": number,
            "path": relative,
            "bytes": nbytes,
            "train_loss": _cell(train_loss),
            "val_loss": _cell(val),
            "val_loss_ema": _cell(val_ema),
        }
    )
    write_text_atomic(index_path, _csv_text(INDEX_COLUMNS, rows))
    run.logger.info(
        "step %d: checkpoint %d (%d bytes) val_loss=%s val_loss_ema=%s", step, number, nbytes, val, val_ema
    )
    return val, val_ema


def _finish_step(run: _Run, step: int, train_loss: float, log: TextIO, save: bool) -> None:
    """Main process: checkpoint and validation when due, the loss-log row, then the state if asked."""
    training = run.settings.training
    val, val_ema = (
        _write_checkpoint(run, step, train_loss) if step % training.checkpoint_every == 0 else (None, None)
    )
    log.write(
        loss_log_row(step, train_loss, val, val_ema, run.optimizer.param_groups[0]["lr"], run.wall_time_s())
    )
    log.flush()
    if save:
        _save_run_state(run, step)


def _out_of_time(run: _Run, max_wall_time_s: float | None) -> bool:
    """Whether this job's budget is spent, agreed by all processes so they stop together."""
    if max_wall_time_s is None:
        return False
    spent = torch.tensor(
        float(time.monotonic() - run.job_start > max_wall_time_s), device=run.accelerator.device
    )
    return bool(run.accelerator.reduce(spent, "sum") > 0)


def _train_loop(run: _Run, start: int, stop: int, max_wall_time_s: float | None, progress: bool) -> int:
    main = run.accelerator.is_main_process
    step = start
    log_file = open(run.run_dir / LOSS_LOG, "a") if main else contextlib.nullcontext()
    bar = tqdm(total=stop, initial=start, desc="train", file=sys.stderr, disable=not (progress and main))
    with log_file as log, bar:
        while step < stop:
            train_loss = _optimizer_step(run, step)
            step += 1
            update_ema(run.ema_model, run.online, step, run.settings.training.ema)
            out_of_time = _out_of_time(run, max_wall_time_s)
            save = step % run.settings.training.state_every == 0 or step == stop or out_of_time
            if main:
                _finish_step(run, step, train_loss, log, save)
            run.accelerator.wait_for_everyone()
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}")
            if out_of_time:
                run.logger.info("wall-time budget of %s s spent at step %d", max_wall_time_s, step)
                break
    return step


def train(
    atlas_h5: Path,
    manifest_csv: Path | None,
    run_dir: Path,
    settings: RunSettings,
    *,
    provenance: Mapping[str, str],
    until_step: int | None = None,
    max_wall_time_s: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) the DDPM in `run_dir` up to `until_step` (default: training.num_steps).

    `manifest_csv` None trains on every atlas image without validation (the full-data run); a
    manifest must have both 'train' and 'val' rows (the split run). `max_wall_time_s` ends the
    job cleanly with a saved state once this job has trained that long.
    """
    run_dir = Path(run_dir)
    _check_mixed_precision(settings.training)
    stop = settings.training.num_steps if until_step is None else until_step
    if not 1 <= stop <= settings.training.num_steps:
        raise ValueError(
            f"until_step {until_step} is outside 1..training.num_steps ({settings.training.num_steps})"
        )
    images = _load_images(
        Path(atlas_h5), None if manifest_csv is None else Path(manifest_csv), settings.model.sample_size
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_logger(run_dir, enabled=PartialState().is_main_process) as logger:
        run = _build_run(settings, images, run_dir, logger, provenance)
        start = _restore(run)
        run.job_start = time.monotonic()
        step = _train_loop(run, start, stop, max_wall_time_s, progress) if start < stop else start
        logger.info("stopped at step %d of %d", step, settings.training.num_steps)
    return TrainResult(step=step, finished=step == settings.training.num_steps)


# ----------------------------------------------------------------------------------------------
# One scheduler job

#: Exit status of a job that stopped at its time budget (BSD EX_TEMPFAIL): rerun it to continue.
EXIT_RESUME_LATER = 75


def train_job(
    atlas_h5: Path,
    manifest_csv: Path | None,
    run_dir: Path,
    config: Mapping[str, Any],
    done_json: Path,
    *,
    max_wall_time_s: float,
    provenance: Mapping[str, str],
) -> int:
    """One cluster job of a training run: train until finished or out of time.

    Returns 0 and writes `done_json` (what downstream rules depend on) when the run reached
    training.num_steps; returns EXIT_RESUME_LATER otherwise, so the scheduler's retry (or the
    user's next `snakemake` call) starts a job that resumes from the saved state.
    """
    settings = run_settings_from_dict({key: config[key] for key in ("model", "diffusion", "training")})
    result = train(atlas_h5, manifest_csv, run_dir, settings, provenance=provenance, max_wall_time_s=max_wall_time_s)
    if not result.finished:
        print(
            f"{run_dir}: stopped at step {result.step} of {settings.training.num_steps} after "
            f"{max_wall_time_s / 3600:.2f} h; rerun to resume from the saved state",
            file=sys.stderr,
        )
        return EXIT_RESUME_LATER
    record = {
        "run_dir": str(run_dir),
        "step": result.step,
        "checkpoint_index": str(Path(run_dir) / "checkpoints" / "index.csv"),
        "loss_log": str(Path(run_dir) / "loss_log.csv"),
        "provenance": dict(provenance),
    }
    write_text_atomic(Path(done_json), json.dumps(record, indent=2) + "\n")
    return 0
