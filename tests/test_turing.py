"""The Turing-test stage glue: simulated rater files, the ratings folder a rule reads, and the
example-quartet figure."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radsynth.turing.figures import plot_example_quartet
from radsynth.turing.quartets import build_quartets, key_path
from radsynth.turing.ratings import load_key, load_ratings, ratings_folder
from radsynth.turing.simulation import simulation_means, write_simulated_ratings

LABELS = ["ckpt034", "ckpt040", "ckpt080"]
SIMULATION = {
    "n_raters": 3,
    "seed": 1,
    "p_identify": 0.29,
    "mean_rating_real": 3.323,
    "mean_rating_checkpoints": [3.228, 3.258, 3.320],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("turing")
    rng = np.random.default_rng(0)

    def pool(prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{i}": rng.integers(0, 255, (16, 16), dtype=np.uint8) for i in range(5)}

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


def test_example_quartet_reveals_the_answer_in_position_order(study, tmp_path):
    out = plot_example_quartet(
        study, tmp_path / "quartet.png", quartet=2, provenance={"config_hash": "abc"}
    )
    image = Image.open(out)
    assert image.text["provenance_config_hash"] == "abc"
    assert image.text["Title"] == "Example quartet 2 with the answer key revealed"
    key = pd.read_csv(study / "key/key.csv")
    assert sorted(key.loc[key["quartet"] == 2, "group"]) == [
        "ckpt034",
        "ckpt040",
        "ckpt080",
        "real",
    ]
    with pytest.raises(ValueError, match="no quartet 9"):
        plot_example_quartet(study, tmp_path / "q9.png", quartet=9, provenance={})
