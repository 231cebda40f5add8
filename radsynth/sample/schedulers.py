"""The sampling schedulers: diffusers' DDPM, DDIM and DPM-Solver++ on the training betas, set up
as lucidrains' sampler runs them, and their settings as a sample store records them."""

from __future__ import annotations

import hashlib
import json
from typing import Any, get_args

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from radsynth.core.settings.sample import Sampler

#: The names `sampling.sampler` accepts, as the config model lists them.
SAMPLERS: tuple[str, ...] = get_args(Sampler)
PREDICTION_TYPES: tuple[str, ...] = ("v_prediction", "epsilon", "sample")


class RederivedNoiseDDIMScheduler(DDIMScheduler):
    """DDIM stepping with the noise re-derived from the clamped x0, as lucidrains' `ddim_sample`
    does.

    lucidrains (`model_predictions(..., clip_x_start=True, rederive_pred_noise=True)`) moves x_t
    along eps = (x_t - sqrt(alpha-bar) x0) / sqrt(1 - alpha-bar) computed from the clamped x0.
    diffusers has this only as the `use_clipped_model_output` argument of `step`, not as a config
    option, and `sample_images` drives every scheduler through the same `step` call, hence this
    subclass. When nothing is clamped the re-derived noise equals the model's, so it is always on.
    """

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return super().step(*args, use_clipped_model_output=True, **kwargs)


def make_sampler_scheduler(
    name: Sampler, betas: Any, *, prediction_type: str, clip_sample: bool, num_train_timesteps: int
) -> SchedulerMixin:
    """A diffusers scheduler on the training betas (lucidrains' sigmoid schedule is not
    diffusers' own).

    ddpm: ancestral sampling with the posterior variance (lucidrains' p_sample; the paper ran 1,000
    steps). ddim: eta 0 as lucidrains' `ddim_sample`: "trailing" timesteps (999, 959, ... for 25 of
    1,000; diffusers' default "leading" starts at 960), noise re-derived from the clamped x0, and a
    final alpha-bar of 1 so that the last step returns x0 (lucidrains' `time_next < 0` branch). Its
    timesteps equal lucidrains' only when `steps` divides `num_train_timesteps` (otherwise
    diffusers rounds where lucidrains truncates). dpmsolver++: second-order multistep.
    `clip_sample` clamps the predicted x0 to [-1, 1] at every step in all three; DPM-Solver++ has
    no clip_sample option, so there it is its dynamic thresholding with sample_max_value 1, which
    reduces exactly to that clamp.
    """
    betas = as_betas(betas)
    if len(betas) != num_train_timesteps:
        raise ValueError(
            f"betas hold {len(betas)} timesteps but num_train_timesteps is {num_train_timesteps}"
        )
    common = dict(
        num_train_timesteps=num_train_timesteps,
        trained_betas=betas,
        prediction_type=prediction_type,
    )
    if name == "ddpm":
        return DDPMScheduler(
            **common, variance_type="fixed_small", clip_sample=clip_sample, clip_sample_range=1.0
        )
    if name == "ddim":
        return RederivedNoiseDDIMScheduler(
            **common,
            clip_sample=clip_sample,
            clip_sample_range=1.0,
            timestep_spacing="trailing",
            set_alpha_to_one=True,
        )
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=clip_sample,
            sample_max_value=1.0,
        )
    raise ValueError(f"sampling.sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def as_betas(betas: Any) -> np.ndarray:
    """Training betas as a 1-D float64 array, refusing values a diffusion schedule cannot hold."""
    if isinstance(betas, torch.Tensor):
        betas = betas.detach().cpu().double().numpy()
    array = np.asarray(betas, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all((array > 0) & (array < 1)):
        raise ValueError("betas must lie strictly between 0 and 1")
    return array


def betas_digest(betas: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(betas, dtype="<f8").tobytes()).hexdigest()


def scheduler_attrs(scheduler: SchedulerMixin) -> dict[str, Any]:
    """The scheduler's full config (its defaults change results too), without the betas array and
    diffusers' private bookkeeping (`_use_default_values` is a list in set order)."""
    config = {
        key: value
        for key, value in scheduler.config.items()
        if key != "trained_betas" and not key.startswith("_")
    }
    return {"class": type(scheduler).__name__, **json.loads(json.dumps(config, default=str))}
