"""Clinical Turing test ratings: the answer key, the tidy ratings and their validation.

The statistics are only as good as the table they read, so every file is checked in
full and *all* problems are reported together in one `RatingsError`, each naming the
file, the 1-based data row (the first row under the header is data row 1) and the
problem. Nothing is dropped silently.

Formats
-------
Answer key CSV: ``quartet`` (1..Q), ``position`` (1..G), ``group`` (``"real"`` or a
checkpoint label such as ``"ckpt034"``), ``image`` (file name). A study of n checkpoints has
G = 1 + n groups (the paper: 1 real + 3 checkpoints, G = 4); every quartet holds positions
1..G, exactly one real image and every checkpoint label once. "Quartet" is the paper's word
and is kept whatever G is.

Tidy ratings: a folder of CSV files, one or more per rater, columns ``rater, quartet,
position, chosen_real, rating``; one row per rater x quartet x position. ``chosen_real``
is 1 on the one image the rater picked as real, 0 elsewhere; ``rating`` is the 1-4
Likert realism score (1 = unrealistic, 4 = fully realistic).

A Qualtrics export becomes tidy ratings through `radsynth.turing.qualtrics`.

Simulated ratings (`simulate_ratings`, for the demo) carry rater ids starting with
`SIMULATED_RATER_PREFIX` and ``attrs["simulated"] = True``; `require_simulated_flag`
refuses to treat them as real ratings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.core.atomic import atomic_output

KEY_COLUMNS: tuple[str, ...] = ("quartet", "position", "group", "image")
RATING_COLUMNS: tuple[str, ...] = ("rater", "quartet", "position", "chosen_real", "rating")
#: The 4-point Likert scale of the paper (1 = unrealistic, 4 = fully realistic).
LIKERT_LEVELS: tuple[int, ...] = (1, 2, 3, 4)
REAL_GROUP = "real"
SIMULATED_RATER_PREFIX = "simulated-"
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


class RatingsError(ValueError):
    """Every problem found in a key or ratings file, so one run shows them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in the Turing test input:\n" + "\n".join(problems)
        )


@dataclass(frozen=True)
class Cell:
    """Where a value came from, for error messages."""

    source: str
    data_row: int

    def __str__(self) -> str:
        return f"{self.source}: data row {self.data_row}"


def parse_int(text: str, allowed: tuple[int, ...] | None = None) -> int | None:
    """The integer in `text`, or None when it is not an integer (or not in `allowed`)."""
    if not _INTEGER.match(text):
        return None
    value = int(text)
    return value if allowed is None or value in allowed else None


