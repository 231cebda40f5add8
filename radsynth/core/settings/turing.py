"""Config section `turing`: the clinical Turing test (paper 2.5)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt

from radsynth.core.config import ConfigModel, Count, ListOf

#: A mean realism rating on the form's 1-4 scale.
MeanRating = Annotated[float, Field(ge=1, le=4)]


class FormSettings(ConfigModel):
    """`turing.form`: the text of the offline rating form."""

    title: str = Field(min_length=1)
    instructions: str = Field(min_length=1)


class SimulationSettings(ConfigModel):
    """`turing.simulation`: simulated raters (labelled SIMULATED in every output)."""

    n_raters: int = Field(ge=2)
    seed: NonNegativeInt
    p_identify: float = Field(ge=0, le=1)
    mean_rating_real: MeanRating
    mean_rating_checkpoints: ListOf[MeanRating] = Field(min_length=1)  # one per selected


class StatisticsSettings(ConfigModel):
    """`turing.statistics`."""

    conf_level: float = Field(gt=0, lt=1)
    wilcoxon_sensitivity_digits_rank: float = Field(ge=1)


class TuringSettings(ConfigModel):
    """Config section `turing`."""

    sample_set: str  # a key of sampling.sets (check_config)
    n_quartets: Count
    seed: NonNegativeInt
    form: FormSettings
    ratings: Literal["simulated", "folder"]
    ratings_folder: str
    simulation: SimulationSettings
    statistics: StatisticsSettings
    example_quartet: Count  # at most n_quartets (check_config)
