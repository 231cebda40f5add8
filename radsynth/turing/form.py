"""A self-contained offline HTML rating form for the clinical Turing test.

The paper ran its blinded test in Qualtrics, which many groups cannot license. This form is one
static file: the quartet images are embedded as data URIs, the page loads nothing from the
network (its Content-Security-Policy forbids it) and works from file://. Raters pick the real
image and rate every image 1-4 (the paper's Likert scale: 1 = unrealistic, 4 = fully
realistic); answers persist in the browser's localStorage and are exported as a tidy CSV.

The form is built from the group-blind images folder of `radsynth.turing.quartets` alone, so the
answer key never reaches the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path

import pandas as pd

from radsynth.core.atomic import write_text_atomic
from radsynth.core.html import fill_template, page_fields, script_json
from radsynth.turing.quartets import read_layout

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "rating_form.html"
#: The tidy table the form exports, one row per quartet x position.
RATINGS_COLUMNS = ["rater", "quartet", "position", "chosen_real", "rating"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORM_ID_HEX_DIGITS = 16


def read_png(path: Path) -> bytes:
    """The file's bytes, refusing anything that is not a PNG."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG file")
    return data


def form_id(layout: pd.DataFrame, images: list[bytes]) -> str:
    """Content hash of layout and images: two studies never share saved progress in a browser."""
    digest = hashlib.sha256(layout.to_csv(index=False).encode("utf-8"))
    for image in images:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()[:FORM_ID_HEX_DIGITS]


def form_data(layout: pd.DataFrame, images: list[bytes]) -> dict:
    """What the page's script needs: per quartet, its images as data URIs in position order."""
    uris = [f"data:image/png;base64,{base64.b64encode(image).decode('ascii')}" for image in images]
    quartets = [
        {"quartet": int(quartet), "images": [uris[i] for i in rows.index]}
        for quartet, rows in layout.groupby("quartet", sort=True)
    ]
    return {"form_id": form_id(layout, images), "quartets": quartets}


def write_rating_form(
    images_dir: Path, out_html: Path, *, title: str, instructions: str, provenance: dict
) -> str:
    """Build the form from an images folder written by `build_quartets`; returns the form id."""
    images_dir = Path(images_dir)
    layout = read_layout(images_dir)
    images = [read_png(images_dir / name) for name in layout["image"]]
    data = form_data(layout, images)
    fields = {
        **page_fields(title, provenance),
        "TITLE": html.escape(title),
        "INSTRUCTIONS": html.escape(instructions),
        "FORM_DATA": script_json(data),
    }
    page = fill_template(TEMPLATE_PATH.read_text(encoding="utf-8"), fields, name=str(TEMPLATE_PATH))
    write_text_atomic(Path(out_html), page)
    return data["form_id"]
