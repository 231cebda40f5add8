"""Sampled images in [-1, 1] to the uint8 grey levels a sample store holds."""

from __future__ import annotations

import numpy as np
import torch

QUANTIZATIONS: tuple[str, ...] = ("round", "truncate")


def to_uint8(images: torch.Tensor, quantization: str) -> np.ndarray:
    """[-1, 1] -> [0, 255] via x' = clamp((x + 1) / 2, 0, 1) * 255, then by `quantization`:

    round: add 0.5 and truncate, so halves go up (126.5 -> 127), as torchvision's save_image does;
    truncate: drop the fraction (126.5 -> 126, 126.99 -> 126), as I-SynMed does.
    """
    scaled = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1) * 255
    if quantization == "round":
        scaled = torch.floor(scaled + 0.5)
    elif quantization != "truncate":
        raise ValueError(
            f"sampling.quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}"
        )
    return scaled.to(torch.uint8).numpy()
