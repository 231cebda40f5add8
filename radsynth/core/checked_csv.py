"""Reading a CSV table column by column with checks whose errors name the file, line and column.

The readers of the pipeline's own tables (the training index and loss log, the FID table) share
these checks, so a hand-edited or truncated file fails the same way whichever stage reads it.
Leading '#' provenance lines (radsynth.core.tables) are skipped; line numbers count them, so an
error names the line a person sees in an editor (header = the line after them).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: The recorded attribute naming the CSV a frame was read from, for error messages and paths.
SOURCE_ATTR = "source"


def read_text_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """The CSV as strings (blanks kept as ""), after checking that every expected column is
    there; the frame's index is each row's line number in the file."""
    try:
        comment_lines = _leading_comment_lines(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skiprows=comment_lines)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: file not found") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    frame.index = pd.RangeIndex(comment_lines + 2, comment_lines + 2 + len(frame))
    return frame.fillna("")


def _leading_comment_lines(path: Path) -> int:
    with Path(path).open(encoding="utf-8") as handle:
        return sum(1 for _ in itertools.takewhile(lambda line: line.startswith("#"), handle))


def line_of(values: pd.Series | pd.DataFrame, row: int) -> int:
    """The file line of a row (the index `read_text_table` set)."""
    return int(values.index[row])


def numeric_column(
    frame: pd.DataFrame, path: Path, column: str, *, integer: bool, optional: bool
) -> pd.Series:
    """One column as numbers; the first blank (unless `optional`), non-numeric, non-finite or
    non-integer cell raises naming the file, its line and the column."""
    text = frame[column].str.strip()
    blank = text == ""
    values = pd.to_numeric(text.where(~blank), errors="coerce").astype(float)
    bad = ~blank & ~np.isfinite(values)
    if not optional:
        bad |= blank
    if integer:
        bad |= ~blank & np.isfinite(values) & (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer" if integer else "a finite number"
        raise ValueError(
            f"{path} line {line_of(text, row)}, column {column!r}: {text.iloc[row]!r} is not {kind}"
        )
    return values.astype("int64") if integer and not optional else values


def require_increasing(values: pd.Series, path: Path, column: str) -> None:
    """Rows must be in strictly increasing order of `column`."""
    steps = values.to_numpy()
    bad = np.flatnonzero(np.diff(steps) <= 0)
    if len(bad):
        row = int(bad[0]) + 1
        raise ValueError(
            f"{path} line {line_of(values, row)}, column {column!r}: "
            f"{steps[row]} does not follow {steps[row - 1]}"
        )


def source_of(frame: pd.DataFrame, what: str) -> str:
    """The file a frame was read from, or a description when it was built in memory."""
    return str(frame.attrs.get(SOURCE_ATTR, f"<{what} given as a DataFrame>"))
