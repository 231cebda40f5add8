"""The anatomy stage's fidelity jobs (issue 21, items 3 and 6): what the landmark model and a
two-sample classifier say about each checkpoint's synthetic images, read against real data.

- Landmark-feature Frechet distance per FID checkpoint: the landmark model's encoder
  (`fidelity.landmark_feature_extractor`) on the checkpoint's FID set against every atlas image,
  the reference Inception FID uses too (the atlas's features are extracted once per model file).
- Geometry distances: every FID set's and every sampled set's geometry (the landmark tables of
  the set) against the split's held-out real images' (`fidelity.geometry_distances`).
- The real-vs-real floor: two disjoint seeded halves of the atlas at the FID set size, capped at
  half the atlas (the record says when); their Inception FID (from the evaluate stage's cached
  features of every atlas image, its configured extractor), landmark-feature FD and geometry
  distances. Each half's geometry comes from the
  landmark model with the facing classifier's facing, as a synthetic set's does.
  Caveat: a checkpoint's FID compares its set with the whole atlas, the floor two halves of it,
  so the floor's reference is smaller; FD grows as sets shrink, which makes the floor a
  conservative (high) reading of what real data scores.
- Two-sample classifier per FID checkpoint (`two_sample.two_sample_auroc`): trained on the
  split's train images (real) and a seeded half of the FID set, tested on the held-out real
  images and the other half.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radsynth.anatomy.fidelity import (
    geometry_distances,
    landmark_feature_extractor,
    plot_fidelity_against_step,
    real_halves,
    write_fidelity_table,
)
from radsynth.anatomy.landmark_export import (
    landmark_columns,
    landmark_table,
    read_landmark_table,
    write_landmark_table,
)
from radsynth.anatomy.landmark_model import load_landmark_model
from radsynth.anatomy.tables import (
    ANGLE_MEASURE,
    CURVATURE_MEASURE,
    FD_COLUMNS,
    FLOOR_SET,
    TWO_SAMPLE_COLUMNS,
    read_fd_table,
    read_fidelity_table,
)
from radsynth.anatomy.two_sample import two_sample_auroc
from radsynth.core.atomic import atomic_output, read_json_object, write_json_atomic
from radsynth.core.checked_csv import SOURCE_ATTR
from radsynth.core.device import network_device
from radsynth.core.features import extract_features
from radsynth.core.figures import save_figure
from radsynth.core.frechet import frechet_distance
from radsynth.core.provenance import file_sha256
from radsynth.core.tables import write_table
from radsynth.data.atlas import atlas_digest, load_atlas
from radsynth.data.split import read_subsets
from radsynth.sample.facing import load_classifier, predict_facing
from radsynth.sample.store import open_samples

log = logging.getLogger(__name__)

#: The set name of the FID sets (radsynth.core.config.FID_SAMPLE_SET).
FID_SET = "fid"


def geometry_of(table: pd.DataFrame) -> pd.DataFrame:
    """The geometry columns of a landmark table (they follow image_id and the landmarks)."""
    columns = landmark_columns()
    first_geometry = columns.index(ANGLE_MEASURE)
    return table[columns[first_geometry:]].reset_index(drop=True)


def size_warnings(name: str, n_images: int, num_features: int) -> list[str]:
    """A covariance of fewer images than features is singular: the FD is unstable."""
    if n_images < num_features:
        return [
            f"{name}: {n_images} images < {num_features} feature dimensions: its covariance "
            "is singular, the Frechet distance is unstable"
        ]
    return []


# ---------------------------------------------------------------- landmark features


def write_atlas_landmark_features(
    model_path: Path, atlas_path: Path, out_npz: Path, *, batch_size: int
) -> None:
    """The landmark encoder's features of every atlas image, with the atlas digest and the
    extractor (its weights: the model file's sha256) they were made from."""
    extractor = landmark_feature_extractor(Path(model_path))
    with load_atlas(Path(atlas_path)) as atlas:
        images, names = np.ascontiguousarray(atlas.images), atlas.source_names
    features = extract_features(extractor, images, batch_size=batch_size, device=network_device())
    key = {
        "atlas_digest": atlas_digest(images, names),
        "extractor": extractor.description.as_dict(),
    }
    with atomic_output(Path(out_npz)) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, features=features, key=np.array(json.dumps(key, sort_keys=True)))
    log.info("landmark features of %d atlas images -> %s", len(images), out_npz)


