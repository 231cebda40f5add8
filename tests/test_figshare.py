"""The figshare uploader against a fake figshare on 127.0.0.1 (no network beyond it).

The fake implements the documented subset the uploader uses
(https://docs.figshare.com/#upload_files):
articles, files, the upload service's parts (cut at a small part size so a file has several),
completion with a computed md5, listing with pages, publishing, and the token header. It records
every request, so tests can say exactly which requests a run (or a dry run) sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from radsynth.core.settings.release import Author, ReleaseSettings
from radsynth.release import figshare
from radsynth.release.card import DATA_ORIGINS, data_sentence, figshare_metadata
from radsynth.release.figshare import (
    FigshareError,
    PackageError,
    describe_upload,
    token_from_env,
    upload_package,
)

TOKEN = "tok-SECRET-8f14e45fceea167a5a36dedd4bea2543"
TITLE = "Synthetic cervical spine radiographs (test package)"
METADATA = {
    "title": TITLE,
    "description": "Uploader test.",
    "keywords": ["ddpm", "radiograph"],
    "categories": [24],
    "license": 1,
    "defined_type": "dataset",
    "authors": [{"name": "A. Tester"}],
}
#: The package: (path inside it, bytes, md5 computed with md5sum when the test was written).
README = b"radsynth release package: readme\n"
BIG = bytes(range(256)) + bytes(range(94))  # 350 bytes: 4 parts of at most 100 bytes
TABLE = b"id,label\n1,real\n2,synthetic\n"
FILES = [
    ("README.txt", README, "6543b2e0b6c702f8c195dfca4b10c0f6"),
    ("data/big.bin", BIG, "b5facb0580420477d4c053b5256e69d7"),
    ("labels.csv", TABLE, "02594aa36031228652455a15df72aa1b"),
]
PART_SIZE = 100


@dataclass
class FakeFigshare:
    """The server's data, its request log and the faults to inject."""

    base: str = ""
    part_size: int = PART_SIZE
    token: str = TOKEN
    articles: dict[int, dict] = field(default_factory=dict)
    files: dict[int, dict] = field(default_factory=dict)  # file id -> file record (with its parts)
    requests: list[tuple[str, str]] = field(default_factory=list)
    drop_once: set[str] = field(default_factory=set)  # paths answered by closing the socket, once
    fail: dict[tuple[str, str], list[int]] = field(
        default_factory=dict
    )  # (method, path) -> statuses to answer
    next_article: int = 5001
    next_file: int = 1001

    def content(self, file_id: int) -> bytes:
        return self.files[file_id]["content"]

    def file_by_name(self, article_id: int, name: str) -> dict:
        (record,) = [
            f for f in self.files.values() if f["article"] == article_id and f["name"] == name
        ]
        return record


