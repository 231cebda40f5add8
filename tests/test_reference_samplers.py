"""radsynth's DDIM and DDPM sampling against lucidrains' GaussianDiffusion, the code I-SynMed ran.

One network (a tiny, randomly initialised lucidrains Unet) is sampled by the package's own
`ddim_sample` / `p_sample_loop` and by radsynth's diffusers schedulers from the same noise and the
same betas. lucidrains draws its noise from the global generator, one (B, C, H, W) tensor at a
time; radsynth's loop draws image i's noise from generator i with shape (1, C, H, W). Handing
radsynth the same seeded generator for every image makes the two streams identical, so even the
ancestral sampler's per-step noise is shared.
"""

from __future__ import annotations

import pytest
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from denoising_diffusion_pytorch.denoising_diffusion_pytorch import sigmoid_beta_schedule

from radsynth.sample.denoising import sample_images
from radsynth.sample.schedulers import make_sampler_scheduler

torch.set_num_threads(1)

SIDE, BATCH, SEED = 16, 2, 20240607


class RecordingNet(torch.nn.Module):
    """A lucidrains Unet that records the timesteps it is called at, callable the way either
    sampler calls it.

    lucidrains calls `model(x, t, x_self_cond)` and radsynth's sampler `model(x, t)`, both with t
    of shape (B,); `channels` and `dtype` are what radsynth's sampler reads from a network.
    """

    dtype = torch.float32

    def __init__(self, net: Unet) -> None:
        super().__init__()
        self.net = net
        self.channels, self.out_dim, self.self_condition = (
            net.channels,
            net.out_dim,
            net.self_condition,
        )
        self.visited: list[int] = []

    def forward(
        self, x: torch.Tensor, time: torch.Tensor, x_self_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.visited.append(int(time[0]))
        return self.net(x, time, x_self_cond)


@pytest.fixture(scope="module")
def net() -> RecordingNet:
    torch.manual_seed(0)
    return RecordingNet(
        Unet(dim=8, dim_mults=(1, 2), channels=1, attn_dim_head=8, attn_heads=2)
    ).eval()


def lucidrains_images(diffusion: GaussianDiffusion) -> torch.Tensor:
    """The package's own sampler (`sample` picks DDIM when sampling_timesteps < timesteps), in
    [-1, 1]."""
    torch.manual_seed(SEED)
    return diffusion.sample(batch_size=BATCH) * 2 - 1


def radsynth_images(net: RecordingNet, name: str, timesteps: int, steps: int) -> torch.Tensor:
    scheduler = make_sampler_scheduler(
        name,
        sigmoid_beta_schedule(timesteps),
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=timesteps,
        solver_order=None,
    )
    generator = torch.Generator().manual_seed(SEED)
    return sample_images(
        net, scheduler, [generator] * BATCH, steps=steps, image_size=SIDE, device="cpu"
    )


def test_ddim_matches_lucidrains_ddim_sample(net: RecordingNet) -> None:
    # The paper's schedule: 1,000 training steps, sigmoid betas, v objective, 25 DDIM steps.
    diffusion = GaussianDiffusion(
        net,
        image_size=SIDE,
        timesteps=1000,
        sampling_timesteps=25,
        objective="pred_v",
        beta_schedule="sigmoid",
    ).eval()
    net.visited.clear()
    reference = lucidrains_images(diffusion)
    reference_steps = list(net.visited)
    net.visited.clear()
    images = radsynth_images(net, "ddim", timesteps=1000, steps=25)
    assert reference_steps[:3] == [999, 959, 919] and len(reference_steps) == 25
    assert net.visited == reference_steps
    # Its last step returns the clamped x0: the clamp was active, so re-deriving the noise mattered.
    assert reference.abs().max().item() == 1.0
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-4)


def test_ddpm_matches_lucidrains_p_sample_loop(net: RecordingNet) -> None:
    # Ancestral sampling over every training step, at 50 timesteps to keep the test fast.
    diffusion = GaussianDiffusion(
        net, image_size=SIDE, timesteps=50, objective="pred_v", beta_schedule="sigmoid"
    ).eval()
    net.visited.clear()
    reference = lucidrains_images(diffusion)
    assert net.visited == list(range(49, -1, -1))
    net.visited.clear()
    images = radsynth_images(net, "ddpm", timesteps=50, steps=50)
    assert net.visited == list(range(49, -1, -1))
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-4)
