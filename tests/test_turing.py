"""The Turing-test stage glue: simulated rater files, the ratings folder a rule reads, and the
example-quartet figure."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import key_frame
from PIL import Image

from radsynth.turing.figures import plot_example_quartet
from radsynth.turing.quartets import build_quartets, key_path
from radsynth.turing.ratings import load_key, load_ratings, ratings_folder
from radsynth.turing.simulation import simulation_means, write_simulated_ratings
from radsynth.turing.stats import turing_statistics

LABELS = ["ckpt034", "ckpt040", "ckpt080"]
SIMULATION = {
    "n_raters": 3,
    "seed": 1,
    "p_identify": 0.29,
    "mean_rating_real": 3.323,
    "mean_rating_checkpoints": [3.228, 3.258, 3.320],
}


#: Grey level of image i of a pool: its base + 8 i, so a pixel names the image it came from.
BASE_GREY = {"r": 20, "ckpt034": 70, "ckpt040": 120, "ckpt080": 170}


def source_grey(source_id: str) -> int:
    """The grey level every pixel of the pool image `source_id` ("<pool>_<i>") has."""
    pool, index = source_id.rsplit("_", 1)
    return BASE_GREY[pool] + 8 * int(index)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("turing")

    def pool(prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_{i}": np.full((16, 16), source_grey(f"{prefix}_{i}"), np.uint8)
            for i in range(5)
        }

    build_quartets(
        pool("r"),
        {label: pool(label) for label in LABELS},
        root / "study",
        n_quartets=4,
        seed=3,
        provenance={"config_hash": "abc"},
        progress=False,
    )
    return root / "study"


def test_simulation_means_follow_the_selected_order():
    assert simulation_means(LABELS, real=3.3, checkpoints=[3.1, 3.2, 3.0]) == {
        "real": 3.3,
        "ckpt034": 3.1,
        "ckpt040": 3.2,
        "ckpt080": 3.0,
    }
    with pytest.raises(ValueError, match="mean_rating_checkpoints has 2 values for 3 selected"):
        simulation_means(LABELS, real=3.3, checkpoints=[3.1, 3.2])


def test_simulated_rater_files_load_as_a_complete_study(study, tmp_path):
    paths = write_simulated_ratings(
        study, tmp_path / "ratings", checkpoint_labels=LABELS, simulation=SIMULATION
    )
    assert [p.name for p in paths] == [
        "ratings_simulated-01.csv",
        "ratings_simulated-02.csv",
        "ratings_simulated-03.csv",
    ]
    ratings = load_ratings(tmp_path / "ratings", load_key(key_path(study)))
    assert len(ratings) == 3 * 4 * 4
    assert ratings.groupby(["rater", "quartet"])["chosen_real"].sum().eq(1).all()


def test_ratings_folder_of_a_rule_input(tmp_path):
    assert ratings_folder(str(tmp_path)) == tmp_path
    assert ratings_folder([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == tmp_path
    with pytest.raises(ValueError, match="share one folder"):
        ratings_folder([str(tmp_path / "x/a.csv"), str(tmp_path / "y/b.csv")])


def grey_columns(pixels: np.ndarray, grey: int) -> np.ndarray:
    """Columns of the figure holding more than 20 pixels of exactly this grey: an image panel's
    width (title letters are under 20 pixels tall, so their anti-aliased edges do not count)."""
    exact = (pixels == grey).all(axis=-1)
    return np.nonzero(exact.sum(axis=0) > 20)[0]


def test_example_quartet_shows_its_images_in_position_order_and_marks_the_real_one(study, tmp_path):
    """Every image of the study is one flat grey (source_grey), so the saved PNG tells which image
    each panel shows; the REAL caption is the only text in matplotlib's tab:green (44, 160, 44)."""
    out = plot_example_quartet(
        study, tmp_path / "quartet.png", quartet=2, provenance={"config_hash": "abc"}
    )
    image = Image.open(out)
    assert image.text["provenance_config_hash"] == "abc"
    assert image.text["Title"] == "Example quartet 2 with the answer key revealed"
    key = pd.read_csv(study / "key/key.csv")
    sources = pd.read_csv(study / "key/sources.csv")
    shown = key[key["quartet"] == 2].merge(sources, on=["image", "group"]).sort_values("position")
    assert sorted(shown["group"]) == ["ckpt034", "ckpt040", "ckpt080", "real"]
    pixels = np.asarray(image.convert("RGB")).astype(int)
    panels = []
    for row in shown.itertuples():
        columns = grey_columns(pixels, source_grey(row.source_id))
        rows = np.nonzero((pixels[:, columns] == source_grey(row.source_id)).all(axis=-1).all(1))[0]
        assert len(columns) > 150 and abs(len(rows) - len(columns)) <= 2, row.source_id
        panels.append((columns.min(), columns.max(), rows.min()))
    # left to right in position order, side by side without overlap
    assert all(left[1] < right[0] for left, right in zip(panels, panels[1:])), panels
    green = (np.abs(pixels - [44, 160, 44]).sum(axis=-1) < 60).nonzero()
    real = panels[list(shown["group"]).index("real")]
    assert len(green[0]) > 20
    assert real[0] <= green[1].min() and green[1].max() <= real[1]  # over the real panel only
    assert green[0].max() < real[2]  # above it: its caption
    with pytest.raises(ValueError, match="no quartet 9"):
        plot_example_quartet(study, tmp_path / "q9.png", quartet=9, provenance={})


def test_identification_counts_picks_of_the_real_image_whatever_the_reference_group():
    # key_frame(4) puts the real image at position q of quartet q; position 1 of quartets
    # 2, 3, 4 holds ckpt080, ckpt040, ckpt034. Rater a always picks position 1 (right in
    # quartet 1 only); rater b picks the real image in quartets 1 and 2, position 1 after that.
    # Right: 1 + 2 = 3 of 8 picks. ckpt034 (position 1 of quartet 4) is picked twice.
    key = key_frame(4)
    picks = {"a": [1, 1, 1, 1], "b": [1, 2, 1, 1]}
    scores = {"real": 4, "ckpt034": 3, "ckpt040": 2, "ckpt080": 1}
    rows = [
        {
            "rater": rater,
            "quartet": cell.quartet,
            "position": cell.position,
            "chosen_real": int(cell.position == picks[rater][cell.quartet - 1]),
            "rating": scores[cell.group] if rater == "a" else 5 - scores[cell.group],
        }
        for rater in picks
        for cell in key.itertuples()
    ]
    results = turing_statistics(pd.DataFrame(rows), key, reference_group="ckpt034", simulated=False)
    identification = results.identification
    assert (identification.n_correct, identification.n_trials) == (3, 8)
    assert identification.accuracy == pytest.approx(3 / 8)
    assert identification.chance == pytest.approx(1 / 4)
