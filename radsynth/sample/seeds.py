"""Per-image randomness: every image's noise comes from its own generator.

Each image's randomness (its initial noise and the noise of every stochastic step) comes from its
own generator seeded by `image_seed(base seed, checkpoint, global index)`, so an image's noise does
not depend on the shard, the batch or the other images. On CPU the network's float arithmetic is
not batch-invariant (MKL picks different GEMM kernels for different batch sizes: about 1e-7 per
layer), so a different batch size can move a pixel by one grey level; the same batch layout
(shard start and batch size, both recorded and checked on resume) gives byte-identical images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch


def image_seed(base_seed: int, checkpoint: str, global_index: int) -> int:
    """A 63-bit seed from SHA-256 of (base seed, checkpoint, index): the same image whatever the
    sharding."""
    if isinstance(base_seed, bool) or not isinstance(base_seed, (int, np.integer)):
        raise TypeError(f"base_seed must be an integer, got {base_seed!r}")
    if (
        isinstance(global_index, bool)
        or not isinstance(global_index, (int, np.integer))
        or global_index < 0
    ):
        raise ValueError(f"global_index must be a non-negative integer, got {global_index!r}")
    canonical = json.dumps(
        ["radsynth-image-seed/1", int(base_seed), str(checkpoint), int(global_index)]
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_generators(seeds: Sequence[int], device: str | torch.device) -> list[torch.Generator]:
    """One generator per image: the only source of that image's randomness."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def initial_noise(
    generators: Sequence[torch.Generator],
    shape: tuple[int, ...],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """x_T, each image drawn from its own generator (on the generator's device, then moved)."""
    draws = [
        torch.randn((1, *shape), generator=g, device=g.device, dtype=dtype) for g in generators
    ]
    return torch.cat(draws).to(device)
