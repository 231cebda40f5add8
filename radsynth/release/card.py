"""What a reader of the released data set sees first: the release settings (config section
`release`), figshare's article metadata (`figshare.json`) and the dataset card (`README.md`).

What the images derive from (the data sentence, the licence, how to credit the data) is a fact of
the data source the run used (`data.source`): fixed for the atlases radsynth knows, stated by the
user for their own images (`data.local`). A release must not name another atlas or licence than
the one its model learnt from. How the images were screened is counted from
the merged screening table, never taken from the config.

Neither file records a build time, so a rebuild from the same inputs gives the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from radsynth.anatomy.tables import (
    ANGLE_MEASURE,
    BASELINE_ROW,
    CURVATURE_MEASURE,
    FLOOR_SET,
    MODEL_ROW,
    read_fidelity_table,
    read_landmark_summary,
    read_two_sample_table,
    read_utility_summary,
)
from radsynth.audit.screening import AUTOMATED, EXCLUDE
from radsynth.core.config import load_settings
from radsynth.core.settings.data import LocalOrigin, ReleaseLicence
from radsynth.core.settings.release import ReleaseSettings

#: figshare's licence ids (GET /v2/licenses), for every licence a release can carry.
FIGSHARE_LICENCES: dict[ReleaseLicence, int] = {"CC BY 4.0": 1}
#: Provenance keys left out of the package: a build time would make every rebuild differ.
UNSTABLE_PROVENANCE = ("created_utc",)
#: The method the pipeline follows, named where the card says how the images were made.
METHOD = (
    "Barr et al., *Expert Validation of Synthetic Cervical Spine Radiographs Generated with a "
    "Denoising Diffusion Probabilistic Model*"
)


@dataclass(frozen=True)
class DataOrigin:
    """The images a data source holds, as the card and figshare state them."""

    images: str  # what the images are: completes "The model learnt from the N images of"
    licence: ReleaseLicence  # the release's licence
    licence_reason: str  # why the release carries that licence
    citation: str  # how to credit the data


#: `data.source` -> what its images are. CSXA's licence: the paper's section 2.7 (Ethical
#: Considerations); its citations: the paper's references 23 and 24.
DATA_ORIGINS = {
    "demo": DataOrigin(
        images=(
            "the radsynth procedural phantom atlas, lateral cervical-spine phantoms drawn by "
            "radsynth's own code (`radsynth.demo.phantom`), not radiographs of any person"
        ),
        licence="CC BY 4.0",
        licence_reason=(
            "the licence radsynth gives the releases of its demo: the phantoms the model learnt "
            "from are radsynth's own drawings and hold no one else's images"
        ),
        citation=(
            "the radsynth procedural phantom atlas (`radsynth.demo.phantom`), at the code "
            "revision under Provenance below."
        ),
    ),
    "csxa": DataOrigin(
        images=(
            "the Cervical Spine X-ray Atlas (CSXA) V3.0, lateral cervical-spine radiographs "
            "released under CC BY 4.0 (Science Data Bank, doi:10.57760/sciencedb.15391)"
        ),
        licence="CC BY 4.0",
        licence_reason=(
            "the licence of the Cervical Spine X-ray Atlas (CSXA) V3.0, whose images the model "
            "learnt from; it asks that CSXA be credited, as below"
        ),
        citation=(
            "Ran Y. Cervical Spine X-ray Atlas (CSXA) V3.0. Science Data Bank; 2024. "
            "doi:10.57760/sciencedb.15391. Ran Y, Qin W, Qin C, et al. A high-quality dataset "
            "featuring classified and annotated cervical spine X-ray atlas. Sci Data. "
            "2024;11(1):625."
        ),
    ),
}


#: Why a release of the user's own images carries the licence they stated.
LOCAL_LICENCE_REASON = (
    "the licence stated for the images the model learnt from by whoever configured this run "
    "(`data.local.licence`)"
)


def data_origin(data: Mapping[str, Any]) -> DataOrigin:
    """The origin of the images of config section `data` (at least `source`, and for `local`
    the `data.local` keys of `LocalOrigin`): a known atlas's fixed facts, or what the user stated;
    any other source cannot be released."""
    source = data["source"]
    if source == "local":
        local = load_settings(LocalOrigin, data.get("local"), "data.local")
        return DataOrigin(
            images=local.description,
            licence=local.licence,
            licence_reason=LOCAL_LICENCE_REASON,
            citation=local.citation,
        )
    if source not in DATA_ORIGINS:
        raise ValueError(
            f"data.source {source!r}: radsynth knows no licence or citation for it "
            f"(known: {', '.join([*DATA_ORIGINS, 'local'])}), so its release cannot say where "
            "its images come from"
        )
    return DATA_ORIGINS[source]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def data_sentence(origin: DataOrigin, n_real_images: int) -> str:
    """What the model learnt from, with the number of atlas images the privacy gate read."""
    return f"The model learnt from the {n_real_images} images of {origin.images}."


def screening_sentence(merged: pd.DataFrame) -> str:
    """Who decided the merged screening table's images and who excluded which: people (rows with
    a reviewer in `decided_by`) or the automated screen alone."""
    generated = len(merged)
    reviewed = merged["decided_by"] != AUTOMATED
    excluded = merged["final_decision"] == EXCLUDE
    n_reviewed = int(reviewed.sum())
    reviewers = {
        reviewer for ids in merged.loc[reviewed, "decided_by"] for reviewer in ids.split(";")
    }
    by_people, by_screen = int((excluded & reviewed).sum()), int((excluded & ~reviewed).sum())
    disputed = int((excluded & merged["conflict"]).sum())
    if n_reviewed == 0:
        decided = (
            "Nobody reviewed the images: the automated plausibility screen alone decided all "
            f"{generated}."
        )
    else:
        rest = (
            "none was decided by the screen alone"
            if n_reviewed == generated
            else f"the screen alone decided the other {generated - n_reviewed}"
        )
        decided = (
            "An automated plausibility screen proposed images for exclusion; people reviewed "
            f"{'all' if n_reviewed == generated else f'{n_reviewed} of the'} {generated} "
            f"generated images ({plural(len(reviewers), 'reviewer')}) and {rest}."
        )
    disagreed = f", {disputed} of them because reviewers disagreed" if disputed else ""
    n_excluded = by_people + by_screen
    n_kept = generated - n_excluded
    return (
        f"{decided} Of {generated} generated images, {n_excluded} "
        f"{'was' if n_excluded == 1 else 'were'} excluded ({by_people} by reviewers{disagreed}, "
        f"{by_screen} by the screen alone) and {n_kept} {'is' if n_kept == 1 else 'are'} released."
    )


#: The card's words when the atlas has no keypoints.
ANATOMY_SKIPPED = (
    "The anatomy stage was skipped: the atlas has no keypoints (no inputs for a landmark model), "
    "so no landmark, anatomical-fidelity, two-sample or utility result is reported."
)


@dataclass(frozen=True)
class AnatomyFiles:
    """The anatomy stage's tables the card reads."""

    landmark_summary: Path  # held-out MRE of the landmark model and the mean-shape baseline
    fidelity: Path  # W1 and chi-square of each set's geometry, and the real-vs-real floor's
    two_sample: Path  # two-sample AUROC per FID checkpoint
    utility: Path  # students' held-out MRE per training set (mean, std over seeds)


