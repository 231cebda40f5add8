"""Atomic file outputs: a job killed at any moment leaves either the old file or the new one,
never half of one (Snakemake, and a user's next run, would otherwise take it as finished)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def publish_permissions(path: Path, mode: int) -> None:
    """Give a temp file/dir (created private by tempfile) the permissions a plain create would."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same file system), moved onto it only if the block
    succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        publish_permissions(Path(tmp), 0o666)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """A hidden folder beside `path`, renamed onto it only if the block succeeds.

    `path` must not exist or be an empty folder; a killed job leaves a `.name.*` folder behind
    that the next call ignores (it makes its own), never a half-filled `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        publish_permissions(staging, 0o777)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Pretty, key-sorted JSON: the same document always gives the same bytes."""
    write_text_atomic(path, json.dumps(document, indent=1, sort_keys=True) + "\n")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object written by `write_json_atomic`; a missing, unreadable or non-object file
    fails naming the file and `what` it should have been."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: missing or unreadable {what} ({exc})") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return document
