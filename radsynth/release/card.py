"""What a reader of the released data set sees first: the release settings (config section
`release`), figshare's article metadata (`figshare.json`) and the dataset card (`README.md`).

Neither file records a build time, so a rebuild from the same inputs gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from radsynth.core.settings.release import ReleaseSettings

#: figshare's licence ids (GET /v2/licenses): the released images keep the source atlas' licence.
FIGSHARE_LICENCES = {"CC BY 4.0": 1}
#: Provenance keys left out of the package: a build time would make every rebuild differ.
UNSTABLE_PROVENANCE = ("created_utc",)


def figshare_metadata(settings: ReleaseSettings) -> dict[str, Any]:
    """The article's metadata as figshare's create-article call takes it."""
    authors = [
        {"name": author.name, **({"orcid_id": author.orcid} if author.orcid else {})}
        for author in settings.authors
    ]
    return {
        "title": settings.title,
        "description": settings.description,
        "keywords": list(settings.keywords),
        "categories": list(settings.categories),
        "license": FIGSHARE_LICENCES[settings.licence],
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
    sample_sets: pd.DataFrame,
    counts: pd.DataFrame,
    gate: Mapping[str, Any],
    encoder: Mapping[str, str],
    config_values: Mapping[str, Any],
    provenance: Mapping[str, str],
    files: Mapping[str, str],
) -> str:
    """README.md of the package: what the images are, how they were made, screened and checked,
    the files, the licence and how to cite. `sample_sets` has one row per released checkpoint;
    `files` maps each file of the package to what it holds."""
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
        "A denoising diffusion probabilistic model (DDPM) was trained on the radiographs of "
        f"{settings.source_atlas}, as in "
        "the publication below, and sampled at these checkpoints (training step = checkpoint "
        "number x "
        f"checkpoint interval):",
        markdown_table(sample_sets),
        "Settings of the run (config keys):",
        markdown_table(settings_table),
        "## Screening",
        "An automated plausibility screen proposed images for exclusion and reviewers decided; an "
        "image reviewers "
        f"disagreed on was excluded. Of {int(total['generated'])} generated images, "
        f"{int(total['excluded'])} were "
        f"excluded ({int(total['excluded_by_reviewers'])} by reviewers, "
        f"{int(total['excluded_by_screen'])} by the "
        f"screen alone) and {int(total['kept'])} are released (`counts.csv`, the paper's Table "
        "S1):",
        markdown_table(counts),
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
        f"{settings.licence}, the licence of {settings.source_atlas}, whose images the model "
        "learnt from.",
        "## How to cite",
        settings.citation,
        "## Provenance",
        markdown_table(
            pd.DataFrame({"key": list(shown_provenance), "value": list(shown_provenance.values())})
        ),
    ]
    return "\n\n".join(sections) + "\n"
