"""The package mirrors the workflow: a stage imports `core` and the file formats of the stages
before it, never another stage's work and never a later stage."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radsynth"

#: Stages in DAG order (workflow/rules/<stage>.smk <-> radsynth/<stage>/).
STAGE_ORDER = (
    "core",
    "data",
    "demo",
    "train",
    "sample",
    "evaluate",
    "anatomy",
    "audit",
    "turing",
    "release",
)

#: The modules through which a stage's files are read by the stages after it.
FORMAT_MODULES = {
    "radsynth.data.atlas",  # the preprocessed HDF5 atlas
    "radsynth.data.split",  # the split manifest
    "radsynth.data.csxa",  # CSXA's on-disk format (file stems, keypoint labels)
    "radsynth.train.labels",  # checkpoint labels
    "radsynth.train.checkpoint_io",  # history checkpoints, loss log, checkpoint index
    "radsynth.sample.plan",  # how a sample set is cut into shards
    "radsynth.sample.store",  # Zarr shard stores and the gathered manifest
    "radsynth.sample.facing",  # the facing classifier file, applied to real images too
    "radsynth.anatomy.landmark_export",  # the landmark CSV (radsynth landmarks, SET_LANDMARKS)
    "radsynth.anatomy.landmark_model",  # the landmark model file, applied by the audit's screen
    # the anatomy stage's result tables (landmark summary, fidelity.csv, FD, two-sample, utility
    # summary; no torch), read by the release's dataset card
    "radsynth.anatomy.tables",
    "radsynth.audit.screening",  # the screening manifest and merged table (no torch): Table S1
    "radsynth.audit.patch_distance",  # the pair distance the audit's files record
}


def imported_modules(path: Path) -> set[str]:
    """Every radsynth module a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("radsynth.")}


def module_name(path: Path) -> str:
    return ".".join(("radsynth", *path.relative_to(PACKAGE).with_suffix("").parts))


def existing_modules() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")} | {
        ".".join(("radsynth", *path.relative_to(PACKAGE).parts))
        for path in PACKAGE.rglob("*")
        if path.is_dir()
    }


def stage_of(module: str) -> str:
    return module.split(".")[1]


def violations(stage: str) -> list[str]:
    known = existing_modules()
    found = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        for target in sorted(imported_modules(path) & known):
            other = stage_of(target)
            if other in (stage, "core") or target.endswith("__init__"):
                continue
            if other not in STAGE_ORDER:
                found.append(f"{module_name(path)} imports {target}, which belongs to no stage")
            elif STAGE_ORDER.index(other) > STAGE_ORDER.index(stage):
                found.append(f"{module_name(path)} imports {target} of the later stage {other!r}")
            elif target not in FORMAT_MODULES and f"radsynth.{other}" != target:
                found.append(
                    f"{module_name(path)} imports {target}, which is {other}'s work, "
                    "not its file format"
                )
    return found


def test_every_stage_is_a_subpackage_named_after_its_rule_file():
    rules = {path.stem for path in (PACKAGE.parent / "workflow" / "rules").glob("*.smk")} - {
        "common"
    }
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert set(STAGE_ORDER) <= packages
    assert rules <= packages, f"rule files without a package: {sorted(rules - packages)}"


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_stage_imports_only_core_and_earlier_file_formats(stage):
    assert violations(stage) == []


def test_core_imports_no_stage():
    core = [
        t
        for path in (PACKAGE / "core").rglob("*.py")
        for t in imported_modules(path) & existing_modules()
    ]
    assert sorted({t for t in core if stage_of(t) != "core"}) == []


def test_the_check_catches_a_later_stage_import(tmp_path, monkeypatch):
    """The walker is not vacuous: a planted import of a later stage, and of another stage's work,
    fail."""
    fake = tmp_path / "radsynth"
    for stage in STAGE_ORDER:
        (fake / stage).mkdir(parents=True)
        (fake / stage / "__init__.py").write_text("")
    (fake / "sample" / "gather.py").write_text("")
    (fake / "sample" / "store.py").write_text("")
    (fake / "train" / "loop.py").write_text("from radsynth.sample.store import open_samples\n")
    (fake / "turing" / "study.py").write_text(
        "import radsynth.sample.gather\nfrom radsynth.sample.store import x\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert violations("train") == [
        "radsynth.train.loop imports radsynth.sample.store of the later stage 'sample'"
    ]
    assert violations("turing") == [
        "radsynth.turing.study imports radsynth.sample.gather, which is sample's work, "
        "not its file format"
    ]
