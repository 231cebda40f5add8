"""The screens measured (issue 21, item 4): the split's held-out real images against copies of
them corrupted with their true keypoints (`radsynth.audit.corruptions`), each scored as a sampled
set is in `screen_samples` (made left-facing by the facing classifier, landmarks predicted with
the facing "left", the plausibility screen's and the anatomical screen's columns, the proposal).

Nothing scored has been seen by a screen: the plausibility screen is fitted here, with the
workflow's settings, on the split's train rows only (the workflow's own screen is fitted on the
whole atlas, held-out images included), and the landmark model learnt from those rows too. The
held-out rows are cut in two, alternately in split order: the first, third, ... are the anatomical
screen's reference (their rows of the held-out landmark table give the geometry ranges and the
reference anatomy scores, as the whole table does in `screen_samples`); the second, fourth, ...
are scored, clean and corrupted. Images without all keypoints are left out of the scored half
(a corruption is placed by them).

Per corruption and screen: the ROC AUC (clean images negatives, corrupted positives; 1 = every
corrupted image ranked above every clean one) and the share of clean and of corrupted images the
screen catches at its operating point: plausibility, anatomy plausibility or combined plausibility
below `audit.screen.threshold`, a flag raised, or the proposal to exclude. The screens:
plausibility, anatomy and combined (1 - each plausibility); low confidence, out of order and out
of range (the anatomical flags, each as a yes/no screen); proposal (the manifest's `proposed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radsynth.anatomy.landmark_export import landmark_table, read_landmark_table
from radsynth.anatomy.landmark_model import LandmarkModel, load_landmark_model
from radsynth.audit.anatomy_screen import geometry_ranges
from radsynth.audit.corruptions import corrupt, screen_aucs
from radsynth.audit.plausibility import PlausibilityModel, fit_plausibility
from radsynth.audit.scoring import AnatomyReference, orient_left, table_flags, with_anatomy
from radsynth.audit.screening import EXCLUDE, propose
from radsynth.core.figures import save_figure
from radsynth.core.settings.audit import ScreenSettings
from radsynth.core.tables import write_table
from radsynth.data.atlas import load_atlas
from radsynth.data.split import read_subsets

CLEAN = "clean"
#: Screen name -> (manifest column, whether it is a plausibility: suspicion = 1 - value, caught
#: below the threshold; else a yes/no column, caught where true).
SCREENS = {
    "plausibility": ("plausibility", True),
    "anatomy": ("anatomy_plausibility", True),
    "combined": ("combined_plausibility", True),
    "low confidence": ("anatomy_low_confidence", False),
    "out of order": ("anatomy_out_of_order", False),
    "out of range": ("anatomy_out_of_range", False),
    "proposal": ("proposed_exclude", False),
}


def screen_columns(
    images: np.ndarray,
    ids: Sequence[str],
    *,
    plausibility_model: PlausibilityModel,
    landmark_model: LandmarkModel,
    reference: AnatomyReference,
    facing_classifier: Path,
    threshold: float,
    curvature_thresholds_deg: Sequence[float],
    facing_batch_size: int,
    landmark_batch_size: int,
    chunk_size: int,
) -> pd.DataFrame:
    """The manifest's screen columns of a batch of atlas-frame images, scored as samples are."""
    oriented, _ = orient_left(images, facing_classifier, batch_size=facing_batch_size)
    landmarks = landmark_table(
        landmark_model,
        oriented,
        list(ids),
        ["left"] * len(ids),
        curvature_thresholds_deg=curvature_thresholds_deg,
        batch_size=landmark_batch_size,
    )
    frame = pd.DataFrame(
        {
            "image_id": list(ids),
            "plausibility": plausibility_model.score(oriented, chunk_size=chunk_size).plausibility,
        }
    )
    frame = with_anatomy(frame, landmarks, reference)
    proposed, _ = propose(frame, threshold)
    return frame.assign(proposed_exclude=proposed == EXCLUDE)


