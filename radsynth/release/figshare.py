"""Upload a finished release package to figshare (API v2), resumably, without ever leaking the
token.

A release package is a folder holding the files to publish, their `checksums.md5` (md5sum
format, which is also what is uploaded: exactly the files it lists) and the article's metadata in
`figshare.json`. Uploading many gigabytes takes long enough to be interrupted, so the article id
is kept in a state file inside the package and a rerun continues where the last run stopped:
files figshare already holds are skipped, a half-uploaded file sends only its missing parts.

The upload protocol (https://docs.figshare.com/#upload_files): create the article, create each
file (name, md5, size), GET its upload URL for the parts figshare cut it into, PUT every part,
then complete the file. figshare computes each file's md5 itself, which is checked at the end.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from radsynth.core.atomic import read_json_object, write_json_atomic
from radsynth.core.download import file_checksum

log = logging.getLogger(__name__)

#: figshare's API root; tests point the uploader at a local fake server instead.
API_URL = "https://api.figshare.com/v2"
#: The environment variable holding the personal token (figshare > Applications > Personal tokens):
#: a token on the command line would end up in shell histories and process lists.
TOKEN_ENV = "FIGSHARE_TOKEN"
CHECKSUMS_NAME = "checksums.md5"
METADATA_NAME = "figshare.json"
STATE_NAME = ".figshare_upload.json"
STATE_FORMAT = 1
#: The body fields of "create article" (ArticleCreate in figshare's swagger.json,
#: figshare/user_documentation):
#: a typo in figshare.json must fail here, not become metadata figshare silently ignores.
ARTICLE_CREATE_KEYS = frozenset(
    {
        "authors",
        "categories",
        "categories_by_source_id",
        "custom_fields",
        "custom_fields_list",
        "defined_type",
        "description",
        "doi",
        "funding",
        "funding_list",
        "group_id",
        "handle",
        "is_metadata_record",
        "keywords",
        "license",
        "metadata_reason",
        "references",
        "related_materials",
        "resource_doi",
        "resource_title",
        "tags",
        "timeline",
        "title",
    }
)
#: Retries of an idempotent request (GET, PUT of a part) after a dropped connection, a timeout or a
#: 429/5xx answer. POSTs (create, complete, publish) are sent once: repeating one could create a
#: second article or file, and a rerun resumes safely instead.
RETRIES = 5
#: urllib3's exponential backoff factor: waits of 0, 2, 4, 8 ... s between retries.
BACKOFF_S = 1.0
STATUS_RETRIED = (429, 500, 502, 503, 504)
#: (connect, read) seconds: a part is at most tens of megabytes, so two minutes of silence is a
#: failure.
TIMEOUT_S = (15.0, 120.0)
#: figshare's largest page; the listing stops at a short page.
PAGE_SIZE = 1000
HASH_CHUNK_BYTES = 1 << 20
#: Characters of an error response's body quoted in the error message (figshare's JSON `message`).
BODY_QUOTED_CHARS = 300
REDACTED = "<redacted token>"
#: `<md5>  <path>` (text mode) or `<md5> *<path>` (binary mode), as md5sum writes them.
CHECKSUM_LINE = re.compile(r"(?P<md5>[0-9a-fA-F]{32}) [ *](?P<path>.+)")


class PackageError(ValueError):
    """The package folder, its checksum list, its metadata or the token variable is not usable."""


class FigshareError(RuntimeError):
    """figshare answered with an error or could not be reached; the message never holds the
    token."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PackageFile:
    """One file to upload: where it is, its name on figshare, and the size and md5 it has."""

    path: Path
    name: str
    size: int
    md5: str


@dataclass
class UploadReport:
    """What an upload did, for the command's summary."""

    article_id: int
    actions: list[tuple[str, str]] = field(default_factory=list)  # (file name, what was done)
    processing: list[str] = field(default_factory=list)  # files figshare has not made available yet
    published: bool = False

    def summary(self) -> str:
        lines = [f"figshare article {self.article_id}:"]
        lines += [f"  {name}: {action}" for name, action in self.actions]
        if self.processing:
            lines.append(
                f"still processing on figshare (rerun later to check): {', '.join(self.processing)}"
            )
        lines.append(
            "published" if self.published else "not published (rerun with --publish to publish)"
        )
        return "\n".join(lines)


# --- the package ----------------------------------------------------------------------------------