def _read_text_csv(path: Path) -> pd.DataFrame:
    """A CSV as strings, blank lines kept so data row numbers match the file's lines."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)


def _missing_columns(frame: pd.DataFrame, required: tuple[str, ...], source: str) -> list[str]:
    missing = [column for column in required if column not in frame.columns]
    return [f"{source}: missing column(s) {', '.join(missing)}"] if missing else []


def _key_row_problems(row: Mapping[str, str], cell: Cell) -> list[str]:
    problems = []
    if parse_int(row["quartet"]) is None or int(row["quartet"]) < 1:
        problems.append(f"{cell}: quartet '{row['quartet']}' is not a positive integer")
    if parse_int(row["position"]) is None or int(row["position"]) < 1:
        problems.append(f"{cell}: position '{row['position']}' is not a positive integer")
    for column in ("group", "image"):
        if not row[column].strip():
            problems.append(f"{cell}: {column} is empty")
    return problems


def positions_of(key: pd.DataFrame) -> tuple[int, ...]:
    """Positions 1..G of a study whose key holds G groups (1 real + one per checkpoint)."""
    return tuple(range(1, key["group"].nunique() + 1))


def _quartet_problems(key: pd.DataFrame, source: str) -> list[str]:
    """Each quartet: positions 1..G once, one real image, every checkpoint once; quartets 1..Q."""
    problems = []
    positions = list(positions_of(key))
    for quartet, rows in key.groupby("quartet"):
        if sorted(rows["position"]) != positions:
            problems.append(
                f"{source}: quartet {quartet} has positions {sorted(rows['position'])}, "
                f"expected {', '.join(map(str, positions))} (one per group)"
            )
        n_real = int((rows["group"] == REAL_GROUP).sum())
        if n_real != 1:
            problems.append(
                f"{source}: quartet {quartet} has {n_real} real images, expected exactly 1"
            )
        for group, count in (
            rows["group"][rows["group"] != REAL_GROUP].value_counts().sort_index().items()
        ):
            if count > 1:
                problems.append(
                    f"{source}: quartet {quartet} has checkpoint {group} {count} times, "
                    "expected once"
                )
    quartets = sorted(key["quartet"].unique())
    for group, rows in key[key["group"] != REAL_GROUP].groupby("group"):
        missing = sorted(set(quartets) - set(rows["quartet"]))
        if missing:
            problems.append(
                f"{source}: checkpoint {group} is missing from quartet(s) "
                f"{', '.join(map(str, missing))}"
            )
    if quartets != list(range(1, len(quartets) + 1)):
        problems.append(
            f"{source}: quartets {', '.join(map(str, quartets))} "
            f"are not numbered 1..{len(quartets)} without gaps"
        )
    for image in key["image"][key["image"].duplicated()].unique():
        problems.append(f"{source}: image {image} appears in more than one row")
    return problems


def load_key(path: Path) -> pd.DataFrame:
    """The answer key, validated: the ground truth every rating is scored against."""
    source = str(path)
    text = _read_text_csv(path)
    problems = _missing_columns(text, KEY_COLUMNS, source)
    if problems:
        raise RatingsError(problems)
    for index, row in enumerate(text[list(KEY_COLUMNS)].to_dict("records"), start=1):
        problems += _key_row_problems(row, Cell(source, index))
    if problems:
        raise RatingsError(problems)
    key = pd.DataFrame(
        {
            "quartet": text["quartet"].map(int),
            "position": text["position"].map(int),
            "group": text["group"].str.strip(),
            "image": text["image"].str.strip(),
        }
    )
    problems = _quartet_problems(key, source)
    if problems:
        raise RatingsError(problems)
    return key.sort_values(["quartet", "position"], ignore_index=True)


def _rating_row(
    row: Mapping[str, str], cell: Cell, key_cells: set[tuple[int, int]], key_quartets: set[int]
) -> tuple[dict, list[str]]:
    """One tidy row parsed field by field; unparsable fields become None and a problem."""
    parsed = {
        "source": cell.source,
        "data_row": cell.data_row,
        "rater": row["rater"].strip() or None,
        "quartet": parse_int(row["quartet"]),
        "position": parse_int(row["position"]),
        "chosen_real": parse_int(row["chosen_real"], (0, 1)),
        "rating": parse_int(row["rating"], LIKERT_LEVELS),
    }
    problems = []
    if parsed["rater"] is None:
        problems.append(f"{cell}: rater is empty")
    if parsed["quartet"] is None:
        problems.append(f"{cell}: quartet '{row['quartet']}' is not an integer")
    elif parsed["quartet"] not in key_quartets:
        problems.append(f"{cell}: quartet {parsed['quartet']} is not in the answer key")
    if parsed["position"] is None:
        problems.append(f"{cell}: position '{row['position']}' is not an integer")
    elif (
        parsed["quartet"] in key_quartets
        and (parsed["quartet"], parsed["position"]) not in key_cells
    ):
        problems.append(
            f"{cell}: quartet {parsed['quartet']} position {parsed['position']} "
            "is not in the answer key"
        )
    if parsed["chosen_real"] is None:
        problems.append(f"{cell}: chosen_real '{row['chosen_real']}' is not 0 or 1")
    if parsed["rating"] is None:
        problems.append(f"{cell}: rating '{row['rating']}' is not an integer from 1 to 4")
    return parsed, problems


def parsed_frame(rows: list[dict]) -> pd.DataFrame:
    """Parsed rows with where they came from; unparsable values are missing."""
    return pd.DataFrame(rows, columns=["source", "data_row", *RATING_COLUMNS])


def _parse_ratings_file(path: Path, key: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    source = str(path)
    try:
        text = _read_text_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        return parsed_frame([]), [f"{source}: cannot be read as CSV ({error})"]
    problems = _missing_columns(text, RATING_COLUMNS, source) or (
        [f"{source}: no data rows"] if text.empty else []
    )
    if problems:
        return parsed_frame([]), problems
    key_cells = set(zip(key["quartet"], key["position"]))
    key_quartets = set(key["quartet"])
    rows = []
    for index, row in enumerate(text[list(RATING_COLUMNS)].to_dict("records"), start=1):
        parsed, row_problems = _rating_row(row, Cell(source, index), key_cells, key_quartets)
        rows.append(parsed)
        problems += row_problems
    return parsed_frame(rows), problems


def _duplicate_row_problems(parsed: pd.DataFrame) -> list[str]:
    """The same rater x quartet x position twice: a rater must not vote twice on an image."""
    ids = parsed.dropna(subset=["rater", "quartet", "position"])
    repeated = ids[ids.duplicated(["rater", "quartet", "position"], keep=False)]
    problems = []
    for (source, rater, quartet, position), rows in repeated.groupby(
        ["source", "rater", "quartet", "position"], sort=True
    ):
        listed = ", ".join(str(row) for row in rows["data_row"])
        problems.append(
            f"{source}: data rows {listed} repeat rater {rater} "
            f"quartet {int(quartet)} position {int(position)}"
        )
    return problems


def _rater_file_problems(parsed: pd.DataFrame) -> list[str]:
    """A rater id in two files: two people sharing an id, or one rater counted twice."""
    problems = []
    for rater, sources in parsed.dropna(subset=["rater"]).groupby("rater")["source"]:
        files = sorted(set(sources))
        if len(files) > 1:
            problems.append(f"rater {rater} appears in more than one file: {', '.join(files)}")
    return problems


def _rater_quartet_problems(
    rows: pd.DataFrame, key_quartets: list[int], positions: tuple[int, ...], source: str, rater: str
) -> list[str]:
    """One rater: every key quartet present with all its positions and exactly one chosen real."""
    problems = []
    missing = sorted(set(key_quartets) - set(rows["quartet"]))
    if missing:
        problems.append(
            f"{source}: rater {rater} is missing quartet(s) {', '.join(map(str, missing))}"
        )
    for quartet, cells in rows.groupby("quartet"):
        absent = sorted(set(positions) - set(cells["position"]))
        if absent:
            problems.append(
                f"{source}: rater {rater} quartet {quartet} is missing position(s) "
                f"{', '.join(map(str, absent))}"
            )
        chosen = sorted(cells["position"][cells["chosen_real"] == 1])
        if cells["chosen_real"].notna().all() and len(chosen) != 1:
            where = f" (positions {', '.join(map(str, chosen))})" if chosen else ""
            problems.append(
                f"{source}: rater {rater} quartet {quartet}: "
                f"{len(chosen)} images chosen as real{where}, expected exactly 1"
            )
    return problems


def structure_problems(parsed: pd.DataFrame, key: pd.DataFrame) -> list[str]:
    """Checks across rows: duplicates, raters split over files, incomplete or ambiguous quartets."""
    problems = _duplicate_row_problems(parsed) + _rater_file_problems(parsed)
    key_cells = set(zip(key["quartet"], key["position"]))
    known = parsed.dropna(subset=["rater", "quartet", "position"])
    in_key = [cell in key_cells for cell in zip(known["quartet"], known["position"])]
    known = known.loc[np.asarray(in_key, dtype=bool)]
    key_quartets = sorted(key["quartet"].unique())
    for (source, rater), rows in known.groupby(["source", "rater"], sort=True):
        problems += _rater_quartet_problems(
            rows.astype({"quartet": int, "position": int}),
            key_quartets,
            positions_of(key),
            source,
            rater,
        )
    return problems


def tidy_ratings(parsed: pd.DataFrame) -> pd.DataFrame:
    tidy = parsed[list(RATING_COLUMNS)].astype(
        {"rater": str, "quartet": int, "position": int, "chosen_real": int, "rating": int}
    )
    return tidy.sort_values(["rater", "quartet", "position"], ignore_index=True)


def load_ratings(folder: Path, key: pd.DataFrame) -> pd.DataFrame:
    """All tidy ratings in `folder` (every *.csv, sorted), validated against the answer key."""
    paths = sorted(Path(folder).glob("*.csv"))
    if not paths:
        raise RatingsError([f"{folder}: no *.csv ratings files"])
    frames, problems = [], []
    for path in paths:
        frame, file_problems = _parse_ratings_file(path, key)
        frames += [frame] if len(frame) else []
        problems += file_problems
    parsed = pd.concat(frames, ignore_index=True) if frames else parsed_frame([])
    problems += structure_problems(parsed, key)
    if problems:
        raise RatingsError(problems)
    return tidy_ratings(parsed)


def write_ratings_csv(ratings: pd.DataFrame, path: Path) -> None:
    """Tidy ratings to one CSV (atomically), e.g. a converted Qualtrics export or the demo's
    raters."""
    with atomic_output(path) as temp:
        ratings[list(RATING_COLUMNS)].to_csv(temp, index=False)


def with_groups(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Ratings joined to the key's group of each quartet x position (validated ratings only)."""
    merged = ratings.merge(
        key[["quartet", "position", "group"]],
        on=["quartet", "position"],
        how="left",
        validate="many_to_one",
    )
    if merged["group"].isna().any():
        raise RatingsError(
            [
                "ratings hold quartet/position pairs not in the answer key; "
                "load them with load_ratings"
            ]
        )
    return merged


