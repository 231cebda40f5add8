"""Dry runs of the paper preset with the cluster profile: what each job would ask SLURM for; and
with the local profile: which training jobs a machine's memory lets run side by side.

The sbatch options are rendered by the SLURM executor plugin's own functions from the resources
Snakemake plans for each job, so a key the plugin ignores or misreads fails here. Expected numbers
come from the paper and config/csxa.yaml, not from the profile under test. Which ready jobs start
together is decided by Snakemake's own job selectors (greedy and MILP) from the planned resources.
"""

import logging
import re
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from conftest import REPO, run_snakemake
from snakemake.cli import parse_args
from snakemake.iocontainers import Namedlist
from snakemake.scheduling import greedy, milp
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

from radsynth.core.resources import host_gpu_count, host_memory_mb

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


def paper_slurm_plan(workdir, *targets):
    """The jobs a dry run of the paper preset with the cluster profile plans (all of them, or
    those `targets` need)."""
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
        *targets,
    )
    return planned_jobs(result.stdout + result.stderr)


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory):
    return paper_slurm_plan(tmp_path_factory.mktemp("slurm"))


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


#: The anatomy stage's jobs that train or apply a network (the landmark model, the utility
#: students, the two-sample classifier), and a target of each in the paper preset: a FID
#: checkpoint (20,000 / 2,000) and a selected one. The stage's other jobs only read tables.
ANATOMY_NETWORK_TARGETS = {
    "landmark_train": "results/anatomy/landmark_model.safetensors",
    "landmark_evaluation": "results/anatomy/evaluation/summary.csv",
    "set_landmarks": "results/anatomy/landmarks/large/ckpt034.csv",
    "utility_students": "results/anatomy/utility/students.csv",
    "atlas_landmark_features": "results/anatomy/fidelity/atlas_landmark_features.npz",
    "landmark_fd": "results/anatomy/fidelity/landmark_fd/ckpt010.json",
    "real_floor": "results/anatomy/fidelity/real_floor.json",
    "two_sample": "results/anatomy/two_sample/ckpt010.json",
}
ANATOMY_TABLE_TARGETS = {
    "utility_figure": "results/anatomy/utility/summary.csv",
    "two_sample_table": "results/anatomy/two_sample.csv",
}


@pytest.fixture(scope="module")
def anatomy_plan(tmp_path_factory):
    """The anatomy jobs of the paper preset with the cluster profile. They wait for the atlas's
    keypoint check (a Snakemake checkpoint) in a whole-workflow plan, so they are asked for by
    their outputs."""
    return paper_slurm_plan(
        tmp_path_factory.mktemp("slurm_anatomy"),
        *ANATOMY_NETWORK_TARGETS.values(),
        *ANATOMY_TABLE_TARGETS.values(),
    )


def test_anatomy_network_jobs_ask_for_one_v100_each(anatomy_plan, slurm_plan):
    gpu_partitions = {
        job["slurm_partition"] for jobs in slurm_plan.values() for job in jobs if is_gpu_job(job)
    }
    for rule in ANATOMY_NETWORK_TARGETS:
        assert anatomy_plan.get(rule), rule
        for job in anatomy_plan[rule]:
            call = sbatch_call(job)
            assert sbatch_option(call, r"--gpus=(\S+)") == "v100:1", rule
            assert int(sbatch_option(call, r"--cpus-per-gpu=(\d+)")) >= int(job["threads"])
            assert int(sbatch_option(call, r" -t '?(\d+)")) < INSTITUTIONAL_LIMIT_MIN, rule
            assert job["slurm_partition"] in gpu_partitions, rule
    for rule in ANATOMY_TABLE_TARGETS:
        assert anatomy_plan.get(rule), rule
        assert not any(is_gpu_job(job) for job in anatomy_plan[rule]), rule


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


#: The machine of the issue: 2 cores, 24 GB, no GPU.
DECLARED_HOST_MB = 24000


