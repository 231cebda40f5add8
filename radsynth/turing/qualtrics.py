"""Converting a Qualtrics export of the clinical Turing test into tidy ratings.

Qualtrics ("export with choice text", three header rows: column ids, question text,
ImportId JSON), one response row per rater, read by `from_qualtrics`:

- ``Q{quartet}_real``: which position (1..G) the rater thinks is real;
- ``Q{quartet}_rating_{position}``: the 1-4 rating of that position;
- the column named by ``rater_column`` (embedded data or a text question): rater id.

An answer must contain exactly one integer, so choice texts such as ``"Image 3"`` or
``"4 = fully realistic"`` are read as 3 and 4. Any other column is an error unless it is
Qualtrics metadata (`QUALTRICS_METADATA`). Preview, test and spam responses (``Status``)
are errors: delete them from the export rather than let them count as a rater.

The converted ratings are validated exactly as a tidy ratings file is (`radsynth.turing.ratings`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from radsynth.turing.ratings import (
    LIKERT_LEVELS,
    Cell,
    RatingsError,
    parsed_frame,
    positions_of,
    structure_problems,
    tidy_ratings,
)

QUALTRICS_METADATA: frozenset[str] = frozenset(
    {
        "StartDate",
        "EndDate",
        "Status",
        "IPAddress",
        "Progress",
        "Duration (in seconds)",
        "Finished",
        "RecordedDate",
        "ResponseId",
        "RecipientLastName",
        "RecipientFirstName",
        "RecipientEmail",
        "ExternalReference",
        "LocationLatitude",
        "LocationLongitude",
        "DistributionChannel",
        "UserLanguage",
    }
)
QUALTRICS_HEADER_ROWS = 3
QUALTRICS_REJECTED_STATUS: frozenset[str] = frozenset({"Survey Preview", "Survey Test", "Spam"})
_QUALTRICS_REAL = re.compile(r"^Q(?P<quartet>\d+)_real$")
_QUALTRICS_RATING = re.compile(r"^Q(?P<quartet>\d+)_rating_(?P<position>\d+)$")
_ONE_INTEGER = re.compile(r"^\D*(\d+)\D*$")


def _qualtrics_columns(
    columns: list[str], key: pd.DataFrame, rater_column: str, source: str
) -> list[str]:
    """Unknown or missing question columns: a renamed question must not be skipped silently."""
    expected = {f"Q{q}_real" for q in key["quartet"].unique()} | {
        f"Q{q}_rating_{p}" for q, p in zip(key["quartet"], key["position"])
    }
    problems = (
        [f"{source}: missing column {rater_column} (rater_column)"]
        if rater_column not in columns
        else []
    )
    for column in columns:
        if column not in expected and column != rater_column and column not in QUALTRICS_METADATA:
            problems.append(
                f"{source}: column {column} is neither a question of the answer key "
                "nor Qualtrics metadata"
            )
    missing = sorted(expected - set(columns), key=_question_order)
    if missing:
        problems.append(f"{source}: missing question column(s) {', '.join(missing)}")
    return problems


def _question_order(column: str) -> tuple[int, int]:
    match = _QUALTRICS_REAL.match(column) or _QUALTRICS_RATING.match(column)
    return (int(match["quartet"]), int(match.groupdict().get("position") or 0))


def _answer(
    response: Mapping[str, str], column: str, cell: Cell, allowed: tuple[int, ...]
) -> tuple[int | None, list[str]]:
    """The one integer in a choice-text answer, or None and a problem naming row and column."""
    text = response[column].strip()
    match = _ONE_INTEGER.match(text)
    value = int(match[1]) if match else None
    if value in allowed:
        return value, []
    return None, [
        f"{cell}: column {column}: answer '{text}' is not one of {', '.join(map(str, allowed))}"
    ]


def _qualtrics_response(
    response: Mapping[str, str], key: pd.DataFrame, rater: str | None, cell: Cell
) -> tuple[list[dict], list[str]]:
    """One respondent's answers as tidy rows (one per quartet x position)."""
    rows, problems = [], []
    positions = positions_of(key)
    for quartet in sorted(key["quartet"].unique()):
        chosen, chosen_problems = _answer(response, f"Q{quartet}_real", cell, positions)
        problems += chosen_problems
        for position in positions:
            rating, rating_problems = _answer(
                response, f"Q{quartet}_rating_{position}", cell, LIKERT_LEVELS
            )
            problems += rating_problems
            rows.append(
                {
                    "source": cell.source,
                    "data_row": cell.data_row,
                    "rater": rater,
                    "quartet": int(quartet),
                    "position": position,
                    "chosen_real": None if chosen is None else int(chosen == position),
                    "rating": rating,
                }
            )
    return rows, problems


def _qualtrics_response_problems(
    response: Mapping[str, str], rater_column: str, cell: Cell
) -> list[str]:
    problems = []
    if not response[rater_column].strip():
        problems.append(f"{cell}: column {rater_column}: rater id is empty")
    if response.get("Status", "").strip() in QUALTRICS_REJECTED_STATUS:
        problems.append(
            f"{cell}: Status '{response['Status'].strip()}' is not a rater's response; "
            "delete it from the export"
        )
    return problems


def from_qualtrics(csv_path: Path, key: pd.DataFrame, *, rater_column: str) -> pd.DataFrame:
    """A Qualtrics choice-text export (question naming in the module docstring) as tidy ratings."""
    source = str(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        lines = list(csv.reader(handle))
    if len(lines) < QUALTRICS_HEADER_ROWS:
        raise RatingsError(
            [f"{source}: fewer than {QUALTRICS_HEADER_ROWS} header rows; not a Qualtrics export"]
        )
    columns = lines[0]
    problems = _qualtrics_columns(columns, key, rater_column, source)
    if problems:
        raise RatingsError(problems)
    rows: list[dict] = []
    for index, values in enumerate(lines[QUALTRICS_HEADER_ROWS:], start=1):
        cell = Cell(source, index)
        if len(values) != len(columns):
            problems.append(f"{cell}: {len(values)} fields, expected {len(columns)}")
            continue
        response = dict(zip(columns, values))
        problems += _qualtrics_response_problems(response, rater_column, cell)
        response_rows, response_problems = _qualtrics_response(
            response, key, response[rater_column].strip() or None, cell
        )
        rows += response_rows
        problems += response_problems
    parsed = parsed_frame(rows)
    problems += structure_problems(parsed, key) if len(parsed) else [f"{source}: no responses"]
    if problems:
        raise RatingsError(problems)
    return tidy_ratings(parsed)
