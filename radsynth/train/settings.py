"""The training config as typed settings: sections `model`, `diffusion` and `training` as a run
uses them and its checkpoints store them (the keys themselves: radsynth.core.settings.train)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import model_validator

from radsynth.core.config import ConfigModel, load_settings
from radsynth.core.settings.train import DiffusionSettings, TrainingSettings
from radsynth.train.diffusion import sigmoid_beta_schedule
from radsynth.train.model import UNetSettings


class DiffusionSchedule(DiffusionSettings):
    """The `diffusion` section and the beta schedule it defines."""

    def betas(self) -> torch.Tensor:
        return sigmoid_beta_schedule(
            self.timesteps,
            self.sigmoid_start,
            self.sigmoid_end,
            self.sigmoid_tau,
            self.beta_clamp_max,
        )


class StoredTrainingSettings(TrainingSettings):
    """The `training` section as history checkpoints store it (the config's keys:
    TrainingSettings). Settings stored before `training.compile` existed have none: those runs
    trained eagerly. The key is operational, so a run's identity does not change."""

    @model_validator(mode="before")
    @classmethod
    def _stored_before_compile(cls, values: Any) -> Any:
        if isinstance(values, dict) and "compile" not in values:
            return {**values, "compile": False}
        return values


class RunSettings(ConfigModel):
    """What a training run depends on: sections `model`, `diffusion`, `training`."""

    model: UNetSettings
    diffusion: DiffusionSchedule
    training: StoredTrainingSettings


def run_settings_from_dict(config: Mapping[str, Any]) -> RunSettings:
    """RunSettings from the config's {model, diffusion, training} sections, or from the settings
    a checkpoint stored."""
    return load_settings(RunSettings, config)
