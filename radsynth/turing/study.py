"""The clinical Turing test's study: assembled from the atlas and the gathered samples (paper 2.5).

Real images are standardized to left-facing with the same classifier as the samples, so facing
cannot give the real image away.

A study is irreplaceable once experts have rated it: its answer key is what their ratings mean.
So a study folder, once there, is never rebuilt or deleted. When its job runs again (its inputs or
design changed), the study is built aside and compared file by file: identical, it is confirmed;
different, the job stops and says what differs and how to start a new study.
"""

from __future__ import annotations

import filecmp
import logging
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radsynth.core.atomic import write_json_atomic
from radsynth.data.atlas import load_atlas
from radsynth.sample.facing import load_classifier, predict_facing, standardize_left
from radsynth.sample.store import open_left_facing
from radsynth.turing.quartets import KEY_DIRNAME, PROVENANCE_FILENAME, build_quartets

log = logging.getLogger(__name__)


def real_left_facing(
    atlas_h5: Path, classifier_path: Path, *, batch_size: int
) -> dict[str, np.ndarray]:
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
    return build_quartets(
        real,
        synthetic,
        out_dir,
        n_quartets=n_quartets,
        seed=seed,
        provenance=dict(provenance),
        eligible=eligible,
    )


class StudyWouldChange(RuntimeError):
    """The inputs or design of an existing study changed: it is kept, and the job stops."""


def study_differences(existing: Path, rebuilt: Path) -> list[str]:
    """Files (relative paths) that differ between two study folders, the provenance record aside
    (it holds a creation time)."""
    ignored = {f"{KEY_DIRNAME}/{PROVENANCE_FILENAME}"}

    def files(root: Path) -> set[str]:
        return {
            path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()
        } - ignored

    old, new = files(existing), files(rebuilt)
    differing = sorted(
        name
        for name in old & new
        if not filecmp.cmp(existing / name, rebuilt / name, shallow=False)
    )
    return sorted(old ^ new) + differing


def build_or_confirm_study(
    atlas_h5: Path,
    classifier_path: Path,
    sample_manifests: Mapping[str, Path],
    out_dir: Path,
    record_json: Path,
    *,
    n_quartets: int,
    seed: int,
    batch_size: int,
    provenance: Mapping[str, Any],
) -> None:
    """Build the study in `out_dir` if there is none; otherwise confirm that a rebuild would give
    the same study, or stop with `StudyWouldChange`. Writes `record_json` (what downstream rules
    depend on) either way."""
    out_dir = Path(out_dir)
    design = {
        "n_quartets": n_quartets,
        "seed": seed,
        "batch_size": batch_size,
        "provenance": provenance,
    }
    if not (out_dir.exists() and any(out_dir.iterdir())):
        build_study(atlas_h5, classifier_path, sample_manifests, out_dir, **design)
        status = "built"
    else:
        with tempfile.TemporaryDirectory(
            prefix=f".{out_dir.name}.check.", dir=out_dir.parent
        ) as scratch:
            rebuilt = Path(scratch) / out_dir.name
            build_study(atlas_h5, classifier_path, sample_manifests, rebuilt, **design)
            differences = study_differences(out_dir, rebuilt)
        if differences:
            shown = ", ".join(differences[:5]) + (
                f" and {len(differences) - 5} more" if len(differences) > 5 else ""
            )
            raise StudyWouldChange(
                f"{out_dir} already holds a Turing study, and its inputs or design have changed "
                "since it was "
                f"built: a rebuild would change {shown}. Experts may have rated this study, so it "
                "is never "
                f"replaced. To build a new study, move it aside first (for example: mv {out_dir} "
                f"{out_dir}.rated-$(date +%Y%m%d)); to keep it, restore the config and inputs it "
                "was built "
                f"from ({out_dir / KEY_DIRNAME / PROVENANCE_FILENAME} records its code and config)."
            )
        status = "confirmed unchanged"
        log.info("%s: a rebuild gives the same study; kept as it is", out_dir)
    write_json_atomic(
        Path(record_json),
        {
            "study": str(out_dir),
            "status": status,
            "n_quartets": n_quartets,
            "seed": seed,
            "groups": sorted(sample_manifests),
            "provenance": dict(provenance),
        },
    )
