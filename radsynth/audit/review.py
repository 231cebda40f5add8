"""Offline review pages for the audit's two human steps, at the paper's scale.

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
The export is the reviewed manifest `radsynth.audit.screening.merge_reviews` reads: the
manifest's provenance lines, then every manifest column in order with each field's text as
written, and decision, reason and reviewer filled for the decided rows.

Memorization review (`write_pairs_review`): each pair of `pairs.csv`, real | synthetic at full
resolution (small images scaled up by a whole factor, pixels kept sharp), with its similarity and
patch distance, and a verdict per pair (VERDICTS, keys 1-3) and an optional note.
`radsynth.audit.pair_verdicts.merge_pair_verdicts` merges the verdict files of the reviewers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from radsynth.audit.pair_verdicts import PAIRS_COLUMNS, VERDICT_COLUMNS, VERDICTS, read_pairs
from radsynth.audit.scoring import left_facing_atlas, left_facing_sample_set
from radsynth.audit.screening import MANIFEST_NAME, read_manifest
from radsynth.core.atomic import atomic_output
from radsynth.core.html import fill_template, page_fields, script_json
from radsynth.core.images import png_bytes
from radsynth.core.settings.audit import ReviewSort
from radsynth.core.tables import read_table_provenance

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Where the screening page's sprite sheets are streamed into its template ({{SHEETS}}).
SHEETS_FIELD = "SHEETS"
CONTENT_ID_HEX_DIGITS = 16
SORTS = get_args(ReviewSort)
#: Reasons are picked with the number keys 1..9.
MAX_REASONS = 9
#: CSS px of a screening tile: the contact sheets' tile (1.9 in at 100 dpi); smaller images are
#: scaled up with sharp pixels, larger ones are enlarged one at a time with the z key.
TILE_PX = 192


# ----------------------------------------------------------------------------- page building


def render_page(name: str, fields: Mapping[str, str]) -> list[str]:
    """Template `name` filled, cut where {{SHEETS}} stands so large parts can be streamed
    in between."""
    template = TEMPLATES / name
    return fill_template(
        template.read_text(encoding="utf-8"), fields, name=str(template), cut=SHEETS_FIELD
    )


def review_fields(
    title: str, provenance: Mapping[str, str], data: dict, *, what: str
) -> dict[str, str]:
    """The fields both review templates share; `what` the reviewer records (decisions, verdicts)."""
    return {
        **page_fields(title, provenance),
        "TITLE": html.escape(title),
        "START_FORM": (TEMPLATES / "start_form.html")
        .read_text(encoding="utf-8")
        .replace("{{WHAT}}", what),
        "STYLE": (TEMPLATES / "review.css").read_text(encoding="utf-8"),
        "REVIEW_SCRIPT": (TEMPLATES / "review_common.js").read_text(encoding="utf-8"),
        "REVIEW_DATA": script_json(data),
    }


def content_id(table: pd.DataFrame, images: Sequence[np.ndarray]) -> str:
    """Hash of a table's text and its images: two reviews never share saved progress in a
    browser."""
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
    """parts[0], the streamed chunks, then parts[1:], written atomically; returns the streamed
    characters."""
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
    frame = read_manifest(Path(manifest_csv), as_text=True)
    filled = frame["decision"].str.strip() != ""
    if filled.any():
        raise ValueError(
            f"{manifest_csv}: row {frame.loc[filled, 'row'].iloc[0]}: a decision is filled in; "
            f"review pages are built from the manifest the screen wrote"
        )
    return frame


def display_order(manifest: pd.DataFrame, sort: str) -> np.ndarray:
    """Manifest positions in the order shown: least plausible first (ties by row, blank last), or
    by row."""
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
    content_id, n_images, n_pages, page_size, sheet_bytes (base64 of the sprite sheets) and
    html_bytes."""
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
        "screening_review.html", review_fields(title, provenance, data, what="decisions")
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


def pair_images(
    pairs: pd.DataFrame,
    real_images_by_id: Mapping[str, np.ndarray],
    synthetic_images_by_id: Mapping[str, np.ndarray],
    pairs_csv: Path,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real, synthetic) image of each pair, in table order; a missing id fails naming the pair's
    rank."""
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
        render_page("pairs_review.html", review_fields(title, provenance, data, what="verdicts")),
    )
    return {
        "content_id": page_id,
        "n_pairs": len(entries),
        "html_bytes": Path(out_html).stat().st_size,
    }


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
