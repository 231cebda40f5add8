"""Randomness as pure functions of (seed, stream, index), never a stream carried across steps.

A resumed run therefore needs no RNG state: step m draws its batch and its augmentation from
generators seeded by (seed, stream, m). In core because two stages train seeded, resumable
networks with it: the diffusion model (`radsynth.train`) and the landmark model
(`radsynth.anatomy`).
"""

from __future__ import annotations

import numpy as np
import torch

STREAM_INIT, STREAM_EPOCH, STREAM_MICRO_BATCH, STREAM_DROPOUT, STREAM_VALIDATION = range(5)


def derived_seed(seed: int, stream: int, index: int) -> int:
    """A 64-bit seed for one (stream, index), independent across streams and indices."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)[0])


def seeded_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for one (stream, index): the same draws on any device or after any resume."""
    generator = torch.Generator()
    generator.manual_seed(derived_seed(seed, stream, index))
    return generator


def micro_batch_positions(n_train: int, batch_size: int, seed: int, micro_index: int) -> np.ndarray:
    """Positions (into the train list) of micro-batch `micro_index`.

    Each epoch is a seeded permutation cut into consecutive batches, the last one short, as
    lucidrains' cycled DataLoader(shuffle=True, drop_last=False) delivers them.
    """
    batches_per_epoch = -(-n_train // batch_size)
    epoch, batch = divmod(micro_index, batches_per_epoch)
    order = torch.randperm(n_train, generator=seeded_generator(seed, STREAM_EPOCH, epoch)).numpy()
    return order[batch * batch_size : (batch + 1) * batch_size]
