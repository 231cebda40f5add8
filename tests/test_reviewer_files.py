"""The one reader of reviewer files (radsynth.audit.reviewer_files), through both of its callers:
the screening merge (reviewed manifests) and the pair-verdict merge (the pairs page's exports).
Every case runs against both, with the same messages expected."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from radsynth.audit.pair_verdicts import DISAGREEMENT, VERDICT_FILE, merge_pair_verdicts
from radsynth.audit.reviewer_files import read_reviewer_files
from radsynth.audit.screening import MANIFEST_COLUMNS, merge_reviews
from radsynth.core.tables import write_table


@dataclass
class Caller:
    """One merge, described by what its files look like and what its results say."""

    name: str
    header: str
    #: Two known items as a file writes them (their fields joined by ','), and how messages name
    #: them; an unknown item, the column a message names for it and how it names it.
    items: tuple[str, str]
    shown: tuple[str, str]
    unknown: str
    unknown_column: str
    unknown_shown: str
    answer_column: str
    answers: tuple[str, str]
    allowed: str
    source: str
    #: The message's tail for a file without any of the columns (none, then what the file is).
    missing_all: str
    tmp_path: Path

    def line(self, item: str, answer: str, reviewer: str, note: str = "") -> str:
        if self.name == "screening":
            return f"{item},{answer},{note},{reviewer}\n"
        return f"9,{item},{answer},{reviewer},{note}\n"

    def cut(self, item: str, answer: str | None = None) -> str:
        """A record cut short after the item, or after the answer when given (so without
        reviewer): a spreadsheet drops trailing empty cells."""
        fields = [item] if self.name == "screening" else ["9", item]
        return ",".join(fields if answer is None else [*fields, answer]) + "\n"

    def file(self, name: str, *lines: str) -> Path:
        """A reviewer file: one provenance line, the header, then the given lines (line 3 on)."""
        path = self.tmp_path / name
        path.write_text("# review_page: 0123\n" + self.header + "".join(lines), encoding="utf-8")
        return path

    def merge(self, files: list[Path]) -> tuple[dict[str, dict[str, str]], list[tuple]]:
        """(item -> reviewer -> answer as merged, the disagreements as (item, reviewer, answer,
        file name, line))."""
        if self.name == "screening":
            merged, conflicts = merge_reviews(self.manifest(), files)
            answered = {
                image: {}
                if by == "automated screen"
                else {who: ("both" if conflict else final) for who in by.split(";")}
                for image, by, final, conflict in zip(
                    merged["image_id"],
                    merged["decided_by"],
                    merged["final_decision"],
                    merged["conflict"],
                )
            }
            disputes = [
                (image, who, answer, Path(file).name, line)
                for image, who, answer, file, line in conflicts[
                    ["image_id", "reviewer", "decision", "file", "line"]
                ].itertuples(index=False)
            ]
            return answered, disputes
        merged, disagreements = merge_pair_verdicts(self.pairs_csv(), files)
        reviewers = [column for column in merged.columns if column.startswith("verdict_")]
        answered = {}
        for _, row in merged.iterrows():
            given = {
                column.removeprefix("verdict_"): row[column] for column in reviewers if row[column]
            }
            if row["consensus"] == DISAGREEMENT:
                given = dict.fromkeys(given, "both")
            answered[f"{row['real_id']},{row['synthetic_id']}"] = given
        disputes = [
            (f"{real},{synthetic}", who, answer, Path(file).name, line)
            for real, synthetic, who, answer, file, line in disagreements[
                ["real_id", "synthetic_id", "reviewer", "verdict", "file", "line"]
            ].itertuples(index=False)
        ]
        return answered, disputes

    def manifest(self) -> pd.DataFrame:
        frame = pd.DataFrame({column: "" for column in MANIFEST_COLUMNS}, index=range(2))
        return frame.assign(row=[1, 2], image_id=["img1", "img2"], proposed="include")

    def pairs_csv(self) -> Path:
        path = self.tmp_path / "pairs.csv"
        pairs = pd.DataFrame(
            {
                "rank": [1, 2],
                "real_id": ["r1", "r2"],
                "synthetic_id": ["s1", "s2"],
                "similarity": [0.99, 0.98],
                "patch_distance": [0.1, 0.2],
            }
        )
        write_table(pairs, path, provenance={})
        return path


@pytest.fixture(params=["screening", "pairs"])
def caller(request, tmp_path) -> Caller:
    if request.param == "screening":
        return Caller(
            name="screening",
            header="image_id,decision,reason,reviewer\n",
            items=("img1", "img2"),
            shown=("image 'img1'", "image 'img2'"),
            unknown="img9",
            unknown_column="image_id",
            unknown_shown="image 'img9'",
            answer_column="decision",
            answers=("include", "exclude"),
            allowed="include, exclude or blank",
            source="the screening manifest",
            missing_all=(
                "image_id, decision, reviewer; a reviewed manifest is a copy of "
                "screening_manifest.csv with decision, reason and reviewer filled in"
            ),
            tmp_path=tmp_path,
        )
    return Caller(
        name="pairs",
        header="rank,real_id,synthetic_id,verdict,reviewer,note\n",
        items=("r1,s1", "r2,s2"),
        shown=("pair 'r1' x 's1'", "pair 'r2' x 's2'"),
        unknown="r1,s9",
        unknown_column="synthetic_id",
        unknown_shown="pair 'r1' x 's9'",
        answer_column="verdict",
        answers=("memorized", "unrelated"),
        allowed="memorized, similar but distinct, unrelated or blank",
        source=str(tmp_path / "pairs.csv"),
        missing_all=(
            "real_id, synthetic_id, verdict, reviewer; a verdict file is the CSV the memorization "
            "review page exports"
        ),
        tmp_path=tmp_path,
    )


def refused(caller: Caller, files: list[Path]) -> str:
    with pytest.raises(ValueError) as error:
        caller.merge(files)
    return str(error.value)


def test_answers_are_read_whatever_their_case_and_spaces_after_a_byte_order_mark(caller):
    first, second = caller.answers
    path = caller.file(
        "alice.csv",
        caller.line(caller.items[0], f"  {first.upper()} ", "alice", "a note"),
        caller.line(caller.items[1], "", ""),
    )
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    answered, disputes = caller.merge([path])
    assert answered == {caller.items[0]: {"alice": first}, caller.items[1]: {}}
    assert disputes == []


def test_reviewers_who_disagree_are_listed_with_file_and_line(caller):
    first, second = caller.answers
    alice = caller.file("alice.csv", caller.line(caller.items[1], first, "alice"))
    bob = caller.file(
        "bob.csv",
        caller.line(caller.items[0], first, "bob"),
        caller.line(caller.items[1], second, "bob", "why"),
    )
    answered, disputes = caller.merge([alice, bob])
    assert answered == {
        caller.items[0]: {"bob": first},
        caller.items[1]: {"alice": "both", "bob": "both"},
    }
    assert disputes == [
        (caller.items[1], "alice", first, "alice.csv", 3),
        (caller.items[1], "bob", second, "bob.csv", 4),
    ]


def test_one_reviewer_may_answer_different_items_in_two_files(caller):
    """One export per sample set: the same reviewer in several files is expected."""
    first, second = caller.answers
    one = caller.file("alice_initial.csv", caller.line(caller.items[0], first, "alice"))
    two = caller.file("alice_large.csv", caller.line(caller.items[1], second, "alice"))
    answered, disputes = caller.merge([one, two])
    assert answered == {caller.items[0]: {"alice": first}, caller.items[1]: {"alice": second}}
    assert disputes == []


@pytest.mark.parametrize("same_answer", [True, False])
def test_one_reviewer_answering_an_item_in_two_files_is_refused(caller, same_answer):
    first, second = caller.answers
    old = caller.file("alice_old.csv", caller.line(caller.items[0], first, "alice"))
    new = caller.file(
        "alice_new.csv",
        caller.line(caller.items[1], first, "alice"),
        caller.line(caller.items[0], first if same_answer else second, "alice"),
    )
    assert refused(caller, [old, new]) == (
        f"{new}: line 4: column reviewer: 'alice' gives {caller.shown[0]} a second "
        f"{caller.answer_column} (first in {old}: line 3)"
    )


def test_one_reviewer_answering_an_item_twice_in_one_file_is_refused(caller):
    first, second = caller.answers
    path = caller.file(
        "alice.csv",
        caller.line(caller.items[0], first, "alice"),
        caller.line(caller.items[0], second, "alice"),
    )
    assert refused(caller, [path]) == (
        f"{path}: line 4: column reviewer: 'alice' gives {caller.shown[0]} a second "
        f"{caller.answer_column} (first in {path}: line 3)"
    )


def test_an_unknown_item_is_named(caller):
    path = caller.file(
        "alice.csv",
        caller.line(caller.items[0], caller.answers[0], "alice"),
        caller.line(caller.unknown, caller.answers[0], "alice"),
    )
    assert refused(caller, [path]) == (
        f"{path}: line 4: column {caller.unknown_column}: {caller.unknown_shown} is not in "
        f"{caller.source}"
    )


def test_an_answer_not_allowed_is_named(caller):
    path = caller.file("alice.csv", caller.line(caller.items[0], "maybe", "alice"))
    assert refused(caller, [path]) == (
        f"{path}: line 3: column {caller.answer_column}: 'maybe' is not one of {caller.allowed}"
    )


def test_an_answer_without_reviewer_is_named(caller):
    first, second = caller.answers
    path = caller.file(
        "alice.csv",
        caller.line(caller.items[0], first, "alice"),
        caller.line(caller.items[1], second, ""),
    )
    assert refused(caller, [path]) == (
        f"{path}: line 4: column reviewer: blank, but the row has {caller.answer_column} "
        f"{second!r}; every {caller.answer_column} needs its reviewer's id"
    )


def test_a_file_without_reviewer_column_is_named(caller):
    path = caller.tmp_path / "alice.csv"
    path.write_text(caller.header.replace(",reviewer", ""))
    assert re.match(
        rf"^{re.escape(str(path))}: line 1: missing column\(s\) reviewer; ", refused(caller, [path])
    )


def test_a_file_without_header_is_named_at_line_0(caller):
    path = caller.tmp_path / "alice.csv"
    path.write_text("# review_page: 0123\n")
    assert refused(caller, [path]) == f"{path}: line 0: missing column(s) {caller.missing_all}"


def test_files_without_any_answer_merge_to_no_answers(caller):
    path = caller.file(
        "alice.csv", caller.line(caller.items[0], "", "alice"), caller.line(caller.items[1], "", "")
    )
    answered, disputes = caller.merge([path])
    assert answered == {caller.items[0]: {}, caller.items[1]: {}}
    assert disputes == []


def test_a_row_cut_short_before_its_answer_is_blank_and_reading_goes_on(caller):
    first, second = caller.answers
    path = caller.file(
        "alice.csv", caller.cut(caller.items[0]), caller.line(caller.items[1], first, "alice")
    )
    answered, disputes = caller.merge([path])
    assert answered == {caller.items[0]: {}, caller.items[1]: {"alice": first}}
    assert disputes == []


def test_a_row_cut_short_before_its_reviewer_is_named(caller):
    first, second = caller.answers
    path = caller.file("alice.csv", caller.cut(caller.items[0], second))
    assert refused(caller, [path]) == (
        f"{path}: line 3: column reviewer: blank, but the row has {caller.answer_column} "
        f"{second!r}; every {caller.answer_column} needs its reviewer's id"
    )


# The reader itself, on verdict files (two item columns, a multi-word answer, a trailing note).

VERDICT_HEADER = "rank,real_id,synthetic_id,verdict,reviewer,note"
KNOWN_PAIRS = [("r1", "s1"), ("r2", "s2")]


def test_records_keep_notes_as_written_in_file_then_line_order(tmp_path):
    """A quoted note spanning lines keeps its CRLF (the csv module reads the file untranslated)
    and its record is numbered by its last line; a row cut before the note has a blank note."""
    alice, bob = tmp_path / "alice.csv", tmp_path / "bob.csv"
    alice.write_bytes(
        b"# review_page: 0123\r\n"
        + VERDICT_HEADER.encode()
        + b'\r\n1,r1,s1,  Similar  BUT distinct ,alice,"first\r\nsecond"\r\n'
        + b"2,r2,s2,memorized,alice\r\n"
    )
    bob.write_text(f"{VERDICT_HEADER}\n1,r1,s1,unrelated,bob,\n")
    records = read_reviewer_files([alice, bob], VERDICT_FILE, KNOWN_PAIRS, "pairs.csv")
    expected = pd.DataFrame(
        {
            "real_id": ["r1", "r2", "r1"],
            "synthetic_id": ["s1", "s2", "s1"],
            "reviewer": ["alice", "alice", "bob"],
            "verdict": ["similar but distinct", "memorized", "unrelated"],
            "note": ["first\r\nsecond", "", ""],
            "file": [str(alice), str(alice), str(bob)],
            "line": [4, 5, 2],
        }
    )
    pd.testing.assert_frame_equal(records, expected)


def test_files_without_answers_give_an_empty_table_with_every_column(tmp_path):
    path = tmp_path / "alice.csv"
    path.write_text(f"{VERDICT_HEADER}\n1,r1,s1,,alice,\n")
    records = read_reviewer_files([path], VERDICT_FILE, KNOWN_PAIRS, "pairs.csv")
    assert list(records.columns) == [
        "real_id",
        "synthetic_id",
        "reviewer",
        "verdict",
        "note",
        "file",
        "line",
    ]
    assert len(records) == 0


@pytest.mark.parametrize(
    ("record", "column", "shown"),
    [
        ("9,r9,s1,memorized,alice", "real_id", "pair 'r9' x 's1'"),
        ("9,r2,s1,memorized,alice", "synthetic_id", "pair 'r2' x 's1'"),
        ("9,r1", "synthetic_id", "pair 'r1' x ''"),
        ("9", "real_id", "pair '' x ''"),
    ],
)
def test_an_unknown_pair_names_the_first_id_no_known_pair_has(tmp_path, record, column, shown):
    """The real id is at fault when no known pair has it, else the synthetic id; a row cut short
    has blank ids."""
    path = tmp_path / "alice.csv"
    path.write_text(f"{VERDICT_HEADER}\n{record}\n")
    with pytest.raises(ValueError) as error:
        read_reviewer_files([path], VERDICT_FILE, KNOWN_PAIRS, "pairs.csv")
    assert str(error.value) == f"{path}: line 2: column {column}: {shown} is not in pairs.csv"
