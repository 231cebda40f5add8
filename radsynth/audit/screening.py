"""Post-generation screening of a sampled set: a per-image manifest with the automated scores
and empty reviewer columns, contact sheets for people to review, the merge of their reviewed
copies, and the counts of the paper's Table S1 (generated, excluded, kept per checkpoint).

The screen proposes and people decide (paper 2.3 excluded implausible anatomy by hand): the
manifest's `proposed` is `exclude` where the plausibility (see `radsynth.audit.plausibility`)
is below the threshold, `include` elsewhere. Reviewers fill `decision` (include, exclude or
blank; case and surrounding spaces do not matter), `reason` and `reviewer` in copies of the
manifest, for any subset of rows, and place the copies back. In the merge a person's decision
wins over the proposal; an image reviewers decide differently is listed as a conflict and is
excluded (the conservative choice: a set released as anatomically plausible loses one image
rather than keeping one that somebody found implausible).

`row` numbers the manifest's images from 1; each contact-sheet tile shows its row and image id,
so a reviewer writes decisions for the rows of a page. Page NNN (`contact_pageNNN.png`) shows
rows (NNN - 1) * TILES_PER_PAGE + 1 onwards and records its rows and ids in its PNG text.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from radsynth.audit.plausibility import (
    PlausibilityModel,
    ScreenSettings,
    fit_plausibility,
    intensity_statistics,
    load_model,
    save_model,
)
from radsynth.core.figures import save_figure
from radsynth.core.provenance import file_sha256
from radsynth.core.tables import read_table, write_table
from radsynth.data.atlas import load_atlas
from radsynth.sample.facing import load_classifier, predict_facing, standardize_left
from radsynth.sample.store import open_left_facing

INCLUDE, EXCLUDE = "include", "exclude"
#: `decided_by` of an image no person decided.
AUTOMATED = "automated screen"
#: What identifies a synthetic image and how it was made left-facing, from the sample manifest.
SAMPLE_COLUMNS = ("image_id", "checkpoint", "shard", "index", "seed", "flipped")
REVIEW_COLUMNS = ("decision", "reason", "reviewer")
SCORE_COLUMNS = (
    "plausibility",
    "atypical_x",
    "atypical_y",
    "nearest_real_id",
    "nearest_real_similarity",
    "mean",
    "std",
    "p01",
    "p99",
)
MANIFEST_COLUMNS = ("row", *SAMPLE_COLUMNS, *SCORE_COLUMNS, "proposed", *REVIEW_COLUMNS)
#: Columns read as text (pandas would read blanks as NaN and ids like "0001" as numbers).
TEXT_COLUMNS = ("image_id", "checkpoint", "shard", "nearest_real_id", "proposed", *REVIEW_COLUMNS)
#: One person's decision on one image, as the merge reads it from a reviewed manifest.
DECISION_COLUMNS = ("image_id", "reviewer", "decision", "reason", "file", "line")
MANIFEST_NAME = "screening_manifest.csv"
PLAUSIBILITY_MODEL_NAME = "plausibility_model.npz"
#: Contact sheet layout: 6 rows of 8 tiles stay legible on a screen at 256 px per image.
TILES_PER_PAGE = 48
TILE_COLUMNS = 8
TILE_INCHES = 1.9
#: Gap between tiles and height of the caption band under each, as fractions of an image's side.
TILE_GAP = 0.06
CAPTION_HEIGHT = 0.3
TITLE_INCHES = 0.4
PAGE_DPI = 100


# ----------------------------------------------------------------------------- inputs


def orient_left(
    images: np.ndarray, classifier_path: Path, *, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images mirrored where the sample stage's facing classifier finds them right-facing (the
    paper's standardization), and which were."""
    classifier = load_classifier(Path(classifier_path), image_size=images.shape[-1])
    facing, _ = predict_facing(classifier, images, batch_size=batch_size)
    return standardize_left(images, facing)


def left_facing_atlas(
    atlas_h5: Path, classifier_path: Path, *, batch_size: int
) -> tuple[np.ndarray, list[str]]:
    """The atlas' images made left-facing by the facing classifier (as the samples are), and their ids."""
    with load_atlas(Path(atlas_h5)) as atlas:
        images, ids = np.asarray(atlas.images), list(atlas.source_names)
    real, _ = orient_left(images, classifier_path, batch_size=batch_size)
    return real, ids