def one_row(table: pd.DataFrame, selected: pd.Series, path: Path, what: str) -> pd.Series:
    """The single row of `table` that `selected` marks; anything else names the file and row."""
    rows = table[selected]
    if len(rows) != 1:
        raise ValueError(f"{path}: expected one row of {what}, found {len(rows)}")
    return rows.iloc[0]


def mre_words(row: pd.Series) -> str:
    """A held-out MRE in px, and in mm where the images had a pixel spacing."""
    millimetres = f" ({row['mre_mm']:.2f} mm)" if math.isfinite(row["mre_mm"]) else ""
    return f"{row['mre_px']:.2f} px{millimetres}"


def student_words(row: pd.Series) -> str:
    """A students' mean held-out MRE, with its std when more than one seed trained."""
    spread = f" +/- {row['mre_px_std']:.2f}" if math.isfinite(row["mre_px_std"]) else ""
    return f"{row['mre_px_mean']:.2f}{spread} px"


def checkpoint_anatomy(
    sample_set: str,
    checkpoint: str,
    step: int,
    fidelity: pd.DataFrame,
    two_sample: pd.DataFrame,
    files: AnatomyFiles,
) -> str:
    """One released checkpoint's C2-C7 angle W1, curvature chi-square p (where present) and the
    two-sample AUROC of the FID checkpoint nearest in training step."""
    of_set = (fidelity["set"] == sample_set) & (fidelity["step"] == step)
    where = f"set {sample_set!r} at step {step}"
    angle = one_row(
        fidelity, of_set & (fidelity["measure"] == ANGLE_MEASURE), files.fidelity, where
    )
    words = [f"C2-C7 angle W1 {angle['w1']:.2f} degrees"]
    curvature = fidelity[of_set & (fidelity["measure"] == CURVATURE_MEASURE)]
    if len(curvature) and math.isfinite(curvature["chi2_p"].iloc[0]):
        words.append(f"curvature-class chi-square p {curvature['chi2_p'].iloc[0]:.2g}")
    if len(two_sample):
        nearest = two_sample.loc[(two_sample["step"] - step).abs().idxmin()]
        words.append(
            f"two-sample AUROC {nearest['auroc']:.2f} ({nearest['level']:.0%} interval "
            f"{nearest['auroc_low']:.2f}-{nearest['auroc_high']:.2f}, FID checkpoint at step "
            f"{int(nearest['step'])})"
        )
    return f"{sample_set}/{checkpoint} (step {step}): {', '.join(words)}"


