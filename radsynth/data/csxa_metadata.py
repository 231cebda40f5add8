"""Reading CSXA's per-image metadata table (its layout: `radsynth.data.csxa`), of which radsynth
uses the pixel spacing.

Kept apart from `csxa`, which the atlas reader imports: reading the table needs pandas, reading an
atlas only h5py and numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.core.checked_csv import line_of, numeric_column, read_text_table
from radsynth.data.csxa import METADATA_ID_COLUMN, METADATA_SPACING_COLUMN, STEM_PATTERN


def read_pixel_spacing(path: Path) -> dict[str, float]:
    """Stem -> mm per pixel from a metadata table in CSXA's layout (.xlsx, or .csv as the demo
    writes it); a blank spacing is NaN (unknown). A malformed row (an id that is not a 7-digit
    stem, a repeated id, a spacing that is not a positive number) raises naming the file, its
    line (the sheet's row) and the column."""
    path = Path(path)
    columns = (METADATA_ID_COLUMN, METADATA_SPACING_COLUMN)
    if path.suffix.lower() == ".xlsx":
        table = _read_excel_text(path, columns)
    else:
        table = read_text_table(path, columns)
    stems = [_stem_of(path, line, cell) for line, cell in table[METADATA_ID_COLUMN].items()]
    spacing = numeric_column(table, path, METADATA_SPACING_COLUMN, integer=False, optional=True)
    bad = np.flatnonzero((spacing <= 0).to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"{path} line {line_of(spacing, row)}, column {METADATA_SPACING_COLUMN!r}: "
            f"{table[METADATA_SPACING_COLUMN].iloc[row].strip()!r} is not a positive mm per pixel"
        )
    seen: dict[str, int] = {}
    for line, stem in zip(table.index, stems, strict=True):
        if stem in seen:
            raise ValueError(
                f"{path} line {line}, column {METADATA_ID_COLUMN!r}: image {stem} is already on "
                f"line {seen[stem]}"
            )
        seen[stem] = int(line)
    return dict(zip(stems, spacing.astype(float).tolist(), strict=True))


def _read_excel_text(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The first sheet as text, indexed by sheet row (header = row 1), like `read_text_table`."""
    try:
        table = pd.read_excel(path, sheet_name=0, dtype=str, keep_default_na=False)
    except ImportError as exc:
        raise ImportError(f"{path}: reading .xlsx needs the openpyxl package ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable spreadsheet ({exc})") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; its columns are {list(table.columns)}"
        )
    table.index = pd.RangeIndex(2, 2 + len(table))
    return table.fillna("")


def _stem_of(path: Path, line: int, cell: str) -> str:
    text = str(cell).strip()
    if re.fullmatch(r"\d{1,7}(\.0+)?", text):
        text = f"{int(float(text)):07d}"
    if not STEM_PATTERN.match(text):
        raise ValueError(
            f"{path} line {line}, column {METADATA_ID_COLUMN!r}: {cell!r} is not a 7-digit "
            "CSXA image stem"
        )
    return text