def require_simulated_flag(ratings: pd.DataFrame, simulated: bool) -> None:
    """Refuse to report simulated raters as if they were experts."""
    if simulated:
        return
    fake = sorted(
        {rater for rater in ratings["rater"] if str(rater).startswith(SIMULATED_RATER_PREFIX)}
    )
    if fake:
        raise RatingsError([f"raters {', '.join(fake)} are simulated; pass simulated=True"])
    if ratings.attrs.get("simulated"):
        raise RatingsError(
            ["ratings are marked simulated (attrs['simulated']); pass simulated=True"]
        )


def _simulation_problems(
    key: pd.DataFrame, n_raters: int, p_identify: float, mean_ratings: Mapping[str, float]
) -> list[str]:
    problems = []
    if n_raters < 1:
        problems.append(f"n_raters {n_raters} must be at least 1")
    if not 0.0 <= p_identify <= 1.0:
        problems.append(f"p_identify {p_identify} must lie in [0, 1]")
    if set(mean_ratings) != set(key["group"]):
        problems.append(
            f"mean_ratings groups {sorted(mean_ratings)} differ from the key's groups "
            f"{sorted(set(key['group']))}"
        )
    problems += [
        f"mean_ratings[{group}] = {mean} must lie in [1, 4]"
        for group, mean in mean_ratings.items()
        if not 1.0 <= mean <= 4.0
    ]
    return problems