def suspicion(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per screen, higher = more suspicious."""
    values = {screen: frame[column].to_numpy(float) for screen, (column, _) in SCREENS.items()}
    return {
        screen: 1 - values[screen] if is_plausibility else values[screen]
        for screen, (_, is_plausibility) in SCREENS.items()
    }


def caught(frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Per screen, the share of `frame`'s images it catches at its operating point."""
    return {
        screen: float(
            np.mean(frame[column].to_numpy(float) < threshold)
            if is_plausibility
            else np.mean(frame[column].to_numpy(bool))
        )
        for screen, (column, is_plausibility) in SCREENS.items()
    }


def evaluate_screens(
    atlas_h5: Path,
    split_manifest: Path,
    facing_classifier: Path,
    landmark_model_path: Path,
    held_out_csv: Path,
    *,
    table_csv: Path,
    figure_png: Path,
    threshold: float,
    settings: ScreenSettings,
    min_confidence: float,
    percentiles: Sequence[float],
    corruptions: Sequence[str],
    curvature_thresholds_deg: Sequence[float],
    facing_batch_size: int,
    landmark_batch_size: int,
    chunk_size: int,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Write the table (one row per corruption and screen) and its figure; returns the table."""
    atlas = load_atlas(Path(atlas_h5))
    subsets = read_subsets(Path(split_manifest), atlas.source_names)
    names = list(atlas.source_names)
    train, _ = orient_left(
        np.asarray(atlas.images[subsets.train]), facing_classifier, batch_size=facing_batch_size
    )
    plausibility_model = fit_plausibility(
        train,
        [names[row] for row in subsets.train],
        settings=settings,
        fitted_on={"atlas": str(atlas_h5), "rows": f"the train rows of {split_manifest}"},
    )
    held_out = np.asarray(subsets.val)
    reference_rows, scored_rows = held_out[0::2], held_out[1::2]
    table = read_landmark_table(Path(held_out_csv))
    reference_ids = {names[row] for row in reference_rows}
    reference_table = table[table["image_id"].isin(reference_ids)].reset_index(drop=True)
    if len(reference_table) != len(reference_ids):
        raise ValueError(
            f"{held_out_csv}: holds {len(reference_table)} of the {len(reference_ids)} held-out "
            f"reference images of {split_manifest}"
        )
    ranges = geometry_ranges(reference_table, (float(percentiles[0]), float(percentiles[1])))
    reference = AnatomyReference(
        ranges,
        table_flags(reference_table, ranges, min_confidence)["anatomy_score"].to_numpy(),
        float(min_confidence),
        f"{held_out_csv} (the first, third, ... held-out rows)",
    )
    keypoints = np.asarray(atlas.keypoints[np.sort(scored_rows)], np.float64)
    annotated = np.isfinite(keypoints).all(axis=(1, 2))
    scored_rows = np.sort(scored_rows)[annotated]
    keypoints = keypoints[annotated]
    images = np.asarray(atlas.images[scored_rows])
    ids = [names[row] for row in scored_rows]
    landmark_model = load_landmark_model(Path(landmark_model_path))

    def columns(batch: np.ndarray) -> pd.DataFrame:
        return screen_columns(
            batch,
            ids,
            plausibility_model=plausibility_model,
            landmark_model=landmark_model,
            reference=reference,
            facing_classifier=facing_classifier,
            threshold=threshold,
            curvature_thresholds_deg=curvature_thresholds_deg,
            facing_batch_size=facing_batch_size,
            landmark_batch_size=landmark_batch_size,
            chunk_size=chunk_size,
        )

    frames = {CLEAN: columns(images)}
    for corruption in corruptions:
        frames[corruption] = columns(corrupt(images, keypoints, corruption))
    aucs = screen_aucs(
        suspicion(frames[CLEAN]),
        {corruption: suspicion(frames[corruption]) for corruption in corruptions},
    )
    clean_caught = caught(frames[CLEAN], threshold)
    aucs["caught_clean"] = aucs["screen"].map(clean_caught)
    aucs["caught_corrupted"] = [
        caught(frames[corruption], threshold)[screen]
        for corruption, screen in zip(aucs["corruption"], aucs["screen"], strict=True)
    ]
    aucs.insert(2, "n_clean", len(ids))
    aucs.insert(3, "n_corrupted", len(ids))
    aucs[["roc_auc", "caught_clean", "caught_corrupted"]] = aucs[
        ["roc_auc", "caught_clean", "caught_corrupted"]
    ].round(4)
    described = {
        **provenance,
        "threshold": str(threshold),
        "reference": reference.source,
        "plausibility_fitted_on": f"{len(train)} train rows of {split_manifest}",
    }
    write_table(aucs, Path(table_csv), provenance=described)
    plot_screen_aucs(aucs, Path(figure_png), provenance=described)
    return aucs


def plot_screen_aucs(aucs: pd.DataFrame, out_png: Path, *, provenance: Mapping[str, str]) -> Path:
    """One group of bars per corruption, one bar per screen: which screen catches what."""
    corruptions = list(dict.fromkeys(aucs["corruption"]))
    screens = list(dict.fromkeys(aucs["screen"]))
    table = aucs.pivot(index="corruption", columns="screen", values="roc_auc")
    figure = Figure(figsize=(1.6 * len(corruptions) + 3.4, 3.6), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(screens)
    for number, screen in enumerate(screens):
        axes.bar(
            np.arange(len(corruptions)) + (number - (len(screens) - 1) / 2) * width,
            table.loc[corruptions, screen].to_numpy(),
            width,
            label=screen,
        )
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(np.arange(len(corruptions)), corruptions)
    axes.set_ylim(0, 1)
    axes.set_ylabel("ROC AUC, clean vs corrupted")
    n_clean = int(aucs["n_clean"].iloc[0])
    axes.set_title(
        f"the screens on {n_clean} held-out real images and their corrupted copies (0.5 = chance)",
        fontsize=9,
    )
    figure.legend(fontsize=7, loc="outside right upper")
    return save_figure(
        figure, Path(out_png), title="screens against corruptions", provenance=provenance, dpi=110
    )
