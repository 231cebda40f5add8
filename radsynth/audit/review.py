"""Offline review pages for the audit's two human steps, at the paper's scale, and the merge of
the memorization reviewers' verdicts.

Both pages are one static HTML file each, like the Turing test's rating form: everything is
embedded, the Content-Security-Policy forbids any network request, it works from file://, the
reviewer's id and decisions stay in the browser's localStorage (keyed by the page's content id
and the reviewer id, so a reviewer can stop, reload and resume) until the reviewer exports a CSV.

Screening review (`write_screening_review`): a sampled set's left-facing images as a grid, a page
at a time, least plausible first. 9,000 images per checkpoint must stay fast, so each page's
images travel as one grayscale PNG sprite sheet (tiles in reading order, `sheet_columns` per row),
base64 in an inert <script type="application/octet-stream" id="sheet-N"> block that the page
decodes only when it shows that page, then copies tile by tile onto canvases. Decisions:
  - exclude: the reviewer excluded the image (with one of the configured reasons, or none);
  - include: the reviewer marked the image's page reviewed and did not exclude the image;
  - blank: anything else, also an image on a page the reviewer only looked at; the merge then
    keeps the automated screen's proposal for it.
The export is the reviewed manifest `radsynth.audit.screening.merge_reviews` reads: the manifest's
provenance lines, then every manifest column in order with each field's text as written, and
decision, reason and reviewer filled for the decided rows.

Memorization review (`write_pairs_review`): each pair of `pairs.csv`, real | synthetic at full
resolution (small images scaled up by a whole factor, pixels kept sharp), with its similarity and
patch distance, and a verdict per pair (VERDICTS, keys 1-3) and an optional note.
`merge_pair_verdicts` merges the verdict files of the reviewers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.audit.screening import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    left_facing_atlas,
    left_facing_sample_set,
    numbered_records,
)
from radsynth.core.atomic import atomic_output
from radsynth.core.html import PLACEHOLDER, provenance_meta, script_json
from radsynth.core.images import png_bytes
from radsynth.core.tables import read_table, read_table_provenance

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Where the screening page's sprite sheets are streamed into its template.
SHEETS_PLACEHOLDER = "{{SHEETS}}"
CONTENT_ID_HEX_DIGITS = 16
#: Screening page orders: least plausible first (where implausible images gather), or manifest rows.
SORTS = ("plausibility", "row")
#: Reasons are picked with the number keys 1..9.
MAX_REASONS = 9
#: CSS px of a screening tile: the contact sheets' tile (1.9 in at 100 dpi); smaller images are
#: scaled up with sharp pixels, larger ones are enlarged one at a time with the z key.
TILE_PX = 192
#: A pair's verdict, keys 1, 2 and 3 on the page.
VERDICTS = ("memorized", "similar but distinct", "unrelated")
MEMORIZED = VERDICTS[0]
#: `consensus` of a pair whose reviewers gave different verdicts, and of one nobody judged.
DISAGREEMENT = "disagreement"
UNREVIEWED = "unreviewed"
#: The pairs page's export, one row per pair in rank order.
VERDICT_COLUMNS = ("rank", "real_id", "synthetic_id", "verdict", "reviewer", "note")
#: One reviewer's verdict on one pair, as the merge reads it (rank from pairs.csv).
VERDICT_RECORD_COLUMNS = (
    "rank",
    "real_id",
    "synthetic_id",
    "reviewer",
    "verdict",
    "note",
    "file",
    "line",
)
PAIRS_COLUMNS = ("rank", "real_id", "synthetic_id", "similarity", "patch_distance")


# ----------------------------------------------------------------------------- page building


def render_page(name: str, fields: Mapping[str, str]) -> list[str]:
    """Template `name` filled in one pass (inserted text is never re-substituted), cut where
    SHEETS_PLACEHOLDER stands so large parts can be streamed in between."""
    template = (TEMPLATES / name).read_text(encoding="utf-8")
    found = set(PLACEHOLDER.findall(template)) - {SHEETS_PLACEHOLDER.strip("{}")}
    if found != set(fields):
        raise ValueError(
            f"{TEMPLATES / name}: placeholders {sorted(found)} do not match fields {sorted(fields)}"
        )
    return [
        PLACEHOLDER.sub(lambda match: fields[match.group(1)], part)
        for part in template.split(SHEETS_PLACEHOLDER)
    ]


def page_fields(
    title: str, provenance: Mapping[str, str], data: dict, *, what: str
) -> dict[str, str]:
    """The fields both review templates share; `what` the reviewer records (decisions, verdicts)."""
    return {
        "TITLE": html.escape(title),
        "START_FORM": (TEMPLATES / "start_form.html")
        .read_text(encoding="utf-8")
        .replace("{{WHAT}}", what),
        "PROVENANCE_META": provenance_meta(provenance),
        "STYLE": (TEMPLATES / "review.css").read_text(encoding="utf-8"),
        "COMMON_SCRIPT": (TEMPLATES / "review_common.js").read_text(encoding="utf-8"),
        "REVIEW_DATA": script_json(data),
    }


def content_id(table: pd.DataFrame, images: Sequence[np.ndarray]) -> str:
    """Hash of a table's text and its images: two reviews never share saved progress in a browser."""
    digest = hashlib.sha256(table.to_csv(index=False).encode("utf-8"))
    for image in images:
        digest.update(str(image.shape).encode("ascii"))
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:CONTENT_ID_HEX_DIGITS]


