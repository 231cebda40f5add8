"""The `radsynth` console script runs each stage without Snakemake."""

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import BETAS, MEANS, TINY_LUCIDRAINS, key_frame, shard_kwargs, write_qualtrics
from PIL import Image
from safetensors.torch import load_file

from radsynth import cli
from radsynth.anatomy.landmark_export import read_landmark_table
from radsynth.anatomy.landmark_model import read_model_metadata
from radsynth.cli import main
from radsynth.core.tables import read_table_provenance, write_table
from radsynth.data.atlas import load_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.negatives import NegativeDetection
from radsynth.data.preprocess import preprocess_atlas
from radsynth.sample.gather import sample_manifest
from radsynth.sample.sampler import sample_shard
from radsynth.sample.store import image_id, open_samples
from radsynth.train.model import build_unet

REPO = Path(__file__).resolve().parents[1]
RADSYNTH = Path(sys.executable).parent / "radsynth"


def radsynth(*args) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(RADSYNTH), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def cli_atlas(tmp_path_factory) -> Path:
    """A 12-image demo atlas, half of it negative scans, preprocessed to 32 px by the CLI."""
    tmp_path = tmp_path_factory.mktemp("cli")
    radsynth(
        "demo-atlas",
        "--out",
        tmp_path / "atlas",
        "--truth",
        tmp_path / "truth.csv",
        "--n",
        12,
        "--negative-fraction",
        0.5,
        "--min-side",
        96,
        "--max-side",
        128,
    )
    radsynth(
        "preprocess",
        "--input",
        tmp_path / "atlas/images",
        "--annotations",
        tmp_path / "atlas/annotations",
        "--metadata",
        tmp_path / "atlas/metadata.csv",
        "--out",
        tmp_path / "atlas.h5",
        "--size",
        32,
    )
    return tmp_path


def test_demo_atlas_preprocess_split_chain(cli_atlas, tmp_path):
    with h5py.File(cli_atlas / "atlas.h5") as atlas:
        assert atlas["images"].shape == (12, 32, 32)
        assert "radsynth" in atlas.attrs["provenance"] and "argv" not in atlas.attrs["provenance"]
    assert pd.read_csv(cli_atlas / "atlas.rejects.csv", comment="#").columns.tolist() == [
        "source",
        "kind",
        "reason",
    ]
    out = radsynth(
        "split", "--atlas", cli_atlas / "atlas.h5", "--out", tmp_path / "manifest.csv"
    ).stdout
    manifest = pd.read_csv(tmp_path / "manifest.csv", comment="#")
    assert (manifest["subset"] == "val").sum() == 2 and "train" in out


def test_cli_carries_the_demo_spacing_into_the_atlas(cli_atlas):
    """Each film's 16 mm / body depth, times original pixels per atlas pixel on each axis."""
    truth = pd.read_csv(cli_atlas / "truth.csv", dtype={"stem": str}).set_index("stem")
    with load_atlas(cli_atlas / "atlas.h5") as atlas:
        stems = [Path(name).stem for name in atlas.source_names]
        spacing = atlas.mm_per_pixel
    film = truth.loc[stems]
    expected = np.stack([film["width"] / 32, film["height"] / 32], axis=1) * (
        16.0 / film["unit_px"].to_numpy()[:, None]
    )
    np.testing.assert_allclose(spacing, expected, rtol=1e-3)  # unit_px has 3 decimals


def test_cli_inverts_exactly_the_true_negatives(cli_atlas):
    truth = pd.read_csv(cli_atlas / "truth.csv", dtype={"stem": str})
    negatives = {f"{stem}.png" for stem in truth.loc[truth["negative"] == 1, "stem"]}
    assert 0 < len(negatives) < len(truth)
    with load_atlas(cli_atlas / "atlas.h5") as atlas:
        inverted = {name for name, flag in zip(atlas.source_names, atlas.inverted) if flag}
    assert inverted == negatives


