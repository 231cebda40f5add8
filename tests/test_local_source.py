"""The user's own images as the data source (`data.source: local`) and the metadata tables that
carry pixel spacing into the atlas, through the real workflow: dry runs build the DAG from a
folder of phantom PNGs with their LabelMe files and metadata table (written by the demo
generator, so the expected spacings are the phantoms' ground truth), and the preprocess rule
runs on it for real."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, load_demo_config, run_snakemake, write_workdir_config

from radsynth.data.atlas import load_atlas
from radsynth.demo.phantom import generate_atlas

SIZE = 32  # the demo preset's preprocess.size


@pytest.fixture(scope="module")
def clinic(tmp_path_factory) -> Path:
    """A folder as a user would bring it: images/, annotations/ (LabelMe) and metadata.csv
    (CSXA's layout), plus the phantoms' ground truth beside it in truth.csv."""
    folder = tmp_path_factory.mktemp("clinic")
    generate_atlas(
        folder,
        folder / "truth.csv",
        n_images=4,
        seed=3,
        negative_fraction=0.0,
        sixteen_bit_fraction=0.0,
        rgb_fraction=0.0,
        min_side=64,
        max_side=96,
        progress=False,
    )
    return folder


def local_config(clinic: Path, *, metadata_table: str | None) -> dict:
    config = load_demo_config()
    config["data"] = {
        "source": "local",
        "local": {
            "images": str(clinic / "images"),
            "annotations": str(clinic / "annotations"),
            "metadata_table": metadata_table,
            "description": "phantom films standing in for a clinic's radiographs",
            "licence": "CC BY 4.0",
            "citation": "The test clinic. Phantom films. 2026.",
        },
    }
    return config


def job_inputs(dry_run: str, rule: str) -> list[str]:
    """The inputs a dry run lists for the one job of `rule`."""
    block = re.search(rf"^rule {rule}:\n    input: (.*)$", dry_run, re.M)
    assert block, f"no {rule} job in the dry run"
    return block[1].split(", ")


def planned_rules(dry_run: str) -> set[str]:
    return set(re.findall(r"^rule (\w+):", dry_run, re.M))


def test_a_local_source_plans_every_stage_from_its_folders(clinic, tmp_path):
    write_workdir_config(
        tmp_path, local_config(clinic, metadata_table=str(clinic / "metadata.csv"))
    )
    dry_run = run_snakemake(tmp_path, "-n").stdout
    assert sorted(job_inputs(dry_run, "preprocess")) == [
        str(clinic / "annotations"),
        str(clinic / "images"),
        str(clinic / "metadata.csv"),
    ]
    planned = planned_rules(dry_run)
    assert {"train", "train_facing", "sample_shard", "fid_checkpoint"} <= planned
    assert {"screen_samples", "memorization_audit", "release_package", "all"} <= planned
    assert not planned & {"demo_atlas", "download_archive", "unpack_archive"}


def test_a_local_source_without_a_metadata_table_has_no_such_input(clinic, tmp_path):
    write_workdir_config(tmp_path, local_config(clinic, metadata_table=None))
    dry_run = run_snakemake(tmp_path, "-n").stdout
    assert sorted(job_inputs(dry_run, "preprocess")) == [
        str(clinic / "annotations"),
        str(clinic / "images"),
    ]


def test_a_local_source_without_a_licence_builds_no_dag(clinic, tmp_path):
    config = local_config(clinic, metadata_table=None)
    del config["data"]["local"]["licence"]
    write_workdir_config(tmp_path, config)
    result = run_snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert "data.local.licence: missing key" in result.stdout + result.stderr
    assert "rule preprocess" not in result.stdout


def test_a_missing_local_folder_is_named(clinic, tmp_path):
    config = local_config(clinic, metadata_table=None)
    config["data"]["local"]["images"] = str(tmp_path / "no-such-folder")
    write_workdir_config(tmp_path, config)
    result = run_snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert str(tmp_path / "no-such-folder") in result.stdout + result.stderr


def test_the_demo_metadata_table_is_made_and_read_by_preprocess(tmp_path):
    write_workdir_config(tmp_path, load_demo_config())
    dry_run = run_snakemake(tmp_path, "-n").stdout
    assert "resources/demo_atlas/metadata.csv" in job_inputs(dry_run, "preprocess")
    demo = re.search(r"^rule demo_atlas:\n(?:    .*\n)*?    output: (.*)$", dry_run, re.M)
    assert demo and "resources/demo_atlas/metadata.csv" in demo[1].split(", ")


def test_the_csxa_sheet_placed_by_hand_is_read_by_preprocess(tmp_path):
    config = yaml.safe_load((REPO / "config" / "csxa.yaml").read_text())
    config["data"]["csxa"]["metadata_table"] = "resources/csxa/datasets.xlsx"
    write_workdir_config(tmp_path, config)
    result = run_snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0  # not placed yet: the DAG names the missing sheet
    assert "resources/csxa/datasets.xlsx" in result.stdout + result.stderr
    (tmp_path / "resources/csxa").mkdir(parents=True)
    (tmp_path / "resources/csxa/datasets.xlsx").write_bytes(b"placed by hand")
    assert sorted(job_inputs(run_snakemake(tmp_path, "-n").stdout, "preprocess")) == [
        "resources/csxa/datasets.xlsx",
        "resources/csxa/unpacked/json",
        "resources/csxa/unpacked/png",
    ]


def test_a_local_sources_spacing_and_keypoints_reach_the_atlas(clinic, tmp_path):
    """The preprocess rule for real on the clinic folder: every image's mm per atlas pixel is
    its film's spacing times original side / SIZE (the "resize" mode stretches each axis to
    SIZE), and the LabelMe keypoints arrive."""
    write_workdir_config(
        tmp_path, local_config(clinic, metadata_table=str(clinic / "metadata.csv"))
    )
    run_snakemake(tmp_path, "results/preprocess/atlas.h5")
    truth = pd.read_csv(clinic / "truth.csv", dtype={"stem": str}).set_index("stem")
    with load_atlas(tmp_path / "results/preprocess/atlas.h5") as atlas:
        assert atlas.source_names == [f"{stem}.png" for stem in sorted(truth.index)]
        for row, name in enumerate(atlas.source_names):
            film = truth.loc[name.removesuffix(".png")]
            expected = film["mm_per_pixel"] * np.array([film["width"], film["height"]]) / SIZE
            np.testing.assert_allclose(atlas.mm_per_pixel[row], expected, rtol=1e-9)
        assert np.isfinite(atlas.keypoints).all()
        assert atlas.attrs["n_without_spacing"] == 0
