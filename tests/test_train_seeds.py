"""The training draws' contract: which generator each draw comes from, the flip rule, the
timestep range and each process' rows of a micro-batch (issue #24's mutation survivors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radsynth.core.seeds import STREAM_MICRO_BATCH, STREAM_VALIDATION, derived_seed
from radsynth.train.seeds import micro_batch_draws, process_rows, validation_draws


def reference_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """The generator the docs promise, built from numpy's SeedSequence directly."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]))
    return generator


def test_derived_seed_is_seed_sequences_64_bit_word():
    assert derived_seed(5, 2, 17) == 16749044942137119608
    seeds = [derived_seed(1, STREAM_MICRO_BATCH, i) for i in range(20)]
    # 20 uniform 64-bit words all below 2**32 has probability 2**-640: the seed uses 64 bits
    assert max(seeds) >= 2**32
    assert len(set(seeds)) == 20


def test_micro_batch_draws_follow_the_documented_stream():
    draws = micro_batch_draws(7, 3, 64, 4, 1000, flip=True)
    generator = reference_generator(7, STREAM_MICRO_BATCH, 3)
    uniforms = torch.rand(64, generator=generator)
    assert torch.equal(draws.flips, uniforms < 0.5)
    assert 0 < int(draws.flips.sum()) < 64
    assert torch.equal(draws.timesteps, torch.randint(0, 1000, (64,), generator=generator))
    assert torch.equal(draws.noise, torch.randn((64, 1, 4, 4), generator=generator))


def test_no_flips_when_flipping_is_off():
    assert not micro_batch_draws(7, 3, 64, 1, 1000, flip=False).flips.any()


def test_a_uniform_draw_of_exactly_one_half_does_not_flip():
    # torchvision flips when torch.rand(1) < p; draw 318054 of (seed 0, micro-batch 0) is 0.5
    uniforms = torch.rand(318055, generator=reference_generator(0, STREAM_MICRO_BATCH, 0))
    assert uniforms[318054] == 0.5
    flips = micro_batch_draws(0, 0, 318055, 1, 1000, flip=True).flips
    assert not flips[318054]


def test_timesteps_cover_zero():
    # a single timestep leaves only t = 0; with two, 0 occurs among 64 draws (chance 1 - 2**-64)
    assert torch.equal(micro_batch_draws(1, 0, 8, 1, 1, flip=False).timesteps, torch.zeros(8))
    assert (micro_batch_draws(1, 0, 64, 1, 2, flip=False).timesteps == 0).any()
    assert torch.equal(validation_draws(1, np.arange(8), 1, 1).timesteps, torch.zeros(8))
    assert (validation_draws(1, np.arange(64), 1, 2).timesteps == 0).any()


def test_validation_draws_depend_on_the_atlas_index_only():
    torch.manual_seed(0)
    together = validation_draws(3, np.array([4, 9]), 2, 1000)
    torch.manual_seed(1)
    alone = validation_draws(3, np.array([9]), 2, 1000)
    assert torch.equal(together.timesteps[1:], alone.timesteps)
    assert torch.equal(together.noise[1:], alone.noise)
    generator = reference_generator(3, STREAM_VALIDATION, 9)
    assert torch.equal(alone.timesteps, torch.randint(0, 1000, (1,), generator=generator))
    assert torch.equal(alone.noise, torch.randn((1, 1, 2, 2), generator=generator))
    assert not together.flips.any()


@pytest.mark.parametrize(
    ("batch", "world", "expected"),
    [
        # linspace(0, 10, 4) = 0, 3.33, 6.67, 10, rounded to 0, 3, 7, 10
        (10, 3, [(0, 3), (3, 7), (7, 10)]),
        (16, 4, [(0, 4), (4, 8), (8, 12), (12, 16)]),
        (5, 1, [(0, 5)]),
    ],
)
def test_process_rows_cut_the_micro_batch(batch, world, expected):
    rows = [process_rows(batch, rank, world) for rank in range(world)]
    assert [(r.start, r.stop) for r in rows] == expected
    assert all(isinstance(r.start, int) and isinstance(r.stop, int) for r in rows)
