"""How long building the DAG takes: the wall time of a paper-preset dry run (what every
`snakemake` call pays before its first job starts), beside its floor (Snakemake starting up and
doing nothing) and the import time of the radsynth modules the Snakefile and its rule files
import. One run each on a shared machine: rough figures.

The goal is a dry run under 3 s, which holds only while those modules stay light (no torch,
diffusers or zarr; tests/test_workflow_static.py checks that, this file measures the time).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
DRY_RUN_GOAL = "< 3 s"


def helper_imports() -> list[str]:
    """The radsynth modules the Snakefile and workflow/rules/*.smk import."""
    sources = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
    pattern = re.compile(r"^(?:from|import) (radsynth[\w.]*)", re.M)
    return sorted({module for path in sources for module in pattern.findall(path.read_text())})


def wall_seconds(command: list) -> float:
    """Wall time of one command, which must succeed."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}")
    return seconds


def dry_run_seconds() -> float:
    """Wall time of `snakemake -n --configfile config/csxa.yaml` in a scratch working directory."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
        return wall_seconds(
            [
                SNAKEMAKE,
                "-s",
                REPO / "Snakefile",
                "-d",
                workdir,
                "-n",
                "--quiet",
                "--configfile",
                REPO / "config/csxa.yaml",
                "--cores",
                "2",
            ]
        )


def import_seconds(modules: list[str]) -> float:
    """Time to import `modules` in a fresh interpreter, as the DAG build pays it."""
    code = (
        "import time; start = time.perf_counter(); "
        f"import {', '.join(modules)}; print(time.perf_counter() - start)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"importing {', '.join(modules)} failed:\n{result.stderr}")
    return float(result.stdout)


def run() -> list[str]:
    modules = helper_imports()
    return [
        f"DAG: paper-preset dry run (snakemake -n --configfile config/csxa.yaml) "
        f"{dry_run_seconds():6.2f} s   (goal {DRY_RUN_GOAL})",
        "DAG: floor, Snakemake's own start-up (snakemake --version) "
        f"{wall_seconds([SNAKEMAKE, '--version']):6.2f} s",
        f"DAG: Snakefile helper imports ({', '.join(modules)}) {import_seconds(modules):6.2f} s",
    ]
