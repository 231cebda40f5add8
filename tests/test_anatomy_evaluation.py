"""What the landmark model measures: anatomical fidelity (W1, chi-square, landmark-feature FD,
the real-vs-real floor), the anatomical screen against corrupted phantoms, utility (train on
synthetic, test on real), the two-sample classifier and the per-image landmark table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anatomy_fixtures import (
    INFERENCE_BATCH,
    PROVENANCE,
    demo_teacher,
    phantoms,
    training_settings,
)
from PIL import Image

from radsynth.anatomy.augment import flip_permutation
from radsynth.anatomy.fidelity import (
    bootstrap_w1,
    curvature_comparison,
    geometry_distances,
    landmark_feature_extractor,
    plot_fidelity_against_step,
    real_halves,
    write_fidelity_table,
)
from radsynth.anatomy.geometry import geometry_table
from radsynth.anatomy.landmark_export import label_column, landmark_table
from radsynth.anatomy.landmark_model import load_landmark_model, predict_landmarks
from radsynth.anatomy.two_sample import two_sample_auroc
from radsynth.anatomy.utility import (
    UtilityArm,
    plot_utility,
    require_split_run,
    run_utility,
    summarise_utility,
    utility_arms,
)
from radsynth.audit.anatomy_screen import (
    add_anatomy_columns,
    anatomy_flags,
    combined_plausibility,
    geometry_ranges,
    order_violations,
    tail_share,
)
from radsynth.audit.corruptions import CORRUPTIONS, corrupt, flip_spine, screen_aucs
from radsynth.audit.plausibility import fit_plausibility
from radsynth.audit.screening import ANATOMY_COLUMNS
from radsynth.core.features import extract_features
from radsynth.core.frechet import frechet_distance
from radsynth.core.provenance import file_sha256
from radsynth.core.settings.audit import ScreenSettings
from radsynth.core.tables import read_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.evaluate.metrics import fidelity_row

#: The demo preset's curvature rule (config/config.yaml anatomy.curvature_thresholds_deg).
THRESHOLDS_DEG = (-6.1, 6.4)
#: The demo preset's plausibility screen (config/config.yaml audit.screen.settings).
SCREEN_SETTINGS = ScreenSettings(
    analysis_size=20,
    cell=2,
    orientation_bins=8,
    neighbourhood=1,
    shrinkage=0.01,
    calibration_folds=5,
    calibration_seed=0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def left_facing(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The phantoms mirrored where they face right (as radsynth standardises samples), keypoints
    mirrored and their left/right labels swapped."""
    right = data["facing"] == "right"
    images, keypoints = data["images"].copy(), data["keypoints"].copy()
    images[right] = images[right][:, :, ::-1]
    mirrored = keypoints[right][:, flip_permutation(KEYPOINT_LABELS)]
    mirrored[..., 0] = images.shape[2] - 1 - mirrored[..., 0]
    keypoints[right] = mirrored
    return {**data, "images": images, "keypoints": keypoints, "facing": np.full(len(right), "left")}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo-size landmark model of the model tests (trained once per session)."""
    return demo_teacher(tmp_path_factory.getbasetemp())[0]


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    return left_facing(phantoms(120, 80))


# ---------------------------------------------------------------- fidelity, by hand


def test_w1_of_a_shift_and_its_bootstrap_interval() -> None:
    """Two samples one unit apart have W1 = 1; constant samples 2 apart resample to W1 = 2
    every time; the interval is seeded."""
    reference = np.arange(50, dtype=float)
    w1, low, high = bootstrap_w1(reference, reference + 1, n_boot=200, level=0.95, seed=0)
    assert w1 == pytest.approx(1.0)
    assert low < high
    assert bootstrap_w1(np.zeros(5), np.full(7, 2.0), n_boot=20, level=0.9, seed=0) == (2, 2, 2)
    assert (w1, low, high) == bootstrap_w1(reference, reference + 1, n_boot=200, level=0.95, seed=0)
    assert np.isnan(bootstrap_w1(reference, np.full(3, np.nan), n_boot=5, level=0.9, seed=0)[0])


def test_curvature_shares_and_chi_square_by_hand() -> None:
    """Counts [[10 lordotic, 10 straight], [20, 0]]: expected [[15, 5], [15, 5]]; with Yates'
    correction (1 degree of freedom) chi2 = 4.5^2 (1/15 + 1/5 + 1/15 + 1/5) = 10.8."""
    row = curvature_comparison(["lordotic"] * 10 + ["straight"] * 10 + [""], ["lordotic"] * 20)
    assert row["chi2"] == pytest.approx(10.8)
    assert row["chi2_dof"] == 1
    assert (row["share_lordotic_reference"], row["share_straight_reference"]) == (0.5, 0.5)
    assert (row["share_lordotic_compared"], row["share_kyphotic_compared"]) == (1.0, 0.0)
    assert np.isnan(curvature_comparison(["straight"] * 3, ["straight"] * 4)["chi2"])


def test_real_halves_are_disjoint_and_refuse_too_few_images() -> None:
    first, second = real_halves(10, 4, seed=1)
    assert len(first) == len(second) == 4 and not set(first) & set(second)
    assert not np.array_equal(first, real_halves(10, 4, seed=2)[0])
    with pytest.raises(ValueError, match="needs 2 x 6 images .* there are 10"):
        real_halves(10, 6, seed=1)


# ---------------------------------------------------------------- screen, by hand


def ordered_spine(n: int = 1) -> np.ndarray:
    """Upright keypoints: C2's lower endplate at y 10, each body C3..C7 4 px high, 2 px discs."""
    points = np.zeros((len(KEYPOINT_LABELS), 2))
    points[KEYPOINT_LABELS.index("C2 centroid")] = (10, 6)
    for label in KEYPOINT_LABELS[1:]:
        level, edge, side = label.split()
        top = 10 + 2 + 6 * (int(level[1]) - 3)
        y = 10 if level == "C2" else top + (4 if edge == "bottom" else 0)
        points[KEYPOINT_LABELS.index(label)] = (8 if side == "left" else 14, y)
    return np.repeat(points[None], n, axis=0)