def fit_on_atlas(
    atlas_h5: Path, classifier_path: Path, *, settings: ScreenSettings, batch_size: int
) -> PlausibilityModel:
    """The screen fitted on the left-facing atlas, its description naming both files."""
    real, ids = left_facing_atlas(atlas_h5, classifier_path, batch_size=batch_size)
    orientation = (
        f"mirrored where the facing classifier {classifier_path} (sha256 {file_sha256(classifier_path)}) "
        f"finds them right-facing"
    )
    return fit_plausibility(
        real, ids, settings=settings, fitted_on={"atlas": str(atlas_h5), "orientation": orientation}
    )


def left_facing_sample_set(
    manifest_csv: Path, checkpoint: str | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """A gathered checkpoint's samples (SAMPLE_COLUMNS, in manifest order) and their left-facing
    images, read in one pass over the shards. `checkpoint` defaults to the label the stores record
    (`<sample set>/<checkpoint>`), so two sets of one checkpoint stay apart in merged tables."""
    shown = open_left_facing(Path(manifest_csv))
    checkpoint = checkpoint or shown.samples.attrs["checkpoint"]
    manifest = shown.manifest
    images = shown.samples.images(manifest["global_index"].to_numpy())
    flipped = manifest["flipped"].to_numpy(dtype=bool)
    images[flipped] = images[flipped][:, :, ::-1]
    samples = pd.DataFrame(
        {
            "image_id": manifest.index,
            "checkpoint": checkpoint,
            "shard": manifest["shard"].to_numpy(),
            "index": manifest["index"].to_numpy(),
            "seed": manifest["seed"].to_numpy(),
            "flipped": flipped,
        }
    )
    return samples, images


# ----------------------------------------------------------------------------- the manifest


def check_threshold(threshold: float) -> float:
    """A plausibility is a fraction: a threshold outside [0, 1] would propose all or nothing."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"plausibility threshold {threshold} is not in [0, 1]")
    return threshold


def screening_manifest(
    samples: pd.DataFrame,
    images: np.ndarray,
    model: PlausibilityModel,
    *,
    threshold: float,
    chunk_size: int,
) -> pd.DataFrame:
    """One row per left-facing image: `samples`' SAMPLE_COLUMNS, the automated scores, the
    proposal at `threshold` and empty reviewer columns (MANIFEST_COLUMNS)."""
    missing = [column for column in SAMPLE_COLUMNS if column not in samples.columns]
    if missing:
        raise ValueError(f"sample table lacks column(s) {', '.join(missing)}")
    if len(samples) != len(images):
        raise ValueError(f"{len(samples)} sample rows for {len(images)} images")
    check_threshold(threshold)
    scores = model.score(images, chunk_size=chunk_size)
    statistics = intensity_statistics(images).round(3)
    frame = samples.loc[:, list(SAMPLE_COLUMNS)].reset_index(drop=True)
    frame.insert(0, "row", np.arange(1, len(frame) + 1))
    frame = frame.assign(
        plausibility=scores.plausibility.round(6),
        atypical_x=scores.atypical_x.round(3),
        atypical_y=scores.atypical_y.round(3),
        nearest_real_id=scores.nearest_real_id,
        nearest_real_similarity=scores.nearest_real_similarity.astype(np.float64).round(6),
        **statistics,
        proposed=np.where(scores.plausibility < threshold, EXCLUDE, INCLUDE),
        decision="",
        reason="",
        reviewer="",
    )
    return frame.loc[:, list(MANIFEST_COLUMNS)]


def manifest_provenance(
    model: PlausibilityModel, threshold: float, provenance: Mapping[str, str]
) -> dict[str, str]:
    """What a reader of the manifest needs to trust its numbers: the screen and the threshold."""
    description = model.description
    return {
        **provenance,
        "plausibility": description["plausibility"],
        "threshold": str(threshold),
        "proposed": f"exclude where plausibility < {threshold}, else include",
        "screen_real_images_digest": description["real_images_digest"],
        "screen_n_real": str(description["n_real"]),
        "screen_fitted_on": json.dumps(description["fitted_on"], sort_keys=True),
        "screen_settings": json.dumps(description["settings"], sort_keys=True),
    }


def write_screening(
    samples: pd.DataFrame,
    images: np.ndarray,
    model: PlausibilityModel,
    out_dir: Path,
    *,
    threshold: float,
    chunk_size: int,
    title: str,
    provenance: Mapping[str, str],
    sheets_dir: Path | None = None,
) -> pd.DataFrame:
    """out_dir/screening_manifest.csv and its contact sheets (in sheets_dir, else out_dir); returns the manifest."""
    manifest = screening_manifest(
        samples, images, model, threshold=threshold, chunk_size=chunk_size
    )
    described = manifest_provenance(model, threshold, provenance)
    write_table(manifest, Path(out_dir) / MANIFEST_NAME, provenance=described)
    write_contact_sheets(
        manifest,
        images,
        Path(sheets_dir or out_dir),
        title=f"{title} (proposed exclude below {threshold})",
        box=contact_box(model),
        provenance=described,
    )
    return manifest


def screen_image_set(
    atlas_h5: Path,
    classifier_path: Path,
    images: np.ndarray,
    ids: Sequence[str],
    out_dir: Path,
    *,
    checkpoint: str,
    orient_synthetic: bool,
    threshold: float,
    chunk_size: int,
    batch_size: int,
    settings: ScreenSettings,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Screen any set of synthetic images against an atlas (the `screen` command): fit the screen
    on the atlas made left-facing by the facing classifier, orient the synthetic images with it
    too unless they are left-facing already, and write the manifest (shard, index and seed blank:
    such a set does not say), its contact sheets and the fitted model (PLAUSIBILITY_MODEL_NAME)."""
    check_threshold(threshold)
    model = fit_on_atlas(atlas_h5, classifier_path, settings=settings, batch_size=batch_size)
    flipped = np.zeros(len(images), dtype=bool)
    if orient_synthetic:
        images, flipped = orient_left(images, classifier_path, batch_size=batch_size)
    samples = pd.DataFrame(
        {
            "image_id": list(ids),
            "checkpoint": checkpoint,
            "shard": "",
            "index": "",
            "seed": "",
            "flipped": flipped,
        }
    )
    manifest = write_screening(
        samples,
        images,
        model,
        Path(out_dir),
        threshold=threshold,
        chunk_size=chunk_size,
        title=checkpoint,
        provenance=provenance,
    )
    save_model(model, Path(out_dir) / PLAUSIBILITY_MODEL_NAME)
    return manifest


def screen_gathered_sets(
    manifests: Sequence[Path],
    model_path: Path,
    out_dir: Path,
    *,
    threshold: float,
    chunk_size: int,
    provenance: Mapping[str, str],
) -> dict[str, pd.DataFrame]:
    """The workflow's screening: each gathered set's left-facing images scored by the fitted screen,
    its manifest and contact sheets in out_dir/<sample set>/<checkpoint>/ (contact_sheets/ there)."""
    model = load_model(model_path)
    written = {}
    for manifest_csv in manifests:
        samples, images = left_facing_sample_set(manifest_csv)
        label = samples["checkpoint"].iloc[0]
        folder = Path(out_dir) / label
        written[label] = write_screening(
            samples,
            images,
            model,
            folder,
            threshold=threshold,
            chunk_size=chunk_size,
            title=label,
            sheets_dir=folder / "contact_sheets",
            provenance={**provenance, "sample_manifest": str(manifest_csv)},
        )
    return written


def screened_manifests(out_dir: Path) -> list[Path]:
    """The manifests `screen_gathered_sets` wrote in out_dir, in path order."""
    found = sorted(Path(out_dir).glob(f"*/*/{MANIFEST_NAME}"))
    if not found:
        raise ValueError(f"{out_dir}: holds no <sample set>/<checkpoint>/{MANIFEST_NAME}")
    return found


def read_manifest(path: Path) -> pd.DataFrame:
    """A screening manifest as written, blanks kept as empty text."""
    frame = read_table(
        Path(path), dtype={column: str for column in TEXT_COLUMNS}, keep_default_na=False
    )
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: not a screening manifest, missing column(s) {', '.join(missing)}"
        )
    return frame


