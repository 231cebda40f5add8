"""The anatomy stage's jobs, one entry function per rule of workflow/rules/anatomy.smk: whether
the atlas has keypoints at all, the landmark model's training and held-out evaluation, the
landmarks of every sample set, and the utility students and their figure.

The landmark model learns from the split run's train rows and is tested on its held-out (val)
rows, the images neither it nor the split run's DDPM saw. The held-out landmark table, like every
sample set's, gives its geometry in px: synthetic images have no pixel spacing, so px is the one
unit both sides of a distance share; only the MRE summary turns errors into mm, per image,
where the atlas records a spacing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radsynth.anatomy.landmark_export import landmark_table, write_landmark_table
from radsynth.anatomy.landmark_model import load_landmark_model, predict_landmarks
from radsynth.anatomy.metrics import landmark_scores, mean_shape
from radsynth.anatomy.tables import (
    BASELINE_ROW,
    LANDMARK_SUMMARY_COLUMNS,
    MODEL_ROW,
    read_landmark_summary,
)
from radsynth.anatomy.training import (
    TrainingOutcome,
    resume_folder,
    run_identity,
    train_landmark_model,
)
from radsynth.anatomy.utility import (
    plot_utility,
    require_split_run,
    run_utility,
    summarise_utility,
    utility_arms,
)
from radsynth.core.atomic import read_json_object, write_json_atomic
from radsynth.core.config import load_settings
from radsynth.core.settings.anatomy import LandmarkArchitecture, LandmarkTraining
from radsynth.core.tables import read_table, write_table
from radsynth.data.atlas import Atlas, load_atlas
from radsynth.data.split import read_subsets
from radsynth.sample.facing import load_classifier, predict_facing
from radsynth.sample.store import open_left_facing, open_samples, read_store_attrs

log = logging.getLogger(__name__)


def record_atlas_keypoints(
    atlas_path: Path, out_json: Path, *, provenance: Mapping[str, str]
) -> dict[str, Any]:
    """Write how many atlas images carry at least one keypoint, and the label list: the workflow
    runs the anatomy stage only when some do (a source without annotations skips it)."""
    with load_atlas(Path(atlas_path), lazy=True) as atlas:
        annotated = np.isfinite(atlas.keypoints).all(axis=-1).any(axis=-1)
        record = {
            "atlas": str(atlas_path),
            "n_images": len(atlas),
            "annotated_images": int(annotated.sum()),
            "labels": list(atlas.labels),
            "provenance": dict(provenance),
        }
    if not annotated.any():
        log.warning(
            "%s: none of its %d images has a keypoint; the anatomy stage will be skipped",
            atlas_path,
            len(annotated),
        )
    write_json_atomic(Path(out_json), record)
    return record


def record_anatomy_stage(
    keypoint_record: Path,
    outputs: Sequence[Path],
    out_json: Path,
    *,
    provenance: Mapping[str, str],
) -> dict[str, Any]:
    """Write what the stage made, or, for an atlas without keypoints, that it was skipped and
    why (the workflow then planned none of its jobs)."""
    keypoints = read_json_object(Path(keypoint_record), "atlas keypoint record")
    skipped = keypoints["annotated_images"] == 0
    record = {
        "skipped": skipped,
        "reason": f"{keypoints['atlas']} has no keypoints" if skipped else "",
        "outputs": sorted(str(path) for path in outputs),
        "provenance": dict(provenance),
    }
    if skipped:
        log.warning("anatomy stage skipped: %s", record["reason"])
    write_json_atomic(Path(out_json), record)
    return record


def _architecture(network: Mapping[str, Any], image_size: int) -> LandmarkArchitecture:
    return load_settings(
        LandmarkArchitecture, {**network, "image_size": image_size}, "anatomy.model"
    )


def _training(training: Mapping[str, Any]) -> LandmarkTraining:
    return load_settings(LandmarkTraining, dict(training), "anatomy.training")


def _subset(atlas: Atlas, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and float32 keypoints of some atlas rows."""
    return np.asarray(atlas.images[rows]), np.asarray(atlas.keypoints[rows], np.float32)


