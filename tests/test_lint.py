"""The Python gates: ruff's lint and format checks over the project (what they cover is set in
pyproject.toml), and every third-party module a test or benchmark imports is a declared
dependency, so a fresh setup never meets an import that only this machine happened to have."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [str(RUFF), *command], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def local_modules() -> set[str]:
    """Modules found beside the importing file (tests/, bench/), the test cluster's driver, or
    the package itself."""
    folders = [REPO / "tests", REPO / "bench", REPO / "tools" / "slurm-cluster"]
    return {"radsynth"} | {path.stem for folder in folders for path in folder.glob("*.py")}


def test_every_third_party_import_is_declared() -> None:
    """The package, its scripts, the tests and benchmarks: a module used directly is declared
    directly, not left to arrive through another dependency."""
    sources = [REPO / "radsynth", REPO / "workflow" / "scripts", REPO / "tests", REPO / "bench"]
    sources = [path for folder in sources for path in folder.rglob("*.py")]
    providers = packages_distributions()
    declared, local = declared_distributions(), local_modules()
    undeclared = {}
    for path in sources:
        for module in top_level_imports(path) - local - set(sys.stdlib_module_names):
            distributions = {canonicalize_name(name) for name in providers.get(module, [])}
            if not distributions & declared:
                undeclared.setdefault(module, []).append(path.relative_to(REPO).as_posix())
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
