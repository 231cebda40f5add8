"""What a training run is: the data it trains on and the settings that change its results.

A run's identity is a hash of three digests: the atlas content training reads (image bytes and
source names), the manifest content (its train/val atlas rows, or all images for the full run),
and `result_settings`. A run lives in `runs_root/<identity prefix>`, so new inputs start a new
run instead of continuing or reusing one trained on other data.

This module imports nothing heavy (no torch, numpy or pandas): the Snakefile imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radsynth.core.config import canonical
from radsynth.core.provenance import config_hash

#: Training keys that never change results: the validation batch size (a validation loss is a
#: per-image mean), the spacing of resume points (a resume repeats exactly what the
#: uninterrupted run did) and torch.compile (the same network, equal to float tolerance).
OPERATIONAL_TRAINING_KEYS = ("val_batch_size", "state_every", "compile")

#: Config sections a training run reads.
RESULT_SECTIONS = ("model", "diffusion", "training")

#: Hex digits of the identity that name the run folder (64 bits: collisions are not a concern).
RUN_FOLDER_DIGITS = 16


def result_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `model`, `diffusion` and `training` sections without the keys that do not change results.

    Excluded: `training.num_steps` (training longer continues the same run, and an earlier step
    of a longer run is the same model) and OPERATIONAL_TRAINING_KEYS (`training.val_batch_size`,
    `training.state_every`, `training.compile`). Keys are sorted at every depth: configs differing
    only in key order give equal dicts with equal repr() (Snakemake compares params by repr).
    """
    missing = [name for name in RESULT_SECTIONS if name not in config]
    if missing:
        raise KeyError(f"config lacks the section(s) {', '.join(missing)} a training run reads")
    sections = {name: dict(config[name]) for name in RESULT_SECTIONS}
    for key in ("num_steps", *OPERATIONAL_TRAINING_KEYS):
        sections["training"].pop(key, None)
    return canonical(sections)


def manifest_digest(subsets: Mapping[str, Sequence[int]] | None) -> str:
    """SHA-256 of the atlas rows of each subset ({'train': rows, 'val': rows}); None is the full
    run, which trains on all images. Not the CSV's bytes, which carry a provenance sidecar."""
    if subsets is None:
        return config_hash({"subsets": "all images"})
    return config_hash({name: [int(row) for row in rows] for name, rows in subsets.items()})


@dataclass(frozen=True)
class RunInputs:
    """The digests a run's results depend on; recorded in its folder and its markers."""

    atlas_digest: str
    manifest_digest: str
    result_settings_hash: str

    def identity(self) -> str:
        return config_hash(dataclasses.asdict(self))

    def differing(self, other: Mapping[str, str]) -> list[str]:
        """Names of the inputs in which `other` (a recorded RunInputs dict) differs from these."""
        return [key for key, value in dataclasses.asdict(self).items() if other.get(key) != value]


def run_folder(runs_root: Path, identity: str) -> Path:
    """The folder of the run with `identity` under the run's root (e.g. results/train/full)."""
    return Path(runs_root) / identity[:RUN_FOLDER_DIGITS]
