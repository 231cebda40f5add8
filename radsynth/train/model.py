"""The denoising U-Net, in the architecture `model.architecture` names.

- `lucidrains`: the network the paper trained. I-SynMed ran lucidrains'
  `Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1, flash_attn=True)` (35,705,089 parameters);
  radsynth builds it with lucidrains' package itself (`denoising_diffusion_pytorch.Unet`).
- `diffusers`: a diffusers `UNet2DModel` configured as close to lucidrains' `Unet` as diffusers
  allows; about 1.7x faster per training step on a CPU, but a different network (listed below).

Both are called as lucidrains' Unet is: `net(x, t)` with x (B, 1, H, W) and integer timesteps t of
shape (B,) returns the prediction tensor, and both carry `channels`, `sample_size`, `dtype` and
`network_config` (the architecture and the arguments that rebuild it; every checkpoint stores it and
loading compares it with the network rebuilt from the settings).

The diffusers architecture, against lucidrains'. Kept the same:
- one input and one output channel; base width 64 and multipliers (1, 2, 4, 8) (widths 64..512);
  four resolutions (three 2x downsamplings);
- sinusoidal time features of width `base`, sin half first, frequencies exp(-ln(1e4) i / (half-1))
  (diffusers `flip_sin_to_cos=False, freq_shift=1`), an MLP to 4 x base, and a per-block
  SiLU -> Linear projection to a FiLM scale and shift applied after the block's second norm as
  h * (1 + scale) + shift (diffusers `resnet_time_scale_shift="scale_shift"`);
- full self-attention with 32-channel heads at the innermost level and in the middle block,
  the middle one with a pre-norm (diffusers would drop it under scale_shift unless
  `attn_norm_num_groups` is set);
- upsampling by nearest x2 then a 3x3 conv; SiLU activations; dropout 0.

Differences from lucidrains that diffusers' UNet2DModel imposes (each changes the parameter count).
diffusers' decoder always has layers_per_block + 1 ResNet blocks per level, so no setting matches
lucidrains' 2 encoder + 2 decoder blocks per level. At the paper's shape layers_per_block = 1 gives
1 encoder and 2 decoder blocks per level, 43,859,201 parameters (1.23 x 35,705,089), and a
weights-only history checkpoint (online + EMA, float32) of about 351 MB. layers_per_block = 2 would
match the encoder's block count but give 63,327,297 parameters (1.77 x) and 507 MB checkpoints.
- Widths: a diffusers level runs at base x mult in both paths; lucidrains' encoder level i runs at
  the previous level's width (64, 64, 128, 256) and widens in its down/transition conv.
- Blocks: layers_per_block 1 gives 1 ResNet block per encoder level (lucidrains 2) and 2 per decoder
  level (as lucidrains; diffusers' extra skip comes from each downsampler); lucidrains ends with a
  ResNet block on concat(features, init-conv output) and a 1x1 conv, where diffusers ends with
  GroupNorm -> SiLU -> 3x3 conv.
- Attention: lucidrains adds linear attention (4 heads x 32, 4 memory key/values, RMSNorm before
  and after) once per non-innermost level; diffusers has no linear attention, and full attention
  over 256x256 or 128x128 tokens is infeasible, so the outer levels have none. Where attention is
  enabled diffusers puts one after every ResNet block (1 per encoder, 2 per decoder level with
  layers_per_block 1, not 1 per level), with channels/32 heads (inner width = channels, lucidrains
  4 x 32 = 128), q/k/v biases, a GroupNorm pre-norm and no memory key/values.
- Norm: GroupNorm(norm_num_groups) everywhere; lucidrains uses RMSNorm (L2 over channels x gain).
- ResNet block: diffusers is pre-activation (GN -> SiLU -> conv3x3 -> GN -> FiLM -> SiLU ->
  dropout -> conv3x3); lucidrains is conv3x3 -> RMSNorm -> FiLM -> SiLU -> dropout,
  conv3x3 -> RMSNorm -> SiLU. Both add a 1x1-conv shortcut when widths differ.
- Time MLP activation: SiLU (diffusers fixes it) instead of GELU.
- Input conv 3x3 (lucidrains 7x7). Downsampling by a stride-2 3x3 conv (lucidrains: 2x2
  space-to-depth then 1x1 conv); lucidrains' innermost level widens with a 3x3 conv instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from denoising_diffusion_pytorch import Unet
from diffusers import UNet2DModel
from pydantic import model_serializer, model_validator

from radsynth.core.settings.train import DIFFUSERS_ONLY, ModelSettings


class UNetSettings(ModelSettings):
    """The `model` section as history checkpoints store it (the config's keys: ModelSettings).

    Settings stored before `model.architecture` existed have none: their network is diffusers',
    the one radsynth then had. The stored form leaves out what those lacked (a diffusers
    architecture, the absent diffusers-only keys of lucidrains), so a run's identity and its
    checkpoints' metadata are the same as before the key existed.
    """

    @model_validator(mode="before")
    @classmethod
    def _stored_before_architecture(cls, values: Any) -> Any:
        if isinstance(values, dict) and "architecture" not in values:
            return {**values, "architecture": "diffusers"}
        return values

    @model_serializer(mode="wrap")
    def _stored_form(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {
            key: value
            for key, value in handler(self).items()
            if not (key == "architecture" and value == "diffusers")
            and not (key in DIFFUSERS_ONLY and value is None)
        }


class LucidrainsUnet(Unet):
    """lucidrains' Unet, layers and forward unchanged, with the attributes radsynth reads."""

    def __init__(self, sample_size: int, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.sample_size = sample_size
        self.network_config = {
            "architecture": "lucidrains",
            "sample_size": sample_size,
            **arguments,
        }

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class DiffusersUNet(UNet2DModel):
    """diffusers' UNet2DModel called as lucidrains' Unet is: (x, t) -> prediction tensor."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return super().forward(sample, timestep).sample

    @property
    def channels(self) -> int:
        return self.config.in_channels

    @property
    def network_config(self) -> dict[str, Any]:
        """diffusers' public config, as checkpoints stored it before `model.architecture`
        existed."""
        return {key: value for key, value in self.config.items() if not key.startswith("_")}


def _check_settings(settings: UNetSettings) -> None:
    """Reject shapes the network would fail on later with a less helpful message."""
    levels = len(settings.channel_multipliers)
    if len(settings.attention_levels) != levels:
        raise ValueError(
            f"model.attention_levels has {len(settings.attention_levels)} entries, "
            f"model.channel_multipliers has {levels}: give one per level"
        )
    if settings.sample_size % 2 ** (levels - 1):
        raise ValueError(
            f"model.sample_size {settings.sample_size} is not divisible by 2^{levels - 1}"
        )
    if settings.architecture == "diffusers":
        _check_diffusers_widths(settings)


def _check_diffusers_widths(settings: UNetSettings) -> None:
    """diffusers splits each level's width into GroupNorm groups and attention heads."""
    for width, attends in zip(block_widths(settings), settings.attention_levels):
        if width % settings.norm_num_groups:
            raise ValueError(
                f"model.norm_num_groups {settings.norm_num_groups} does not divide width {width}"
            )
        if attends and width % settings.attention_head_dim:
            raise ValueError(
                f"model.attention_head_dim {settings.attention_head_dim} does not divide width "
                f"{width}"
            )


def block_widths(settings: UNetSettings) -> tuple[int, ...]:
    """Channel width of each resolution level."""
    return tuple(settings.base_channels * m for m in settings.channel_multipliers)


def build_lucidrains_unet(settings: UNetSettings) -> LucidrainsUnet:
    """lucidrains' 1-channel Unet as I-SynMed built it; its other arguments keep lucidrains'
    defaults."""
    return LucidrainsUnet(
        sample_size=settings.sample_size,
        dim=settings.base_channels,
        dim_mults=settings.channel_multipliers,
        channels=1,
        dropout=settings.dropout,
        attn_dim_head=settings.attention_head_dim,
        full_attn=settings.attention_levels,
        flash_attn=True,  # I-SynMed; torch's fused attention kernel (on a CPU torch picks its own)
    )


def build_diffusers_unet(settings: UNetSettings) -> DiffusersUNet:
    """A 1-channel diffusers U-Net configured to mirror lucidrains' Unet (see module docstring)."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in settings.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(settings.attention_levels))
    return DiffusersUNet(
        sample_size=settings.sample_size,
        in_channels=1,
        out_channels=1,
        time_embedding_type="positional",
        flip_sin_to_cos=False,  # lucidrains SinusoidalPosEmb: sin half first
        freq_shift=1,  # lucidrains: ln(theta) / (half_dim - 1)
        down_block_types=down,
        up_block_types=up,
        block_out_channels=block_widths(settings),
        layers_per_block=settings.layers_per_block,
        mid_block_type="UNetMidBlock2D",
        add_attention=True,  # lucidrains' full attention in the middle
        downsample_type="conv",
        upsample_type="conv",
        act_fn="silu",
        attention_head_dim=settings.attention_head_dim,
        norm_num_groups=settings.norm_num_groups,
        attn_norm_num_groups=settings.norm_num_groups,  # keeps the mid attention's pre-norm
        resnet_time_scale_shift="scale_shift",  # lucidrains' FiLM conditioning
        dropout=settings.dropout,
    )


_BUILDERS = {"lucidrains": build_lucidrains_unet, "diffusers": build_diffusers_unet}


def build_unet(settings: UNetSettings) -> LucidrainsUnet | DiffusersUNet:
    """The network of `settings.architecture`, called as `net(x, t) -> prediction` (module
    docstring)."""
    _check_settings(settings)
    return _BUILDERS[settings.architecture](settings)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters (lucidrains' 35.7M counts the same way)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_count(settings: UNetSettings) -> int:
    """Parameter count of a configuration without allocating its weights (meta device)."""
    with torch.device("meta"):
        return count_parameters(build_unet(settings))
