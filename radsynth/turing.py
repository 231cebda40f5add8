"""The clinical Turing test as pipeline stages: assemble the study from the atlas and the
gathered samples, simulate ratings for the demo, and run the statistics on whatever ratings
folder the config names (paper 2.5-2.6).

Real images are standardized to left-facing with the same classifier as the samples, so facing
cannot give the real image away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from radsynth.facing import load_classifier, predict_facing, standardize_left
from radsynth.gather import open_left_facing
from radsynth.preprocess import load_atlas
from radsynth.quartets import KEY_DIRNAME, KEY_FILENAME, REAL_GROUP, build_quartets
from radsynth.ratings import load_key, simulate_ratings, write_ratings_csv


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


def key_path(study_dir: Path) -> Path:
    return Path(study_dir) / KEY_DIRNAME / KEY_FILENAME


def simulation_means(checkpoint_labels: Sequence[str], *, real: float, checkpoints: Sequence[float]) -> dict[str, float]:
    """Group -> mean rating of the simulated raters, checkpoint means in the configured order."""
    if len(checkpoints) != len(checkpoint_labels):
        raise ValueError(
            f"turing.simulation.mean_rating_checkpoints has {len(checkpoints)} values for "
            f"{len(checkpoint_labels)} selected checkpoints ({', '.join(checkpoint_labels)})"
        )
    return {REAL_GROUP: real, **dict(zip(checkpoint_labels, checkpoints))}


def write_simulated_ratings(
    study_dir: Path, out_dir: Path, *, checkpoint_labels: Sequence[str], simulation: Mapping[str, Any]
) -> list[Path]:
    """One tidy CSV per simulated rater (named simulated-NN), as experts' files would arrive."""
    key = load_key(key_path(study_dir))
    ratings = simulate_ratings(
        key, n_raters=simulation["n_raters"], seed=simulation["seed"], p_identify=simulation["p_identify"],
        mean_ratings=simulation_means(checkpoint_labels, real=simulation["mean_rating_real"],
                                      checkpoints=simulation["mean_rating_checkpoints"]),
    )
    paths = []
    for rater, rows in ratings.groupby("rater", sort=True):
        path = Path(out_dir) / f"ratings_{rater}.csv"
        write_ratings_csv(rows, path)
        paths.append(path)
    return paths


def ratings_folder(ratings_input: Sequence[str] | str) -> Path:
    """The one folder a rule's ratings input lives in (a folder, or files of one folder)."""
    paths = [Path(ratings_input)] if isinstance(ratings_input, (str, Path)) else [Path(p) for p in ratings_input]
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    folders = {path.parent for path in paths}
    if len(folders) != 1:
        raise ValueError(f"ratings files must share one folder, got {sorted(map(str, folders))}")
    return folders.pop()
