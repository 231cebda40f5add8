"""Sampling jobs in processes of their own (tests/sampling_job.py, the stage's call): a shard's
batches shared by 2 processes that `accelerate launch` starts (a gloo group on CPU), and jobs
stopped by SIGTERM part way. Each must leave the store that one uninterrupted process writes,
byte for byte (a tiny untrained network on CPU, one thread per process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import PROVENANCE, TINY_LUCIDRAINS, read_store, tiny_config, tiny_unet

from radsynth.core.preemption import EXIT_RESUME_LATER, stop_signals
from radsynth.sample.sampler import sample_set_shard, sampling_state
from radsynth.sample.work_store import work_store_path
from radsynth.train.checkpoint_io import model_config_json, save_history_checkpoint
from radsynth.train.settings import run_settings_from_dict

torch.set_num_threads(1)

JOB = Path(__file__).with_name("sampling_job.py")
#: 7 batches, the last one short; with 2 processes the last round leaves one process idle.
N_IMAGES, BATCH_SIZE = 13, 2
N_BATCHES = 7
STEPS = 40  # enough for a batch to be in flight when the signal lands


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A history checkpoint of the tiny network (online and EMA weights differ)."""
    settings = run_settings_from_dict(
        {**tiny_config(), "model": TINY_LUCIDRAINS.model_dump(mode="json")}
    )
    online, ema = tiny_unet(seed=0), tiny_unet(seed=1)
    path = tmp_path_factory.mktemp("run") / "step000004.safetensors"
    metadata = {
        "model_config": model_config_json(online),
        "settings": json.dumps(settings.model_dump(mode="json")),
    }
    save_history_checkpoint(path, online, ema, "float32", metadata)
    return path


def job_arguments(checkpoint: Path, root: Path) -> dict:
    """sample_set_shard's arguments for shard 1 of a 2-shard set (global images 13..25)."""
    sampling = {
        "sampler": "ddpm",
        "steps": STEPS,
        "clip_sample": True,
        "quantization": "round",
        "weights": "ema",
        "base_seed": 5,
        "batch_size": BATCH_SIZE,
        "sets": {"large": {"n_images": 2 * N_IMAGES, "images_per_shard": N_IMAGES}},
    }
    return {
        "checkpoint_path": str(checkpoint),
        "out_store": str(root / "out" / "shard1.zarr"),
        "work_dir": str(root / "work"),
        "config": {"sampling": sampling},
        "sample_set": "large",
        "checkpoint_label": "ckpt001",
        "shard_index": 1,
        "provenance": PROVENANCE,
    }


def sample_here(arguments: dict) -> int:
    """The job in this test's process: one process, one thread."""
    arguments = dict(arguments)
    return sample_set_shard(
        Path(arguments.pop("checkpoint_path")),
        Path(arguments.pop("out_store")),
        work_dir=Path(arguments.pop("work_dir")),
        progress=False,
        **arguments,
    )


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> dict[str, np.ndarray]:
    arguments = job_arguments(checkpoint, tmp_path_factory.mktemp("reference"))
    assert sample_here(arguments) == 0
    stored = read_store(Path(arguments["out_store"]))
    assert stored["global_index"].tolist() == list(range(N_IMAGES, 2 * N_IMAGES))
    return stored


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_job(arguments: dict, root: Path, processes: int) -> tuple[subprocess.Popen, Path]:
    """The job as `python` (1 process) or `accelerate launch` (more) starts it; its output goes
    to a log file returned with it."""
    spec = root / "job.json"
    spec.write_text(json.dumps(arguments))
    if processes == 1:
        command = [sys.executable, str(JOB)]
    else:
        # --multi_gpu selects torchrun; with no GPU the job's processes join a gloo group.
        command = [
            str(Path(sys.executable).with_name("accelerate")),
            "launch",
            "--multi_gpu",
            f"--num_processes={processes}",
            "--num_machines=1",
            "--mixed_precision=no",
            "--dynamo_backend=no",
            f"--main_process_port={free_port()}",
            str(JOB),
        ]
    log = root / "job.log"
    with open(log, "w") as handle:
        job = subprocess.Popen(
            [*command, str(spec)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return job, log


def done_batches(work: Path) -> int:
    """Done flags written so far (one chunk file per flag, each renamed into place by zarr)."""
    return len(list((work / "batch_done" / "c").glob("[0-9]*")))


def test_two_processes_write_the_one_process_store(checkpoint, reference, tmp_path):
    arguments = job_arguments(checkpoint, tmp_path)
    job, log = start_job(arguments, tmp_path, processes=2)
    assert job.wait(timeout=300) == 0, log.read_text()
    out = Path(arguments["out_store"])
    result = read_store(out)
    assert all(np.array_equal(result[k], reference[k]) for k in reference)
    attrs = zarr.open_group(out, mode="r", zarr_format=3).attrs
    assert attrs["provenance"]["processes"] == 2 and attrs["complete"] is True


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_finishes_the_batches_in_flight_and_the_rerun_completes_the_store(
    checkpoint, reference, tmp_path, caplog, processes
):
    arguments = job_arguments(checkpoint, tmp_path)
    out = Path(arguments["out_store"])
    work = work_store_path(out, Path(arguments["work_dir"]))
    job, log = start_job(arguments, tmp_path, processes)
    deadline = time.monotonic() + 120
    while not (work.exists() and done_batches(work) >= 1):
        assert job.poll() is None, f"the job ended before the signal:\n{log.read_text()}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.005)
    before = done_batches(work)
    job.send_signal(signal.SIGTERM)
    status = job.wait(timeout=60)
    message = log.read_text()
    survived = done_batches(work)
    # Every process finished the batch it had started, and the main process wrote them all.
    assert before + processes <= survived < N_BATCHES, message
    assert message.count("stopped by a signal") == processes and not out.exists()
    # Each process exits 75; `accelerate launch` (torchrun) itself ends with status 1 when it got
    # the signal, which a scheduler retries just the same.
    assert status == (EXIT_RESUME_LATER if processes == 1 else 1), message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radsynth.sample.work_store"):
        assert sample_here(arguments) == 0
    assert f"{work}: {survived} of {N_BATCHES} batches done and verified" in caplog.messages
    result = read_store(out)
    assert all(np.array_equal(result[k], reference[k]) for k in reference)


def test_stop_signals_record_their_names_then_give_the_handler_back():
    previous = signal.getsignal(signal.SIGTERM)
    with stop_signals() as received:
        assert received == []
        signal.raise_signal(signal.SIGTERM)  # would end the test process outside the block
        assert received == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is previous
    seen = []

    def outside_the_main_thread() -> None:  # where Python cannot set handlers
        with stop_signals() as received:
            seen.append((received, signal.getsignal(signal.SIGTERM)))

    worker = threading.Thread(target=outside_the_main_thread)
    worker.start()
    worker.join()
    assert seen == [([], previous)]


def test_a_process_state_that_missed_the_launch_is_refused(monkeypatch):
    """A process `accelerate launch` started whose state was made as one process (accelerate's
    default on CPU) would sample the whole shard beside the others: it is refused."""
    assert sampling_state().num_processes == 1  # this test's process: made as one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(
        RuntimeError,
        match=r"^accelerate launched 2 processes but its state, made earlier without "
        r"sampling_state\(\), counts 1: each would sample the whole shard$",
    ):
        sampling_state()