def export_comments(source: Path, page_id: str) -> list[str]:
    """The '#' lines an exported CSV starts with: the source table's provenance and this page."""
    provenance = {
        **read_table_provenance(source),
        "review_page": f"{page_id} (radsynth.audit.review)",
    }
    return [f"# {key}: {value}" for key, value in provenance.items()]


def file_label(text: str) -> str:
    """`text` made safe as part of a file name ("initial/ckpt004" -> "initial-ckpt004")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "set"


def write_page(out_html: Path, parts: Sequence[str], streamed: Iterable[str] = ()) -> int:
    """parts[0], the streamed chunks, then parts[1:], written atomically; returns the streamed characters."""
    written = 0
    with (
        atomic_output(Path(out_html)) as temporary,
        temporary.open("w", encoding="utf-8") as handle,
    ):
        handle.write(parts[0])
        for chunk in streamed:
            handle.write(chunk)
            written += len(chunk)
        for part in parts[1:]:
            handle.write(part)
    return written


def check_gray(image: np.ndarray, what: str) -> np.ndarray:
    """A uint8 gray image (H, W), or an error naming `what`."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(
            f"{what} must be a uint8 gray image (H, W), got {image.dtype} {image.shape}"
        )
    return image


# ----------------------------------------------------------------------------- screening review


def manifest_text(manifest_csv: Path) -> pd.DataFrame:
    """A screening manifest with every field as the text written, so the export repeats it exactly;
    refused where a decision is filled in (the review starts from the screen's blank manifest)."""
    frame = read_table(Path(manifest_csv), dtype=str, keep_default_na=False)
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{manifest_csv}: not a screening manifest ({MANIFEST_NAME}), "
            f"missing column(s) {', '.join(missing)}"
        )
    filled = frame["decision"].str.strip() != ""
    if filled.any():
        raise ValueError(
            f"{manifest_csv}: row {frame.loc[filled, 'row'].iloc[0]}: a decision is filled in; "
            f"review pages are built from the manifest the screen wrote"
        )
    return frame


def display_order(manifest: pd.DataFrame, sort: str) -> np.ndarray:
    """Manifest positions in the order shown: least plausible first (ties by row, blank last), or by row."""
    if sort not in SORTS:
        raise ValueError(f"sort {sort!r} is not one of {', '.join(SORTS)}")
    rows = pd.to_numeric(manifest["row"]).to_numpy()
    if sort == "row":
        return np.argsort(rows, kind="stable")
    plausibility = pd.to_numeric(manifest["plausibility"], errors="coerce").to_numpy(dtype=float)
    return np.lexsort((rows, np.nan_to_num(plausibility, nan=np.inf)))


