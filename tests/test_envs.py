"""Every rule's conda env holds what its script needs (`--sdm conda` on the cluster).

A rule's script needs every third-party package it imports and, transitively, that every radsynth
module it imports does (function-level imports included). The post-deploy scripts install radsynth
itself with --no-deps, so the env's own list is all there is. Snakemake appends the calling
Python's sys.path to a script's, so a missing package can go unnoticed on a machine that has it
elsewhere: this test is what catches it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from workflow_parse import REPO, rule_directives

RULES_DIR = REPO / "workflow/rules"
ENVS = REPO / "envs"
#: Distributions whose conda-forge package has another name than on PyPI.
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
PYPI_NAMES = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
#: A conda dependency as the env files write it: `name`, `name =version` or `name =version=build`.
CONDA_SPEC = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]+)(?:\s*=(?P<version>[^=\s]+)(?:=(?P<build>\S+))?)?"
)
#: What the statistics env (R through rpy2) must not need: the deep-learning stack.
TORCH_STACK = {"torch", "torchvision", "diffusers", "accelerate", "safetensors"}
#: Rules that only merge tables or package files: they run in an env without torch.
TORCH_FREE_RULES = ("merge_pair_verdicts", "merge_screening", "release_package")


def script_rules() -> dict[str, tuple[Path, Path]]:
    """Rule -> (its conda env file, its script), resolved as Snakemake resolves them."""
    found = {}
    for rule, directives in rule_directives().items():
        assert "conda" in directives and "script" in directives, (
            f"rule {rule} lacks a conda: or script: line"
        )
        found[rule] = (
            (RULES_DIR / directives["conda"]).resolve(),
            (RULES_DIR / directives["script"]).resolve(),
        )
    return found


def module_file(module: str) -> Path | None:
    """The file of a radsynth module or package, or None when the name is not one (an attribute)."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Every module name a file imports anywhere in it, relative imports made absolute."""
    package = (
        ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        if path.is_relative_to(REPO / "radsynth")
        else ""
    )
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> dict[str, Path]:
    """Top-level third-party import name -> a file that imports it, over the script and every
    radsynth module (and enclosing package) it reaches."""
    found: dict[str, Path] = {}
    pending, seen = [script], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path):
            top = name.split(".")[0]
            if top == "radsynth":
                parts = name.split(".")
                pending.extend(
                    f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))
                )
            elif top not in sys.stdlib_module_names:
                found.setdefault(top, path)
    return found


@cache
def import_owners() -> dict[str, list[str]]:
    """Top-level import name -> the venv's distributions providing it (a full scan: done once)."""
    return packages_distributions()


def shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def needed_distributions(script: Path) -> dict[str, str]:
    """Distribution (canonical name) -> why the script needs it ("import <name> in <file>")."""
    owners = import_owners()
    needed = {}
    for name, path in sorted(third_party_imports(script).items()):
        assert name in owners, (
            f"{shown(path)} imports {name}, which no installed distribution provides"
        )
        for distribution in owners[name]:
            needed.setdefault(canonicalize_name(distribution), f"import {name} in {shown(path)}")
    return needed


