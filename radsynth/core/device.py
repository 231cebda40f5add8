"""Where a network job runs, decided in one place: the device accelerate's process state picks,
CUDA when torch sees a GPU, else the CPU (accelerate is then asked for the CPU explicitly, as
training and sampling ask it, so processes `accelerate launch` started join a gloo group).

What is saved is copied to the CPU first (`cpu_state_dict`): a file or resume state written on a
GPU node then loads on a machine without one, and a later optimizer step cannot change a copy
kept as the best weights so far."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from accelerate import PartialState


def on_cpu() -> bool:
    """Without CUDA, accelerate is asked for the CPU (gloo when there are several processes)."""
    return not torch.cuda.is_available()


def process_state() -> PartialState:
    """accelerate's state of this process (and of the processes `accelerate launch` started)."""
    return PartialState(cpu=on_cpu())


def network_device() -> torch.device:
    """The device this process runs its networks on: CUDA when present, else the CPU."""
    return process_state().device


def cpu_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU copies of a state dict's tensors (copies on the CPU too)."""
    return {
        key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for key, value in state.items()
    }