def simulate_ratings(
    key: pd.DataFrame,
    *,
    n_raters: int,
    seed: int,
    p_identify: float,
    mean_ratings: Mapping[str, float],
) -> pd.DataFrame:
    """Demo ratings so the pipeline runs end to end without experts; flagged simulated everywhere.

    Each rater picks the real image with probability `p_identify`, otherwise one of the
    synthetic positions uniformly. Each rating is 1 + Binomial(3, (mean - 1) / 3), whose
    expectation is the group's `mean_ratings` value; ratings are independent of the choice.
    """
    problems = _simulation_problems(key, n_raters, p_identify, mean_ratings)
    if problems:
        raise RatingsError(problems)
    rng = np.random.default_rng(seed)
    rows = []
    for rater in [f"{SIMULATED_RATER_PREFIX}{number:02d}" for number in range(1, n_raters + 1)]:
        for quartet, cells in key.groupby("quartet", sort=True):
            real = int(cells["position"][cells["group"] == REAL_GROUP].iloc[0])
            fakes = sorted(int(p) for p in cells["position"] if p != real)
            chosen = real if rng.random() < p_identify else int(rng.choice(fakes))
            for position, group in zip(cells["position"], cells["group"]):
                rating = 1 + int(rng.binomial(3, (mean_ratings[group] - 1.0) / 3.0))
                rows.append(
                    {
                        "rater": rater,
                        "quartet": int(quartet),
                        "position": int(position),
                        "chosen_real": int(position == chosen),
                        "rating": rating,
                    }
                )
    ratings = pd.DataFrame(rows, columns=list(RATING_COLUMNS))
    ratings.attrs["simulated"] = True
    return ratings


def ratings_folder(ratings_input: Sequence[str] | str) -> Path:
    """The one folder a rule's ratings input lives in (a folder, or files of one folder)."""
    paths = (
        [Path(ratings_input)]
        if isinstance(ratings_input, (str, Path))
        else [Path(p) for p in ratings_input]
    )
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    folders = {path.parent for path in paths}
    if len(folders) != 1:
        raise ValueError(f"ratings files must share one folder, got {sorted(map(str, folders))}")
    return folders.pop()
