"""Data-parallel training with real processes: `accelerate launch` of 2 gloo workers on the CPU
(radsynth.train.launch) against 1 process, a 2-process job stopped by SIGTERM and killed by SIGKILL
resuming to the uninterrupted job's files, resuming on another process count, and bf16 mixed
precision resuming byte for byte after a kill.

Tolerance between 1 and 2 processes: the all-reduce and the split of each micro-batch (rows 0-1 and
2 of a batch of 3) sum the same numbers in another order, so losses agree to float32 rounding
(relative 1e-5 allowed; 1e-7 seen) and weights after 12 Adam steps at learning rate 1e-3 within
1e-3 (about one Adam step, which moves a weight by at most about the learning rate; 8e-5 seen).
The same process count repeats a run exactly: those comparisons are byte for byte.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PROVENANCE, loss_columns, read_rows, tiny_config
from safetensors.torch import load_file

from radsynth.core.preemption import EXIT_RESUME_LATER
from radsynth.train.checkpoint_io import latest_state_dir, read_run_marker
from radsynth.train.loop import train, train_job
from radsynth.train.settings import run_settings_from_dict

torch.set_num_threads(1)

#: 12 steps of 2 micro-batches of 3 images (20 training images: each epoch ends with a batch of 2),
#: a checkpoint every 4 steps, a resume state every 2.
CONFIG = tiny_config(num_steps=12, checkpoint_every=4, state_every=2)
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-3
#: Marks the processes of one test's job in their environment, to find its workers.
MARKER = "RADSYNTH_TEST_TRAIN_JOB"
JOB_TIMEOUT_S = 180


def write_request(
    data: tuple[Path, Path], folder: Path, config: dict = CONFIG, until_step: int | None = None
) -> Path:
    """train_job's arguments as radsynth.train.launch reads them; runs under folder/runs."""
    folder.mkdir(parents=True, exist_ok=True)
    request = {
        "atlas_h5": str(data[0]),
        "manifest_csv": str(data[1]),
        "runs_root": str(folder / "runs"),
        "config": config,
        "marker_json": str(folder / "marker.json"),
        "until_step": until_step,
        "max_wall_time_s": None,
        "provenance": PROVENANCE,
    }
    (folder / "request.json").write_text(json.dumps(request))
    return folder / "request.json"


