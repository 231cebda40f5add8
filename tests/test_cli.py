"""The `radsynth` console script runs each stage without Snakemake."""

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from radsynth.preprocess import PAPER_NEGATIVE_DETECTION

REPO = Path(__file__).resolve().parents[1]
RADSYNTH = Path(sys.executable).parent / "radsynth"


def radsynth(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(RADSYNTH), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_demo_atlas_preprocess_split_chain(tmp_path):
    radsynth("demo-atlas", "--out", tmp_path / "atlas", "--truth", tmp_path / "truth.csv",
             "--n", 12, "--min-side", 96, "--max-side", 128)
    radsynth("preprocess", "--input", tmp_path / "atlas/images", "--annotations", tmp_path / "atlas/annotations",
             "--out", tmp_path / "atlas.h5", "--size", 32)
    with h5py.File(tmp_path / "atlas.h5") as atlas:
        assert atlas["images"].shape == (12, 32, 32)
        assert "radsynth" in atlas.attrs["provenance"] and "argv" not in atlas.attrs["provenance"]
    assert pd.read_csv(tmp_path / "atlas.rejects.csv").columns.tolist() == ["source", "kind", "reason"]
    out = radsynth("split", "--atlas", tmp_path / "atlas.h5", "--out", tmp_path / "manifest.csv").stdout
    manifest = pd.read_csv(tmp_path / "manifest.csv", comment="#")
    assert (manifest["subset"] == "val").sum() == 2 and "train" in out


def test_preprocess_reports_missing_input(tmp_path):
    result = subprocess.run([str(RADSYNTH), "preprocess", "--input", str(tmp_path / "nowhere"), "--out",
                             str(tmp_path / "a.h5")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "nowhere" in result.stderr


@pytest.mark.parametrize("preset", ["config.yaml", "csxa.yaml"])
def test_presets_use_the_cli_detector_settings(preset):
    config = yaml.safe_load((REPO / "config" / preset).read_text())
    assert config["preprocess"]["negative_detection"] == asdict(PAPER_NEGATIVE_DETECTION)
