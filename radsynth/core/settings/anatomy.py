"""Config section `anatomy` (not yet part of `RadsynthConfig`): the landmark model's size
(`LandmarkArchitecture`) and its training (`LandmarkTraining`). Errors name the key by its dotted
path through `radsynth.core.config.load_settings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from radsynth.core.config import ConfigModel


class LandmarkArchitecture(ConfigModel):
    """`anatomy.model`: the network's size, fixed by the atlas size it is trained at."""

    image_size: PositiveInt  # px: the atlas side (preprocess.size); the model predicts at it
    # heatmap stride: 4 is torchvision's own 7x7 stride-2 stem and max pool (maps at 1/4 of the
    # side; both presets), 2 and 1 a 3x3 stem of that stride (finer maps, 4x / 16x the cost)
    stem_stride: Literal[1, 2, 4]
    trunk_levels: int = Field(ge=1, le=4)  # ResNet-18 stages used (layer1..layerN)
    fpn_channels: PositiveInt  # width of the feature pyramid
    head_channels: PositiveInt  # width of the heatmap head's hidden 3x3 conv
    heatmap_sigma_px: PositiveFloat  # px: std of the Gaussian target around each keypoint


class LandmarkTraining(ConfigModel):
    """`anatomy.training`: optimisation, early stopping, augmentation and resume cadence."""

    seed: NonNegativeInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat  # Adam
    max_steps: PositiveInt  # the budget; early stopping may end sooner
    eval_every: PositiveInt  # steps between validation MREs on the held-out slice
    patience: PositiveInt  # evaluations without a better validation MRE before stopping
    val_fraction: float = Field(gt=0, lt=1)  # share of the train subset held out for stopping
    state_every: PositiveInt  # steps between resume states (operational: results unchanged)
    flip: bool  # random horizontal flips, keypoints mirrored and left/right labels swapped
    max_rotation_deg: float = Field(ge=0, le=45)
    max_scale_change: float = Field(ge=0, lt=1)  # zoom drawn from 1 +- this
    max_shift_fraction: float = Field(ge=0, lt=0.5)  # shift drawn from +- this x image side
