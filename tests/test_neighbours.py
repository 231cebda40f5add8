"""Cosine nearest neighbours (radsynth.audit.neighbours): the pruned top-pairs search and the
chunked nearest-real search.

Expected values come from references written out here (a full-matrix numpy search, cosines set
by hand, imagededup's own `find_duplicates`), never from the code under test. Arrays are tiny, so
the file runs in seconds (it is the neighbours module's covering file in `make mutate`).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from radsynth.audit import neighbours
from radsynth.audit.encoders import random_encoder_for_tests
from radsynth.audit.neighbours import nearest_real, rounding_margin, top_pairs


def brute_force_pairs(real: np.ndarray, synthetic: np.ndarray, k: int) -> pd.DataFrame:
    """Every real x synthetic cosine similarity in one float64 matrix, rounded to float32 as
    top_pairs reports them (so pairs of one direction tie exactly whatever the BLAS summation
    order), sorted best first, ties by real then synthetic index."""
    unit_real = real / np.linalg.norm(real, axis=1, keepdims=True)
    unit_synthetic = synthetic / np.linalg.norm(synthetic, axis=1, keepdims=True)
    similarity = (unit_real @ unit_synthetic.T).astype(np.float32)
    real_index, synthetic_index = np.meshgrid(
        np.arange(len(real)), np.arange(len(synthetic)), indexing="ij"
    )
    frame = pd.DataFrame(
        {
            "real_index": real_index.ravel(),
            "synthetic_index": synthetic_index.ravel(),
            "similarity": similarity.ravel(),
        }
    )
    return (
        frame.sort_values(
            ["similarity", "real_index", "synthetic_index"], ascending=[False, True, True]
        )
        .head(k)
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------- chunked search


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 51, 500])
def test_top_pairs_equals_a_full_matrix_search(chunk_size):
    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(size=(40, 24)), rng.normal(size=(50, 24))
    found = top_pairs(real, synthetic, k=25, chunk_size=chunk_size)
    expected = brute_force_pairs(real, synthetic, 25)
    assert list(found.columns) == ["rank", "real_index", "synthetic_index", "similarity"]
    assert found.dtypes.to_dict() == {
        "rank": np.int64,
        "real_index": np.int64,
        "synthetic_index": np.int64,
        "similarity": np.float32,
    }
    assert found["rank"].tolist() == list(range(1, 26))
    np.testing.assert_array_equal(found["real_index"], expected["real_index"])
    np.testing.assert_array_equal(found["synthetic_index"], expected["synthetic_index"])
    np.testing.assert_allclose(found["similarity"], expected["similarity"], atol=1e-6)


def tied_group_across_chunks(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three real and six synthetic rows of one random 256-d direction, scaled by powers of two
    (so their unit rows are equal in float32 and float64 alike): 18 pairs of similarity 1, tied,
    with the synthetic ones spread over the 16-row chunks."""
    rng = np.random.default_rng(seed)
    real, synthetic = rng.normal(size=(60, 256)), rng.normal(size=(90, 256))
    direction = rng.normal(size=256)
    real[[4, 23, 41]] = direction * np.array([[1.0], [2.0], [0.5]])
    synthetic[[3, 20, 38, 52, 71, 88]] = direction * np.array(
        [[1.0], [4.0], [0.25], [2.0], [0.5], [8.0]]
    )
    return real, synthetic