def test_order_violations_name_the_levels() -> None:
    spines = ordered_spine(3)
    c4 = [
        KEYPOINT_LABELS.index(f"C4 {e} {s}") for e in ("top", "bottom") for s in ("left", "right")
    ]
    spines[1, c4, 1] = spines[1, c4, 1][[2, 3, 0, 1]]  # C4 top and bottom exchanged
    spines[2, c4, 1] -= 3  # C4 moved 3 px up: into C3 (disc 2 px)
    assert order_violations(spines) == [
        [],
        ["C4 upside down"],
        ["C3/C4 overlap"],
    ]


def test_flags_ranges_reason_and_manifest_columns() -> None:
    real = pd.DataFrame({"c2_c7_angle_deg": np.arange(201.0) - 100, "curvature_class": "straight"})
    ranges = geometry_ranges(real)  # 0.5 and 99.5 percentiles of -100..100: -99 and 99
    assert (ranges.low["c2_c7_angle_deg"], ranges.high["c2_c7_angle_deg"]) == (-99.0, 99.0)
    xy = ordered_spine(3)
    xy[2, KEYPOINT_LABELS.index("C5 top left"), 1] = 40  # C5 upside down (and overlapping C6)
    confidence = np.full((3, len(KEYPOINT_LABELS)), 0.9)
    confidence[1, 5] = 0.1
    geometry = pd.DataFrame({"c2_c7_angle_deg": [0.0, 120.0, 5.0], "curvature_class": "straight"})
    flags = anatomy_flags(xy, confidence, geometry, ranges, min_confidence=0.3)
    assert flags["anatomy_low_confidence"].tolist() == [False, True, False]
    assert flags["anatomy_out_of_order"].tolist() == [False, False, True]
    assert flags["anatomy_out_of_range"].tolist() == [False, True, False]
    # flags + (1 - mean confidence)
    np.testing.assert_allclose(flags["anatomy_score"], [0.1, 2 + 1 - (22 * 0.9 + 0.1) / 23, 1.1])
    assert flags["anatomy_reason"][0] == ""
    assert flags["anatomy_reason"][1] == (
        f"low landmark confidence ({KEYPOINT_LABELS[5]} 0.10 < 0.3); c2_c7_angle_deg 120.0 "
        "outside the real 0.5-99.5% range [-99.0, 99.0]"
    )
    assert "vertebrae out of order (C5 upside down" in flags["anatomy_reason"][2]
    manifest = pd.DataFrame({"image_id": ["b", "a", "c"], "plausibility": [0.5, 0.2, 0.9]})
    merged = add_anatomy_columns(manifest, ["a", "b", "c"], flags, np.array([0.12, 0.2, 3.0, 0.05]))
    assert merged["image_id"].tolist() == ["b", "a", "c"]
    assert set(ANATOMY_COLUMNS) <= set(merged.columns)
    # reference scores >= 2.13 (b): 1 of 4; >= 0.1 (a): 3 of 4 (not 0.05); >= 1.1 (c): 1 of 4
    assert merged["anatomy_plausibility"].tolist() == [0.25, 0.75, 0.25]
    # Fisher, 4 degrees of freedom: sf(x) = exp(-x/2) (1 + x/2) at x = -2 ln(p): p (1 - ln p)
    product = np.array([0.25 * 0.5, 0.75 * 0.2, 0.25 * 0.9])
    np.testing.assert_allclose(merged["combined_plausibility"], product * (1 - np.log(product)))
    assert combined_plausibility(np.array([0.0]), np.array([0.5])).tolist() == [0.0]
    with pytest.raises(ValueError, match="lacks column\\(s\\) plausibility"):
        add_anatomy_columns(manifest.drop(columns="plausibility"), ["a", "b", "c"], flags, [1.0])
    with pytest.raises(ValueError, match="no anatomy flags for 1 manifest image"):
        add_anatomy_columns(manifest, ["a", "b", "x"], flags, np.ones(3))
    assert tail_share(np.array([1.0, 2.0]), np.array([0.0, 2.0, 3.0])).tolist() == [1.0, 0.5, 0.0]


