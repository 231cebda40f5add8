"""Figure 4 violins: per-image means, group order, SIMULATED watermark, provenance metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from radsynth.core.figures import save_figure
from radsynth.turing import figures as turing_figures
from radsynth.turing.figures import group_order, per_image_means, plot_rating_violins
from radsynth.turing.ratings import RatingsError, simulate_ratings

MEANS = {"real": 3.323, "ckpt034": 3.228, "ckpt040": 3.258, "ckpt080": 3.320}  # paper, Results
PROVENANCE = {"code_revision": "abc123", "config_hash": "none"}


def key_frame(n_quartets: int) -> pd.DataFrame:
    groups = ["ckpt080", "real", "ckpt040", "ckpt034"]
    return pd.DataFrame(
        [
            {"quartet": q, "position": p, "group": groups[(p + q) % 4], "image": f"q{q}_p{p}.png"}
            for q in range(1, n_quartets + 1)
            for p in range(1, 5)
        ]
    )


def red_pixels(path: Path) -> int:
    """Pixels of the translucent red watermark: pink, red above green, green equal to blue."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((red - green > 30) & (np.abs(green - blue) < 15)).sum())


def test_group_order_puts_real_first() -> None:
    assert group_order(["ckpt080", "real", "ckpt034"]) == ["real", "ckpt034", "ckpt080"]
    assert group_order(["ckpt040", "ckpt034"]) == ["ckpt034", "ckpt040"]


def test_per_image_means_average_over_raters() -> None:
    key = key_frame(3)
    ratings = simulate_ratings(key, n_raters=5, seed=1, p_identify=0.3, mean_ratings=MEANS)
    images = per_image_means(ratings, key)
    expected = ratings.groupby(["quartet", "position"])["rating"].mean()
    assert images.set_index(["quartet", "position"])["mean_rating"].to_dict() == pytest.approx(
        expected.to_dict()
    )
    assert images["n_raters"].eq(5).all()
    assert images["image"].tolist() == key["image"].tolist()


def test_simulated_figure_is_watermarked_and_carries_provenance(tmp_path: Path) -> None:
    key = key_frame(20)
    ratings = simulate_ratings(key, n_raters=8, seed=4, p_identify=0.29, mean_ratings=MEANS)
    out = plot_rating_violins(
        ratings, key, tmp_path / "fig" / "violins.png", simulated=True, provenance=PROVENANCE
    )
    assert out == tmp_path / "fig" / "violins.png"
    assert [p.name for p in out.parent.iterdir()] == ["violins.png"]  # no temp file left behind
    text = Image.open(out).text
    assert text["Title"] == "Clinical Turing test realism ratings (SIMULATED)"
    assert text["simulated"] == "true"
    assert json.loads(text["provenance"]) == PROVENANCE
    assert (
        "per-image mean realism rating over 8 raters (20 images per group)" in text["Description"]
    )
    assert text["Description"].startswith("SIMULATED ratings - not expert data.")

    expert = ratings.assign(rater=ratings["rater"].str.replace("simulated-", "expert-"))
    expert.attrs.clear()  # stand-in for expert ratings: the unlabelled figure
    plain = plot_rating_violins(
        expert, key, tmp_path / "plain.png", simulated=False, provenance=PROVENANCE
    )
    assert Image.open(plain).text["Title"] == "Clinical Turing test realism ratings"
    assert Image.open(plain).text["simulated"] == "false"
    assert red_pixels(out) > 20 * red_pixels(plain) + 1000


def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The Figures the figures module saves, captured on their way to the real save_figure."""
    captured: list[Figure] = []

    def capture(figure: Figure, out_png: Path, **kwargs: object) -> Path:
        captured.append(figure)
        return save_figure(figure, out_png, **kwargs)

    monkeypatch.setattr(turing_figures, "save_figure", capture)
    return captured


def test_constant_group_still_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = key_frame(6)
    ratings = simulate_ratings(
        key, n_raters=3, seed=0, p_identify=0.3, mean_ratings={**MEANS, "real": 4.0}
    )
    rated = ratings.merge(key, on=["quartet", "position"])
    assert (
        rated.loc[rated["group"] == "real", "rating"].eq(4).all()
    )  # every real image: mean 4, no spread
    figures = saved_figures(monkeypatch)
    out = plot_rating_violins(
        ratings, key, tmp_path / "v.png", simulated=True, provenance=PROVENANCE
    )
    assert out.is_file() and len(figures) == 1
    axes = figures[0].axes[0]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert labels == ["real", "synthetic\nckpt034", "synthetic\nckpt040", "synthetic\nckpt080"]
    bodies = [
        collection for collection in axes.collections if isinstance(collection, PolyCollection)
    ]
    assert [len(body.get_paths()) for body in bodies] == [1, 1, 1, 1]  # one drawn outline per group
    outlines = [body.get_paths()[0].vertices for body in bodies]
    assert all(np.isfinite(outline).all() for outline in outlines)
    # The constant group's violin collapses onto y = 4 but keeps a width around its position 1;
    # the others spread over their ratings.
    real = outlines[0]
    assert np.all(real[:, 1] == 4.0) and real[:, 0].min() < 1 < real[:, 0].max()
    assert all(np.ptp(outline[:, 1]) > 0.5 for outline in outlines[1:])
    # The mean written under each violin is the group's mean rating (3 raters on every image).
    group_means = rated.groupby("group")["rating"].mean()
    written = {round(text.get_position()[0]): text.get_text() for text in axes.texts}
    assert written == {
        position: f"mean {group_means[group]:.3f}"
        for position, group in enumerate(["real", "ckpt034", "ckpt040", "ckpt080"], start=1)
    }


def test_simulated_ratings_need_the_flag(tmp_path: Path) -> None:
    key = key_frame(2)
    ratings = simulate_ratings(key, n_raters=2, seed=0, p_identify=0.3, mean_ratings=MEANS)
    with pytest.raises(RatingsError, match="pass simulated=True"):
        plot_rating_violins(
            ratings, key, tmp_path / "v.png", simulated=False, provenance=PROVENANCE
        )
    assert not (tmp_path / "v.png").exists()
