"""The demo through a real SLURM cluster, with the project's own profile.

A one-node cluster (tools/slurm-cluster: munged, slurmctld and slurmd of Debian's slurm-wlm 22.05,
partitions `cpu` and `gpu`, the node advertising A100 and V100 GPUs it does not have, so GPU jobs
run on the CPU) runs as child processes of this module. A tiny demo config goes to it through
snakemake-executor-plugin-slurm and a copy of profiles/slurm whose placeholders name the test
cluster:

1. `snakemake --profile slurm --workflow-profile none`: training and sampling, with a training
   budget shorter than one step, so the training job stops at its budget with exit status 75 and
   the profile's retry resumes it; each training job asks for 2 GPUs (train_jobs.gpus) and runs
   2 data-parallel processes (`accelerate launch`, gloo on the CPU); the sampling job array is
   cancelled with `scancel` once a shard has finished a batch, and the retried shards continue
   from their finished batches.
2. Meanwhile an uninterrupted local run of the same config (2 training processes too): the
   weights and images must equal it byte for byte. It also builds the Turing study and the
   statistics of 4 raters' files.
3. `snakemake --workflow-profile <the copy>` there after a fifth rater's file arrives: only the
   statistics and figure jobs are submitted.

What each job asked SLURM for is read back from `scontrol show job` (the controller keeps finished
jobs for an hour), not from the profile. The cluster has no slurmdbd, so there is no sacct: the
plugin polls squeue (`--slurm-status-command squeue`), and slurmctld appends every finished job
with its state and exit code to a jobcomp file.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from conftest import REPO, SNAKEMAKE, load_demo_config, write_workdir_config
from helpers import tiny
from safetensors.numpy import load_file

sys.path.insert(0, str(REPO / "tools/slurm-cluster"))
from cluster import Cluster, marked_processes  # noqa: E402

pytestmark = pytest.mark.e2e

PLACEHOLDERS = {
    "<SLURM_ACCOUNT>": "radsynth-test",
    "<CPU_PARTITION>": "cpu",
    "<GPU_PARTITION>": "gpu",
}
#: Options for this cluster only, on the command line rather than in the profile: no slurmdbd (so
#: no sacct: poll squeue), status checks from 5 s after a job ends instead of 40 s, SLURM logs kept.
TEST_CLUSTER_OPTIONS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "5",
    "--slurm-keep-successful-logs",
)
#: What the rater files feed (the Turing study's statistics and its figures).
STATISTICS = [
    "results/turing/statistics/statistics.json",
    "results/turing/figures/rating_violins.png",
]
#: The study: 3 pairs (one selected checkpoint) of the real image and a synthetic one.
QUARTETS, POSITIONS = (1, 2, 3), (1, 2)
CHECKPOINT = "ckpt001"
SHARDS = [f"results/samples/initial/{CHECKPOINT}/shard{k}.zarr" for k in range(2)]
#: The two training jobs the shards and the study need: the split run to its last step (2), the
#: full run to the selected checkpoint (step 1).
TRAINED = {
    "split": "results/train/split/reached/step2.json",
    "full": "results/train/full/reached/step1.json",
}
WORK_STORE = "results/samples/.work/initial/" + CHECKPOINT + "/shard{shard}.zarr.partial"
RUN_TIMEOUT_S = 900


def tiny_for_slurm(workdir: Path, *, max_wall_time_h: float) -> dict:
    """The tiny demo (helpers.tiny), smaller still: 2 training steps with a checkpoint each,
    checkpoint 1 selected (the full run's first segment is one step, so its shards start while the
    split run still trains), one sample set of 2 shards of 3 one-image batches of 100 steps (slow
    enough to cancel between batches), a study of 3 pairs, ratings from a folder; each training job
    on 2 GPUs (2 processes)."""
    config = tiny(load_demo_config(), workdir)
    config["training"].update(num_steps=2, checkpoint_every=1, state_every=1)
    config["checkpoints"]["selected"] = [1]
    config["evaluate"]["every_steps"] = 2
    config["sampling"].update(steps=100, batch_size=1)
    config["sampling"]["sets"] = {"initial": {"n_images": 6, "images_per_shard": 3}}
    if "audit" in config:
        config["audit"]["sample_sets"] = ["initial"]
    config["turing"].update(n_quartets=3, ratings="folder", ratings_folder="resources/ratings")
    config["train_jobs"]["max_wall_time_h"] = max_wall_time_h
    config["train_jobs"]["gpus"] = 2
    write_workdir_config(workdir, config)
    return config


# ------------------------------------------------------------------------------------------------
# The cluster and the profile


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip(
            "the test cluster needs root: slurmd starts jobs as their user and runs as root here"
        )
    if shutil.which("apt-get") is None and not all(
        map(shutil.which, ("slurmctld", "slurmd", "munged", "sbatch"))
    ):
        pytest.skip("SLURM and munge are not installed and there is no apt-get to install them")
    subprocess.run(
        [str(REPO / "tools/ensure-system-deps.sh"), "slurm"], check=True, stdout=subprocess.DEVNULL
    )
    cluster = Cluster(tmp_path_factory.mktemp("slurm-cluster"))
    with cluster:
        yield cluster
    daemons = {name: process.poll() for name, process in cluster.processes.items()}
    assert None not in daemons.values(), f"daemons still running: {daemons}"
    assert marked_processes(str(cluster.root)) == [], "processes of the test cluster left running"


@pytest.fixture(scope="module")
def profile_home(tmp_path_factory) -> Path:
    """An XDG config home holding snakemake/slurm: profiles/slurm with its placeholders filled."""
    home = tmp_path_factory.mktemp("xdg-config")
    profile = home / "snakemake" / "slurm"
    shutil.copytree(REPO / "profiles/slurm", profile)
    text = (profile / "profile.yaml").read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    (profile / "profile.yaml").write_text(text)
    return home


def test_the_cluster_has_a_cpu_and_a_gpu_partition_and_an_idle_node_with_a100_and_v100(cluster):
    partitions = cluster.run("sinfo", "--noheader", "--format=%P %a %t %D").stdout.split("\n")
    assert sorted(filter(None, partitions)) == ["cpu* up idle 1", "gpu up idle 1"]
    node = cluster.run("scontrol", "show", "node", cluster.node).stdout
    assert "Gres=gpu:a100:2,gpu:v100:4" in node and "Partitions=cpu,gpu" in node


def test_the_profile_copy_differs_only_by_the_placeholders(profile_home):
    original = (REPO / "profiles/slurm/profile.yaml").read_text()
    assert all(placeholder in original for placeholder in PLACEHOLDERS)
    filled = yaml.safe_load((profile_home / "snakemake/slurm/profile.yaml").read_text())
    assert "<" not in json.dumps(filled)
    assert filled["default-resources"]["slurm_partition"] == "cpu"
    assert filled["set-resources"]["train"]["slurm_partition"] == "gpu"
    assert sorted(p.name for p in (profile_home / "snakemake/slurm").iterdir()) == sorted(
        p.name for p in (REPO / "profiles/slurm").iterdir()
    )


# ------------------------------------------------------------------------------------------------
# The runs


@dataclass
class Run:
    """One snakemake call: its output, the SLURM run id the plugin gave it, and its jobs as the
    controller recorded them (scontrol show job after the run)."""

    output: str
    run_id: str = ""
    jobs: list[dict[str, str]] = field(default_factory=list)

    def started_rules(self) -> dict[str, int]:
        """rule -> how many jobs of it Snakemake started (retries included), as its log says."""
        counts: dict[str, int] = {}
        for rule in re.findall(r"^(?:local)?rule (\w+):$", self.output, re.MULTILINE):
            counts[rule] = counts.get(rule, 0) + 1
        return counts

    def slurm_rules(self) -> dict[str, int]:
        """rule -> how many SLURM jobs (array tasks one each) carry it, from their comment."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job_rule(job)] = counts.get(job_rule(job), 0) + 1
        return counts

    def of_rule(self, rule: str) -> list[dict[str, str]]:
        return sorted(
            (job for job in self.jobs if job_rule(job) == rule), key=lambda job: int(job["JobId"])
        )