def public_file(record: dict, base: str) -> dict:
    return {
        key: record[key] for key in ("id", "name", "size", "status", "supplied_md5", "computed_md5")
    } | {
        "upload_url": f"{base}/upload/up{record['id']}",
        "upload_token": f"up{record['id']}",
        "is_link_only": False,
    }


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    @property
    def fake(self) -> FakeFigshare:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def answer(self, status: int, body: object = None) -> None:
        data = (
            b""
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self, method: str) -> None:
        fake = self.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        fake.requests.append((method, self.path))
        if url.path in fake.drop_once and method == "PUT":
            fake.drop_once.discard(url.path)
            self.close_connection = True  # read the part, then hang up without an answer
            return
        if fake.fail.get((method, url.path)):
            status = fake.fail[(method, url.path)].pop(0)
            headers = "; ".join(f"{key}: {value}" for key, value in self.headers.items())
            self.answer(status, f"internal error; your request headers were: {headers}".encode())
            return
        if self.headers.get("Authorization") != f"token {fake.token}":
            self.answer(
                401,
                {
                    "message": f"Invalid token: {self.headers.get('Authorization')}",
                    "code": "Forbidden",
                },
            )
            return
        parts = url.path.strip("/").split("/")
        query = {key: int(values[0]) for key, values in parse_qs(url.query).items()}
        found = self.route(
            method, parts, json.loads(body) if body and parts[0] == "v2" else body, query
        )
        if found is None:
            self.answer(404, {"message": "not found"})
        else:
            self.answer(*found)

    def route(self, method: str, parts: list[str], body, query: dict) -> tuple[int, object] | None:
        fake = self.fake
        match method, parts:
            case "POST", ["v2", "account", "articles"]:
                article_id, fake.next_article = fake.next_article, fake.next_article + 1
                fake.articles[article_id] = {"metadata": body, "published": 0}
                return 201, {
                    "entity_id": article_id,
                    "location": f"{fake.base}/v2/account/articles/{article_id}",
                    "warnings": [],
                }
            case "GET", ["v2", "account", "articles", article] if int(article) in fake.articles:
                return 200, {"id": int(article), **fake.articles[int(article)]["metadata"]}
            case "POST", ["v2", "account", "articles", article, "files"] if (
                int(article) in fake.articles
            ):
                file_id, fake.next_file = fake.next_file, fake.next_file + 1
                size = body["size"]
                fake.files[file_id] = {
                    "id": file_id,
                    "article": int(article),
                    "name": body["name"],
                    "size": size,
                    "status": "created",
                    "supplied_md5": body["md5"],
                    "computed_md5": "",
                    "content": None,
                    "parts": {
                        no + 1: None for no in range((size + fake.part_size - 1) // fake.part_size)
                    },
                }
                return 201, {
                    "location": f"{fake.base}/v2/account/articles/{article}/files/{file_id}"
                }
            case "GET", ["v2", "account", "articles", article, "files"] if (
                int(article) in fake.articles
            ):
                listed = [
                    public_file(f, fake.base)
                    for f in fake.files.values()
                    if f["article"] == int(article)
                ]
                page, size = query.get("page", 1), query.get("page_size", 10)
                return 200, listed[(page - 1) * size : page * size]
            case "GET", ["v2", "account", "articles", article, "files", file_id] if (
                int(file_id) in fake.files
            ):
                return 200, public_file(fake.files[int(file_id)], fake.base)
            case "POST", ["v2", "account", "articles", article, "files", file_id] if (
                int(file_id) in fake.files
            ):
                return self.complete(fake.files[int(file_id)])
            case "POST", ["v2", "account", "articles", article, "publish"] if (
                int(article) in fake.articles
            ):
                fake.articles[int(article)]["published"] += 1
                return 201, {"location": f"{fake.base}/v2/articles/{article}"}
            case "GET", ["upload", token] if int(token.removeprefix("up")) in fake.files:
                record = fake.files[int(token.removeprefix("up"))]
                return 200, {
                    "token": token,
                    "name": record["name"],
                    "size": record["size"],
                    "md5": record["supplied_md5"],
                    "status": "PENDING",
                    "parts": [
                        {
                            "partNo": no,
                            "startOffset": (no - 1) * fake.part_size,
                            "endOffset": min(no * fake.part_size, record["size"]) - 1,
                            "status": "PENDING" if data is None else "COMPLETE",
                            "locked": False,
                        }
                        for no, data in record["parts"].items()
                    ],
                }
            case "PUT", ["upload", token, part_no] if int(token.removeprefix("up")) in fake.files:
                record = fake.files[int(token.removeprefix("up"))]
                no = int(part_no)
                expected = min(no * fake.part_size, record["size"]) - (no - 1) * fake.part_size
                if no not in record["parts"] or len(body) != expected:
                    return 400, {"message": f"part {no}: {len(body)} bytes, expected {expected}"}
                record["parts"][no] = body
                return 200, None
        return None

    @staticmethod
    def complete(record: dict) -> tuple[int, object]:
        """Assemble the parts and compute the md5, as figshare does on completion."""
        if any(data is None for data in record["parts"].values()):
            return 400, {"message": "not all parts uploaded"}
        record["content"] = b"".join(record["parts"][no] for no in sorted(record["parts"]))
        record["computed_md5"] = hashlib.md5(record["content"]).hexdigest()
        record["status"] = "available"
        return 202, None


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    fake = FakeFigshare(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def package(tmp_path) -> Path:
    folder = tmp_path / "package"
    for relative, data, _ in FILES:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    (folder / "checksums.md5").write_text(
        "".join(f"{md5}  {relative}\n" for relative, _, md5 in FILES)
    )
    (folder / "figshare.json").write_text(json.dumps(METADATA))
    return folder


def upload(package: Path, server: FakeFigshare, **kwargs) -> figshare.UploadReport:
    return upload_package(
        package,
        token=kwargs.pop("token", TOKEN),
        api_url=f"{server.base}/v2",
        progress=False,
        backoff_s=0.0,
        **kwargs,
    )


def cli(*args: str) -> int:
    from radsynth.cli import main  # imported when used: the CLI imports every stage

    return main(["figshare-upload", *args])


def assert_uploaded(server: FakeFigshare) -> None:
    """The server holds every file, byte for byte, available with its md5."""
    assert {
        f["name"]: (f["content"], f["status"], f["computed_md5"]) for f in server.files.values()
    } == {
        "README.txt": (README, "available", "6543b2e0b6c702f8c195dfca4b10c0f6"),
        "big.bin": (BIG, "available", "b5facb0580420477d4c053b5256e69d7"),
        "labels.csv": (TABLE, "available", "02594aa36031228652455a15df72aa1b"),
    }


FILES_PAGE = "?page=1&page_size=1000"


def test_full_upload_sends_every_file_in_parts_and_no_publish(package, server):
    report = upload(package, server)
    assert_uploaded(server)
    assert server.articles == {5001: {"metadata": METADATA, "published": 0}}
    assert [
        (no, len(data)) for no, data in server.file_by_name(5001, "big.bin")["parts"].items()
    ] == [(1, 100), (2, 100), (3, 100), (4, 50)]
    assert server.requests == [
        ("POST", "/v2/account/articles"),
        ("GET", "/v2/account/articles/5001"),
        ("POST", "/v2/account/articles/5001/files"),
        ("GET", "/v2/account/articles/5001/files/1001"),
        ("GET", "/upload/up1001"),
        ("PUT", "/upload/up1001/1"),
        ("POST", "/v2/account/articles/5001/files/1001"),
        ("POST", "/v2/account/articles/5001/files"),
        ("GET", "/v2/account/articles/5001/files/1002"),
        ("GET", "/upload/up1002"),
        ("PUT", "/upload/up1002/1"),
        ("PUT", "/upload/up1002/2"),
        ("PUT", "/upload/up1002/3"),
        ("PUT", "/upload/up1002/4"),
        ("POST", "/v2/account/articles/5001/files/1002"),
        ("POST", "/v2/account/articles/5001/files"),
        ("GET", "/v2/account/articles/5001/files/1003"),
        ("GET", "/upload/up1003"),
        ("PUT", "/upload/up1003/1"),
        ("POST", "/v2/account/articles/5001/files/1003"),
        ("GET", "/v2/account/articles/5001/files" + FILES_PAGE),
    ]
    assert (report.article_id, report.actions, report.processing, report.published) == (
        5001,
        [("README.txt", "uploaded"), ("big.bin", "uploaded"), ("labels.csv", "uploaded")],
        [],
        False,
    )
    assert json.loads((package / ".figshare_upload.json").read_text()) == {
        "format": 1,
        "api_url": f"{server.base}/v2",
        "article_id": 5001,
        "title": TITLE,
        "published": False,
        "files": {
            "README.txt": {
                "file_id": 1001,
                "md5": "6543b2e0b6c702f8c195dfca4b10c0f6",
                "size": 33,
                "status": "completed",
            },
            "big.bin": {
                "file_id": 1002,
                "md5": "b5facb0580420477d4c053b5256e69d7",
                "size": 350,
                "status": "completed",
            },
            "labels.csv": {
                "file_id": 1003,
                "md5": "02594aa36031228652455a15df72aa1b",
                "size": 28,
                "status": "completed",
            },
        },
    }


@pytest.mark.parametrize(
    ("source", "data"),
    [
        (
            "csxa",
            "The model learnt from the 4963 images of the Cervical Spine X-ray Atlas (CSXA) V3.0, "
            "lateral cervical-spine radiographs released under CC BY 4.0 (Science Data Bank, "
            "doi:10.57760/sciencedb.15391).",
        ),
        (
            "demo",
            "The model learnt from the 200 images of the radsynth procedural phantom atlas, "
            "lateral cervical-spine phantoms drawn by radsynth's own code "
            "(`radsynth.demo.phantom`), not radiographs of any person.",
        ),
    ],
)
def test_the_article_states_the_data_its_model_learnt_from(package, server, source, data):
    """The metadata the release writes reaches figshare with the data source's licence and the
    data and screening sentences after the configured description."""
    origin = DATA_ORIGINS[source]
    n_images = {"csxa": 4963, "demo": 200}[source]
    settings = ReleaseSettings(
        title=TITLE,
        description="Uploader test.",
        keywords=("ddpm",),
        categories=(24,),
        authors=(Author(name="A. Tester"),),
        max_archive_bytes=1000,
        near_duplicate_patch_distance=0.05,
    )
    screening = "Nobody reviewed the images."
    metadata = figshare_metadata(
        settings, origin, data=data_sentence(origin, n_images), screening=screening
    )
    (package / "figshare.json").write_text(json.dumps(metadata))
    upload(package, server)
    assert server.articles[5001]["metadata"] == {
        "title": TITLE,
        "description": f"Uploader test.\n\n{data} {screening}",
        "keywords": ["ddpm"],
        "categories": [24],
        "license": 1,  # CC BY 4.0 in figshare's GET /v2/licenses
        "authors": [{"name": "A. Tester"}],
        "defined_type": "dataset",
    }


def test_rerun_of_a_finished_upload_only_lists_the_files(package, server):
    upload(package, server)
    server.requests.clear()
    report = upload(package, server)
    assert server.requests == [("GET", "/v2/account/articles/5001/files" + FILES_PAGE)]
    assert [action for _, action in report.actions] == [
        "already on figshare with the same md5, skipped"
    ] * 3


def test_publish_only_when_asked(package, server, capsys, monkeypatch):
    monkeypatch.setenv("RADSYNTH_TEST_FIGSHARE", TOKEN)
    assert (
        cli(
            str(package),
            "--upload",
            "--token-env",
            "RADSYNTH_TEST_FIGSHARE",
            "--api-url",
            f"{server.base}/v2",
        )
        == 0
    )
    assert server.articles[5001]["published"] == 0
    assert ("POST", "/v2/account/articles/5001/publish") not in server.requests
    assert "not published (rerun with --publish to publish)" in capsys.readouterr().out

    server.requests.clear()
    assert (
        cli(
            str(package),
            "--upload",
            "--publish",
            "--token-env",
            "RADSYNTH_TEST_FIGSHARE",
            "--api-url",
            f"{server.base}/v2",
        )
        == 0
    )
    assert server.requests == [
        ("GET", "/v2/account/articles/5001/files" + FILES_PAGE),
        ("POST", "/v2/account/articles/5001/publish"),
    ]
    assert server.articles[5001]["published"] == 1
    assert capsys.readouterr().out.splitlines()[-1] == "published"
    assert json.loads((package / ".figshare_upload.json").read_text())["published"] is True


def test_dry_run_sends_nothing_and_describes_the_upload(package, server, capsys, monkeypatch):
    monkeypatch.setenv("RADSYNTH_TEST_FIGSHARE", TOKEN)
    assert (
        cli(str(package), "--token-env", "RADSYNTH_TEST_FIGSHARE", "--api-url", f"{server.base}/v2")
        == 0
    )
    assert server.requests == []
    assert not (package / ".figshare_upload.json").exists()
    assert capsys.readouterr().out.splitlines() == [
        f"dry run: nothing is sent to {server.base}/v2 (add --upload to upload)",
        f"would create a new private article: '{TITLE}'",
        "3 files, 411 bytes, every md5 matches checksums.md5:",
        "  README.txt  33 bytes  md5 6543b2e0b6c702f8c195dfca4b10c0f6  parts: set by figshare at "
        "upload",
        "  big.bin  350 bytes  md5 b5facb0580420477d4c053b5256e69d7  parts: set by figshare at "
        "upload",
        "  labels.csv  28 bytes  md5 02594aa36031228652455a15df72aa1b  parts: set by figshare at "
        "upload",
        "token: RADSYNTH_TEST_FIGSHARE is set",
        "would not publish (add --publish to publish after the upload)",
    ]


def test_dry_run_of_a_started_upload_names_the_recorded_article(package, server):
    upload(package, server)
    server.requests.clear()
    text = describe_upload(
        package, api_url=f"{server.base}/v2", token_env="UNSET_VARIABLE", publish=True, environ={}
    )
    assert server.requests == []
    assert (
        f"would resume article 5001 recorded in {package / '.figshare_upload.json'}: '{TITLE}'"
        in text
    )
    assert "token: UNSET_VARIABLE is NOT set (--upload needs it)" in text
    assert text.endswith("would publish the article after the upload")


def test_a_dropped_connection_during_a_part_is_retried(package, server):
    server.drop_once.add("/upload/up1002/2")
    upload(package, server)
    assert_uploaded(server)
    assert [path for method, path in server.requests if path.startswith("/upload/up1002/")] == [
        "/upload/up1002/1",
        "/upload/up1002/2",
        "/upload/up1002/2",
        "/upload/up1002/3",
        "/upload/up1002/4",
    ]


def test_a_server_error_on_a_get_is_retried(package, server):
    server.fail[("GET", "/upload/up1001")] = [503]
    upload(package, server)
    assert_uploaded(server)
    assert server.requests[4:6] == [("GET", "/upload/up1001"), ("GET", "/upload/up1001")]


class Interrupted(Exception):
    """Stands for a killed process."""


def test_an_interrupted_upload_resumes_with_only_the_missing_files_and_parts(
    package, server, monkeypatch
):
    sent = []
    real_put_part = figshare.put_part

    def put_part_then_die(client, upload_url, part_no, data):
        if len(sent) == 3:  # README.txt's only part and big.bin's first two
            raise Interrupted
        sent.append(upload_url.rsplit("/", 1)[1] + f"/{part_no}")
        real_put_part(client, upload_url, part_no, data)

    monkeypatch.setattr(figshare, "put_part", put_part_then_die)
    with pytest.raises(Interrupted):
        upload(package, server)
    assert sent == ["up1001/1", "up1002/1", "up1002/2"]
    assert [(f["name"], f["status"]) for f in server.files.values()] == [
        ("README.txt", "available"),
        ("big.bin", "created"),
    ]
    state = json.loads((package / ".figshare_upload.json").read_text())
    assert (state["article_id"], state["files"]["big.bin"]["status"]) == (5001, "created")

    monkeypatch.setattr(figshare, "put_part", real_put_part)
    server.requests.clear()
    report = upload(package, server)
    assert server.requests == [
        ("GET", "/v2/account/articles/5001/files" + FILES_PAGE),
        ("GET", "/v2/account/articles/5001/files/1002"),
        ("GET", "/upload/up1002"),
        ("PUT", "/upload/up1002/3"),
        ("PUT", "/upload/up1002/4"),
        ("POST", "/v2/account/articles/5001/files/1002"),
        ("POST", "/v2/account/articles/5001/files"),
        ("GET", "/v2/account/articles/5001/files/1003"),
        ("GET", "/upload/up1003"),
        ("PUT", "/upload/up1003/1"),
        ("POST", "/v2/account/articles/5001/files/1003"),
        ("GET", "/v2/account/articles/5001/files" + FILES_PAGE),
    ]
    assert_uploaded(server)
    assert list(server.articles) == [5001]
    assert report.actions == [
        ("README.txt", "already on figshare with the same md5, skipped"),
        ("big.bin", "resumed, 2 missing parts sent"),
        ("labels.csv", "uploaded"),
    ]


def test_the_file_listing_follows_pages(package, server, monkeypatch):
    upload(package, server)
    server.requests.clear()
    monkeypatch.setattr(figshare, "PAGE_SIZE", 2)
    upload(package, server)
    assert server.requests == [
        ("GET", "/v2/account/articles/5001/files?page=1&page_size=2"),
        ("GET", "/v2/account/articles/5001/files?page=2&page_size=2"),
    ]


def test_a_different_file_of_the_same_name_on_figshare_stops_before_sending_anything(
    package, server
):
    upload(package, server)
    (package / "labels.csv").write_bytes(b"id,label\n1,real\n")
    (package / "checksums.md5").write_text(
        "6543b2e0b6c702f8c195dfca4b10c0f6  README.txt\n"
        "b5facb0580420477d4c053b5256e69d7  data/big.bin\n"
        "a6bcc6b2bc6eb14f16ffa884877e0758  labels.csv\n"
    )
    server.requests.clear()
    with pytest.raises(
        FigshareError,
        match=r"already holds different files of the same name: labels\.csv "
        r"\(figshare holds md5 02594aa36031228652455a15df72aa1b, 28 bytes; "
        r"local md5 a6bcc6b2bc6eb14f16ffa884877e0758, 16 bytes\)",
    ):
        upload(package, server)
    assert server.requests == [("GET", "/v2/account/articles/5001/files" + FILES_PAGE)]
    assert server.file_by_name(5001, "labels.csv")["content"] == TABLE


def test_a_file_that_does_not_match_the_checksum_list_is_named(
    package, server, capsys, monkeypatch
):
    (package / "data" / "big.bin").write_bytes(BIG[:-1] + b"\x00")
    monkeypatch.setenv("RADSYNTH_TEST_FIGSHARE", TOKEN)
    assert (
        cli(
            str(package),
            "--upload",
            "--token-env",
            "RADSYNTH_TEST_FIGSHARE",
            "--api-url",
            f"{server.base}/v2",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert (
        "data/big.bin: md5 " in err
        and "differs from b5facb0580420477d4c053b5256e69d7 in checksums.md5" in err
    )
    assert server.requests == []


def test_a_missing_listed_file_is_named(package, server):
    (package / "labels.csv").unlink()
    with pytest.raises(PackageError, match="labels.csv: listed in checksums.md5 but missing"):
        upload(package, server)
    assert server.requests == []


def test_an_unknown_metadata_key_is_named_with_its_file(package, server):
    (package / "figshare.json").write_text(json.dumps({**METADATA, "licence": 1}))
    with pytest.raises(
        PackageError,
        match=r"figshare\.json: unknown key 'licence'; figshare's create-article "
        r"accepts: authors, categories",
    ):
        upload(package, server)
    assert server.requests == []


def test_a_missing_token_names_the_variable(package, server, capsys, monkeypatch):
    monkeypatch.delenv("RADSYNTH_TEST_NO_TOKEN", raising=False)
    assert (
        cli(
            str(package),
            "--upload",
            "--token-env",
            "RADSYNTH_TEST_NO_TOKEN",
            "--api-url",
            f"{server.base}/v2",
        )
        == 2
    )
    assert capsys.readouterr().err == (
        "radsynth figshare-upload: error: environment variable RADSYNTH_TEST_NO_TOKEN is not set: "
        "it must hold a "
        "figshare personal token (figshare > Applications > Personal tokens)\n"
    )
    assert server.requests == []
    with pytest.raises(PackageError, match="environment variable FIGSHARE_TOKEN is not set"):
        token_from_env(environ={"FIGSHARE_TOKEN": "  \n"})


def assert_token_absent(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert "SECRET" not in text


def test_the_token_never_leaks_from_a_500_that_echoes_the_header(
    package, server, capsys, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    server.fail[("POST", "/v2/account/articles/5001/files")] = [500, 500]
    monkeypatch.setenv("RADSYNTH_TEST_FIGSHARE", TOKEN)
    assert (
        cli(
            str(package),
            "--upload",
            "--token-env",
            "RADSYNTH_TEST_FIGSHARE",
            "--api-url",
            f"{server.base}/v2",
        )
        == 2
    )
    captured = capsys.readouterr()
    assert (
        captured.err.strip()
        .splitlines()[-1]
        .startswith(
            f"radsynth figshare-upload: error: POST {server.base}/v2/account/articles/5001/files: "
            "HTTP 500 "
            "Internal Server Error: internal error; your request headers were: "
        )
    )
    assert "Authorization: token <redacted token>" in captured.err

    with pytest.raises(
        FigshareError
    ) as failure:  # the rerun resumes article 5001 and fails the same way
        upload(package, server)
    assert failure.value.status == 500
    assert_token_absent(
        str(failure.value),
        "".join(traceback.format_exception(failure.value)),
        captured.out,
        captured.err,
        caplog.text,
        (package / ".figshare_upload.json").read_text(),
    )
    assert json.loads((package / ".figshare_upload.json").read_text())["article_id"] == 5001


def test_the_token_never_leaks_from_a_401_that_echoes_it(
    package, server, capsys, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    server.token = "the-token-figshare-expects"
    monkeypatch.setenv("RADSYNTH_TEST_FIGSHARE", TOKEN)
    assert (
        cli(
            str(package),
            "--upload",
            "--token-env",
            "RADSYNTH_TEST_FIGSHARE",
            "--api-url",
            f"{server.base}/v2",
        )
        == 2
    )
    captured = capsys.readouterr()
    assert captured.err == (
        f"radsynth figshare-upload: error: POST {server.base}/v2/account/articles: HTTP 401 "
        'Unauthorized: {"message": "Invalid token: token <redacted token>", "code": "Forbidden"}\n'
    )
    assert_token_absent(captured.out, captured.err, caplog.text)
    assert not (package / ".figshare_upload.json").exists()


def test_the_token_never_leaks_from_a_requests_exception(package, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)

    def refuse(self, method, url, **kwargs):
        raise requests.ConnectionError(
            f"cannot send {method} {url} with headers "
            f"{{'Authorization': 'token {self.headers['Authorization'][6:]}'}}"
        )

    monkeypatch.setattr(requests.Session, "request", refuse)
    with pytest.raises(FigshareError) as failure:
        upload_package(package, token=TOKEN, api_url="https://figshare.invalid/v2", progress=False)
    assert str(failure.value) == (
        "POST https://figshare.invalid/v2/account/articles failed: cannot send POST "
        "https://figshare.invalid/v2/account/articles with headers "
        "{'Authorization': 'token <redacted token>'}"
    )
    assert_token_absent("".join(traceback.format_exception(failure.value)), caplog.text)


def test_a_connection_that_keeps_dropping_fails_with_a_clear_message(package, server):
    server.drop_once.update({"/upload/up1001/1"})
    with pytest.raises(
        FigshareError, match=r"PUT http://127\.0\.0\.1:\d+/upload/up1001/1 failed: .*Max retries"
    ):
        upload_package(package, token=TOKEN, api_url=f"{server.base}/v2", progress=False, retries=0)
