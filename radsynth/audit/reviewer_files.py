"""The files people place back after reviewing, read and checked one way for both of the audit's
human steps: screening decisions (reviewed copies of a screening manifest) and memorization
verdicts (the pairs page's exports).

A reviewer file is a CSV, optionally after '#' provenance lines, with a header naming the item
columns, the answer column and `reviewer` (the note column is optional). Blank answers are
skipped; an answer's case and spaces do not matter. Every fault names the file, the line and the
column.

One answer per reviewer and item, over all files (`check_one_answer_each`): a reviewer may
appear in many files (one export per sample set), but a second answer of the same reviewer on
the same item, in the same file or another, is refused naming both places. Two answers of one
person are not two opinions: counted as a conflict, a reviewer who changed their mind (a new
export left beside the old one) would exclude an image as if two reviewers disagreed; counted as
agreement, one person would pass for two. Which answer is meant only the reviewer knows, so the
merge asks instead of guessing.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class ReviewerFileFormat:
    """One kind of reviewer file: what identifies an item, what a reviewer answers about it."""

    #: What an item is called in messages ("image", "pair").
    item: str
    #: Columns that together name one item.
    item_columns: tuple[str, ...]
    #: The column holding the answer, and the answers allowed besides blank.
    answer_column: str
    answers: tuple[str, ...]
    #: The reviewer's free-text comment (reason, note): optional in a file.
    note_column: str
    #: What a file of this kind is, said when a column is missing.
    expected: str

    @property
    def record_columns(self) -> tuple[str, ...]:
        """One reviewer's answer on one item as the merge reads it, with where it was read."""
        return (
            *self.item_columns,
            "reviewer",
            self.answer_column,
            self.note_column,
            "file",
            "line",
        )

    def describe(self, key: tuple[str, ...]) -> str:
        return f"{self.item} {' x '.join(repr(value) for value in key)}"

    def keys(self, records: pd.DataFrame) -> list[tuple[str, ...]]:
        """Each record's item key, in record order."""
        return list(zip(*(records[column] for column in self.item_columns)))


def numbered_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV record after the '#' provenance lines, header first;
    blank lines skipped. A record spanning lines is numbered by its last line."""
    # utf-8-sig: spreadsheets add a byte-order mark
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        last_line = 0

        def data_lines() -> Iterator[str]:
            nonlocal last_line
            for number, text in enumerate(handle, start=1):
                last_line = number
                if not text.startswith("#"):
                    yield text

        for record in csv.reader(data_lines()):
            if record:
                yield last_line, record


def unknown_column(
    key: tuple[str, ...], known: Collection[tuple[str, ...]], columns: Sequence[str]
) -> str:
    """The first item column at which `key` leaves every known key: the field to correct."""
    for depth, column in enumerate(columns, start=1):
        if not any(other[:depth] == key[:depth] for other in known):
            return column
    return columns[-1]


def read_reviewer_file(
    path: Path, form: ReviewerFileFormat, known: Collection[tuple[str, ...]], source: str
) -> pd.DataFrame:
    """The answered rows of one reviewer file (form.record_columns). A missing column, an item
    not among `known` (the items of `source`), an answer not in form.answers or an answer
    without reviewer fails naming the file, line and column."""
    records = numbered_records(path)
    header_line, header = next(records, (0, []))
    required = (*form.item_columns, form.answer_column, "reviewer")
    missing = [column for column in required if column not in header]
    if missing:
        raise ValueError(
            f"{path}: line {header_line}: missing column(s) {', '.join(missing)}; {form.expected}"
        )
    answered = []
    for line, record in records:
        row = dict(zip(header, (field.strip() for field in record)))
        where = f"{path}: line {line}: column"
        key = tuple(row.get(column, "") for column in form.item_columns)
        if key not in known:
            column = unknown_column(key, known, form.item_columns)
            raise ValueError(f"{where} {column}: {form.describe(key)} is not in {source}")
        answer = " ".join(row.get(form.answer_column, "").lower().split())
        if answer and answer not in form.answers:
            raise ValueError(
                f"{where} {form.answer_column}: {row[form.answer_column]!r} is not one of "
                f"{', '.join(form.answers)} or blank"
            )
        if not answer:
            continue
        if not row.get("reviewer", ""):
            raise ValueError(
                f"{where} reviewer: blank, but the row has {form.answer_column} {answer!r}; "
                f"every {form.answer_column} needs its reviewer's id"
            )
        answered.append(
            (*key, row["reviewer"], answer, row.get(form.note_column, ""), str(path), line)
        )
    return pd.DataFrame(answered, columns=list(form.record_columns))


def check_one_answer_each(records: pd.DataFrame, form: ReviewerFileFormat) -> None:
    """One answer per reviewer and item over all files: a second fails naming both places."""
    first: dict[tuple[str, ...], tuple[str, int]] = {}
    for key, reviewer, file, line in zip(
        form.keys(records), records["reviewer"], records["file"], records["line"]
    ):
        if (reviewer, *key) in first:
            first_file, first_line = first[(reviewer, *key)]
            raise ValueError(
                f"{file}: line {line}: column reviewer: {reviewer!r} gives {form.describe(key)} "
                f"a second {form.answer_column} (first in {first_file}: line {first_line})"
            )
        first[(reviewer, *key)] = (file, line)


def read_reviewer_files(
    files: Sequence[Path],
    form: ReviewerFileFormat,
    known: Collection[tuple[str, ...]],
    source: str,
) -> pd.DataFrame:
    """Every answer of every file, in file then line order (form.record_columns), each reviewer
    answering each item at most once."""
    known = set(known)
    parts = [read_reviewer_file(Path(path), form, known, source) for path in files]
    parts = [part for part in parts if len(part)]
    records = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=list(form.record_columns))
    )
    check_one_answer_each(records, form)
    return records


def disputed(records: pd.DataFrame, form: ReviewerFileFormat) -> set[tuple[str, ...]]:
    """The items reviewers answered differently."""
    answers: dict[tuple[str, ...], set[str]] = {}
    for key, answer in zip(form.keys(records), records[form.answer_column]):
        answers.setdefault(key, set()).add(answer)
    return {key for key, given in answers.items() if len(given) > 1}