@pytest.mark.parametrize("gather_limit", [0.0, 1.0])
def test_a_tied_group_cut_by_k_keeps_the_lowest_indices_on_either_path(monkeypatch, gather_limit):
    """k = 10 cuts the 18 tied pairs: the 10 kept are real rows 4 and 23 with every synthetic row
    (4 x 6 - 2). Pairs of later chunks enter only if the search keeps pairs whose float32
    similarity or bound rounds just below the running k-th best, which is what the rounding
    margin is for; whether a seed rounds down is luck, hence twelve seeds."""
    monkeypatch.setattr("radsynth.audit.neighbours.GATHER_LIMIT", gather_limit)
    tied = [(r, s) for r in (4, 23, 41) for s in (3, 20, 38, 52, 71, 88)][:10]
    for seed in range(12):
        real, synthetic = tied_group_across_chunks(seed)
        expected = brute_force_pairs(real, synthetic, 10)
        assert list(zip(expected["real_index"], expected["synthetic_index"])) == tied
        found = top_pairs(real, synthetic, k=10, chunk_size=16)
        assert list(zip(found["real_index"], found["synthetic_index"])) == tied, seed
        np.testing.assert_allclose(found["similarity"], expected["similarity"], atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 10])
def test_ties_go_to_the_lower_real_then_synthetic_index_whatever_the_chunks(chunk_size):
    """Three synthetic copies of one vector and two real ones: six pairs of equal similarity."""
    direction, other = np.array([1.0, 2.0, 3.0]), np.array([3.0, -1.0, 0.5])
    real = np.stack([other, direction, other * 2, direction])
    synthetic = np.stack([direction, other * -1, direction, direction])
    found = top_pairs(real, synthetic, k=5, chunk_size=chunk_size)
    assert list(zip(found["real_index"], found["synthetic_index"])) == [
        (1, 0),
        (1, 2),
        (1, 3),
        (3, 0),
        (3, 2),
    ]


def test_k_larger_than_the_number_of_pairs_returns_every_pair():
    rng = np.random.default_rng(1)
    found = top_pairs(rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), k=100, chunk_size=1)
    assert len(found) == 6 and found["similarity"].is_monotonic_decreasing


