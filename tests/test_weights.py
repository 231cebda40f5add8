"""Weights download against a small HTTP server on 127.0.0.1 (no network beyond it)."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from radsynth.core.download import ArchiveVerificationError, ManualDownloadRequired
from radsynth.evaluate.weights import fetch_weights, weights_sections

WEIGHTS = bytes(range(251)) * 13  # 3,263 bytes: a stand-in for pt_inception-2015-12-05.pth
WEIGHTS_SHA256 = hashlib.sha256(WEIGHTS).hexdigest()
LANDING = "https://github.com/mseitzer/pytorch-fid/releases"


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a folder; every request's path is recorded on the server."""

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)


@pytest.fixture
def served(tmp_path):
    """(url of the weights file, requests seen, stop()) for a server of one folder."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "inception.pth").write_bytes(WEIGHTS)
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(CountingHandler, directory=str(root))
    )
    httpd.daemon_threads = True
    httpd.requests = []
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    stopped = []

    def stop() -> None:
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            stopped.append(True)

    yield f"http://127.0.0.1:{httpd.server_address[1]}/inception.pth", httpd.requests, stop
    stop()


def fetch(url: str, dest, sha256: str = WEIGHTS_SHA256, algorithm: str = "sha256"):
    return fetch_weights(
        url,
        dest,
        checksum=f"{algorithm}:{sha256}",
        landing_page=LANDING,
        timeout_s=5,
        max_attempts=1,
        chunk_bytes=512,
        progress=False,
    )


def test_downloads_then_reuses_the_verified_file_offline(served, tmp_path):
    url, requests, stop = served
    dest = tmp_path / "weights" / "inception.pth"
    assert fetch(url, dest) == dest
    assert dest.read_bytes() == WEIGHTS
    assert requests == ["/inception.pth"]
    stop()
    assert fetch(url, dest) == dest
    assert dest.read_bytes() == WEIGHTS and requests == ["/inception.pth"]


def test_wrong_sha256_names_the_file_and_both_checksums(served, tmp_path):
    url, _, _ = served
    dest = tmp_path / "inception.pth"
    expected = hashlib.sha256(b"other weights").hexdigest()
    with pytest.raises(ArchiveVerificationError) as info:
        fetch(url, dest, sha256=expected)
    message = str(info.value)
    assert f"checksum: expected sha256:{expected}, actual sha256:{WEIGHTS_SHA256}" in message
    assert f"{dest} was not written" in message
    assert not dest.exists()


def test_hand_placed_wrong_bytes_are_refused_without_downloading(served, tmp_path):
    url, requests, _ = served
    dest = tmp_path / "inception.pth"
    dest.write_bytes(WEIGHTS[:-1])
    with pytest.raises(ArchiveVerificationError) as info:
        fetch(url, dest)
    actual = hashlib.sha256(WEIGHTS[:-1]).hexdigest()
    message = str(info.value)
    assert message.startswith(f"{dest} exists but is not the expected file")
    assert f"checksum: expected sha256:{WEIGHTS_SHA256}, actual sha256:{actual}" in message
    assert requests == [] and dest.read_bytes() == WEIGHTS[:-1]


def test_unreachable_host_asks_to_place_the_file_by_hand(served, tmp_path):
    url, _, stop = served
    stop()
    dest = tmp_path / "inception.pth"
    with pytest.raises(ManualDownloadRequired) as info:
        fetch(url, dest)
    message = str(info.value)
    assert f"  {LANDING}\n" in message and f"  {dest}\n" in message
    assert f"Expected checksum: sha256:{WEIGHTS_SHA256}" in message
    assert not dest.exists()


def test_a_sha256_prefix_pin_accepts_the_file_and_refuses_other_bytes(served, tmp_path):
    """pytorch-fid names its weights by the first 8 hex digits of their sha256 (torch.hub's
    check)."""
    url, _, _ = served
    dest = tmp_path / "inception.pth"
    assert (
        fetch(url, dest, sha256=WEIGHTS_SHA256[:8], algorithm="sha256-prefix").read_bytes()
        == WEIGHTS
    )
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the weights")
    with pytest.raises(
        ArchiveVerificationError, match="expected sha256-prefix:" + WEIGHTS_SHA256[:8]
    ):
        fetch(url, other, sha256=WEIGHTS_SHA256[:8], algorithm="sha256-prefix")


def test_a_failed_download_names_the_offline_setting_of_each_section_that_needs_it(
    served, tmp_path
):
    url, _, stop = served
    stop()
    with pytest.raises(ManualDownloadRequired) as info:
        fetch_weights(
            url,
            tmp_path / "inception.pth",
            checksum=f"sha256:{WEIGHTS_SHA256}",
            landing_page=LANDING,
            timeout_s=5,
            max_attempts=1,
            progress=False,
            needed_by=["evaluate.extractor", "audit.memorization"],
        )
    lines = str(info.value).splitlines()
    tail = lines[lines.index("Or do without this file: set") :]
    assert tail[1].startswith("  evaluate.extractor.name: offline-inception (FID, KID and PRDC")
    assert tail[2].startswith("  audit.memorization.encoder: offline-inception (the memorization")
    assert len(tail) == 3


def test_weights_sections_name_the_sections_that_need_each_file():
    config = {
        "evaluate": {"extractor": {"name": "fid-inception", "weights": {"filename": "a.pth"}}},
        "audit": {"memorization": {"encoder": "vit", "weights": {"filename": "b.pth"}}},
    }
    assert weights_sections(config) == {
        "a.pth": ["evaluate.extractor"],
        "b.pth": ["audit.memorization"],
    }
    config["audit"]["memorization"]["weights"]["filename"] = "a.pth"
    assert weights_sections(config) == {"a.pth": ["evaluate.extractor", "audit.memorization"]}
    config["evaluate"]["extractor"]["name"] = "offline-inception"
    config["audit"]["memorization"]["encoder"] = "offline-inception"
    assert weights_sections(config) == {}
