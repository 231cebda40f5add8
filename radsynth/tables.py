"""CSV tables with their provenance: '#' comment lines first, then the table, written atomically.

pandas reads them back with `comment="#"`; a person opening one sees which code and config
made it before the first row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pandas as pd


def write_table(frame: pd.DataFrame, out_csv: Path, *, provenance: Mapping[str, str]) -> None:
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for key, value in provenance.items():
            handle.write(f"# {key}: {value}\n")
        frame.to_csv(handle, index=False)
    os.replace(tmp, out_csv)


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
