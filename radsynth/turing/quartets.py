"""Quartets for the blinded clinical Turing test.

The paper (section 2.4) drew 50 real CSXA scans and 50 screened synthetic images from each of
three checkpoints, and grouped them into quartets of one real and one image per checkpoint;
each of 8 raters picked the real image and rated all four on a 1-4 Likert scale. This module
draws the images, shuffles them within each quartet and exports them so that nothing a rater
sees tells the groups apart:

    out_dir/images/   group-blind PNGs + layout.csv (quartet, position, image) -> rating form
    out_dir/key/      key.csv (quartet, position, group, image), sources.csv (image, group,
                      source_id) and provenance.json -> kept by the study coordinator

Pools are read lazily: only the keys of `real` and `synthetic` are listed and only the drawn
images are accessed, so the mappings may be backed by HDF5 or Zarr.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from radsynth.core.atomic import atomic_directory
from radsynth.core.images import png_bytes

REAL_GROUP = "real"
IMAGES_DIRNAME = "images"
KEY_DIRNAME = "key"
LAYOUT_FILENAME = "layout.csv"
KEY_FILENAME = "key.csv"
SOURCES_FILENAME = "sources.csv"
PROVENANCE_FILENAME = "provenance.json"
LAYOUT_COLUMNS = ["quartet", "position", "image"]
KEY_COLUMNS = ["quartet", "position", "group", "image"]
SOURCES_COLUMNS = ["image", "group", "source_id"]
#: Image names are random hex tokens of this many digits: they carry no group or source.
TOKEN_HEX_DIGITS = 8


def group_pools(
    real_ids: Collection[str],
    synthetic_ids: Mapping[str, Collection[str]],
    eligible: Mapping[str, Collection[str]] | None,
) -> dict[str, list[str]]:
    """Sorted drawable ids per group, real first then checkpoints by label.

    Sorting makes the draw independent of the order a store lists its keys in.
    """
    if not synthetic_ids:
        raise ValueError(
            "synthetic holds no checkpoint: a quartet needs at least one synthetic group"
        )
    if REAL_GROUP in synthetic_ids:
        raise ValueError(f"checkpoint label {REAL_GROUP!r} is reserved for the real images")
    pools = {
        REAL_GROUP: real_ids,
        **{label: synthetic_ids[label] for label in sorted(synthetic_ids)},
    }
    restrictions = eligible or {}
    unknown_groups = sorted(set(restrictions) - set(pools))
    if unknown_groups:
        raise ValueError(
            f"eligible names unknown group(s) {unknown_groups}; groups are {list(pools)}"
        )
    return {
        group: sorted(_eligible_ids(group, ids, restrictions.get(group)))
        for group, ids in pools.items()
    }


def _eligible_ids(
    group: str, pool: Collection[str], eligible: Collection[str] | None
) -> Collection[str]:
    """The pool itself, or its eligible subset; an eligible id outside the pool is an error."""
    if eligible is None:
        return pool
    missing = sorted(set(eligible) - set(pool))
    if missing:
        raise ValueError(
            f"eligible id(s) {missing[:5]} of group {group!r} are not in its image pool"
        )
    return set(eligible)


def draw_sources(
    pools: Mapping[str, Sequence[str]], n_quartets: int, rng: np.random.Generator
) -> dict[str, list[str]]:
    """n_quartets ids per group, drawn without replacement."""
    if n_quartets < 1:
        raise ValueError(f"turing.n_quartets must be at least 1, got {n_quartets}")
    draws = {}
    for group, ids in pools.items():
        if len(ids) < n_quartets:
            raise ValueError(
                f"group {group!r} has {len(ids)} eligible image(s); {n_quartets} quartets need "
                f"{n_quartets}"
            )
        draws[group] = [ids[i] for i in rng.permutation(len(ids))[:n_quartets]]
    return draws


def arrange_quartets(draws: Mapping[str, Sequence[str]], rng: np.random.Generator) -> pd.DataFrame:
    """One image of every group per quartet, at seeded random positions 1..n_groups."""
    groups = list(draws)
    n_quartets = len(draws[groups[0]])
    rows = []
    for quartet in range(n_quartets):
        positions = rng.permutation(len(groups)) + 1
        for group, position in zip(groups, positions):
            rows.append((quartet + 1, int(position), group, draws[group][quartet]))
    plan = pd.DataFrame(rows, columns=["quartet", "position", "group", "source_id"])
    return plan.sort_values(["quartet", "position"], ignore_index=True)


def name_images(plan: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Add an `image` column: the quartet number and a unique random token, nothing else."""
    tokens = rng.choice(16**TOKEN_HEX_DIGITS, size=len(plan), replace=False)
    width = max(2, len(str(plan["quartet"].max())))
    names = [
        f"q{q:0{width}d}_{t:0{TOKEN_HEX_DIGITS}x}.png" for q, t in zip(plan["quartet"], tokens)
    ]
    return plan.assign(image=names)


