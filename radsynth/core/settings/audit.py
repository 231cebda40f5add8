"""Config section `audit`: the plausibility screen, the review pages and the memorization
audit (paper 2.3, 2.4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, field_validator, model_validator

from radsynth.core.config import ConfigModel, Count, ListOf
from radsynth.core.settings.evaluate import WeightsFile

#: The encoders `audit.memorization.encoder` may name (radsynth.audit.encoders).
AuditEncoderName = Literal["vit", "offline-inception"]
#: Screening page orders: least plausible first (where implausible images gather), or manifest rows.
ReviewSort = Literal["plausibility", "row"]


class ScreenSettings(ConfigModel):
    """`audit.screen.settings`: the plausibility screen (radsynth/audit/plausibility.py says what
    each does and how the presets' values were measured)."""

    analysis_size: int = Field(ge=4)  # px: images are area-averaged to this square side first
    cell: Count  # px of the analysis image per grid cell
    orientation_bins: int = Field(ge=2)  # signed gradient directions
    neighbourhood: NonNegativeInt  # cells on each side of a cell in its descriptor
    shrinkage: float = Field(gt=0)  # covariance shrinkage towards its mean variance
    calibration_folds: int = Field(ge=2)
    calibration_seed: NonNegativeInt

    @model_validator(mode="after")
    def _whole_cells(self) -> ScreenSettings:
        """The grid must tile the analysis image exactly."""
        if self.analysis_size % self.cell:
            raise ValueError(
                f"analysis_size {self.analysis_size} is not a multiple of cell {self.cell}"
            )
        return self

    @property
    def grid(self) -> int:
        return self.analysis_size // self.cell


class ScreenSection(ConfigModel):
    """`audit.screen`: the screen proposes exclude below `threshold`; a person decides."""

    threshold: float = Field(ge=0, le=1)
    settings: ScreenSettings


class ReviewSettings(ConfigModel):
    """`audit.review`: the offline review pages."""

    sort: ReviewSort
    reasons: ListOf[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=9)
    page_size: Count


class MemorizationSettings(ConfigModel):
    """`audit.memorization`: the encoder and how many pairs; `weights` for vit only."""

    top: Count
    encoder: AuditEncoderName
    weights: WeightsFile | None = None


class AuditSettings(ConfigModel):
    """Config section `audit`."""

    sample_sets: ListOf[str] = Field(min_length=1)
    screen: ScreenSection
    reviews_folder: str
    review: ReviewSettings
    pair_verdicts_folder: str
    memorization: MemorizationSettings
    chunk_size: Count  # synthetic images per similarity block: memory only
    batch_size: Count  # images per facing-classifier call: memory only

    @field_validator("sample_sets")
    @classmethod
    def _distinct_sets(cls, sample_sets: tuple[str, ...]) -> tuple[str, ...]:
        """A set listed twice would be screened and released twice."""
        if len(set(sample_sets)) < len(sample_sets):
            raise ValueError(f"a set is listed twice: {list(sample_sets)}")
        return sample_sets
