"""Tests of the plausibility screen and the screening manifests (radsynth.audit.plausibility,
radsynth.audit.screening, `radsynth screen`).

The screen is fitted on left-facing demo phantoms only. Implausible images are planted by
corrupting other, held-out phantoms the three ways the paper's reviewers excluded samples for;
the screen never sees a corrupted image before it is scored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import BETAS, PROVENANCE, gathered_set, shard_kwargs, tiny_unet
from PIL import Image
from sklearn.metrics import roc_auc_score

from radsynth.audit.plausibility import (
    fit_plausibility,
    intensity_statistics,
    load_model,
    save_model,
)
from radsynth.audit.scoring import (
    PLAUSIBILITY_MODEL_NAME,
    TILES_PER_PAGE,
    left_facing_sample_set,
    screen_gathered_sets,
    screening_manifest,
    write_screening,
)
from radsynth.audit.screening import (
    AUTOMATED,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    SAMPLE_COLUMNS,
    counts_table,
    merge_reviews,
    merge_screening,
    plot_counts,
    read_manifest,
    screened_manifests,
    write_manifest,
)
from radsynth.cli import main
from radsynth.core.settings import preset
from radsynth.core.settings.sample import Architecture
from radsynth.core.tables import read_table, read_table_provenance, write_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.preprocess import to_uint8
from radsynth.data.resize import map_keypoints, resize_image
from radsynth.demo.phantom import render_phantom, sample_params
from radsynth.sample.facing import new_classifier, save_classifier
from radsynth.sample.gather import gather_checkpoint
from radsynth.sample.sampler import sample_shard
from radsynth.sample.store import open_left_facing

#: The demo preset's screen: the settings and threshold the screen is documented with.
DEMO_SCREEN = preset("config.yaml").audit.screen
DEMO_SCREEN_SETTINGS, DEMO_SCREEN_THRESHOLD = DEMO_SCREEN.settings, DEMO_SCREEN.threshold

SIZE = 32  # the demo's preprocessed size
N_FIT, N_HELD = 200, 50
CORNER_LEVELS = 5  # C3..C7, four corners each, after C2's centroid and two lower corners


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def phantoms(n: int, seed: int, facing: str = "left") -> tuple[np.ndarray, np.ndarray]:
    """Demo phantoms drawn facing `facing`, resized to SIZE px like preprocessing does, with
    keypoints."""
    images, keypoints = [], []
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        params = dataclasses.replace(
            sample_params(rng, min_side=96, max_side=160, negative=False), facing=facing
        )
        phantom = render_phantom(rng, params)
        resized, affine = resize_image(phantom.image, SIZE, "resize")
        images.append(to_uint8(resized))
        keypoints.append(
            map_keypoints(np.array([phantom.keypoints[label] for label in KEYPOINT_LABELS]), affine)
        )
    return np.stack(images), np.stack(keypoints)


# ---------------------------------------------------------------------- planted implausible anatomy


def level_centres(points: np.ndarray) -> np.ndarray:
    """C2 centroid, then the mean of each of C3..C7's four corners."""
    return np.array(
        [
            points[0],
            *(points[3 + 4 * level : 7 + 4 * level].mean(axis=0) for level in range(CORNER_LEVELS)),
        ]
    )


def body_depth(points: np.ndarray) -> float:
    corners = points[3:].reshape(
        CORNER_LEVELS, 4, 2
    )  # top left, top right, bottom left, bottom right
    return float(
        np.mean(
            np.linalg.norm(
                corners[:, [1, 3]].mean(axis=1) - corners[:, [0, 2]].mean(axis=1), axis=1
            )
        )
    )


def spine_axis(points: np.ndarray, y: float) -> float:
    """x of the line through the vertebral bodies at row y (straight beyond C2 and C7)."""
    centres = level_centres(points)
    if centres[0, 1] <= y <= centres[-1, 1]:
        return float(np.interp(y, centres[:, 1], centres[:, 0]))
    return float(np.polyval(np.polyfit(centres[:, 1], centres[:, 0], 1), y))


def level_boundaries(points: np.ndarray) -> np.ndarray:
    """Rows between vertebrae: above the dens, the mid-disc lines C2/C3 .. C6/C7, below C7."""
    depth = body_depth(points)
    c2_bottom = points[1:3, 1].mean()
    corners = points[3:].reshape(CORNER_LEVELS, 4, 2)
    tops, bottoms = corners[:, :2, 1].mean(axis=1), corners[:, 2:, 1].mean(axis=1)
    discs = (np.r_[c2_bottom, bottoms[:-1]] + tops) / 2
    return np.r_[
        points[0, 1] - (c2_bottom - points[0, 1]) - 0.7 * depth, discs, bottoms[-1] + 0.15 * depth
    ]


