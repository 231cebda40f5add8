"""Fetch and unpack the external archives (CSXA V3.0 zips) reproducibly.

The transfer and its verification are `radsynth.core.download.fetch_file`; this module adds
what is specific to the data: the config entries that pin each archive, and zip extraction.
"""

from __future__ import annotations

import re
import sys
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from radsynth.core.atomic import atomic_directory
from radsynth.core.download import fetch_file


class ArchiveExtractionError(RuntimeError):
    """A zip archive is corrupt or holds entries that would land outside the target folder."""


def fetch_configured_archive(
    dest: Path, spec: Mapping[str, Any], *, landing_page: str, settings: Mapping[str, Any]
) -> Path:
    """`fetch_file` driven by a config entry (data.csxa.archives.<key>, data.csxa.download)."""
    return fetch_file(
        spec["url"],
        dest,
        size=spec["size"],
        checksum=spec["checksum"],
        landing_page=landing_page,
        timeout_s=settings["timeout_s"],
        max_attempts=settings["max_attempts"],
        chunk_bytes=settings["chunk_bytes"],
        retry_wait_s=settings["retry_wait_s"],
    )


def extract_archive(archive: Path, dest_dir: Path, *, progress: bool = True) -> list[Path]:
    """Unzip `archive` into `dest_dir`, which appears complete or not at all.

    Returns the extracted files, sorted. Every entry is checked before anything is written.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.exists():
        raise FileExistsError(f"{dest_dir} already exists; delete it to extract {archive} again")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for member in members:
                _check_member_name(archive, member.filename)
            with atomic_directory(dest_dir) as staging:
                _extract_members(bundle, members, staging, archive=archive, progress=progress)
    except zipfile.BadZipFile as exc:
        raise ArchiveExtractionError(f"{archive} is not a readable zip archive: {exc}") from exc
    return sorted(path for path in dest_dir.rglob("*") if path.is_file())


def _check_member_name(archive: Path, name: str) -> None:
    """Reject entries that would be written outside the target folder (zip-slip)."""
    normalized = name.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized) or ".." in parts:
        raise ArchiveExtractionError(
            f"{archive}: entry {name!r} would be extracted outside the target folder; refusing"
        )


def _extract_members(
    bundle: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    staging: Path,
    *,
    archive: Path,
    progress: bool,
) -> None:
    """Extract one member at a time so a corrupt entry is reported by name."""
    for member in tqdm(
        members, desc=f"extract {archive.name}", unit="file", disable=not progress, file=sys.stderr
    ):
        try:
            bundle.extract(member, staging)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ArchiveExtractionError(
                f"{archive}: entry {member.filename!r} is corrupt: {exc}"
            ) from exc
