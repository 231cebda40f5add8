"""The whole config as one typed model, each section defined once, in the module of its stage's
name. Defaults live in the presets (config/config.yaml, config/csxa.yaml), never here: every key
a run uses is in its config file. The JSON schema (workflow/schemas/config.schema.yaml) is
generated from these models (`python -m radsynth.core.settings.schema`).

Imports nothing heavy (no torch, no numpy): the Snakefile imports it to validate the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from radsynth.core.config import ConfigError, ConfigModel, check_config, load_settings
from radsynth.core.settings.anatomy import AnatomySettings
from radsynth.core.settings.audit import AuditSettings
from radsynth.core.settings.data import DataSettings, PreprocessSettings, SplitSettings
from radsynth.core.settings.evaluate import EvaluateSettings
from radsynth.core.settings.release import ReleaseSettings
from radsynth.core.settings.sample import FacingSettings, SamplingSettings
from radsynth.core.settings.train import (
    CheckpointsSettings,
    DiffusionSettings,
    ModelSettings,
    TrainingSettings,
    TrainJobsSettings,
)
from radsynth.core.settings.turing import TuringSettings

#: The presets shipped with radsynth: config.yaml (the demo) and csxa.yaml (the paper).
PRESETS = Path(__file__).resolve().parents[3] / "config"


class RadsynthConfig(ConfigModel):
    """A whole radsynth config, sections in DAG order."""

    data: DataSettings
    preprocess: PreprocessSettings
    split: SplitSettings
    model: ModelSettings
    diffusion: DiffusionSettings
    training: TrainingSettings
    train_jobs: TrainJobsSettings
    checkpoints: CheckpointsSettings
    sampling: SamplingSettings
    evaluate: EvaluateSettings
    anatomy: AnatomySettings
    audit: AuditSettings
    release: ReleaseSettings
    facing: FacingSettings
    turing: TuringSettings


def validate_config(config: Mapping[str, Any]) -> RadsynthConfig:
    """The config as settings, after the checks across keys; one ConfigError names every bad
    key by its dotted path."""
    settings = load_settings(RadsynthConfig, config)
    check_config(config)
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's YAML mapping; a missing, unreadable or non-mapping file is a ConfigError
    naming it."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {values!r}")
    return values


def load_config_file(path: Path) -> RadsynthConfig:
    """A whole config file, validated as the Snakefile validates it; errors name the file."""
    values = read_config_file(path)
    try:
        return validate_config(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@cache
def preset(name: str) -> RadsynthConfig:
    """A shipped preset by file name (config.yaml, csxa.yaml), read once per process."""
    return load_config_file(PRESETS / name)
