"""The multistep samplers (DPM-Solver++, UniPC, DEIS) on the training betas, against hand-derived
references: the exact x0 of a network that knows it, the DDIM update of their first step, and the
DPM-Solver++ paper's multistep formulas (Lu et al. 2022, eqs. of Algorithm 2 and its third-order
form) for every step of 2M and 3M. `sample_images` runs every sampler, as the sampling stage does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from denoising_diffusion_pytorch import Unet
from denoising_diffusion_pytorch.denoising_diffusion_pytorch import sigmoid_beta_schedule
from diffusers import UniPCMultistepScheduler

from radsynth.sample.denoising import sample_images
from radsynth.sample.schedulers import make_sampler_scheduler

torch.set_num_threads(1)

TIMESTEPS = 1000
BETAS = sigmoid_beta_schedule(TIMESTEPS).double()
ALPHA_BAR = torch.cumprod(1 - BETAS, dim=0)
SIDE, BATCH, SEED = 8, 2, 7
#: Every sampler that reads `solver_order`, at every order.
MULTISTEP = [(name, order) for name in ("dpmsolver++", "unipc", "deis") for order in (1, 2, 3)]


def alpha_sigma(t: int) -> tuple[float, float]:
    """VP coefficients of training timestep t: x_t = alpha x0 + sigma eps."""
    return float(ALPHA_BAR[t].sqrt()), float((1 - ALPHA_BAR[t]).sqrt())


def scheduler(name: str, order: int | None):
    return make_sampler_scheduler(
        name,
        BETAS,
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=TIMESTEPS,
        solver_order=order,
    )


class KnowsX0(torch.nn.Module):
    """A network whose v-prediction is exact for one clean image: every solver of the
    probability-flow ODE must end on that image."""

    channels, dtype = 1, torch.float32

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0
        self.visited: list[int] = []

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        self.visited.append(int(time[0]))
        alpha, sigma = alpha_sigma(int(time[0]))
        eps = (x - alpha * self.x0) / sigma
        return alpha * eps - sigma * self.x0


class TinyNet(torch.nn.Module):
    """A tiny randomly initialised lucidrains Unet called as radsynth's loop calls a network."""

    channels, dtype = 1, torch.float32

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Unet(dim=8, dim_mults=(1, 2), channels=1, attn_dim_head=8, attn_heads=2).eval()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.net(x, time)


@pytest.fixture(scope="module")
def net() -> TinyNet:
    return TinyNet()


def generators() -> list[torch.Generator]:
    return [torch.Generator().manual_seed(SEED + i) for i in range(BATCH)]


def x_T() -> torch.Tensor:
    """The loop's initial noise: image i from generator i, shape (1, C, H, W) each."""
    return torch.cat([torch.randn(1, 1, SIDE, SIDE, generator=g) for g in generators()])


@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize(("name", "order"), [("ddim", None), *MULTISTEP])
def test_a_network_that_knows_x0_gets_exactly_x0(name: str, order: int | None, steps: int) -> None:
    # DEIS without radsynth's last step ends at sigma(t=0), 0.017 of noise (up to 0.03 here).
    x0 = torch.linspace(-0.9, 0.9, SIDE * SIDE).reshape(1, 1, SIDE, SIDE)
    oracle = KnowsX0(x0)
    images = sample_images(
        oracle, scheduler(name, order), generators(), steps=steps, image_size=SIDE, device="cpu"
    )
    assert len(oracle.visited) == steps
    torch.testing.assert_close(images, x0.expand_as(images), rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [5, 8, 10, 15, 25])
@pytest.mark.parametrize(("name", "order"), MULTISTEP)
def test_timesteps_are_linspace_without_repeats(name: str, order: int, steps: int) -> None:
    # diffusers' "linspace": round(linspace(0, 999, steps + 1)) reversed, without the 0.
    expected = np.round(np.linspace(0, TIMESTEPS - 1, steps + 1))[::-1][:-1].astype(int)
    sampler = scheduler(name, order)
    sampler.set_timesteps(steps)
    assert sampler.timesteps.tolist() == expected.tolist()
    assert len(set(expected)) == steps


