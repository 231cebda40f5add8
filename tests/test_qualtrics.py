"""The Qualtrics adapter (radsynth.turing.qualtrics) on exports written out by hand as Qualtrics
writes them: CRLF line ends, quoted question texts that hold line breaks, the ImportId row.

Expected ratings and messages are written out here from the export text; the round trip through
simulated ratings is in test_ratings.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import key_frame

from radsynth.turing.qualtrics import from_qualtrics
from radsynth.turing.ratings import RatingsError, load_key

#: Two quartets of four images (the real one at position 2, then at position 4).
KEY_CSV = """quartet,position,group,image
1,1,ckpt034,a.png
1,2,real,b.png
1,3,ckpt040,c.png
1,4,ckpt080,d.png
2,1,ckpt080,e.png
2,2,ckpt040,f.png
2,3,ckpt034,g.png
2,4,real,h.png
"""

QUESTIONS = [
    f"Q{q}_{part}" for q in (1, 2) for part in ["real", *(f"rating_{p}" for p in range(1, 5))]
]


def export_text(metadata: list[str], responses: list[list[str]]) -> str:
    """A choice-text export: column ids, question texts (multi-line, quoted), ImportId JSON, then
    one row per response, CRLF-terminated as Qualtrics writes them."""
    columns = [*metadata, "rater_id", *QUESTIONS]
    texts = [
        '"Which image is the real radiograph?\r\nChoose one."'
        if column.endswith("_real")
        else '"How realistic is this image?\r\n1 = unrealistic, 4 = fully realistic"'
        if "_rating_" in column
        else column
        for column in columns
    ]
    import_ids = ['"{""ImportId"":""' + column + '""}"' for column in columns]
    rows = [columns, texts, import_ids, *responses]
    return "".join(",".join(row) + "\r\n" for row in rows)


@pytest.fixture
def key(tmp_path: Path) -> pd.DataFrame:
    (tmp_path / "key.csv").write_text(KEY_CSV)
    return load_key(tmp_path / "key.csv")


#: Rater A picks position 2 then 4 (both real); rater B picks 1 then 3.
RATER_A = ["A", "Image 2", "2", "4 = fully realistic", "3", "1 = unrealistic"]
RATER_A += ["Image 4", "2", "2", "3", "4 = fully realistic"]
RATER_B = ["B", "Image 1", "3", "3", "2", "2", "Image 3", "1 = unrealistic", "4", "4", "3"]


def problems(path: Path, key: pd.DataFrame) -> list[str]:
    with pytest.raises(RatingsError) as caught:
        from_qualtrics(path, key, rater_column="rater_id")
    return caught.value.problems


def test_an_export_without_status_or_other_metadata_converts(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    """Status is optional metadata: only a response whose Status says preview, test or spam is
    refused, so an export without the column is read like any other."""
    path = tmp_path / "export.csv"
    path.write_text(export_text(["ResponseId"], [["R_1", *RATER_A], ["R_2", *RATER_B]]), newline="")
    expected = pd.DataFrame(
        [
            ("A", 1, 1, 0, 2),
            ("A", 1, 2, 1, 4),
            ("A", 1, 3, 0, 3),
            ("A", 1, 4, 0, 1),
            ("A", 2, 1, 0, 2),
            ("A", 2, 2, 0, 2),
            ("A", 2, 3, 0, 3),
            ("A", 2, 4, 1, 4),
            ("B", 1, 1, 1, 3),
            ("B", 1, 2, 0, 3),
            ("B", 1, 3, 0, 2),
            ("B", 1, 4, 0, 2),
            ("B", 2, 1, 0, 1),
            ("B", 2, 2, 0, 4),
            ("B", 2, 3, 1, 4),
            ("B", 2, 4, 0, 3),
        ],
        columns=["rater", "quartet", "position", "chosen_real", "rating"],
    )
    pd.testing.assert_frame_equal(
        from_qualtrics(path, key, rater_column="rater_id"), expected, check_dtype=False
    )


def test_a_rater_who_answered_twice_is_named_with_both_data_rows(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    """Rater A took the survey twice (responses 1 and 3): every one of A's eight cells repeats, and
    each quartet then holds A's real choice twice."""
    path = tmp_path / "export.csv"
    responses = [["IP Address", *RATER_A], ["IP Address", *RATER_B], ["IP Address", *RATER_A]]
    path.write_text(export_text(["Status"], responses), newline="")
    assert problems(path, key) == [
        f"{path}: data rows 1, 3 repeat rater A quartet {q} position {p}"
        for q in (1, 2)
        for p in (1, 2, 3, 4)
    ] + [
        f"{path}: rater A quartet 1: 2 images chosen as real (positions 2, 2), expected exactly 1",
        f"{path}: rater A quartet 2: 2 images chosen as real (positions 4, 4), expected exactly 1",
    ]


def test_an_unreadable_real_choice_is_its_quartets_only_problem(
    tmp_path: Path, key: pd.DataFrame
) -> None:
    """'Not sure' names no image: the row and column are reported, and the quartet is not also
    reported as one with no image chosen (its choice is unknown, not absent)."""
    path = tmp_path / "export.csv"
    unsure = [*RATER_A[:1], "Not sure", *RATER_A[2:]]
    path.write_text(export_text(["Status"], [["IP Address", *unsure]]), newline="")
    assert problems(path, key) == [
        f"{path}: data row 1: column Q1_real: answer 'Not sure' is not one of 1, 2, 3, 4"
    ]


def test_an_export_of_another_survey_lists_every_missing_question_in_study_order(
    tmp_path: Path,
) -> None:
    """Twelve quartets, none asked: the missing columns are listed quartet by quartet in number
    order (Q10 after Q9), each quartet's real choice before its ratings 1-4."""
    key_frame(12).to_csv(tmp_path / "key.csv", index=False)
    key = load_key(tmp_path / "key.csv")
    path = tmp_path / "export.csv"
    path.write_text(
        "ResponseId,rater_id\r\nResponse ID,Rater\r\n"
        '"{""ImportId"":""_recordId""}","{""ImportId"":""QID1_TEXT""}"\r\n'
        "R_1,A\r\n",
        newline="",
    )
    questions = ", ".join(
        f"Q{q}_real, Q{q}_rating_1, Q{q}_rating_2, Q{q}_rating_3, Q{q}_rating_4"
        for q in range(1, 13)
    )
    assert problems(path, key) == [f"{path}: missing question column(s) {questions}"]