# ----------------------------------------------------------------------------- contact sheets


def contact_box(model: PlausibilityModel) -> float:
    """Side of the region a cell's descriptor covers, as a fraction of the image side."""
    settings = model.settings
    return (2 * settings.neighbourhood + 1) / settings.grid


def page_rows(n_images: int) -> list[range]:
    """Manifest positions (0-based) shown on each page."""
    return [
        range(first, min(first + TILES_PER_PAGE, n_images))
        for first in range(0, n_images, TILES_PER_PAGE)
    ]


def draw_page(
    manifest: pd.DataFrame, images: np.ndarray, positions: range, *, title: str, box: float
) -> Figure:
    """Tiles of one page, as one mosaic (one image draw per page, not one per tile): row number,
    image id and plausibility under each image; a red frame where the screen proposes exclusion,
    with a box round the region it found least like the real images."""
    height, width = images.shape[1:]
    pitch_x, pitch_y = width * (1 + TILE_GAP), height * (1 + CAPTION_HEIGHT)
    n_rows = int(np.ceil(len(positions) / TILE_COLUMNS))
    margin = round(width * TILE_GAP / 2)  # room for the frames of the outer tiles
    canvas = np.full(
        (int(np.ceil(n_rows * pitch_y)) + margin, int(np.ceil(TILE_COLUMNS * pitch_x)) + margin),
        255,
        dtype=np.uint8,
    )
    corners = [
        (
            margin + round(tile % TILE_COLUMNS * pitch_x),
            margin + round(tile // TILE_COLUMNS * pitch_y),
        )
        for tile in range(len(positions))
    ]
    for (x0, y0), position in zip(corners, positions):
        canvas[y0 : y0 + height, x0 : x0 + width] = images[position]
    mosaic_inches = TILE_COLUMNS * TILE_INCHES * canvas.shape[0] / canvas.shape[1]
    figure = Figure(figsize=(TILE_COLUMNS * TILE_INCHES, mosaic_inches + TITLE_INCHES))
    figure.text(
        0.5,
        1 - 0.1 / (mosaic_inches + TITLE_INCHES),
        f"{title}: rows {positions[0] + 1}-{positions[-1] + 1} "
        f"of {len(manifest)}; red frame = proposed exclude, box = least real-like region",
        ha="center",
        va="top",
        fontsize=9,
    )
    axes = figure.add_axes((0.0, 0.0, 1.0, mosaic_inches / (mosaic_inches + TITLE_INCHES)))
    axes.imshow(canvas, cmap="gray", vmin=0, vmax=255)
    axes.set_axis_off()
    for (x0, y0), position in zip(corners, positions):
        record = manifest.iloc[position]
        axes.text(
            x0 + width / 2,
            y0 + height * 1.03,
            f"{record['row']}  {record['image_id']}\nplausibility {record['plausibility']:.3f}",
            ha="center",
            va="top",
            fontsize=7,
        )
        if record["proposed"] == EXCLUDE:
            axes.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5), width, height, fill=False, edgecolor="red", linewidth=2.5
                )
            )
            axes.add_patch(
                Rectangle(
                    (
                        x0 + record["atypical_x"] * width - box * width / 2 - 0.5,
                        y0 + record["atypical_y"] * height - box * height / 2 - 0.5,
                    ),
                    box * width,
                    box * height,
                    fill=False,
                    edgecolor="red",
                    linewidth=1,
                )
            )
    return figure


