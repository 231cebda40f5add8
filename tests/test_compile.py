"""`maybe_compile` (radsynth.core.compile): the torch.compile'd network trains as eager does.

Inductor fuses kernels and so sums in another order: losses agree to float32 rounding, not
bit for bit. The first compiled step compiles (about 100 s of CPU for this 16 px network; torch
caches the result under /tmp/torchinductor_<user>, so reruns take seconds).
"""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_LUCIDRAINS

from radsynth.core.compile import maybe_compile
from radsynth.train.model import build_unet

STEPS = 4
#: Relative tolerance of a compiled loss against the eager one: float32 rounding through 4 Adam
#: steps (measured: at most 2e-7).
RTOL = 1e-5
LEARNING_RATE = 1e-3
#: Absolute tolerance of the weights: Adam divides by the gradient's running magnitude, so a
#: rounding difference in a near-zero gradient moves a weight by up to a step's size
#: (LEARNING_RATE); measured: 5e-5 on 4 of 3,456 weights. A tenth of a step.
WEIGHT_ATOL = LEARNING_RATE / 10


def losses_and_weights(compiled: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    """STEPS Adam steps of the v-like regression x -> x on seeded noise."""
    torch.manual_seed(0)
    network = maybe_compile(build_unet(TINY_LUCIDRAINS), compiled)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        x = torch.randn(4, 1, 16, 16, generator=generator)
        t = torch.randint(0, 1000, (4,), generator=generator)
        loss = (network(x, t) - x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, network.state_dict()


def test_compiled_training_matches_eager_and_keeps_the_state_dict() -> None:
    eager_losses, eager_weights = losses_and_weights(compiled=False)
    compiled_losses, compiled_weights = losses_and_weights(compiled=True)
    assert compiled_losses == pytest.approx(eager_losses, rel=RTOL)
    assert compiled_losses[-1] < compiled_losses[0]  # it trained
    assert list(compiled_weights) == list(eager_weights)  # no "_orig_mod." prefix
    for name, weight in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], weight, rtol=0, atol=WEIGHT_ATOL)


def test_compile_replaces_the_forward_only_when_enabled() -> None:
    with torch.device("meta"):
        eager = maybe_compile(build_unet(TINY_LUCIDRAINS), False)
        compiled = maybe_compile(build_unet(TINY_LUCIDRAINS), True)
    assert eager._compiled_call_impl is None
    assert compiled._compiled_call_impl is not None
    assert type(compiled) is type(eager)