def read_atlas_landmark_features(path: Path, model_path: Path) -> tuple[np.ndarray, dict]:
    """The features and their key; features of another model file fail naming both files."""
    with np.load(Path(path), allow_pickle=False) as stored:
        features, key = stored["features"], json.loads(str(stored["key"]))
    sha256 = file_sha256(Path(model_path))
    if key["extractor"]["weights"] != sha256:
        raise ValueError(
            f"{path}: features of the model with sha256 {key['extractor']['weights']}, not of "
            f"{model_path} ({sha256}); rerun the job that writes them"
        )
    return features, key


def landmark_fd_record(
    model_path: Path,
    fid_stores: Sequence[Path],
    atlas_features_npz: Path,
    *,
    step: int,
    checkpoint: int,
    batch_size: int,
) -> dict[str, Any]:
    """The landmark-feature FD of one checkpoint's FID set against every atlas image."""
    real, key = read_atlas_landmark_features(atlas_features_npz, model_path)
    samples = open_samples([Path(store) for store in fid_stores])
    extractor = landmark_feature_extractor(Path(model_path))
    synthetic = extract_features(
        extractor,
        samples.images(samples.global_indices),
        batch_size=batch_size,
        device=network_device(),
    )
    warnings = size_warnings("atlas", len(real), extractor.num_features)
    warnings += size_warnings(f"FID set of step {step}", len(synthetic), extractor.num_features)
    distance = frechet_distance(real, synthetic)
    log.info("step %d: landmark-feature FD %.4f", step, distance)
    return {
        "set": FID_SET,
        "step": step,
        "checkpoint": checkpoint,
        "n_reference": len(real),
        "n_compared": len(synthetic),
        "reference": f"every atlas image ({len(real)})",
        "landmark_fd": distance,
        "inception_fid": None,  # the evaluate stage's FID table holds it
        "landmark_extractor": key["extractor"]["name"],
        "landmark_weights": key["extractor"]["weights"],
        "warnings": "; ".join(warnings),
    }


def write_landmark_fd(
    model_path: Path,
    fid_stores: Sequence[Path],
    atlas_features_npz: Path,
    out_json: Path,
    *,
    step: int,
    checkpoint: int,
    batch_size: int,
    provenance: Mapping[str, str],
) -> None:
    record = landmark_fd_record(
        model_path,
        fid_stores,
        atlas_features_npz,
        step=step,
        checkpoint=checkpoint,
        batch_size=batch_size,
    )
    write_json_atomic(Path(out_json), {**record, "provenance": dict(provenance)})


# ---------------------------------------------------------------- the real-vs-real floor


@dataclass(frozen=True)
class FloorSize:
    """Images per half of the floor: the FID set size, capped at half the atlas."""

    half: int
    capped: bool

    def note(self, set_size: int, n_atlas: int) -> str:
        if self.capped:
            return (
                f"capped: halves of {self.half} images (half the atlas's {n_atlas}), not the "
                f"FID set size {set_size}"
            )
        return f"halves of {self.half} images, the FID set size"


