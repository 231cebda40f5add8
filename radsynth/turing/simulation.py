"""Simulated raters for the demo: tidy CSVs shaped like the experts' files, labelled SIMULATED
downstream, so the statistics and figures run before any expert has rated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from radsynth.turing.quartets import REAL_GROUP, key_path
from radsynth.turing.ratings import load_key, simulate_ratings, write_ratings_csv


def simulation_means(
    checkpoint_labels: Sequence[str], *, real: float, checkpoints: Sequence[float]
) -> dict[str, float]:
    """Group -> mean rating of the simulated raters, checkpoint means in the configured order."""
    if len(checkpoints) != len(checkpoint_labels):
        raise ValueError(
            f"turing.simulation.mean_rating_checkpoints has {len(checkpoints)} values for "
            f"{len(checkpoint_labels)} selected checkpoints ({', '.join(checkpoint_labels)})"
        )
    return {REAL_GROUP: real, **dict(zip(checkpoint_labels, checkpoints))}


def write_simulated_ratings(
    study_dir: Path,
    out_dir: Path,
    *,
    checkpoint_labels: Sequence[str],
    simulation: Mapping[str, Any],
) -> list[Path]:
    """One tidy CSV per simulated rater (named simulated-NN), as experts' files would arrive."""
    key = load_key(key_path(study_dir))
    ratings = simulate_ratings(
        key,
        n_raters=simulation["n_raters"],
        seed=simulation["seed"],
        p_identify=simulation["p_identify"],
        mean_ratings=simulation_means(
            checkpoint_labels,
            real=simulation["mean_rating_real"],
            checkpoints=simulation["mean_rating_checkpoints"],
        ),
    )
    paths = []
    for rater, rows in ratings.groupby("rater", sort=True):
        path = Path(out_dir) / f"ratings_{rater}.csv"
        write_ratings_csv(rows, path)
        paths.append(path)
    return paths
