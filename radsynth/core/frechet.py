"""The Frechet distance of two feature arrays, computed by torchmetrics.

In core because two stages compute it: evaluate (Inception FID of every FID set, `radsynth fid`)
and anatomy (the landmark encoder's Frechet distance and the real-vs-real floor). torchmetrics
receives the features through a pass-through feature module, so it does its own statistics on
exactly these numbers, in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


class PassThrough(nn.Module):
    """torchmetrics feature module for features already extracted: returns them as float64, so
    torchmetrics' FID (which casts its result to the features' dtype) is returned in float64."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(torch.float64)


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """torchmetrics' FID between two feature arrays (N, D), in float64."""
    metric = FrechetInceptionDistance(
        feature=PassThrough(real.shape[1]), reset_real_features=False, normalize=False
    )  # normalize only rescales input for its own Inception
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(synthetic), real=False)
    return float(metric.compute())
