"""Config sections `sampling` and `facing`: how images are drawn from a checkpoint, and the
classifier that makes them left-facing."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from radsynth.core.config import ConfigModel, Count, ListOf

#: The samplers that step from the last few network outputs; `sampling.solver_order` is theirs.
MultistepSampler = Literal["dpmsolver++", "unipc", "deis"]
#: The samplers a sampling set (and the FID set, evaluate.samples) may use.
Sampler = Literal["ddpm", "ddim", MultistepSampler]
#: The names of the multistep samplers (read by the workflow's rule params without torch).
MULTISTEP_SAMPLERS: tuple[str, ...] = get_args(MultistepSampler)
#: Which of a checkpoint's weights sample: the online network or its EMA.
Weights = Literal["online", "ema"]
#: How sampled values in [-1, 1] become uint8 grey levels (radsynth.sample.quantization).
Quantization = Literal["round", "truncate"]
#: A sampling set's name: a path component of results/samples/<set>/.
SetName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class SampleSetSettings(ConfigModel):
    """`sampling.sets.<name>`: one named set per selected checkpoint; each shard is one job."""

    n_images: Count
    images_per_shard: Count


class GatherSettings(ConfigModel):
    """`sampling.gather`: facing-classifier batch and the grid figure (no effect on images)."""

    batch_size: Count
    grid_images: Count


class SamplingSettings(ConfigModel):
    """Config section `sampling`."""

    sampler: Sampler
    steps: Count
    # order of the multistep samplers (2: DPM-Solver++ 2M, 3: 3M); ddpm and ddim do not read it
    solver_order: int = Field(ge=1, le=3)
    clip_sample: bool  # clamp predicted x0 to [-1, 1]
    quantization: Quantization
    weights: Weights
    base_seed: NonNegativeInt
    batch_size: Count  # images per network call
    sets: dict[SetName, SampleSetSettings] = Field(min_length=1)
    gather: GatherSettings


class LabelRule(ConfigModel):
    """`facing.label_rule`: how real images get facing labels from the anatomy at the annotated
    vertebral bodies."""

    band_start: float = Field(ge=0)  # body depths from a body's side wall to its band's near edge
    band_stop: float = Field(gt=0)  # body depths from the side wall to the band's far edge
    min_contrast: float = Field(ge=0)  # |mean contrast| (grey / 255) below which: unlabelled
    # C3..C7 levels (five) with four corners (and bands inside the image) required
    min_levels: int = Field(ge=1, le=5)

    @field_validator("band_stop")
    @classmethod
    def _band_has_width(cls, band_stop: float, info: ValidationInfo) -> float:
        """An empty band would measure no pixels."""
        band_start = info.data.get("band_start")
        if band_start is not None and band_stop <= band_start:
            raise ValueError(f"must be greater than band_start {band_start}, got {band_stop}")
        return band_stop


class Architecture(ConfigModel):
    """`facing.classifier`: the shape of the CNN."""

    channels: ListOf[PositiveInt] = Field(min_length=1)  # per conv block (each halves the side)
    analysis_size: int = Field(ge=8)  # images are average-pooled to this side first

    @field_validator("analysis_size")
    @classmethod
    def _room_for_every_block(cls, analysis_size: int, info: ValidationInfo) -> int:
        """Each conv block halves the side, which must stay at least one pixel."""
        channels = info.data.get("channels")
        if channels is not None and analysis_size < 2 ** len(channels):
            raise ValueError(
                f"{len(channels)} halving blocks (channels) need at least {2 ** len(channels)}, "
                f"got {analysis_size}"
            )
        return analysis_size


class Training(ConfigModel):
    """`facing.training`: the classifier's optimisation."""

    seed: NonNegativeInt
    steps: Count
    batch_size: Count
    lr: float = Field(gt=0)
    # share of the labelled training images kept out to measure accuracy
    holdout_fraction: float = Field(gt=0, lt=1)


class FacingSettings(ConfigModel):
    """Config section `facing`: left-facing standardization (paper 2.3)."""

    label_rule: LabelRule
    classifier: Architecture
    training: Training
