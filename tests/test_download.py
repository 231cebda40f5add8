"""Download and extraction against a real HTTP server on 127.0.0.1 (no network beyond it)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from radsynth.core.download import (
    ArchiveVerificationError,
    Checksum,
    ManualDownloadRequired,
    fetch_file,
    parse_checksum,
)
from radsynth.data.download import ArchiveExtractionError, extract_archive, fetch_configured_archive

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable mod 256
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
LANDING = "https://doi.org/10.57760/sciencedb.15391"
LOGIN_PAGE = b"<!DOCTYPE html><html><body><form>Please log in</form></body></html>"


@dataclass
class Behaviour:
    """What the test server does; keys of the dicts are request indices (0 = first)."""

    payload: bytes = PAYLOAD
    drop_after: dict[int, int] = field(default_factory=dict)
    stall_after: dict[int, int] = field(default_factory=dict)
    status: dict[int, int] = field(default_factory=dict)
    html: bool = False
    honor_range: bool = True
    seen: list[dict[str, str]] = field(default_factory=list)


class ArchiveHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        behaviour: Behaviour = self.server.behaviour
        index = len(behaviour.seen)
        behaviour.seen.append(dict(self.headers))
        if index in behaviour.status:
            return self._send(behaviour.status[index], b"denied", "text/plain")
        if behaviour.html:
            return self._send(200, LOGIN_PAGE, "text/html; charset=utf-8")
        start = self._range_start() if behaviour.honor_range else 0
        total = len(behaviour.payload)
        if start >= total:
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
        body = behaviour.payload[start:]
        extra = {"Content-Range": f"bytes {start}-{total - 1}/{total}"} if start else {}
        self._send_headers(206 if start else 200, len(body), "application/zip", extra)
        cut = behaviour.drop_after.get(index, behaviour.stall_after.get(index))
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if index in behaviour.stall_after:
            time.sleep(1.0)

    def _range_start(self) -> int:
        header = self.headers.get("Range")
        return int(header.removeprefix("bytes=").rstrip("-")) if header else 0

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self._send_headers(status, len(body), content_type, extra or {})
        self.wfile.write(body)

    def _send_headers(self, status: int, length: int, content_type: str, extra: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.daemon_threads = True
    httpd.behaviour = Behaviour()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/datasets-PNG.zip", httpd.behaviour
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, dest: Path, **overrides) -> Path:
    settings = dict(
        size=len(PAYLOAD),
        checksum=f"md5:{PAYLOAD_MD5}",
        landing_page=LANDING,
        timeout_s=5.0,
        max_attempts=3,
        chunk_bytes=256,
        retry_wait_s=0.0,
        progress=False,
    )
    settings.update(overrides)
    return fetch_file(url, dest, **settings)


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/datasets-PNG.zip"


def test_normal_transfer_writes_identical_bytes_and_no_part(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "resources" / "datasets-PNG.zip"
    assert fetch(url, dest, checksum=f"sha256:{PAYLOAD_SHA256}") == dest.absolute()
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["datasets-PNG.zip"]
    assert len(behaviour.seen) == 1 and "Range" not in behaviour.seen[0]
    assert behaviour.seen[0]["Accept-Encoding"] == "identity"


def test_dropped_connection_is_resumed_with_range_in_the_same_call(server, tmp_path):
    """The retry asks for exactly the bytes after what reached the disk."""
    url, behaviour = server
    behaviour.drop_after = {0: 1024}  # a multiple of chunk_bytes: a drop mid-chunk loses that chunk
    dest = tmp_path / "a.zip"
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD
    assert [seen.get("Range") for seen in behaviour.seen] == [None, "bytes=1024-"]
    assert not (tmp_path / "a.zip.part").exists()


def test_read_timeout_is_resumed(server, tmp_path):
    url, behaviour = server
    behaviour.stall_after = {0: 768}
    dest = tmp_path / "a.zip"
    fetch(url, dest, timeout_s=0.3)
    assert dest.read_bytes() == PAYLOAD
    assert [seen.get("Range") for seen in behaviour.seen] == [None, "bytes=768-"]


def test_existing_part_is_resumed_across_calls(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:4321])
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD
    assert [seen.get("Range") for seen in behaviour.seen] == ["bytes=4321-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url, behaviour = server
    behaviour.honor_range = False
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"\xff" * 3000)  # stale bytes that must not survive
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD
    assert [seen.get("Range") for seen in behaviour.seen] == ["bytes=3000-"]


def test_complete_part_answered_416_is_used_without_size(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD)
    fetch(url, dest, size=None)
    assert dest.read_bytes() == PAYLOAD
    assert [seen.get("Range") for seen in behaviour.seen] == [f"bytes={len(PAYLOAD)}-"]


def test_server_error_is_retried(server, tmp_path):
    url, behaviour = server
    behaviour.status = {0: 503}
    dest = tmp_path / "a.zip"
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD and len(behaviour.seen) == 2


def test_giving_up_keeps_the_part_and_asks_for_manual_download(server, tmp_path):
    url, behaviour = server
    behaviour.drop_after = {0: 1024, 1: 1024}
    dest = tmp_path / "a.zip"
    with pytest.raises(ManualDownloadRequired, match="gave up after 2 attempts") as info:
        fetch(url, dest, max_attempts=2)
    part = tmp_path / "a.zip.part"
    assert part.read_bytes() == PAYLOAD[:2048]
    assert f"A partial download is kept at {part}" in str(info.value)
    assert not dest.exists()


def test_checksum_mismatch_quarantines_download(server, tmp_path):
    url, _ = server
    dest = tmp_path / "a.zip"
    wrong = "0" * 32
    with pytest.raises(ArchiveVerificationError) as info:
        fetch(url, dest, checksum=f"md5:{wrong}")
    message = str(info.value)
    assert f"checksum: expected md5:{wrong}, actual md5:{PAYLOAD_MD5}" in message
    assert str(tmp_path / "a.zip.corrupt") in message
    assert not dest.exists() and not (tmp_path / "a.zip.part").exists()
    assert (tmp_path / "a.zip.corrupt").read_bytes() == PAYLOAD


def test_size_mismatch_quarantines_download(server, tmp_path):
    url, _ = server
    dest = tmp_path / "a.zip"
    with pytest.raises(
        ArchiveVerificationError, match="size: expected 10,241 bytes, actual 10,240 bytes"
    ):
        fetch(url, dest, size=len(PAYLOAD) + 1)
    assert not dest.exists() and (tmp_path / "a.zip.corrupt").read_bytes() == PAYLOAD


def assert_manual_instructions(message: str, url: str, dest: Path) -> None:
    assert f"Could not download {dest.name} automatically." in message
    assert f"URL tried: {url}" in message
    assert f"  {LANDING}\n" in message
    assert f"  {dest.absolute()}\n" in message
    assert "Expected size: 10,240 bytes" in message
    assert f"Expected checksum: md5:{PAYLOAD_MD5}" in message
    assert "rerun: the pipeline will verify" in message


def test_unauthorized_asks_for_manual_download(server, tmp_path):
    url, behaviour = server
    behaviour.status = {0: 401}
    dest = tmp_path / "a.zip"
    with pytest.raises(ManualDownloadRequired, match="HTTP 401 Unauthorized") as info:
        fetch(url, dest)
    assert_manual_instructions(str(info.value), url, dest)
    assert len(behaviour.seen) == 1 and not dest.exists()


def test_html_login_page_asks_for_manual_download(server, tmp_path):
    url, behaviour = server
    behaviour.html = True
    dest = tmp_path / "a.zip"
    with pytest.raises(ManualDownloadRequired, match="sent an HTML page") as info:
        fetch(url, dest)
    assert_manual_instructions(str(info.value), url, dest)
    assert sorted(tmp_path.iterdir()) == []


def test_refused_connection_asks_for_manual_download(tmp_path):
    url = refused_url()
    dest = tmp_path / "a.zip"
    with pytest.raises(ManualDownloadRequired, match="could not be reached") as info:
        fetch(url, dest)
    assert_manual_instructions(str(info.value), url, dest)


def test_hand_placed_valid_archive_is_used_without_requests(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "a.zip"
    dest.write_bytes(PAYLOAD)
    assert fetch(url, dest) == dest.absolute()
    assert behaviour.seen == [] and dest.read_bytes() == PAYLOAD


def test_hand_placed_corrupt_archive_is_refused_and_kept(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "a.zip"
    dest.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(ArchiveVerificationError) as info:
        fetch(url, dest)
    message = str(info.value)
    actual = hashlib.md5(PAYLOAD[:-1] + b"\x00").hexdigest()
    assert message.startswith(f"{dest.absolute()} exists but is not the expected file")
    assert f"checksum: expected md5:{PAYLOAD_MD5}, actual md5:{actual}" in message
    assert "Delete or replace it" in message
    assert behaviour.seen == [] and dest.read_bytes() == PAYLOAD[:-1] + b"\x00"


def test_missing_checksum_warns_and_records_sha256(server, tmp_path, capsys):
    url, _ = server
    dest = tmp_path / "a.zip"
    fetch(url, dest, checksum=None)
    assert (tmp_path / "a.zip.sha256").read_text() == f"sha256:{PAYLOAD_SHA256}\n"
    assert "WARNING: no checksum configured for a.zip" in capsys.readouterr().err


def test_parse_checksum_validates_format():
    assert parse_checksum(f"MD5:{PAYLOAD_MD5.upper()}") == Checksum("md5", PAYLOAD_MD5)
    assert parse_checksum(None) is None
    with pytest.raises(ValueError, match="unknown checksum algorithm 'crc32'"):
        parse_checksum("crc32:deadbeef")
    with pytest.raises(ValueError, match="sha256 needs 64 hex digits"):
        parse_checksum(f"sha256:{PAYLOAD_MD5}")
    with pytest.raises(ValueError, match="must look like"):
        parse_checksum(PAYLOAD_MD5)


def make_zip(
    path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as bundle:
        for name, data in entries.items():
            bundle.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def test_extract_archive_happy_path(tmp_path):
    archive = make_zip(tmp_path / "in.zip", {"0001035.png": b"png", "json/0001035.json": b"{}"})
    dest_dir = tmp_path / "out" / "csxa"
    files = extract_archive(archive, dest_dir, progress=False)
    assert files == [dest_dir / "0001035.png", dest_dir / "json" / "0001035.json"]
    assert [f.read_bytes() for f in files] == [b"png", b"{}"]
    assert sorted(p.name for p in dest_dir.parent.iterdir()) == ["csxa"]


@pytest.mark.parametrize(
    "evil", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt", "..\\evil.txt"]
)
def test_extract_archive_rejects_zip_slip(tmp_path, evil):
    archive = make_zip(tmp_path / "in.zip", {"fine.txt": b"x", evil: b"boom"})
    dest_dir = tmp_path / "out" / "csxa"
    with pytest.raises(
        ArchiveExtractionError, match=re.escape(f"entry {evil!r} would be extracted outside")
    ):
        extract_archive(archive, dest_dir, progress=False)
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extract_archive_rejects_non_zip(tmp_path):
    archive = tmp_path / "in.zip"
    archive.write_bytes(LOGIN_PAGE)
    with pytest.raises(ArchiveExtractionError, match=f"{archive} is not a readable zip archive"):
        extract_archive(archive, tmp_path / "out" / "csxa", progress=False)
    assert not (tmp_path / "out" / "csxa").exists()


def test_extract_archive_corrupt_member_leaves_no_partial_output(tmp_path):
    archive = make_zip(
        tmp_path / "in.zip", {"a.txt": b"first member", "b.txt": b"B" * 500}, zipfile.ZIP_STORED
    )
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"B" * 500) + 10] ^= 0xFF  # flip one stored byte: CRC check must fail
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveExtractionError, match=r"in\.zip: entry 'b\.txt' is corrupt"):
        extract_archive(archive, tmp_path / "out" / "csxa", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_archive_refuses_existing_destination(tmp_path):
    archive = make_zip(tmp_path / "in.zip", {"a.txt": b"a"})
    (tmp_path / "csxa").mkdir()
    with pytest.raises(FileExistsError, match="csxa already exists"):
        extract_archive(archive, tmp_path / "csxa", progress=False)


def test_fetch_configured_archive_reads_config_entries(tmp_path):
    payload = b"PK-placed-by-hand"
    placed = tmp_path / "datasets-PNG.zip"
    placed.write_bytes(payload)
    spec = {
        "url": "http://127.0.0.1:9/unused",
        "filename": placed.name,
        "size": len(payload),
        "checksum": "md5:" + hashlib.md5(payload).hexdigest(),
    }
    settings = {"timeout_s": 1, "max_attempts": 1, "chunk_bytes": 4096, "retry_wait_s": 0}
    assert (
        fetch_configured_archive(placed, spec, landing_page="L", settings=settings)
        == placed.absolute()
    )
    with pytest.raises(ArchiveVerificationError, match="size: expected 99 bytes"):
        fetch_configured_archive(placed, {**spec, "size": 99}, landing_page="L", settings=settings)