def anatomy_paragraph(files: AnatomyFiles | None, sample_sets: pd.DataFrame) -> str:
    """The card's anatomy paragraph, every number read from the anatomy stage's tables through
    their readers (`radsynth.anatomy.tables`): the landmark model against the mean shape, each
    released checkpoint (`sample_sets`: columns sample_set, checkpoint, training_step) against
    the real-vs-real floor, and the utility result; for an atlas without keypoints (`files`
    None) that the stage was skipped."""
    if files is None:
        return ANATOMY_SKIPPED
    summary = read_landmark_summary(files.landmark_summary)
    model, baseline = (
        one_row(summary, summary["predictor"] == name, files.landmark_summary, f"{name!r}")
        for name in (MODEL_ROW, BASELINE_ROW)
    )
    fidelity = read_fidelity_table(files.fidelity)
    floor = one_row(
        fidelity,
        (fidelity["set"] == FLOOR_SET) & (fidelity["measure"] == ANGLE_MEASURE),
        files.fidelity,
        f"{FLOOR_SET!r} {ANGLE_MEASURE}",
    )
    two_sample = read_two_sample_table(files.two_sample).sort_values("step", ignore_index=True)
    checkpoints = [
        checkpoint_anatomy(
            row.sample_set, row.checkpoint, int(row.training_step), fidelity, two_sample, files
        )
        for row in sample_sets.itertuples(index=False)
    ]
    utility = read_utility_summary(files.utility)
    real_only, synthetic_only, combined = (
        one_row(
            utility,
            (utility["real_fraction"] == fraction) & (utility["synthetic"] == synthetic),
            files.utility,
            what,
        )
        for fraction, synthetic, what in (
            (1.0, False, "the real-only students"),
            (0.0, True, "the synthetic-only students"),
            (1.0, True, "the real + synthetic students"),
        )
    )
    return (
        "A landmark model trained on the atlas's own vertebral keypoints (the split's train "
        f"images) finds them on the {int(model['n_images'])} held-out real images with a mean "
        f"radial error (MRE) of {mre_words(model)}, against {mre_words(baseline)} for the mean "
        "shape of the train images. The same model on each released checkpoint's images, against "
        "the held-out real images (Wasserstein-1 distance W1; two disjoint halves of the real "
        f"atlas are {floor['w1']:.2f} degrees apart in C2-C7 angle, the real-vs-real floor): "
        f"{'; '.join(checkpoints)}. A two-sample AUROC of 0.5 means a classifier cannot tell "
        "the synthetic images from real ones. Students trained on synthetic images alone reach "
        f"a held-out MRE of {student_words(synthetic_only)} and on real plus synthetic images "
        f"{student_words(combined)}, against {student_words(real_only)} on the real images alone "
        f"(mean +/- std over {plural(int(real_only['seeds']), 'seed')}); the synthetic images' "
        "landmarks are the landmark model's predictions, so these results are bounded by that "
        f"teacher ({model['mre_px']:.2f} px)."
    )


