"""CSV tables with their provenance: '#' comment lines first, then the table, written atomically.

pandas reads them back with `comment="#"`; a person opening one sees which code and config
made it before the first row."""

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


def read_table(path: Path, **read_csv_kwargs) -> pd.DataFrame:
    return pd.read_csv(path, comment="#", **read_csv_kwargs)


def read_table_provenance(path: Path) -> dict[str, str]:
    """The provenance lines of a table written by `write_table`."""
    provenance = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("# "):
                break
            key, _, value = line[2:].rstrip("\n").partition(": ")
            provenance[key] = value
    return provenance
