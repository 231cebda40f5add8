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


#: Ratings of key_frame(2) by hand: (quartet, position) -> rater a, b, c; rater c rated quartet 1
#: only, so quartet 2's means are over 2 raters. Groups: (1, 1) ckpt040, (1, 2) ckpt034,
#: (1, 3) ckpt080, (1, 4) real, (2, 1) ckpt034, (2, 2) ckpt080, (2, 3) real, (2, 4) ckpt040.
HAND_RATINGS = {
    (1, 1): (1, 2, 4),
    (1, 2): (3, 3, 3),
    (1, 3): (2, 4, 4),
    (1, 4): (4, 4, 1),
    (2, 1): (1, 1),
    (2, 2): (2, 3),
    (2, 3): (4, 3),
    (2, 4): (1, 4),
}
#: Their per-image means, worked out by hand, in key order.
HAND_MEANS = [7 / 3, 3.0, 10 / 3, 3.0, 1.0, 2.5, 3.5, 2.5]
#: Group means of the per-image means (the diamonds): real (3 + 3.5) / 2, ckpt034 (3 + 1) / 2,
#: ckpt040 (7/3 + 2.5) / 2, ckpt080 (10/3 + 2.5) / 2. The mean of the raw ratings would differ
#: (ckpt040: 12 / 5 = 2.4).
HAND_GROUP_MEANS = {"real": 3.25, "ckpt034": 2.0, "ckpt040": 29 / 12, "ckpt080": 35 / 12}


def hand_ratings() -> pd.DataFrame:
    rows = []
    for (quartet, position), scores in HAND_RATINGS.items():
        for rater, rating in zip("abc", scores):
            chosen = int(position == {1: 4, 2: 3}[quartet])  # everyone picks the real image
            rows.append((f"expert-{rater}", quartet, position, chosen, rating))
    return pd.DataFrame(rows, columns=["rater", "quartet", "position", "chosen_real", "rating"])


def test_per_image_means_average_over_the_raters_of_each_image() -> None:
    key = key_frame(2)
    images = per_image_means(hand_ratings(), key)
    assert images["image"].tolist() == key["image"].tolist()
    assert images["group"].tolist() == [
        "ckpt040",
        "ckpt034",
        "ckpt080",
        "real",
        "ckpt034",
        "ckpt080",
        "real",
        "ckpt040",
    ]
    assert images["mean_rating"].tolist() == pytest.approx(HAND_MEANS)
    assert images["n_raters"].tolist() == [3, 3, 3, 3, 2, 2, 2, 2]


def test_violins_mark_the_mean_of_the_per_image_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = saved_figures(monkeypatch)
    plot_rating_violins(
        hand_ratings(), key_frame(2), tmp_path / "v.png", simulated=False, provenance=PROVENANCE
    )
    axes = figures[0].axes[0]
    written = {round(text.get_position()[0]): text.get_text() for text in axes.texts}
    assert written == {1: "mean 3.250", 2: "mean 2.000", 3: "mean 2.417", 4: "mean 2.917"}
    diamonds = axes.collections[-1].get_offsets()
    assert diamonds[:, 1].tolist() == pytest.approx(list(HAND_GROUP_MEANS.values()))


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
