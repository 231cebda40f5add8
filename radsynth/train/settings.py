"""The training config as typed settings: sections `model`, `diffusion` and `training`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field

from radsynth.core.config import ConfigModel, ListOf, load_settings
from radsynth.train.diffusion import sigmoid_beta_schedule
from radsynth.train.model import UNetSettings


class DiffusionSettings(ConfigModel):
    """Config section `diffusion`: lucidrains' sigmoid schedule; its defaults are the paper's values."""

    timesteps: int  # I-SynMed --timesteps 1000
    sigmoid_start: float  # lucidrains sigmoid_beta_schedule start -3
    sigmoid_end: float  # end 3
    sigmoid_tau: float  # tau 1
    beta_clamp_max: float  # betas clipped at 0.999

    def betas(self) -> torch.Tensor:
        return sigmoid_beta_schedule(
            self.timesteps,
            self.sigmoid_start,
            self.sigmoid_end,
            self.sigmoid_tau,
            self.beta_clamp_max,
        )


class EmaSettings(ConfigModel):
    """Config section `training.ema`: ema_pytorch.EMA as lucidrains' Trainer constructs it."""

    decay: float  # Trainer ema_decay 0.995 (I-SynMed --ema_decay 0.995)
    update_every: int  # Trainer ema_update_every 10
    update_after_step: int  # ema_pytorch default 100
    inv_gamma: float  # ema_pytorch default 1.0
    power: float  # ema_pytorch default 2/3


class TrainingSettings(ConfigModel):
    """Config section `training`."""

    seed: int
    num_steps: int = Field(ge=1)  # paper: up to 160,000 optimizer steps
    batch_size: int = Field(ge=1)  # paper 8 (micro-batch)
    gradient_accumulation_steps: int = Field(ge=1)  # I-SynMed pretrain_ddpm.sh: 2
    learning_rate: float  # paper 5e-5
    adam_betas: ListOf[float] = Field(min_length=2, max_length=2)  # lucidrains Trainer (0.9, 0.99)
    max_grad_norm: float  # lucidrains Trainer 1.0
    mixed_precision: Literal["no", "fp16", "bf16"]  # I-SynMed --amp: fp16 (needs CUDA)
    horizontal_flip: bool  # lucidrains augment_horizontal_flip True
    checkpoint_every: int = Field(ge=1)  # paper 2,000 steps
    state_every: int = Field(ge=1)  # radsynth: spacing of resume points
    checkpoint_dtype: Literal["float32", "float16"]  # storage of history weights
    val_batch_size: int = Field(
        ge=1
    )  # images per validation forward pass (does not change the value)
    ema: EmaSettings


class RunSettings(ConfigModel):
    """The whole training config: sections `model`, `diffusion`, `training`."""

    model: UNetSettings
    diffusion: DiffusionSettings
    training: TrainingSettings


def run_settings_from_dict(config: Mapping[str, Any]) -> RunSettings:
    """RunSettings from the config's {model, diffusion, training} sections."""
    return load_settings(RunSettings, config)
