"""The diffusion model's random draws, as pure functions of (seed, stream, index) through
`radsynth.core.seeds`: micro-batch m draws its flips, timesteps and noise from a generator seeded
by (seed, m); validation image i always gets the draws seeded by its atlas index, so validation
losses compare across checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radsynth.core.seeds import STREAM_MICRO_BATCH, STREAM_VALIDATION, seeded_generator


@dataclass(frozen=True)
class NoiseDraws:
    """The random inputs of one loss evaluation, drawn on the CPU."""

    flips: torch.Tensor  # (B,) bool
    timesteps: torch.Tensor  # (B,) int64
    noise: torch.Tensor  # (B, 1, H, W) float32

    def select(self, rows: slice) -> NoiseDraws:
        return NoiseDraws(self.flips[rows], self.timesteps[rows], self.noise[rows])


def micro_batch_draws(
    seed: int, micro_index: int, batch: int, size: int, num_timesteps: int, flip: bool
) -> NoiseDraws:
    """Flips (p = 0.5, torchvision's rule), uniform timesteps and Gaussian noise of one
    micro-batch."""
    generator = seeded_generator(seed, STREAM_MICRO_BATCH, micro_index)
    flips = (torch.rand(batch, generator=generator) < 0.5) & flip
    timesteps = torch.randint(0, num_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, 1, size, size), generator=generator)
    return NoiseDraws(flips, timesteps, noise)


def validation_draws(
    seed: int, atlas_indices: np.ndarray, size: int, num_timesteps: int
) -> NoiseDraws:
    """One fixed timestep and noise per validation image, seeded by its atlas index; no flips."""
    generators = [seeded_generator(seed, STREAM_VALIDATION, int(i)) for i in atlas_indices]
    timesteps = torch.cat([torch.randint(0, num_timesteps, (1,), generator=g) for g in generators])
    noise = torch.cat([torch.randn((1, 1, size, size), generator=g) for g in generators])
    return NoiseDraws(torch.zeros(len(generators), dtype=torch.bool), timesteps, noise)


def process_rows(batch: int, rank: int, world: int) -> slice:
    """This process' rows of a global micro-batch (lucidrains' split_batches=True)."""
    bounds = np.linspace(0, batch, world + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))
