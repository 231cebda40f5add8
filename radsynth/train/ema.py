"""The exponential moving average of the online weights, as ema_pytorch.EMA updates it under
lucidrains' Trainer."""

from __future__ import annotations

from typing import Literal

import torch

from radsynth.train.settings import EmaSettings


def ema_action(step: int, ema: EmaSettings) -> Literal["copy", "lerp", "skip"]:
    """What `ema_pytorch.EMA.update()` does when lucidrains' Trainer calls it after optimizer step `step`.

    The Trainer calls update() once per optimizer step (1-based `step`), so EMA's own counter is
    step - 1 at the call. ema_pytorch 0.8 `EMA.update`: the first call copies the online weights;
    afterwards only every `update_every`-th call acts, copying while the counter is at most
    `update_after_step` and lerping after it. Steps 1, 11, ..., 101 copy; 111, 121, ... lerp.
    """
    counter = step - 1
    if counter == 0:
        return "copy"
    if counter % ema.update_every:
        return "skip"
    return "copy" if counter <= ema.update_after_step else "lerp"


def ema_decay(step: int, ema: EmaSettings) -> float:
    """The decay ema_pytorch's `get_current_decay` gives at the update after optimizer step `step`.

    Its counter has been incremented to `step` by then: e = step - update_after_step - 1,
    decay = min(1 - (1 + e / inv_gamma) ** -power, decay), 0 when e <= 0; computed in float32
    like ema_pytorch's tensor arithmetic (reaches 0.995 after about 2,930 steps).
    """
    epoch = torch.tensor(float(max(step - ema.update_after_step - 1, 0)), dtype=torch.float32)
    if epoch.item() <= 0:
        return 0.0
    value = 1 - (1 + epoch / ema.inv_gamma) ** -ema.power
    return float(value.clamp(max=ema.decay))


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, online: torch.nn.Module, step: int, ema: EmaSettings) -> None:
    """Apply `ema_action(step)` to every floating parameter and buffer, as ema_pytorch does."""
    action = ema_action(step, ema)
    if action == "skip":
        return
    weight = 1.0 - ema_decay(step, ema)
    pairs = [*zip(ema_model.parameters(), online.parameters()), *zip(ema_model.buffers(), online.buffers())]
    for shadow, current in pairs:
        if not torch.is_floating_point(shadow):
            continue
        if action == "copy":
            shadow.copy_(current)
        else:
            shadow.lerp_(current, weight)
