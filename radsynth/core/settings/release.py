"""Config section `release`: the figshare package's text and its privacy gate. What the images
derive from (atlas, licence, citation) is no key here: it follows `data.source`
(radsynth.release.card.DATA_ORIGINS), so a release cannot name another atlas than its own."""

from __future__ import annotations

from pydantic import Field

from radsynth.core.config import ConfigModel, Count, ListOf


class Author(ConfigModel):
    """One author of the figshare article; an ORCID iD (optional) links the name to its record."""

    name: str = Field(min_length=1)
    orcid: str | None = Field(default=None, pattern=r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")


class ReleaseSettings(ConfigModel):
    """Config section `release`."""

    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    keywords: ListOf[str] = Field(min_length=1)
    categories: ListOf[int] = Field(min_length=1)  # figshare category ids (GET /v2/categories)
    authors: ListOf[Author] = Field(min_length=1)
    max_archive_bytes: Count  # figshare's per-file limit is 20 GB
    near_duplicate_patch_distance: float = Field(ge=0)  # privacy gate, pixels in [0, 1]