def check_reasons(reasons: Sequence[str]) -> list[str]:
    """1..MAX_REASONS distinct one-line reasons (keys 1..9 pick them)."""
    reasons = [str(reason).strip() for reason in reasons]
    if not 1 <= len(reasons) <= MAX_REASONS:
        raise ValueError(f"give 1 to {MAX_REASONS} exclusion reasons, got {len(reasons)}")
    if any(not reason or "\n" in reason for reason in reasons) or len(set(reasons)) < len(reasons):
        raise ValueError(
            f"exclusion reasons must be distinct, non-blank and one line each: {reasons}"
        )
    return reasons


def sheet_columns(page_size: int) -> int:
    """Tiles per sprite-sheet row: square sheets stay within every browser's image size limits."""
    return math.ceil(math.sqrt(page_size))


def sprite_sheet(images: np.ndarray, columns: int) -> np.ndarray:
    """`images` tiled in reading order, `columns` to a row; black past the last image."""
    n, height, width = images.shape
    rows = math.ceil(n / columns)
    padded = np.zeros((rows * columns, height, width), dtype=np.uint8)
    padded[:n] = images
    return (
        padded.reshape(rows, columns, height, width)
        .transpose(0, 2, 1, 3)
        .reshape(rows * height, columns * width)
    )


def sheet_scripts(
    images: np.ndarray, order: np.ndarray, page_size: int, columns: int
) -> Iterator[str]:
    """One inert base64 block per page, encoded one page at a time (a 9,000-image set never sits in
    memory twice)."""
    for page, first in enumerate(range(0, len(order), page_size)):
        sheet = png_bytes(sprite_sheet(images[order[first : first + page_size]], columns))
        encoded = base64.b64encode(sheet).decode("ascii")
        yield f'<script type="application/octet-stream" id="sheet-{page}">{encoded}</script>\n'