def train_split_landmark_model(
    atlas_path: Path,
    manifest_path: Path,
    *,
    model_path: Path,
    work_root: Path,
    network: Mapping[str, Any],
    training: Mapping[str, Any],
    image_size: int,
    inference_batch_size: int,
    provenance: Mapping[str, str],
) -> TrainingOutcome:
    """Train the landmark model on the split manifest's train rows (resuming from the states in
    `work_root`/<run identity>); an atlas whose keypoints are not CSXA's 23 fails naming it.
    `inference_batch_size` (anatomy.batch_size) bounds the validation passes' memory."""
    architecture, settings = _architecture(network, image_size), _training(training)
    atlas = load_atlas(Path(atlas_path))
    subsets = read_subsets(Path(manifest_path), atlas.source_names)
    images, keypoints = _subset(atlas, subsets.train)
    try:
        identity = run_identity(images, keypoints, atlas.labels, architecture, settings)
        outcome = train_landmark_model(
            images,
            keypoints,
            atlas.labels,
            model_path=Path(model_path),
            work_dir=resume_folder(Path(work_root), identity),
            architecture=architecture,
            training=settings,
            inference_batch_size=inference_batch_size,
            provenance=provenance,
        )
    except ValueError as exc:
        raise ValueError(f"{atlas_path}: {exc}") from exc
    log.info(
        "landmark model: %d train images, best validation MRE %.3f px at step %d of %d%s",
        len(images),
        outcome.best_val_mre_px,
        outcome.best_step,
        outcome.step,
        " (stopped early)" if outcome.stopped_early else "",
    )
    return outcome