def test_corruptions_by_hand() -> None:
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    points = np.array([[4.0, 4.0], [5.0, 5.0]])  # box rows/columns 2..7 with 2 px padding
    flipped = flip_spine(image, points)
    np.testing.assert_array_equal(flipped[2:8, 2:8], image[2:8, 2:8][::-1])
    np.testing.assert_array_equal(flipped[:2], image[:2])
    np.testing.assert_array_equal(flipped[:, 8:], image[:, 8:])
    spines = ordered_spine(1)  # C3 rows 12..16, C6 rows 30..34
    swapped = corrupt(
        np.arange(40 * 20, dtype=np.uint16).reshape(1, 40, 20) % 256, spines, "swap_vertebrae"
    )[0]
    original = np.arange(40 * 20).reshape(40, 20) % 256
    np.testing.assert_array_equal(swapped[12:17], original[30:35])
    np.testing.assert_array_equal(swapped[30:35], original[12:17])
    np.testing.assert_array_equal(swapped[17:30], original[17:30])
    assert corrupt(image[None], points[None], "invert")[0, 0, 1] == 254
    blank = corrupt(image[None], points[None], "blank_spine")[0]
    assert (blank[2:8, 2:8] == 49).all()  # the median of 0..99, rounded down into uint8
    with pytest.raises(ValueError, match="unknown corruption 'rotate'"):
        corrupt(image[None], points[None], "rotate")


# ---------------------------------------------------------------- with a trained model


