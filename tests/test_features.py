"""The resize of the feature extractors: downscaling with and without antialiasing, against
resampling weights written out here (PIL's and torch's definitions of bilinear)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from radsynth.core.features import (
    BILINEAR,
    GRAY_TO_RGB,
    INCEPTION_SCALING,
    RANDOM_INIT,
    ExtractorDescription,
    ResizingExtractor,
)


class FirstChannelPixels(nn.Module):
    """A network whose features are its input's first channel: what the resize and scaling made."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].flatten(1)


def pixel_extractor(size: int, *, antialias: bool) -> ResizingExtractor:
    description = ExtractorDescription(
        name="resized pixels",
        weights=RANDOM_INIT,
        input_size=size,
        resize=BILINEAR,
        antialias=antialias,
        channel_rule=GRAY_TO_RGB,
        scaling=INCEPTION_SCALING,
        num_features=size * size,
    )
    return ResizingExtractor(FirstChannelPixels(), description)


def antialiased_weights(n_in: int, n_out: int) -> np.ndarray:
    """PIL's antialiased bilinear (which torch's antialias=True follows): output pixel i is centred
    at (i + 0.5) * s in input coordinates (s = n_in / n_out), and input pixel j (centred at
    j + 0.5) weighs max(0, 1 - |j + 0.5 - centre| / s): the triangle stretched to the scale,
    normalised to sum 1 (rows at the border lose the weights outside the image)."""
    scale = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * scale
    distance = np.abs(np.arange(n_in)[None, :] + 0.5 - centres[:, None])
    weights = np.clip(1 - distance / scale, 0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def plain_bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """torch's bilinear with align_corners=False and no antialias: output pixel i samples input
    coordinate (i + 0.5) * s - 0.5 (clamped at 0) between its two neighbours, whatever the scale."""
    source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), low] += 1 - (source - low)
    weights[np.arange(n_out), high] += source - low
    return weights


def test_hand_made_weights_halving_a_side() -> None:
    """Halving: antialiased output pixel i averages pixels 2i-1..2i+2 with weights 1, 3, 3, 1 (/8;
    the first drops pixel -1: 3, 3, 1 /7); without antialias it is the mean of pixels 2i, 2i+1."""
    np.testing.assert_allclose(antialiased_weights(8, 4)[0, :3], [3 / 7, 3 / 7, 1 / 7])
    np.testing.assert_allclose(antialiased_weights(8, 4)[1, 1:5], [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    np.testing.assert_allclose(plain_bilinear_weights(8, 4)[1, 2:4], [0.5, 0.5])
    assert plain_bilinear_weights(8, 4)[1].sum() == 1.0


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("size", [8, 6])
def test_downscale_follows_the_antialias_flag(antialias: bool, size: int) -> None:
    """A 16 px image reduced to 8 px (halving) and 6 px (a non-integer factor), then scaled to
    (x - 128) / 128; the other flag's resize differs from it by tens of grey levels."""
    image = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    extractor = pixel_extractor(size, antialias=antialias)
    features = extractor(torch.from_numpy(image[None])).numpy().reshape(size, size)
    make_weights = antialiased_weights if antialias else plain_bilinear_weights
    other_weights = plain_bilinear_weights if antialias else antialiased_weights
    expected = make_weights(16, size) @ image.astype(np.float64) @ make_weights(16, size).T
    other = other_weights(16, size) @ image.astype(np.float64) @ other_weights(16, size).T
    np.testing.assert_allclose(features * 128 + 128, expected, atol=1e-3)
    assert np.abs(expected - other).max() > 10
    assert extractor.description.antialias is antialias
