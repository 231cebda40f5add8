"""Fetch one file over HTTP reproducibly: resumable, retried, and verified against a pinned
size and checksum.

It lives in core because several stages download files that a batch job may not be able to
fetch: data (the CSXA archives), evaluate (the FID Inception weights), audit (ViT weights).
A download either yields a file whose size and checksum match what was pinned, or stops with a
message that tells the user exactly how to obtain the file by hand: the host may ask for a
login, or a compute node may have no internet at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm
from urllib3.exceptions import NewConnectionError

from radsynth.core.atomic import write_text_atomic

# Hex digest length per supported algorithm: a pinned checksum of the wrong length is a typo.
CHECKSUM_HEX_LENGTHS = {"md5": 32, "sha256": 64}
#: `sha256-prefix:<hex>` pins the first digits of a sha256 (at least PREFIX_MIN_DIGITS): torch.hub's
#: `check_hash` convention, the only digest some weights files publish (in their file name).
PREFIX_SUFFIX = "-prefix"
PREFIX_MIN_DIGITS = 8
# Algorithm recorded in the sidecar when no checksum is configured.
RECORDED_ALGORITHM = "sha256"
RANGE_PATTERN = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class ManualDownloadRequired(RuntimeError):
    """The file cannot be fetched automatically; the message says how to place it by hand."""


class ArchiveVerificationError(RuntimeError):
    """A file's size or checksum differs from the configured one."""


class _TransferInterrupted(Exception):
    """A transient failure: the next attempt resumes from the bytes already on disk."""


class _AccessRefused(Exception):
    """A permanent failure that only a manual download can fix; args[0] is the reason."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # md5, sha256 or sha256-prefix
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    @property
    def hash_name(self) -> str:
        """The hashlib algorithm that computes it."""
        return self.algorithm.removesuffix(PREFIX_SUFFIX)

    def matches(self, actual: Checksum) -> bool:
        """A full pin matches equal digests; a prefix pin any digest that starts with it."""
        if self.algorithm.endswith(PREFIX_SUFFIX):
            return actual.algorithm == self.hash_name and actual.hexdigest.startswith(
                self.hexdigest
            )
        return actual == self


@dataclass(frozen=True)
class Verification:
    """What a file is, next to what it should be; `problems` is empty when it matches."""

    actual_size: int
    actual: Checksum
    problems: tuple[str, ...]


@dataclass(frozen=True)
class _Target:
    """Everything a manual-download message has to state about the wanted file."""

    url: str
    dest: Path
    size: int | None
    checksum: Checksum | None
    landing_page: str


def parse_checksum(text: str | None) -> Checksum | None:
    """Parse 'md5:<hex>' / 'sha256:<hex>' so a mistyped pin fails before any transfer."""
    if text is None:
        return None
    algorithm, sep, hexdigest = text.strip().partition(":")
    algorithm, hexdigest = algorithm.lower(), hexdigest.lower()
    if not sep:
        raise ValueError(f"checksum {text!r} must look like 'md5:<hex>' or 'sha256:<hex>'")
    if algorithm == f"sha256{PREFIX_SUFFIX}":
        if not re.fullmatch(f"[0-9a-f]{{{PREFIX_MIN_DIGITS},63}}", hexdigest):
            raise ValueError(
                f"checksum {text!r}: {algorithm} needs {PREFIX_MIN_DIGITS} to 63 hex digits"
            )
        return Checksum(algorithm, hexdigest)
    if algorithm not in CHECKSUM_HEX_LENGTHS:
        raise ValueError(
            f"unknown checksum algorithm {algorithm!r} in {text!r}; "
            f"supported: {', '.join(sorted(CHECKSUM_HEX_LENGTHS))}, sha256{PREFIX_SUFFIX}"
        )
    length = CHECKSUM_HEX_LENGTHS[algorithm]
    if not re.fullmatch(f"[0-9a-f]{{{length}}}", hexdigest):
        raise ValueError(f"checksum {text!r}: {algorithm} needs {length} hex digits")
    return Checksum(algorithm, hexdigest)


def file_checksum(path: Path, algorithm: str, chunk_bytes: int) -> Checksum:
    """Hash a file in chunks: archives and weights are larger than we want to hold in memory."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return Checksum(algorithm, digest.hexdigest())


def verify_file(
    path: Path, *, size: int | None, checksum: Checksum | None, chunk_bytes: int
) -> Verification:
    """Compare a file with the expected size and checksum (sha256 is computed when none is set)."""
    actual_size = path.stat().st_size
    actual = file_checksum(
        path, checksum.hash_name if checksum else RECORDED_ALGORITHM, chunk_bytes
    )
    problems = []
    if size is not None and actual_size != size:
        problems.append(f"size: expected {size:,} bytes, actual {actual_size:,} bytes")
    if checksum is not None and not checksum.matches(actual):
        problems.append(f"checksum: expected {checksum}, actual {actual}")
    return Verification(actual_size, actual, tuple(problems))