def mirror_rows(image: np.ndarray, rows: range, span) -> np.ndarray:
    """Each row mirrored in place over the x span (low, high) that `span(y)` gives."""
    out = image.copy()
    for y in rows:
        low, high = span(y)
        xs = np.arange(max(0, int(np.floor(low))), min(image.shape[1] - 1, int(np.ceil(high))) + 1)
        out[y, xs] = image[y, np.clip(np.rint(low + high - xs).astype(int), 0, image.shape[1] - 1)]
    return out


def airway_behind_spine(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Below the skull, the neck mirrored about the spine within 3 body depths: the pharynx and
    trachea now lie posterior to the spine, the face still anterior."""
    depth, top = body_depth(points), int(round(level_boundaries(points)[0]))
    return mirror_rows(
        image,
        range(max(top, 0), image.shape[0]),
        lambda y: (spine_axis(points, y) - 3 * depth, spine_axis(points, y) + 3 * depth),
    )


def elements_swapped(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The bony column (front of the bodies to the spinous tips) mirrored in place: bodies behind,
    posterior elements in front, airway and soft tissue untouched."""
    depth, bounds = body_depth(points), np.rint(level_boundaries(points)).astype(int)
    return mirror_rows(
        image,
        range(max(bounds[0], 0), min(bounds[-1], image.shape[0])),
        lambda y: (spine_axis(points, y) - depth / 2, spine_axis(points, y) + 2.7 * depth),
    )


def order_scrambled(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The spine cut into one band per vertebra (C2..C7) at the mid-disc rows, the bands shuffled
    so that C2 is no longer on top."""
    depth = body_depth(points)
    bounds = np.clip(np.rint(level_boundaries(points)).astype(int), 0, image.shape[0])
    axis = [spine_axis(points, y) for y in range(bounds[0], bounds[-1])]
    low, high = (
        max(0, int(np.floor(min(axis) - 0.9 * depth))),
        min(image.shape[1], int(np.ceil(max(axis) + 3 * depth))),
    )
    bands = [image[bounds[i] : bounds[i + 1], low:high] for i in range(len(bounds) - 1)]
    order = rng.permutation(len(bands))
    while order[0] == 0:
        order = rng.permutation(len(bands))
    out = image.copy()
    out[bounds[0] : bounds[-1], low:high] = np.concatenate([bands[i] for i in order])
    return out


@pytest.fixture(scope="module")
def screen():
    """The screen fitted on N_FIT phantoms; N_HELD other phantoms kept plausible, N_HELD more
    corrupted."""
    real, _ = phantoms(N_FIT, seed=1)
    held, held_points = phantoms(2 * N_HELD, seed=2)
    model = fit_plausibility(
        real,
        [f"real{i:03d}" for i in range(N_FIT)],
        settings=DEMO_SCREEN_SETTINGS,
        fitted_on={"atlas": "demo phantoms, seed 1", "orientation": "drawn left-facing"},
    )
    rng = np.random.default_rng(0)
    pairs = list(zip(held[N_HELD:], held_points[N_HELD:]))
    corrupted = {
        "airway behind spine": np.stack(
            [airway_behind_spine(image, points) for image, points in pairs]
        ),
        "elements swapped": np.stack([elements_swapped(image, points) for image, points in pairs]),
        "order scrambled": np.stack(
            [order_scrambled(image, points, rng) for image, points in pairs]
        ),
    }
    return model, real, held[:N_HELD], corrupted


@pytest.mark.parametrize(
    "corruption", ["airway behind spine", "elements swapped", "order scrambled"]
)
def test_screen_ranks_planted_implausible_anatomy_below_held_out_real_images(screen, corruption):
    model, _, plausible, corrupted = screen
    plausibility = np.r_[
        model.score(plausible, chunk_size=16).plausibility,
        model.score(corrupted[corruption], chunk_size=16).plausibility,
    ]
    implausible = np.r_[np.zeros(N_HELD), np.ones(N_HELD)]
    assert roc_auc_score(implausible, -plausibility) >= 0.9


def test_held_out_real_images_score_about_uniformly(screen):
    """Calibration: plausibility is the share of real images less typical, so held-out real ones
    spread over [0, 1] and few fall below the default threshold."""
    model, _, plausible, _ = screen
    plausibility = model.score(plausible, chunk_size=16).plausibility
    assert 0.0 <= plausibility.min() and plausibility.max() <= 1.0
    assert 0.3 <= np.median(plausibility) <= 0.8
    assert np.mean(plausibility < DEMO_SCREEN_THRESHOLD) <= 0.15


def test_model_file_round_trip_and_description(screen, tmp_path):
    model, real, plausible, _ = screen
    save_model(model, tmp_path / "screen.npz")
    loaded = load_model(tmp_path / "screen.npz")
    before, after = model.score(plausible, chunk_size=16), loaded.score(plausible, chunk_size=16)
    np.testing.assert_array_equal(before.plausibility, after.plausibility)
    assert before.nearest_real_id == after.nearest_real_id
    assert (
        loaded.description["n_real"] == N_FIT
        and len(loaded.description["real_images_digest"]) == 64
    )
    assert loaded.description["settings"] == DEMO_SCREEN_SETTINGS.model_dump(mode="json")
    assert loaded.description["fitted_on"]["atlas"] == "demo phantoms, seed 1"
    (tmp_path / "other.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="other.npz"):
        load_model(tmp_path / "other.npz")


def test_real_images_are_their_own_nearest_real_image(screen):
    model, real, _, _ = screen
    scores = model.score(real[:5], chunk_size=2)
    assert scores.nearest_real_id == ["real000", "real001", "real002", "real003", "real004"]
    np.testing.assert_allclose(scores.nearest_real_similarity, 1.0, atol=1e-5)


# -------------------------------------------------------------------- manifest and contact sheets


def sample_table(n: int, checkpoint: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"{checkpoint}_{i:06d}" for i in range(n)],
            "checkpoint": checkpoint,
            "shard": "shard0.zarr",
            "index": np.arange(n),
            "seed": 1000 + np.arange(n),
            "flipped": np.arange(n) % 3 == 0,
        }
    )


@pytest.fixture(scope="module")
def written(screen, tmp_path_factory):
    """50 left-facing images (the held-out plausible ones) screened into a folder holding a stale
    page."""
    model, _, plausible, _ = screen
    out = tmp_path_factory.mktemp("screening")
    (out / "contact_page009.png").write_bytes(b"left over from a longer run")
    manifest = write_screening(
        sample_table(N_HELD, "ckpt034"),
        plausible,
        model,
        out,
        threshold=0.2,
        chunk_size=16,
        title="ckpt034",
        provenance={"test": "screening"},
    )
    return out, manifest, plausible


def test_manifest_has_one_row_per_image_scores_and_empty_reviewer_columns(written):
    out, manifest, images = written
    stored = read_manifest(out / MANIFEST_NAME)
    assert list(stored.columns) == [
        "row",
        "image_id",
        "checkpoint",
        "shard",
        "index",
        "seed",
        "flipped",
        "plausibility",
        "atypical_x",
        "atypical_y",
        "nearest_real_id",
        "nearest_real_similarity",
        "mean",
        "std",
        "p01",
        "p99",
        "proposed",
        "decision",
        "reason",
        "reviewer",
    ]
    assert list(stored.columns) == list(MANIFEST_COLUMNS)
    assert len(stored) == N_HELD and list(stored["row"]) == list(range(1, N_HELD + 1))
    assert list(stored["image_id"]) == [f"ckpt034_{i:06d}" for i in range(N_HELD)]
    assert (stored[["decision", "reason", "reviewer"]] == "").all().all()
    assert list(stored["proposed"]) == [
        "exclude" if p < 0.2 else "include" for p in stored["plausibility"]
    ]
    assert stored["nearest_real_id"].str.fullmatch(r"real\d{3}").all()
    assert stored["flipped"].tolist() == [i % 3 == 0 for i in range(N_HELD)]
    expected = intensity_statistics(images[:1]).iloc[0]
    first = stored.iloc[0]
    assert (
        first["mean"]
        == pytest.approx(images[0].mean(), abs=1e-3)
        == pytest.approx(expected["mean"], abs=1e-3)
    )
    assert first["p99"] == pytest.approx(np.percentile(images[0], 99), abs=1e-3)


def test_manifest_refuses_a_threshold_outside_0_1_and_a_short_sample_table(screen):
    model, _, plausible, _ = screen
    with pytest.raises(ValueError, match="threshold 1.5"):
        screening_manifest(sample_table(3, "c"), plausible[:3], model, threshold=1.5, chunk_size=4)
    with pytest.raises(ValueError, match="2 sample rows for 3 images"):
        screening_manifest(sample_table(2, "c"), plausible[:3], model, threshold=0.1, chunk_size=4)


def test_contact_pages_number_their_rows_as_the_manifest_does(written):
    out, manifest, _ = written
    pages = sorted(out.glob("contact_page*.png"))
    assert [page.name for page in pages] == [
        "contact_page001.png",
        "contact_page002.png",
    ]  # stale page 009 removed
    assert TILES_PER_PAGE == 48
    for page, (first, last) in zip(pages, [(1, 48), (49, 50)]):
        with Image.open(page) as image:
            text = dict(image.text)
        assert text["rows"] == f"{first}-{last}"
        shown = manifest[manifest["row"].between(first, last)]
        assert text["image_ids"].split() == list(shown["image_id"])
        assert '"test": "screening"' in text["provenance"]


# ----------------------------------------------------------------------------- reviews


def small_manifest() -> pd.DataFrame:
    """Six screened images of two checkpoints; the screen proposes excluding img3 and img5."""
    return pd.DataFrame(
        {
            "row": range(1, 7),
            "image_id": [f"img{i}" for i in range(1, 7)],
            "checkpoint": ["ckpt034"] * 4 + ["ckpt040"] * 2,
            "shard": "shard0.zarr",
            "index": range(6),
            "seed": range(6),
            "flipped": False,
            "plausibility": [0.5, 0.4, 0.01, 0.3, 0.02, 0.9],
            "atypical_x": 0.5,
            "atypical_y": 0.5,
            "nearest_real_id": "real000",
            "nearest_real_similarity": 0.9,
            "mean": 100.0,
            "std": 40.0,
            "p01": 3.0,
            "p99": 250.0,
            "proposed": ["include", "include", "exclude", "include", "exclude", "include"],
            "decision": "",
            "reason": "",
            "reviewer": "",
        }
    )


def reviewed(manifest: pd.DataFrame, decisions: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """A reviewer's copy: decision, reason and reviewer filled in for some images."""
    copy = manifest.copy()
    for image, (decision, reason, reviewer) in decisions.items():
        copy.loc[copy["image_id"] == image, ["decision", "reason", "reviewer"]] = [
            decision,
            reason,
            reviewer,
        ]
    return copy


@pytest.fixture
def two_reviews(tmp_path) -> tuple[pd.DataFrame, list[Path]]:
    """alice and bob disagree on img3; alice's copy keeps the provenance lines, bob's spreadsheet
    dropped them and typed 'Exclude'."""
    manifest = small_manifest()
    alice = reviewed(
        manifest,
        {
            "img1": ("exclude", "pharynx posterior to the spine", "alice"),
            "img2": ("include", "", "alice"),
            "img3": ("exclude", "C2 below C4", "alice"),
        },
    )
    bob = reviewed(
        manifest,
        {
            "img3": ("include", "looks fine", "bob"),
            "img4": (" Exclude ", "posterior elements in front", "bob"),
        },
    )
    write_table(alice, tmp_path / "alice.csv", provenance={"copied from": "screening_manifest.csv"})
    bob.to_csv(tmp_path / "bob.csv", index=False)
    return manifest, [tmp_path / "alice.csv", tmp_path / "bob.csv"]


def test_merge_of_two_reviewers_human_decisions_win_and_conflicts_are_excluded(two_reviews):
    manifest, files = two_reviews
    merged, conflicts = merge_reviews(manifest, files)
    assert list(merged["final_decision"]) == [
        "exclude",
        "include",
        "exclude",
        "exclude",
        "exclude",
        "include",
    ]
    assert list(merged["decided_by"]) == [
        "alice",
        "alice",
        "alice;bob",
        "bob",
        AUTOMATED,
        AUTOMATED,
    ]
    assert list(merged["conflict"]) == [False, False, True, False, False, False]
    assert list(merged["reasons"]) == [
        "alice: pharynx posterior to the spine",
        "",
        "alice: C2 below C4; bob: looks fine",
        "bob: posterior elements in front",
        "",
        "",
    ]
    assert list(merged.columns) == [
        "row",
        *SAMPLE_COLUMNS,
        "plausibility",
        "atypical_x",
        "atypical_y",
        "nearest_real_id",
        "nearest_real_similarity",
        "mean",
        "std",
        "p01",
        "p99",
        "proposed",
        "final_decision",
        "decided_by",
        "reasons",
        "conflict",
    ]
    assert conflicts[["image_id", "reviewer", "decision", "reason"]].values.tolist() == [
        ["img3", "alice", "exclude", "C2 below C4"],
        ["img3", "bob", "include", "looks fine"],
    ]
    assert list(conflicts.columns) == ["image_id", "reviewer", "decision", "reason", "file", "line"]
    assert list(conflicts["file"]) == [str(files[0]), str(files[1])]
    assert list(conflicts["line"]) == [
        5,
        4,
    ]  # alice's file: two provenance lines, the header, img1, img2, img3


def test_manifest_is_read_back_with_ids_as_text_and_blanks_kept(tmp_path):
    """Ids like '0001' stay text; with as_text every field is the text written."""
    manifest = small_manifest().assign(image_id=[f"{i:04d}" for i in range(1, 7)])
    path = write_manifest(manifest, tmp_path, provenance={})
    assert path == tmp_path / MANIFEST_NAME
    typed = read_manifest(path)
    assert typed.loc[0, ["image_id", "decision", "plausibility"]].tolist() == ["0001", "", 0.5]
    text = read_manifest(path, as_text=True)
    assert text.loc[0, ["image_id", "decision", "plausibility", "seed"]].tolist() == [
        "0001",
        "",
        "0.5",
        "0",
    ]


def test_a_manifest_without_review_columns_is_refused_naming_them(tmp_path):
    manifest = small_manifest().drop(columns=["decision", "reason"])
    with pytest.raises(ValueError) as error:
        write_manifest(manifest, tmp_path, provenance={})
    assert str(error.value) == "screening manifest lacks column(s) decision, reason"
    write_table(manifest, tmp_path / "copy.csv", provenance={})
    with pytest.raises(ValueError) as error:
        read_manifest(tmp_path / "copy.csv")
    assert str(error.value) == (
        f"{tmp_path / 'copy.csv'}: not a screening manifest (screening_manifest.csv), missing "
        "column(s) decision, reason"
    )


def test_a_conflict_is_excluded_whichever_decision_is_read_first(two_reviews):
    """bob's copy read first: his include of img3 comes before alice's exclude."""
    manifest, files = two_reviews
    merged, _ = merge_reviews(manifest, files[::-1])
    assert merged.loc[2, ["image_id", "final_decision", "conflict"]].tolist() == [
        "img3",
        "exclude",
        True,
    ]


def test_a_manifest_repeating_an_image_id_is_refused_naming_the_first_repeat(two_reviews):
    manifest, files = two_reviews
    repeated = manifest.assign(image_id=["img1", "img2", "img2", "img4", "img4", "img6"])
    with pytest.raises(ValueError) as error:
        merge_reviews(repeated, files)
    assert str(error.value) == "screening manifest repeats image id 'img2'"


def test_a_manifest_with_missing_decisions_has_none_filled_in(two_reviews):
    """pandas reads blank cells among text as NaN: missing is not a decision."""
    manifest, files = two_reviews
    decision = pd.Series(["", np.nan] * 3, dtype=object)
    merged, _ = merge_reviews(manifest.assign(decision=decision), files)
    assert list(merged["final_decision"]) == [
        "exclude",
        "include",
        "exclude",
        "exclude",
        "exclude",
        "include",
    ]


def test_without_reviews_the_screen_decides(two_reviews):
    manifest, _ = two_reviews
    merged, conflicts = merge_reviews(manifest, [])
    assert list(merged["final_decision"]) == list(manifest["proposed"])
    assert set(merged["decided_by"]) == {AUTOMATED} and conflicts.empty


def test_decisions_written_into_the_manifest_itself_are_refused(two_reviews):
    """The manifest is a workflow output, rewritten by the next run: reviews go into copies."""
    manifest, files = two_reviews
    with pytest.raises(
        ValueError, match="screening manifest row 2: a decision is filled in the manifest itself"
    ):
        merge_reviews(reviewed(manifest, {"img2": ("exclude", "", "carol")}), files)


def test_counts_table_like_table_s1(two_reviews):
    merged, _ = merge_reviews(*two_reviews)
    table = counts_table(merged)
    assert table.to_dict("records") == [
        {
            "checkpoint": "ckpt034",
            "generated": 4,
            "excluded": 3,
            "kept": 1,
            "excluded_by_reviewers": 3,
            "excluded_by_screen": 0,
        },
        {
            "checkpoint": "ckpt040",
            "generated": 2,
            "excluded": 1,
            "kept": 1,
            "excluded_by_reviewers": 0,
            "excluded_by_screen": 1,
        },
        {
            "checkpoint": "total",
            "generated": 6,
            "excluded": 4,
            "kept": 2,
            "excluded_by_reviewers": 3,
            "excluded_by_screen": 1,
        },
    ]


def test_merge_of_manifests_of_two_sets_writes_merged_conflicts_counts_and_figure(
    two_reviews, tmp_path
):
    """The workflow's merge: manifests of two sets, written as the screen writes them, with the
    reviewers' copies; outputs name the reviewed files."""
    manifest, files = two_reviews
    first, second = tmp_path / "sets/initial", tmp_path / "sets/large"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    write_table(manifest.iloc[:4], first / MANIFEST_NAME, provenance={"set": "initial"})
    write_table(
        manifest.iloc[4:].assign(row=[1, 2]), second / MANIFEST_NAME, provenance={"set": "large"}
    )
    out = tmp_path / "out"
    counts = merge_screening(
        [first / MANIFEST_NAME, second / MANIFEST_NAME],
        files,
        merged_csv=out / "merged.csv",
        conflicts_csv=out / "conflicts.csv",
        counts_csv=out / "counts.csv",
        counts_png=out / "counts.png",
        provenance={"config_hash": "abc"},
    )
    merged = read_table(out / "merged.csv")
    assert list(merged["image_id"]) == ["img1", "img2", "img3", "img4", "img5", "img6"]
    assert list(merged["final_decision"]) == [
        "exclude",
        "include",
        "exclude",
        "exclude",
        "exclude",
        "include",
    ]
    assert list(read_table(out / "conflicts.csv")["reviewer"]) == ["alice", "bob"]
    assert list(counts["kept"]) == [1, 1, 2] and list(
        read_table(out / "counts.csv")["excluded"]
    ) == [3, 1, 4]
    assert read_table_provenance(out / "merged.csv")["reviewed_files"] == f"{files[0]};{files[1]}"
    with Image.open(out / "counts.png") as figure:
        assert figure.text["provenance_config_hash"] == "abc"
    with pytest.raises(ValueError, match="^no screening manifests to merge$"):
        merge_screening(
            [],
            files,
            merged_csv=out / "m.csv",
            conflicts_csv=out / "c.csv",
            counts_csv=out / "n.csv",
            counts_png=out / "n.png",
            provenance={},
        )


def test_merge_without_reviewed_files_says_none_were_read(two_reviews, tmp_path):
    manifest, _ = two_reviews
    write_table(manifest, tmp_path / MANIFEST_NAME, provenance={})
    merge_screening(
        [tmp_path / MANIFEST_NAME],
        [],
        merged_csv=tmp_path / "merged.csv",
        conflicts_csv=tmp_path / "conflicts.csv",
        counts_csv=tmp_path / "counts.csv",
        counts_png=tmp_path / "counts.png",
        provenance={},
    )
    assert read_table_provenance(tmp_path / "merged.csv")["reviewed_files"] == "none"


def test_counts_table_keeps_checkpoints_in_first_seen_order():
    merged = pd.DataFrame(
        {
            "checkpoint": ["ckpt9", "ckpt1", "ckpt9"],
            "final_decision": ["exclude", "include", "include"],
            "decided_by": [AUTOMATED, "alice", AUTOMATED],
        }
    )
    assert counts_table(merged).values.tolist() == [
        ["ckpt9", 2, 1, 1, 0, 1],
        ["ckpt1", 1, 0, 1, 0, 0],
        ["total", 3, 1, 2, 0, 1],
    ]
    assert (counts_table(merged).drop(columns="checkpoint").dtypes == "int64").all()


#: The figure's colours (matplotlib's tab:green, tab:red, tab:orange) and what each bar part is.
BAR_COLOURS = {
    (44, 160, 44): "kept",
    (214, 39, 40): "excluded by reviewers",
    (255, 127, 14): "excluded by the screen",
}


def colour_runs(row: np.ndarray) -> list[tuple[str, int]]:
    """(part, length in pixels) of each run of one bar colour along a row of RGB pixels."""
    runs: list[tuple[str, int]] = []
    previous = None
    for pixel in map(tuple, row):
        part = BAR_COLOURS.get(pixel)
        if part is not None and part == previous:
            runs[-1] = (part, runs[-1][1] + 1)
        elif part is not None:
            runs.append((part, 1))
        previous = part
    return runs


def test_counts_figure_stacks_each_checkpoint_first_one_on_top(tmp_path):
    """Two checkpoints: ckpt9 kept 4, reviewers excluded 2, the screen 2; ckpt1 kept 6,
    reviewers excluded 2. Read back from the pixels: each bar's parts left to right and their
    lengths, the legend's patches top to bottom."""
    counts = pd.DataFrame(
        {
            "checkpoint": ["ckpt9", "ckpt1", "total"],
            "generated": [8, 8, 16],
            "excluded": [4, 2, 6],
            "kept": [4, 6, 10],
            "excluded_by_reviewers": [2, 2, 4],
            "excluded_by_screen": [2, 0, 2],
        }
    )
    path = plot_counts(counts, tmp_path / "counts.png", provenance={"config_hash": "abc"})
    with Image.open(path) as image:
        # 6.4 x (0.5 per checkpoint x 2 + 1.6) inches at 110 dpi
        assert image.size == (704, 286)
        assert image.text["Title"] == "screening counts"
        pixels = np.asarray(image.convert("RGB"))
    rows = [colour_runs(row) for row in pixels]
    bars = [runs for above, runs in zip([[], *rows], rows) if runs and runs != above]
    top, bottom = bars[0], bars[1]
    assert [part for part, _ in top] == ["kept", "excluded by reviewers", "excluded by the screen"]
    assert [part for part, _ in bottom] == ["kept", "excluded by reviewers"]
    # constrained layout trims the margins: the default ones leave the axes 77.5% of the width
    assert sum(length for _, length in top) > 0.85 * 704
    image_width = sum(length for _, length in top) / 8
    for (_, length), images in zip(top + bottom, [4, 2, 2, 6, 2]):
        assert abs(length - images * image_width) <= 2
    # legend patches: 2 font sizes (7 pt) long, 14 pt = 21.4 pixels at 110 dpi
    patches = [(part, length) for runs in rows for part, length in runs if 10 < length < 40]
    assert list(dict.fromkeys(part for part, _ in patches)) == list(BAR_COLOURS.values())
    assert all(abs(length - 14 * 110 / 72) < 1 for _, length in patches)


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def command_inputs(tmp_path_factory):
    """An atlas of 30 phantoms facing either way, an untrained (seeded) facing classifier and six
    PNG samples: what is checked is the command's bookkeeping, not how well it orients."""
    root = tmp_path_factory.mktemp("screen_cli")
    left, _ = phantoms(15, seed=3)
    right, _ = phantoms(15, seed=4, facing="right")
    names = [f"{i:07d}.png" for i in range(30)]
    write_atlas(root / "atlas.h5", atlas_from_images(np.concatenate([left, right]), names))
    save_classifier(
        new_classifier(Architecture(channels=(4, 8), analysis_size=16), image_size=SIZE, seed=3),
        root / "facing.safetensors",
    )
    pngs = root / "ckpt040"
    pngs.mkdir()
    samples, _ = phantoms(6, seed=5)
    for index, image in enumerate(samples):
        Image.fromarray(image, mode="L").save(pngs / f"sample{index}.png")
    return root


def test_screen_command_writes_the_manifest_pages_and_model(command_inputs, capsys):
    root = command_inputs
    out = root / "screened"
    status = main(
        [
            "screen",
            "--real",
            str(root / "atlas.h5"),
            "--synthetic",
            str(root / "ckpt040"),
            "--facing-classifier",
            str(root / "facing.safetensors"),
            "--out",
            str(out),
            "--threshold",
            "0.1",
        ]
    )
    assert status == 0
    manifest = read_manifest(out / MANIFEST_NAME)
    assert list(manifest["image_id"]) == [f"sample{i}" for i in range(6)]
    assert set(manifest["checkpoint"]) == {"ckpt040"}
    assert (
        (manifest[["shard", "index", "seed", "decision", "reason", "reviewer"]] == "").all().all()
    )
    assert manifest["nearest_real_id"].str.fullmatch(r"\d{7}\.png").all()
    assert [page.name for page in out.glob("contact_page*.png")] == ["contact_page001.png"]
    assert load_model(out / PLAUSIBILITY_MODEL_NAME).description["n_real"] == 30
    printed = capsys.readouterr().out
    assert printed.startswith("6 images screened (6 PNG files in ")
    assert (
        f"{int((manifest['proposed'] == 'exclude').sum())} proposed for exclusion "
        f"at plausibility < 0.1" in printed
    )
    assert f"{int(manifest['flipped'].sum())} mirrored to left-facing" in printed
    assert (
        main(
            [
                "screen",
                "--real",
                str(root / "atlas.h5"),
                "--synthetic",
                str(root / "ckpt040"),
                "--left-facing",
                "--facing-classifier",
                str(root / "facing.safetensors"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not read_manifest(out / MANIFEST_NAME)["flipped"].any()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--threshold": "1.5"}, "plausibility threshold 1.5 is not in [0, 1]"),
        ({"--synthetic": "missing"}, "missing: no such file or folder"),
        ({"--facing-classifier": "atlas.h5"}, "not a readable safetensors file"),
    ],
)
def test_screen_command_bad_input_is_one_line_and_status_2(command_inputs, capsys, change, message):
    root = command_inputs
    options = {
        "--real": "atlas.h5",
        "--synthetic": "ckpt040",
        "--facing-classifier": "facing.safetensors",
        "--out": "bad",
        **change,
    }
    arguments = ["screen"]
    for option, value in options.items():
        arguments += [option, value if option == "--threshold" else str(root / value)]
    status = main(arguments)
    error = capsys.readouterr().err
    assert (
        status == 2
        and error.count("\n") == 1
        and error.startswith("radsynth screen: error: ")
        and message in error
    )


def test_a_gathered_checkpoint_is_read_left_facing_in_manifest_order(tmp_path):
    """The workflow's path: the gather stage's manifest and shards, read in one pass, equal the
    sample stage's own left-facing reader image by image."""
    stores = []
    for shard, (first, count) in enumerate([(0, 3), (3, 2)]):
        stores.append(
            sample_shard(
                tiny_unet(),
                BETAS,
                tmp_path / f"shard{shard}.zarr",
                **shard_kwargs(
                    tmp_path,
                    checkpoint_label="initial/ckpt002",
                    base_seed=1,
                    shard_index=shard,
                    first_global_index=first,
                    n_images=count,
                    batch_size=3,
                    steps=2,
                ),
            )
        )
    save_classifier(
        new_classifier(Architecture(channels=(4, 8), analysis_size=16), image_size=16, seed=3),
        tmp_path / "facing.safetensors",
    )
    gather_checkpoint(
        stores,
        tmp_path / "facing.safetensors",
        tmp_path / "manifest.csv",
        checkpoint_label="ckpt002",
        batch_size=4,
        provenance=PROVENANCE,
        progress=False,
    )
    samples, images = left_facing_sample_set(tmp_path / "manifest.csv", "initial/ckpt002")
    reader = open_left_facing(tmp_path / "manifest.csv")
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    assert list(samples["image_id"]) == [f"initial-ckpt002_{g:06d}" for g in range(5)]
    assert list(samples["shard"]) == ["shard0.zarr"] * 3 + ["shard1.zarr"] * 2
    assert list(samples["index"]) == [0, 1, 2, 0, 1]
    assert set(samples["checkpoint"]) == {"initial/ckpt002"}
    assert list(samples["flipped"]) == list(reader.manifest["flipped"])
    for image, image_id in zip(images, samples["image_id"]):
        np.testing.assert_array_equal(image, reader[image_id])


def test_gathered_sets_are_screened_into_one_folder_per_set_and_checkpoint(tmp_path):
    """Two gathered sets of one checkpoint: each gets its manifest and contact sheets under its
    own label, ids never collide, and the merge finds both manifests."""
    torch.manual_seed(0)
    manifests = []
    for sample_set in ("initial", "large"):
        manifests.append(gathered_set(tmp_path / sample_set, sample_set))
    real, _ = phantoms(20, seed=4)
    settings = DEMO_SCREEN_SETTINGS.model_copy(
        update={"analysis_size": 8}
    )  # the tiny sampler's 16 px images
    model = fit_plausibility(
        real[:, ::2, ::2],
        [f"real{i:02d}" for i in range(20)],
        settings=settings,
        fitted_on={"atlas": "phantoms at 16 px", "orientation": "drawn left-facing"},
    )
    save_model(model, tmp_path / "model.npz")
    out = tmp_path / "screening"
    written = screen_gathered_sets(
        manifests,
        tmp_path / "model.npz",
        out,
        threshold=0.5,
        chunk_size=2,
        provenance={"config_hash": "abc"},
    )
    assert list(written) == ["initial/ckpt002", "large/ckpt002"]
    assert screened_manifests(out) == [
        out / "initial/ckpt002" / MANIFEST_NAME,
        out / "large/ckpt002" / MANIFEST_NAME,
    ]
    large = read_manifest(out / "large/ckpt002" / MANIFEST_NAME)
    assert list(large["image_id"]) == [
        "large-ckpt002_000000",
        "large-ckpt002_000001",
        "large-ckpt002_000002",
    ]
    assert [p.name for p in (out / "large/ckpt002/contact_sheets").iterdir()] == [
        "contact_page001.png"
    ]
    assert read_table_provenance(out / "initial/ckpt002" / MANIFEST_NAME)["sample_manifest"] == str(
        manifests[0]
    )
    with pytest.raises(
        ValueError, match="holds no <sample set>/<checkpoint>/screening_manifest.csv"
    ):
        screened_manifests(tmp_path / "initial")