def write_screening_review(
    manifest_csv: Path,
    images: np.ndarray,
    out_html: Path,
    *,
    sort: str = "plausibility",
    reasons: Sequence[str],
    page_size: int,
    title: str,
    provenance: Mapping[str, str],
) -> dict:
    """The screening review page of one sampled set: `images` are the set's left-facing uint8 gray
    images (N, H, W) in manifest row order (as `left_facing_sample_set` returns them). Returns
    content_id, n_images, n_pages, page_size, sheet_bytes (base64 of the sprite sheets) and html_bytes."""
    manifest = manifest_text(Path(manifest_csv))
    images = np.asarray(images)
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or len(images) != len(manifest)
        or not len(images)
    ):
        raise ValueError(
            f"{manifest_csv}: {len(manifest)} rows need as many uint8 gray images (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    reasons = check_reasons(reasons)
    order = display_order(manifest, sort)
    page_id = content_id(manifest, images)
    height, width = images.shape[1:]
    columns = sheet_columns(page_size)
    label = file_label("-".join(dict.fromkeys(manifest["checkpoint"])))
    data = {
        "content_id": page_id,
        "sort": sort,
        "columns": list(manifest.columns),
        "rows": manifest.to_numpy().tolist(),
        "order": order.tolist(),
        "page_size": page_size,
        "sheet_columns": columns,
        "width": width,
        "height": height,
        "tile_px": TILE_PX,
        "pixelated": max(width, height) < TILE_PX,
        "reasons": reasons,
        "comments": export_comments(Path(manifest_csv), page_id),
        "export_name": f"screening_review_{label}_{{reviewer}}.csv",
    }
    parts = render_page(
        "screening_review.html", page_fields(title, provenance, data, what="decisions")
    )
    sheet_bytes = write_page(
        Path(out_html), parts, sheet_scripts(images, order, page_size, columns)
    )
    return {
        "content_id": page_id,
        "n_images": len(images),
        "n_pages": math.ceil(len(images) / page_size),
        "page_size": page_size,
        "sheet_bytes": sheet_bytes,
        "html_bytes": Path(out_html).stat().st_size,
    }


# ----------------------------------------------------------------------------- memorization pairs


def read_pairs(pairs_csv: Path) -> pd.DataFrame:
    """The memorization audit's pairs.csv, ids as text; each real x synthetic pair once."""
    pairs = read_table(Path(pairs_csv), dtype={"real_id": str, "synthetic_id": str})
    missing = [column for column in PAIRS_COLUMNS if column not in pairs.columns]
    if missing:
        raise ValueError(
            f"{pairs_csv}: not the memorization audit's pairs table, missing column(s) "
            f"{', '.join(missing)}"
        )
    repeated = pairs.duplicated(["real_id", "synthetic_id"])
    if repeated.any():
        first = pairs[repeated].iloc[0]
        raise ValueError(
            f"{pairs_csv}: pair {first['real_id']!r} x {first['synthetic_id']!r} is listed twice"
        )
    return pairs


def pair_images(
    pairs: pd.DataFrame,
    real_images_by_id: Mapping[str, np.ndarray],
    synthetic_images_by_id: Mapping[str, np.ndarray],
    pairs_csv: Path,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real, synthetic) image of each pair, in table order; a missing id fails naming the pair's rank."""
    found = []
    for rank, real_id, synthetic_id in zip(pairs["rank"], pairs["real_id"], pairs["synthetic_id"]):
        images = []
        for what, image_id, by_id in (
            ("real", real_id, real_images_by_id),
            ("synthetic", synthetic_id, synthetic_images_by_id),
        ):
            if image_id not in by_id:
                raise ValueError(
                    f"{pairs_csv}: pair rank {rank}: no {what} image {image_id!r} given"
                )
            images.append(check_gray(by_id[image_id], f"{what} image {image_id!r}"))
        found.append((images[0], images[1]))
    return found


def data_uri(image: np.ndarray) -> str:
    return f"data:image/png;base64,{base64.b64encode(png_bytes(image)).decode('ascii')}"


def write_pairs_review(
    pairs_csv: Path,
    real_images_by_id: Mapping[str, np.ndarray],
    synthetic_images_by_id: Mapping[str, np.ndarray],
    out_html: Path,
    *,
    title: str,
    provenance: Mapping[str, str],
) -> dict:
    """The memorization review page of the audit's pairs.csv; images by id are uint8 gray (H, W),
    left-facing as the audit compared them. Returns content_id, n_pairs and html_bytes."""
    pairs = read_pairs(Path(pairs_csv))
    images = pair_images(pairs, real_images_by_id, synthetic_images_by_id, Path(pairs_csv))
    page_id = content_id(
        pairs.loc[:, list(PAIRS_COLUMNS)], [image for pair in images for image in pair]
    )
    entries = [
        {
            "rank": int(row["rank"]),
            "real_id": row["real_id"],
            "synthetic_id": row["synthetic_id"],
            "similarity": float(row["similarity"]),
            "patch_distance": float(row["patch_distance"]),
            "width": max(real.shape[1], synthetic.shape[1]),
            "height": max(real.shape[0], synthetic.shape[0]),
            "real": data_uri(real),
            "synthetic": data_uri(synthetic),
        }
        for (_, row), (real, synthetic) in zip(pairs.iterrows(), images)
    ]
    encoder = (
        str(pairs["encoder"].iloc[0])
        if "encoder" in pairs.columns and len(pairs)
        else "not recorded"
    )
    data = {
        "content_id": page_id,
        "pairs": entries,
        "verdicts": list(VERDICTS),
        "columns": list(VERDICT_COLUMNS),
        "encoder": encoder,
        "comments": export_comments(Path(pairs_csv), page_id),
        "export_name": "pair_verdicts_{reviewer}.csv",
    }
    write_page(
        Path(out_html),
        render_page("pairs_review.html", page_fields(title, provenance, data, what="verdicts")),
    )
    return {
        "content_id": page_id,
        "n_pairs": len(entries),
        "html_bytes": Path(out_html).stat().st_size,
    }


def read_verdicts(
    path: Path, ranks: Mapping[tuple[str, str], int], pairs_csv: Path
) -> pd.DataFrame:
    """The verdicts of one exported file (VERDICT_RECORD_COLUMNS), blank verdicts skipped. A missing
    column, a pair not in pairs.csv, a verdict not in VERDICTS or a verdict without reviewer fails
    naming the file, line and column."""
    records = numbered_records(path)
    header_line, header = next(records, (0, []))
    missing = [
        column
        for column in ("real_id", "synthetic_id", "verdict", "reviewer")
        if column not in header
    ]
    if missing:
        raise ValueError(
            f"{path}: line {header_line}: missing column(s) {', '.join(missing)}; a verdict file is "
            f"the CSV the memorization review page exports"
        )
    real_ids = {real for real, _ in ranks}
    given = []
    for line, record in records:
        row = dict(zip(header, (field.strip() for field in record)))
        where = f"{path}: line {line}: column"
        pair = (row.get("real_id", ""), row.get("synthetic_id", ""))
        if pair not in ranks:
            column = "synthetic_id" if pair[0] in real_ids else "real_id"
            raise ValueError(
                f"{where} {column}: pair {pair[0]!r} x {pair[1]!r} is not in {pairs_csv}"
            )
        verdict = " ".join(row.get("verdict", "").lower().split())
        if verdict and verdict not in VERDICTS:
            raise ValueError(
                f"{where} verdict: {row['verdict']!r} is not one of {', '.join(VERDICTS)} or blank"
            )
        if not verdict:
            continue
        if not row.get("reviewer", ""):
            raise ValueError(
                f"{where} reviewer: blank, but the row has verdict {verdict!r}; "
                f"every verdict needs its reviewer's id"
            )
        given.append(
            {
                "rank": ranks[pair],
                "real_id": pair[0],
                "synthetic_id": pair[1],
                "reviewer": row["reviewer"],
                "verdict": verdict,
                "note": row.get("note", ""),
                "file": str(path),
                "line": line,
            }
        )
    return pd.DataFrame(given, columns=list(VERDICT_RECORD_COLUMNS))


def check_single_verdicts(verdicts: pd.DataFrame) -> None:
    """One verdict per reviewer and pair, over all files: a second one fails naming both places."""
    repeated = verdicts.duplicated(["reviewer", "real_id", "synthetic_id"])
    if repeated.any():
        again = verdicts[repeated].iloc[0]
        first = verdicts[
            (verdicts["reviewer"] == again["reviewer"])
            & (verdicts["real_id"] == again["real_id"])
            & (verdicts["synthetic_id"] == again["synthetic_id"])
        ].iloc[0]
        raise ValueError(
            f"{again['file']}: line {again['line']}: column reviewer: {again['reviewer']!r} judges pair "
            f"rank {again['rank']} again (first in {first['file']}: line {first['line']})"
        )


def consensus_of(verdicts: set[str]) -> str:
    """The pair's verdict when every reviewer who judged it agrees."""
    if not verdicts:
        return UNREVIEWED
    return next(iter(verdicts)) if len(verdicts) == 1 else DISAGREEMENT


def merge_pair_verdicts(
    pairs_csv: Path, verdict_files: Sequence[Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged, disagreements). merged: pairs.csv plus verdict_<reviewer> per reviewer (blank where
    that reviewer gave none), n_verdicts, consensus (the verdict all who judged the pair agree on,
    DISAGREEMENT, or UNREVIEWED), any_memorized and notes ('reviewer: note' joined by '; ').
    disagreements: every verdict on a pair reviewers judged differently (VERDICT_RECORD_COLUMNS),
    by rank and reviewer. A verdict file's rank is not read: pairs are named by their ids."""
    pairs = read_pairs(Path(pairs_csv)).reset_index(drop=True)
    keys = list(zip(pairs["real_id"], pairs["synthetic_id"]))
    ranks = dict(zip(keys, pairs["rank"].astype(int)))
    parts = [read_verdicts(Path(path), ranks, Path(pairs_csv)) for path in verdict_files]
    parts = [part for part in parts if len(part)]
    verdicts = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=list(VERDICT_RECORD_COLUMNS))
    )
    check_single_verdicts(verdicts)
    judged = {
        key: group for key, group in verdicts.groupby(["real_id", "synthetic_id"], sort=False)
    }
    groups = [judged.get(key, verdicts.iloc[:0]) for key in keys]
    merged = pairs.copy()
    for reviewer in sorted(set(verdicts["reviewer"])):
        own = verdicts[verdicts["reviewer"] == reviewer]
        given = dict(zip(zip(own["real_id"], own["synthetic_id"]), own["verdict"]))
        merged[f"verdict_{reviewer}"] = [given.get(key, "") for key in keys]
    merged["n_verdicts"] = [len(group) for group in groups]
    merged["consensus"] = [consensus_of(set(group["verdict"])) for group in groups]
    merged["any_memorized"] = [bool((group["verdict"] == MEMORIZED).any()) for group in groups]
    merged["notes"] = [
        "; ".join(f"{who}: {note}" for who, note in zip(group["reviewer"], group["note"]) if note)
        for group in groups
    ]
    split = {key for key, group in zip(keys, groups) if group["verdict"].nunique() > 1}
    disagreements = verdicts.loc[
        [key in split for key in zip(verdicts["real_id"], verdicts["synthetic_id"])]
    ]
    return merged, disagreements.sort_values(["rank", "reviewer", "file", "line"]).reset_index(
        drop=True
    )