def plan_quartets(
    pools: Mapping[str, Sequence[str]], *, n_quartets: int, seed: int
) -> pd.DataFrame:
    """The whole seeded design: columns quartet, position, group, source_id, image."""
    rng = np.random.default_rng(seed)
    draws = draw_sources(pools, n_quartets, rng)
    return name_images(arrange_quartets(draws, rng), rng)


def checked_image(
    array: np.ndarray, group: str, source_id: str, real_shape: tuple[int, ...] | None
) -> np.ndarray:
    """A 2-D uint8 array shaped like the real images; anything else names the image at fault."""
    image = np.asarray(array)
    where = f"image {source_id!r} of group {group!r}"
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"{where} is {image.dtype} {image.shape}, expected uint8 (H, W)")
    if real_shape is not None and image.shape != real_shape:
        raise ValueError(f"{where} has shape {image.shape}, the real images {real_shape}")
    return image


def write_images(
    plan: pd.DataFrame,
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, Mapping[str, np.ndarray]],
    images_dir: Path,
    *,
    progress: bool,
) -> None:
    """Export every planned image under its group-blind name; the first real image sets the
    shape."""
    first_real = plan.loc[plan["group"] == REAL_GROUP, "source_id"].iloc[0]
    real_shape = checked_image(real[first_real], REAL_GROUP, first_real, None).shape
    for row in tqdm(
        plan.itertuples(), total=len(plan), desc="quartet images", disable=not progress
    ):
        pool = real if row.group == REAL_GROUP else synthetic[row.group]
        image = checked_image(pool[row.source_id], row.group, row.source_id, real_shape)
        (images_dir / row.image).write_bytes(png_bytes(image))


def write_tables(plan: pd.DataFrame, staging: Path, sidecar: dict) -> None:
    """layout.csv beside the images; key, sources and provenance in the separate key folder."""
    plan.loc[:, LAYOUT_COLUMNS].to_csv(staging / IMAGES_DIRNAME / LAYOUT_FILENAME, index=False)
    key_dir = staging / KEY_DIRNAME
    plan.loc[:, KEY_COLUMNS].to_csv(key_dir / KEY_FILENAME, index=False)
    plan.sort_values("image").loc[:, SOURCES_COLUMNS].to_csv(
        key_dir / SOURCES_FILENAME, index=False
    )
    sidecar_text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    (key_dir / PROVENANCE_FILENAME).write_text(sidecar_text, encoding="utf-8")


def check_free(out_dir: Path) -> None:
    """An existing non-empty out_dir is never overwritten: it may hold a study already rated."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already holds files; remove it to rebuild the quartets")


def key_path(study_dir: Path) -> Path:
    """The answer key of a study folder written by `build_quartets`."""
    return Path(study_dir) / KEY_DIRNAME / KEY_FILENAME


def build_quartets(
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, Mapping[str, np.ndarray]],
    out_dir: Path,
    *,
    n_quartets: int,
    seed: int,
    provenance: dict,
    eligible: Mapping[str, Collection[str]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Draw, shuffle and export the quartets; returns the plan (key columns + source_id).

    Everything is built in a hidden sibling folder and renamed into place, so a killed job
    leaves either the complete out_dir or none.
    """
    out_dir = Path(out_dir)
    synthetic_ids = {label: list(images.keys()) for label, images in synthetic.items()}
    pools = group_pools(list(real.keys()), synthetic_ids, eligible)
    plan = plan_quartets(pools, n_quartets=n_quartets, seed=seed)
    sidecar = {**provenance, "n_quartets": n_quartets, "seed": seed, "groups": list(pools)}
    check_free(out_dir)
    with atomic_directory(out_dir) as staging:
        (staging / IMAGES_DIRNAME).mkdir()
        (staging / KEY_DIRNAME).mkdir()
        write_images(plan, real, synthetic, staging / IMAGES_DIRNAME, progress=progress)
        write_tables(plan, staging, sidecar)
    return plan.loc[:, [*KEY_COLUMNS, "source_id"]]


def read_layout(images_dir: Path) -> pd.DataFrame:
    """The group-blind layout of an images folder, checked to be complete quartets of existing
    files."""
    path = Path(images_dir) / LAYOUT_FILENAME
    layout = pd.read_csv(path, dtype={"image": str})
    missing = [c for c in LAYOUT_COLUMNS if c not in layout.columns]
    if missing:
        raise ValueError(f"{path}: layout lacks column(s) {', '.join(missing)}")
    n_positions = int(layout["position"].max())
    for quartet, rows in layout.groupby("quartet"):
        found = sorted(rows["position"])
        if found != list(range(1, n_positions + 1)):
            raise ValueError(
                f"{path}: quartet {quartet} has positions {found}, expected 1..{n_positions}"
            )
    if sorted(layout["quartet"].unique()) != list(range(1, layout["quartet"].nunique() + 1)):
        raise ValueError(f"{path}: quartets are not numbered 1..{layout['quartet'].nunique()}")
    absent = [name for name in layout["image"] if not (Path(images_dir) / name).is_file()]
    if absent:
        raise FileNotFoundError(f"{path}: image(s) {absent[:5]} listed in the layout are missing")
    return layout.loc[:, LAYOUT_COLUMNS].sort_values(["quartet", "position"], ignore_index=True)