def test_landmark_features_give_a_frechet_distance_that_separates(
    teacher: Path, held_out: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """The encoder is a hashed extractor; FD (evaluate's, torchmetrics) of two real halves is
    far below FD of real against inverted images; the fidelity table and figure are written."""
    extractor = landmark_feature_extractor(teacher)
    assert extractor.description.weights == file_sha256(teacher)
    assert extractor.num_features == 64 + 128 + 256
    images = held_out["images"]
    first, second = real_halves(len(images), 40, seed=0)
    features = extract_features(extractor, images, batch_size=32, device="cpu")
    inverted = extract_features(extractor, 255 - images[second], batch_size=32, device="cpu")
    floor = frechet_distance(features[first], features[second])
    far = frechet_distance(features[first], inverted)
    model = load_landmark_model(teacher)
    predicted = predict_landmarks(model, images, batch_size=INFERENCE_BATCH)
    geometry = geometry_table(
        predicted.xy, held_out["facing"], curvature_thresholds_deg=THRESHOLDS_DEG
    )
    floor_rows = geometry_distances(
        geometry.iloc[first], geometry.iloc[second], n_boot=100, level=0.95, seed=0
    )
    flipped = corrupt(images[second], held_out["keypoints"][second], "flip_spine")
    flipped_geometry = geometry_table(
        predict_landmarks(model, flipped, batch_size=INFERENCE_BATCH).xy,
        held_out["facing"][second],
        curvature_thresholds_deg=THRESHOLDS_DEG,
    )
    flipped_rows = geometry_distances(
        geometry.iloc[first], flipped_geometry, n_boot=100, level=0.95, seed=0
    )
    angle = {
        name: rows.set_index("measure").loc["c2_c7_angle_deg"]
        for name, rows in (("floor", floor_rows), ("flipped", flipped_rows))
    }
    print(
        f"\nlandmark FD: real half vs real half {floor:.3f}, real vs inverted {far:.3f}; "
        f"C2-C7 angle W1: real vs real {angle['floor']['w1']:.2f} deg "
        f"[{angle['floor']['w1_low']:.2f}, {angle['floor']['w1_high']:.2f}], real vs spine flipped "
        f"{angle['flipped']['w1']:.2f} [{angle['flipped']['w1_low']:.2f}, "
        f"{angle['flipped']['w1_high']:.2f}]; curvature chi2 p: floor "
        f"{floor_rows['chi2_p'].iloc[-1]:.3f}, flipped {flipped_rows['chi2_p'].iloc[-1]:.3g}"
    )
    assert far > 5 * floor
    write_atlas(
        tmp_path / "atlas.h5",
        atlas_from_images(images[first], [f"real{i}" for i in first]),
    )
    row = fidelity_row(  # evaluate's own FID path, its feature cache included
        255 - images[second],
        tmp_path / "atlas.h5",
        extractor,
        tmp_path / "cache",
        synthetic_name="inverted half",
        kid_subsets=10,
        kid_subset_size=20,
        kid_seed=0,
        nearest_k=5,
        batch_size=32,
    )
    assert row.fid == pytest.approx(far, rel=1e-6)
    assert row.extractor == extractor.description
    table = write_fidelity_table(
        {
            ("real vs real", None): floor_rows,
            ("step 100", 100): flipped_rows,
            ("step 200", 200): floor_rows,
        },
        tmp_path / "fidelity.csv",
        provenance=PROVENANCE,
    )
    written = read_table(tmp_path / "fidelity.csv")
    assert len(written) == len(table) == 3 * 12  # angle, 10 body sizes, curvature
    assert written["step"].isna().sum() == 12
    out = plot_fidelity_against_step(
        table,
        tmp_path / "fidelity.png",
        measures=["c2_c7_angle_deg", "c4_height"],
        provenance=PROVENANCE,
        title="anatomy against step",
        floor_set="real vs real",
        fid=pd.DataFrame({"step": [100, 200], "fid": [30.0, 10.0]}),
    )
    assert Image.open(out).text["provenance_config_hash"] == "abc"


def test_anatomical_and_plausibility_screens_on_corrupted_phantoms(
    teacher: Path, held_out: dict[str, np.ndarray]
) -> None:
    """Reference: 40 held-out phantoms (ranges, plausibility fit); scored: the other 40 clean
    against their corrupted copies. Prints the ROC AUC of each screen per corruption."""
    model = load_landmark_model(teacher)
    reference, scored = slice(0, 40), slice(40, 80)
    images, keypoints = held_out["images"], held_out["keypoints"]
    facing = held_out["facing"][scored]

    def anatomy(batch: np.ndarray) -> pd.DataFrame:
        predicted = predict_landmarks(model, batch, batch_size=INFERENCE_BATCH)
        return predicted, geometry_table(
            predicted.xy, np.full(len(batch), "left"), curvature_thresholds_deg=THRESHOLDS_DEG
        )

    predicted, real_geometry = anatomy(images[reference])
    ranges = geometry_ranges(real_geometry)
    reference_flags = anatomy_flags(
        predicted.xy, predicted.confidence, real_geometry, ranges, min_confidence=0.3
    )
    plausibility = fit_plausibility(
        images[reference],
        [f"ref{i}" for i in range(40)],
        settings=SCREEN_SETTINGS,
        fitted_on={"atlas": "demo phantoms", "orientation": "mirrored left-facing"},
    )

    def suspicion(batch: np.ndarray) -> dict[str, np.ndarray]:
        predicted, geometry = anatomy(batch)
        flags = anatomy_flags(
            predicted.xy, predicted.confidence, geometry, ranges, min_confidence=0.3
        )
        anatomical = tail_share(reference_flags["anatomy_score"], flags["anatomy_score"])
        audit = plausibility.score(batch, chunk_size=64).plausibility
        return {
            "anatomy": 1 - anatomical,
            "plausibility": 1 - audit,
            "combined": 1 - combined_plausibility(anatomical, audit),
        }

    assert len(facing) == 40
    clean = suspicion(images[scored])
    corrupted = {
        name: suspicion(corrupt(images[scored], keypoints[scored], name)) for name in CORRUPTIONS
    }
    aucs = screen_aucs(clean, corrupted).pivot(
        index="corruption", columns="screen", values="roc_auc"
    )
    print("\nROC AUC, 40 clean vs 40 corrupted held-out phantoms:\n" + aucs.round(3).to_string())
    assert aucs.loc["blank_spine", "anatomy"] > 0.8
    assert (aucs["combined"] >= aucs[["anatomy", "plausibility"]].min(axis=1) - 0.05).all()


def test_utility_refuses_the_full_run_and_trains_students(
    teacher: Path, held_out: dict[str, np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="the 'full' run saw them"):
        require_split_run("full", "anatomy.utility.samples")
    require_split_run("split", "anatomy.utility.samples")
    assert [arm.name for arm in utility_arms([0.25])] == [
        "real 100%",
        "synthetic",
        "real 100% + synthetic",
        "real 25%",
        "real 25% + synthetic",
    ]
    with pytest.raises(ValueError, match="fraction 1.5"):
        utility_arms([1.5])
    real = phantoms(0, 120)  # the teacher's train images: its train subset
    synthetic = phantoms(200, 80)["images"][:40]  # stand-ins for samples: unlabelled images
    arms = [UtilityArm(0.0, True), UtilityArm(0.5, True)]
    results = run_utility(
        load_landmark_model(teacher),
        (real["images"][:40], real["keypoints"][:40]),
        synthetic,
        (held_out["images"][:40], held_out["keypoints"][:40]),
        arms=arms,
        seeds=[0, 1],
        training=training_settings(max_steps=4, eval_every=4, state_every=4),
        work_dir=tmp_path / "students",
        inference_batch_size=INFERENCE_BATCH,
        provenance=PROVENANCE,
    )
    summary = summarise_utility(results)
    print("\nutility (4 steps per student):\n" + summary.round(3).to_string())
    assert summary["arm"].tolist() == ["synthetic", "real 50% + synthetic"]
    assert summary["n_real"].tolist() == [0, 20]
    assert summary["n_synthetic"].tolist() == [40, 40]
    assert summary["seeds"].tolist() == [2, 2]
    assert np.isfinite(summary["mre_px_mean"]).all() and (summary["mre_px_std"] >= 0).all()
    out = plot_utility(
        summary,
        tmp_path / "utility.png",
        provenance=PROVENANCE,
        title="utility",
        teacher_mre_px=0.8,
    )
    assert out.is_file()


def test_two_sample_classifier_separates_only_what_differs(held_out: dict[str, np.ndarray]) -> None:
    train, test = phantoms(200, 80)["images"], held_out["images"]
    settings = dict(
        steps=20, batch_size=16, learning_rate=1e-3, seed=0, trunk_levels=2, n_boot=200, level=0.95
    )
    settings["inference_batch_size"] = INFERENCE_BATCH
    obvious = two_sample_auroc(train[:40], 255 - train[40:], test[:40], 255 - test[40:], **settings)
    same = two_sample_auroc(train[:40], train[40:], test[:40], test[40:], **settings)
    print(
        f"\ntwo-sample AUROC: real vs inverted {obvious.auroc:.3f} [{obvious.low:.3f}, "
        f"{obvious.high:.3f}]; real vs real {same.auroc:.3f} [{same.low:.3f}, {same.high:.3f}]"
    )
    assert obvious.auroc > 0.95
    assert same.low < 0.5 < same.high


def test_landmark_table_has_every_landmark_and_the_geometry(
    teacher: Path, held_out: dict[str, np.ndarray]
) -> None:
    model = load_landmark_model(teacher)
    table = landmark_table(
        model,
        held_out["images"][:5],
        [f"img{i}" for i in range(5)],
        ["left"] * 4 + [""],
        curvature_thresholds_deg=THRESHOLDS_DEG,
        batch_size=INFERENCE_BATCH,
    )
    assert table.columns[:4].tolist() == [
        "image_id",
        "c2_centroid_x",
        "c2_centroid_y",
        "c2_centroid_confidence",
    ]
    assert len(table.columns) == 1 + 3 * 23 + 2 + 10
    xy = np.stack(
        [
            table[[label_column(label, axis) for label in KEYPOINT_LABELS]].to_numpy()
            for axis in ("x", "y")
        ],
        axis=-1,
    )
    error = np.hypot(*(xy - held_out["keypoints"][:5]).transpose(2, 0, 1)).mean()
    assert error < 1.5  # px: the teacher's held-out MRE is below 1 px
    assert table["c2_c7_angle_deg"].isna().tolist() == [False] * 4 + [True]
    with pytest.raises(ValueError, match="4 image ids for 5 images"):
        landmark_table(
            model,
            held_out["images"][:5],
            ["a"] * 4,
            ["left"] * 5,
            curvature_thresholds_deg=THRESHOLDS_DEG,
            batch_size=INFERENCE_BATCH,
        )