def write_contact_sheets(
    manifest: pd.DataFrame,
    images: np.ndarray,
    out_dir: Path,
    *,
    title: str,
    box: float,
    provenance: Mapping[str, str],
) -> list[Path]:
    """out_dir/contact_pageNNN.png, TILES_PER_PAGE manifest rows each, in row order; pages of an
    earlier, longer run left in out_dir are removed so every page present belongs to this manifest."""
    written = []
    for number, positions in enumerate(page_rows(len(manifest)), start=1):
        figure = draw_page(manifest, images, positions, title=title, box=box)
        shown = manifest.iloc[list(positions)]
        written.append(
            save_figure(
                figure,
                out_dir / f"contact_page{number:03d}.png",
                title=f"{title}, page {number}",
                provenance=provenance,
                dpi=PAGE_DPI,
                rows=f"{positions[0] + 1}-{positions[-1] + 1}",
                image_ids=" ".join(shown["image_id"]),
            )
        )
    for stale in sorted(set(out_dir.glob("contact_page*.png")) - set(written)):
        stale.unlink()
    return written


# ----------------------------------------------------------------------------- reviews


def numbered_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV record after the '#' provenance lines, header first;
    blank lines skipped. A record spanning lines is numbered by its last line."""
    with Path(path).open(
        encoding="utf-8-sig", newline=""
    ) as handle:  # utf-8-sig: spreadsheets add a BOM
        line = 0

        def lines() -> Iterator[str]:
            nonlocal line
            for line, text in enumerate(handle, start=1):
                if not text.startswith("#"):
                    yield text

        for record in csv.reader(lines()):
            if record:
                yield line, record


def read_review(path: Path, manifest_ids: set[str]) -> pd.DataFrame:
    """The decided rows of one reviewed manifest: image_id, reviewer, decision, reason, file, line.
    A missing column, an unknown image, a decision other than include/exclude/blank, a decision
    without reviewer or an image decided twice fails naming the file, line and column."""
    records = numbered_records(path)
    header_line, header = next(records, (0, []))
    missing = [column for column in ("image_id", *REVIEW_COLUMNS) if column not in header]
    if missing:
        raise ValueError(
            f"{path}: line {header_line}: missing column(s) {', '.join(missing)}; a reviewed manifest "
            f"is a copy of {MANIFEST_NAME} with decision, reason and reviewer filled in"
        )
    decided, first_line = [], {}
    for line, record in records:
        row = dict(zip(header, (field.strip() for field in record)))
        where = f"{path}: line {line}: column"
        image = row.get("image_id", "")
        if image not in manifest_ids:
            raise ValueError(f"{where} image_id: {image!r} is not in the screening manifest")
        decision = row.get("decision", "").lower()
        if decision not in (INCLUDE, EXCLUDE, ""):
            raise ValueError(
                f"{where} decision: {row['decision']!r} is not include, exclude or blank"
            )
        if not decision:
            continue
        if not row.get("reviewer", ""):
            raise ValueError(
                f"{where} reviewer: blank, but the row has decision {decision!r}; "
                f"every decision needs its reviewer's id"
            )
        if image in first_line:
            raise ValueError(
                f"{where} image_id: {image!r} is decided again (first on line {first_line[image]})"
            )
        first_line[image] = line
        decided.append(
            {
                "image_id": image,
                "reviewer": row["reviewer"],
                "decision": decision,
                "reason": row.get("reason", ""),
                "file": str(path),
                "line": line,
            }
        )
    return pd.DataFrame(decided, columns=list(DECISION_COLUMNS))


def merge_reviews(
    manifest: pd.DataFrame, reviewed_files: Sequence[Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged, conflicts). merged: the manifest without its empty reviewer columns, plus
    final_decision, decided_by (reviewer ids joined by ';', or AUTOMATED), reasons ('reviewer:
    reason' joined by '; ') and conflict. conflicts: every decision on an image reviewers decided
    differently (image_id, reviewer, decision, reason, file, line)."""
    ids = manifest["image_id"]
    if not ids.is_unique:
        raise ValueError(f"screening manifest repeats image id {ids[ids.duplicated()].iloc[0]!r}")
    inline = manifest["decision"].fillna("").astype(str).str.strip() != ""
    if (
        inline.any()
    ):  # the manifest is an output, rewritten by the next run: decisions there would be lost
        raise ValueError(
            f"screening manifest row {manifest.loc[inline, 'row'].iloc[0]}: a decision is filled in the "
            f"manifest itself; reviewers fill copies of it, placed in the reviews folder"
        )
    reviews = [
        review
        for review in (read_review(Path(path), set(ids)) for path in reviewed_files)
        if len(review)
    ]
    decisions = (
        pd.concat(reviews, ignore_index=True)
        if reviews
        else pd.DataFrame(columns=list(DECISION_COLUMNS))
    )
    by_image = decisions.groupby("image_id", sort=False)
    distinct = by_image["decision"].nunique()
    conflicted = set(distinct.index[distinct > 1])
    merged = manifest.drop(columns=list(REVIEW_COLUMNS)).reset_index(drop=True)
    final, decided_by, reasons = [], [], []
    for image, proposed in zip(merged["image_id"], merged["proposed"]):
        if image not in by_image.groups:
            final.append(proposed)
            decided_by.append(AUTOMATED)
            reasons.append("")
            continue
        rows = by_image.get_group(image)
        final.append(EXCLUDE if image in conflicted else rows["decision"].iloc[0])
        decided_by.append(";".join(sorted(set(rows["reviewer"]))))
        reasons.append(
            "; ".join(f"{who}: {why}" for who, why in zip(rows["reviewer"], rows["reason"]) if why)
        )
    merged = merged.assign(
        final_decision=final,
        decided_by=decided_by,
        reasons=reasons,
        conflict=merged["image_id"].isin(conflicted),
    )
    conflicts = decisions[decisions["image_id"].isin(conflicted)].sort_values(
        ["image_id", "reviewer", "file", "line"]
    )
    return merged, conflicts.reset_index(drop=True)