def fetch_file(
    url: str,
    dest: Path,
    *,
    size: int | None,
    checksum: str | None,
    landing_page: str,
    timeout_s: float,
    max_attempts: int,
    chunk_bytes: int,
    retry_wait_s: float = 2.0,
    progress: bool = True,
) -> Path:
    """Return `dest` holding the verified file, downloading (and resuming) it when absent.

    A file already at `dest` (an earlier run, or placed by hand) is verified and used
    without touching the network. `retry_wait_s` times the attempt number is the pause
    before a retry; it does not change the result.
    """
    target = _Target(url, Path(dest).absolute(), size, parse_checksum(checksum), landing_page)
    if target.dest.exists():
        return _accept_existing(target, chunk_bytes)
    part = _sibling(target.dest, ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download_with_retries(
            target,
            part,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            chunk_bytes=chunk_bytes,
            retry_wait_s=retry_wait_s,
            progress=progress,
        )
    except _AccessRefused as exc:
        raise ManualDownloadRequired(manual_download_message(target, str(exc), part)) from exc
    return _promote_part(target, part, chunk_bytes)


def manual_download_message(target: _Target, reason: str, part: Path) -> str:
    """The instructions shown when the host refuses a batch download."""
    name = target.dest.name
    size = f"{target.size:,} bytes" if target.size is not None else "not configured"
    checksum = (
        str(target.checksum)
        if target.checksum is not None
        else f"not configured (a sha256 will be recorded in {_sibling(target.dest, '.sha256')})"
    )
    lines = [
        f"Could not download {name} automatically.",
        f"  URL tried: {target.url}",
        f"  Why it failed: {reason}",
        f"Download {name} in a web browser from:",
        f"  {target.landing_page}",
        "and place it at exactly this path:",
        f"  {target.dest}",
        f"Expected size: {size}",
        f"Expected checksum: {checksum}",
        "Then rerun: the pipeline will verify the file's size and checksum and use it.",
    ]
    if part.exists():
        lines.append(f"(A partial download is kept at {part}; a rerun resumes it.)")
    return "\n".join(lines)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _accept_existing(target: _Target, chunk_bytes: int) -> Path:
    """Use a file already in place only if it is the expected one; never overwrite it."""
    verification = verify_file(
        target.dest, size=target.size, checksum=target.checksum, chunk_bytes=chunk_bytes
    )
    if verification.problems:
        raise ArchiveVerificationError(
            f"{target.dest} exists but is not the expected file:\n  "
            + "\n  ".join(verification.problems)
            + f"\nDelete or replace it (download it from {target.landing_page}) and rerun."
        )
    _record_unpinned(target, verification)
    return target.dest


def _promote_part(target: _Target, part: Path, chunk_bytes: int) -> Path:
    """Move a complete, verified download into place; quarantine it as .corrupt otherwise."""
    verification = verify_file(
        part, size=target.size, checksum=target.checksum, chunk_bytes=chunk_bytes
    )
    if verification.problems:
        corrupt = _sibling(target.dest, ".corrupt")
        os.replace(part, corrupt)
        raise ArchiveVerificationError(
            f"download of {target.dest.name} from {target.url} does not match:\n  "
            + "\n  ".join(verification.problems)
            + f"\nThe downloaded bytes are kept for inspection at {corrupt}; "
            f"{target.dest} was not written. Check the configured size/checksum, "
            "delete the .corrupt file and rerun."
        )
    os.replace(part, target.dest)
    _record_unpinned(target, verification)
    return target.dest


def _record_unpinned(target: _Target, verification: Verification) -> None:
    """Without a pinned checksum, warn and write the computed one where the user can copy it."""
    if target.checksum is not None:
        return
    sidecar = _sibling(target.dest, f".{RECORDED_ALGORITHM}")
    write_text_atomic(sidecar, f"{verification.actual}\n")
    print(
        f"WARNING: no checksum configured for {target.dest.name}; its integrity was NOT "
        f"verified. Computed {verification.actual} (recorded in {sidecar}); "
        "pin it in the config to verify future downloads.",
        file=sys.stderr,
    )


def _download_with_retries(
    target: _Target,
    part: Path,
    *,
    timeout_s: float,
    max_attempts: int,
    chunk_bytes: int,
    retry_wait_s: float,
    progress: bool,
) -> None:
    """Transfer into `part`, resuming after drops; give up after `max_attempts` tries."""
    resumed = _size_on_disk(part)
    with tqdm(
        total=target.size,
        initial=resumed,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=target.dest.name,
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        for attempt in range(1, max_attempts + 1):
            try:
                _transfer_once(target, part, timeout_s=timeout_s, chunk_bytes=chunk_bytes, bar=bar)
                return
            except _TransferInterrupted as exc:
                last_error = exc
                tqdm.write(
                    f"{target.dest.name}: attempt {attempt}/{max_attempts} interrupted ({exc}); "
                    f"{_size_on_disk(part):,} bytes kept in {part}",
                    file=sys.stderr,
                )
                if attempt < max_attempts:
                    time.sleep(retry_wait_s * attempt)
    raise _AccessRefused(f"gave up after {max_attempts} attempts; last error: {last_error}")


def _size_on_disk(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer_once(
    target: _Target, part: Path, *, timeout_s: float, chunk_bytes: int, bar: tqdm
) -> None:
    """One HTTP request: resume from the bytes in `part` and append what arrives."""
    offset = _size_on_disk(part)
    if target.size is not None and offset >= target.size:
        return
    # identity: byte offsets must refer to the file itself, not to a compressed stream.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = requests.get(target.url, headers=headers, stream=True, timeout=timeout_s)
    except requests.ConnectionError as exc:
        if _host_unreachable(exc):
            raise _AccessRefused(f"the host could not be reached ({exc})") from exc
        raise _TransferInterrupted(f"connection failed: {exc}") from exc
    except requests.Timeout as exc:
        raise _TransferInterrupted(f"timed out after {timeout_s} s: {exc}") from exc
    with response:
        start = _start_offset(response, offset, part)
        if start is not None:
            _stream_body(response, part, start=start, chunk_bytes=chunk_bytes, bar=bar)


def _host_unreachable(exc: requests.ConnectionError) -> bool:
    """DNS failure or refused connection: retrying will not help, a manual download will."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(reason, NewConnectionError)


def _start_offset(response: requests.Response, offset: int, part: Path) -> int | None:
    """Byte offset the response body starts at, or None when `part` is already complete."""
    status = response.status_code
    if status in (401, 403):
        raise _AccessRefused(
            f"the server answered HTTP {status} {response.reason} (login required?)"
        )
    if status == 416:
        return _after_unsatisfiable_range(response, offset, part)
    if 400 <= status < 500:
        raise _AccessRefused(f"the server answered HTTP {status} {response.reason}")
    if status >= 500:
        raise _TransferInterrupted(f"server error HTTP {status} {response.reason}")
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        raise _AccessRefused(
            f"the server sent an HTML page (Content-Type: {content_type}) instead of the "
            "file, probably a login page"
        )
    if status == 206:
        return _checked_partial_start(response, offset, part)
    if offset:
        tqdm.write(
            f"{part.name}: server ignored the Range request; restarting from byte 0",
            file=sys.stderr,
        )
    return 0


def _after_unsatisfiable_range(response: requests.Response, offset: int, part: Path) -> None:
    """416: the partial file is complete if it is exactly the remote length, else it is stale."""
    match = RANGE_PATTERN.fullmatch(response.headers.get("Content-Range", "").strip())
    if match and match.group(2) == str(offset):
        return None
    part.unlink()
    raise _TransferInterrupted(
        f"server refused to resume at byte {offset} (HTTP 416, Content-Range "
        f"{response.headers.get('Content-Range')!r}); discarded the partial file, restarting"
    )


def _checked_partial_start(response: requests.Response, offset: int, part: Path) -> int:
    """206 must resume where `part` ends; a different start would splice wrong bytes."""
    content_range = response.headers.get("Content-Range", "")
    match = RANGE_PATTERN.fullmatch(content_range.strip())
    if not match or match.group(1) is None or int(match.group(1)) != offset:
        part.unlink()
        raise _TransferInterrupted(
            f"asked for bytes from {offset} but got Content-Range {content_range!r}; "
            "discarded the partial file, restarting"
        )
    return offset


def _stream_body(
    response: requests.Response, part: Path, *, start: int, chunk_bytes: int, bar: tqdm
) -> None:
    """Write the body after `start` bytes of `part`; a short body counts as an interruption."""
    declared = response.headers.get("Content-Length")
    bar.reset(total=bar.total)
    bar.update(start)
    with part.open("ab" if start else "wb") as handle:
        try:
            for chunk in response.iter_content(chunk_size=chunk_bytes):
                handle.write(chunk)
                bar.update(len(chunk))
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.Timeout,
        ) as exc:
            raise _TransferInterrupted(f"connection dropped: {exc}") from exc
        finally:
            handle.flush()
            os.fsync(handle.fileno())
    received = part.stat().st_size - start
    if declared is not None and received < int(declared):
        raise _TransferInterrupted(
            f"connection closed after {received:,} of {int(declared):,} bytes"
        )