def read_checksums(package_dir: Path) -> list[tuple[str, str]]:
    """(md5, relative path) of every line of checksums.md5: the package's own list of what it
    holds."""
    path = Path(package_dir) / CHECKSUMS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: cannot read the package's checksum list ({exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = CHECKSUM_LINE.fullmatch(line)
        if match is None:
            raise PackageError(
                f"{path}:{number}: not an md5sum line '<md5>  <path>': {line[:80]!r}"
            )
        entries.append((match["md5"].lower(), match["path"]))
    if not entries:
        raise PackageError(f"{path}: lists no files")
    return entries


def package_relative(package_dir: Path, relative: str) -> Path:
    """The file a checksum line names, refused if it would lie outside the package."""
    posix = PurePosixPath(relative)
    if posix.is_absolute() or ".." in posix.parts or relative == STATE_NAME:
        raise PackageError(
            f"{Path(package_dir) / CHECKSUMS_NAME}: {relative!r} is not a file inside the package"
        )
    return Path(package_dir).joinpath(*posix.parts)


def package_files(package_dir: Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> list[PackageFile]:
    """Every file checksums.md5 lists, verified against it: a corrupted package must not be
    published.

    figshare articles have no folders, so a file is named by its base name; two listed files with
    the same base name are an error rather than one silently replacing the other.
    """
    files, problems, names = [], [], {}
    for md5, relative in read_checksums(package_dir):
        path = package_relative(package_dir, relative)
        if not path.is_file():
            problems.append(f"{relative}: listed in {CHECKSUMS_NAME} but missing")
            continue
        actual = file_checksum(path, "md5", chunk_bytes).hexdigest
        if actual != md5:
            problems.append(f"{relative}: md5 {actual} differs from {md5} in {CHECKSUMS_NAME}")
            continue
        name = path.name
        if name in names:
            problems.append(
                f"{relative} and {names[name]} would both be named {name!r} on figshare (no "
                "folders)"
            )
            continue
        names[name] = relative
        files.append(PackageFile(path, name, path.stat().st_size, md5))
    if problems:
        raise PackageError(f"{Path(package_dir)}: " + "; ".join(problems))
    return files


def read_metadata(package_dir: Path) -> dict[str, Any]:
    """The body of "create article" from figshare.json, refused if it holds a key figshare does not
    accept."""
    path = Path(package_dir) / METADATA_NAME
    try:
        metadata = read_json_object(path, "figshare article metadata")
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    unknown = sorted(set(metadata) - ARTICLE_CREATE_KEYS)
    if unknown:
        raise PackageError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; "
            f"figshare's create-article accepts: {', '.join(sorted(ARTICLE_CREATE_KEYS))}"
        )
    if not isinstance(metadata.get("title"), str) or not metadata["title"].strip():
        raise PackageError(f"{path}: 'title' must be a non-empty string (figshare requires it)")
    return metadata


def token_from_env(name: str = TOKEN_ENV, environ: Mapping[str, str] = os.environ) -> str:
    """The personal token from the environment variable `name`; its absence is named, its value
    never."""
    token = environ.get(name, "").strip()
    if not token:
        raise PackageError(
            f"environment variable {name} is not set: it must hold a figshare personal token "
            "(figshare > Applications > Personal tokens)"
        )
    return token


# --- the state file -------------------------------------------------------------------------------


def read_state(package_dir: Path, api_url: str) -> dict[str, Any] | None:
    """The state of an earlier upload of this package, or None; one made against another API is
    refused."""
    path = Path(package_dir) / STATE_NAME
    if not path.exists():
        return None
    state = read_json_object(path, "figshare upload state")
    if state.get("format") != STATE_FORMAT or not isinstance(state.get("article_id"), int):
        raise PackageError(f"{path}: not a figshare upload state of format {STATE_FORMAT}")
    if state.get("api_url") != api_url.rstrip("/"):
        raise PackageError(
            f"{path}: records article {state['article_id']} at {state.get('api_url')}, not "
            f"{api_url.rstrip('/')}; delete it to start a new article there"
        )
    return state


def new_state(api_url: str, article_id: int, title: str) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "api_url": api_url.rstrip("/"),
        "article_id": article_id,
        "title": title,
        "files": {},
        "published": False,
    }


def write_state(package_dir: Path, state: Mapping[str, Any]) -> None:
    """Atomically: a run killed while writing leaves the previous state, never half of one."""
    write_json_atomic(Path(package_dir) / STATE_NAME, state)


# --- HTTP -----------------------------------------------------------------------------------------


