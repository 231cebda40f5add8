"""Gather one checkpoint's sample shards: detect each image's facing, record the flip that makes
it left-facing (paper 2.3), write the per-checkpoint manifest and a sample-grid figure.

The shards are never rewritten: `LeftFacingSamples` reads them through the manifest and applies
the recorded flips, so the images downstream stages see are standardized without a second copy.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from radsynth.core.figures import save_figure
from radsynth.core.tables import write_table
from radsynth.sample.facing import load_classifier, predict_facing
from radsynth.sample.store import SampleSet, image_id, open_left_facing, open_samples


def facing_table(
    samples: SampleSet, classifier_path: Path, *, batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Facing and probability of left-facing for every sample, in global-index order."""
    classifier = load_classifier(classifier_path, image_size=int(samples.attrs["image_size"]))
    facing, probability = [], []
    blocks = range(0, len(samples), batch_size)
    for first in tqdm(blocks, desc="facing", unit="batch", disable=not progress):
        block_facing, block_probability = predict_facing(
            classifier,
            samples.images(samples.global_indices[first : first + batch_size]),
            batch_size=batch_size,
        )
        facing.append(block_facing)
        probability.append(block_probability)
    return np.concatenate(facing), np.concatenate(probability)


def sample_manifest(
    samples: SampleSet, facing: np.ndarray, probability: np.ndarray
) -> pd.DataFrame:
    """One row per sample: where it is stored, its seed, and the flip that makes it left-facing;
    ids from the stores' own label, so two sets of one checkpoint never share an id."""
    locations = []
    for store in samples.stores:
        indices = open_samples([store]).global_indices
        locations.extend((Path(store).name, local, int(g)) for local, g in enumerate(indices))
    location = pd.DataFrame(locations, columns=["shard", "index", "global_index"]).set_index(
        "global_index"
    )
    location = location.loc[samples.global_indices]
    return pd.DataFrame(
        {
            "image_id": [
                image_id(samples.attrs["checkpoint"], int(g)) for g in samples.global_indices
            ],
            "shard": location["shard"].to_numpy(),
            "index": location["index"].to_numpy(),
            "global_index": samples.global_indices,
            "seed": samples.seeds,
            "facing": facing,
            "probability_left": np.round(probability, 6),
            "flipped": facing == "right",
        }
    )


def plot_sample_grid(
    images: Sequence[np.ndarray],
    flipped: Sequence[bool],
    out_png: Path,
    *,
    title: str,
    provenance: Mapping[str, str],
) -> None:
    """A grid of standardized samples; mirrored ones get an orange frame, so a reviewer can check
    that the facing detector's flips look right."""
    columns = max(4, int(np.ceil(np.sqrt(len(images)))))
    rows = int(np.ceil(len(images) / columns))
    figure = Figure(figsize=(1.4 * columns, 1.4 * rows + 0.8), layout="constrained")
    figure.suptitle(textwrap.fill(title, width=int(14 * columns)), fontsize=9)
    for position, (image, was_flipped) in enumerate(zip(images, flipped)):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_color("tab:orange" if was_flipped else "0.7")
            spine.set_linewidth(2.5 if was_flipped else 0.5)
    save_figure(figure, out_png, title=title, provenance=provenance, dpi=110)


def gather_checkpoint(
    stores: Sequence[Path],
    classifier_path: Path,
    manifest_csv: Path,
    *,
    checkpoint_label: str,
    batch_size: int,
    provenance: Mapping[str, str],
    progress: bool = True,
) -> pd.DataFrame:
    """The gather stage of one checkpoint: the manifest, with each sample's facing and flip."""
    samples = open_samples(stores)
    facing, probability = facing_table(
        samples, classifier_path, batch_size=batch_size, progress=progress
    )
    manifest = sample_manifest(samples, facing, probability)
    write_table(
        manifest,
        manifest_csv,
        provenance={
            **provenance,
            "checkpoint": checkpoint_label,
            "sampler": samples.attrs["sampler"],
            "steps": str(samples.attrs["steps"]),
        },
    )
    return manifest


def plot_checkpoint_grid(
    manifest_csv: Path,
    grid_png: Path,
    *,
    checkpoint_label: str,
    grid_images: int,
    provenance: Mapping[str, str],
) -> None:
    """The first `grid_images` gathered samples of a checkpoint, left-facing, as a figure (kept
    apart from the manifest so that a figure setting never reruns what depends on the manifest)."""
    shown = open_left_facing(manifest_csv)
    manifest = shown.manifest
    ids = list(shown)[:grid_images]
    attrs = shown.samples.attrs
    title = (
        f"{checkpoint_label}: {len(ids)} of {len(manifest)} samples, left-facing "
        f"({int(manifest['flipped'].sum())} mirrored, orange frame); "
        f"{attrs['sampler']} {attrs['steps']} steps, {attrs['weights']} weights"
    )
    plot_sample_grid(
        [shown[i] for i in ids],
        [bool(manifest.loc[i, "flipped"]) for i in ids],
        grid_png,
        title=title,
        provenance=provenance,
    )
