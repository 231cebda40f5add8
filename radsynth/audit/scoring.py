"""Scoring sampled images with the plausibility screen: the images made left-facing by the
sample stage's facing classifier, the screen fitted on the atlas and applied to them, and the
screening manifest (`radsynth.audit.screening`'s format) and contact sheets written for people
to review.

The screen proposes and people decide (paper 2.3 excluded implausible anatomy by hand): the
manifest's `proposed` is `exclude` where the plausibility (see `radsynth.audit.plausibility`)
is below the threshold, `include` elsewhere. Given the anatomy stage's landmark tables (the set's
and the held-out real images'), the manifest also carries the anatomical screen
(`radsynth.audit.anatomy_screen`) and the proposal is `radsynth.audit.screening.propose`'s:
exclude where either screen's plausibility is below the threshold, with a reason.

`row` numbers the manifest's images from 1; each contact-sheet tile shows its row and image id,
so a reviewer writes decisions for the rows of a page. Page NNN (`contact_pageNNN.png`) shows
rows (NNN - 1) * TILES_PER_PAGE + 1 onwards and records its rows and ids in its PNG text.

Apart from the merge and release rules' module (`radsynth.audit.screening`) because this one
needs torch (the facing classifier, the screen's nearest-real search) and they must not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from radsynth.anatomy.landmark_export import label_column, read_landmark_table
from radsynth.audit.anatomy_screen import (
    GeometryRanges,
    add_anatomy_columns,
    anatomy_flags,
    geometry_ranges,
)
from radsynth.audit.plausibility import (
    PlausibilityModel,
    ScreenSettings,
    fit_plausibility,
    intensity_statistics,
    load_model,
    save_model,
)
from radsynth.audit.screening import (
    ANATOMY_COLUMNS,
    EXCLUDE,
    SAMPLE_COLUMNS,
    manifest_columns,
    propose,
    write_manifest,
)
from radsynth.core.figures import save_figure
from radsynth.core.provenance import file_sha256
from radsynth.data.atlas import load_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.sample.facing import load_classifier, predict_facing, standardize_left
from radsynth.sample.store import open_left_facing

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
    """The atlas' images made left-facing by the facing classifier (as the samples are), and their
    ids."""
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
        f"mirrored where the facing classifier {classifier_path} "
        f"(sha256 {file_sha256(classifier_path)}) finds them right-facing"
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


# ----------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class AnatomyReference:
    """What the anatomical screen holds a set's landmarks against: the held-out real images'
    geometry ranges and anatomy scores (`anatomy_plausibility` is the share of them at least as
    high), and the confidence below which a landmark is flagged."""

    ranges: GeometryRanges
    scores: np.ndarray
    min_confidence: float
    source: str


def table_flags(table: pd.DataFrame, ranges: GeometryRanges, min_confidence: float) -> pd.DataFrame:
    """`anatomy_flags` of a landmark table's rows (`radsynth landmarks`' columns)."""
    xy, confidence = (
        np.stack(
            [
                table[[label_column(label, field) for label in KEYPOINT_LABELS]].to_numpy(float)
                for field in fields
            ],
            axis=-1,
        )
        for fields in (("x", "y"), ("confidence",))
    )
    return anatomy_flags(xy, confidence[..., 0], table, ranges, min_confidence=min_confidence)


def anatomy_reference(
    held_out_csv: Path, *, min_confidence: float, percentiles: Sequence[float]
) -> AnatomyReference:
    """The reference of the held-out real images' landmark table (the anatomy stage's)."""
    table = read_landmark_table(Path(held_out_csv))
    ranges = geometry_ranges(table, (float(percentiles[0]), float(percentiles[1])))
    scores = table_flags(table, ranges, min_confidence)["anatomy_score"].to_numpy()
    return AnatomyReference(ranges, scores, float(min_confidence), str(held_out_csv))


def with_anatomy(
    manifest: pd.DataFrame, landmarks: pd.DataFrame, reference: AnatomyReference
) -> pd.DataFrame:
    """The manifest with ANATOMY_COLUMNS from the set's landmark table (one row per image)."""
    flags = table_flags(landmarks, reference.ranges, reference.min_confidence)
    merged = add_anatomy_columns(manifest, landmarks["image_id"].tolist(), flags, reference.scores)
    numeric = [c for c in ANATOMY_COLUMNS if merged[c].dtype == np.float64]
    merged[numeric] = merged[numeric].round(6)
    return merged


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
    anatomy: tuple[pd.DataFrame, AnatomyReference] | None = None,
) -> pd.DataFrame:
    """One row per left-facing image: `samples`' SAMPLE_COLUMNS, the automated scores, the
    proposal at `threshold` and empty reviewer columns (MANIFEST_COLUMNS); with `anatomy` (the
    set's landmark table and the reference), the anatomical screen's columns too."""
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
        decision="",
        reason="",
        reviewer="",
    )
    if anatomy is not None:
        frame = with_anatomy(frame, *anatomy)
    frame["proposed"], reasons = propose(frame, threshold)
    if anatomy is not None:
        frame["proposed_reason"] = reasons
    return frame.loc[:, manifest_columns(frame.columns)[0]]