def redact(text: str, token: str) -> str:
    """`text` without the token: servers echo headers in error bodies, libraries quote requests."""
    return text.replace(token, REDACTED) if token else text


def one_line(text: str) -> str:
    return " ".join(text.split())


def retrying_session(retries: int, backoff_s: float) -> requests.Session:
    """A session that retries idempotent requests through urllib3's Retry (POSTs are never
    retried)."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff_s,
        status_forcelist=STATUS_RETRIED,
        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class FigshareClient:
    """figshare API calls over one session: the token in one header, retries on idempotent requests,
    and every error message with the token removed."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
        timeout_s: float | tuple[float, float] = TIMEOUT_S,
    ):
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self._session = retrying_session(retries, backoff_s)
        self._session.headers["Authorization"] = f"token {token}"

    def __enter__(self) -> FigshareClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"FigshareClient({self.api_url!r})"

    def url(self, path_or_url: str) -> str:
        """figshare answers with absolute locations; paths are relative to the API root."""
        return (
            path_or_url
            if path_or_url.startswith(("http://", "https://"))
            else self.api_url + path_or_url
        )

    def send(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """One request (retried by the session where safe); an error answer or failure is a
        FigshareError."""
        url = self.url(path_or_url)
        try:
            response = self._session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise FigshareError(
                redact(f"{method} {url} failed: {one_line(str(exc))}", self._token)
            ) from None
        if response.status_code >= 400:
            body = one_line(redact(response.text, self._token))[:BODY_QUOTED_CHARS]
            message = f"{method} {url}: HTTP {response.status_code} {response.reason}" + (
                f": {body}" if body else ""
            )
            raise FigshareError(redact(message, self._token), status=response.status_code)
        return response

    def json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """The JSON answer of a request (None for an empty body)."""
        response = self.send(method, path_or_url, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise FigshareError(
                f"{method} {self.url(path_or_url)}: HTTP {response.status_code} "
                "but the answer is not JSON"
            ) from None


def location(answer: Any, what: str) -> str:
    """The `location` figshare answers a create with."""
    if not isinstance(answer, dict) or not isinstance(answer.get("location"), str):
        raise FigshareError(f"{what}: figshare's answer has no location")
    return answer["location"]


# --- the article ----------------------------------------------------------------------------------


def create_article(client: FigshareClient, metadata: Mapping[str, Any]) -> int:
    """POST the metadata, then read the new (private, draft) article's id from its location."""
    created = client.json("POST", "/account/articles", json=dict(metadata))
    article = client.json("GET", location(created, "create article"))
    return int(article["id"])


def article_files(client: FigshareClient, article_id: int) -> dict[str, dict[str, Any]]:
    """The article's files on figshare by name; a state file naming a deleted article fails
    clearly."""
    files: dict[str, dict[str, Any]] = {}
    seen: set[Any] = set()
    page = 1
    while True:
        try:
            listed = (
                client.json(
                    "GET",
                    f"/account/articles/{article_id}/files",
                    params={"page": page, "page_size": PAGE_SIZE},
                )
                or []
            )
        except FigshareError as exc:
            if exc.status == 404:
                raise FigshareError(
                    f"article {article_id} recorded in {STATE_NAME} is not on figshare (deleted?); "
                    f"delete {STATE_NAME} to upload into a new article",
                    status=404,
                ) from None
            raise
        new = [item for item in listed if item.get("id") not in seen]
        for item in new:
            seen.add(item.get("id"))
            if item.get("name") in files:
                raise FigshareError(
                    f"article {article_id} holds two files named {item['name']!r}; "
                    "delete one on figshare and rerun"
                )
            files[item.get("name")] = item
        if len(listed) < PAGE_SIZE or not new:  # a server ignoring `page` repeats its first page
            return files
        page += 1


def remote_conflict(item: PackageFile, remote: Mapping[str, Any]) -> str | None:
    """Why a file already on figshare under the same name is not this one, or None if it is."""
    computed, supplied = remote.get("computed_md5") or "", remote.get("supplied_md5") or ""
    remote_md5 = computed or supplied
    if remote_md5 != item.md5 or remote.get("size", item.size) != item.size:
        return (
            f"{item.name} (figshare holds md5 {remote_md5 or 'unknown'}, {remote.get('size')} "
            "bytes; "
            f"local md5 {item.md5}, {item.size} bytes)"
        )
    return None


def check_conflicts(
    files: list[PackageFile], remote: Mapping[str, Mapping[str, Any]], article_id: int
) -> None:
    """Refuse before uploading anything if figshare holds another file under a package file's name:
    deleting it is the user's decision, not the uploader's."""
    conflicts = [
        message
        for item in files
        if item.name in remote and (message := remote_conflict(item, remote[item.name])) is not None
    ]
    if conflicts:
        raise FigshareError(
            f"article {article_id} already holds different files of the same name: "
            + "; ".join(conflicts)
            + ". Delete them on figshare (or rename the local files) and rerun"
        )


def is_incomplete(remote: Mapping[str, Any] | None) -> bool:
    """A file created on figshare whose upload was never completed."""
    return remote is not None and remote.get("status") == "created"


# --- one file -------------------------------------------------------------------------------------


def create_file(client: FigshareClient, article_id: int, item: PackageFile) -> dict[str, Any]:
    """Announce a file (name, md5, size); figshare answers where to upload its parts."""
    created = client.json(
        "POST",
        f"/account/articles/{article_id}/files",
        json={"name": item.name, "md5": item.md5, "size": item.size},
    )
    return client.json("GET", location(created, f"create file {item.name}"))


def file_info(client: FigshareClient, article_id: int, file_id: int) -> dict[str, Any]:
    return client.json("GET", f"/account/articles/{article_id}/files/{file_id}")


def upload_parts(client: FigshareClient, upload_url: str) -> list[dict[str, Any]]:
    """The parts figshare cut the file into, each with its byte range and status."""
    return client.json("GET", upload_url)["parts"]


def part_size(part: Mapping[str, Any]) -> int:
    return int(part["endOffset"]) - int(part["startOffset"]) + 1  # both offsets inclusive


def read_part(handle: BinaryIO, part: Mapping[str, Any]) -> bytes:
    handle.seek(int(part["startOffset"]))
    return handle.read(part_size(part))


def put_part(client: FigshareClient, upload_url: str, part_no: int, data: bytes) -> None:
    """PUT one part's bytes; a part is idempotent, so the session retries it after a dropped
    connection."""
    client.send("PUT", f"{upload_url}/{part_no}", data=data)


def complete_file(client: FigshareClient, article_id: int, file_id: int) -> None:
    """Tell figshare every part is there: it assembles the file and computes its md5."""
    client.send("POST", f"/account/articles/{article_id}/files/{file_id}")


def send_file(client: FigshareClient, info: Mapping[str, Any], item: PackageFile, bar: tqdm) -> int:
    """PUT the parts not yet COMPLETE; returns how many were sent."""
    parts = upload_parts(client, info["upload_url"])
    pending = [part for part in parts if part.get("status") != "COMPLETE"]
    bar.update(sum(part_size(part) for part in parts if part.get("status") == "COMPLETE"))
    with item.path.open("rb") as handle:
        for part in pending:
            data = read_part(handle, part)
            put_part(client, info["upload_url"], int(part["partNo"]), data)
            bar.update(len(data))
    return len(pending)


def upload_file(
    client: FigshareClient,
    package_dir: Path,
    state: dict[str, Any],
    item: PackageFile,
    remote: Mapping[str, Any] | None,
    bar: tqdm,
) -> str:
    """Create (or resume) one file on figshare, send its missing parts and complete it."""
    article_id = state["article_id"]
    info = (
        file_info(client, article_id, remote["id"])
        if remote
        else create_file(client, article_id, item)
    )
    state["files"][item.name] = {
        "file_id": info["id"],
        "md5": item.md5,
        "size": item.size,
        "status": "created",
    }
    write_state(package_dir, state)
    sent = send_file(client, info, item, bar)
    complete_file(client, article_id, info["id"])
    state["files"][item.name]["status"] = "completed"
    write_state(package_dir, state)
    action = (
        f"resumed, {sent} missing part{'s' if sent != 1 else ''} sent" if remote else "uploaded"
    )
    log.info("%s: %s (figshare file %s)", item.name, action, info["id"])
    return action


def verify_uploaded(
    files: list[PackageFile], remote: Mapping[str, Mapping[str, Any]], article_id: int
) -> list[str]:
    """Check figshare's own md5 of every file; returns the files it is still processing."""
    missing = [item.name for item in files if item.name not in remote]
    if missing:
        raise FigshareError(
            f"article {article_id} lacks {', '.join(missing)} after the upload; rerun to retry"
        )
    wrong = [
        message
        for item in files
        if (message := remote_conflict(item, remote[item.name])) is not None
    ]
    if wrong:
        raise FigshareError(
            f"figshare's checksums of article {article_id} differ: " + "; ".join(wrong)
        )
    return [item.name for item in files if remote[item.name].get("status") != "available"]


# --- the whole package ----------------------------------------------------------------------------


def start_article(
    client: FigshareClient, package_dir: Path, metadata: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The state and the files on figshare: the recorded article's, or a new (empty) article's."""
    state = read_state(package_dir, client.api_url)
    if state is not None:
        log.info("resuming figshare article %s recorded in %s", state["article_id"], STATE_NAME)
        return state, article_files(client, state["article_id"])
    article_id = create_article(client, metadata)
    state = new_state(client.api_url, article_id, metadata["title"])
    write_state(package_dir, state)  # at once: a rerun must never create a second article
    log.info("created figshare article %s", article_id)
    return state, {}


def upload_package(
    package_dir: Path,
    *,
    token: str,
    api_url: str = API_URL,
    publish: bool = False,
    progress: bool = True,
    retries: int = RETRIES,
    backoff_s: float = BACKOFF_S,
    timeout_s: float | tuple[float, float] = TIMEOUT_S,
) -> UploadReport:
    """Upload every file of checksums.md5 into one figshare article, resuming an earlier run, and
    publish it only when `publish` is set.

    Everything local is checked (metadata, checksums) before the first request. A file already on
    figshare with the same md5 is skipped, one half uploaded sends only its missing parts, one of
    the same name but other content stops the upload before anything is sent.
    """
    package_dir = Path(package_dir)
    metadata = read_metadata(package_dir)
    files = package_files(package_dir)
    with FigshareClient(
        api_url, token, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s
    ) as client:
        state, remote = start_article(client, package_dir, metadata)
        article_id = state["article_id"]
        check_conflicts(files, remote, article_id)
        report = UploadReport(article_id)
        todo = {
            item.name
            for item in files
            if item.name not in remote or is_incomplete(remote[item.name])
        }
        with tqdm(
            total=sum(item.size for item in files if item.name in todo),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"figshare article {article_id}",
            disable=not progress,
            file=sys.stderr,
        ) as bar:
            for item in files:
                action = (
                    upload_file(client, package_dir, state, item, remote.get(item.name), bar)
                    if item.name in todo
                    else "already on figshare with the same md5, skipped"
                )
                report.actions.append((item.name, action))
        if todo:
            remote = article_files(client, article_id)
        report.processing = verify_uploaded(files, remote, article_id)
        if publish:
            report.published = publish_article(client, package_dir, state, changed=bool(todo))
    return report


def publish_article(
    client: FigshareClient, package_dir: Path, state: dict[str, Any], *, changed: bool
) -> bool:
    """Publish (a public, citable version: figshare cannot unpublish it), unless this very content
    was published already."""
    if state.get("published") and not changed:
        log.info("article %s was published already with these files", state["article_id"])
        return True
    client.send("POST", f"/account/articles/{state['article_id']}/publish")
    state["published"] = True
    write_state(package_dir, state)
    log.info("published figshare article %s", state["article_id"])
    return True


def describe_upload(
    package_dir: Path,
    *,
    api_url: str = API_URL,
    token_env: str = TOKEN_ENV,
    publish: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """What `upload_package` would do, from local files alone (no network): the dry run."""
    package_dir = Path(package_dir)
    metadata = read_metadata(package_dir)
    files = package_files(package_dir)
    state = read_state(package_dir, api_url)
    target = (
        f"resume article {state['article_id']} recorded in {package_dir / STATE_NAME}"
        if state
        else "create a new private article"
    )
    lines = [
        f"dry run: nothing is sent to {api_url.rstrip('/')} (add --upload to upload)",
        f"would {target}: {metadata['title']!r}",
        f"{len(files)} files, {sum(item.size for item in files):,} bytes, every md5 matches "
        f"{CHECKSUMS_NAME}:",
    ]
    lines += [
        f"  {item.name}  {item.size:,} bytes  md5 {item.md5}  parts: set by figshare at upload"
        for item in files
    ]
    token_set = bool(environ.get(token_env, "").strip())
    lines.append(f"token: {token_env} is {'set' if token_set else 'NOT set (--upload needs it)'}")
    lines.append(
        "would publish the article after the upload"
        if publish
        else "would not publish (add --publish to publish after the upload)"
    )
    return "\n".join(lines)
