"""The release package: the kept synthetic images, their metadata and the audit's evidence, laid out
for figshare (one article, files uploaded flat, each below figshare's per-file limit).

Layout of `out_dir` (the uploader, `radsynth.release.figshare`, publishes exactly the files
`checksums.md5` lists: all but itself):

    README.md                dataset card (`radsynth.release.card`)
    figshare.json            the article's metadata
    images_partNNN.zip       the kept images, left-facing 8-bit gray PNG, as
                             images/<sample set>-<checkpoint>/<image_id>.png, split so that each
                             archive is at most release.max_archive_bytes
    images.csv               one row per image: how it was made and screened, its archive and path
    counts.csv               the paper's Table S1: generated, excluded and kept per checkpoint
    memorization_pairs.zip   the memorization audit's pairs.csv and pairs_pageNN.png, under
                             memorization_pairs/: evidence for review, not part of the data
    privacy_gate.json        what the privacy gate (`radsynth.release.privacy`) checked, and the
                             result
    checksums.md5            `md5sum -c` format, one line per other file: the upload list

The PNG files are encoded in memory and written straight into the archives: no loose image
folder exists, in the package or beside it. Archives hold their members uncompressed (PNG is
compressed already), in path order, with a fixed time stamp and mode, and no file records a
build time, so a rebuild from the same inputs is byte-identical.

The privacy gate runs over the images to be packaged before anything is written; the package
is built in a hidden folder renamed onto `out_dir` only when complete.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from radsynth.audit.screening import AUTOMATED, EXCLUDE, INCLUDE, counts_table
from radsynth.core.atomic import atomic_directory, write_json_atomic, write_text_atomic
from radsynth.core.config import load_settings
from radsynth.core.images import png_bytes
from radsynth.core.settings.release import ReleaseSettings
from radsynth.core.tables import read_table, read_table_provenance
from radsynth.release.card import (
    AnatomyFiles,
    anatomy_paragraph,
    data_origin,
    data_sentence,
    dataset_card,
    figshare_metadata,
    screening_sentence,
)
from radsynth.release.privacy import Candidate, check_privacy
from radsynth.sample.store import LeftFacingSamples, open_left_facing
from radsynth.train.labels import checkpoint_label

#: Columns of the merged screening table the package reads.
MERGED_COLUMNS = (
    "image_id",
    "checkpoint",
    "seed",
    "flipped",
    "final_decision",
    "decided_by",
    "conflict",
)
IMAGE_COLUMNS = (
    "image_id",
    "sample_set",
    "checkpoint",
    "training_step",
    "sampler",
    "sampler_steps",
    "weights",
    "seed",
    "flipped",
    "screening_decision",
    "decided_by",
    "archive",
    "path",
)
IMAGES_CSV, COUNTS_CSV, README = "images.csv", "counts.csv", "README.md"
PAIRS_ARCHIVE, PAIRS_FOLDER = "memorization_pairs.zip", "memorization_pairs"
GATE_JSON, FIGSHARE_JSON, CHECKSUMS = "privacy_gate.json", "figshare.json", "checksums.md5"
#: The memorization audit's files, in its output folder.
PAIRS_CSV, NEAREST_REAL_CSV = "pairs.csv", "nearest_real.csv"
#: Images read from the sample stores at once: bounds memory, not results.
READ_BLOCK = 256
#: Zip's earliest time stamp, on every member: archives must not change with the build time.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: Bytes a stored zip member costs beside its data and twice its name: local header (30), central
#: directory entry (46) and its zip64 offset field (12), which zipfile adds past 4 GiB.
ZIP_MEMBER_OVERHEAD = 30 + 46 + 12
#: End of central directory (22) plus the zip64 end record and locator (56 + 20) past 4 GiB.
ZIP_END = 22 + 56 + 20


class Gathered(NamedTuple):
    """One released checkpoint's samples and the manifest that names them."""

    manifest_csv: Path
    samples: LeftFacingSamples


# ----------------------------------------------------------------------------- inputs