def figshare_metadata(
    settings: ReleaseSettings, origin: DataOrigin, *, data: str, screening: str
) -> dict[str, Any]:
    """The article's metadata as figshare's create-article call takes it; the description ends
    with the data and screening sentences, so it states what the card states."""
    authors = [
        {"name": author.name, **({"orcid_id": author.orcid} if author.orcid else {})}
        for author in settings.authors
    ]
    return {
        "title": settings.title,
        "description": f"{settings.description}\n\n{data} {screening}",
        "keywords": list(settings.keywords),
        "categories": list(settings.categories),
        "license": FIGSHARE_LICENCES[origin.licence],
        "authors": authors,
        "defined_type": "dataset",
    }


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of a frame's columns and rows, values as written."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def shown_value(value: Any) -> str:
    """A config value as YAML would show a scalar, and as JSON a list or mapping."""
    return (
        json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else str(value)
    )


def dataset_card(
    settings: ReleaseSettings,
    *,
    origin: DataOrigin,
    data: str,
    screening: str,
    anatomy: str,
    sample_sets: pd.DataFrame,
    counts: pd.DataFrame,
    gate: Mapping[str, Any],
    encoder: Mapping[str, str],
    config_values: Mapping[str, Any],
    provenance: Mapping[str, str],
    files: Mapping[str, str],
) -> str:
    """README.md of the package: what the images are, how they were made, screened and checked,
    the files, the licence and how to cite. `data` and `screening` are `data_sentence` and
    `screening_sentence`, `anatomy` `anatomy_paragraph`; `sample_sets` has one row per released
    checkpoint; `files` maps each file of the package to what it holds."""
    total = counts[counts["checkpoint"] == "total"].iloc[0]
    settings_table = pd.DataFrame(
        {
            "key": list(config_values),
            "value": [shown_value(value) for value in config_values.values()],
        }
    )
    shown_provenance = {
        key: value for key, value in provenance.items() if key not in UNSTABLE_PROVENANCE
    }
    sections = [
        f"# {settings.title}",
        settings.description,
        "## Contents",
        f"{int(total['kept'])} synthetic lateral cervical-spine radiographs, 8-bit grayscale PNG, "
        "left-facing "
        "(anterior on the left; images the model drew facing right were mirrored, see `flipped` "
        "in `images.csv`).",
        markdown_table(pd.DataFrame({"file": list(files), "content": list(files.values())})),
        "## How the images were made",
        f"{data} A denoising diffusion probabilistic model (DDPM) was trained on them with "
        f"radsynth, after {METHOD}, and sampled at these checkpoints (training step = checkpoint "
        "number x checkpoint interval):",
        markdown_table(sample_sets),
        "Settings of the run (config keys):",
        markdown_table(settings_table),
        "## Screening",
        f"{screening} Per checkpoint (`counts.csv`, the paper's Table S1; an image reviewers "
        "disagree on is excluded):",
        markdown_table(counts),
        "## Anatomy",
        anatomy,
        "## Privacy",
        f"Before packaging, every released image was checked against the {gate['n_real_images']} "
        "real atlas images "
        "(`privacy_gate.json`): none is pixel-identical to a real image as stored or mirrored, "
        "and each is more "
        f"than {gate['near_duplicate_patch_distance']} in patch distance (pixels in [0, 1], the "
        "largest RMS "
        f"difference of a 4 x 4 grid of patches) from its nearest real image. The closest image, "
        f"{gate['min_patch_distance_image_id']}, is {gate['min_patch_distance']} from "
        f"{gate['min_patch_distance_real_id']}; the highest cosine similarity to a real image is "
        f"{gate['max_similarity']} ({gate['max_similarity_image_id']}).",
        "Nearest real images and the memorization audit's pairs (`memorization_pairs.zip`, the "
        "most similar "
        "real x synthetic pairs with their patch distances, shown side by side for review) come "
        "from the "
        f"{encoder['encoder']} encoder (weights {encoder['encoder_weights']}), cosine similarity "
        "of its embeddings.",
        "## Licence",
        f"{origin.licence}, {origin.licence_reason}.",
        "## How to cite",
        "Cite this data set by the DOI figshare gives it on publication: "
        f"{', '.join(author.name for author in settings.authors)}. {settings.title}. figshare.",
        f"Credit the data the model learnt from: {origin.citation}",
        "## Provenance",
        markdown_table(
            pd.DataFrame({"key": list(shown_provenance), "value": list(shown_provenance.values())})
        ),
    ]
    return "\n\n".join(sections) + "\n"