def first_training_segments(dry_run_output: str) -> dict[str, dict[str, str]]:
    """Run name -> resources of the run's first training job (its lowest step: it needs only the
    atlas and the split, so the first segments of both runs are ready at the same time)."""
    firsts: dict[str, tuple[int, dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        if not block.startswith("rule train:"):
            continue
        wildcards = dict(
            item.split("=", 1) for item in re.search(r"wildcards: (.*)", block).group(1).split(", ")
        )
        resources = dict(
            item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", ")
        )
        step = int(wildcards["step"])
        if wildcards["run"] not in firsts or step < firsts[wildcards["run"]][0]:
            firsts[wildcards["run"]] = (step, resources)
    return {run: resources for run, (_, resources) in firsts.items()}


@dataclass(eq=False)  # hashed by identity, as Snakemake's jobs are
class ReadyJob:
    """What Snakemake's job selectors read of a ready job."""

    run: str
    scheduler_resources: dict[str, int]
    priority: int = 0
    input: tuple = ()


def started_together(jobs: dict[str, dict[str, str]], mem_mb: int) -> dict[str, list[str]]:
    """Selector name -> the runs whose ready jobs Snakemake's greedy and MILP job selectors start
    at once on a 2-core machine with `mem_mb` of memory."""
    ready = [
        ReadyJob(run, {"_cores": 1, "mem_mb": int(resources["mem_mb"])})
        for run, resources in jobs.items()
    ]
    available = {"_cores": 2, "mem_mb": mem_mb, "_job_count": len(ready)}
    selectors = {
        "greedy": greedy.Scheduler(None, greedy.SchedulerSettings(), logging.getLogger()),
        "milp": milp.Scheduler(None, milp.SchedulerSettings(), logging.getLogger()),
    }
    return {
        name: sorted(job.run for job in selector.select_jobs(ready, ready, available, {}))
        for name, selector in selectors.items()
    }


def dry_run(tmp_path, *args: str) -> str:
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", tmp_path / "config/config.yaml")
    result = run_snakemake(tmp_path, "-n", *args)
    return result.stdout + result.stderr


def test_the_local_profile_limits_jobs_to_this_machines_memory_and_gpus(tmp_path):
    _, args = parse_args(["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"])
    assert args.resources.get("mem_mb").value == host_memory_mb()
    assert args.resources.get("gpu").value == host_gpu_count()


def test_a_24_gb_machine_trains_the_paper_runs_one_after_the_other(tmp_path):
    output = dry_run(
        tmp_path,
        "--configfile",
        str(REPO / "config/csxa.yaml"),
        "--resources",
        f"mem_mb={DECLARED_HOST_MB}",
    )
    firsts = first_training_segments(output)
    assert sorted(firsts) == ["full", "split"]
    # The measured 2,294 MB per 256 px image of a batch of 8 alone is 18 GB.
    for resources in firsts.values():
        assert 8 * 2294 < int(resources["mem_mb"]) <= DECLARED_HOST_MB
    for name, started in started_together(firsts, DECLARED_HOST_MB).items():
        assert len(started) == 1, f"{name} starts {started} together"


def test_the_demo_still_trains_both_runs_side_by_side(tmp_path):
    """The demo's jobs are small: its two runs train side by side on a 2-core machine with as
    little as 4 GB, and with 8 GB no two of its jobs wait for each other's memory, as before
    jobs declared memory."""
    output = dry_run(tmp_path, "--resources", "mem_mb=4000")
    firsts = first_training_segments(output)
    assert sorted(firsts) == ["full", "split"]
    for name, started in started_together(firsts, 4000).items():
        assert started == ["full", "split"], name
    declared = sorted(
        int(job["mem_mb"])
        for jobs in planned_jobs(output).values()
        for job in jobs
        if "mem_mb" in job
    )
    assert len(declared) > 10 and declared[-1] + declared[-2] < 8000
