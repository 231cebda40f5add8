"""torch.compile of a network, the one switch `training.compile` turns. In core because two stages
run the denoising network: training (`radsynth.train`) and sampling (`radsynth.sample`)."""

from __future__ import annotations

import torch


def maybe_compile(network: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`network` with its forward compiled by torch.compile when `enabled`, in place
    (`nn.Module.compile`): the module, its parameters and its state_dict keys stay the same, so
    EMA copies, optimizers and checkpoints see the eager network. The first forward of each
    input shape and mode compiles (tens of seconds to minutes on a CPU); later ones reuse the
    compiled code."""
    if enabled:
        network.compile()
    return network