def evaluate_split_landmark_model(
    model_path: Path,
    atlas_path: Path,
    manifest_path: Path,
    facing_classifier: Path,
    *,
    summary_csv: Path,
    per_landmark_csv: Path,
    held_out_csv: Path,
    curvature_thresholds_deg: Sequence[float],
    batch_size: int,
    facing_batch_size: int,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Score the model on the held-out rows against the mean shape of the train rows (MRE in px,
    and in mm and SDR over the images with a spacing), and write the held-out images' landmarks
    and geometry (px; the facing from the facing classifier). Returns the summary."""
    model = load_landmark_model(Path(model_path))
    atlas = load_atlas(Path(atlas_path))
    subsets = read_subsets(Path(manifest_path), atlas.source_names)
    images, truth = _subset(atlas, subsets.val)
    spacing = np.asarray(atlas.mm_per_pixel[subsets.val], np.float64)
    with_spacing = int(np.isfinite(spacing).all(axis=1).sum())
    predictions = {
        MODEL_ROW: predict_landmarks(model, images, batch_size=batch_size).xy,
        BASELINE_ROW: np.broadcast_to(mean_shape(atlas.keypoints[subsets.train]), truth.shape),
    }
    summary, per_landmark = [], []
    for predictor, predicted in predictions.items():
        scores = landmark_scores(predicted, truth, model.labels, spacing)
        summary.append(
            {
                "predictor": predictor,
                "n_images": len(images),
                "n_images_with_spacing": with_spacing,
                "n_images_without_spacing": len(images) - with_spacing,
                **scores.summary(),
            }
        )
        per_landmark.append(scores.per_landmark.assign(predictor=predictor))
    table = pd.DataFrame(summary)
    scores_after = table.columns.drop(list(LANDMARK_SUMMARY_COLUMNS))
    table = table[[*LANDMARK_SUMMARY_COLUMNS, *scores_after]]
    write_table(table, Path(summary_csv), provenance=provenance)
    landmarks = pd.concat(per_landmark, ignore_index=True)
    landmarks = landmarks[["predictor", *landmarks.columns.drop("predictor")]]
    write_table(landmarks, Path(per_landmark_csv), provenance=provenance)
    side = model.architecture.image_size
    facing, _ = predict_facing(
        load_classifier(Path(facing_classifier), image_size=side),
        images,
        batch_size=facing_batch_size,
    )
    held_out = landmark_table(
        model,
        images,
        [atlas.source_names[i] for i in subsets.val],
        facing,
        curvature_thresholds_deg=curvature_thresholds_deg,
        batch_size=batch_size,
    )
    write_landmark_table(held_out, Path(held_out_csv), provenance=provenance)
    model_mre, baseline_mre = table["mre_px"]
    log.info(
        "held-out MRE %.3f px (mean shape %.3f px) over %d images, %d with a pixel spacing",
        model_mre,
        baseline_mre,
        len(images),
        with_spacing,
    )
    return table


def set_landmarks(
    model_path: Path,
    sample_manifest: Path,
    out_csv: Path,
    *,
    curvature_thresholds_deg: Sequence[float],
    batch_size: int,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Landmarks and geometry (px) of one gathered sample set, its images made left-facing as
    released (the manifest's flips), `batch_size` images per prediction (anatomy.batch_size)."""
    samples = open_left_facing(Path(sample_manifest))
    ids = list(samples)
    images = np.stack([samples[image_id] for image_id in ids])
    table = landmark_table(
        load_landmark_model(Path(model_path)),
        images,
        ids,
        ["left"] * len(ids),
        curvature_thresholds_deg=curvature_thresholds_deg,
        batch_size=batch_size,
    )
    write_landmark_table(table, Path(out_csv), provenance=provenance)
    return table


def sampled_run(store: Path) -> str:
    """The training run a sample store was drawn from, read from the checkpoint file its
    provenance names (train/<run>/<run identity>/checkpoints/<file>)."""
    checkpoint_file = Path(read_store_attrs(Path(store))["provenance"]["checkpoint_file"])
    run_folder = checkpoint_file.parents[2] if len(checkpoint_file.parents) > 3 else None
    if run_folder is None or run_folder.parent.name != "train":
        raise ValueError(
            f"{store}: checkpoint file {checkpoint_file} is not in a training run's folder "
            "(train/<run>/<run identity>/checkpoints/)"
        )
    return run_folder.name


def utility_students(
    teacher_path: Path,
    atlas_path: Path,
    manifest_path: Path,
    synthetic_stores: Sequence[Path],
    out_csv: Path,
    *,
    fractions: Sequence[float],
    seeds: Sequence[int],
    training: Mapping[str, Any],
    work_root: Path,
    inference_batch_size: int,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Train on synthetic, test on real: one student per (arm, seed) on the split's train rows
    and the teacher-labelled utility samples, each scored on the held-out rows (one row each).
    `inference_batch_size` (anatomy.batch_size): images per prediction."""
    for store in synthetic_stores:
        require_split_run(sampled_run(store), f"utility sample store {store}")
    samples = open_samples([Path(store) for store in synthetic_stores])
    synthetic = samples.images(samples.global_indices)
    log.info("utility: %d images from %d sample stores", len(synthetic), len(synthetic_stores))
    atlas = load_atlas(Path(atlas_path))
    subsets = read_subsets(Path(manifest_path), atlas.source_names)
    results = run_utility(
        load_landmark_model(Path(teacher_path)),
        _subset(atlas, subsets.train),
        synthetic,
        _subset(atlas, subsets.val),
        arms=utility_arms(fractions),
        seeds=seeds,
        training=_training(training),
        work_dir=Path(work_root),
        inference_batch_size=inference_batch_size,
        provenance=provenance,
        held_out_mm_per_pixel=np.asarray(atlas.mm_per_pixel[subsets.val], np.float64),
    )
    write_table(results, Path(out_csv), provenance=provenance)
    return results


def utility_figure(
    results_csv: Path,
    evaluation_summary_csv: Path,
    *,
    summary_csv: Path,
    figure_png: Path,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Mean and std of the students' held-out MRE per arm, as a table and a figure with the
    teacher's own held-out MRE as the bound."""
    summary = summarise_utility(read_table(Path(results_csv)))
    write_table(summary, Path(summary_csv), provenance=provenance)
    evaluation = read_landmark_summary(Path(evaluation_summary_csv)).set_index("predictor")
    plot_utility(
        summary,
        Path(figure_png),
        provenance=provenance,
        title="Train on synthetic, test on real: held-out landmark MRE",
        teacher_mre_px=float(evaluation.loc[MODEL_ROW, "mre_px"]),
    )
    return summary
