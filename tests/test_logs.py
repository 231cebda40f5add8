"""log_to: a script's logging, stderr and fatal traceback land in the rule's log file, the
process is left as it was found, and a job's peak memory and how its previous attempt ended are
logged."""

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from radsynth.core.logs import attempt_record_path, log_to


def job_lines(path):
    """The log's lines without the peak-memory lines log_to adds."""
    return [line for line in path.read_text().splitlines() if "peak memory" not in line]


def test_logging_and_stderr_land_in_the_file(tmp_path):
    path = tmp_path / "logs/sample_shard/demo/ckpt001/shard0.log"
    with log_to(path):
        logging.getLogger("radsynth.sample.sampler").info("work: complete, moved to out.zarr")
        logging.getLogger("radsynth.sample.sampler").debug("a debug detail")
        print("train: 40%|####      | 80/200", file=sys.stderr)
    lines = job_lines(path)
    assert lines[0].endswith("INFO radsynth.sample.sampler: work: complete, moved to out.zarr")
    assert lines[0][:4].isdigit(), "a log line starts with its timestamp"
    assert lines[1] == "train: 40%|####      | 80/200"
    assert len(lines) == 2, "DEBUG stays out of the log"


def test_an_error_leaving_the_block_is_logged_and_raised(tmp_path):
    path = tmp_path / "job.log"
    with pytest.raises(OSError, match="No space left"):
        with log_to(path):
            raise OSError(28, "No space left on device")
    text = path.read_text()
    assert "ERROR radsynth.core.logs: the job failed" in text
    assert "Traceback (most recent call last)" in text
    assert "OSError: [Errno 28] No space left on device" in text


def test_handlers_level_and_stderr_are_restored(tmp_path):
    root = logging.getLogger()
    handlers, level, stderr = list(root.handlers), root.level, sys.stderr
    path = tmp_path / "job.log"
    with pytest.raises(ValueError):
        with log_to(path):
            raise ValueError("bad shard")
    assert root.handlers == handlers
    assert root.level == level
    assert sys.stderr is stderr
    logging.getLogger("radsynth.sample.sampler").error("after the job")
    print("after the job", file=sys.stderr)
    assert "after the job" not in path.read_text()


def test_a_script_that_fails_leaves_its_traceback_in_the_log_and_fails(tmp_path):
    """As Snakemake runs a script: a separate Python whose uncaught error ends the process."""
    path = tmp_path / "logs/train/full.log"
    script = textwrap.dedent(
        f"""
        import logging
        import warnings
        from radsynth.core.logs import log_to

        with log_to({str(path)!r}):
            logging.getLogger("radsynth.train.loop").info("resumed at step 400")
            warnings.warn("a deprecated option")
            raise RuntimeError("CUDA out of memory at step 401")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    text = path.read_text()
    assert "INFO radsynth.train.loop: resumed at step 400" in text
    assert "UserWarning: a deprecated option" in text
    assert "RuntimeError: CUDA out of memory at step 401" in text


def test_a_status_set_inside_is_the_exit_status_after(tmp_path):
    """train.py's shape: the job's status (75 = resume later) is returned after the log closes."""
    path = tmp_path / "train.log"
    script = textwrap.dedent(
        f"""
        import logging
        import sys
        from radsynth.core.logs import log_to

        with log_to({str(path)!r}):
            logging.getLogger("radsynth.train.loop").info("wall-time budget spent")
            status = 75
        sys.exit(status)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 75
    assert "wall-time budget spent" in path.read_text()
    assert result.stderr == ""


#: A child that fills 400 MB (every page written, so it is resident), reports it, and waits to be
#: killed; its attempt record is refreshed every 0.1 s.
ALLOCATING_JOB = """
import sys
import time
from radsynth.core.logs import log_to

with log_to(sys.argv[1], memory_interval_s=0.1):
    block = b"\\x01" * (400 * 2**20)
    time.sleep(600)
"""


def wait_for_record_peak(record_path, at_least_mb, timeout_s=60.0):
    """The attempt record once it reports a peak of at least `at_least_mb`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if record_path.exists():
            record = json.loads(record_path.read_text())
            if record["peak_memory_mb"] >= at_least_mb:
                return record
        time.sleep(0.1)
    raise AssertionError(f"{record_path} never reported {at_least_mb} MB")


def test_the_attempt_after_a_sigkill_names_how_the_previous_one_ended(tmp_path):
    path = tmp_path / "logs/train/full/step068000.log"
    record_path = attempt_record_path(path)
    assert record_path == tmp_path / "logs/train/full/step068000.log.attempt.json"
    child = subprocess.Popen([sys.executable, "-c", ALLOCATING_JOB, str(path)])
    try:
        killed = wait_for_record_peak(record_path, 400)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert killed["end"] == "running" and killed["pid"] == child.pid
    assert "peak memory so far" in path.read_text(), "the peak is logged as the job runs"
    path.unlink()  # as Snakemake deletes a job's log before its next attempt
    with log_to(path):
        logging.getLogger("radsynth.train.loop").info("resumed from step 66000")
    first = path.read_text().splitlines()[0]
    assert "WARNING radsynth.core.logs: the previous attempt" in first
    assert f"(pid {child.pid}), ended without writing a final state" in first
    assert "possibly out of memory (killed by signal 9?)" in first
    logged_peak = int(first.split(" with peak memory ")[1].split(" MB")[0])
    assert 400 <= logged_peak < 2000
    assert json.loads(record_path.read_text())["end"] == "ok", "this attempt closed its record"


#: A launcher that holds 600 MB (as a pytest worker or Snakemake may) and starts a job that
#: reports its own peak.
LARGE_LAUNCHER = """
import subprocess
import sys

block = b"\\x01" * (600 * 2**20)
job = "from radsynth.core.logs import peak_memory_mb; print(peak_memory_mb())"
report = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, check=True)
print(report.stdout)
"""


def test_a_job_does_not_report_its_launchers_peak_as_its_own():
    result = subprocess.run(
        [sys.executable, "-c", LARGE_LAUNCHER], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 200, "a bare Python job stays far below its launcher's 600 MB"


def test_the_attempt_after_a_failed_or_finished_one_says_so(tmp_path):
    path = tmp_path / "job.log"
    with pytest.raises(RuntimeError):
        with log_to(path):
            raise RuntimeError("CUDA out of memory at step 401")
    record = json.loads(attempt_record_path(path).read_text())
    assert record["end"] == "RuntimeError: CUDA out of memory at step 401"
    with log_to(path):
        pass
    lines = path.read_text().splitlines()
    assert "with RuntimeError: CUDA out of memory at step 401 (peak memory" in lines[0]
    assert lines[-1].endswith(f"INFO radsynth.core.logs: peak memory {record_peak(path):.0f} MB")
    with log_to(path):
        pass
    assert "ended normally with peak memory" in path.read_text().splitlines()[0]
    with pytest.raises(SystemExit):
        with log_to(path):
            sys.exit(75)
    with log_to(path):
        pass
    assert "with exit status 75 (peak memory" in path.read_text().splitlines()[0]


def record_peak(log_path):
    return json.loads(attempt_record_path(log_path).read_text())["peak_memory_mb"]


def test_an_unreadable_record_is_reported_and_the_job_runs(tmp_path):
    path = tmp_path / "job.log"
    attempt_record_path(path).write_text("{truncated")
    with log_to(path):
        logging.getLogger("radsynth.sample.sampler").info("work: complete")
    text = path.read_text()
    assert "the previous attempt's record is unreadable" in text
    assert "work: complete" in text
