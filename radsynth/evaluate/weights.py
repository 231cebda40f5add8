"""Pretrained weights files (the standard FID Inception weights), fetched and verified by sha256.

Compute nodes often have no internet: clusters that can download run `fetch_weights` in a
localrule on the login node; elsewhere the user places the file by hand, and it is verified.
"""

from __future__ import annotations

from pathlib import Path

from radsynth.core.download import fetch_file


def fetch_weights(
    url: str,
    dest: Path,
    *,
    checksum: str,
    landing_page: str,
    timeout_s: float = 60,
    max_attempts: int = 3,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Return `dest` holding the weights file that matches `checksum`, downloading it if absent.

    `checksum` is 'sha256:<64 hex>' or, for files that publish only the start of their digest in
    their name (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`), 'sha256-prefix:6726825d'.

    A file already at `dest` (placed by hand, or an earlier run) is verified and used, never
    downloaded again; wrong bytes raise `ArchiveVerificationError` naming the file and both
    checksums.
    """
    return fetch_file(
        url,
        dest,
        size=None,
        checksum=checksum,
        landing_page=landing_page,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        chunk_bytes=chunk_bytes,
        progress=progress,
    )
