"""The training config as typed settings: sections `model`, `diffusion` and `training`."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch

from radsynth.train.diffusion import (
    sigmoid_beta_schedule,
)
from radsynth.train.model import UNetSettings
from radsynth.core.provenance import config_hash


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
