"""log_to: a script's logging, stderr and fatal traceback land in the rule's log file, and the
process is left as it was found."""

import logging
import subprocess
import sys
import textwrap

import pytest

from radsynth.core.logs import log_to


def test_logging_and_stderr_land_in_the_file(tmp_path):
    path = tmp_path / "logs/sample_shard/demo/ckpt001/shard0.log"
    with log_to(path):
        logging.getLogger("radsynth.sample.sampler").info("work: complete, moved to out.zarr")
        logging.getLogger("radsynth.sample.sampler").debug("a debug detail")
        print("train: 40%|####      | 80/200", file=sys.stderr)
    lines = path.read_text().splitlines()
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
