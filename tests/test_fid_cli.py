"""`radsynth fid` and the synthetic-set reader behind it, with the random CNN (never the real
Inception).

The synthetic sets are real sampling shard stores of a tiny untrained UNet (as in test_sampling),
and the same pixels written as PNG files. Expected numbers are computed by calling fidelity_row
on arrays built here, not by reading the CLI's output back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import BETAS, shard_kwargs, tiny_unet
from PIL import Image

from radsynth.audit.image_sets import load_synthetic
from radsynth.cli import main
from radsynth.core.features import RANDOM_INIT, random_cnn
from radsynth.core.settings import preset
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.evaluate.metrics import fidelity_row
from radsynth.sample.sampler import sample_shard

SIZE = 16  # the tiny UNet's side; the random CNN resizes to 32 px itself
KID_SUBSETS = 5
SHARD_IMAGES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """atlas.h5 (12 random 16 px images) and samples/shard{0,1}.zarr (4 images each) of a tiny
    UNet."""
    root = tmp_path_factory.mktemp("fid")
    real = np.random.default_rng(0).integers(0, 256, size=(12, SIZE, SIZE), dtype=np.uint8)
    write_atlas(root / "atlas.h5", atlas_from_images(real, [f"{i:07d}" for i in range(len(real))]))
    unet = tiny_unet()
    for shard in range(2):
        sample_shard(
            unet,
            BETAS,
            root / "samples" / f"shard{shard}.zarr",
            **shard_kwargs(
                root,
                shard_index=shard,
                first_global_index=SHARD_IMAGES * shard,
                n_images=SHARD_IMAGES,
                batch_size=SHARD_IMAGES,
                sampler="ddim",
                steps=2,
            ),
        )
    return root


def stored_images(*stores: Path) -> np.ndarray:
    """The stores' image arrays concatenated, read with zarr alone (shard order = global order
    here)."""
    return np.concatenate(
        [zarr.open_group(store, mode="r", zarr_format=3)["images"][:] for store in stores]
    )


def write_pngs(folder: Path, images, mode: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image, mode=mode).save(folder / f"{index:03d}.png")
    return folder


def fid_cli(data: Path, synthetic: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "fid",
            "--real",
            str(data / "atlas.h5"),
            "--synthetic",
            str(synthetic),
            "--out",
            str(out),
            "--extractor",
            "random-cnn-test-only",
            "--kid-subsets",
            str(KID_SUBSETS),
            *extra,
        ]
    )


def expected_row(data: Path, images: np.ndarray, cache: Path):
    """The row with the settings the CLI defaults to: the demo preset's, but KID_SUBSETS."""
    demo = preset("config.yaml").evaluate
    return fidelity_row(
        images,
        data / "atlas.h5",
        random_cnn(num_features=16, input_size=32),
        cache,
        synthetic_name="expected",
        kid_subsets=KID_SUBSETS,
        kid_subset_size=demo.metrics.kid_subset_size,
        kid_seed=demo.metrics.kid_seed,
        nearest_k=demo.metrics.prdc_nearest_k,
        batch_size=demo.batch_size,
    )


def test_zarr_folder_gives_the_fidelity_row_of_its_images(data, tmp_path, capsys):
    assert fid_cli(data, data / "samples", tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "fid.json").read_text())
    expected = expected_row(
        data,
        stored_images(data / "samples/shard0.zarr", data / "samples/shard1.zarr"),
        tmp_path / "expected-cache",
    )
    assert record["fid"] == pytest.approx(expected.fid, rel=1e-9)
    assert (record["kid_mean"], record["kid_std"]) == pytest.approx(
        (expected.kid_mean, expected.kid_std), rel=1e-9
    )
    assert (record["precision"], record["coverage"]) == pytest.approx(
        (expected.precision, expected.coverage)
    )
    assert (record["n_real"], record["n_synthetic"], record["kid_subsets"]) == (12, 8, KID_SUBSETS)
    assert record["extractor_weights"] == RANDOM_INIT
    assert record["real"] == str(data / "atlas.h5")
    assert (
        record["synthetic_source"]
        == f"8 images of checkpoint step000010 from 2 Zarr stores in {data / 'samples'}"
    )
    assert {"radsynth_version", "code_revision", "config_hash"} <= set(record["provenance"])
    assert list((tmp_path / "out" / "cache").glob("real_features_*.npz"))  # the default cache dir
    printed = capsys.readouterr().out
    assert f"FID {expected.fid:.4f}" in printed and "KID " in printed and "coverage" in printed
    assert "warning: synthetic set" in printed  # 8 images < 16 features


def test_png_folder_and_zarr_store_of_the_same_pixels_give_the_same_fid(data, tmp_path):
    store = data / "samples" / "shard0.zarr"
    pngs = write_pngs(tmp_path / "pngs", stored_images(store))
    assert fid_cli(data, store, tmp_path / "zarr", "--cache-dir", str(tmp_path / "cache")) == 0
    assert fid_cli(data, pngs, tmp_path / "png", "--cache-dir", str(tmp_path / "cache")) == 0
    from_zarr = json.loads((tmp_path / "zarr" / "fid.json").read_text())
    from_png = json.loads((tmp_path / "png" / "fid.json").read_text())
    expected = expected_row(data, stored_images(store), tmp_path / "expected-cache")
    assert from_zarr["fid"] == pytest.approx(expected.fid, rel=1e-9)
    assert from_png["fid"] == pytest.approx(from_zarr["fid"], rel=1e-12)
    assert from_png["synthetic_source"] == f"4 PNG files in {pngs}"
    assert from_zarr["synthetic_source"] == f"4 images of checkpoint step000010 from {store}"
    assert (
        from_zarr["precision"] is None
    )  # 4 images: PRDC undefined, written as null, explained in warnings
    assert "PRDC with k=5 needs at least 7" in from_zarr["warnings"]


