"""Offline review pages for the audit's two human steps, at the paper's scale.

Both pages are static HTML opened from disk, like the Turing test's rating form: the
Content-Security-Policy forbids any network request, they work from file://, the reviewer's id and
decisions stay in the browser's localStorage (keyed by the page's content id and the reviewer id,
so a reviewer can stop, reload and resume) until the reviewer exports a CSV.

Screening review (`write_screening_review`): a sampled set's left-facing images as a grid, a page
at a time, least plausible first. A set of 9,000 images of 256 px is about 310 MB of PNG: inlined
as 420 MB of base64 in one HTML file, its first page took 4-9 s to appear and Chromium's
processes peaked at 1.4-1.5 GB (bench/review_bench.py; 0.4-0.9 s and 0.5 GB now). So each page's
images are one grayscale PNG sprite sheet (tiles in reading order, `sheet_columns` per row)
written as a file into a folder beside the page (`<page>_sheets/page-0001.png`, ...); the page
loads a sheet only when it shows that page (and the next one ahead), then copies it tile by tile
onto canvases. The page and its folder travel together. Optionally each image's predicted landmarks
(a table in `radsynth landmarks`' columns) are drawn over it, shown with a checkbox. Decisions:
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
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import get_args
from urllib.parse import quote

import numpy as np
import pandas as pd

from radsynth.anatomy.landmark_export import label_column, read_landmark_table
from radsynth.audit.pair_verdicts import PAIRS_COLUMNS, VERDICT_COLUMNS, VERDICTS, read_pairs
from radsynth.audit.scoring import left_facing_atlas, left_facing_sample_set
from radsynth.audit.screening import MANIFEST_NAME, read_manifest
from radsynth.core.atomic import atomic_directory, atomic_output
from radsynth.core.html import fill_template, page_fields, script_json
from radsynth.core.images import png_bytes
from radsynth.core.settings.audit import ReviewSort
from radsynth.core.tables import read_table_provenance
from radsynth.data.csxa import KEYPOINT_LABELS

TEMPLATES = Path(__file__).resolve().parent / "templates"
CONTENT_ID_HEX_DIGITS = 16
SORTS = get_args(ReviewSort)
#: Reasons are picked with the number keys 1..9.
MAX_REASONS = 9
#: CSS px of a screening tile: the contact sheets' tile (1.9 in at 100 dpi); smaller images are
#: scaled up with sharp pixels, larger ones are enlarged one at a time with the z key.
TILE_PX = 192


# ----------------------------------------------------------------------------- page building


def render_page(name: str, fields: Mapping[str, str]) -> str:
    """Template `name` filled."""
    template = TEMPLATES / name
    page = fill_template(template.read_text(encoding="utf-8"), fields, name=str(template))
    return page


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


def write_page(out_html: Path, text: str) -> None:
    """The page, written atomically."""
    with atomic_output(Path(out_html)) as temporary:
        temporary.write_text(text, encoding="utf-8")


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


def sheets_folder(out_html: Path) -> Path:
    """The folder of a screening page's sprite sheets, beside it: review.html -> review_sheets/."""
    return Path(out_html).with_name(f"{Path(out_html).stem}_sheets")


def write_sheets(
    images: np.ndarray, order: np.ndarray, page_size: int, columns: int, folder: Path
) -> tuple[list[str], int]:
    """One PNG sprite sheet per page (page-0001.png, ...) in `folder`, replaced as a whole and
    encoded one page at a time (a 9,000-image set never sits in memory twice). Returns the file
    names in page order and their bytes."""
    names, written = [], 0
    shutil.rmtree(folder, ignore_errors=True)
    with atomic_directory(folder) as staging:
        for page, first in enumerate(range(0, len(order), page_size)):
            names.append(f"page-{page + 1:04d}.png")
            sheet = png_bytes(sprite_sheet(images[order[first : first + page_size]], columns))
            (staging / names[-1]).write_bytes(sheet)
            written += len(sheet)
    return names, written


