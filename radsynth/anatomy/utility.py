"""Utility of synthetic radiographs for landmarking: train on synthetic, test on real (MediSyn's
and CheXGenBench's protocol, adapted to landmarks).

The teacher (the landmark model trained on the split run's train subset) pseudo-labels the
synthetic images; students of the teacher's architecture and training settings train on
(a) the real train subset, (b) the synthetic images only, (c) both, and (d) fractions of the real
subset with and without the synthetic images (the data-scarce case); each is tested on the held-out
real subset by its mean radial error, over several seeds. The results are bounded by the teacher:
a student of synthetic images learns the teacher's labels, errors included, so it can approach
the teacher's held-out MRE but not beat it for that reason.

Only samples of the split run qualify: the full run trained on every atlas image, the held-out
test images included, so its samples could carry them into the students' training
(`require_split_run`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radsynth.anatomy.landmark_model import LandmarkModel, load_landmark_model, predict_landmarks
from radsynth.anatomy.metrics import landmark_scores
from radsynth.anatomy.tables import UTILITY_SUMMARY_COLUMNS
from radsynth.anatomy.training import resume_folder, run_identity, train_landmark_model
from radsynth.core.figures import save_figure
from radsynth.core.settings.anatomy import LandmarkArchitecture, LandmarkTraining

#: The training run whose samples a utility experiment may use.
SPLIT_RUN = "split"


def require_split_run(run: str, where: str) -> None:
    """Fail, naming `where` (a config key or a sample set), unless the samples come from the split
    run."""
    if run != SPLIT_RUN:
        raise ValueError(
            f"{where}: utility needs samples of the {SPLIT_RUN!r} run, got the {run!r} run. Only "
            f"the split run kept the held-out images out of training; the {run!r} run saw them, "
            "so its samples could leak the very images the students are tested on"
        )


@dataclass(frozen=True)
class UtilityArm:
    """One training set of the students: a share of the real train subset, with or without the
    pseudo-labelled synthetic images."""

    real_fraction: float
    synthetic: bool

    @property
    def name(self) -> str:
        real = "" if self.real_fraction == 0 else f"real {self.real_fraction:.0%}"
        return " + ".join(part for part in (real, "synthetic" * self.synthetic) if part)


def utility_arms(fractions: Sequence[float]) -> list[UtilityArm]:
    """(a) real, (b) synthetic only, (c) real + synthetic, (d) each fraction with and without."""
    arms = [UtilityArm(1.0, False), UtilityArm(0.0, True), UtilityArm(1.0, True)]
    for fraction in fractions:
        if not 0 < fraction < 1:
            raise ValueError(f"utility fraction {fraction} must lie strictly between 0 and 1")
        arms += [UtilityArm(fraction, False), UtilityArm(fraction, True)]
    return arms


def real_subset(n_real: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded share of the real train subset; the shares of one seed are
    nested (a smaller fraction's images are within a larger one's)."""
    order = np.random.default_rng(seed).permutation(n_real)
    return np.sort(order[: max(1, round(fraction * n_real))]) if fraction > 0 else order[:0]


def pseudo_labels(
    teacher: LandmarkModel, synthetic_images: np.ndarray, *, batch_size: int
) -> np.ndarray:
    """The teacher's (N, K, 2) keypoints of the synthetic images, as training targets."""
    return predict_landmarks(teacher, synthetic_images, batch_size=batch_size).xy.astype(np.float32)