def read_merged(path: Path) -> pd.DataFrame:
    """The audit's merged screening table; unknown decisions and repeated ids fail naming the
    row."""
    text = {column: str for column in ("image_id", "checkpoint", "final_decision", "decided_by")}
    frame = read_table(Path(path), dtype=text, keep_default_na=False)
    missing = [column for column in MERGED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: not a merged screening table, missing column(s) {', '.join(missing)}"
        )
    unknown = ~frame["final_decision"].isin([INCLUDE, EXCLUDE])
    if unknown.any():
        row = frame[unknown].iloc[0]
        raise ValueError(
            f"{path}: image {row['image_id']}: final_decision {row['final_decision']!r} is not "
            f"{INCLUDE} or {EXCLUDE}"
        )
    if frame["conflict"].dtype != bool:
        raise ValueError(f"{path}: column conflict holds other values than True and False")
    repeated = frame["image_id"][frame["image_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"{path}: image id {repeated.iloc[0]!r} has more than one row")
    return frame


def split_label(seed_label: str) -> tuple[str, str, int]:
    """("large", "ckpt004", 4) of the seed label "large/ckpt004" the stores and merged.csv
    record."""
    sample_set, _, label = str(seed_label).partition("/")
    match = re.fullmatch(r"ckpt(\d+)", label)
    if not sample_set or not match or checkpoint_label(int(match[1])) != label:
        raise ValueError(f"checkpoint {seed_label!r} is not '<sample set>/ckptNNN'")
    return sample_set, label, int(match[1])


def open_gathered(manifests: Sequence[Path]) -> dict[str, Gathered]:
    """Seed label -> the gathered samples of each manifest, by the label its stores record."""
    gathered: dict[str, Gathered] = {}
    for manifest_csv in map(Path, manifests):
        samples = open_left_facing(manifest_csv)
        label = samples.samples.attrs.get("checkpoint")
        if label in gathered:
            raise ValueError(
                f"{manifest_csv}: its stores hold checkpoint {label!r}, as do those of "
                f"{gathered[label].manifest_csv}"
            )
        gathered[label] = Gathered(manifest_csv, samples)
    return gathered


def check_screened(
    merged: pd.DataFrame, gathered: Mapping[str, Gathered], merged_csv: Path
) -> None:
    """Every screened checkpoint has its manifest and every manifest was screened; each screened
    image is in its manifest with the same seed and flip (else the screen saw other images)."""
    unsampled = sorted(set(merged["checkpoint"]) - set(gathered))
    if unsampled:
        raise ValueError(
            f"{merged_csv}: screens images of checkpoint(s) {', '.join(unsampled)}, but no sample "
            f"manifest of them was given"
        )
    for label, (manifest_csv, samples) in gathered.items():
        rows = merged[merged["checkpoint"] == label]
        if rows.empty:
            raise ValueError(f"{manifest_csv}: checkpoint {label!r} has no row in {merged_csv}")
        absent = rows["image_id"][~rows["image_id"].isin(samples.manifest.index)]
        if len(absent):
            raise ValueError(f"{merged_csv}: image {absent.iloc[0]} is not in {manifest_csv}")
        recorded = samples.manifest.loc[rows["image_id"]]
        differs = (recorded["seed"].to_numpy() != rows["seed"].to_numpy()) | (
            recorded["flipped"].to_numpy(dtype=bool) != rows["flipped"].to_numpy(dtype=bool)
        )
        if differs.any():
            row, stored = rows.iloc[int(np.argmax(differs))], recorded.iloc[int(np.argmax(differs))]
            raise ValueError(
                f"{merged_csv}: image {row['image_id']} has seed {row['seed']}, "
                f"flipped {row['flipped']}, but {manifest_csv} records seed {stored['seed']}, "
                f"flipped {stored['flipped']}"
            )


def checked_counts(counts_csv: Path, merged: pd.DataFrame, merged_csv: Path) -> pd.DataFrame:
    """Table S1 as the audit wrote it, refused unless it is the count of `merged` (a stale file
    would misstate what the package holds)."""
    counts = read_table(Path(counts_csv), dtype={"checkpoint": str})
    expected = counts_table(merged)
    missing = [column for column in expected.columns if column not in counts.columns]
    if missing:
        raise ValueError(
            f"{counts_csv}: not a counts table, missing column(s) {', '.join(missing)}"
        )
    counts = counts.loc[:, list(expected.columns)]
    for position in range(max(len(counts), len(expected))):
        found = counts.iloc[position].astype(str).tolist() if position < len(counts) else None
        wanted = expected.iloc[position].astype(str).tolist() if position < len(expected) else None
        if found != wanted:
            raise ValueError(
                f"{counts_csv}: row {position + 1} is {found}, but {merged_csv} counts {wanted} "
                f"({', '.join(expected.columns)})"
            )
    return counts


def audit_encoder(memorization_dir: Path) -> dict[str, str]:
    """The encoder the memorization audit's pairs came from; nearest_real.csv must name the same."""
    pairs_csv, nearest_csv = (
        Path(memorization_dir) / PAIRS_CSV,
        Path(memorization_dir) / NEAREST_REAL_CSV,
    )
    pairs = read_table(
        pairs_csv, dtype={"encoder": str, "encoder_weights": str}, keep_default_na=False
    )
    if not {"encoder", "encoder_weights"} <= set(pairs.columns):
        raise ValueError(
            f"{pairs_csv}: lacks the columns encoder and encoder_weights of the memorization audit"
        )
    described = pairs.loc[:, ["encoder", "encoder_weights"]].drop_duplicates()
    if len(described) != 1:
        raise ValueError(f"{pairs_csv}: expected pairs of one encoder, found {len(described)}")
    encoder = described.iloc[0].to_dict()
    nearest = read_table_provenance(nearest_csv).get("encoder_name", encoder["encoder"])
    if nearest != encoder["encoder"]:
        raise ValueError(
            f"{nearest_csv}: nearest real images by encoder {nearest!r}, but {pairs_csv} pairs by "
            f"{encoder['encoder']!r}"
        )
    return encoder


# ----------------------------------------------------------------------------- the images


def kept_images(merged: pd.DataFrame, merged_csv: Path) -> pd.DataFrame:
    """The included rows with their path in the archives, in path order (the archives' order)."""
    kept = merged[merged["final_decision"] == INCLUDE]
    if kept.empty:
        by_screen = int((merged["decided_by"] == AUTOMATED).sum())
        raise ValueError(
            f"{merged_csv}: no image has final_decision {INCLUDE!r} ({by_screen} of "
            f"{len(merged)} excluded by the screen alone, the others by reviewers); there is "
            "nothing to release. Lower audit.screen.threshold (the screen then proposes fewer "
            "exclusions), or review the screening manifests (the review pages in "
            "results/audit/review/screening/) and place the reviewed manifests in the reviews "
            "folder (audit.reviews_folder): a person's decision wins over the screen"
        )
    paths = [
        f"images/{label.replace('/', '-')}/{image}.png"
        for label, image in zip(kept["checkpoint"], kept["image_id"])
    ]
    return kept.assign(path=paths).sort_values("path").reset_index(drop=True)


def left_facing_images(samples: LeftFacingSamples, ids: Sequence[str]) -> np.ndarray:
    """The images of `ids`, read together and mirrored where the manifest says."""
    rows = samples.manifest.loc[list(ids)]
    images = samples.samples.images(rows["global_index"].to_numpy())
    flipped = rows["flipped"].to_numpy(dtype=bool)
    images[flipped] = images[flipped][:, :, ::-1]
    return images


def iter_candidates(kept: pd.DataFrame, gathered: Mapping[str, Gathered]) -> Iterator[Candidate]:
    """The kept images in path order, READ_BLOCK rows of the table at a time."""
    for first in range(0, len(kept), READ_BLOCK):
        block = kept.iloc[first : first + READ_BLOCK]
        for label, rows in block.groupby(
            "checkpoint", sort=False
        ):  # rows of a label are contiguous
            images = left_facing_images(gathered[label].samples, rows["image_id"].tolist())
            yield from map(Candidate, rows["image_id"], rows["path"], images)


def zip_member(name: str) -> zipfile.ZipInfo:
    """A stored member with fixed time, mode and system: the archive's bytes depend on content
    only."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # unix, whatever the building machine
    info.external_attr = 0o644 << 16
    return info


def member_size(name: str, data: bytes) -> int:
    """Bytes a stored member adds to its archive, at most."""
    return ZIP_MEMBER_OVERHEAD + 2 * len(name.encode("utf-8")) + len(data)


def write_image_archives(
    candidates: Iterable[Candidate], out_dir: Path, max_bytes: int
) -> dict[str, str]:
    """images_partNNN.zip in out_dir, filled in order, a new part where the next image would take
    the current one past max_bytes; returns image id -> archive name."""
    archive_of: dict[str, str] = {}
    archive, part, used = None, 0, 0
    try:
        for candidate in candidates:
            data = png_bytes(candidate.pixels)
            size = member_size(candidate.file, data)
            if ZIP_END + size > max_bytes:
                raise ValueError(
                    f"{candidate.file}: {len(data)} bytes as PNG, {ZIP_END + size} as an archive "
                    f"of its own, more than release.max_archive_bytes {max_bytes}"
                )
            if archive is None or used + size > max_bytes:
                if archive is not None:
                    archive.close()
                part, used = part + 1, ZIP_END
                archive = zipfile.ZipFile(Path(out_dir) / f"images_part{part:03d}.zip", "w")
            archive.writestr(zip_member(candidate.file), data)
            used += size
            archive_of[candidate.image_id] = f"images_part{part:03d}.zip"
    finally:
        if archive is not None:
            archive.close()
    return archive_of


def write_pairs_archive(memorization_dir: Path, out_zip: Path) -> None:
    """memorization_pairs.zip: the audit's pairs.csv and montage pages, byte for byte."""
    memorization_dir = Path(memorization_dir)
    files = [memorization_dir / PAIRS_CSV, *sorted(memorization_dir.glob("pairs_page*.png"))]
    with zipfile.ZipFile(out_zip, "w") as archive:
        for file in files:
            archive.writestr(zip_member(f"{PAIRS_FOLDER}/{file.name}"), file.read_bytes())


# ----------------------------------------------------------------------------- tables and card


def checkpoint_table(
    gathered: Mapping[str, Gathered], kept: pd.DataFrame, checkpoint_every: int
) -> pd.DataFrame:
    """One row per released checkpoint: how its images were made, and how many are released."""
    rows = []
    for label in sorted(gathered):
        try:
            sample_set, checkpoint, number = split_label(label)
        except ValueError as exc:
            raise ValueError(f"{gathered[label].manifest_csv}: the stores' {exc}") from exc
        attrs = gathered[label].samples.samples.attrs
        rows.append(
            {
                "seed_label": label,
                "sample_set": sample_set,
                "checkpoint": checkpoint,
                "training_step": number * checkpoint_every,
                "sampler": attrs["sampler"],
                "sampler_steps": attrs["steps"],
                "weights": attrs["weights"],
                "released": int((kept["checkpoint"] == label).sum()),
            }
        )
    return pd.DataFrame(rows)


def image_table(
    kept: pd.DataFrame, checkpoints: pd.DataFrame, archive_of: Mapping[str, str]
) -> pd.DataFrame:
    """images.csv: each kept image, its checkpoint's sampling settings, its screening and its
    place."""
    made = checkpoints.drop(columns="released").rename(columns={"seed_label": "label"})
    table = kept.rename(
        columns={"checkpoint": "label", "final_decision": "screening_decision"}
    ).merge(made, on="label", how="left", validate="many_to_one")
    table["archive"] = table["image_id"].map(archive_of)
    return table.loc[:, list(IMAGE_COLUMNS)]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A plain CSV (no '#' lines: the card carries the provenance), readable by any tool."""
    write_text_atomic(path, frame.to_csv(index=False, lineterminator="\n"))


def file_descriptions(archive_of: Mapping[str, str]) -> dict[str, str]:
    """What each file of the package holds, for the card."""
    n_images = pd.Series(list(archive_of.values())).value_counts()
    parts = {
        name: f"{n_images[name]} images as images/<sample set>-<checkpoint>/<image_id>.png"
        for name in sorted(n_images.index)
    }
    return {
        README: "this card",
        **parts,
        IMAGES_CSV: "one row per image: " + ", ".join(IMAGE_COLUMNS),
        COUNTS_CSV: "generated, excluded and kept images per checkpoint (Table S1)",
        PAIRS_ARCHIVE: "the memorization audit: pairs.csv and pairs_pageNN.png",
        GATE_JSON: "the privacy gate's checks and result",
        FIGSHARE_JSON: "the figshare article's metadata",
    }


def write_checksums(folder: Path) -> list[str]:
    """checksums.md5 over every other file of the folder, in name order, as md5sum writes it;
    returns the names it lists."""
    files = sorted(path for path in Path(folder).iterdir() if path.name != CHECKSUMS)
    lines = []
    for file in files:
        with file.open("rb") as handle:
            lines.append(f"{hashlib.file_digest(handle, 'md5').hexdigest()}  {file.name}\n")
    write_text_atomic(Path(folder) / CHECKSUMS, "".join(lines))
    return [file.name for file in files]


# ----------------------------------------------------------------------------- the package


def build_package(
    out_dir: Path,
    *,
    merged_csv: Path,
    counts_csv: Path,
    manifests: Sequence[Path],
    memorization_dir: Path,
    atlas_h5: Path,
    settings: Mapping[str, Any],
    data: Mapping[str, Any],
    checkpoint_every: int,
    config_values: Mapping[str, Any],
    provenance: Mapping[str, str],
    anatomy: AnatomyFiles | None,
) -> list[str]:
    """Build the release package in `out_dir` (which must not exist or be empty) from the audit's
    merged screening table and counts, the released checkpoints' sample manifests, the
    memorization audit's folder (pairs.csv, pairs_pageNN.png, nearest_real.csv) and the atlas;
    `settings` is config section `release`, `data` the config's `data` keys that
    `radsynth.release.card.data_origin` reads (what the atlas is, its licence and citation),
    `config_values` the config keys the card shows, `anatomy` the anatomy stage's tables the
    card reads (None: the atlas has no keypoints and the stage was skipped).
    Returns the upload list: the file names checksums.md5 lists."""
    release = load_settings(ReleaseSettings, settings, "release")
    origin = data_origin(data)
    if (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, int)
        or checkpoint_every < 1
    ):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: not empty; remove it to build the package again")
    merged = read_merged(merged_csv)
    gathered = open_gathered(manifests)
    check_screened(merged, gathered, Path(merged_csv))
    counts = checked_counts(counts_csv, merged, Path(merged_csv))
    encoder = audit_encoder(memorization_dir)
    kept = kept_images(merged, Path(merged_csv))
    checkpoints = checkpoint_table(gathered, kept, checkpoint_every)
    anatomy_words = anatomy_paragraph(anatomy, checkpoints)
    gate = check_privacy(
        iter_candidates(kept, gathered),
        atlas_h5,
        Path(memorization_dir) / NEAREST_REAL_CSV,
        near_duplicate_patch_distance=release.near_duplicate_patch_distance,
    )
    with atomic_directory(out_dir) as staging:
        archive_of = write_image_archives(
            iter_candidates(kept, gathered), staging, release.max_archive_bytes
        )
        write_csv(image_table(kept, checkpoints, archive_of), staging / IMAGES_CSV)
        write_csv(counts, staging / COUNTS_CSV)
        write_pairs_archive(memorization_dir, staging / PAIRS_ARCHIVE)
        write_json_atomic(staging / GATE_JSON, gate)
        data, screening = data_sentence(origin, gate["n_real_images"]), screening_sentence(merged)
        write_json_atomic(
            staging / FIGSHARE_JSON,
            figshare_metadata(release, origin, data=data, screening=screening),
        )
        write_text_atomic(
            staging / README,
            dataset_card(
                release,
                origin=origin,
                data=data,
                screening=screening,
                anatomy=anatomy_words,
                sample_sets=checkpoints.drop(columns="seed_label"),
                counts=counts,
                gate=gate,
                encoder=encoder,
                config_values=config_values,
                provenance=provenance,
                files=file_descriptions(archive_of),
            ),
        )
        names = write_checksums(staging)
    return names