@pytest.mark.parametrize("preset", ["config.yaml", "csxa.yaml"])
def test_cli_preprocess_equals_the_workflow_call_with_each_preset(cli_atlas, tmp_path, preset):
    """The workflow's preprocess script passes the preset's detector settings; the CLI passes
    the paper preset's."""
    detection = yaml.safe_load((REPO / "config" / preset).read_text())["preprocess"][
        "negative_detection"
    ]
    preprocess_atlas(
        cli_atlas / "atlas/images",
        cli_atlas / "atlas/annotations",
        tmp_path / "atlas.h5",
        tmp_path / "rejects.csv",
        metadata_table=cli_atlas / "atlas/metadata.csv",
        size=32,
        resize_mode="resize",
        max_rejected_fraction=0.01,
        detection=NegativeDetection(**detection),
        provenance={},
        progress=False,
    )
    workflow, cli = load_atlas(tmp_path / "atlas.h5"), load_atlas(cli_atlas / "atlas.h5")
    assert workflow.source_names == cli.source_names
    np.testing.assert_array_equal(workflow.negative_scores, cli.negative_scores)
    np.testing.assert_array_equal(workflow.inverted, cli.inverted)
    np.testing.assert_array_equal(workflow.images, cli.images)
    np.testing.assert_array_equal(workflow.mm_per_pixel, cli.mm_per_pixel)


def test_qualtrics_then_stats_through_the_cli(tmp_path):
    from radsynth.turing.ratings import load_key, simulate_ratings

    key_frame(6).to_csv(tmp_path / "key.csv", index=False)
    ratings = simulate_ratings(
        load_key(tmp_path / "key.csv"), n_raters=5, seed=2, p_identify=0.3, mean_ratings=MEANS
    )
    write_qualtrics(tmp_path / "export.csv", ratings)
    (tmp_path / "ratings").mkdir()
    radsynth(
        "qualtrics",
        "--export",
        tmp_path / "export.csv",
        "--key",
        tmp_path / "key.csv",
        "--rater-column",
        "rater_id",
        "--out",
        tmp_path / "ratings/qualtrics.csv",
    )
    assert len(pd.read_csv(tmp_path / "ratings/qualtrics.csv")) == 5 * 6 * 4
    out = radsynth(
        "stats",
        "--ratings",
        tmp_path / "ratings",
        "--key",
        tmp_path / "key.csv",
        "--out",
        tmp_path / "stats",
        "--simulated",
    ).stdout
    assert "Identification accuracy" in out and "SIMULATED" in out
    statistics = json.loads((tmp_path / "stats/statistics.json").read_text())
    chosen = ratings[ratings["chosen_real"] == 1].merge(key_frame(6), on=["quartet", "position"])
    assert statistics["identification"]["n_correct"] == int((chosen["group"] == "real").sum())
    assert statistics["identification"]["n_trials"] == 5 * 6