def run_utility(
    teacher: LandmarkModel,
    real: tuple[np.ndarray, np.ndarray],
    synthetic_images: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray],
    *,
    arms: Sequence[UtilityArm],
    seeds: Sequence[int],
    training: LandmarkTraining,
    work_dir: Path,
    inference_batch_size: int,
    provenance: Mapping[str, str],
    held_out_mm_per_pixel: np.ndarray | None = None,
) -> pd.DataFrame:
    """Train one student per (arm, seed) and test it on the held-out real images: one row each
    with the arm, seed, image counts and held-out MRE (px, and mm where spacings are given).
    `real` and `held_out` are (uint8 images, keypoints). Students resume from `work_dir`
    (<arm>/seed<seed>/<run identity>); they train, and every model predicts
    `inference_batch_size` images at a time, on `network_device()`."""
    real_images, real_keypoints = real
    labels = teacher.labels
    architecture: LandmarkArchitecture = teacher.architecture
    synthetic_keypoints = pseudo_labels(teacher, synthetic_images, batch_size=inference_batch_size)
    rows = []
    for arm in arms:
        for seed in seeds:
            chosen = real_subset(len(real_images), arm.real_fraction, seed)
            parts = [(real_images[chosen], real_keypoints[chosen])]
            if arm.synthetic:
                parts.append((synthetic_images, synthetic_keypoints))
            images = np.concatenate([part[0] for part in parts])
            keypoints = np.concatenate([part[1] for part in parts]).astype(np.float32)
            student = training.model_copy(update={"seed": seed})
            folder = resume_folder(
                Path(work_dir) / arm.name.replace(" ", "").replace("%", "pct") / f"seed{seed}",
                run_identity(images, keypoints, labels, architecture, student),
            )
            model_path = folder / "student.safetensors"
            train_landmark_model(
                images,
                keypoints,
                labels,
                model_path=model_path,
                work_dir=folder / "work",
                architecture=architecture,
                training=student,
                inference_batch_size=inference_batch_size,
                provenance=provenance,
            )
            predicted = predict_landmarks(
                load_landmark_model(model_path), held_out[0], batch_size=inference_batch_size
            )
            scores = landmark_scores(
                predicted.xy, held_out[1], labels, held_out_mm_per_pixel
            ).summary()
            rows.append(
                {
                    "arm": arm.name,
                    "real_fraction": arm.real_fraction,
                    "synthetic": arm.synthetic,
                    "seed": seed,
                    "n_real": len(chosen),
                    "n_synthetic": len(synthetic_images) if arm.synthetic else 0,
                    "mre_px": scores["mre_px"],
                    "mre_mm": scores["mre_mm"],
                }
            )
    return pd.DataFrame(rows)


def summarise_utility(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN for one seed) of the held-out MRE per arm, arms in
    their order of `results`: the utility summary (`UTILITY_SUMMARY_COLUMNS`)."""
    grouped = results.groupby("arm", sort=False)
    summary = grouped.agg(
        real_fraction=("real_fraction", "first"),
        synthetic=("synthetic", "first"),
        n_real=("n_real", "first"),
        n_synthetic=("n_synthetic", "first"),
        seeds=("seed", "count"),
        mre_px_mean=("mre_px", "mean"),
        mre_px_std=("mre_px", "std"),
        mre_mm_mean=("mre_mm", "mean"),
        mre_mm_std=("mre_mm", "std"),
    )
    return summary.reset_index()[list(UTILITY_SUMMARY_COLUMNS)]


def plot_utility(
    summary: pd.DataFrame,
    out_png: Path,
    *,
    provenance: Mapping[str, str],
    title: str,
    teacher_mre_px: float | None = None,
) -> Path:
    """Held-out MRE (mean, std error bars) against the share of real training images, with and
    without synthetic images; the synthetic-only student at 0 and the teacher as a line (the
    bound)."""
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = figure.subplots()
    for synthetic, style, name in ((False, "o-", "real only"), (True, "s--", "real + synthetic")):
        rows = summary[summary["synthetic"] == synthetic].sort_values("real_fraction")
        if rows.empty:
            continue
        ax.errorbar(
            rows["real_fraction"] * 100,
            rows["mre_px_mean"],
            yerr=rows["mre_px_std"].fillna(0),
            fmt=style,
            capsize=3,
            markersize=5,
            label=name,
        )
    if teacher_mre_px is not None:
        ax.axhline(teacher_mre_px, color="0.4", linestyle=":", label="teacher (the bound)")
    ax.set_xlabel("share of the real train subset (%)")
    ax.set_ylabel("held-out real MRE (px, lower is better)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(
        figure,
        out_png,
        title=title,
        provenance=provenance,
        description=f"{len(summary)} training sets, up to {summary['seeds'].max()} seeds each",
    )
