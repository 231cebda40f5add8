"""Stopping a long job at a boundary when the scheduler asks it to.

SLURM signals a job before it kills it (SIGTERM on `scancel`, on preemption, and at the time
limit with `--signal`), then waits `KillWait` (30 s by default) before SIGKILL. A job that turns
the signal into a request, finishes the unit of work in flight (a training step, a sampling
batch), keeps it and exits with `EXIT_RESUME_LATER` loses no finished work; the scheduler's
retry resumes it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Exit status of a job that stopped early with its work so far kept (BSD EX_TEMPFAIL): rerun it.
EXIT_RESUME_LATER = 75


class StopRequested(Exception):
    """A job loop stopped at a boundary because a stop signal arrived; its finished work is kept."""


@contextmanager
def stop_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM,),
) -> Iterator[list[str]]:
    """Within the block the signals no longer end the process: each appends its name to the
    yielded list, which the job loop reads at its boundaries. The previous handlers come back on
    exit. Handlers can be set in the main thread only: elsewhere the signals keep theirs and the
    list stays empty."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        number: signal.signal(number, lambda n, _: received.append(signal.Signals(n).name))
        for number in signals
    }
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
