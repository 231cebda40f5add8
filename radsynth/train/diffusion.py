"""The Gaussian diffusion of lucidrains `denoising-diffusion-pytorch` (the library I-SynMed wraps),
rebuilt so that a diffusers-based model trains on the same noise schedule and loss.

What is reproduced from lucidrains' `GaussianDiffusion` (v2.x, its defaults as I-SynMed used them):
- `beta_schedule="sigmoid"` with start -3, end 3, tau 1, betas clipped to [0, 0.999], in float64.
  Its `v_start`/`v_end` are built with `torch.tensor(python_float)`, i.e. float32, and then mixed
  with float64; the rounding moves the last betas by up to 6.5e-6, so we round them the same way.
- alpha-bar as the float64 cumulative product of 1 - beta; the lookup tables used in training
  (sqrt(alpha-bar), sqrt(1 - alpha-bar), loss weight) are float64 values cast to float32, as
  lucidrains registers its buffers.
- objective `pred_v`: v = sqrt(alpha-bar) * noise - sqrt(1 - alpha-bar) * x0.
- loss: per-image mean squared error on v times snr / (snr + 1) (= alpha-bar), averaged over the
  batch. `min_snr_loss_weight` is False by default there, so the snr is not clipped.
- data scaling: uint8 / 255 * 2 - 1 (torchvision ToTensor, then `normalize_to_neg_one_to_one`).

diffusers' own `beta_schedule="sigmoid"` is a different (GeoDiff) schedule, so the sampling
schedulers (radsynth.sample.schedulers) are built from these betas through `trained_betas`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _float32_sigmoid(x: float) -> float:
    """sigmoid of a Python float evaluated in float32, as `torch.tensor(x).sigmoid()` does in
    lucidrains."""
    return float(torch.tensor(x, dtype=torch.float32).sigmoid())


def sigmoid_beta_schedule(
    timesteps: int,
    start: float = -3.0,
    end: float = 3.0,
    tau: float = 1.0,
    clamp_max: float = 0.999,
) -> torch.Tensor:
    """lucidrains' sigmoid schedule (Jabri et al. 2022, arXiv 2212.11972 Fig. 8), float64 betas.

    Defaults are lucidrains' defaults, which I-SynMed and the paper used (1,000 steps at the call
    site).
    """
    if timesteps < 2:
        raise ValueError(f"diffusion.timesteps must be at least 2, got {timesteps}")
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = _float32_sigmoid(start / tau)
    v_end = _float32_sigmoid(end / tau)
    alpha_bar = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alpha_bar = alpha_bar / alpha_bar[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return torch.clip(betas, 0, clamp_max)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s), in the dtype of `betas` (float64 from the
    schedule)."""
    return torch.cumprod(1.0 - betas, dim=0)


def v_loss_weight(alpha_bar: torch.Tensor) -> torch.Tensor:
    """snr / (snr + 1) with snr = alpha-bar / (1 - alpha-bar): lucidrains' unclipped pred_v
    weight."""
    snr = alpha_bar / (1 - alpha_bar)
    return snr / (snr + 1)


@dataclass(frozen=True)
class DiffusionTables:
    """Per-timestep float32 lookups used by the training loss (lucidrains' registered buffers)."""

    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    loss_weight: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return int(self.loss_weight.shape[0])

    def to(self, device: torch.device | str) -> DiffusionTables:
        return DiffusionTables(
            self.sqrt_alphas_cumprod.to(device),
            self.sqrt_one_minus_alphas_cumprod.to(device),
            self.loss_weight.to(device),
        )


def make_tables(betas: torch.Tensor) -> DiffusionTables:
    """Compute the tables in float64 from `betas` and store them in float32, as lucidrains does."""
    alpha_bar = alphas_cumprod(betas.to(torch.float64))
    return DiffusionTables(
        sqrt_alphas_cumprod=torch.sqrt(alpha_bar).to(torch.float32),
        sqrt_one_minus_alphas_cumprod=torch.sqrt(1.0 - alpha_bar).to(torch.float32),
        loss_weight=v_loss_weight(alpha_bar).to(torch.float32),
    )


def _per_image(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """table[t] shaped (B, 1, 1, ...) to broadcast over images of `ndim` dimensions."""
    return table.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def q_sample(
    tables: DiffusionTables, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) noise (same as diffusers' add_noise)."""
    return (
        _per_image(tables.sqrt_alphas_cumprod, t, x0.ndim) * x0
        + _per_image(tables.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
    )


def v_target(
    tables: DiffusionTables, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """v = sqrt(alpha-bar_t) noise - sqrt(1 - alpha-bar_t) x0 (same as diffusers' get_velocity)."""
    return (
        _per_image(tables.sqrt_alphas_cumprod, t, x0.ndim) * noise
        - _per_image(tables.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
    )


def weighted_v_loss_per_image(
    tables: DiffusionTables, prediction: torch.Tensor, target: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Per-image loss: mean squared v error over pixels times the timestep's loss weight,
    float32."""
    squared = (prediction.float() - target.float()) ** 2
    return squared.flatten(1).mean(dim=1) * tables.loss_weight.gather(-1, t)


def uint8_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1], in lucidrains' order of operations (x / 255 * 2 - 1)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.to(torch.float32) / 255 * 2 - 1
