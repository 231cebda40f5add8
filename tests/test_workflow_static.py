"""The workflow's static checks: the lint and format gates the Snakemake catalog runs, and
config validation against the schema."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
PRESETS = sorted((REPO / "config").glob("*.yaml"))


def load_config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("configfile", [p.name for p in PRESETS])
def test_snakemake_lint_is_clean(configfile):
    result = subprocess.run(
        [BIN / "snakemake", "--lint", "--configfile", f"config/{configfile}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "Snakefile", "workflow"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("configfile", [p.name for p in PRESETS])
def test_presets_validate(configfile):
    validate(load_config(configfile), str(SCHEMA))


def test_unknown_key_is_named():
    config = load_config("config.yaml")
    config["preprocess"]["sise"] = 64
    with pytest.raises(WorkflowError, match="sise"):
        validate(config, str(SCHEMA))


def test_mistyped_value_is_named():
    config = load_config("config.yaml")
    config["split"]["val_fraction"] = "fifteen percent"
    with pytest.raises(WorkflowError, match="val_fraction"):
        validate(config, str(SCHEMA))


def test_operational_defaults_are_filled():
    config = load_config("config.yaml")
    del config["preprocess"]["qc"]
    validate(config, str(SCHEMA))
    assert config["preprocess"]["qc"] == {"n_examples": 16, "seed": 0}


def test_paper_preset_stands_alone():
    """csxa.yaml must not inherit a value from the demo config: it sets every key the demo sets."""
    def keys(tree, prefix=""):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            yield path
            if isinstance(value, dict) and value:
                yield from keys(value, path + ".")

    demo, paper = load_config("config.yaml"), load_config("csxa.yaml")
    missing = {k for k in keys(demo) if not k.startswith("data.demo")} - set(keys(paper))
    assert not missing, f"config/csxa.yaml lacks {sorted(missing)}"
