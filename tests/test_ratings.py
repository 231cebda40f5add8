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
    ratings_folder,
    require_simulated_flag,
    simulate_ratings,
    with_groups,
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
    assert ratings.index.tolist() == list(range(24))


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
    assert str(caught.value) == "2 problem(s) in the Turing test input:\n" + "\n".join(
        caught.value.problems
    )
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
    header, first = (tmp_path / "r" / "sim.csv").read_text().splitlines()[:2]
    assert header == "rater,quartet,position,chosen_real,rating"
    assert first.startswith("simulated-01,1,1,")
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


def test_load_key_strips_parses_and_sorts(tmp_path: Path) -> None:
    rows = key_frame(2).astype(str).iloc[::-1]  # last quartet and position first
    rows["quartet"] = " +" + rows["quartet"] + " "
    rows["group"] = " " + rows["group"]
    path = tmp_path / "key.csv"
    rows.to_csv(path, index=False)
    key = load_key(path)
    assert key["quartet"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    assert key["position"].tolist() == [1, 2, 3, 4] * 2
    assert key["group"].tolist()[:4] == ["real", "ckpt034", "ckpt040", "ckpt080"]


def test_load_key_row_errors_name_the_row(tmp_path: Path) -> None:
    rows = key_frame(2).astype(str)
    rows.loc[0, "quartet"] = "one"
    rows.loc[1, "quartet"] = "0"
    rows.loc[2, "position"] = "2.5"
    rows.loc[3, "group"] = " "
    rows.loc[4, "image"] = ""
    path = tmp_path / "key.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(RatingsError) as caught:
        load_key(path)
    assert caught.value.problems == [
        f"{path}: data row 1: quartet 'one' is not a positive integer",
        f"{path}: data row 2: quartet '0' is not a positive integer",
        f"{path}: data row 3: position '2.5' is not a positive integer",
        f"{path}: data row 4: group is empty",
        f"{path}: data row 5: image is empty",
    ]


def test_unparsable_ids_blank_lines_and_na_text_name_their_rows(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    """A blank line counts as a data row (row numbers match the file); "NA" is text, not missing."""
    header = "rater,quartet,position,chosen_real,rating"
    lines = [f"A,{q},{p},{int(p == 1)},3" for q in (1, 2, 3) for p in (1, 2, 3, 4)]
    lines[1] = "A,two,2,0,3"
    lines[2] = "A,1,x3,0,3"
    lines[3] = "A,1,4,0,NA"
    folder = tmp_path / "r"
    folder.mkdir()
    path = folder / "a.csv"
    path.write_text("\n".join([header, lines[0], "", *lines[1:]]) + "\n")
    problems = problems_of(folder, key)
    assert f"{path}: data row 2: rater is empty" in problems
    assert f"{path}: data row 3: quartet 'two' is not an integer" in problems
    assert f"{path}: data row 4: position 'x3' is not an integer" in problems
    assert f"{path}: data row 5: rating 'NA' is not an integer from 1 to 4" in problems


def test_ratings_accept_signs_and_spaces_around_integers(tmp_path: Path, key: pd.DataFrame) -> None:
    rows = rater_rows(" A ")
    for row in rows:
        row["rating"] = f" +{row['rating']} "
    write_rows(tmp_path / "r" / "a.csv", rows)
    ratings = load_ratings(tmp_path / "r", key)
    assert ratings["rater"].eq("A").all() and ratings["rating"].eq(3).all()


def test_ratings_folder_is_the_one_folder_of_the_input(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    assert ratings_folder(str(tmp_path / "r")) == tmp_path / "r"
    assert ratings_folder([str(tmp_path / "r")]) == tmp_path / "r"
    files = [str(tmp_path / "r" / "a.csv"), str(tmp_path / "r" / "b.csv")]
    assert ratings_folder(files) == tmp_path / "r"
    assert ratings_folder(files[:1]) == tmp_path / "r"  # one file (not a folder): its folder
    with pytest.raises(ValueError) as caught:
        ratings_folder([*files, str(tmp_path / "s" / "c.csv")])
    assert str(caught.value) == (
        f"ratings files must share one folder, got ['{tmp_path / 'r'}', '{tmp_path / 's'}']"
    )


def test_with_groups_joins_the_key_and_refuses_unknown_cells(key: pd.DataFrame) -> None:
    ratings = pd.DataFrame(rater_rows("A", n_quartets=1))
    assert with_groups(ratings, key)["group"].tolist() == ["real", "ckpt034", "ckpt040", "ckpt080"]
    with pytest.raises(RatingsError) as caught:
        with_groups(ratings.assign(position=ratings["position"] + 1), key)
    assert caught.value.problems == [
        "ratings hold quartet/position pairs not in the answer key; load them with load_ratings"
    ]


def test_ratings_marked_simulated_cannot_pass_as_experts(key: pd.DataFrame) -> None:
    ratings = pd.DataFrame(rater_rows("expert-1"))
    require_simulated_flag(ratings, simulated=False)  # an expert's ratings pass
    ratings.attrs["simulated"] = True
    with pytest.raises(RatingsError) as caught:
        require_simulated_flag(ratings, simulated=False)
    assert caught.value.problems == [
        "ratings are marked simulated (attrs['simulated']); pass simulated=True"
    ]


def test_simulation_bounds_are_allowed_and_wrong_picks_are_uniform() -> None:
    key = key_frame(50)
    lowest = simulate_ratings(
        key, n_raters=1, seed=0, p_identify=0.0, mean_ratings=dict.fromkeys(MEANS, 1.0)
    )
    assert lowest["rating"].eq(1).all()
    highest = simulate_ratings(
        key, n_raters=1, seed=0, p_identify=1.0, mean_ratings=dict.fromkeys(MEANS, 4.0)
    )
    assert highest["rating"].eq(4).all()
    wrong = simulate_ratings(key, n_raters=100, seed=4, p_identify=0.0, mean_ratings=MEANS).merge(
        key, on=["quartet", "position"]
    )
    shares = wrong.loc[wrong["chosen_real"] == 1, "group"].value_counts(normalize=True)
    # 5,000 picks among 3 checkpoints: each share 1/3 with SE about 0.007
    assert sorted(shares.index) == ["ckpt034", "ckpt040", "ckpt080"]
    assert (shares - 1 / 3).abs().max() < 0.03


def test_qualtrics_export_with_every_metadata_column_and_a_bom(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    """Qualtrics' own columns are ignored; Excel-saved exports start with a UTF-8 BOM."""
    metadata = ["EndDate", "IPAddress", "Progress", "Duration (in seconds)", "Finished"]
    metadata += ["RecordedDate", "RecipientLastName", "RecipientFirstName", "RecipientEmail"]
    metadata += ["ExternalReference", "LocationLatitude", "LocationLongitude"]
    metadata += ["DistributionChannel", "UserLanguage"]
    original = simulate_ratings(key, n_raters=2, seed=5, p_identify=0.4, mean_ratings=MEANS)
    path = write_qualtrics(tmp_path / "export.csv", original, extra=dict.fromkeys(metadata, "x"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    converted = from_qualtrics(path, key, rater_column="rater_id")
    pd.testing.assert_frame_equal(
        converted, original.sort_values(["rater", "quartet", "position"], ignore_index=True)
    )


def edited_export(path: Path, key: pd.DataFrame, edits: dict[tuple[int, str], str]) -> Path:
    """A two-rater export with answers replaced: edits[(data row, column)] = text."""
    ratings = simulate_ratings(key, n_raters=2, seed=5, p_identify=0.4, mean_ratings=MEANS)
    lines = list(csv.reader(open(write_qualtrics(path, ratings), newline="")))
    for (row, column), text in edits.items():
        lines[QUALTRICS_HEADER_ROWS + row - 1][lines[0].index(column)] = text
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    return path


def qualtrics_problems(path: Path, key: pd.DataFrame) -> list[str]:
    with pytest.raises(RatingsError) as caught:
        from_qualtrics(path, key, rater_column="rater_id")
    return caught.value.problems


@pytest.mark.parametrize("status", ["Survey Test", "Spam"])
def test_qualtrics_test_and_spam_responses_are_errors(
    tmp_path: Path, key: pd.DataFrame, status: str
) -> None:
    path = edited_export(tmp_path / "export.csv", key, {(2, "Status"): f" {status} "})
    assert qualtrics_problems(path, key) == [
        f"{path}: data row 2: Status '{status}' is not a rater's response; "
        "delete it from the export"
    ]


def test_qualtrics_answers_must_hold_exactly_one_allowed_integer(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    edits = {(1, "Q1_real"): "Image 3 or 4", (1, "Q1_rating_2"): "", (2, "rater_id"): " "}
    path = edited_export(tmp_path / "export.csv", key, edits)
    problems = qualtrics_problems(path, key)
    assert problems[:3] == [
        f"{path}: data row 1: column Q1_real: answer 'Image 3 or 4' is not one of 1, 2, 3, 4",
        f"{path}: data row 1: column Q1_rating_2: answer '' is not one of 1, 2, 3, 4",
        f"{path}: data row 2: column rater_id: rater id is empty",
    ]


def test_qualtrics_short_rows_short_headers_and_no_responses(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    path = edited_export(tmp_path / "export.csv", key, {})
    lines = path.read_text().splitlines()
    n_columns = len(lines[0].split(","))
    path.write_text("\n".join([*lines[:3], lines[3].rsplit(",", 1)[0], lines[4]]) + "\n")
    assert qualtrics_problems(path, key) == [
        f"{path}: data row 1: {n_columns - 1} fields, expected {n_columns}"
    ]
    path.write_text("\n".join(lines[:3]) + "\n")
    assert qualtrics_problems(path, key) == [f"{path}: no responses"]
    path.write_text("\n".join(lines[:2]) + "\n")
    assert qualtrics_problems(path, key) == [
        f"{path}: fewer than 3 header rows; not a Qualtrics export"
    ]


def test_every_missing_column_is_named(tmp_path: Path, key: pd.DataFrame) -> None:
    path = write_rows(
        tmp_path / "r" / "a.csv",
        [{"rater": row["rater"], "quartet": row["quartet"]} for row in rater_rows("A")],
    )
    assert problems_of(tmp_path / "r", key) == [
        f"{path}: missing column(s) position, chosen_real, rating"
    ]


def test_load_key_numbers_its_sorted_rows_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "key.csv"
    key_frame(2).iloc[::-1].to_csv(path, index=False)
    assert load_key(path).index.tolist() == list(range(8))


def test_a_repeated_cell_is_reported_even_when_a_copy_has_a_bad_value(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    rows = rater_rows("A")
    repeat = {**rows[1], "rating": "x"}
    path = write_rows(tmp_path / "r" / "a.csv", [*rows, repeat])
    assert problems_of(tmp_path / "r", key) == [
        f"{path}: data row 13: rating 'x' is not an integer from 1 to 4",
        f"{path}: data rows 2, 13 repeat rater A quartet 1 position 2",
    ]


def test_a_rater_whose_rows_in_a_second_file_are_all_bad_still_spans_two_files(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    first = write_rows(tmp_path / "r" / "a.csv", rater_rows("A"))
    second = write_rows(tmp_path / "r" / "b.csv", [{**rater_rows("A")[0], "rating": 9}])
    problems = problems_of(tmp_path / "r", key)
    assert f"rater A appears in more than one file: {first}, {second}" in problems


def test_problems_across_rows_come_in_rater_quartet_position_order(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    # data rows 1-8: B's quartets 1 and 2; 9: B's quartet 2 position 2 again; 10-19: A's
    # quartets 1 and 2 and positions 1 and 3 of quartet 3; 20: A's quartet 1 position 2 again.
    b_rows = [row for row in rater_rows("B") if row["quartet"] != 3]
    a_rows = [
        row for row in rater_rows("A") if row["position"] not in (2, 4) or row["quartet"] != 3
    ]
    path = write_rows(tmp_path / "r" / "a.csv", [*b_rows, b_rows[5], *a_rows, a_rows[1]])
    assert problems_of(tmp_path / "r", key) == [
        f"{path}: data rows 11, 20 repeat rater A quartet 1 position 2",
        f"{path}: data rows 6, 9 repeat rater B quartet 2 position 2",
        f"{path}: rater A quartet 3 is missing position(s) 2, 4",
        f"{path}: rater B is missing quartet(s) 3",
    ]


def test_simulation_does_not_depend_on_the_order_of_the_quartets_in_the_key() -> None:
    key = key_frame(3)
    ordered = simulate_ratings(key, n_raters=2, seed=4, p_identify=0.5, mean_ratings=MEANS)
    last_quartet_first = key.sort_values(["quartet", "position"], ascending=[False, True])
    shuffled = simulate_ratings(
        last_quartet_first, n_raters=2, seed=4, p_identify=0.5, mean_ratings=MEANS
    )
    pd.testing.assert_frame_equal(
        shuffled.sort_values(["rater", "quartet", "position"], ignore_index=True), ordered
    )
    assert ordered["quartet"].tolist()[:8] == [1, 1, 1, 1, 2, 2, 2, 2]


def test_simulating_an_empty_study_gives_an_empty_tidy_table() -> None:
    empty = simulate_ratings(
        key_frame(1).iloc[:0], n_raters=1, seed=0, p_identify=0.5, mean_ratings={}
    )
    assert list(empty.columns) == ["rater", "quartet", "position", "chosen_real", "rating"]
    assert empty.empty


def test_with_groups_refuses_a_key_that_holds_a_cell_twice(key: pd.DataFrame) -> None:
    # a repeated key row would silently count each rating of that cell twice
    ratings = pd.DataFrame(rater_rows("A", n_quartets=1))
    with pytest.raises(pd.errors.MergeError, match="many-to-one"):
        with_groups(ratings, pd.concat([key, key.iloc[:1]], ignore_index=True))


def test_ratings_come_sorted_and_numbered_from_zero_whatever_the_file_order(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    write_rows(tmp_path / "r" / "a.csv", rater_rows("A")[::-1])
    ratings = load_ratings(tmp_path / "r", key)
    assert ratings.index.tolist() == list(range(12))
    assert ratings["quartet"].tolist() == [1] * 4 + [2] * 4 + [3] * 4
    assert ratings["position"].tolist() == [1, 2, 3, 4] * 3
