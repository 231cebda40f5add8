"""The sampling schedulers: diffusers' DDPM, DDIM, DPM-Solver++, UniPC and DEIS on the training
betas, DDPM and DDIM set up as lucidrains' sampler runs them, and their settings as a sample store
records them."""

from __future__ import annotations

import hashlib
import json
from typing import Any, get_args

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from radsynth.core.settings.sample import MULTISTEP_SAMPLERS, Sampler

#: The names `sampling.sampler` accepts, as the config model lists them.
SAMPLERS: tuple[str, ...] = get_args(Sampler)
#: The orders diffusers implements for all three multistep solvers.
SOLVER_ORDERS: tuple[int, ...] = (1, 2, 3)
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


class GeneratorFreeUniPCScheduler(UniPCMultistepScheduler):
    """UniPC stepped as `sample_images` steps every scheduler: with the per-image generators
    (DDPM's noise), which this deterministic solver does not take."""

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> Any:
        return super().step(model_output, timestep, sample, return_dict=return_dict)


class DenoisedFinalDEISScheduler(DEISMultistepScheduler):
    """DEIS whose last step returns the predicted x0, as the other samplers' last steps do.

    diffusers' DEIS has no `final_sigmas_type`: it ends at the sigma of training timestep 0 and
    its last step, from that sigma to itself, costs a network evaluation but moves nothing, so the
    images keep that noise (std sqrt(beta_0) = 0.017 on the sigmoid schedule: 2.2 grey levels).
    A last step to sigma 0 in its own log-SNR formula is 0 x inf = NaN. So the last step keeps the
    solver's state and returns x0 from the network's (clamped) prediction at that sigma, as DDIM's
    last step with alpha-bar 1 and DPM-Solver++'s with `final_sigmas_type="zero"` do.
    Deterministic: like UniPC it takes and ignores the loop's generators.
    """

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> Any:
        output = super().step(model_output, timestep, sample)
        if self.step_index == len(self.timesteps):
            # model_outputs[-1]: the noise re-derived from the clamped x0 by convert_model_output
            alpha, sigma = self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index - 1])
            output = SchedulerOutput(prev_sample=(sample - sigma * self.model_outputs[-1]) / alpha)
        return output if return_dict else (output.prev_sample,)


def make_sampler_scheduler(
    name: Sampler,
    betas: Any,
    *,
    prediction_type: str,
    clip_sample: bool,
    num_train_timesteps: int,
    solver_order: int | None,
) -> SchedulerMixin:
    """A diffusers scheduler on the training betas (lucidrains' sigmoid schedule is not
    diffusers' own).

    ddpm: ancestral sampling with the posterior variance (lucidrains' p_sample; the paper ran 1,000
    steps). ddim: eta 0 as lucidrains' `ddim_sample`: "trailing" timesteps (999, 959, ... for 25 of
    1,000; diffusers' default "leading" starts at 960), noise re-derived from the clamped x0, and a
    final alpha-bar of 1 so that the last step returns x0 (lucidrains' `time_next < 0` branch). Its
    timesteps equal lucidrains' only when `steps` divides `num_train_timesteps` (otherwise
    diffusers rounds where lucidrains truncates). The multistep solvers (`solver_order`: 2 is
    DPM-Solver++ 2M, 3 is 3M; ddpm and ddim take None) use diffusers' "linspace" timesteps
    (999, 959, ... for 25 steps) and their lower-order first and last steps, and end at sigma 0
    with x0: dpmsolver++ (data prediction, midpoint) and unipc (bh2: bh1 returns NaN on a last
    step to sigma 0) by `final_sigmas_type="zero"`, deis by `DenoisedFinalDEISScheduler`.
    `clip_sample` clamps the predicted x0 to [-1, 1] at every step in all five; the multistep
    solvers have no clip_sample option, so there it is their dynamic thresholding with
    sample_max_value 1, which reduces exactly to that clamp (the quantile is clamped to [1, 1]).
    No sampler uses Karras sigmas: on this schedule they repeat timesteps (999, 999, 998, ...)
    and diffusers' DPM-Solver++ then raises an IndexError on its last step.
    """
    betas = as_betas(betas)
    if len(betas) != num_train_timesteps:
        raise ValueError(
            f"betas hold {len(betas)} timesteps but num_train_timesteps is {num_train_timesteps}"
        )
    if name not in SAMPLERS:
        raise ValueError(f"sampling.sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    multistep = name in MULTISTEP_SAMPLERS
    if multistep and solver_order not in SOLVER_ORDERS:
        raise ValueError(
            f"sampling.solver_order must be one of {', '.join(map(str, SOLVER_ORDERS))} for "
            f"sampling.sampler {name}, got {solver_order!r}"
        )
    if not multistep and solver_order is not None:
        raise ValueError(
            f"sampling.sampler {name} takes no solver order (it is single-step), got "
            f"solver_order {solver_order!r}"
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
    multistep_common = dict(
        **common, solver_order=solver_order, thresholding=clip_sample, sample_max_value=1.0
    )
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(
            **multistep_common, algorithm_type="dpmsolver++", final_sigmas_type="zero"
        )
    if name == "unipc":
        return GeneratorFreeUniPCScheduler(
            **multistep_common, solver_type="bh2", final_sigmas_type="zero"
        )
    return DenoisedFinalDEISScheduler(**multistep_common)


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
