"""The clinical Turing test's study: assembled from the atlas and the gathered samples (paper 2.5).

Real images are standardized to left-facing with the same classifier as the samples, so facing
cannot give the real image away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import pandas as pd

from radsynth.sample.facing import load_classifier, predict_facing, standardize_left
from radsynth.sample.store import open_left_facing
from radsynth.data.atlas import load_atlas
from radsynth.turing.quartets import build_quartets


def real_left_facing(atlas_h5: Path, classifier_path: Path, *, batch_size: int) -> dict[str, np.ndarray]:
    """Atlas images by source name, mirrored where the classifier finds them right-facing."""
    atlas = load_atlas(atlas_h5)
    classifier = load_classifier(classifier_path, image_size=int(atlas.attrs["size"]))
    facing, _ = predict_facing(classifier, atlas.images, batch_size=batch_size)
    images, _ = standardize_left(atlas.images, facing)
    return dict(zip(atlas.source_names, images))


def build_study(
    atlas_h5: Path,
    classifier_path: Path,
    sample_manifests: Mapping[str, Path],
    out_dir: Path,
    *,
    n_quartets: int,
    seed: int,
    batch_size: int,
    provenance: Mapping[str, Any],
    eligible: Mapping[str, Collection[str]] | None = None,
) -> pd.DataFrame:
    """The study's images, key and sources. `sample_manifests` maps each checkpoint label to its
    gathered manifest; `eligible` (a screening stage's kept ids per group) restricts the draw."""
    real = real_left_facing(atlas_h5, classifier_path, batch_size=batch_size)
    synthetic = {label: open_left_facing(path) for label, path in sample_manifests.items()}
    return build_quartets(real, synthetic, out_dir, n_quartets=n_quartets, seed=seed,
                          provenance=dict(provenance), eligible=eligible)