@cache
def env_dependencies(env_file: Path) -> dict[str, tuple[str | None, str]]:
    """Dependency (canonical PyPI name) -> (pinned version or None, "conda" or "pip")."""
    deps = {}
    for entry in yaml.safe_load(env_file.read_text())["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                requirement = Requirement(line)
                pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
                deps[canonicalize_name(requirement.name)] = (
                    pins[0] if len(pins) == 1 else None,
                    "pip",
                )
        else:
            spec = CONDA_SPEC.fullmatch(entry)
            assert spec, f"{env_file.name}: cannot read the dependency {entry!r}"
            name = PYPI_NAMES.get(spec["name"], spec["name"])
            deps[canonicalize_name(name)] = (spec["version"], "conda")
    return deps


def constraints() -> dict[str, str]:
    """The resolved versions the venv is installed with."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    return pins


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def rules_of(env_name: str) -> list[str]:
    return sorted(rule for rule, (env, _) in script_rules().items() if env.name == env_name)


@pytest.mark.parametrize("rule", sorted(script_rules()))
def test_rule_env_holds_every_package_its_script_imports(rule):
    env_file, script = script_rules()[rule]
    assert env_file.parent == ENVS and env_file.is_file(), f"rule {rule}: no env file {env_file}"
    deps = env_dependencies(env_file)
    missing = {name: why for name, why in needed_distributions(script).items() if name not in deps}
    assert not missing, f"rule {rule}: envs/{env_file.name} lacks {missing}"


def test_import_walk_follows_radsynth_modules_packages_and_function_level_imports(
    tmp_path, monkeypatch
):
    """Planted tree: each third-party package is reachable only one way (an enclosing package,
    a function body, a relative import, the script itself)."""
    turing = tmp_path / "radsynth/turing"
    turing.mkdir(parents=True)
    (tmp_path / "radsynth/__init__.py").write_text("import yaml\n")
    (turing / "__init__.py").write_text("")
    (turing / "stats.py").write_text("import json\n\n\ndef r():\n    import rpy2.robjects as ro\n")
    (turing / "figures.py").write_text(
        "from . import stats\nfrom matplotlib.figure import Figure\n"
    )
    (turing / "form.py").write_text("import jinja2\n")
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\nfrom radsynth.turing.figures import plot_rating_violins\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert third_party_imports(script) == {
        "numpy": script,
        "yaml": tmp_path / "radsynth/__init__.py",
        "matplotlib": turing / "figures.py",
        "rpy2": turing / "stats.py",
    }


def test_missing_dependency_is_named(tmp_path):
    """A script that imports a package its env lacks fails the check with the package named."""
    script = tmp_path / "script.py"
    script.write_text("def f():\n    import zarr\n")
    missing = set(needed_distributions(script)) - set(env_dependencies(ENVS / "stats.yaml"))
    assert missing == {"zarr"}


def test_statistics_env_needs_and_holds_no_torch():
    rules = rules_of("stats.yaml")
    assert rules == ["simulate_ratings", "turing_figures", "turing_stats"]
    for rule in rules:
        needed = needed_distributions(script_rules()[rule][1])
        assert not TORCH_STACK & set(needed), (
            f"rule {rule} needs {sorted(TORCH_STACK & set(needed))}"
        )
    assert not TORCH_STACK & set(env_dependencies(ENVS / "stats.yaml"))


@pytest.mark.parametrize("rule", TORCH_FREE_RULES)
def test_merge_and_release_rules_import_nothing_of_torch(rule):
    """Statically (the import walk, function-level imports included) and by importing every
    radsynth module the script imports in a Python where the torch stack cannot be imported."""
    env_file, script = script_rules()[rule]
    assert not TORCH_STACK & set(env_dependencies(env_file)), f"rule {rule}: {env_file.name}"
    needed = needed_distributions(script)
    assert not TORCH_STACK & set(needed), {name: needed[name] for name in TORCH_STACK & set(needed)}
    modules = sorted(name for name in imports_of(script) if module_file(name))
    assert modules, f"{shown(script)} imports no radsynth module"
    probe = "import sys\n" + "".join(
        f"sys.modules[{name!r}] = None\n" for name in sorted(TORCH_STACK)
    )
    probe += "".join(f"import {module}\n" for module in modules)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"rule {rule}: {result.stderr[-2000:]}"


def test_the_torch_probe_fails_where_torch_is_imported():
    """The probe above is not vacuous: a module that needs torch fails it."""
    probe = "import sys\nsys.modules['torch'] = None\nimport radsynth.audit.scoring\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "torch" in result.stderr


@pytest.mark.parametrize("env_file", env_files(), ids=lambda path: path.name)
def test_env_pins_the_versions_of_constraints(env_file):
    pinned = constraints()
    for name, (version, _) in env_dependencies(env_file).items():
        if name == "pip":
            continue
        assert version is not None, f"{env_file.name}: {name} has no version"
        if name in pinned:
            assert version == pinned[name], (
                f"{env_file.name}: {name} {version}, constraints.txt {pinned[name]}"
            )


@pytest.mark.parametrize("env_file", env_files(), ids=lambda path: path.name)
def test_pip_installs_nothing_the_env_does_not_list(env_file):
    """pip resolves a pip-section package's own requirements; each must be listed too, so no
    unpinned version arrives with it."""
    deps = env_dependencies(env_file)
    for name, (_, installer) in deps.items():
        if installer != "pip":
            continue
        try:
            requirements = [Requirement(line) for line in requires(name) or []]
        except PackageNotFoundError:
            pytest.fail(
                f"{env_file.name}: {name} is not installed in the venv to read its requirements"
            )
        for requirement in requirements:
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in deps, (
                    f"{env_file.name}: pip installs {requirement.name} for {name}, "
                    f"which the env does not list"
                )


@pytest.mark.parametrize("env_file", env_files(), ids=lambda path: path.name)
def test_post_deploy_installs_radsynth_without_dependencies(env_file):
    script = env_file.with_name(f"{env_file.stem}.post-deploy.sh")
    installs = [line for line in script.read_text().splitlines() if "pip install" in line]
    assert installs, f"{script.name} does not install radsynth"
    assert all("--no-deps" in line for line in installs), f"{script.name}: {installs}"


def test_every_env_is_used():
    used = {env.name for env, _ in script_rules().values()}
    assert used == {path.name for path in env_files()}
