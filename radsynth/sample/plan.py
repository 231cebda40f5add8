"""How a sample set is cut into shard jobs, importable without torch or zarr (the Snakefile
plans its jobs from it)."""

from __future__ import annotations


def shard_plan(n_images: int, images_per_shard: int) -> list[tuple[int, int]]:
    """(first global index, image count) of each shard of one checkpoint's sample set."""
    if n_images < 1 or images_per_shard < 1:
        raise ValueError(
            f"a sample set needs n_images >= 1 and images_per_shard >= 1, got {n_images}, "
            f"{images_per_shard}"
        )
    return [
        (first, min(images_per_shard, n_images - first))
        for first in range(0, n_images, images_per_shard)
    ]


def seed_label(sample_set: str, checkpoint_label: str) -> str:
    """The label image seeds derive from: sets of one checkpoint never share a seed."""
    return f"{sample_set}/{checkpoint_label}"
