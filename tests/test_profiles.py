"""Dry runs of the paper preset with the cluster profile: what each job would ask SLURM for.

The sbatch options are rendered by the SLURM executor plugin's own functions from the resources
Snakemake plans for each job, so a key the plugin ignores or misreads fails here. Expected numbers
come from the paper and config/csxa.yaml, not from the profile under test.
"""

import re
import shutil
from types import SimpleNamespace

import pytest
from conftest import REPO, run_snakemake
from snakemake.cli import parse_args
from snakemake.iocontainers import Namedlist
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

SLURM_PROFILE = REPO / "profiles/slurm"
#: Paper 2.4: every job is bounded by the 24-hour institutional runtime limit.
INSTITUTIONAL_LIMIT_MIN = 24 * 60
#: config/csxa.yaml train_jobs.max_wall_time_h (23 h of training) plus the 45 minutes the job
#: needs past its budget to save its state and exit.
TRAIN_RUNTIME_MIN = 23 * 60 + 45
#: 3 selected checkpoints x (initial set: 1,000 images in 1 shard + large set: 8,000 in 4 shards),
#: and 8 FID checkpoints x 7,250 images in 5 shards.
N_SAMPLE_SHARDS = 3 * (1 + 4) + 8 * 5


def planned_jobs(dry_run_output: str) -> dict[str, list[dict[str, str]]]:
    """rule name -> each planned job's resources (key=value pairs) plus its `threads`."""
    plan: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        name = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"resources: (.*)", block)
        if name and resources:
            job = dict(item.split("=", 1) for item in resources.group(1).split(", "))
            threads = re.search(r"threads: (\d+)", block)
            job["threads"] = threads.group(1) if threads else "1"
            plan.setdefault(name.group(1), []).append(job)
    return plan


def sbatch_call(job: dict[str, str]) -> str:
    """The sbatch command line the SLURM plugin builds for a planned job (account and partition,
    which the plugin checks against the live cluster, left out)."""
    resources = {key: int(value) if value.isdigit() else value for key, value in job.items()}
    planned = SimpleNamespace(resources=Namedlist(fromdict=resources), threads=resources["threads"])
    params = {
        "run_uuid": "dry-run",
        "slurm_logfile": "slurm.log",
        "comment_str": "dry-run",
        "account": "",
        "partition": "",
        "workdir": "",
    }
    return get_submit_command(planned, params) + set_gres_string(planned)


def sbatch_option(call: str, pattern: str) -> str | None:
    """The value of one sbatch option (`pattern` is the option with a capture group), if present."""
    found = re.search(pattern, call)
    return found.group(1) if found else None


def is_gpu_job(job: dict[str, str]) -> bool:
    return re.search(r"--gpus=|--gres=gpu", sbatch_call(job)) is not None


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
    result = run_snakemake(
        workdir,
        "-n",
        "--configfile",
        str(REPO / "config/csxa.yaml"),
        "--workflow-profile",
        str(SLURM_PROFILE),
        # On the cluster a job's threads are not capped by this machine's cores (the last
        # --cores given wins over the 2 that run_snakemake passes).
        "--cores",
        "64",
    )
    return planned_jobs(result.stdout + result.stderr)


@pytest.fixture(scope="module")
def slurm_settings(tmp_path_factory):
    """The profile as Snakemake's command line and the SLURM plugin read it."""
    workdir = tmp_path_factory.mktemp("slurm_settings")
    _, args = parse_args(
        [
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "-n",
            "--workflow-profile",
            str(SLURM_PROFILE),
        ]
    )
    return args, ExecutorPluginRegistry().get_plugin(args.executor).get_settings(args)


def test_training_jobs_ask_for_one_a100_for_the_budget_plus_shutdown_margin(slurm_plan):
    jobs = slurm_plan["train"]
    # the split run; the full run in segments ending at each FID step (20k, 40k, ..., 160k) and at
    # the selected 68k and 80k
    assert len(jobs) == 1 + 9
    for job in jobs:
        call = sbatch_call(job)
        assert sbatch_option(call, r"--gpus=(\S+)") == "a100:1"
        assert "--gres" not in call
        assert int(sbatch_option(call, r" -t '?(\d+)")) == TRAIN_RUNTIME_MIN


def test_sampling_shards_ask_for_one_v100_each_under_the_limit(slurm_plan):
    jobs = slurm_plan["sample_shard"]
    assert len(jobs) == N_SAMPLE_SHARDS
    for job in jobs:
        call = sbatch_call(job)
        assert sbatch_option(call, r"--gpus=(\S+)") == "v100:1"
        assert int(sbatch_option(call, r" -t '?(\d+)")) < INSTITUTIONAL_LIMIT_MIN


def test_fid_jobs_ask_for_one_v100_each(slurm_plan):
    assert len(slurm_plan["real_features"]) == 1 and len(slurm_plan["fid_checkpoint"]) == 8
    for job in slurm_plan["real_features"] + slurm_plan["fid_checkpoint"]:
        assert sbatch_option(sbatch_call(job), r"--gpus=(\S+)") == "v100:1"


@pytest.mark.parametrize("rule", ["train", "sample_shard", "real_features", "fid_checkpoint"])
def test_gpu_jobs_get_a_cpu_for_each_planned_thread(slurm_plan, rule):
    for job in slurm_plan[rule]:
        call = sbatch_call(job)
        n_gpus = int(sbatch_option(call, r"--gpus=\w+:(\d+)"))
        cpus_per_gpu = sbatch_option(call, r"--cpus-per-gpu=(\d+)")
        assert cpus_per_gpu is not None, call
        assert int(cpus_per_gpu) * n_gpus >= int(job["threads"])


def test_every_job_asks_for_a_runtime_within_the_institutional_limit(slurm_plan):
    for rule, jobs in slurm_plan.items():
        for job in jobs:
            runtime = sbatch_option(sbatch_call(job), r" -t '?(\d+)")
            assert runtime is not None and int(runtime) < INSTITUTIONAL_LIMIT_MIN, rule


def test_gpu_and_cpu_jobs_go_to_separate_partitions(slurm_plan):
    jobs = [job for rule_jobs in slurm_plan.values() for job in rule_jobs]
    gpu_partitions = {job["slurm_partition"] for job in jobs if is_gpu_job(job)}
    cpu_partitions = {job["slurm_partition"] for job in jobs if not is_gpu_job(job)}
    assert len(gpu_partitions) == 1 and len(cpu_partitions) == 1
    assert gpu_partitions.isdisjoint(cpu_partitions)
    assert all(not is_gpu_job(job) for job in slurm_plan["preprocess"] + slurm_plan["train_facing"])


def test_paper_run_without_ratings_plans_up_to_the_rating_form(slurm_plan):
    assert "rating_form" in slurm_plan and "turing_stats" not in slurm_plan


def test_all_sampling_shards_go_to_slurm_as_one_job_array(slurm_plan, slurm_settings):
    args, settings = slurm_settings
    assert args.executor == "slurm"
    # As the plugin splits --slurm-array-jobs into rule names.
    array_rules = {rule.strip() for rule in settings.array_jobs.replace(";", ",").split(",")}
    assert array_rules == {"sample_shard"} and array_rules <= slurm_plan.keys()
    # Every shard of the paper preset (the FID sets included) fits one array submission, and all
    # may run at once.
    assert int(settings.array_limit) >= N_SAMPLE_SHARDS
    assert args.jobs >= N_SAMPLE_SHARDS
