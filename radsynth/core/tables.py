"""CSV tables with their provenance: '#' comment lines first, then the table, written atomically.

A person opening one sees which code and config made it before the first row. `read_table` skips
exactly those leading lines rather than reading with pandas' `comment="#"`, which would cut a
field at an unquoted '#' (an image named `a#1.png`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from radsynth.core.atomic import atomic_output


def write_table(frame: pd.DataFrame, out_csv: Path, *, provenance: Mapping[str, str]) -> None:
    with atomic_output(Path(out_csv)) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        for key, value in provenance.items():
            handle.write(f"# {key}: {value}\n")
        frame.to_csv(handle, index=False)


def provenance_lines(path: Path) -> list[tuple[str, str]]:
    """(key, value) of each leading '# key: value' line of a table written by `write_table`."""
    lines = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("# "):
                break
            key, _, value = line[2:].rstrip("\n").partition(": ")
            lines.append((key, value))
    return lines


def read_table(path: Path, **read_csv_kwargs) -> pd.DataFrame:
    return pd.read_csv(path, skiprows=len(provenance_lines(path)), **read_csv_kwargs)


def read_table_provenance(path: Path) -> dict[str, str]:
    """The provenance record of a table written by `write_table`."""
    return dict(provenance_lines(path))
