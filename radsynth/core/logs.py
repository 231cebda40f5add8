"""A Snakemake script's Python logging and stderr, sent into its rule's `log:` file, with the
job's peak memory and how the previous attempt ended.

Snakemake keeps a job's `log:` file, not its stderr: on a cluster the log file is the only
record of why a job failed or how far it got, so everything a script reports goes there.

A job the kernel kills for memory (SIGKILL) gets no chance to write anything: its log just
stops, Snakemake reports only "died with SIGKILL", and Snakemake deletes the log before the next
attempt. So each job keeps a small attempt record beside its log (`<log>.attempt.json`, a file
Snakemake does not know of and never removes), refreshed with the peak memory while the job runs
and closed when it ends; the next attempt's log starts by saying how the previous one ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radsynth.core.atomic import read_json_object, write_json_atomic

#: A timestamp on every line lets a long job's log be read against its benchmark and the
#: scheduler's records; the logger name says which module spoke.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Seconds between two refreshes of the attempt record's peak memory: what a kill loses.
MEMORY_INTERVAL_S = 30.0
#: A new peak-memory line is logged when the peak has grown by this fraction since the last
#: line, so a 23-hour training job logs its growth, not a line every interval.
MEMORY_LOG_GROWTH = 0.05
#: `end` of an attempt record while its job runs; a record still saying so was never closed.
RUNNING = "running"
#: `end` of an attempt whose block ended without an error.
ENDED_NORMALLY = "ok"

log = logging.getLogger(__name__)


def attempt_record_path(log_path: str | Path) -> Path:
    """Where the attempt record of the job logging to `log_path` lives (beside the log)."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".attempt.json")


def peak_memory_mb() -> float:
    """Peak resident memory (MB) of this process, or of its largest finished child (a launcher
    such as `accelerate launch` waits for its workers), whichever is larger."""
    # Linux reports ru_maxrss in KiB. A child's ru_maxrss is at least its own peak, so the
    # children's figure holds for them; a waited child's figure never exceeds our own mark,
    # from which it was copied at its exec.
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own_peak_kib(), children_kib) / 1024


def own_peak_kib() -> int:
    """This process's peak resident memory (KiB) since its exec.

    Not `ru_maxrss`: Linux copies the launching process's high-water mark into it at exec (with
    Python's vfork, the launcher's whole peak), so a job started by a 2 GB pytest worker or
    Snakemake would report their peak as its own. `VmHWM` belongs to this address space only.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def previous_attempt_message(record: dict[str, Any]) -> tuple[int, str]:
    """The log level and sentence saying how the attempt of `record` ended."""
    started = f"started {record['started']} on {record['host']} (pid {record['pid']})"
    peak = f"peak memory {record['peak_memory_mb']:.0f} MB"
    if record["end"] == RUNNING:
        return logging.WARNING, (
            f"the previous attempt, {started}, ended without writing a final state: last seen "
            f"{record['last_seen']} with {peak}; possibly out of memory (killed by signal 9?), "
            "or stopped by the scheduler or a lost node"
        )
    if record["end"] == ENDED_NORMALLY:
        return logging.INFO, f"the previous attempt, {started}, ended normally with {peak}"
    return logging.INFO, (
        f"the previous attempt, {started}, ended {record['last_seen']} with {record['end']} "
        f"({peak})"
    )


class _AttemptRecord:
    """This attempt's record: written at the start, refreshed by a daemon thread every
    `interval_s` seconds (and a peak-memory line logged when the peak has grown), closed at the
    end with how the block ended."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.document = {
            "started": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "end": RUNNING,
        }
        self.logged_peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="peak-memory", daemon=True)

    def report_previous(self) -> None:
        if not self.path.exists():
            return
        try:
            record = read_json_object(self.path, "attempt record")
            level, message = previous_attempt_message(record)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: the previous attempt's record is unreadable (%s)", self.path, exc)
            return
        log.log(level, message)

    def write(self, end: str = RUNNING) -> None:
        peak = peak_memory_mb()
        self.document.update(end=end, last_seen=_now(), peak_memory_mb=round(peak, 1))
        write_json_atomic(self.path, self.document)
        if end == RUNNING and peak >= self.logged_peak * (1 + MEMORY_LOG_GROWTH):
            log.info("peak memory so far %.0f MB", peak)
            self.logged_peak = peak

    def _watch(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.write()

    def start(self) -> None:
        self.write()
        self.thread.start()

    def close(self, end: str) -> None:
        self.stop.set()
        self.thread.join()
        self.write(end)
        log.info("peak memory %.0f MB", self.document["peak_memory_mb"])


@contextlib.contextmanager
def log_to(path: str | Path, memory_interval_s: float = MEMORY_INTERVAL_S) -> Iterator[None]:
    """For the block, send INFO and above of every logger, and everything written to
    sys.stderr (tqdm bars, warnings, the traceback of an error leaving the block), to `path`.

    The log starts with how the previous attempt at this job ended (if one left a record) and
    records the peak memory as the block runs (`attempt_record_path`) and at its end. The root
    logger's handlers and level and sys.stderr are restored afterwards; an error is logged and
    re-raised, so the job still fails with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    attempt = _AttemptRecord(attempt_record_path(path), memory_interval_s)
    with path.open("w", buffering=1) as stream, contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            attempt.report_previous()
            attempt.start()
            yield
        except (Exception, KeyboardInterrupt) as exc:
            log.exception("the job failed")
            attempt.close(f"{type(exc).__name__}: {exc}")
            raise
        except SystemExit as exc:
            attempt.close(f"exit status {exc.code}")
            raise
        else:
            attempt.close(ENDED_NORMALLY)
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