def start_job(request: Path, processes: int) -> subprocess.Popen:
    """`python -m radsynth.train.launch job N REQUEST`, one thread per process (CPU results depend
    on the thread count), its output in the request's folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", MARKER: str(request)}
    with open(request.parent / "job.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "radsynth.train.launch", "job", str(processes), str(request)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def finish(job: subprocess.Popen, timeout: float = JOB_TIMEOUT_S) -> int:
    try:
        return job.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_all(job)
        raise


def job_processes(job: subprocess.Popen) -> dict[str, int]:
    """Pids of the job's processes: 'job', the launcher and 'rank0', 'rank1', ... for workers."""
    wanted = f"{MARKER}={job.args[-1]}".encode()
    found = {"job": job.pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == job.pid:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ:
            rank = [v for v in environ if v.startswith(b"RANK=")]
            found[f"rank{rank[0][5:].decode()}" if rank else "launcher"] = int(entry.name)
    return found


def kill_all(job: subprocess.Popen) -> None:
    """SIGKILL to every process of the job at once (a node lost), then reap the job."""
    for pid in job_processes(job).values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait(30)


def run_dir(folder: Path) -> Path:
    (found,) = (folder / "runs").glob("*/identity.json")
    return found.parent


def wait_for_rows(folder: Path, rows: int, job: subprocess.Popen) -> None:
    """Until the job's loss log has `rows` step rows (fails if the job ends first)."""
    while job.poll() is None:
        logs = list((folder / "runs").glob("*/loss_log.csv"))
        if logs and len(logs[0].read_text().splitlines()) > rows:
            return
        time.sleep(0.002)
    raise AssertionError(f"the job ended (status {job.returncode}) before step {rows}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_bytes(a: Path, b: Path) -> None:
    x, y = weights(a), weights(b)
    assert x.keys() == y.keys()
    for name in x:
        assert x[name].numpy().tobytes() == y[name].numpy().tobytes(), (a, name)


def index_without_bytes(run: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in row.items() if k != "bytes"}
        for row in read_rows(run / "checkpoints" / "index.csv")
    ]


@pytest.fixture(scope="module")
def one_process(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run trained by train_job in this process (1 process)."""
    folder = tmp_path_factory.mktemp("one")
    status = train_job(
        *data,
        folder / "runs",
        CONFIG,
        folder / "marker.json",
        max_wall_time_s=None,
        provenance=PROVENANCE,
    )
    assert status == 0
    return run_dir(folder)


@pytest.fixture(scope="module")
def two_processes(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run trained uninterrupted by a job of 2 processes."""
    folder = tmp_path_factory.mktemp("two")
    job = start_job(write_request(data, folder), 2)
    assert finish(job) == 0, (folder / "job.log").read_text()
    assert read_run_marker(folder / "marker.json").step == 12
    return run_dir(folder)


def test_two_processes_train_as_one_within_float_rounding(
    one_process: Path, two_processes: Path
) -> None:
    assert one_process.name == two_processes.name, "the same run identity on any process count"
    one, two = loss_columns(one_process), loss_columns(two_processes)
    assert [row[0] for row in two] == [str(step) for step in range(1, 13)]
    for a, b in zip(one, two, strict=True):
        assert (a[0], a[4]) == (b[0], b[4])  # step, learning rate
        for x, y in zip(a[1:4], b[1:4], strict=True):  # train, val and EMA val loss
            assert (x == "") == (y == "") and (x == "" or np.isclose(float(x), float(y), LOSS_RTOL))
    for step in (4, 8, 12):
        name = f"checkpoints/step{step:06d}.safetensors"
        x, y = weights(one_process / name), weights(two_processes / name)
        assert x.keys() == y.keys()
        worst = max(float((x[k] - y[k]).abs().max()) for k in x)
        assert worst < WEIGHT_ATOL, (step, worst)
        assert any(not torch.equal(x[k], y[k]) for k in x), "two processes really ran"
    state = json.loads((two_processes / "state/step000012/state.json").read_text())
    assert state["num_processes"] == 2
    # The main process alone wrote the files: one log line per checkpoint, one marker.
    assert (two_processes / "train.log").read_text().count("step 12: checkpoint 3") == 1


def test_a_stop_signal_to_one_worker_stops_all_and_a_killed_job_resumes_exactly(
    data: tuple[Path, Path], two_processes: Path, one_process: Path, tmp_path: Path
) -> None:
    """SIGTERM to rank 1 alone: both stop after the same step with the state saved and the job
    exits 75; the rerun is killed with SIGKILL part way; the third job finishes the run. The run's
    files equal the uninterrupted 2-process job's byte for byte. A copy of the run at the SIGTERM
    resumes on 1 process."""
    request = write_request(data, tmp_path / "job")
    job = start_job(request, 2)
    wait_for_rows(tmp_path / "job", 3, job)
    signalled = time.monotonic()
    os.kill(job_processes(job)["rank1"], signal.SIGTERM)
    assert finish(job) == EXIT_RESUME_LATER
    assert time.monotonic() - signalled < 30, "within SLURM's default KillWait"
    run = run_dir(tmp_path / "job")
    stopped = int(latest_state_dir(run).name[len("step") :])
    assert 3 <= stopped < 12 and len(read_rows(run / "loss_log.csv")) == stopped
    assert (
        f"a stop signal received at step {stopped}; its state is saved"
        in (run / "train.log").read_text()
    )
    assert not (tmp_path / "job" / "marker.json").exists()
    shutil.copytree(run, tmp_path / "at-sigterm")

    job = start_job(request, 2)
    wait_for_rows(tmp_path / "job", stopped + 3, job)
    kill_all(job)
    assert job.returncode == -signal.SIGKILL
    assert finish(start_job(request, 2)) == 0
    assert loss_columns(run) == loss_columns(two_processes)
    assert index_without_bytes(run) == index_without_bytes(two_processes)
    for step in (4, 8, 12):
        name = f"checkpoints/step{step:06d}.safetensors"
        assert_same_bytes(run / name, two_processes / name)
    for name in ("online.safetensors", "ema.safetensors"):
        assert_same_bytes(
            run / "state/step000012" / name, two_processes / "state/step000012" / name
        )

    # Another process count resumes the same run: 1 process from the 2-process state.
    other = tmp_path / "at-sigterm"
    result = train(
        *data, other, run_settings_from_dict(CONFIG), provenance=PROVENANCE, progress=False
    )
    assert result.finished
    assert json.loads((other / "state/step000012/state.json").read_text())["num_processes"] == 1
    x = weights(other / "checkpoints/step000012.safetensors")
    y = weights(one_process / "checkpoints/step000012.safetensors")
    assert max(float((x[k] - y[k]).abs().max()) for k in x) < WEIGHT_ATOL


def _train_child(atlas: Path, manifest: Path, run: Path) -> None:
    torch.set_num_threads(1)
    result = train(
        atlas, manifest, run, run_settings_from_dict(CONFIG), provenance=PROVENANCE, progress=False
    )
    sys.exit(0 if result.stopped_by == "SIGTERM received" and not result.finished else 1)


def test_sigterm_saves_the_state_at_the_next_step_and_the_rerun_equals_the_whole_run(
    data: tuple[Path, Path], one_process: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_train_child, args=(*data, run))
    child.start()
    log = run / "loss_log.csv"
    while child.is_alive() and (not log.exists() or len(log.read_text().splitlines()) <= 3):
        time.sleep(0.002)
    rows_when_signalled = len(log.read_text().splitlines()) - 1
    os.kill(child.pid, signal.SIGTERM)
    child.join(30)
    assert child.exitcode == 0, "train returned, stopped by SIGTERM"
    stopped = int(latest_state_dir(run).name[len("step") :])
    # The step under way when the signal came is finished and saved; no later one is started.
    assert rows_when_signalled <= stopped <= rows_when_signalled + 1 < 12
    assert len(read_rows(log)) == stopped
    result = train(
        *data, run, run_settings_from_dict(CONFIG), provenance=PROVENANCE, progress=False
    )
    assert result.finished and result.stopped_by is None
    assert loss_columns(run) == loss_columns(one_process)
    assert_same_bytes(
        run / "checkpoints/step000012.safetensors",
        one_process / "checkpoints/step000012.safetensors",
    )


def test_bf16_trains_with_finite_losses_and_resumes_byte_identically_after_a_kill(
    data: tuple[Path, Path], one_process: Path, tmp_path: Path
) -> None:
    """In subprocesses: accelerate's mixed precision is fixed once per process, and this one
    trains in float32."""
    config = {**CONFIG, "training": {**CONFIG["training"], "mixed_precision": "bf16"}}
    whole = start_job(write_request(data, tmp_path / "whole", config), 1)
    killed = start_job(write_request(data, tmp_path / "killed", config), 1)
    wait_for_rows(tmp_path / "killed", 5, killed)
    kill_all(killed)
    assert finish(whole) == 0
    restored = latest_state_dir(run_dir(tmp_path / "killed"))
    assert restored is not None and int(restored.name[len("step") :]) < 12
    assert finish(start_job(tmp_path / "killed" / "request.json", 1)) == 0
    a, b = run_dir(tmp_path / "whole"), run_dir(tmp_path / "killed")
    losses = [float(row[1]) for row in loss_columns(a)]
    assert len(losses) == 12 and all(np.isfinite(losses)) and all(loss > 0 for loss in losses)
    assert loss_columns(a) == loss_columns(b)
    for step in (4, 8, 12):
        name = f"checkpoints/step{step:06d}.safetensors"
        assert_same_bytes(a / name, b / name)
    assert a.name != one_process.name, "mixed precision is part of the run identity"
    float32 = [float(row[1]) for row in loss_columns(one_process)]
    assert losses[0] != float32[0] and np.isclose(losses[0], float32[0], rtol=0.05), (
        "bf16 autocast changes the numerics, not the loss"
    )