def test_stats_refuses_simulated_raters_reported_as_experts(tmp_path):
    from radsynth.turing.ratings import load_key, simulate_ratings, write_ratings_csv

    key_frame(4).to_csv(tmp_path / "key.csv", index=False)
    ratings = simulate_ratings(
        load_key(tmp_path / "key.csv"), n_raters=3, seed=2, p_identify=0.3, mean_ratings=MEANS
    )
    write_ratings_csv(ratings, tmp_path / "ratings/all.csv")
    result = subprocess.run(
        [
            str(RADSYNTH),
            "stats",
            "--ratings",
            str(tmp_path / "ratings"),
            "--key",
            str(tmp_path / "key.csv"),
            "--out",
            str(tmp_path / "stats"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "simulated" in result.stderr


# ----------------------------------------------------------------------------- error boundary


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Each subcommand with one bad input: its arguments, and what its error line must name
    (the config files partial.yaml and demo.yaml are written by the test)."""
    missing = tmp_path / "missing"
    atlas, key, image_set = missing / "atlas.h5", missing / "key.csv", missing / "set"
    images = ["--real", atlas, "--synthetic", image_set]
    cases = {
        "demo-atlas": (
            ["demo-atlas", "--out", tmp_path / "atlas", "--truth", tmp_path / "t.csv"]
            + ["--min-side", 600, "--max-side", 300],
            "data.demo.max_side: must be at least min_side 600, got 300",
        ),
        "download": (
            ["download", "--config", tmp_path / "demo.yaml", "--archive", "png"],
            f"{tmp_path / 'demo.yaml'}: data.csxa: missing key",
        ),
        "preprocess": (
            ["preprocess", "--input", missing / "images", "--out", tmp_path / "a.h5"],
            missing / "images",
        ),
        "split": (["split", "--atlas", atlas, "--out", tmp_path / "m.csv"], atlas),
        "sample": (
            ["sample", "--checkpoint", missing / "step1.safetensors", "--n", 2]
            + ["--out", tmp_path / "s.zarr"],
            missing / "step1.safetensors",
        ),
        "model": (
            ["model", "--configfile", tmp_path / "partial.yaml"],
            "model.sample_size: missing key",
        ),
        "stats": (["stats", "--ratings", missing, "--key", key, "--out", tmp_path / "stats"], key),
        "qualtrics": (
            ["qualtrics", "--export", missing / "export.csv", "--key", key]
            + ["--rater-column", "rater", "--out", tmp_path / "r.csv"],
            key,
        ),
        "fid": (["fid", *images, "--extractor", "random-cnn-test-only"], image_set),
        "audit": (
            ["audit", *images, "--out", tmp_path / "audit", "--encoder", "random-test-only"],
            image_set,
        ),
        "screen": (
            ["screen", *images, "--facing-classifier", missing / "classifier.safetensors"]
            + ["--out", tmp_path / "screen"],
            image_set,
        ),
        "figshare-upload": (["figshare-upload", missing], missing / "figshare.json"),
        "landmarks-train": (
            ["landmarks-train", "--atlas", atlas, "--manifest", missing / "split.csv"]
            + ["--out", tmp_path / "landmarks"],
            atlas,
        ),
        "landmarks": (
            ["landmarks", "--model", missing / "model.safetensors", "--images", image_set],
            missing / "model.safetensors",
        ),
    }
    return {
        command: ([str(argument) for argument in arguments], str(named))
        for command, (arguments, named) in cases.items()
    }


def subcommands() -> set[str]:
    """Every subcommand `radsynth --help` lists."""
    help_text = subprocess.run(
        [str(RADSYNTH), "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return set(re.search(r"\{([a-z,-]+)\}", help_text)[1].split(","))


def test_every_subcommand_has_a_bad_input_case(tmp_path):
    assert set(bad_inputs(tmp_path)) == subcommands()


@pytest.mark.parametrize("command", sorted(bad_inputs(Path("/nowhere"))))
def test_bad_input_is_one_line_naming_the_file_or_key_and_exit_2(command, tmp_path, capsys):
    (tmp_path / "partial.yaml").write_text("model:\n  architecture: diffusers\n  dropout: 0.0\n")
    (tmp_path / "demo.yaml").write_text("data:\n  source: demo\n")
    arguments, named = bad_inputs(tmp_path)[command]
    status = main(arguments)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith(f"radsynth {command}: error: "), err
    assert named in err
    assert "Traceback" not in err


def test_an_unexpected_error_prints_its_traceback_and_exits_1(tmp_path, capsys, monkeypatch):
    """A bug (here a forced ZeroDivisionError inside the split) is not dressed up as bad input."""

    def broken_split(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(cli, "write_split_for_atlas", broken_split)
    status = main(["split", "--atlas", str(tmp_path / "a.h5"), "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "broken_split" in err and err.rstrip().endswith("ZeroDivisionError: division by zero")


def test_cli_defaults_are_the_presets_values():
    """The defaults `--help` shows are read from the preset files, not copied: the paper's for
    preprocessing, split and sampler, the demo's for the rest."""
    demo, paper = (
        yaml.safe_load((REPO / "config" / name).read_text())
        for name in ("config.yaml", "csxa.yaml")
    )
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices

    def default(command: str, option: str):
        return commands[command].get_default(option)

    assert default("demo-atlas", "n") == demo["data"]["demo"]["n_images"]
    assert default("demo-atlas", "max_side") == demo["data"]["demo"]["max_side"]
    assert default("preprocess", "size") == paper["preprocess"]["size"] == 256
    assert default("preprocess", "max_rejected_fraction") == 0.01
    detection = vars(default("preprocess", "detection"))
    assert detection == paper["preprocess"]["negative_detection"]
    assert default("split", "seed") == paper["split"]["seed"]
    assert (default("sample", "sampler"), default("sample", "steps")) == ("ddpm", 1000)
    assert default("sample", "quantization") == demo["sampling"]["quantization"] == "round"
    assert default("fid", "kid_subsets") == demo["evaluate"]["metrics"]["kid_subsets"]
    assert default("audit", "chunk_size") == demo["audit"]["chunk_size"]
    assert default("screen", "threshold") == demo["audit"]["screen"]["threshold"]
    settings = default("screen", "settings").model_dump()
    assert settings == demo["audit"]["screen"]["settings"]


# ----------------------------------------------------------------------------- landmarks

SIDE = 32  # the CLI atlas's side
GEOMETRY = ["c2_c7_angle_deg", "curvature_class"]  # the columns that depend on the facing


@pytest.fixture(scope="module")
def landmark_model(cli_atlas, tmp_path_factory) -> Path:
    """`radsynth landmarks-train` on the 12-phantom CLI atlas's split (10 train rows), with the
    demo preset's anatomy section cut to 4 steps."""
    root = tmp_path_factory.mktemp("landmarks")
    split = ["split", "--atlas", str(cli_atlas / "atlas.h5"), "--out", str(root / "split.csv")]
    assert main(split) == 0
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["anatomy"]["training"].update(max_steps=4, eval_every=2, state_every=2, batch_size=4)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    arguments = ["landmarks-train", "--atlas", cli_atlas / "atlas.h5", "--manifest"]
    arguments += [root / "split.csv", "--out", root / "model", "--config", root / "config.yaml"]
    assert main([str(argument) for argument in arguments]) == 0
    return root / "model" / "landmark_model.safetensors"


def landmarks_cli(model: Path, images: Path, out: Path, *options: str) -> pd.DataFrame:
    assert (
        main(
            ["landmarks", "--model", str(model), "--images", str(images), "--out", str(out)]
            + list(options)
        )
        == 0
    )
    return read_landmark_table(out / "landmarks.csv")


def landmark_xy(table: pd.DataFrame) -> np.ndarray:
    stems = [label.lower().replace(" ", "_") for label in KEYPOINT_LABELS]
    return np.stack(
        [table[[f"{stem}_{axis}" for stem in stems]].to_numpy() for axis in ("x", "y")], axis=-1
    )


def assert_within_the_image(table: pd.DataFrame) -> None:
    """Pixel-centre convention: the image covers [-0.5, SIDE - 0.5] on each axis."""
    xy = landmark_xy(table)
    assert np.isfinite(xy).all() and (xy >= -0.5).all() and (xy <= SIDE - 0.5).all()


def test_landmarks_train_writes_a_resumable_model(landmark_model, cli_atlas):
    metadata = read_model_metadata(landmark_model)
    assert metadata["architecture"]["image_size"] == SIDE
    assert metadata["labels"] == list(KEYPOINT_LABELS)
    # 10 train rows, of which round(10 x 0.15) = 2 stop early and 8 are fitted; 4 steps
    training = metadata["training"]
    assert (training["n_fit"], training["n_held_out"], training["step"]) == (8, 2, 4)
    assert [row["step"] for row in training["history"]] == [2, 4]
    assert any((landmark_model.parent / ".work").rglob("*.safetensors"))  # resume states
    # a rerun finds the finished state and writes the same weights without training again
    before = load_file(landmark_model)
    root = landmark_model.parents[1]
    arguments = ["landmarks-train", "--atlas", cli_atlas / "atlas.h5", "--manifest"]
    arguments += [root / "split.csv", "--out", root / "model", "--config", root / "config.yaml"]
    assert main([str(argument) for argument in arguments]) == 0
    after = load_file(landmark_model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_landmarks_of_an_atlas_follow_its_source_names(landmark_model, cli_atlas, tmp_path):
    table = landmarks_cli(landmark_model, cli_atlas / "atlas.h5", tmp_path)
    with load_atlas(cli_atlas / "atlas.h5") as atlas:
        names = atlas.source_names
    assert table["image_id"].tolist() == names and len(table) == 12
    assert_within_the_image(table)
    assert table["c2_c7_angle_deg"].isna().all()  # an atlas records no facing
    assert (table["curvature_class"] == "").all()
    assert (table[["c3_height", "c7_depth"]] > 0).all().all()  # px
    provenance = read_table_provenance(tmp_path / "landmarks.csv")
    assert (provenance["facing"], provenance["lengths"]) == ("unknown", "px")


def test_landmarks_of_a_png_folder_take_the_given_facing(landmark_model, cli_atlas, tmp_path):
    with load_atlas(cli_atlas / "atlas.h5") as atlas:
        images, names = atlas.images[:5], [Path(name).stem for name in atlas.source_names[:5]]
    for image, name in zip(images, names, strict=True):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    unknown = landmarks_cli(landmark_model, tmp_path, tmp_path / "unknown")
    assert unknown["image_id"].tolist() == sorted(names)
    assert_within_the_image(unknown)
    assert unknown["c2_c7_angle_deg"].isna().all()
    left = landmarks_cli(landmark_model, tmp_path, tmp_path / "left", "--facing", "left")
    assert left["c2_c7_angle_deg"].notna().all()
    assert set(left["curvature_class"]) <= {"lordotic", "straight", "kyphotic"}
    # the facing decides the angle's sign convention, never where the landmarks are
    np.testing.assert_array_equal(landmark_xy(left), landmark_xy(unknown))
    right = landmarks_cli(landmark_model, tmp_path, tmp_path / "right", "--facing", "right")
    np.testing.assert_allclose(
        (left["c2_c7_angle_deg"] + right["c2_c7_angle_deg"] + 180) % 360 - 180, 0, atol=1e-9
    )


def test_landmarks_of_a_zarr_store_use_its_image_ids(landmark_model, tmp_path):
    torch.manual_seed(0)
    unet = build_unet(TINY_LUCIDRAINS.model_copy(update={"sample_size": SIDE})).eval()
    store = tmp_path / "shard0.zarr"
    sample_shard(unet, BETAS, store, **shard_kwargs(tmp_path, n_images=3, sampler="ddim", steps=2))
    table = landmarks_cli(landmark_model, store, tmp_path / "out")
    ids = [image_id("step000010", i) for i in range(3)]
    assert table["image_id"].tolist() == ids
    assert_within_the_image(table)
    assert table["c2_c7_angle_deg"].isna().all()  # a shard store is not standardised


def test_landmarks_of_a_gathered_manifest_are_of_its_left_facing_images(landmark_model, tmp_path):
    """The manifest's flips applied: the same landmarks as the mirrored pixels saved as PNGs."""
    torch.manual_seed(0)
    unet = build_unet(TINY_LUCIDRAINS.model_copy(update={"sample_size": SIDE})).eval()
    store = tmp_path / "shard0.zarr"
    sample_shard(unet, BETAS, store, **shard_kwargs(tmp_path, n_images=3, sampler="ddim", steps=2))
    samples = open_samples([store])
    facing = np.array(["right", "left", "right"])
    manifest = sample_manifest(samples, facing, np.array([0.1, 0.9, 0.2]))
    write_table(manifest, tmp_path / "manifest.csv", provenance={})
    (tmp_path / "png").mkdir()
    for name, image, side in zip(manifest["image_id"], samples.images([0, 1, 2]), facing):
        Image.fromarray(image[:, ::-1] if side == "right" else image).save(
            tmp_path / "png" / f"{name}.png"
        )
    table = landmarks_cli(landmark_model, tmp_path / "manifest.csv", tmp_path / "out")
    expected = landmarks_cli(landmark_model, tmp_path / "png", tmp_path / "png_out")
    pd.testing.assert_frame_equal(table.drop(columns=GEOMETRY), expected.drop(columns=GEOMETRY))
    assert table["c2_c7_angle_deg"].notna().all()  # left-facing, as gathered
    assert read_table_provenance(tmp_path / "out" / "landmarks.csv")["facing"] == "left"
    status = main(
        ["landmarks", "--model", str(landmark_model), "--images"]
        + [str(tmp_path / "manifest.csv"), "--facing", "right"]
    )
    assert status == 2


def test_landmarks_of_images_of_another_size_name_it(landmark_model, tmp_path, capsys):
    for k in range(2):
        Image.fromarray(np.full((24, 24), 40 * k, np.uint8)).save(tmp_path / f"{k}.png")
    status = main(["landmarks", "--model", str(landmark_model), "--images", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert f"{tmp_path}: the landmark model was trained at 32 x 32 px" in err
    assert "got uint8 (2, 24, 24)" in err