def manifest_provenance(
    model: PlausibilityModel,
    threshold: float,
    provenance: Mapping[str, str],
    anatomy: AnatomyReference | None = None,
) -> dict[str, str]:
    """What a reader of the manifest needs to trust its numbers: the screens and the
    threshold."""
    description = model.description
    described = {
        **provenance,
        "plausibility": description["plausibility"],
        "threshold": str(threshold),
        "proposed": f"exclude where plausibility < {threshold}, else include",
        "screen_real_images_digest": description["real_images_digest"],
        "screen_n_real": str(description["n_real"]),
        "screen_fitted_on": json.dumps(description["fitted_on"], sort_keys=True),
        "screen_settings": json.dumps(description["settings"], sort_keys=True),
    }
    if anatomy is None:
        return described
    low, high = anatomy.ranges.percentiles
    return {
        **described,
        "proposed": (
            f"exclude where plausibility < {threshold} or anatomy_plausibility < {threshold}, "
            "else include"
        ),
        "anatomy_reference": anatomy.source,
        "anatomy_plausibility": (
            f"fraction of the {len(anatomy.scores)} held-out real images whose anatomy score is "
            "at least the image's; higher = more plausible"
        ),
        "anatomy_flags": (
            f"landmark confidence < {anatomy.min_confidence}; vertebrae out of order; a geometry "
            f"measure outside the held-out images' {low:g}-{high:g} percentile range"
        ),
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
    anatomy: tuple[pd.DataFrame, AnatomyReference] | None = None,
) -> pd.DataFrame:
    """out_dir/screening_manifest.csv and its contact sheets (in sheets_dir, else out_dir);
    returns the manifest. `anatomy`: the set's landmark table and the reference."""
    manifest = screening_manifest(
        samples, images, model, threshold=threshold, chunk_size=chunk_size, anatomy=anatomy
    )
    described = manifest_provenance(
        model, threshold, provenance, None if anatomy is None else anatomy[1]
    )
    write_manifest(manifest, Path(out_dir), described)
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
    landmarks: Sequence[Path] = (),
    anatomy: AnatomyReference | None = None,
) -> dict[str, pd.DataFrame]:
    """The workflow's screening: each gathered set's left-facing images scored by the fitted
    screen, its manifest and contact sheets in out_dir/<sample set>/<checkpoint>/ (contact_sheets/
    there). With `anatomy`, `landmarks` holds each set's landmark table, in `manifests`' order."""
    if anatomy is not None and len(landmarks) != len(manifests):
        raise ValueError(
            f"{len(landmarks)} landmark tables for {len(manifests)} sample manifests: the "
            "anatomical screen needs one per set"
        )
    model = load_model(model_path)
    written = {}
    for number, manifest_csv in enumerate(manifests):
        samples, images = left_facing_sample_set(manifest_csv)
        label = samples["checkpoint"].iloc[0]
        folder = Path(out_dir) / label
        described = {**provenance, "sample_manifest": str(manifest_csv)}
        set_anatomy = None
        if anatomy is not None:
            table = read_landmark_table(Path(landmarks[number]))
            set_anatomy = (table, anatomy)
            described["landmarks"] = str(landmarks[number])
        try:
            written[label] = write_screening(
                samples,
                images,
                model,
                folder,
                threshold=threshold,
                chunk_size=chunk_size,
                title=label,
                sheets_dir=folder / "contact_sheets",
                provenance=described,
                anatomy=set_anatomy,
            )
        except ValueError as error:
            where = f" with {landmarks[number]}" if anatomy is not None else ""
            raise ValueError(f"screening {manifest_csv}{where}: {error}") from error
    return written


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
            f"{record['row']}  {record['image_id']}\nplausibility {record['plausibility']:.3f}"
            + (
                f"\nanatomy plausibility {record['anatomy_plausibility']:.3f}"
                if "anatomy_plausibility" in record
                else ""
            ),
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
    earlier, longer run left in out_dir are removed so every page present belongs to this
    manifest."""
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