def counts_table(merged: pd.DataFrame) -> pd.DataFrame:
    """Table S1's counts per checkpoint (first-seen order) and in total: generated, excluded and
    kept, and who excluded: reviewers or the automated screen (images nobody reviewed)."""
    excluded = merged["final_decision"] == EXCLUDE
    by_screen = excluded & (merged["decided_by"] == AUTOMATED)
    parts = pd.DataFrame(
        {
            "checkpoint": merged["checkpoint"],
            "generated": 1,
            "excluded": excluded.astype(int),
            "excluded_by_reviewers": (excluded & ~by_screen).astype(int),
            "excluded_by_screen": by_screen.astype(int),
        }
    )
    table = parts.groupby("checkpoint", sort=False).sum().reset_index()
    table.loc[len(table)] = ["total", *table.drop(columns="checkpoint").sum()]
    table.insert(3, "kept", table["generated"] - table["excluded"])
    return table


def plot_counts(counts: pd.DataFrame, out_png: Path, *, provenance: Mapping[str, str]) -> Path:
    """Table S1 as bars: per checkpoint, kept and excluded (by reviewers, by the screen alone), so
    a checkpoint whose share of implausible images stands out is seen at once."""
    rows = counts[counts["checkpoint"] != "total"].iloc[::-1]
    figure = Figure(figsize=(6.4, 0.5 * len(rows) + 1.6), layout="constrained")
    axes = figure.subplots()
    left = np.zeros(len(rows))
    for column, colour, label in (
        ("kept", "tab:green", "kept"),
        ("excluded_by_reviewers", "tab:red", "excluded by reviewers"),
        ("excluded_by_screen", "tab:orange", "excluded by the screen (not reviewed)"),
    ):
        values = rows[column].to_numpy(dtype=float)
        axes.barh(rows["checkpoint"], values, left=left, color=colour, label=label)
        left += values
    total = counts[counts["checkpoint"] == "total"].iloc[0]
    axes.set_xlabel("images")
    axes.set_title(
        f"screening (Table S1): {total['generated']} generated, {total['excluded']} excluded, "
        f"{total['kept']} kept",
        fontsize=9,
    )
    axes.legend(fontsize=7, loc="lower right")
    return save_figure(
        figure, Path(out_png), title="screening counts", provenance=provenance, dpi=110
    )


def merge_screening(
    manifests: Sequence[Path],
    reviewed_files: Sequence[Path],
    *,
    merged_csv: Path,
    conflicts_csv: Path,
    counts_csv: Path,
    counts_png: Path,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """The workflow's merge: every screened set's manifest with every reviewed copy, written as the
    merged table, the reviewers' conflicts and the Table S1 counts (table and figure); returns the counts."""
    if not manifests:
        raise ValueError("no screening manifests to merge")
    manifest = pd.concat([read_manifest(Path(path)) for path in manifests], ignore_index=True)
    merged, conflicts = merge_reviews(manifest, [Path(path) for path in reviewed_files])
    described = {
        **provenance,
        "reviewed_files": ";".join(str(path) for path in reviewed_files) or "none",
    }
    write_table(merged, Path(merged_csv), provenance=described)
    write_table(conflicts, Path(conflicts_csv), provenance=described)
    counts = counts_table(merged)
    write_table(counts, Path(counts_csv), provenance=described)
    plot_counts(counts, Path(counts_png), provenance=described)
    return counts
