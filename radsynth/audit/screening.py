"""The screening manifest and the merged screening table: their columns, reader and writer, the
merge of reviewers' copies, and the counts of the paper's Table S1 (generated, excluded, kept per
checkpoint). The file format the merge and release rules read, so it imports no torch: scoring
the images and writing the manifests is `radsynth.audit.scoring`'s job.

Reviewers fill `decision` (include, exclude or blank; case and surrounding spaces do not
matter), `reason` and `reviewer` in copies of the manifest, for any subset of rows, and place the
copies back; `radsynth.audit.reviewer_files` reads them, as it reads the memorization verdicts
(one decision per reviewer and image: see there why). In the merge a person's decision wins
over the screen's proposal; an image reviewers decide differently is listed as a conflict and
is excluded (the conservative choice: a set released as anatomically plausible loses one image
rather than keeping one that somebody found implausible).

Where the atlas has keypoints, the manifest also carries the anatomical screen
(`radsynth.audit.anatomy_screen`: ANATOMY_COLUMNS after the plausibility scores) and
`proposed_reason` after `proposed`; a manifest has all of these columns or none. `propose` is
the screen's proposal: exclude where the plausibility OR the anatomy plausibility is below the
threshold. Each is a tail share of real images (held-out ones for the anatomy), so a real-like
image is proposed with a chance of about the threshold per screen, and an image either screen
finds beyond nearly every real image reaches a person, the reason naming which screen and which
anatomical flags. Not Fisher's combined plausibility (kept as a column, to order images): it
lets a clean anatomy outvote a plausibility outlier (plausibility 0.04 with anatomy 1.0 combines
to 0.17), and it is 0 wherever either is. Nor a raw flag: the range flag, over 11 measures, was
raised on 10 of 15 clean held-out demo images (radsynth.audit.screen_evaluation measures each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radsynth.audit.reviewer_files import ReviewerFileFormat, disputed, read_reviewer_files
from radsynth.core.figures import save_figure
from radsynth.core.tables import read_table, write_table

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
#: The anatomical screen's columns, all present or none (an atlas without keypoints, or the
#: `screen` command, screens without them).
#: Columns `radsynth.audit.anatomy_screen.add_anatomy_columns` adds to a screening manifest.
ANATOMY_COLUMNS = (
    "anatomy_min_confidence",
    "anatomy_mean_confidence",
    "anatomy_low_confidence",
    "anatomy_out_of_order",
    "anatomy_out_of_range",
    "anatomy_score",
    "anatomy_plausibility",
    "anatomy_reason",
    "combined_plausibility",
)


ANATOMY_MANIFEST_COLUMNS = (*ANATOMY_COLUMNS, "proposed_reason")
#: Columns read as text (pandas would read blanks as NaN and ids like "0001" as numbers).
TEXT_COLUMNS = (
    "image_id",
    "checkpoint",
    "shard",
    "nearest_real_id",
    "proposed",
    *REVIEW_COLUMNS,
    "anatomy_reason",
    "proposed_reason",
)
MANIFEST_NAME = "screening_manifest.csv"
#: A reviewed copy of the manifest, as the merge reads it.
REVIEWED_MANIFEST = ReviewerFileFormat(
    item="image",
    item_columns=("image_id",),
    answer_column="decision",
    answers=(INCLUDE, EXCLUDE),
    note_column="reason",
    expected=(
        f"a reviewed manifest is a copy of {MANIFEST_NAME} with decision, reason and reviewer "
        f"filled in"
    ),
)


# ----------------------------------------------------------------------------- the manifest


def manifest_columns(columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the manifest's columns in order, those `columns` lacks): MANIFEST_COLUMNS, with the
    ANATOMY_MANIFEST_COLUMNS (after the scores, `proposed_reason` after `proposed`) when
    `columns` has any of them."""
    with_anatomy = any(column in columns for column in ANATOMY_MANIFEST_COLUMNS)
    ordered = list(MANIFEST_COLUMNS)
    if with_anatomy:
        proposed = MANIFEST_COLUMNS.index("proposed")
        ordered = [
            *MANIFEST_COLUMNS[:proposed],
            *ANATOMY_COLUMNS,
            "proposed",
            "proposed_reason",
            *MANIFEST_COLUMNS[proposed + 1 :],
        ]
    return ordered, [column for column in ordered if column not in columns]


