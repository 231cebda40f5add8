"""The `radsynth` console script runs each stage without Snakemake."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from radsynth.data.atlas import load_atlas
from radsynth.data.preprocess import NegativeDetection, preprocess_atlas

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
    assert pd.read_csv(cli_atlas / "atlas.rejects.csv").columns.tolist() == [
        "source",
        "kind",
        "reason",
    ]
    out = radsynth(
        "split", "--atlas", cli_atlas / "atlas.h5", "--out", tmp_path / "manifest.csv"
    ).stdout
    manifest = pd.read_csv(tmp_path / "manifest.csv", comment="#")
    assert (manifest["subset"] == "val").sum() == 2 and "train" in out


def test_preprocess_reports_missing_input(tmp_path):
    result = subprocess.run(
        [
            str(RADSYNTH),
            "preprocess",
            "--input",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "a.h5"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "nowhere" in result.stderr


def test_cli_inverts_exactly_the_true_negatives(cli_atlas):
    truth = pd.read_csv(cli_atlas / "truth.csv", dtype={"stem": str})
    negatives = {f"{stem}.png" for stem in truth.loc[truth["negative"] == 1, "stem"]}
    assert 0 < len(negatives) < len(truth)
    with load_atlas(cli_atlas / "atlas.h5") as atlas:
        inverted = {name for name, flag in zip(atlas.source_names, atlas.inverted) if flag}
    assert inverted == negatives


@pytest.mark.parametrize("preset", ["config.yaml", "csxa.yaml"])
def test_cli_preprocess_equals_the_workflow_call_with_each_preset(cli_atlas, tmp_path, preset):
    """The workflow's preprocess script passes the preset's detector settings; the CLI has none to pass."""
    detection = yaml.safe_load((REPO / "config" / preset).read_text())["preprocess"][
        "negative_detection"
    ]
    preprocess_atlas(
        cli_atlas / "atlas/images",
        cli_atlas / "atlas/annotations",
        tmp_path / "atlas.h5",
        tmp_path / "rejects.csv",
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


def test_qualtrics_then_stats_through_the_cli(tmp_path):
    from test_ratings import MEANS, key_frame, write_qualtrics

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
    from test_ratings import MEANS, key_frame

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
