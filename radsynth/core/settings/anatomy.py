"""Config section `anatomy`: the landmark model (`LandmarkNetwork`, trained by
`LandmarkTraining`), and what the stage measures with it: anatomical fidelity, the anatomical
screen, the two-sample check and the utility of synthetic images. Errors name the key by its
dotted path through `radsynth.core.config.load_settings`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from radsynth.core.config import ConfigModel, ListOf

#: The geometry measures the anatomy stage writes per image (radsynth.anatomy.geometry).
GeometryMeasure = Literal[
    "c2_c7_angle_deg",
    "c3_height",
    "c3_depth",
    "c4_height",
    "c4_depth",
    "c5_height",
    "c5_depth",
    "c6_height",
    "c6_depth",
    "c7_height",
    "c7_depth",
]
Share = Annotated[float, Field(gt=0, lt=1)]
Percentile = Annotated[float, Field(ge=0, le=100)]
#: How radsynth.audit.corruptions breaks the anatomy of a clean image.
Corruption = Literal["flip_spine", "swap_vertebrae", "blank_spine", "invert"]


class LandmarkNetwork(ConfigModel):
    """`anatomy.model`: the network's size (its input side is the atlas's, preprocess.size)."""

    # heatmap stride: 4 is torchvision's own 7x7 stride-2 stem and max pool (maps at 1/4 of the
    # side; both presets), 2 and 1 a 3x3 stem of that stride (finer maps, 4x / 16x the cost)
    stem_stride: Literal[1, 2, 4]
    trunk_levels: int = Field(ge=1, le=4)  # ResNet-18 stages used (layer1..layerN)
    fpn_channels: PositiveInt  # width of the feature pyramid
    head_channels: PositiveInt  # width of the heatmap head's hidden 3x3 conv
    heatmap_sigma_px: PositiveFloat  # px: std of the Gaussian target around each keypoint


class LandmarkArchitecture(LandmarkNetwork):
    """A landmark model's whole architecture: the network and the image side it predicts at."""

    image_size: PositiveInt  # px: the atlas side (preprocess.size)


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


class FidelitySettings(ConfigModel):
    """`anatomy.fidelity`: distances of each set's geometry from the held-out real images'."""

    n_boot: PositiveInt  # bootstrap resamples of each W1 interval
    level: float = Field(gt=0, lt=1)  # the intervals' confidence level
    seed: NonNegativeInt  # bootstrap draws and the real-vs-real halves


class FigureSettings(ConfigModel):
    """`anatomy.figure`: display only (a change reruns the figure, nothing else)."""

    measures: ListOf[GeometryMeasure] = Field(min_length=1)  # one panel each, beside FID


class AnatomyScreenSettings(ConfigModel):
    """`anatomy.screen`: the per-image anatomical flags added to the screening manifest."""

    min_confidence: float = Field(gt=0, lt=1)  # a landmark's heatmap peak below this is flagged
    # the real held-out images' percentile range a geometry measure must fall within
    percentiles: ListOf[Percentile] = Field(min_length=2, max_length=2)
    corruptions: ListOf[Corruption] = Field(min_length=1)  # measured: screens vs corrupted copies


class TwoSampleSettings(ConfigModel):
    """`anatomy.two_sample`: the real-vs-synthetic classifier, per FID checkpoint."""

    steps: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat  # Adam
    seed: NonNegativeInt
    trunk_levels: int = Field(ge=1, le=4)  # ResNet-18 stages (fewer for small images)
    n_boot: PositiveInt  # stratified bootstrap resamples of the AUROC interval
    level: float = Field(gt=0, lt=1)


class UtilitySamples(ConfigModel):
    """`anatomy.utility.samples`: the synthetic images the students train on, sampled from the
    split run's last checkpoint with the sampling section's sampler."""

    n_images: PositiveInt
    images_per_shard: PositiveInt


class UtilitySettings(ConfigModel):
    """`anatomy.utility`: train on synthetic, test on real (students of the teacher's
    architecture and training settings)."""

    samples: UtilitySamples
    fractions: ListOf[Share] = Field(min_length=1)  # shares of the real train subset
    seeds: ListOf[NonNegativeInt] = Field(min_length=1)


class AnatomySettings(ConfigModel):
    """`anatomy`: the landmark stage."""

    model: LandmarkNetwork
    training: LandmarkTraining
    batch_size: PositiveInt  # images per inference batch (operational: results unchanged)
    # deg: C2-C7 angle below the first is lordotic, above the second kyphotic (geometry.py)
    curvature_thresholds_deg: ListOf[float] = Field(min_length=2, max_length=2)
    fidelity: FidelitySettings
    figure: FigureSettings
    screen: AnatomyScreenSettings
    two_sample: TwoSampleSettings
    utility: UtilitySettings

    @field_validator("curvature_thresholds_deg")
    @classmethod
    def _thresholds_ordered(cls, thresholds: tuple[float, ...]) -> tuple[float, ...]:
        """The straight class lies between the two thresholds."""
        if thresholds[0] > thresholds[1]:
            raise ValueError(
                f"the lordotic threshold must not exceed the kyphotic one: {thresholds}"
            )
        return thresholds
