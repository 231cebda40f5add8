"""Answer key and ratings ingestion: validation messages, Qualtrics adapter, simulation."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from helpers import MEANS, key_frame, write_qualtrics

from radsynth.turing.qualtrics import QUALTRICS_HEADER_ROWS, from_qualtrics
from radsynth.turing.ratings import (
    RatingsError,
    load_key,
    load_ratings,
    require_simulated_flag,
    simulate_ratings,
    write_ratings_csv,
)


@pytest.fixture
def key_csv(tmp_path: Path) -> Path:
    path = tmp_path / "key.csv"
    key_frame(3).to_csv(path, index=False)
    return path


@pytest.fixture
def key(key_csv: Path) -> pd.DataFrame:
    return load_key(key_csv)


def rater_rows(rater: str, n_quartets: int = 3, chosen: int = 1, rating: int = 3) -> list[dict]:
    return [
        {
            "rater": rater,
            "quartet": q,
            "position": p,
            "chosen_real": int(p == chosen),
            "rating": rating,
        }
        for q in range(1, n_quartets + 1)
        for p in range(1, 5)
    ]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def problems_of(folder: Path, key: pd.DataFrame) -> list[str]:
    with pytest.raises(RatingsError) as caught:
        load_ratings(folder, key)
    return caught.value.problems


def test_load_key_types_and_order(key_csv: Path) -> None:
    key = load_key(key_csv)
    assert list(key.columns) == ["quartet", "position", "group", "image"]
    assert key["quartet"].tolist() == [1] * 4 + [2] * 4 + [3] * 4
    assert key.loc[key["quartet"] == 2, "group"].tolist() == [
        "ckpt080",
        "real",
        "ckpt034",
        "ckpt040",
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda k: k.drop(columns=["image"]), "{path}: missing column(s) image"),
        (
            lambda k: k.assign(position=k["position"].replace({4: 0})),
            "{path}: data row 4: position '0' is not a positive integer",
        ),
        (
            lambda k: k.assign(position=k["position"].replace({4: 5})),
            "{path}: quartet 1 has positions [1, 2, 3, 5], expected 1, 2, 3, 4 (one per group)",
        ),
        (
            lambda k: k.assign(group=k["group"].where(k.index != 1, "real")),
            "{path}: quartet 1 has 2 real images, expected exactly 1",
        ),
        (
            lambda k: k[k.index != 3],
            "{path}: quartet 1 has positions [1, 2, 3], expected 1, 2, 3, 4 (one per group)",
        ),
        (
            lambda k: k.assign(quartet=k["quartet"].replace({3: 4})),
            "{path}: quartets 1, 2, 4 are not numbered 1..3 without gaps",
        ),
        (
            lambda k: k.assign(image=k["image"].where(k.index != 5, "q1_real.png")),
            "{path}: image q1_real.png appears in more than one row",
        ),
        (
            lambda k: k.assign(group=k["group"].where(k.index != 2, "ckpt099")),
            "{path}: checkpoint ckpt099 is missing from quartet(s) 2, 3",
        ),
        (
            lambda k: k.assign(group=k["group"].where(k.index != 2, "ckpt034")),
            "{path}: quartet 1 has checkpoint ckpt034 2 times, expected once",
        ),
        (
            lambda k: k.assign(group=k["group"].where(k.index != 2, "ckpt034")),
            "{path}: checkpoint ckpt040 is missing from quartet(s) 1",
        ),
    ],
)
def test_load_key_errors(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "key.csv"
    edit(key_frame(3)).to_csv(path, index=False)
    with pytest.raises(RatingsError) as caught:
        load_key(path)
    assert message.format(path=path) in caught.value.problems


def test_load_ratings_concatenates_files_sorted(tmp_path: Path, key: pd.DataFrame) -> None:
    write_rows(tmp_path / "r" / "b.csv", rater_rows("B", chosen=2, rating=4))
    write_rows(tmp_path / "r" / "a.csv", rater_rows("A"))
    ratings = load_ratings(tmp_path / "r", key)
    assert len(ratings) == 24
    assert ratings["rater"].tolist()[:1] + ratings["rater"].tolist()[-1:] == ["A", "B"]
    assert ratings.loc[ratings["rater"] == "B", "rating"].eq(4).all()
    assert ratings.groupby("rater")["chosen_real"].sum().to_dict() == {"A": 3, "B": 3}
    assert ratings.dtypes.astype(str).to_dict()["rating"] == "int64"


def test_row_value_errors_name_file_and_row(tmp_path: Path, key: pd.DataFrame) -> None:
    rows = rater_rows("A")
    rows[0]["rating"] = 5
    rows[1]["rating"] = "3.5"
    rows[2]["chosen_real"] = 2
    rows[5]["quartet"] = 9
    rows[6]["position"] = 7
    rows[7]["rater"] = ""
    path = write_rows(tmp_path / "r" / "a.csv", rows)
    problems = problems_of(tmp_path / "r", key)
    for expected in [
        f"{path}: data row 1: rating '5' is not an integer from 1 to 4",
        f"{path}: data row 2: rating '3.5' is not an integer from 1 to 4",
        f"{path}: data row 3: chosen_real '2' is not 0 or 1",
        f"{path}: data row 6: quartet 9 is not in the answer key",
        f"{path}: data row 7: quartet 2 position 7 is not in the answer key",
        f"{path}: data row 8: rater is empty",
    ]:
        assert expected in problems


def test_missing_columns(tmp_path: Path, key: pd.DataFrame) -> None:
    path = write_rows(
        tmp_path / "r" / "a.csv",
        [{k: v for k, v in row.items() if k != "rating"} for row in rater_rows("A")],
    )
    assert problems_of(tmp_path / "r", key) == [f"{path}: missing column(s) rating"]


def test_chosen_real_count_per_quartet(tmp_path: Path, key: pd.DataFrame) -> None:
    rows = rater_rows("A")
    rows[0]["chosen_real"] = 0  # quartet 1: none chosen
    rows[4 + 2]["chosen_real"] = 1  # quartet 2: positions 1 and 3
    path = write_rows(tmp_path / "r" / "a.csv", rows)
    assert problems_of(tmp_path / "r", key) == [
        f"{path}: rater A quartet 1: 0 images chosen as real, expected exactly 1",
        f"{path}: rater A quartet 2: 2 images chosen as real (positions 1, 3), expected exactly 1",
    ]


def test_missing_quartet_and_position(tmp_path: Path, key: pd.DataFrame) -> None:
    rows = [
        row
        for row in rater_rows("A")
        if row["quartet"] != 2 and (row["quartet"], row["position"]) != (3, 4)
    ]
    path = write_rows(tmp_path / "r" / "a.csv", rows)
    assert problems_of(tmp_path / "r", key) == [
        f"{path}: rater A is missing quartet(s) 2",
        f"{path}: rater A quartet 3 is missing position(s) 4",
    ]


def test_rater_in_two_files_and_duplicate_rows(tmp_path: Path, key: pd.DataFrame) -> None:
    first = write_rows(tmp_path / "r" / "a.csv", rater_rows("A") + rater_rows("A")[:1])
    second = write_rows(tmp_path / "r" / "b.csv", rater_rows("A"))
    problems = problems_of(tmp_path / "r", key)
    assert f"{first}: data rows 1, 13 repeat rater A quartet 1 position 1" in problems
    assert f"rater A appears in more than one file: {first}, {second}" in problems


def test_all_problems_reported_together(tmp_path: Path, key: pd.DataFrame) -> None:
    good = rater_rows("A")
    good[0]["rating"] = 0
    write_rows(tmp_path / "r" / "a.csv", good)
    write_rows(tmp_path / "r" / "b.csv", rater_rows("B")[:4])
    with pytest.raises(RatingsError) as caught:
        load_ratings(tmp_path / "r", key)
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith("2 problem(s) in the Turing test input:\n")
    assert "rater B is missing quartet(s) 2, 3" in str(caught.value)


def test_empty_and_header_only_files(tmp_path: Path, key: pd.DataFrame) -> None:
    write_rows(tmp_path / "r" / "a.csv", rater_rows("A"))
    (tmp_path / "r" / "b.csv").write_text("rater,quartet,position,chosen_real,rating\n")
    (tmp_path / "r" / "c.csv").write_text("")
    problems = problems_of(tmp_path / "r", key)
    assert problems[0] == f"{tmp_path / 'r' / 'b.csv'}: no data rows"
    assert problems[1].startswith(f"{tmp_path / 'r' / 'c.csv'}: cannot be read as CSV (")
    assert len(problems) == 2


def test_empty_folder(tmp_path: Path, key: pd.DataFrame) -> None:
    (tmp_path / "r").mkdir()
    assert problems_of(tmp_path / "r", key) == [f"{tmp_path / 'r'}: no *.csv ratings files"]


def test_qualtrics_round_trip(tmp_path: Path, key: pd.DataFrame) -> None:
    original = simulate_ratings(key, n_raters=3, seed=5, p_identify=0.4, mean_ratings=MEANS)
    path = write_qualtrics(tmp_path / "export.csv", original)
    converted = from_qualtrics(path, key, rater_column="rater_id")
    pd.testing.assert_frame_equal(
        converted,
        original.sort_values(["rater", "quartet", "position"], ignore_index=True),
        check_like=False,
    )


def test_qualtrics_errors(tmp_path: Path, key: pd.DataFrame) -> None:
    ratings = simulate_ratings(key, n_raters=2, seed=5, p_identify=0.4, mean_ratings=MEANS)
    path = write_qualtrics(tmp_path / "export.csv", ratings, extra={"Q99_comment": "nice"})
    with pytest.raises(RatingsError) as caught:
        from_qualtrics(path, key, rater_column="rater_id")
    assert caught.value.problems == [
        f"{path}: column Q99_comment is neither a question of the answer key nor Qualtrics metadata"
    ]

    lines = list(csv.reader(open(write_qualtrics(path, ratings), newline="")))
    columns = lines[0]
    lines[QUALTRICS_HEADER_ROWS][columns.index("Q2_rating_3")] = "very"
    lines[QUALTRICS_HEADER_ROWS + 1][columns.index("Status")] = "Survey Preview"
    lines[QUALTRICS_HEADER_ROWS + 1][columns.index("Q3_real")] = "Image 5"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    with pytest.raises(RatingsError) as caught:
        from_qualtrics(path, key, rater_column="rater_id")
    assert (
        f"{path}: data row 1: column Q2_rating_3: answer 'very' is not one of 1, 2, 3, 4"
        in caught.value.problems
    )
    assert (
        f"{path}: data row 2: Status 'Survey Preview' is not a rater's response; "
        "delete it from the export" in caught.value.problems
    )
    assert (
        f"{path}: data row 2: column Q3_real: answer 'Image 5' is not one of 1, 2, 3, 4"
        in caught.value.problems
    )


def test_qualtrics_missing_question_and_rater_column(tmp_path: Path, key: pd.DataFrame) -> None:
    ratings = simulate_ratings(key, n_raters=1, seed=5, p_identify=0.4, mean_ratings=MEANS)
    path = write_qualtrics(tmp_path / "export.csv", ratings[ratings["quartet"] < 3])
    with pytest.raises(RatingsError) as caught:
        from_qualtrics(path, key, rater_column="who")
    assert caught.value.problems == [
        f"{path}: missing column who (rater_column)",
        f"{path}: column rater_id is neither a question of the answer key nor Qualtrics metadata",
        f"{path}: missing question column(s) "
        "Q3_real, Q3_rating_1, Q3_rating_2, Q3_rating_3, Q3_rating_4",
    ]


def test_simulated_ratings_are_valid_and_flagged(tmp_path: Path, key: pd.DataFrame) -> None:
    ratings = simulate_ratings(key, n_raters=4, seed=11, p_identify=0.29, mean_ratings=MEANS)
    assert ratings.attrs["simulated"] is True
    assert sorted(ratings["rater"].unique()) == [
        "simulated-01",
        "simulated-02",
        "simulated-03",
        "simulated-04",
    ]
    write_ratings_csv(ratings, tmp_path / "r" / "sim.csv")
    reloaded = load_ratings(tmp_path / "r", key)
    pd.testing.assert_frame_equal(
        reloaded,
        ratings.sort_values(["rater", "quartet", "position"], ignore_index=True),
        check_like=False,
    )
    pd.testing.assert_frame_equal(
        ratings, simulate_ratings(key, n_raters=4, seed=11, p_identify=0.29, mean_ratings=MEANS)
    )
    with pytest.raises(
        RatingsError,
        match=(
            "simulated-01, simulated-02, simulated-03, simulated-04 are simulated; "
            "pass simulated=True"
        ),
    ):
        require_simulated_flag(reloaded, simulated=False)
    require_simulated_flag(reloaded, simulated=True)


def test_simulation_hits_its_parameters() -> None:
    key = key_frame(50)
    ratings = simulate_ratings(key, n_raters=100, seed=3, p_identify=1.0, mean_ratings=MEANS).merge(
        key, on=["quartet", "position"]
    )
    assert (ratings.loc[ratings["chosen_real"] == 1, "group"] == "real").all()
    means = ratings.groupby("group")["rating"].mean()
    assert means.sub(pd.Series(MEANS)).abs().max() < 0.03  # 5,000 ratings per group: SE about 0.009
    never = simulate_ratings(key, n_raters=5, seed=3, p_identify=0.0, mean_ratings=MEANS).merge(
        key, on=["quartet", "position"]
    )
    assert not (never.loc[never["chosen_real"] == 1, "group"] == "real").any()


def test_simulation_rejects_bad_parameters() -> None:
    with pytest.raises(RatingsError) as caught:
        simulate_ratings(
            key_frame(2), n_raters=0, seed=0, p_identify=1.5, mean_ratings={"real": 5.0}
        )
    assert caught.value.problems == [
        "n_raters 0 must be at least 1",
        "p_identify 1.5 must lie in [0, 1]",
        "mean_ratings groups ['real'] differ from the key's groups "
        "['ckpt034', 'ckpt040', 'ckpt080', 'real']",
        "mean_ratings[real] = 5.0 must lie in [1, 4]",
    ]


def study_key(checkpoints: list[str], n_quartets: int = 2) -> pd.DataFrame:
    """A key of 1 real + len(checkpoints) images per quartet, the real one at position 1."""
    groups = ["real", *checkpoints]
    return pd.DataFrame(
        [
            {"quartet": q, "position": p, "group": g, "image": f"q{q}_{g}.png"}
            for q in range(1, n_quartets + 1)
            for p, g in enumerate(groups, start=1)
        ]
    )


@pytest.mark.parametrize("n_checkpoints", [1, 2, 4, 8])
def test_studies_of_any_checkpoint_count_validate_and_round_trip(
    tmp_path: Path, n_checkpoints: int
) -> None:
    checkpoints = [f"ckpt{10 * (i + 1):03d}" for i in range(n_checkpoints)]
    path = tmp_path / "key.csv"
    study_key(checkpoints).to_csv(path, index=False)
    key = load_key(path)
    means = {"real": 3.3, **{label: 3.0 for label in checkpoints}}
    ratings = simulate_ratings(key, n_raters=2, seed=1, p_identify=0.5, mean_ratings=means)
    assert sorted(ratings["position"].unique()) == list(range(1, n_checkpoints + 2))
    write_ratings_csv(ratings, tmp_path / "ratings" / "r.csv")
    loaded = load_ratings(tmp_path / "ratings", key)
    assert len(loaded) == 2 * 2 * (n_checkpoints + 1)
    converted = from_qualtrics(
        write_qualtrics(tmp_path / "export.csv", ratings), key, rater_column="rater_id"
    )
    assert converted["position"].max() == n_checkpoints + 1


def test_a_position_beyond_the_study_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "key.csv"
    study_key(["ckpt010"]).to_csv(path, index=False)
    key = load_key(path)
    rows = [
        {"rater": "a", "quartet": q, "position": p, "chosen_real": int(p == 1), "rating": 3}
        for q in (1, 2)
        for p in (1, 2, 3)
    ]
    folder = write_rows(tmp_path / "ratings" / "a.csv", rows).parent
    assert problems_of(folder, key) == [
        f"{folder / 'a.csv'}: data row 3: quartet 1 position 3 is not in the answer key",
        f"{folder / 'a.csv'}: data row 6: quartet 2 position 3 is not in the answer key",
    ]
