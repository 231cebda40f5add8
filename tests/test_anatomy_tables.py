"""The anatomy stage's result-table readers (radsynth.anatomy.tables): typed values of tables the
stage's writers wrote, and errors naming the file, line and column of a bad table."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from radsynth.anatomy.tables import (
    read_landmark_summary,
    read_two_sample_table,
    read_utility_summary,
)
from radsynth.anatomy.utility import summarise_utility
from radsynth.core.tables import write_table

PROVENANCE = {"code": "test"}  # one '#' line: the header is line 2, the first row line 3


def test_the_module_imports_no_torch():
    """A later stage reads the tables without loading torch."""
    probe = "import sys, radsynth.anatomy.tables; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_utility_summary_round_trip(tmp_path: Path) -> None:
    """The stage's summary, written and read back: MRE 2 and 4 px over two seeds are 3 +/- sqrt 2
    px; one seed has no std; no spacing, no mm figures."""
    results = pd.DataFrame(
        {
            "arm": ["real 100%", "real 100%", "synthetic"],
            "real_fraction": [1.0, 1.0, 0.0],
            "synthetic": [False, False, True],
            "seed": [0, 1, 0],
            "n_real": [8, 8, 0],
            "n_synthetic": [0, 0, 12],
            "mre_px": [2.0, 4.0, 5.5],
            "mre_mm": [float("nan")] * 3,
        }
    )
    path = tmp_path / "utility_summary.csv"
    write_table(summarise_utility(results), path, provenance=PROVENANCE)
    table = read_utility_summary(path)
    assert table["arm"].tolist() == ["real 100%", "synthetic"]
    assert table["synthetic"].tolist() == [False, True]
    assert table["synthetic"].dtype == bool
    assert table["seeds"].tolist() == [2, 1]
    assert table["n_synthetic"].tolist() == [0, 12]
    assert table["mre_px_mean"].tolist() == [3.0, 5.5]
    assert table["mre_px_std"].iloc[0] == pytest.approx(math.sqrt(2))
    assert math.isnan(table["mre_px_std"].iloc[1])
    assert table[["mre_mm_mean", "mre_mm_std"]].isna().all().all()


def test_landmark_summary_keeps_its_leading_columns(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    write_table(
        pd.DataFrame(
            {
                "predictor": ["landmark model", "mean shape"],
                "n_images": [4, 4],
                "n_images_with_spacing": [0, 0],
                "n_images_without_spacing": [4, 4],
                "mre_px": [2.5, 9.75],
                "mre_mm": [None, None],
                "sdr_2mm": [None, None],
            }
        ),
        path,
        provenance=PROVENANCE,
    )
    table = read_landmark_summary(path)
    assert "sdr_2mm" not in table.columns
    assert table["n_images"].tolist() == [4, 4]
    assert table["mre_px"].tolist() == [2.5, 9.75]
    assert table["mre_mm"].isna().all()


TWO_SAMPLE = {
    "step": [50],
    "checkpoint": [1],
    "auroc": [0.62],
    "auroc_low": [0.55],
    "auroc_high": [0.7],
    "level": [0.95],
    "n_real_train": [8],
    "n_synthetic_train": [6],
    "n_real_test": [4],
    "n_synthetic_test": [6],
}


def test_a_missing_column_fails_naming_the_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "two_sample.csv"
    write_table(pd.DataFrame(TWO_SAMPLE).drop(columns="level"), path, provenance=PROVENANCE)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(path))}: missing column\(s\) \['level'\]"
    ):
        read_two_sample_table(path)


def test_a_bad_cell_fails_naming_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "two_sample.csv"
    write_table(pd.DataFrame({**TWO_SAMPLE, "n_real_test": [4.5]}), path, provenance=PROVENANCE)
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))} line 3, column 'n_real_test': '4.5' is not an integer",
    ):
        read_two_sample_table(path)


def test_a_bad_boolean_fails_naming_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "utility_summary.csv"
    row = {
        "arm": ["synthetic"],
        "real_fraction": [0.0],
        "synthetic": ["yes"],
        "n_real": [0],
        "n_synthetic": [12],
        "seeds": [1],
        "mre_px_mean": [5.5],
        "mre_px_std": [None],
        "mre_mm_mean": [None],
        "mre_mm_std": [None],
    }
    write_table(pd.DataFrame(row), path, provenance=PROVENANCE)
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))} line 3, column 'synthetic': 'yes' is not True or False",
    ):
        read_utility_summary(path)
