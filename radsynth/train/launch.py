"""A training job on several devices: `accelerate launch` of one worker process per device, each
calling `train_job` (radsynth.train.loop), on one node (one launcher per node; several nodes are
not supported). Without CUDA the workers train on the CPU with gloo, which is how the tests run two.

The job's own process (the Snakemake script, or `python -m radsynth.train.launch job`) starts the
launcher and waits for it and for every worker. The launcher (torch.distributed.run) exits 1
whenever a worker exits non-zero, so the workers' status, 0 or EXIT_RESUME_LATER, comes back in a
file the main worker writes; a missing file means a worker failed. On SIGTERM the job's process
passes the signal on to the launcher, which passes it on to the workers (under SLURM every process
gets it anyway); they stop at the same step boundary with the state saved (radsynth.train.loop).
The job's process is a child subreaper, so workers the launcher leaves behind when it is signalled
twice are still waited for before the job reports.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radsynth.core.atomic import read_json_object, write_json_atomic
from radsynth.core.device import process_state
from radsynth.train.loop import train_job

#: prctl(2) option that makes orphaned descendants children of this process.
_PR_SET_CHILD_SUBREAPER = 36


def free_port() -> int:
    """A TCP port free on this machine now, for the processes' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_command(num_processes: int, port: int) -> list[str]:
    """`accelerate launch` of `num_processes` workers of this module on one node. --multi_gpu is
    accelerate's data-parallel launcher (torch.distributed.run); on a machine without CUDA the
    workers ask accelerate for the CPU (`radsynth.core.device.on_cpu`), which then uses gloo."""
    return [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        # The run's training.mixed_precision is passed to Accelerator by the loop; "no" here only
        # silences the launcher's note about defaults.
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "--module",
        "radsynth.train.launch",
        "worker",
    ]


def _job_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """train_job's arguments from a JSON request (paths as strings)."""
    return {
        "atlas_h5": Path(request["atlas_h5"]),
        "manifest_csv": None if request["manifest_csv"] is None else Path(request["manifest_csv"]),
        "runs_root": Path(request["runs_root"]),
        "config": request["config"],
        "marker_json": Path(request["marker_json"]),
        "until_step": request["until_step"],
        "max_wall_time_s": request["max_wall_time_s"],
        "provenance": request["provenance"],
    }


def _worker(request_json: Path, status_json: Path) -> int:
    """One process of a launched job: train_job; the main process records the status."""
    request = read_json_object(request_json, "training job request")
    status = train_job(**_job_arguments(request))
    if process_state().is_main_process:
        write_json_atomic(status_json, {"status": status})
    return status


@contextlib.contextmanager
def _forward_signals(process: subprocess.Popen) -> Iterator[None]:
    """SIGTERM to this process goes on to `process` (the launcher), once."""
    forwarded: list[int] = []

    def forward(number: int, _frame: object) -> None:
        if not forwarded and process.poll() is None:
            forwarded.append(number)
            process.send_signal(number)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_descendants() -> None:
    """Reap every child, orphaned workers included (this process is their subreaper)."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def train_job_processes(num_processes: int, **job: Any) -> int:
    """`train_job(**job)` in this process for 1 process, else on `num_processes` processes
    through `accelerate launch`; returns train_job's status (0 or EXIT_RESUME_LATER), or the
    launcher's exit status when a worker failed. Worker output goes to this process's stderr."""
    if num_processes == 1:
        return train_job(**job)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    with tempfile.TemporaryDirectory(prefix="radsynth-train-") as folder:
        request, status = Path(folder) / "request.json", Path(folder) / "status.json"
        request.write_text(
            json.dumps({key: str(v) if isinstance(v, Path) else v for key, v in job.items()})
        )
        command = [*accelerate_command(num_processes, free_port()), str(request), str(status)]
        launcher = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr)
        with _forward_signals(launcher):
            returncode = launcher.wait()
            _wait_for_descendants()
        if status.is_file():
            return int(read_json_object(status, "training job status")["status"])
    print(
        f"accelerate launch of {num_processes} training processes failed with exit status "
        f"{returncode} (see the messages above)",
        file=sys.stderr,
    )
    return returncode or 1


def main(argv: list[str] | None = None) -> int:
    """`job N REQUEST`: a whole job on N processes, as the workflow runs it (for the tests and by
    hand); `worker REQUEST STATUS`: one of its processes (what `accelerate launch` starts)."""
    parser = argparse.ArgumentParser(prog="python -m radsynth.train.launch")
    commands = parser.add_subparsers(dest="command", required=True)
    job = commands.add_parser("job", help="a training job on N processes")
    job.add_argument("processes", type=int)
    job.add_argument("request", type=Path, help="JSON of train_job's arguments")
    worker = commands.add_parser("worker", help="one process of a launched job")
    worker.add_argument("request", type=Path)
    worker.add_argument("status", type=Path)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return _worker(args.request, args.status)
    request = read_json_object(args.request, "training job request")
    return train_job_processes(args.processes, **_job_arguments(request))


if __name__ == "__main__":
    sys.exit(main())
