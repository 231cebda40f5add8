"""The exponential moving average of the online weights: ema_pytorch.EMA itself, constructed as
lucidrains' Trainer constructs it, so I-SynMed's EMA schedule comes from the library that ran it."""

from __future__ import annotations

import torch
from ema_pytorch import EMA

from radsynth.core.settings.train import EmaSettings


def build_ema(online: torch.nn.Module, ema: EmaSettings) -> EMA:
    """`ema_pytorch.EMA` of the unwrapped online model, as `Trainer.__init__` builds it.

    The Trainer passes beta=ema_decay and update_every=ema_update_every and leaves
    update_after_step, inv_gamma and power at ema_pytorch's defaults; here each comes from
    `training.ema`, whose paper values are those defaults. The Trainer calls `update()` once per
    optimizer step, after it. include_online_model=False keeps the online weights out of
    `state_dict()`, which then holds only `initted`, `step` and `ema_model.*`: the resume state
    stores the online weights once, in its own file.
    """
    return EMA(
        online,
        beta=ema.decay,
        update_every=ema.update_every,
        update_after_step=ema.update_after_step,
        inv_gamma=ema.inv_gamma,
        power=ema.power,
        include_online_model=False,
    )
