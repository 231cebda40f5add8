"""The denoising loop: a batch of images from x_T to x_0, one scheduler step per timestep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from radsynth.sample.quantization import to_uint8
from radsynth.sample.seeds import image_generators, initial_noise


@torch.inference_mode()
def sample_images(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    generators: list[
        torch.Generator
    ],  # a list: diffusers' randn_tensor reads a tuple as one generator
    *,
    steps: int,
    image_size: int,
    device: str | torch.device,
) -> torch.Tensor:
    """The sampling loop: x_T from the generators, then one scheduler step per timestep;
    (B, C, H, W) in [-1, 1].

    `unet` is called as lucidrains' Unet is (either architecture of radsynth.train.model): the noisy
    batch and the timestep repeated per image, shape (B,), returning the prediction tensor.

    Per-image noise in the stochastic steps is exact: given a list of generators, diffusers'
    `randn_tensor` (which DDPMScheduler.step and the other schedulers call) draws image i's noise
    from generator i, with the same shape (1, C, H, W) as `initial_noise` uses.
    """
    shape = (unet.channels, image_size, image_size)
    sample = (
        initial_noise(generators, shape, device=device, dtype=unet.dtype)
        * scheduler.init_noise_sigma
    )
    scheduler.set_timesteps(steps, device=device)
    for timestep in scheduler.timesteps:
        model_output = unet(
            scheduler.scale_model_input(sample, timestep), timestep.expand(len(sample))
        )
        sample = scheduler.step(model_output, timestep, sample, generator=generators).prev_sample
    return sample


def sample_batch(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    seeds: Sequence[int],
    *,
    steps: int,
    image_size: int,
    device: str | torch.device,
    quantization: str,
    generator_device: str = "cpu",  # CPU generators give the same noise on any sampling device
) -> np.ndarray:
    """Sample one batch, each image from its own seed, returning uint8 images (B, H, W)."""
    generators = image_generators(seeds, generator_device)
    images = sample_images(
        unet, scheduler, generators, steps=steps, image_size=image_size, device=device
    )
    return to_uint8(images[:, 0], quantization)
