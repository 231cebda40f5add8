"""Config sections `model`, `diffusion`, `training`, `train_jobs` and `checkpoints`: the DDPM and
its two training runs. The paper's values and where they come from are in config/csxa.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from radsynth.core.config import ConfigModel, Count, ListOf

#: Keys only the diffusers architecture has; lucidrains' Unet has no equivalent.
DIFFUSERS_ONLY = ("layers_per_block", "norm_num_groups")


class ModelSettings(ConfigModel):
    """Config section `model`: the U-Net's architecture and shape."""

    # The diffusers-only keys in the schema too: required for diffusers, refused for lucidrains.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"architecture": {"const": "diffusers"}}},
            "then": {"required": list(DIFFUSERS_ONLY)},
            "else": {"properties": {key: {"not": {}} for key in DIFFUSERS_ONLY}},
        }
    )

    architecture: Literal["lucidrains", "diffusers"]  # paper: lucidrains
    sample_size: int = Field(ge=8)  # image side in pixels; must equal preprocess.size
    base_channels: Count  # lucidrains `dim`
    channel_multipliers: ListOf[Count] = Field(min_length=1)  # lucidrains `dim_mults`
    # Per level, full self-attention (true) or else lucidrains' linear attention / diffusers' none
    # (paper: innermost only, lucidrains' default); both add full attention in the middle block.
    attention_levels: ListOf[bool] = Field(min_length=1)
    attention_head_dim: Count  # lucidrains attn_dim_head
    dropout: float = Field(ge=0, le=1)
    # diffusers only (absent for lucidrains): ResNet blocks per encoder level (decoder levels get
    # one more), GroupNorm groups.
    layers_per_block: Count | None = Field(default=None, validate_default=True)
    norm_num_groups: Count | None = Field(default=None, validate_default=True)

    @field_validator(*DIFFUSERS_ONLY)
    @classmethod
    def _diffusers_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Required for diffusers, refused for lucidrains: a key that would be ignored must not
        be set."""
        architecture = info.data.get("architecture")
        if architecture == "diffusers" and value is None:
            raise ValueError("missing key (architecture diffusers needs it)")
        if architecture == "lucidrains" and value is not None:
            raise ValueError("diffusers-only key: remove it for architecture lucidrains")
        return value


class DiffusionSettings(ConfigModel):
    """Config section `diffusion`: lucidrains' sigmoid beta schedule."""

    timesteps: int = Field(ge=2)
    sigmoid_start: float
    sigmoid_end: float
    sigmoid_tau: float = Field(gt=0)
    beta_clamp_max: float = Field(gt=0, le=1)  # betas are clipped at this value


class EmaSettings(ConfigModel):
    """Config section `training.ema`: ema_pytorch.EMA as lucidrains' Trainer constructs it."""

    decay: float = Field(ge=0, le=1)
    update_every: Count
    update_after_step: NonNegativeInt
    inv_gamma: float = Field(gt=0)
    power: float = Field(gt=0)


class TrainingSettings(ConfigModel):
    """Config section `training`."""

    seed: NonNegativeInt
    num_steps: Count
    batch_size: Count  # micro-batch
    gradient_accumulation_steps: Count
    learning_rate: float = Field(gt=0)
    adam_betas: ListOf[Annotated[float, Field(ge=0, lt=1)]] = Field(min_length=2, max_length=2)
    max_grad_norm: float = Field(gt=0)
    # fp16 (I-SynMed's amp, with a gradient scaler whose state is resumed) needs CUDA; bf16 runs on
    # CPUs too
    mixed_precision: Literal["no", "fp16", "bf16"]
    horizontal_flip: bool
    checkpoint_every: Count  # checkpoint k is step k x checkpoint_every
    state_every: Count  # spacing of resume points
    checkpoint_dtype: Literal["float32", "float16"]  # storage of history weights
    val_batch_size: Count  # images per validation forward pass (does not change the value)
    # torch.compile of the network for training and sampling (results equal to float tolerance)
    compile: bool
    ema: EmaSettings


class TrainJobsSettings(ConfigModel):
    """Config section `train_jobs`: operational, how long one training job may run and on how
    many GPUs (one process each, `accelerate launch`; results equal to float rounding)."""

    max_wall_time_h: float = Field(gt=0)
    gpus: Count


class ConvergenceSettings(ConfigModel):
    """`checkpoints.convergence`: the automatic suggestion's window of the split run."""

    val_column: Literal["val_loss", "val_loss_ema"]
    smoothing: Count  # odd (check_config): a centred moving average, in checkpoints
    tolerance: float = Field(ge=0)
    n_window: Count


class CheckpointsSettings(ConfigModel):
    """Config section `checkpoints`: which checkpoints are sampled."""

    # `auto` (the run's own evidence) or the numbers of the checkpoints to sample
    selected: (
        Literal["auto"]
        | Annotated[tuple[NonNegativeInt, ...], Field(strict=False, min_length=1, max_length=8)]
    )
    convergence: ConvergenceSettings
    loss_figure_smoothing: Count  # moving-average window (steps), display only

    @field_validator("selected", mode="wrap")
    @classmethod
    def _auto_or_distinct_numbers(
        cls, selected: object, handler: ValidatorFunctionWrapHandler
    ) -> str | tuple[int, ...]:
        """One message for either form (pydantic would report each member of the union), and no
        checkpoint listed twice (it would be sampled and shown twice)."""
        try:
            checked = handler(selected)
        except ValidationError:
            checked = None
        if checked is None or (isinstance(checked, tuple) and len(set(checked)) < len(checked)):
            raise ValueError(
                f"expected auto or 1 to 8 distinct checkpoint numbers, got {selected!r}"
            )
        return checked