def energy_skewed_with_copies(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real rows with most energy in 8 of 64 coordinates, as real embeddings have; synthetic rows
    0, 10, 20, ... copy real rows with noise, and one copy differs from its real row in the
    low-energy coordinates only (where the first pass does not look)."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(8, 5.0), np.full(56, 0.5)]
    real = rng.normal(size=(300, 64)) * scale
    synthetic = rng.normal(size=(600, 64)) * scale
    synthetic[0:300:10] = real[:30] + 0.3 * rng.normal(size=(30, 64))
    synthetic[5] = real[40]
    synthetic[5, 8:] = -real[40, 8:]
    return real, synthetic


@pytest.mark.parametrize("gather_limit", [0.0, 1.0])
@pytest.mark.parametrize("chunk_size", [7, 64, 1000])
def test_pruned_search_equals_the_full_matrix_on_either_path(monkeypatch, gather_limit, chunk_size):
    """GATHER_LIMIT 0 sends every chunk through the full product; 1 gathers every pair the bound
    keeps."""
    monkeypatch.setattr("radsynth.audit.neighbours.GATHER_LIMIT", gather_limit)
    real, synthetic = energy_skewed_with_copies(4)
    found = top_pairs(real, synthetic, k=40, chunk_size=chunk_size)
    expected = brute_force_pairs(real, synthetic, 40)
    np.testing.assert_array_equal(found["real_index"], expected["real_index"])
    np.testing.assert_array_equal(found["synthetic_index"], expected["synthetic_index"])
    np.testing.assert_allclose(found["similarity"], expected["similarity"], atol=1e-6)


def test_the_bound_skips_pairs_that_cannot_reach_the_running_best():
    """Once the 30 near copies are held, a chunk of unrelated rows has no pair left to finish."""
    real, synthetic = energy_skewed_with_copies(5)
    real_unit = neighbours.unit_matrix(real, "real", 100)
    order = torch.argsort(real_unit.square().sum(dim=0), descending=True)
    unrelated = neighbours.unit_rows(synthetic[301:401], "synthetic", 301)
    split = neighbours._split(real_unit, order, 16)
    best_copy = float(brute_force_pairs(real, synthetic, 30)["similarity"].iloc[-1])
    rows, cols = neighbours._chunk_candidates(
        neighbours._split(unrelated, order, 16),
        split,
        30,
        best_copy,
        neighbours.rounding_margin(64),
    )
    full = (unrelated @ real_unit.T).numpy()
    assert full.max() < best_copy and len(rows) < full.size / 10


def cauchy_schwarz_bounds(real: np.ndarray, synthetic: np.ndarray, head: int) -> np.ndarray:
    """Every pair's head dot product (over the `head` coordinates of most real energy) plus the
    product of the two tails' norms, in float64 numpy: the bound the first pass prunes with."""
    unit_real = real / np.linalg.norm(real, axis=1, keepdims=True)
    unit_synthetic = synthetic / np.linalg.norm(synthetic, axis=1, keepdims=True)
    order = np.argsort(-np.square(unit_real).sum(axis=0), kind="stable")
    leading, trailing = order[:head], order[head:]
    tails = np.outer(
        np.linalg.norm(unit_synthetic[:, trailing], axis=1),
        np.linalg.norm(unit_real[:, trailing], axis=1),
    )
    return unit_synthetic[:, leading] @ unit_real[:, leading].T + tails


def test_the_first_pass_keeps_exactly_the_pairs_whose_bound_reaches_the_floor():
    """The gather path's candidates are the pairs whose head + |tail| |tail| bound (written out in
    numpy) reaches floor - margin. The floor is set in the widest gap between the 100th and 300th
    largest bounds (of 30,000, fewer than GATHER_LIMIT's 1/32), so float32 rounding cannot move a
    pair across it."""
    real, synthetic = energy_skewed_with_copies(5)
    unrelated = synthetic[301:401]
    bounds = cauchy_schwarz_bounds(real, unrelated, 16)
    ranked = np.sort(bounds, axis=None)[::-1]
    gaps = ranked[99:299] - ranked[100:300]
    kept = 100 + int(np.argmax(gaps))
    assert gaps.max() > 1e-4
    margin = neighbours.rounding_margin(64)
    floor = (ranked[kept - 1] + ranked[kept]) / 2 + margin
    real_unit = neighbours.unit_matrix(real, "real", 100)
    order = torch.argsort(real_unit.square().sum(dim=0), descending=True, stable=True)
    rows, cols = neighbours._chunk_candidates(
        neighbours._split(neighbours.unit_rows(unrelated, "synthetic", 301), order, 16),
        neighbours._split(real_unit, order, 16),
        30,
        floor,
        margin,
    )
    expected = set(zip(*np.nonzero(bounds >= floor - margin)))
    assert len(expected) == kept
    assert set(zip(rows.tolist(), cols.tolist())) == expected


def test_a_later_pair_between_the_kth_and_the_best_held_pairs_enters():
    """k = 2 over one real row (1, 0) and synthetic rows at cosines 0.9, 0.5, 0.7, one per chunk:
    the third (0.7) beats the held 0.5, so the result is rows 0 and 2."""
    cosines = np.array([0.9, 0.5, 0.7])
    synthetic = np.stack([cosines, np.sqrt(1 - cosines**2)], axis=1)
    found = top_pairs(np.array([[1.0, 0.0]]), synthetic, k=2, chunk_size=1)
    assert found["synthetic_index"].tolist() == [0, 2]
    np.testing.assert_allclose(found["similarity"], [0.9, 0.7], atol=1e-6)


@pytest.mark.parametrize("gather_limit", [0.0, 1 / 32, 1.0])
def test_ties_are_kept_on_either_path(monkeypatch, gather_limit):
    """One direction in three real and four synthetic rows spread over chunks."""
    monkeypatch.setattr("radsynth.audit.neighbours.GATHER_LIMIT", gather_limit)
    rng = np.random.default_rng(6)
    real, synthetic = rng.normal(size=(50, 32)), rng.normal(size=(80, 32))
    direction = rng.normal(size=32)
    real[[3, 17, 40]] = direction * [[1.0], [2.0], [0.5]]
    synthetic[[2, 30, 55, 79]] = direction * [[3.0], [1.0], [1.5], [0.25]]
    found = top_pairs(real, synthetic, k=12, chunk_size=16)
    assert list(zip(found["real_index"], found["synthetic_index"])) == [
        (r, s) for r in (3, 17, 40) for s in (2, 30, 55, 79)
    ]
    assert found["similarity"].nunique() == 1


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_nearest_real_equals_the_argmax_of_the_full_matrix(chunk_size):
    rng = np.random.default_rng(2)
    real, synthetic = rng.normal(size=(30, 8)), rng.normal(size=(13, 8)).astype(np.float32)
    index, similarity = nearest_real(real, synthetic, chunk_size=chunk_size)
    full = (real / np.linalg.norm(real, axis=1, keepdims=True)) @ (
        synthetic / np.linalg.norm(synthetic, axis=1, keepdims=True)
    ).T
    np.testing.assert_array_equal(index, full.argmax(axis=0))
    np.testing.assert_allclose(similarity, full.max(axis=0), atol=1e-6)
    assert index.dtype == np.int64 and similarity.dtype == np.float32


@pytest.mark.parametrize(
    ("real", "synthetic", "k", "message"),
    [
        (
            np.ones((3, 4)),
            np.ones((2, 5)),
            1,
            "real embeddings have 4 dimensions, synthetic ones 5",
        ),
        (np.ones(4), np.ones((2, 4)), 1, "real embeddings must be a non-empty 2-D array"),
        (
            np.ones((3, 4)),
            np.zeros((0, 4)),
            1,
            "synthetic embeddings must be a non-empty 2-D array",
        ),
        (
            np.ones((3, 4)),
            np.ones((5, 4)) * [[1], [1], [1], [0], [1]],
            1,
            "synthetic embedding row 3 is a zero vector",
        ),
        (
            np.ones((3, 4)),
            np.where(np.arange(8).reshape(2, 4) == 6, np.nan, 1.0),
            1,
            "synthetic embedding row 1 holds a non-finite value",
        ),
        (
            np.ones((3, 4)) * [[1], [0], [1]],
            np.ones((2, 4)),
            1,
            "real embedding row 1 is a zero vector",
        ),
        (np.ones((3, 4)), np.ones((2, 4)), 0, "k must be at least 1"),
        (np.full((3, 4), "a"), np.ones((2, 4)), 1, "real embeddings must be numeric"),
    ],
)
def test_bad_embeddings_fail_naming_what_is_wrong(real, synthetic, k, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        top_pairs(real, synthetic, k=k, chunk_size=2)


def test_non_finite_rows_are_counted_within_their_chunk():
    synthetic = np.ones((7, 3))
    synthetic[4, 1], synthetic[5, 0] = np.inf, np.nan
    with pytest.raises(
        ValueError,
        match=r"^synthetic embedding row 4 holds a non-finite value \(2 such row\(s\) in rows "
        r"4\.\.6\)$",
    ):
        top_pairs(np.ones((2, 3)), synthetic, k=1, chunk_size=4)
    synthetic[4] = 1.0
    with pytest.raises(
        ValueError,
        match=r"^synthetic embedding row 5 holds a non-finite value \(1 such row\(s\) in rows "
        r"4\.\.6\)$",
    ):
        nearest_real(np.ones((2, 3)), synthetic, chunk_size=4)
    with pytest.raises(
        ValueError,
        match=r"^real embedding row 5 is a zero vector: its cosine similarity is undefined$",
    ):
        nearest_real(np.ones((7, 3)) * (np.arange(7) != 5)[:, None], np.ones((2, 3)), chunk_size=4)
    real = np.ones((7, 3))
    real[5, 2], real[6, 0] = np.nan, -np.inf
    with pytest.raises(
        ValueError,
        match=r"^real embedding row 5 holds a non-finite value \(2 such row\(s\) in rows "
        r"4\.\.6\)$",
    ):
        top_pairs(real, np.ones((2, 3)), k=1, chunk_size=4)


def test_search_parameters_and_embedding_shapes_are_checked():
    with pytest.raises(ValueError, match=r"^chunk_size must be at least 1, got 0$"):
        top_pairs(np.ones((2, 3)), np.ones((2, 3)), k=1, chunk_size=0)
    with pytest.raises(
        ValueError,
        match=re.escape("real embeddings must be a non-empty 2-D array (N, D), got shape (2, 0)"),
    ):
        nearest_real(np.ones((2, 0)), np.ones((2, 3)), chunk_size=1)
    with pytest.raises(ValueError, match=r"^synthetic embeddings must be numeric, got bool$"):
        nearest_real(np.ones((2, 3)), np.ones((2, 3), bool), chunk_size=1)


def test_rows_beyond_the_float32_square_range_are_still_directions():
    """1e30 squared overflows float32 but not float64: the row is the direction (1, 2, 2) / 3."""
    real = np.array([[1.0, 2.0, 2.0], [2.0, -1.0, 0.0]])
    synthetic = np.array([[1e30, 2e30, 2e30]], dtype=np.float32)
    found = top_pairs(real, synthetic, k=1, chunk_size=1)
    assert found["real_index"].tolist() == [0]
    np.testing.assert_allclose(found["similarity"], [1.0], atol=1e-6)
    index, similarity = nearest_real(real, synthetic, chunk_size=1)
    assert index.tolist() == [0]
    np.testing.assert_allclose(similarity, [1.0], atol=1e-6)


def test_integer_embeddings_are_accepted():
    found = top_pairs(np.array([[3, 4], [4, -3]]), np.array([[6, 8]]), k=2, chunk_size=1)
    assert found["real_index"].tolist() == [0, 1]
    np.testing.assert_allclose(found["similarity"], [1.0, 0.0], atol=1e-7)


def test_nearest_real_takes_the_lowest_real_index_on_ties():
    real = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    index, similarity = nearest_real(real, np.array([[3.0, 3.0], [0.0, 5.0]]), chunk_size=1)
    assert index.tolist() == [1, 0]
    np.testing.assert_allclose(similarity, [1.0, 1.0], atol=1e-7)


def test_rounding_margin_is_twice_the_float32_dot_product_error_bound():
    """gamma_D = D u / (1 - D u) with u = 2^-24: D = 64 gives 2^-18 / (1 - 2^-18), doubled."""
    assert rounding_margin(64) == pytest.approx(2 * 2.0**-18 / (1 - 2.0**-18), rel=1e-12)
    assert rounding_margin(64) == pytest.approx(7.629423635e-06, rel=1e-9)


def test_imagededup_find_duplicates_agrees_on_the_best_pair():
    """imagededup's all-vs-all search over the same vectors, keeping real x synthetic pairs only."""
    rng = np.random.default_rng(3)
    real, synthetic = rng.normal(size=(20, 16)), rng.normal(size=(30, 16))
    synthetic[17] = real[4] + rng.normal(scale=0.3, size=16)
    encodings = {
        **{f"real{i}": v for i, v in enumerate(real)},
        **{f"syn{j}": v for j, v in enumerate(synthetic)},
    }
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # it warns that encoding workers are unused with an encoding map
        found = random_encoder_for_tests().cnn.find_duplicates(
            encoding_map=encodings, min_similarity_threshold=-1.0, scores=True, num_sim_workers=0
        )
    cross = [
        (float(score), key, other)
        for key, matches in found.items()
        if key.startswith("real")
        for other, score in matches
        if other.startswith("syn")
    ]
    score, key, other = max(cross)
    best = top_pairs(real, synthetic, k=1, chunk_size=8).to_dict("records")[0]
    assert (
        (key, other)
        == (f"real{best['real_index']}", f"syn{best['synthetic_index']}")
        == ("real4", "syn17")
    )
    assert best["similarity"] == pytest.approx(score, abs=1e-6)
