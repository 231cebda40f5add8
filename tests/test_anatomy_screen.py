"""The anatomical screen in the screening manifest: the proposal and its reason from a hand-made
manifest, the manifest's columns (all anatomy columns or none), the workflow's screening of a
gathered set with hand-made landmark tables, the merge and the release reader passing the
columns through, and the screens' evaluation table and figure."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import PROVENANCE, gathered_set
from PIL import Image

from radsynth.anatomy.landmark_export import (
    label_column,
    landmark_columns,
    write_landmark_table,
)
from radsynth.audit.plausibility import fit_plausibility, save_model
from radsynth.audit.scoring import anatomy_reference, screen_gathered_sets
from radsynth.audit.screen_evaluation import SCREENS, caught, plot_screen_aucs, suspicion
from radsynth.audit.screening import (
    ANATOMY_COLUMNS,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    merge_reviews,
    merge_screening,
    propose,
    read_manifest,
    write_manifest,
)
from radsynth.core.settings import preset
from radsynth.core.tables import read_table_provenance, write_table
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.release.package import read_merged

THRESHOLD = 0.05


def test_proposal_excludes_below_either_plausibility_and_names_why() -> None:
    manifest = pd.DataFrame(
        {
            "plausibility": [0.5, 0.01, 0.6, 0.04, 0.05],
            "anatomy_plausibility": [0.5, 0.9, 0.0, 0.02, 0.05],
            "anatomy_reason": ["", "", "vertebrae out of order (C3/C4 overlap)", "", "c4 x"],
        }
    )
    proposed, reasons = propose(manifest, THRESHOLD)
    assert proposed.tolist() == ["include", "exclude", "exclude", "exclude", "include"]
    assert reasons == [
        "",
        "plausibility 0.010 < 0.05",
        "anatomy plausibility 0.000 < 0.05: vertebrae out of order (C3/C4 overlap)",
        "plausibility 0.040 < 0.05; anatomy plausibility 0.020 < 0.05",
        "",  # at the threshold is not below it: a flag alone proposes nothing
    ]
    alone, why = propose(manifest[["plausibility"]], THRESHOLD)
    assert alone.tolist() == ["include", "exclude", "include", "exclude", "include"]
    assert why[1] == "plausibility 0.010 < 0.05"


def plain_manifest(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({column: ["x"] * n for column in MANIFEST_COLUMNS}).assign(
        row=range(1, n + 1), plausibility=0.5, decision=""
    )


def test_manifest_has_every_anatomy_column_or_none(tmp_path) -> None:
    anatomy = {column: 0.5 for column in ANATOMY_COLUMNS} | {"anatomy_reason": ""}
    manifest = plain_manifest().assign(**anatomy, proposed_reason="")
    path = write_manifest(manifest.iloc[:, ::-1], tmp_path, provenance={})
    written = read_manifest(path)
    before, after = list(MANIFEST_COLUMNS[:16]), list(MANIFEST_COLUMNS[16:])
    assert before[-1] == "p99" and after[0] == "proposed"
    assert list(written.columns) == [
        *before,
        *ANATOMY_COLUMNS,
        "proposed",
        "proposed_reason",
        *after[1:],
    ]
    assert written["anatomy_reason"].tolist() == ["", ""]  # blanks stay text
    assert list(read_manifest(write_manifest(plain_manifest(), tmp_path / "plain", {})).columns)[
        -4:
    ] == ["proposed", "decision", "reason", "reviewer"]
    with pytest.raises(
        ValueError, match="lacks column\\(s\\) anatomy_reason, combined_plausibility$"
    ):
        write_manifest(
            manifest.drop(columns=["combined_plausibility", "anatomy_reason"]), tmp_path, {}
        )
    write_table(manifest.drop(columns="proposed_reason"), tmp_path / "cut.csv", provenance={})
    with pytest.raises(ValueError, match="cut.csv: not a screening manifest .* proposed_reason$"):
        read_manifest(tmp_path / "cut.csv")


def spine_points() -> np.ndarray:
    """Upright keypoints in a 16 px frame: C2's lower corners at y 2, each body C3..C7 2 px high
    with 0.5 px discs, corners at x 5 and 9 (depth 4 px)."""
    points = np.zeros((len(KEYPOINT_LABELS), 2))
    points[KEYPOINT_LABELS.index("C2 centroid")] = (7, 1)
    for label in KEYPOINT_LABELS[1:]:
        level, edge, side = label.split()
        top = 2.5 + 2.5 * (int(level[1]) - 3)
        y = 2.0 if level == "C2" else top + (2 if edge == "bottom" else 0)
        points[KEYPOINT_LABELS.index(label)] = (5 if side == "left" else 9, y)
    return points


def table_of(ids: list[str], angles: list[float], low_confidence: list[bool]) -> pd.DataFrame:
    """A landmark table: the spine above for every image, confidence 0.9 (0.1 for C2 bottom left
    where `low_confidence`), the given C2-C7 angles, heights 2 and depths 4."""
    table = pd.DataFrame({"image_id": ids})
    points = spine_points()
    for k, label in enumerate(KEYPOINT_LABELS):
        table[label_column(label, "x")] = points[k, 0]
        table[label_column(label, "y")] = points[k, 1]
        table[label_column(label, "confidence")] = 0.9
    weak = label_column("C2 bottom left", "confidence")
    table.loc[low_confidence, weak] = 0.1
    table["c2_c7_angle_deg"] = angles
    table["curvature_class"] = "straight"
    for level in ("c3", "c4", "c5", "c6", "c7"):
        table[f"{level}_height"], table[f"{level}_depth"] = 2.0, 4.0
    return table[landmark_columns()]


def test_gathered_set_is_screened_with_its_landmarks_merged_and_read_for_release(tmp_path):
    manifest_csv = gathered_set(tmp_path)
    settings = preset("config.yaml").audit.screen.settings.model_copy(update={"analysis_size": 8})
    real = np.random.default_rng(0).integers(0, 256, (20, 16, 16), dtype=np.uint8)
    model = fit_plausibility(
        real, [f"real{i}" for i in range(20)], settings=settings, fitted_on={"atlas": "noise"}
    )
    save_model(model, tmp_path / "model.npz")
    held_out = tmp_path / "held_out.csv"
    write_landmark_table(
        table_of(["r1", "r2", "r3"], [-10.0, 0.0, 10.0], [False] * 3), held_out, provenance={}
    )
    ids = [f"large-ckpt002_{i:06d}" for i in range(3)]
    landmarks = tmp_path / "landmarks.csv"
    # in range and confident; angle 20 beyond the real range; a low-confidence landmark
    write_landmark_table(
        table_of(ids[::-1], [0.0, 20.0, 0.0][::-1], [False, False, True][::-1]),
        landmarks,
        provenance={},
    )
    # percentiles 0 and 100: the range is the real images' [min, max]
    reference = anatomy_reference(held_out, min_confidence=0.3, percentiles=[0, 100])
    out = tmp_path / "screening"
    written = screen_gathered_sets(
        [manifest_csv],
        tmp_path / "model.npz",
        out,
        threshold=THRESHOLD,
        chunk_size=2,
        provenance=PROVENANCE,
        landmarks=[landmarks],
        anatomy=reference,
    )["large/ckpt002"]
    path = out / "large/ckpt002" / MANIFEST_NAME
    manifest = read_manifest(path)
    assert manifest["image_id"].tolist() == ids
    # reference: no flag, score 1 - 0.9 each; a scores the same: all 3 at least as high
    assert manifest["anatomy_plausibility"].tolist() == [1.0, 0.0, 0.0]
    assert manifest["anatomy_out_of_range"].tolist() == [False, True, False]
    assert manifest["anatomy_low_confidence"].tolist() == [False, False, True]
    assert not manifest["anatomy_out_of_order"].any()
    np.testing.assert_allclose(manifest["anatomy_min_confidence"], [0.9, 0.9, 0.1])
    np.testing.assert_allclose(
        manifest["anatomy_score"], [0.1, 1.1, 2 - (22 * 0.9 + 0.1) / 23], atol=1e-6
    )
    plausibility = manifest["plausibility"].to_numpy()
    own = [f"plausibility {p:.3f} < 0.05; " if p < THRESHOLD else "" for p in plausibility]
    assert manifest["proposed_reason"].tolist() == [
        own[0].removesuffix("; "),
        own[1] + "anatomy plausibility 0.000 < 0.05: c2_c7_angle_deg 20.0 outside the real "
        "0-100% range [-10.0, 10.0]",
        own[2] + "anatomy plausibility 0.000 < 0.05: low landmark confidence (C2 bottom left "
        "0.10 < 0.3)",
    ]
    assert manifest["proposed"].tolist()[1:] == ["exclude", "exclude"]
    assert manifest["proposed"].iloc[0] == ("exclude" if plausibility[0] < THRESHOLD else "include")
    pd.testing.assert_series_equal(written["proposed"], manifest["proposed"])
    described = read_table_provenance(path)
    assert described["landmarks"] == str(landmarks)
    assert described["anatomy_reference"] == str(held_out)
    assert "or anatomy_plausibility < 0.05" in described["proposed"]

    review = manifest.assign(decision=["exclude", "include", ""], reviewer="r1", reason="")
    write_table(review, tmp_path / "review.csv", provenance={})
    merged_csv = tmp_path / "merged.csv"
    merge_screening(
        [path],
        [tmp_path / "review.csv"],
        merged_csv=merged_csv,
        conflicts_csv=tmp_path / "conflicts.csv",
        counts_csv=tmp_path / "counts.csv",
        counts_png=tmp_path / "counts.png",
        provenance=PROVENANCE,
    )
    merged = read_merged(merged_csv)
    assert merged["final_decision"].tolist() == ["exclude", "include", "exclude"]
    assert merged["anatomy_out_of_range"].tolist() == [False, True, False]
    assert merged["proposed_reason"].iloc[2] == manifest["proposed_reason"].iloc[2]

    with pytest.raises(ValueError, match="1 landmark tables for 2 sample manifests"):
        screen_gathered_sets(
            [manifest_csv, manifest_csv],
            tmp_path / "model.npz",
            tmp_path / "again",
            threshold=THRESHOLD,
            chunk_size=2,
            provenance=PROVENANCE,
            landmarks=[landmarks],
            anatomy=reference,
        )
    write_landmark_table(table_of(ids[:2], [0.0, 0.0], [False] * 2), landmarks, provenance={})
    with pytest.raises(ValueError, match=r"landmarks.csv: no anatomy flags for 1 manifest image"):
        screen_gathered_sets(
            [manifest_csv],
            tmp_path / "model.npz",
            tmp_path / "again",
            threshold=THRESHOLD,
            chunk_size=2,
            provenance=PROVENANCE,
            landmarks=[landmarks],
            anatomy=reference,
        )


def test_evaluation_scores_caught_shares_and_figure(tmp_path) -> None:
    frame = pd.DataFrame(
        {
            "plausibility": [0.01, 0.5],
            "anatomy_plausibility": [0.2, 0.04],
            "combined_plausibility": [0.03, 0.1],
            "anatomy_low_confidence": [True, False],
            "anatomy_out_of_order": [False, False],
            "anatomy_out_of_range": [True, True],
            "proposed_exclude": [True, True],
        }
    )
    assert caught(frame, THRESHOLD) == {
        "plausibility": 0.5,
        "anatomy": 0.5,
        "combined": 0.5,
        "low confidence": 0.5,
        "out of order": 0.0,
        "out of range": 1.0,
        "proposal": 1.0,
    }
    scores = suspicion(frame)
    assert list(scores) == list(SCREENS)
    np.testing.assert_allclose(scores["plausibility"], [0.99, 0.5])
    assert scores["out of range"].tolist() == [1.0, 1.0]
    aucs = pd.DataFrame(
        {
            "corruption": ["flip_spine"] * 2 + ["invert"] * 2,
            "screen": ["plausibility", "anatomy"] * 2,
            "n_clean": 5,
            "roc_auc": [0.9, 0.6, 1.0, 0.4],
        }
    )
    out = plot_screen_aucs(aucs, tmp_path / "aucs.png", provenance=PROVENANCE)
    assert Image.open(out).text["provenance_config_hash"] == "abc"


def test_a_manifest_read_with_blank_decisions_as_floats_merges_without_warning() -> None:
    """A manifest read by plain pandas has NaN (float) decisions: the merge's check that nobody
    decided in the manifest itself takes them as blank, without pandas' fillna warning."""
    manifest = plain_manifest().assign(
        image_id=["a", "b"], proposed="include", decision=np.nan, reason="", reviewer=""
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged, conflicts = merge_reviews(manifest, [])
    assert merged["final_decision"].tolist() == ["include", "include"] and conflicts.empty