# ----------------------------------------------------------------------------- the workflow's pages


#: The review page's file name in each set's folder.
REVIEW_PAGE_NAME = "review.html"


def write_set_reviews(
    screening_dir: Path,
    manifests: Sequence[Path],
    out_dir: Path,
    *,
    sort: str,
    reasons: Sequence[str],
    page_size: int,
    provenance: Mapping[str, str],
) -> dict[str, dict]:
    """The workflow's screening pages: out_dir/<sample set>/<checkpoint>/review.html for each
    gathered set, from its screening manifest (screening_dir/<label>/screening_manifest.csv) and its
    left-facing images, read in the order the screen wrote them. Returns each page's size facts."""
    written = {}
    for manifest_csv in manifests:
        samples, images = left_facing_sample_set(Path(manifest_csv))
        label = samples["checkpoint"].iloc[0]
        written[label] = write_screening_review(
            Path(screening_dir) / label / MANIFEST_NAME,
            images,
            Path(out_dir) / label / REVIEW_PAGE_NAME,
            sort=sort,
            reasons=reasons,
            page_size=page_size,
            title=f"Screening review: {label}",
            provenance=provenance,
        )
    return written


def write_workflow_pairs_review(
    pairs_csv: Path,
    atlas_h5: Path,
    classifier_path: Path,
    manifests: Sequence[Path],
    out_html: Path,
    *,
    batch_size: int,
    provenance: Mapping[str, str],
) -> dict:
    """The memorization pairs page of the workflow's audit: the atlas made left-facing and the
    gathered sets' left-facing images, as the audit compared them."""
    real_images, real_ids = left_facing_atlas(atlas_h5, classifier_path, batch_size=batch_size)
    synthetic = {}
    for manifest_csv in manifests:
        samples, images = left_facing_sample_set(Path(manifest_csv))
        synthetic.update(zip(samples["image_id"], images))
    return write_pairs_review(
        Path(pairs_csv),
        dict(zip(real_ids, real_images)),
        synthetic,
        Path(out_html),
        title="Memorization audit: the most similar real-synthetic pairs",
        provenance=provenance,
    )