def floor_size(set_size: int, n_atlas: int) -> FloorSize:
    half = min(set_size, n_atlas // 2)
    if half < 2:
        raise ValueError(
            f"the real-vs-real floor needs two halves of at least 2 images; the atlas has {n_atlas}"
        )
    return FloorSize(half, half < set_size)


def write_real_floor(
    model_path: Path,
    facing_classifier_path: Path,
    atlas_path: Path,
    atlas_features_npz: Path,
    out_json: Path,
    out_halves: Sequence[Path],
    *,
    set_size: int,
    seed: int,
    inception_features: np.ndarray,
    inception_extractor: Mapping[str, Any],
    curvature_thresholds_deg: Sequence[float],
    batch_size: int,
    provenance: Mapping[str, str],
) -> dict[str, Any]:
    """Inception FID, landmark-feature FD and each half's landmark table (geometry included) of
    two disjoint seeded halves of the atlas; returns the record written to `out_json`.
    `inception_features` are the evaluate stage's features of every atlas image, in atlas order
    (its cached real features), made by the extractor `inception_extractor` describes."""
    with load_atlas(Path(atlas_path)) as atlas:
        images, names = np.ascontiguousarray(atlas.images), list(atlas.source_names)
    if len(inception_features) != len(images):
        raise ValueError(
            f"{len(inception_features)} Inception feature rows for the {len(images)} images of "
            f"{atlas_path}: features of another atlas"
        )
    size = floor_size(set_size, len(images))
    halves = real_halves(len(images), size.half, seed)
    landmark_features, key = read_atlas_landmark_features(atlas_features_npz, model_path)
    model = load_landmark_model(Path(model_path))
    classifier = load_classifier(Path(facing_classifier_path), image_size=images.shape[1])
    for rows, out_csv in zip(halves, out_halves, strict=True):
        facing, _ = predict_facing(classifier, images[rows], batch_size=batch_size)
        table = landmark_table(
            model,
            images[rows],
            [names[i] for i in rows],
            facing,
            curvature_thresholds_deg=curvature_thresholds_deg,
            batch_size=batch_size,
        )
        write_landmark_table(table, Path(out_csv), provenance=provenance)
    warnings = size_warnings("each half (landmark features)", size.half, landmark_features.shape[1])
    warnings += size_warnings(
        "each half (Inception features)", size.half, inception_features.shape[1]
    )
    record = {
        "set": FLOOR_SET,
        "n_atlas": len(images),
        "set_size": set_size,
        "half_size": size.half,
        "capped": size.capped,
        "note": size.note(set_size, len(images)),
        "seed": seed,
        "inception_fid": frechet_distance(*(inception_features[rows] for rows in halves)),
        "inception_extractor": dict(inception_extractor),
        "landmark_fd": frechet_distance(*(landmark_features[rows] for rows in halves)),
        "landmark_extractor": key["extractor"]["name"],
        "landmark_weights": key["extractor"]["weights"],
        "warnings": "; ".join(warnings),
    }
    log.info(
        "real vs real (%s): Inception FID %.3f, landmark FD %.4f",
        record["note"],
        record["inception_fid"],
        record["landmark_fd"],
    )
    write_json_atomic(Path(out_json), {**record, "provenance": dict(provenance)})
    return record


# ---------------------------------------------------------------- tables and figure


@dataclass(frozen=True)
class SetLandmarks:
    """One set's landmark table (SET_LANDMARKS) and where it comes from."""

    name: str
    step: int
    path: Path


def fd_table(
    fd_records: Sequence[Mapping[str, Any]],
    floor: Mapping[str, Any],
    fid_table: pd.DataFrame,
) -> pd.DataFrame:
    """One row per FID checkpoint (its Inception FID from the FID table beside its landmark FD),
    then the floor's row."""
    rows = pd.DataFrame([{k: v for k, v in r.items() if k != "provenance"} for r in fd_records])
    rows = rows.sort_values("step").reset_index(drop=True)
    fid_by_step = fid_table.set_index("step")["fid"]
    missing = sorted(set(rows["step"]) - set(fid_by_step.index))
    if missing:
        raise ValueError(
            f"{fid_table.attrs.get(SOURCE_ATTR, 'the FID table')}: no FID row for step(s) {missing}"
        )
    rows["inception_fid"] = fid_by_step.loc[rows["step"]].to_numpy()
    floor_row = {
        "set": FLOOR_SET,
        "step": None,
        "checkpoint": None,
        "n_reference": floor["half_size"],
        "n_compared": floor["half_size"],
        "reference": f"the other half of the atlas ({floor['note']})",
        "landmark_fd": floor["landmark_fd"],
        "inception_fid": floor["inception_fid"],
        "landmark_extractor": floor["landmark_extractor"],
        "landmark_weights": floor["landmark_weights"],
        "warnings": floor["warnings"],
    }
    table = pd.concat([rows, pd.DataFrame([floor_row])], ignore_index=True)
    for column in ("step", "checkpoint"):
        table[column] = table[column].astype("Int64")
    return table.reindex(columns=list(FD_COLUMNS))


def write_anatomy_fidelity(
    held_out_csv: Path,
    sets: Sequence[SetLandmarks],
    floor_json: Path,
    floor_halves: Sequence[Path],
    fd_jsons: Sequence[Path],
    fid_table: pd.DataFrame,
    out_fidelity_csv: Path,
    out_fd_csv: Path,
    *,
    n_boot: int,
    level: float,
    seed: int,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """The geometry distances of every set and of the floor's halves (fidelity.csv) and the
    Frechet-distance table; returns the former."""
    reference = geometry_of(read_landmark_table(Path(held_out_csv)))
    settings = {"n_boot": n_boot, "level": level, "seed": seed}
    rows: dict[tuple[str, int | None], pd.DataFrame] = {}
    for entry in sets:
        compared = geometry_of(read_landmark_table(entry.path))
        rows[entry.name, entry.step] = geometry_distances(reference, compared, **settings)
    first, second = (geometry_of(read_landmark_table(Path(p))) for p in floor_halves)
    rows[FLOOR_SET, None] = geometry_distances(first, second, **settings)
    table = write_fidelity_table(rows, Path(out_fidelity_csv), provenance=provenance)
    floor = read_json_object(Path(floor_json), "real-vs-real floor record")
    records = [read_json_object(Path(p), "landmark-feature FD row") for p in fd_jsons]
    write_table(fd_table(records, floor, fid_table), Path(out_fd_csv), provenance=provenance)
    return table


def write_anatomy_figure(
    fidelity_csv: Path,
    fd_csv: Path,
    out_png: Path,
    *,
    measures: Sequence[str],
    provenance: Mapping[str, str],
) -> Path:
    """Anatomy against training step beside the FID curve (display settings only)."""
    fidelity = read_fidelity_table(Path(fidelity_csv))
    distances = read_fd_table(Path(fd_csv))
    checkpoints = distances[distances["set"] != FLOOR_SET]
    floor = distances[distances["set"] == FLOOR_SET].iloc[0]
    unknown = sorted(set(measures) - set(fidelity["measure"]) - {CURVATURE_MEASURE})
    if unknown:
        raise ValueError(f"{fidelity_csv}: no rows for measure(s) {unknown}")
    return plot_fidelity_against_step(
        fidelity,
        Path(out_png),
        measures=measures,
        provenance=provenance,
        title="Anatomy of the synthetic sets against training step, beside FID",
        floor_set=FLOOR_SET,
        fid=pd.DataFrame(
            {
                "step": checkpoints["step"].astype(float),
                "fid": checkpoints["inception_fid"],
                "landmark_fd": checkpoints["landmark_fd"],
            }
        ),
        fid_floor={"fid": floor["inception_fid"], "landmark_fd": floor["landmark_fd"]},
    )


# ---------------------------------------------------------------- two-sample classifier


def synthetic_halves(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded draw of a set's images: the classifier's synthetic training half (n // 2) and its
    unseen test half (the rest), each sorted."""
    if n_images < 2:
        raise ValueError(f"the two-sample check needs at least 2 synthetic images, got {n_images}")
    order = np.random.default_rng(seed).permutation(n_images)
    return np.sort(order[: n_images // 2]), np.sort(order[n_images // 2 :])


def two_sample_record(
    atlas_path: Path,
    split_manifest: Path,
    fid_stores: Sequence[Path],
    *,
    step: int,
    checkpoint: int,
    settings: Mapping[str, Any],
    inference_batch_size: int,
) -> dict[str, Any]:
    """AUROC of the real-vs-synthetic classifier for one checkpoint's FID set; `settings` are
    anatomy.two_sample's, `inference_batch_size` (anatomy.batch_size) the images per scoring
    batch."""
    with load_atlas(Path(atlas_path)) as atlas:
        images, names = np.ascontiguousarray(atlas.images), atlas.source_names
    subsets = read_subsets(Path(split_manifest), names)
    samples = open_samples([Path(store) for store in fid_stores])
    synthetic = samples.images(samples.global_indices)
    train_rows, test_rows = synthetic_halves(len(synthetic), settings["seed"])
    result = two_sample_auroc(
        images[subsets.train],
        synthetic[train_rows],
        images[subsets.val],
        synthetic[test_rows],
        **settings,
        inference_batch_size=inference_batch_size,
    )
    log.info("step %d: AUROC %.3f [%.3f, %.3f]", step, result.auroc, result.low, result.high)
    return {
        "step": step,
        "checkpoint": checkpoint,
        "auroc": result.auroc,
        "auroc_low": result.low,
        "auroc_high": result.high,
        "level": settings["level"],
        "n_real_train": len(subsets.train),
        "n_synthetic_train": len(train_rows),
        "n_real_test": result.n_real,
        "n_synthetic_test": result.n_synthetic,
    }


def write_two_sample_row(
    atlas_path: Path,
    split_manifest: Path,
    fid_stores: Sequence[Path],
    out_json: Path,
    *,
    step: int,
    checkpoint: int,
    settings: Mapping[str, Any],
    inference_batch_size: int,
    provenance: Mapping[str, str],
) -> None:
    record = two_sample_record(
        atlas_path,
        split_manifest,
        fid_stores,
        step=step,
        checkpoint=checkpoint,
        settings=settings,
        inference_batch_size=inference_batch_size,
    )
    write_json_atomic(Path(out_json), {**record, "provenance": dict(provenance)})


def plot_two_sample(table: pd.DataFrame, out_png: Path, *, provenance: Mapping[str, str]) -> Path:
    """AUROC (with its interval) against step; 0.5 = the classifier cannot tell them apart."""
    figure = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.errorbar(
        table["step"],
        table["auroc"],
        yerr=[table["auroc"] - table["auroc_low"], table["auroc_high"] - table["auroc"]],
        fmt="o-",
        capsize=3,
        markersize=4,
        label=f"AUROC ({table['level'].iloc[0]:.0%} bootstrap interval)",
    )
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1, label="0.5: indistinguishable")
    ax.set_ylim(min(0.0, float(table["auroc_low"].min())), 1.0)
    ax.set_xlabel("training step")
    ax.set_ylabel("AUROC, real vs synthetic")
    ax.legend(fontsize=8, loc="lower left")
    title = "Two-sample classifier: can a CNN tell the FID set from real images?"
    ax.set_title(title, fontsize=9)
    return save_figure(
        figure,
        Path(out_png),
        title=title,
        provenance=provenance,
        description=f"{len(table)} checkpoints",
    )


def write_two_sample_table(
    row_jsons: Sequence[Path],
    out_csv: Path,
    out_png: Path,
    *,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """One row per FID checkpoint, in step order, and its figure."""
    records = [read_json_object(Path(p), "two-sample row") for p in row_jsons]
    table = pd.DataFrame(records).sort_values("step").reset_index(drop=True)
    table = table.reindex(columns=list(TWO_SAMPLE_COLUMNS))
    if not all(math.isfinite(v) for v in table["auroc"]):
        raise ValueError(f"a two-sample row has no finite AUROC: {list(row_jsons)}")
    write_table(table, Path(out_csv), provenance=provenance)
    plot_two_sample(table, Path(out_png), provenance=provenance)
    return table
