import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from radsynth.data.atlas import atlas_from_images, write_atlas

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
#: Debian's chromium, driven by playwright in the browser tests.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 1200
) -> subprocess.CompletedProcess:
    """Run the real workflow in `workdir`, whose config/config.yaml is the run's config."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def write_workdir_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def load_demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for a test, restored after it: the other test worker shares the
    two cores, and the resume tests compare bytes. A file opts in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def demo_config() -> dict:
    return load_demo_config()


#: Training and validation images of the `data` fixture.
N_TRAIN, N_VAL = 20, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16x16 atlas of 24 images and a manifest with the last 4 as validation."""
    folder = tmp_path_factory.mktemp("data")
    images = np.random.default_rng(0).integers(0, 256, (N_TRAIN + N_VAL, 16, 16), dtype=np.uint8)
    write_atlas(
        folder / "atlas.h5",
        atlas_from_images(images, [f"img{i:03d}" for i in range(N_TRAIN + N_VAL)]),
    )
    rows = [
        f"{i},img{i:03d},{'val' if i >= N_TRAIN else 'train'}\n" for i in range(N_TRAIN + N_VAL)
    ]
    (folder / "manifest.csv").write_text("index,source_name,subset\n" + "".join(rows))
    return folder / "atlas.h5", folder / "manifest.csv"
