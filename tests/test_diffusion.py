"""The noise schedule, targets and loss weights against their formulas and lucidrains' values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet

from radsynth.train.diffusion import (
    alphas_cumprod,
    make_tables,
    q_sample,
    sigmoid_beta_schedule,
    uint8_to_model_range,
    v_loss_weight,
    v_target,
    weighted_v_loss_per_image,
)

torch.set_num_threads(1)

T = 1000  # the paper's (I-SynMed's) number of timesteps
# lucidrains builds v_start/v_end as float32 scalars: sigmoid(-3) and sigmoid(3) rounded to float32.
V_START = float(np.float32(1 / (1 + math.exp(3))))
V_END = float(np.float32(1 / (1 + math.exp(-3))))


def unnormalised_alpha_bar(s: int) -> float:
    """lucidrains' alpha-bar before division by its t=0 value (which cancels in beta)."""
    return (V_END - 1 / (1 + math.exp(-(s / T * 6 - 3)))) / (V_END - V_START)


def expected_beta(t: int) -> float:
    return min(1 - unnormalised_alpha_bar(t + 1) / unnormalised_alpha_bar(t), 0.999)


@pytest.fixture(scope="module")
def betas() -> torch.Tensor:
    return sigmoid_beta_schedule(T, start=-3, end=3, tau=1, clamp_max=0.999)


@pytest.mark.parametrize("t", [0, 1, 499, 998, 999])
def test_betas_follow_the_sigmoid_formula(betas: torch.Tensor, t: int) -> None:
    assert betas.dtype == torch.float64
    assert betas[t].item() == pytest.approx(expected_beta(t), rel=1e-10, abs=1e-15)


def test_betas_equal_lucidrains_values(betas: torch.Tensor) -> None:
    # Values printed by lucidrains' own sigmoid_beta_schedule(1000) (denoising-diffusion-pytorch
    # 2.2.6); beta_998 depends on the float32 rounding of v_start/v_end.
    lucidrains = {
        0: 0.0003002791974102692,
        1: 0.00030200411683434236,
        499: 0.003303415462333259,
        998: 0.5013504179271411,
        999: 0.999,
    }
    for t, value in lucidrains.items():
        assert betas[t].item() == pytest.approx(value, rel=1e-13), t


def test_alpha_bar_is_the_product_of_one_minus_beta(betas: torch.Tensor) -> None:
    alpha_bar = alphas_cumprod(betas)
    expected = {t: math.prod(1 - expected_beta(s) for s in range(t + 1)) for t in (0, 1, 499, 999)}
    for t, value in expected.items():
        assert alpha_bar[t].item() == pytest.approx(value, rel=1e-9), t
    # lucidrains' alphas_cumprod at the same steps; t=499 is the sigmoid's midpoint.
    assert alpha_bar[0].item() == pytest.approx(0.9996997208025897, rel=1e-13)
    assert alpha_bar[499].item() == pytest.approx(0.5000000038946949, rel=1e-12)
    assert alpha_bar[999].item() == pytest.approx(3.002869867999664e-07, rel=1e-9)


def test_loss_weight_is_unclipped_snr_over_snr_plus_one(betas: torch.Tensor) -> None:
    alpha_bar = alphas_cumprod(betas)
    weight = v_loss_weight(alpha_bar)
    for t in (0, 1, 499, 999):
        snr = alpha_bar[t].item() / (1 - alpha_bar[t].item())
        assert weight[t].item() == pytest.approx(snr / (snr + 1), rel=1e-12)
        assert weight[t].item() == pytest.approx(alpha_bar[t].item(), rel=1e-12)
    # min-SNR clipping (gamma 5) would give 5 / (snr + 1) = 0.0015 at t=0; lucidrains' default does
    # not clip.
    assert weight[0].item() == pytest.approx(0.99969972, rel=1e-7)


def test_tables_are_float32_copies_of_float64_values(betas: torch.Tensor) -> None:
    tables = make_tables(betas)
    alpha_bar = alphas_cumprod(betas)
    assert tables.num_timesteps == T
    for table in (
        tables.sqrt_alphas_cumprod,
        tables.sqrt_one_minus_alphas_cumprod,
        tables.loss_weight,
    ):
        assert table.dtype == torch.float32
    assert torch.equal(tables.sqrt_alphas_cumprod, alpha_bar.sqrt().float())
    assert torch.equal(tables.sqrt_one_minus_alphas_cumprod, (1 - alpha_bar).sqrt().float())


