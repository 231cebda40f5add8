"""The rejects table of the atlas build: one row per unreadable image, missing or broken
annotation and annotation quirk, so nothing is dropped silently."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radsynth.core.tables import write_table

REJECT_COLUMNS = ("source", "kind", "reason")
IMAGE_REJECTED = "image_rejected"
ANNOTATION_MISSING = "annotation_missing"
ANNOTATION_REJECTED = "annotation_rejected"
ANNOTATION_NOTE = "annotation_note"


@dataclass(frozen=True)
class RejectRow:
    """One row of the rejects CSV."""

    source: str
    kind: str
    reason: str


def write_rejects(path: Path, rows: Iterable[RejectRow], provenance: Mapping[str, str]) -> None:
    """The rejects table with its provenance (header only when there is nothing to report)."""
    frame = pd.DataFrame(
        [(row.source, row.kind, row.reason) for row in rows], columns=list(REJECT_COLUMNS)
    )
    write_table(frame, Path(path), provenance=provenance)
