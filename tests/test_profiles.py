"""Dry runs of the paper preset with the cluster profile: what each job would ask SLURM for."""

import re
import shutil

import pytest
import yaml

from conftest import REPO, run_snakemake


def planned_resources(dry_run_output: str) -> dict[str, list[dict[str, str]]]:
    """rule name -> the resources line of each planned job, parsed into key=value pairs."""
    plan: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        name = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"resources: (.*)", block)
        if name and resources:
            pairs = dict(item.split("=", 1) for item in resources.group(1).split(", "))
            plan.setdefault(name.group(1), []).append(pairs)
    return plan


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
    result = run_snakemake(
        workdir, "-n", "--configfile", str(REPO / "config/csxa.yaml"),
        "--workflow-profile", str(REPO / "profiles/slurm"),
    )
    return planned_resources(result.stdout + result.stderr)


def test_training_jobs_request_an_a100_below_24_hours(slurm_plan):
    jobs = slurm_plan["train"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["gpu"] == "1" and job["gpu_model"] == "a100" and "gres" not in job
        assert job["cpus_per_gpu"] == "8"
        assert job["slurm_partition"] == "<GPU_PARTITION>"
        assert int(job["mem_mb"]) == 64000
        assert int(job["runtime"]) == 23 * 60 + 45 < 24 * 60


def test_paper_run_without_ratings_plans_up_to_the_rating_form(slurm_plan):
    assert "rating_form" in slurm_plan and "turing_stats" not in slurm_plan


def test_cpu_jobs_use_the_default_partition(slurm_plan):
    for job in slurm_plan["preprocess"]:
        assert job["slurm_partition"] == "<CPU_PARTITION>" and "gpu" not in job


def test_sampling_shards_request_a_v100_each_under_the_limit(slurm_plan):
    jobs = slurm_plan["sample_shard"]
    assert len(jobs) == 3 * (1 + 4)  # 3 checkpoints x (initial 1,000 in 1 shard + large 8,000 in 4)
    for job in jobs:
        assert job["gpu"] == "1" and job["gpu_model"] == "v100"
        assert int(job["runtime"]) < 24 * 60


def test_shards_are_submitted_as_job_arrays():
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    assert profile["slurm-array-jobs"] == "sample_shard"
    assert profile["jobs"] <= 50