@pytest.mark.parametrize("t", [0, 1, 499, 999])
def test_v_target_and_q_sample(betas: torch.Tensor, t: int) -> None:
    tables = make_tables(betas)
    a = alphas_cumprod(betas)[t].item()
    x0 = torch.full((2, 1, 2, 2), 0.5)
    noise = torch.full((2, 1, 2, 2), -1.0)
    steps = torch.tensor([t, t])
    v = v_target(tables, x0, noise, steps)
    xt = q_sample(tables, x0, noise, steps)
    assert v[0, 0, 0, 0].item() == pytest.approx(
        math.sqrt(a) * -1.0 - math.sqrt(1 - a) * 0.5, abs=1e-6
    )
    assert xt[0, 0, 0, 0].item() == pytest.approx(
        math.sqrt(a) * 0.5 + math.sqrt(1 - a) * -1.0, abs=1e-6
    )
    # v-parameterisation identity used at sampling: x0 = sqrt(a) x_t - sqrt(1 - a) v
    recovered = math.sqrt(a) * xt[0, 0, 0, 0].item() - math.sqrt(1 - a) * v[0, 0, 0, 0].item()
    assert recovered == pytest.approx(0.5, abs=1e-5)


def test_weighted_loss_is_per_image_mse_times_weight(betas: torch.Tensor) -> None:
    tables = make_tables(betas)
    target = torch.zeros(2, 1, 3, 3)
    prediction = torch.stack([torch.full((1, 3, 3), 2.0), torch.zeros(1, 3, 3)])
    steps = torch.tensor([499, 0])
    loss = weighted_v_loss_per_image(tables, prediction, target, steps)
    assert loss.tolist() == pytest.approx([4.0 * tables.loss_weight[499].item(), 0.0])


def test_uint8_scaling_matches_lucidrains_normalisation() -> None:
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8)
    scaled = uint8_to_model_range(pixels)
    assert scaled.dtype == torch.float32
    middle = np.float32(128) / np.float32(255) * np.float32(2) - np.float32(1)  # float32 arithmetic
    assert scaled.tolist() == [-1.0, float(middle), 1.0]
    with pytest.raises(TypeError, match="uint8"):
        uint8_to_model_range(pixels.float())


def test_tables_targets_and_loss_equal_lucidrains_gaussian_diffusion(betas: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = Unet(dim=8, dim_mults=(1,), channels=1, attn_dim_head=8, attn_heads=2).eval()
    reference = GaussianDiffusion(
        net, image_size=8, timesteps=T, objective="pred_v", beta_schedule="sigmoid"
    )
    tables = make_tables(betas)
    torch.testing.assert_close(
        tables.sqrt_alphas_cumprod, reference.sqrt_alphas_cumprod, rtol=1e-6, atol=0
    )
    torch.testing.assert_close(
        tables.sqrt_one_minus_alphas_cumprod,
        reference.sqrt_one_minus_alphas_cumprod,
        rtol=1e-6,
        atol=0,
    )
    torch.testing.assert_close(tables.loss_weight, reference.loss_weight, rtol=1e-6, atol=0)
    x0, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    steps = torch.tensor([0, 1, 499, 999])
    torch.testing.assert_close(
        v_target(tables, x0, noise, steps), reference.predict_v(x0, steps, noise)
    )
    torch.testing.assert_close(
        q_sample(tables, x0, noise, steps), reference.q_sample(x0, steps, noise)
    )
    with torch.no_grad():
        prediction = net(q_sample(tables, x0, noise, steps), steps)
        loss = weighted_v_loss_per_image(
            tables, prediction, v_target(tables, x0, noise, steps), steps
        )
        expected = reference.p_losses(x0, steps, noise=noise, loss_reduction="none")
    torch.testing.assert_close(loss, expected)


def test_diffusers_own_sigmoid_schedule_is_a_different_schedule(betas: torch.Tensor) -> None:
    from diffusers import DDPMScheduler

    geodiff = DDPMScheduler(num_train_timesteps=T, beta_schedule="sigmoid")
    assert abs(geodiff.betas[999].item() - betas[999].item()) > 0.9


def test_too_few_timesteps_is_an_error() -> None:
    with pytest.raises(ValueError, match="diffusion.timesteps"):
        sigmoid_beta_schedule(1)
