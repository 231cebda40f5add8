"""Quality-control figure of the preprocessing stage.

Why: negative detection and keypoint mapping fail silently in numbers but loudly in pictures.
The figure shows random examples with their mapped keypoints and every inverted image by name,
so a reviewer can confirm each inversion at a glance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure, SubFigure
from PIL import Image

from radsynth.core.figures import save_figure
from radsynth.data.atlas import load_atlas

#: Legibility cap on the inverted-image panel (the stage's brief: show every one up to 600).
MAX_INVERTED_SHOWN = 600
#: Side of an inverted-image thumbnail in the mosaic, px.
THUMBNAIL_PX = 64
FIGURE_WIDTH_IN = 12.0
CAPTION_IN = 0.4
PANEL_TITLE_IN = 0.4
DPI = 150


@dataclass(frozen=True)
class QcContent:
    """Everything the figure shows, read from the atlas once."""

    examples: np.ndarray  # uint8 (n, size, size)
    example_names: list[str]
    example_keypoints: np.ndarray  # (n, n_labels, 2)
    inverted_thumbnails: np.ndarray  # uint8 (m, THUMBNAIL_PX, THUMBNAIL_PX)
    inverted_names: list[str]
    n_images: int
    n_inverted: int
    n_rejected: int
    provenance: dict[str, str]


def choose_examples(n_images: int, n_examples: int, seed: int) -> np.ndarray:
    """Sorted random indices (sorted: h5py reads fancy indices only in increasing order)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=min(n_examples, n_images), replace=False))


def read_qc_content(h5_path: Path, n_examples: int, seed: int) -> QcContent:
    """Only the shown images are read, so the figure costs the same for any atlas size."""
    with load_atlas(h5_path, lazy=True) as atlas:
        picked = choose_examples(len(atlas.source_names), n_examples, seed)
        inverted = np.flatnonzero(atlas.inverted)
        shown = inverted[:MAX_INVERTED_SHOWN]
        thumbnails = [_thumbnail(atlas.images[index], THUMBNAIL_PX) for index in shown]
        return QcContent(
            examples=atlas.images[picked] if picked.size else np.zeros((0, 1, 1), np.uint8),
            example_names=[atlas.source_names[index] for index in picked],
            example_keypoints=atlas.keypoints[picked],
            inverted_thumbnails=np.array(thumbnails, dtype=np.uint8).reshape(
                -1, THUMBNAIL_PX, THUMBNAIL_PX
            ),
            inverted_names=[atlas.source_names[index] for index in shown],
            n_images=len(atlas.source_names),
            n_inverted=int(inverted.size),
            n_rejected=int(atlas.attrs["n_rejected"]),
            provenance=atlas.provenance,
        )


def _thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(np.asarray(image)).resize((side, side), Image.Resampling.BILINEAR)
    )


def plot_preprocess_qc(h5_path: Path, out_png: Path, *, n_examples: int, seed: int) -> None:
    """Write the QC figure of a preprocessed atlas, provenance in the PNG metadata, atomically."""
    content = read_qc_content(Path(h5_path), n_examples, seed)
    figure = build_qc_figure(content, seed)
    save_figure(
        figure, out_png, title="radsynth preprocessing QC", provenance=content.provenance, dpi=DPI
    )


def caption(content: QcContent) -> str:
    shown = len(content.inverted_names)
    inverted = f"{content.n_inverted} inverted" + (
        f" ({shown} shown)" if shown < content.n_inverted else ""
    )
    record = content.provenance
    return (
        f"{content.n_images} images, {inverted}, {content.n_rejected} rejected  |  "
        f"config {record.get('config_hash', 'unknown')[:12]}  "
        f"code {record.get('code_revision', 'unknown')[:12]}"
    )


def mosaic_columns(n_tiles: int) -> int:
    """Near-square mosaic, 8 to 20 wide: big tiles for few images, names still legible for 600
    (20 x 30)."""
    return min(20, max(8, math.ceil(math.sqrt(n_tiles))))