def propose(manifest: pd.DataFrame, threshold: float) -> tuple[np.ndarray, list[str]]:
    """The screen's proposal per row and why (see the module docstring): exclude where
    `plausibility` or, when the manifest has it, `anatomy_plausibility` is below `threshold`;
    the reason names each screen below it, with the anatomical flags raised."""
    audit = manifest["plausibility"].to_numpy(dtype=float)
    anatomy = (
        manifest["anatomy_plausibility"].to_numpy(dtype=float)
        if "anatomy_plausibility" in manifest.columns
        else np.full(len(manifest), np.inf)
    )
    flags = (
        manifest["anatomy_reason"].astype(str).tolist()
        if "anatomy_reason" in manifest.columns
        else [""] * len(manifest)
    )
    reasons = []
    for plausibility, anatomy_plausibility, flagged in zip(audit, anatomy, flags, strict=True):
        parts = []
        if plausibility < threshold:
            parts.append(f"plausibility {plausibility:.3f} < {threshold:g}")
        if anatomy_plausibility < threshold:
            parts.append(
                f"anatomy plausibility {anatomy_plausibility:.3f} < {threshold:g}"
                + (f": {flagged}" if flagged else "")
            )
        reasons.append("; ".join(parts))
    proposed = np.where([bool(reason) for reason in reasons], EXCLUDE, INCLUDE)
    return proposed, reasons


def write_manifest(manifest: pd.DataFrame, out_dir: Path, provenance: Mapping[str, str]) -> Path:
    """out_dir/MANIFEST_NAME: the manifest's columns in order, blank review columns to fill."""
    columns, missing = manifest_columns(manifest.columns)
    if missing:
        raise ValueError(f"screening manifest lacks column(s) {', '.join(missing)}")
    path = Path(out_dir) / MANIFEST_NAME
    write_table(manifest.loc[:, columns], path, provenance=provenance)
    return path


def screened_manifests(out_dir: Path) -> list[Path]:
    """The manifests `radsynth.audit.scoring.screen_gathered_sets` wrote in out_dir, in path
    order."""
    found = sorted(Path(out_dir).glob(f"*/*/{MANIFEST_NAME}"))
    if not found:
        raise ValueError(f"{out_dir}: holds no <sample set>/<checkpoint>/{MANIFEST_NAME}")
    return found


def read_manifest(path: Path, *, as_text: bool = False) -> pd.DataFrame:
    """A screening manifest as written, blanks kept as empty text; with `as_text` every field is
    the text written (a review page's export repeats it exactly)."""
    dtype = str if as_text else {column: str for column in TEXT_COLUMNS}
    frame = read_table(Path(path), dtype=dtype, keep_default_na=False)
    _, missing = manifest_columns(frame.columns)
    if missing:
        raise ValueError(
            f"{path}: not a screening manifest ({MANIFEST_NAME}), missing column(s) "
            f"{', '.join(missing)}"
        )
    return frame


# ----------------------------------------------------------------------------- reviews


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
    # The manifest is an output, rewritten by the next run: decisions there would be lost.
    decision = manifest["decision"]
    inline = decision.notna() & (decision.astype(str).str.strip() != "")
    if inline.any():
        raise ValueError(
            f"screening manifest row {manifest.loc[inline, 'row'].iloc[0]}: a decision is filled "
            f"in the manifest itself; reviewers fill copies of it, placed in the reviews folder"
        )
    decisions = read_reviewer_files(
        reviewed_files, REVIEWED_MANIFEST, {(image,) for image in ids}, "the screening manifest"
    )
    by_image = decisions.groupby("image_id", sort=False)
    conflicted = {image for (image,) in disputed(decisions, REVIEWED_MANIFEST)}
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
    merged table, the reviewers' conflicts and the Table S1 counts (table and figure); returns the
    counts."""
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
