"""A Snakemake script's Python logging and stderr, sent into its rule's `log:` file.

Snakemake keeps a job's `log:` file, not its stderr: on a cluster the log file is the only
record of why a job failed or how far it got, so everything a script reports goes there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

#: A timestamp on every line lets a long job's log be read against its benchmark and the
#: scheduler's records; the logger name says which module spoke.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


@contextlib.contextmanager
def log_to(path: str | Path) -> Iterator[None]:
    """For the block, send INFO and above of every logger, and everything written to
    sys.stderr (tqdm bars, warnings, the traceback of an error leaving the block), to `path`.

    The root logger's handlers and level and sys.stderr are restored afterwards; an error is
    logged and re-raised, so the job still fails with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    with path.open("w", buffering=1) as stream, contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except (Exception, KeyboardInterrupt):
            log.exception("the job failed")
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
