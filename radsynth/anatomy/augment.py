"""Seeded geometric augmentation of images with their keypoints: a random affine (rotation, zoom,
shift) and a horizontal flip.

Left and right: CSXA names corners by image x ("C3 top left" is the corner with the smaller x),
not by anatomy, and both the atlas and the phantoms face either way. The model therefore learns
the image-x naming directly and needs no facing: a flipped image swaps every "left" label with
its "right" partner, so the flipped targets follow the same naming. Which side is anterior is a
question for the geometry (`radsynth.anatomy.geometry` takes the facing), not for the detector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from radsynth.core.settings.anatomy import LandmarkTraining


def flip_permutation(labels: Sequence[str]) -> list[int]:
    """For each label, the index of its mirror image: "left" <-> "right", others unchanged."""
    swapped = [
        label.replace("left", "\0").replace("right", "left").replace("\0", "right")
        for label in labels
    ]
    missing = [s for s in swapped if s not in labels]
    if missing:
        raise ValueError(f"keypoint labels {missing} have no mirrored partner in {list(labels)}")
    return [list(labels).index(s) for s in swapped]


def random_affines(
    generator: torch.Generator, batch: int, training: LandmarkTraining, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, 2) forward linear maps (rotation x zoom x flip, about the image centre), (B, 2)
    shifts in px, and the flips as a (B,) bool, drawn in one fixed order from `generator`."""
    angle = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(
        training.max_rotation_deg
    )
    zoom = 1 + (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * (
        training.max_scale_change
    )
    shift = (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 2 - 1) * (
        training.max_shift_fraction * side
    )
    flips = (torch.rand(batch, generator=generator) < 0.5) & training.flip
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.ones((batch, 2), dtype=torch.float64)
    mirror[:, 0] = torch.where(flips, -1.0, 1.0)
    linear = zoom[:, None, None] * rotation * mirror[:, None, :]
    return linear, shift, flips


def augment_batch(
    images: torch.Tensor,
    keypoints: torch.Tensor,
    generator: torch.Generator,
    training: LandmarkTraining,
    permutation: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp (B, 1, S, S) images bilinearly (zeros outside: air) and move their (B, K, 2)
    keypoints with them: p_out - c = L (p_in - c) + t, c the image centre; flipped images also
    swap their left/right labels. A keypoint warped out of the image becomes missing (NaN).
    The draws come from `generator` on the CPU, then move to the images' device, so a batch on a
    GPU is warped as the same batch on the CPU."""
    side = images.shape[-1]
    drawn = random_affines(generator, len(images), training, side)
    linear, shift, flips = (tensor.to(images.device) for tensor in drawn)
    inverse = torch.linalg.inv(linear)
    # affine_grid maps output to input in normalised coordinates u = (p - c) * 2 / S
    theta = torch.cat([inverse, -(inverse @ (shift * 2 / side)[..., None])], dim=-1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    centre = (side - 1) / 2
    moved = (keypoints.double() - centre) @ linear.transpose(1, 2) + centre + shift[:, None, :]
    moved = torch.where(flips[:, None, None], moved[:, list(permutation), :], moved)
    outside = ((moved < -0.5) | (moved > side - 0.5)).any(dim=-1, keepdim=True)
    return warped, torch.where(outside, torch.nan, moved).to(keypoints.dtype)