def build_qc_figure(content: QcContent, seed: int) -> Figure:
    n_examples = len(content.example_names)
    example_columns = min(8, max(1, n_examples))
    example_rows = max(1, math.ceil(n_examples / example_columns))
    example_height = example_rows * (FIGURE_WIDTH_IN / example_columns + 0.25) + PANEL_TITLE_IN
    columns = mosaic_columns(len(content.inverted_names))
    tile_in = FIGURE_WIDTH_IN / columns
    mosaic_rows = math.ceil(len(content.inverted_names) / columns)
    inverted_height = max(
        0.8, mosaic_rows * tile_in + PANEL_TITLE_IN + 0.15
    )  # 0.15 in: bottom margin
    # A bare Figure (no pyplot): no global backend or figure registry touched by a library call.
    figure = Figure(figsize=(FIGURE_WIDTH_IN, CAPTION_IN + example_height + inverted_height))
    header, top, bottom = figure.subfigures(
        3, 1, hspace=0.0, height_ratios=[CAPTION_IN, example_height, inverted_height]
    )
    header.text(0.5, 0.5, caption(content), ha="center", va="center", fontsize=10)
    _draw_examples(top, content, example_columns, example_rows, seed, example_height)
    _draw_inverted(bottom, content, columns, tile_in, inverted_height)
    return figure


def _panel_title(panel: SubFigure, text: str, height_in: float) -> float:
    """Title centred in the panel's top PANEL_TITLE_IN; returns the panel fraction left below it."""
    below = 1.0 - PANEL_TITLE_IN / height_in
    panel.text(0.5, (1.0 + below) / 2, text, ha="center", va="center", fontsize=9)
    return below


def _draw_examples(
    panel: SubFigure, content: QcContent, columns: int, rows: int, seed: int, height_in: float
) -> None:
    title = f"{len(content.example_names)} random images (seed {seed}) with mapped keypoints"
    below = _panel_title(panel, title, height_in)
    grid = {"top": below, "bottom": 0.0, "left": 0.01, "right": 0.99, "hspace": 0.2, "wspace": 0.05}
    axes = panel.subplots(rows, columns, squeeze=False, gridspec_kw=grid).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, name, points in zip(
        axes, content.examples, content.example_names, content.example_keypoints
    ):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.scatter(points[:, 0], points[:, 1], s=3, c="red", linewidths=0)
        ax.set_title(name, fontsize=7)


def _draw_inverted(
    panel: SubFigure, content: QcContent, columns: int, tile_in: float, height_in: float
) -> None:
    names = content.inverted_names
    if not names:
        panel.text(0.5, 0.5, "No image was inverted.", ha="center", va="center", fontsize=9)
        return
    shown = "All" if len(names) == content.n_inverted else f"First {len(names)} of"
    title = f"{shown} {content.n_inverted} inverted images (after inversion), by source name"
    ax = panel.add_axes((0.0, 0.0, 1.0, _panel_title(panel, title, height_in)))
    ax.set_axis_off()
    ax.set_anchor("N")
    mosaic, label_px = inverted_mosaic(content.inverted_thumbnails, columns)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="antialiased", aspect="equal")
    longest = max(len(name) for name in names)
    font = float(
        np.clip(0.8 * tile_in * 72 / (0.6 * longest), 2.5, 7.0)
    )  # a name fills 80% of its cell
    cell = THUMBNAIL_PX + label_px
    for position, name in enumerate(names):
        row, column = divmod(position, columns)
        ax.text(
            column * cell + cell / 2,
            row * cell + label_px / 2,
            name,
            ha="center",
            va="center",
            fontsize=font,
        )


def inverted_mosaic(thumbnails: np.ndarray, columns: int) -> tuple[np.ndarray, int]:
    """Thumbnails tiled row by row on white, each under a white band for its name; one imshow
    for all."""
    label_px = THUMBNAIL_PX // 4
    cell = THUMBNAIL_PX + label_px
    rows = math.ceil(len(thumbnails) / columns)
    mosaic = np.full((rows * cell, columns * cell), 255, dtype=np.uint8)
    for position, thumbnail in enumerate(thumbnails):
        row, column = divmod(position, columns)
        top, left = row * cell + label_px, column * cell + label_px // 2
        mosaic[top : top + THUMBNAIL_PX, left : left + THUMBNAIL_PX] = thumbnail
    return mosaic, label_px
