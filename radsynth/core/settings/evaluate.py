"""Config section `evaluate`: FID through training (paper Figure 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt

from radsynth.core.config import ConfigModel, Count
from radsynth.core.settings.sample import Sampler

#: The feature extractors `evaluate.extractor.name` may name (radsynth.core.features).
ExtractorName = Literal["offline-inception", "fid-inception"]


class WeightsFile(ConfigModel):
    """A network's weights file in resources/weights/, fetched by a localrule or placed by hand."""

    filename: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    url: str
    checksum: str  # sha256:<hex>, or sha256-prefix:<hex> where only a prefix is published
    landing_page: str


class FidSamplesSettings(ConfigModel):
    """`evaluate.samples`: the FID set of each evaluated checkpoint."""

    n_images: int = Field(ge=2)
    images_per_shard: Count
    sampler: Sampler
    steps: Count


class ExtractorSettings(ConfigModel):
    """`evaluate.extractor`: the feature extractor; `weights` for fid-inception only."""

    name: ExtractorName
    antialias: bool
    weights: WeightsFile | None = None


class MetricsSettings(ConfigModel):
    """`evaluate.metrics`: KID subsets and PRDC's k. The presets' values: torchmetrics' KID
    defaults (100 subsets of 1000, as torch-fidelity's and Binkowski et al.'s code), and PRDC's
    k of 5 (Naeem et al. 2020's recommendation, used by CheXGenBench)."""

    kid_subsets: Count
    # capped at the smaller image set (torchmetrics refuses a larger subset); the row records
    # the size used
    kid_subset_size: int = Field(ge=2)
    # torchmetrics draws the subsets with torch.randperm: unseeded, the same images would give
    # a different KID on every run
    kid_seed: NonNegativeInt
    prdc_nearest_k: Count  # k of PRDC's nearest-neighbour balls


class EvaluateSettings(ConfigModel):
    """Config section `evaluate`."""

    every_steps: Count  # a multiple of training.checkpoint_every (check_config)
    samples: FidSamplesSettings
    extractor: ExtractorSettings
    metrics: MetricsSettings
    batch_size: Count  # images per extractor call: memory only