def job_rule(job: dict[str, str]) -> str:
    """The rule of a SLURM job from the comment the plugin gives it (rule_<name>[_wildcards_...];
    the tasks of an array all carry their first job's)."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def parse_jobs(text: str) -> list[dict[str, str]]:
    """`scontrol show job --oneliner` as one dict per job (a value with spaces is kept whole)."""
    jobs = []
    for line in filter(None, text.splitlines()):
        job: dict[str, str] = {}
        key = None
        for token in line.split():
            if "=" in token and re.match(r"^[A-Za-z][\w/:]*=", token):
                key, value = token.split("=", 1)
                job[key] = value
            elif key is not None:
                job[key] += " " + token
        jobs.append(job)
    return jobs


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    try:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    finally:
        handle.close()


def finish(
    process: subprocess.Popen, log: Path, started: float, timeout: float = RUN_TIMEOUT_S
) -> Run:
    try:
        process.wait(timeout=max(1.0, started + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)  # Snakemake cancels its SLURM jobs on SIGINT
        process.wait(60)
    run = Run(output=log.read_text())
    if process.returncode != 0:
        raise AssertionError(
            f"{process.args}\nfailed ({process.returncode}):\n{run.output[-20000:]}"
        )
    found = re.search(r"SLURM run ID: (\S+)", run.output)
    run.run_id = found.group(1) if found else ""
    return run


def slurm_jobs(cluster: Cluster, run_id: str) -> list[dict[str, str]]:
    jobs = parse_jobs(cluster.run("scontrol", "show", "job", "--oneliner").stdout)
    return [job for job in jobs if job.get("JobName") == run_id]


def finished_batches(store: Path) -> np.ndarray | None:
    """The done flags of a sampling work store, or None while it cannot be read."""
    try:
        return np.asarray(zarr.open_group(str(store), mode="r")["batch_done"][:], dtype=bool)
    except Exception:  # noqa: BLE001 - not created yet, or a flag being written
        return None


def cancel_the_shards_between_batches(
    cluster: Cluster, workdir: Path, run: subprocess.Popen
) -> dict:
    """Watch the shards' work stores; once one has finished a batch and none is complete, scancel
    the job array sampling them (all its tasks: with snakemake-executor-plugin-slurm 2.8.0 a task
    cancelled alone makes the array's other tasks delete or wait for the first task's output,
    snakemake-executor-plugin-slurm#447). Returns the array's id and each shard's finished
    batches."""
    stores = [workdir / WORK_STORE.format(shard=shard) for shard in range(len(SHARDS))]
    while run.poll() is None:
        done = [finished_batches(store) for store in stores]
        seen = [flags for flags in done if flags is not None]
        if any(flags.any() for flags in seen) and not any(flags.all() for flags in seen):
            running = cluster.run(
                "squeue", "--noheader", "--states=RUNNING", "--format=%F|%k"
            ).stdout.split()
            arrays = {
                line.split("|")[0]
                for line in running
                if line.split("|")[1].startswith("rule_sample_shard")
            }
            if len(arrays) == 1:
                (array,) = arrays
                cluster.run("scancel", array)
                return {
                    "array": array,
                    "batches_done": [0 if flags is None else int(flags.sum()) for flags in done],
                }
        time.sleep(0.05)
    return {}


def write_rater(folder: Path, number: int) -> None:
    """Rater expert-NN's tidy CSV for the study of 3 pairs (1 real + 1 synthetic, positions 1-2):
    in quartet q they pick position (q + NN) % 2 + 1 as real and rate 1-4 by a fixed pattern."""
    rows = []
    for quartet in QUARTETS:
        chosen = POSITIONS[(quartet + number) % len(POSITIONS)]
        for position in POSITIONS:
            rows.append(
                {
                    "rater": f"expert-{number:02d}",
                    "quartet": quartet,
                    "position": position,
                    "chosen_real": int(position == chosen),
                    "rating": 1 + (quartet + number + position) % 4,
                }
            )
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"expert-{number:02d}.csv", index=False)


def correct_choices(key: pd.DataFrame, raters: range) -> int:
    """How many of the raters' picks (write_rater) are the real image of their pair."""
    real = {(row.quartet, row.position) for row in key.itertuples() if row.group == "real"}
    return sum(
        (quartet, POSITIONS[(quartet + number) % len(POSITIONS)]) in real
        for number in raters
        for quartet in QUARTETS
    )


@dataclass
class Scenario:
    workdir: Path
    reference: Path
    study: Run
    local: Run
    cancelled: dict
    statistics_before: dict
    ratings: Run
    jobcomp: str


@pytest.fixture(scope="module")
def scenario(cluster, profile_home, tmp_path_factory) -> Scenario:
    workdir = tmp_path_factory.mktemp("slurm-run")
    reference = tmp_path_factory.mktemp("local-run")
    # A budget far below one training step: each training job trains one step and stops.
    tiny_for_slurm(workdir, max_wall_time_h=1e-6)
    tiny_for_slurm(reference, max_wall_time_h=23.0)
    for number in range(1, 5):
        write_rater(reference / "resources/ratings", number)
    # Jobs here share the machine's cores (the node declares more than there are): OpenMP threads
    # spinning while they wait for a descheduled sibling make that ~5x slower. Passive waiting
    # changes no result.
    quiet_threads = {"OMP_WAIT_POLICY": "passive", "PYTHONUNBUFFERED": "1"}
    env = {**os.environ, **cluster.env, "XDG_CONFIG_HOME": str(profile_home), **quiet_threads}
    profile = yaml.safe_load((profile_home / "snakemake/slurm/profile.yaml").read_text())
    processes: list[subprocess.Popen] = []
    try:
        started = time.monotonic()
        slurm = start(
            snakemake_command(
                workdir,
                "--profile",
                "slurm",
                "--workflow-profile",
                "none",
                *TEST_CLUSTER_OPTIONS,
                *TRAINED.values(),
                *SHARDS,
            ),
            env,
            workdir / "snakemake.log",
        )
        processes.append(slurm)
        # The reference, on this machine: the same training and shards with the threads the
        # cluster's jobs get (the profile's, capped by the cores here; CPU results depend on them),
        # and the Turing study with the statistics of the first 4 raters.
        threads = [f"{rule}={n}" for rule, n in profile["set-threads"].items()]
        local = start(
            snakemake_command(
                reference,
                "--cores",
                "all",
                "--set-threads",
                *threads,
                "--",
                *TRAINED.values(),
                *SHARDS,
                *STATISTICS,
            ),
            {**os.environ, **quiet_threads},
            reference / "snakemake.log",
        )
        processes.append(local)
        cancelled = cancel_the_shards_between_batches(cluster, workdir, slurm)
        local_run = finish(local, reference / "snakemake.log", started)

        # A fifth rater's file arrives; the statistics are regenerated through the cluster, with
        # the profile given as --workflow-profile.
        statistics_before = json.loads((reference / STATISTICS[0]).read_text())
        write_rater(reference / "resources/ratings", 5)
        ratings_started = time.monotonic()
        ratings = start(
            snakemake_command(
                reference,
                "--workflow-profile",
                str(profile_home / "snakemake/slurm"),
                *TEST_CLUSTER_OPTIONS,
                *STATISTICS,
            ),
            env,
            reference / "snakemake-ratings.log",
        )
        processes.append(ratings)
        study = finish(slurm, workdir / "snakemake.log", started)
        study.jobs = slurm_jobs(cluster, study.run_id)
        ratings_run = finish(ratings, reference / "snakemake-ratings.log", ratings_started)
        ratings_run.jobs = slurm_jobs(cluster, ratings_run.run_id)
    finally:
        for process in processes:
            if process.poll() is None:  # a step above failed: no Snakemake outlives the module
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return Scenario(
        workdir,
        reference,
        study,
        local_run,
        cancelled,
        statistics_before,
        ratings_run,
        (cluster.root / "log/jobcomp.txt").read_text(),
    )


# ------------------------------------------------------------------------------------------------
# Every job through sbatch, with the profile's resources


#: The jobs of the training and sampling run: one per rule, training three times (the full run's
#: one step; the split run's two steps in two attempts, the budget stopping the first) and sampling
#: twice per shard (the cancelled array task, then its retry).
STUDY_JOBS = {"demo_atlas": 1, "preprocess": 1, "split_manifest": 1, "train": 3, "sample_shard": 4}
#: The jobs after a new rater file.
RATINGS_JOBS = {"turing_stats": 1, "turing_figures": 1}


def test_every_job_went_to_slurm(scenario):
    for run, expected, workdir in (
        (scenario.study, STUDY_JOBS, scenario.workdir),
        (scenario.ratings, RATINGS_JOBS, scenario.reference),
    ):
        assert run.started_rules() == expected, "no localrule, no job outside SLURM"
        assert run.slurm_rules() == expected
        assert all(
            job["UserId"].startswith("root(") and job["WorkDir"] == str(workdir) for job in run.jobs
        )


def test_training_jobs_asked_for_two_a100s_on_the_gpu_partition_and_ran_two_processes(scenario):
    jobs = scenario.study.of_rule("train")
    assert sorted(job["Comment"] for job in jobs) == [
        "rule_train_wildcards_full_1",
        "rule_train_wildcards_split_2",
        "rule_train_wildcards_split_2",
    ]
    assert {job["Partition"] for job in jobs} == {"gpu"}
    assert {job["TresPerJob"] for job in jobs} == {"gres:gpu:a100:2"}
    for run in TRAINED:
        marker = json.loads((scenario.workdir / TRAINED[run]).read_text())
        states = (scenario.workdir / marker["run_dir"] / "state").glob("step*/state.json")
        assert [json.loads(path.read_text())["num_processes"] for path in states] == [2], run
    # A budget of 1e-6 h rounds to 0 minutes, plus the 45 minutes a job needs to save its state.
    assert {job["TimeLimit"] for job in jobs} == {"00:45:00"}


def test_sampling_shards_asked_for_a_v100_each_and_went_as_one_job_array(scenario):
    jobs = scenario.study.of_rule("sample_shard")
    assert all(job["Partition"] == "gpu" and job["TresPerJob"] == "gres:gpu:v100:1" for job in jobs)
    first = [job for job in jobs if job.get("ArrayJobId") == scenario.cancelled["array"]]
    assert sorted(job["ArrayTaskId"] for job in first) == ["1", "2"], (
        "both shards in one sbatch --array"
    )


def test_cpu_jobs_went_to_the_cpu_partition_without_gpus(scenario):
    for run, rules in (
        (scenario.study, ("demo_atlas", "preprocess", "split_manifest")),
        (scenario.ratings, RATINGS_JOBS),
    ):
        for rule in rules:
            (job,) = run.of_rule(rule)
            assert job["Partition"] == "cpu" and "TresPerJob" not in job, rule
            assert job["TimeLimit"] == "02:00:00", "the profile's default runtime of 120 minutes"


def test_jobs_take_the_cores_of_their_node_not_of_the_submit_host(scenario):
    """Neither `--profile slurm --workflow-profile none` nor `--workflow-profile profiles/slurm`
    loads profiles/default, whose `cores: all`, resolved on the submit host, would be handed to
    every job as its core count."""
    logs = [
        *(scenario.workdir / ".snakemake/slurm_logs/rule_train").rglob("*.log"),
        *(scenario.reference / ".snakemake/slurm_logs/rule_turing_stats").rglob("*.log"),
    ]
    assert len(logs) == 4
    for log in logs:
        command = re.search(r"Command: (.*)", log.read_text()).group(1)
        assert " --cores all " in command and "--executor slurm-jobstep" in command
    assert (
        "Using profile slurm for setting default command line arguments." in scenario.study.output
    )
    assert re.search(
        r"Using workflow specific profile \S+/snakemake/slurm for setting", scenario.ratings.output
    )
    assert "profiles/default" not in scenario.study.output + scenario.ratings.output


# ------------------------------------------------------------------------------------------------
# Time limits for real


def test_training_stops_at_its_budget_with_exit_status_75_and_the_retry_resumes(scenario):
    jobs = scenario.study.of_rule("train")
    first, second = [job for job in jobs if job["Comment"].endswith("split_2")]
    assert (first["JobState"], second["JobState"]) == ("FAILED", "COMPLETED")
    # Snakemake's job wrapper exits 1 for any failed rule: the 75 is in the job's log, not in SLURM.
    assert (first["ExitCode"], second["ExitCode"]) == ("1:0", "0:0")
    jobcomp = {
        re.search(r"JobId=(\d+)", line).group(1): line for line in scenario.jobcomp.splitlines()
    }
    assert re.search(r"JobState=FAILED .* ExitCode=1:0", jobcomp[first["JobId"]])
    assert re.search(r"JobState=COMPLETED .* ExitCode=0:0", jobcomp[second["JobId"]])
    slurm_log = (
        scenario.workdir / ".snakemake/slurm_logs/rule_train/split_2" / f"{first['JobId']}.log"
    )
    assert "returned non-zero exit status 75" in slurm_log.read_text()
    marker = json.loads((scenario.workdir / TRAINED["split"]).read_text())
    train_log = (scenario.workdir / marker["run_dir"] / "train.log").read_text()
    assert re.search(r"wall-time budget of 0.0036 s spent at step 1\b", train_log)
    assert re.search(r"resumed from \S+step000001 at step 1\b", train_log)
    assert "Trying to restart job" in scenario.study.output
    # The full run's segment is one step: it reaches its step as the budget runs out, and is done.
    (full,) = [job for job in jobs if job["Comment"].endswith("full_1")]
    assert full["JobState"] == "COMPLETED"


def test_shards_cancelled_part_way_are_resubmitted_and_continue_from_their_finished_batches(
    scenario,
):
    cancelled = scenario.cancelled
    assert cancelled, "the shards were never seen between batches"
    jobs = scenario.study.of_rule("sample_shard")
    killed = [job for job in jobs if job.get("ArrayJobId") == cancelled["array"]]
    assert [job["JobState"] for job in killed] == ["CANCELLED", "CANCELLED"]
    retries = [job for job in jobs if job not in killed]
    assert [job["JobState"] for job in retries] == ["COMPLETED", "COMPLETED"]
    assert min(int(job["JobId"]) for job in retries) > max(int(job["JobId"]) for job in killed)
    for shard, done in enumerate(cancelled["batches_done"]):
        log = (
            scenario.workdir / f"logs/sample_shard/initial/{CHECKPOINT}/shard{shard}.log"
        ).read_text()
        resumed = int(
            re.search(
                rf"shard{shard}.zarr.partial: (\d) of 3 batches done and verified", log
            ).group(1)
        )
        assert done <= resumed < 3, (shard, done, resumed)
        if done:
            store = zarr.open_group(str(scenario.workdir / SHARDS[shard]), mode="r")
            assert len(store.attrs["resume_provenance"]) == 1, (
                "the store records its one resumed attempt"
            )
    assert max(cancelled["batches_done"]) >= 1


def test_weights_and_images_equal_an_uninterrupted_local_run(scenario):
    for run, steps in (("split", (1, 2)), ("full", (1,))):
        slurm = json.loads((scenario.workdir / TRAINED[run]).read_text())
        local = json.loads((scenario.reference / TRAINED[run]).read_text())
        assert slurm["run_dir"] == local["run_dir"], "same run identity"
        for step in steps:
            name = f"checkpoints/step{step:06d}.safetensors"
            ours = load_file(scenario.workdir / slurm["run_dir"] / name)
            theirs = load_file(scenario.reference / local["run_dir"] / name)
            assert ours.keys() == theirs.keys() and len(ours) > 10
            for tensor in ours:
                assert ours[tensor].tobytes() == theirs[tensor].tobytes(), (run, step, tensor)
        ours, theirs = (
            pd.read_csv(root / marker["run_dir"] / "loss_log.csv").drop(columns="wall_time_s")
            for root, marker in ((scenario.workdir, slurm), (scenario.reference, local))
        )
        assert ours["step"].tolist() == list(steps)
        pd.testing.assert_frame_equal(ours, theirs)
    for shard in SHARDS:
        ours, theirs = (
            zarr.open_group(str(root / shard), mode="r")
            for root in (scenario.workdir, scenario.reference)
        )
        for array in ("images", "seed", "global_index"):
            assert ours[array][:].tobytes() == theirs[array][:].tobytes(), (shard, array)
        assert ours["images"].shape == (3, 32, 32)


# ------------------------------------------------------------------------------------------------
# New ratings through the scheduler


def test_a_new_rater_file_submits_only_the_statistics_and_figure_jobs(scenario):
    assert scenario.ratings.started_rules() == RATINGS_JOBS
    assert all(job["JobState"] == "COMPLETED" for job in scenario.ratings.jobs)
    before = scenario.statistics_before
    after = json.loads((scenario.reference / STATISTICS[0]).read_text())
    assert (before["n_raters"], after["n_raters"]) == (4, 5) and after["simulated"] is False
    assert after["n_quartets"] == 3 and after["identification"]["n_trials"] == 15
    key = pd.read_csv(scenario.reference / "results/turing/study/key/key.csv")
    assert before["identification"]["n_correct"] == correct_choices(key, range(1, 5))
    assert after["identification"]["n_correct"] == correct_choices(key, range(1, 6))