def ddim_step(x: torch.Tensor, v: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """Deterministic DDIM from t to s with x0 clamped and the noise re-derived (by hand)."""
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    x0 = (alpha_t * x - sigma_t * v).clamp(-1, 1)
    eps = (x - alpha_t * x0) / sigma_t
    return alpha_s * x0 + sigma_s * eps


@pytest.mark.parametrize(("name", "order"), MULTISTEP)
def test_first_step_is_the_ddim_update(net: TinyNet, name: str, order: int) -> None:
    # With no earlier output every multistep solver's first step is first order: DDIM's.
    sampler = scheduler(name, order)
    sampler.set_timesteps(10)
    first, second = (int(t) for t in sampler.timesteps[:2])
    assert (first, second) == (999, 899)
    x = x_T()
    with torch.inference_mode():
        v = net(x, torch.full((BATCH,), first))
        stepped = sampler.step(v, sampler.timesteps[0], x, generator=generators()).prev_sample
    # DEIS steps in noise form, x_s = (alpha_s / alpha_t) x - sigma_s (e^h - 1) eps: from t = 999
    # two float32 terms of about 360 cancel to about 1, so it is exact to 1.5e-4 only.
    atol = 5e-4 if name == "deis" else 1e-5
    torch.testing.assert_close(stepped, ddim_step(x, v, first, second), rtol=0, atol=atol)


def dpm_solver_pp(net: TinyNet, x: torch.Tensor, timesteps: list[int], order: int) -> torch.Tensor:
    """DPM-Solver++ (data prediction, multistep; Lu et al. 2022) from the paper's formulas in
    log-SNR lambda = log(alpha / sigma): lower orders while too few outputs exist, and (below 15
    steps, as diffusers' `lower_order_final`) order 2 at most on the second-to-last step and order
    1 on the last, which goes to sigma 0 and so returns the last x0."""
    lam = [np.log(alpha_sigma(t)[0] / alpha_sigma(t)[1]) for t in timesteps]
    x0s: list[torch.Tensor] = []
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        alpha_t, sigma_t = alpha_sigma(t)
        v = net(x, torch.full((len(x),), t))
        x0s.append((alpha_t * x - sigma_t * v).clamp(-1, 1))
        if i == n - 1:
            return x0s[-1]
        step_order = min(order, i + 1, 2 if i == n - 2 and n < 15 else order)
        alpha_s, sigma_s = alpha_sigma(timesteps[i + 1])
        h = lam[i + 1] - lam[i]
        phi = np.expm1(-h)
        x = (sigma_s / sigma_t) * x - alpha_s * phi * x0s[-1]
        if step_order >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (x0s[-1] - x0s[-2]) / r0
            if step_order == 2:
                x = x - 0.5 * alpha_s * phi * d1_0
            else:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d1_1 = (x0s[-2] - x0s[-3]) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + alpha_s * (phi / h + 1) * d1 - alpha_s * ((phi + h) / h**2 - 0.5) * d2
    raise AssertionError("unreachable")


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("steps", [8, 15])
def test_dpm_solver_pp_matches_the_papers_multistep_formulas(
    net: TinyNet, order: int, steps: int
) -> None:
    sampler = scheduler("dpmsolver++", order)
    with torch.inference_mode():
        images = sample_images(
            net, sampler, generators(), steps=steps, image_size=SIDE, device="cpu"
        )
        reference = dpm_solver_pp(net, x_T(), [int(t) for t in sampler.timesteps], order)
    assert not torch.equal(images, x_T().clamp(-1, 1))
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-4)


def test_unipc_uses_bh2_because_bh1_returns_nan_on_its_last_step() -> None:
    # diffusers' UniPC bh1 (its advice for unconditional sampling at few steps) with a last step
    # to sigma 0: B(h) = -h is -inf there. radsynth's unipc is bh2 and ends on x0 (first test).
    x0 = torch.full((1, 1, SIDE, SIDE), 0.5)
    bh1 = UniPCMultistepScheduler(
        num_train_timesteps=TIMESTEPS,
        trained_betas=BETAS.numpy(),
        prediction_type="v_prediction",
        solver_type="bh1",
        final_sigmas_type="zero",
    )
    oracle, sample = KnowsX0(x0), x_T()
    bh1.set_timesteps(10)
    for t in bh1.timesteps:
        sample = bh1.step(oracle(sample, t.expand(BATCH)), t, sample).prev_sample
    assert torch.isnan(sample).all()
    assert scheduler("unipc", 2).config.solver_type == "bh2"


def test_solver_order_is_required_for_multistep_and_refused_for_single_step() -> None:
    with pytest.raises(ValueError, match=r"sampling.solver_order must be one of 1, 2, 3 for "):
        scheduler("unipc", None)
    with pytest.raises(ValueError, match=r"sampling.solver_order must be one of 1, 2, 3 .*got 4"):
        scheduler("dpmsolver++", 4)
    with pytest.raises(ValueError, match=r"sampling.sampler ddim takes no solver order"):
        scheduler("ddim", 2)
    assert scheduler("deis", 3).config.solver_order == 3
