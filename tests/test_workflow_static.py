"""The workflow's static checks: the lint and format gates the Snakemake catalog runs, config
validation against the schema, every rule's log and benchmark, a DAG build that stays light, and
the Debian packages `make demo` and `make test` ask for."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from workflow_parse import REPO, rule_directives

BIN = Path(sys.executable).parent
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
PRESETS = sorted((REPO / "config").glob("*.yaml"))
#: Modules whose import would make building the DAG slow (seconds each) or start R.
HEAVY_MODULES = ("torch", "diffusers", "zarr", "rpy2")


def load_config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("configfile", [p.name for p in PRESETS])
def test_snakemake_lint_is_clean(configfile):
    result = subprocess.run(
        [BIN / "snakemake", "--lint", "--configfile", f"config/{configfile}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
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


def test_a_missing_key_is_named():
    """Defaults live in the presets only: a config without a key the code reads is refused."""
    config = load_config("config.yaml")
    del config["preprocess"]["qc"]
    with pytest.raises(WorkflowError, match="'qc' is a required property"):
        validate(config, str(SCHEMA))


def test_paper_preset_replaces_the_demo_config_instead_of_merging_into_it(tmp_path):
    """With --configfile, the demo's config.yaml is not loaded: its diffusers-only keys
    (model.layers_per_block) would otherwise leak into the lucidrains paper preset and fail its
    schema."""
    demo = load_config("config.yaml")
    assert demo["model"]["architecture"] == "diffusers" and "layers_per_block" in demo["model"]
    assert "layers_per_block" not in load_config("csxa.yaml")["model"]
    result = subprocess.run(
        [BIN / "snakemake", "-n", "--configfile", "config/csxa.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"Config file(s): [PosixPath('{REPO}/config/csxa.yaml')]" in result.stdout + result.stderr
    )


def test_rule_parser_reads_every_rule_and_checkpoint():
    rules = rule_directives()
    assert {"demo_atlas", "train", "sample_shard", "turing_stats", "select_checkpoints"} <= set(
        rules
    )
    assert rules["select_checkpoints"]["log"] == "logs/select_checkpoints/select_checkpoints.log"
    assert rules["sample_shard"]["script"] == "../scripts/sample_shard.py"
    assert rules["sample_shard"]["conda"] == "../../envs/torch.yaml"


@pytest.mark.parametrize("rule", sorted(rule_directives()))
def test_every_rule_logs_and_benchmarks_under_its_name(rule):
    directives = rule_directives()[rule]
    log = re.fullmatch(rf"logs/{rule}/(.+)\.log", directives.get("log", ""))
    assert log, f"rule {rule}: log {directives.get('log')!r} is not logs/{rule}/<wildcards>.log"
    assert directives.get("benchmark") == f"benchmarks/{rule}/{log[1]}.tsv"


def test_paper_dag_build_imports_nothing_heavy(tmp_path):
    """common.smk plans jobs with radsynth's light modules: a dry run of the paper preset, run
    in-process, must leave torch, diffusers, zarr and rpy2 unimported."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", tmp_path / "config/config.yaml")
    probe = textwrap.dedent(
        f"""
        import json
        import sys
        from snakemake.cli import main

        try:
            main(sys.argv[1:])
        except SystemExit as exit:
            status = exit.code
        heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
        print(json.dumps({{"status": status, "heavy": heavy}}))
        """
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "-s",
            REPO / "Snakefile",
            "-d",
            tmp_path,
            "-n",
            "--configfile",
            REPO / "config/csxa.yaml",
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["status"] == 0, result.stdout + result.stderr
    assert "sample_shard" in result.stdout + result.stderr, "the dry run planned no sampling jobs"
    assert outcome["heavy"] == []


@pytest.mark.parametrize(
    "goals, needs",
    [
        (["demo"], ["r"]),
        (["test"], ["r", "chromium", "slurm"]),
        (["demo", "test"], ["r", "chromium", "slurm"]),
        (["slurm-test"], ["r", "slurm"]),
    ],
)
def test_make_asks_for_chromium_and_slurm_only_for_the_tests(goals, needs):
    result = subprocess.run(
        ["make", "-n", *goals], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    calls = [
        line.split()[1:]
        for line in result.stdout.splitlines()
        if line.startswith("tools/ensure-system-deps.sh")
    ]
    assert calls == [needs], result.stdout + result.stderr


def fake_commands(folder: Path, **scripts: str) -> dict[str, str]:
    """An environment whose PATH holds only the given shell one-liners as commands."""
    folder.mkdir()
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return {"PATH": str(folder)}


def test_system_deps_look_only_for_what_is_asked(tmp_path):
    env = fake_commands(tmp_path / "bin", Rscript="true", id="echo 1000")
    script = REPO / "tools/ensure-system-deps.sh"
    demo = subprocess.run(
        ["/bin/bash", script, "r"], env=env, capture_output=True, text=True, timeout=30
    )
    assert (demo.returncode, demo.stderr) == (0, "")
    tests = subprocess.run(
        ["/bin/bash", script, "r", "chromium"], env=env, capture_output=True, text=True, timeout=30
    )
    assert tests.returncode == 1
    assert "radsynth needs these Debian packages: chromium\n" in tests.stderr
    unknown = subprocess.run(
        ["/bin/bash", script, "latex"], env=env, capture_output=True, text=True, timeout=30
    )
    assert unknown.returncode == 2 and "latex" in unknown.stderr


def dry_run_jobs(tmp_path: Path, config: dict) -> dict[str, int]:
    """rule -> job count of the workflow's dry run in an empty working directory."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--quiet",
            "rules",
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE)
        if m[1] != "total"
    }


def test_auto_selection_plans_sampling_after_the_runs(tmp_path):
    """With `auto`, the checkpoints to sample are known only once both runs have finished; the FID
    sets (which the selection needs) are planned at once, at the full run's FID segments."""
    config = load_config("config.yaml")
    config["checkpoints"]["selected"] = "auto"
    config["training"].update(num_steps=600, checkpoint_every=50)
    config["evaluate"]["every_steps"] = 300
    config["evaluate"]["samples"].update(n_images=10, images_per_shard=5)
    jobs = dry_run_jobs(tmp_path, config)
    assert jobs["train"] == 1 + 2, (
        "the split run, and the full run in segments ending at steps 300 and 600"
    )
    assert jobs["select_checkpoints"] == 1 and jobs["fid_checkpoint"] == 2
    assert jobs["sample_shard"] == 2 * 2, "two FID shards at each of checkpoints 6 and 12"
    assert "gather_samples" not in jobs and "build_quartets" not in jobs


def test_configured_checkpoints_train_in_segments(tmp_path):
    """A configured checkpoint's sampling hangs on the segment that ends at it, not on the whole
    run."""
    config = load_config("config.yaml")
    config["checkpoints"]["selected"] = [2, 7]
    config["turing"]["simulation"]["mean_rating_checkpoints"] = [3.1, 3.2]
    config["training"].update(num_steps=600, checkpoint_every=50)
    config["evaluate"]["every_steps"] = 300
    config["evaluate"]["samples"].update(n_images=10, images_per_shard=10)
    config["sampling"]["sets"] = {
        "initial": {"n_images": 4, "images_per_shard": 4},
        "large": {"n_images": 8, "images_per_shard": 3},
    }
    config["turing"]["n_quartets"] = 4  # one image of the initial set per quartet
    jobs = dry_run_jobs(tmp_path, config)
    assert jobs["train"] == 1 + 4, (
        "split run; full run segments ending at steps 100, 300 (FID), 350, 600"
    )
    assert jobs["sample_shard"] == 2 * (1 + 3) + 2, (
        "per selected checkpoint 1 + 3 shards; one FID shard each at 300, 600"
    )


def test_standard_fid_weights_are_fetched_by_a_localrule_before_any_feature_job(tmp_path):
    """With the fid-inception extractor, one local job fetches the weights file that the
    real-feature and every FID job take as input; with the offline Inception there is nothing to
    fetch."""
    config = load_config("config.yaml")
    config["evaluate"]["extractor"] = load_config("csxa.yaml")["evaluate"]["extractor"]
    jobs = dry_run_jobs(tmp_path, config)
    assert jobs["fetch_weights"] == 1 and jobs["real_features"] == 1
    assert "fetch_weights" not in dry_run_jobs(tmp_path / "offline", load_config("config.yaml"))
    assert (
        (REPO / "workflow/rules/evaluate.smk")
        .read_text()
        .startswith("localrules:\n    fetch_weights,")
    )


def test_the_audits_vit_weights_are_fetched_by_the_same_localrule(tmp_path):
    """The paper's ViT encoder: one more local fetch, an input of the memorization audit alone."""
    config = load_config("config.yaml")
    config["evaluate"]["extractor"] = load_config("csxa.yaml")["evaluate"]["extractor"]
    config["audit"]["memorization"] = load_config("csxa.yaml")["audit"]["memorization"]
    assert dry_run_jobs(tmp_path, config)["fetch_weights"] == 2
    plan = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            "results/audit/memorization",
            "--quiet",
            "rules",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"^fetch_weights\s+1$", plan, re.MULTILINE), plan
