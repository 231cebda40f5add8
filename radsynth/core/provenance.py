"""Provenance records attached to every output, so a file says which code and config made it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radsynth import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON: equal configs hash equal whatever their key
    order."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def code_revision(repo_dir: Path = PACKAGE_ROOT) -> str:
    """Git commit of the code, suffixed '-dirty' when the work tree has changes; 'unknown' outside
    git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if status else commit


def provenance(config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The provenance record written into HDF5/Zarr attributes, CSV sidecars and figure metadata."""
    return {
        "radsynth_version": __version__,
        "code_revision": code_revision(),
        "config_hash": config_hash(config) if config is not None else "none",
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (weights and states are hundreds of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