def test_load_synthetic_reads_each_kind_in_order(data, tmp_path):
    both = stored_images(data / "samples/shard0.zarr", data / "samples/shard1.zarr")
    np.testing.assert_array_equal(load_synthetic(data / "samples")[0], both)
    np.testing.assert_array_equal(
        load_synthetic(data / "samples/shard1.zarr")[0], both[SHARD_IMAGES:]
    )
    shuffled = write_pngs(tmp_path / "pngs", both)
    (shuffled / "007.png").rename(shuffled / "000a.png")  # name order, not write order
    images, source = load_synthetic(shuffled)
    np.testing.assert_array_equal(images, both[[0, 7, 1, 2, 3, 4, 5, 6]])
    assert images.dtype == np.uint8 and source == f"8 PNG files in {shuffled}"


def rgb_folder(folder: Path) -> tuple[Path, str]:
    write_pngs(folder, np.zeros((2, SIZE, SIZE), np.uint8))
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(folder / "001.png")
    return folder, f"{folder / '001.png'}: PNG mode 'RGB'"


def sixteen_bit_folder(folder: Path) -> tuple[Path, str]:
    write_pngs(folder, np.full((2, SIZE, SIZE), 1000, np.uint16))
    return folder, f"{folder / '000.png'}: PNG mode 'I"


def mixed_size_folder(folder: Path) -> tuple[Path, str]:
    write_pngs(folder, np.zeros((2, SIZE, SIZE), np.uint8))
    Image.fromarray(np.zeros((SIZE, 8), np.uint8)).save(folder / "002.png")
    return folder, f"{folder / '002.png'}: 8x16 differs from 16x16 of {folder / '000.png'}"


def empty_folder(folder: Path) -> tuple[Path, str]:
    folder.mkdir()
    return folder, f"{folder}: holds neither PNG files nor"


def other_files_folder(folder: Path) -> tuple[Path, str]:
    folder.mkdir()
    (folder / "notes.txt").write_text("no images")
    return folder, f"{folder}: holds neither PNG files nor"


def one_image_folder(folder: Path) -> tuple[Path, str]:
    return write_pngs(
        folder, np.zeros((1, SIZE, SIZE), np.uint8)
    ), f"synthetic set {folder}: 1 image"


def missing_path(folder: Path) -> tuple[Path, str]:
    return folder, f"{folder}: no such file or folder"


def not_a_png(folder: Path) -> tuple[Path, str]:
    write_pngs(folder, np.zeros((2, SIZE, SIZE), np.uint8))
    (folder / "002.png").write_bytes(b"not an image")
    return folder, f"{folder / '002.png'}: unreadable PNG file"


def wrong_size_for_the_atlas(folder: Path) -> tuple[Path, str]:
    return write_pngs(
        folder, np.zeros((3, 8, 8), np.uint8)
    ), f"synthetic set {folder}: images are 8x8"


@pytest.mark.parametrize(
    "make",
    [
        rgb_folder,
        sixteen_bit_folder,
        mixed_size_folder,
        empty_folder,
        other_files_folder,
        one_image_folder,
        missing_path,
        not_a_png,
        wrong_size_for_the_atlas,
    ],
)
def test_bad_synthetic_input_exits_2_naming_the_file(data, tmp_path, capsys, make):
    synthetic, message = make(tmp_path / "synthetic")
    assert fid_cli(data, synthetic, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("radsynth fid: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "fid.json").exists()


def test_a_folder_mixing_stores_and_pngs_is_refused(data, tmp_path, capsys):
    folder = write_pngs(tmp_path / "mixed", np.zeros((2, SIZE, SIZE), np.uint8))
    (folder / "shard0.zarr").symlink_to(data / "samples" / "shard0.zarr")
    assert fid_cli(data, folder, tmp_path / "out") == 2
    assert f"{folder}: holds both *.zarr stores and PNG files" in capsys.readouterr().err


def test_fid_inception_needs_weights_and_weights_need_fid_inception(data, tmp_path, capsys):
    args = [
        "fid",
        "--real",
        str(data / "atlas.h5"),
        "--synthetic",
        str(data / "samples"),
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--extractor", "fid-inception"]) == 2
    assert (
        "extractor fid-inception needs the path of the FID Inception weights"
        in capsys.readouterr().err
    )
    assert (
        main([*args, "--extractor", "random-cnn-test-only", "--weights", str(tmp_path / "w.pth")])
        == 2
    )
    assert "--weights is used only with --extractor fid-inception" in capsys.readouterr().err
    assert main([*args, "--extractor", "fid-inception", "--weights", str(tmp_path / "w.pth")]) == 2
    assert f"{tmp_path / 'w.pth'}: no FID Inception weights there" in capsys.readouterr().err


def test_help_names_the_test_only_extractor(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fid", "-h"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "random-cnn-test-only" in text and "for tests only" in text and "--kid-subset-size" in text
    )


def test_a_missing_atlas_exits_2_naming_it(data, tmp_path, capsys):
    synthetic = write_pngs(tmp_path / "pngs", np.zeros((3, SIZE, SIZE), np.uint8))
    assert (
        main(
            [
                "fid",
                "--real",
                str(tmp_path / "missing.h5"),
                "--synthetic",
                str(synthetic),
                "--out",
                str(tmp_path),
                "--extractor",
                "random-cnn-test-only",
            ]
        )
        == 2
    )
    assert "missing.h5" in capsys.readouterr().err