def landmark_points(
    landmarks: pd.DataFrame, manifest: pd.DataFrame, shape: tuple[int, int]
) -> list[list[float | None] | None]:
    """Per manifest row, x, y and confidence of each of KEYPOINT_LABELS in turn (None where not
    predicted), or None for an image without a row in `landmarks` (`radsynth landmarks`' columns:
    image_id, then `<label>_x`, `<label>_y`, `<label>_confidence`; x and y in the shown image's
    pixel frame, pixel i covering [i - 0.5, i + 0.5])."""
    columns = [
        column
        for label in KEYPOINT_LABELS
        for column in (
            label_column(label, "x"),
            label_column(label, "y"),
            label_column(label, "confidence"),
        )
    ]
    missing = [column for column in ["image_id", *columns] if column not in landmarks.columns]
    if missing:
        raise ValueError(f"landmark table: no column {', '.join(missing)}")
    ids = landmarks["image_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"landmark table: image {ids[ids.duplicated()].iloc[0]!r} twice")
    unknown = sorted(set(ids) - set(manifest["image_id"]))
    if unknown:
        raise ValueError(
            f"landmark table: image {unknown[0]!r} is not in the screening manifest "
            f"({len(unknown)} such)"
        )
    try:
        values = landmarks[columns].to_numpy(dtype=float)
    except ValueError as exc:
        raise ValueError(f"landmark table: a landmark value is not a number ({exc})") from exc
    xy = values.reshape(len(values), len(KEYPOINT_LABELS), 3)[:, :, :2]
    height, width = shape
    outside = (xy < -0.5) | (xy > np.array([width, height]) - 0.5)
    if outside.any():
        row, label, axis = np.argwhere(outside)[0]
        raise ValueError(
            f"landmark table: image {ids.iloc[row]!r}: {KEYPOINT_LABELS[label]} "
            f"{'xy'[axis]} = {xy[row, label, axis]} lies outside the {width}x{height} image"
        )
    by_id = dict(zip(ids, np.round(values, 2).tolist()))
    return [
        [None if math.isnan(value) else value for value in by_id[image_id]]
        if image_id in by_id
        else None
        for image_id in manifest["image_id"]
    ]


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
    landmarks: pd.DataFrame | None = None,
) -> dict:
    """The screening review page of one sampled set, and its sprite sheets in the folder
    `sheets_folder(out_html)` beside it: `images` are the set's left-facing uint8 gray images
    (N, H, W) in manifest row order (as `left_facing_sample_set` returns them); `landmarks`, if
    given, their predicted landmarks in the same left-facing frame (see `landmark_points`), drawn
    over the images on request. Returns content_id, n_images, n_pages, page_size, sheet_bytes (the
    sprite sheets' files) and html_bytes."""
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
    points = None if landmarks is None else landmark_points(landmarks, manifest, (height, width))
    columns = sheet_columns(page_size)
    label = file_label("-".join(dict.fromkeys(manifest["checkpoint"])))
    # No page without its sheets: a run killed part way leaves at most sheets without a page.
    Path(out_html).unlink(missing_ok=True)
    folder = sheets_folder(Path(out_html))
    names, sheet_bytes = write_sheets(images, order, page_size, columns, folder)
    data = {
        "content_id": page_id,
        "sort": sort,
        "columns": list(manifest.columns),
        "rows": manifest.to_numpy().tolist(),
        "order": order.tolist(),
        "page_size": page_size,
        "sheets": [f"{quote(folder.name)}/{name}" for name in names],
        "sheet_columns": columns,
        "width": width,
        "height": height,
        "tile_px": TILE_PX,
        "pixelated": max(width, height) < TILE_PX,
        "reasons": reasons,
        "landmark_labels": list(KEYPOINT_LABELS) if points is not None else [],
        "landmarks": points,
        "comments": export_comments(Path(manifest_csv), page_id),
        "export_name": f"screening_review_{label}_{{reviewer}}.csv",
    }
    write_page(
        Path(out_html),
        render_page(
            "screening_review.html", review_fields(title, provenance, data, what="decisions")
        ),
    )
    return {
        "content_id": page_id,
        "n_images": len(images),
        "n_pages": len(names),
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
    landmark_tables: Sequence[Path] = (),
) -> dict[str, dict]:
    """The workflow's screening pages: out_dir/<sample set>/<checkpoint>/review.html and its
    sprite sheets in review_sheets/ beside it, for each gathered set, from its screening manifest
    (screening_dir/<label>/screening_manifest.csv) and its left-facing images, read in the order
    the screen wrote them; with `landmark_tables` (one per manifest, in its order: the anatomy
    stage's landmark CSVs of the same left-facing images) the pages can overlay the landmarks.
    Returns each page's size facts."""
    if landmark_tables and len(landmark_tables) != len(manifests):
        raise ValueError(
            f"{len(landmark_tables)} landmark tables for {len(manifests)} sample manifests"
        )
    written = {}
    for index, manifest_csv in enumerate(manifests):
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
            landmarks=read_landmark_table(landmark_tables[index]) if landmark_tables else None,
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
