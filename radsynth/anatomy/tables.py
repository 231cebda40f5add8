"""The anatomy stage's result tables as the stages after it read them (the release's dataset card):
the names of their rows and measures, their columns in order, and one reader per table.

The anatomy stage's writers build their tables from these names and columns, so a writer and the
readers agree by construction. Each reader types the table (text, integers, numbers, True/False)
and refuses a missing column or a bad cell naming the file, its line and the column. This module
imports no torch and none of the stage's work: a later stage imports it to read the files.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.core.checked_csv import SOURCE_ATTR, line_of, numeric_column, read_text_table

#: Rows of the landmark evaluation summary: the landmark model and the mean-shape baseline.
MODEL_ROW, BASELINE_ROW = "landmark model", "mean shape"
#: The set name of the real-vs-real floor in fidelity.csv and the Frechet-distance table.
FLOOR_SET = "real vs real"
#: The geometry table's C2-C7 angle and curvature class: its columns, and the measures of
#: fidelity.csv (the angle compared by W1, the curvature class by chi-square).
ANGLE_MEASURE, CURVATURE_MEASURE = "c2_c7_angle_deg", "curvature_class"
#: The curvature classes, in the order of fidelity.csv's share columns.
CURVATURE_CLASSES: tuple[str, ...] = ("lordotic", "straight", "kyphotic")

#: The landmark evaluation summary's leading columns, one row per predictor; the SDR shares and
#: landmark counts of `radsynth.anatomy.metrics.LandmarkScores.summary` follow them.
LANDMARK_SUMMARY_COLUMNS = (
    "predictor",
    "n_images",
    "n_images_with_spacing",
    "n_images_without_spacing",
    "mre_px",
    "mre_mm",
)
#: Columns of fidelity.csv, in order: one row per (set, step, measure).
FIDELITY_COLUMNS = (
    "set",
    "step",
    "measure",
    "n_reference",
    "n_compared",
    "w1",
    "w1_low",
    "w1_high",
    "chi2",
    "chi2_dof",
    "chi2_p",
    *(f"share_{name}_{side}" for name in CURVATURE_CLASSES for side in ("reference", "compared")),
)
#: Columns of the Frechet-distance table, in order: one row per FID checkpoint, then the floor's.
FD_COLUMNS = (
    "set",
    "step",
    "checkpoint",
    "n_reference",
    "n_compared",
    "reference",
    "landmark_fd",
    "inception_fid",
    "landmark_extractor",
    "landmark_weights",
    "warnings",
)
#: Columns of the two-sample table, in order: one row per FID checkpoint.
TWO_SAMPLE_COLUMNS = (
    "step",
    "checkpoint",
    "auroc",
    "auroc_low",
    "auroc_high",
    "level",
    "n_real_train",
    "n_synthetic_train",
    "n_real_test",
    "n_synthetic_test",
)
#: Columns of the utility summary, in order: one row per training set of the students.
UTILITY_SUMMARY_COLUMNS = (
    "arm",
    "real_fraction",
    "synthetic",
    "n_real",
    "n_synthetic",
    "seeds",
    "mre_px_mean",
    "mre_px_std",
    "mre_mm_mean",
    "mre_mm_std",
)


def boolean_column(text: pd.DataFrame, path: Path, column: str) -> pd.Series:
    """One column of True/False cells (as pandas writes a bool); any other cell raises naming
    the file, its line and the column."""
    values = text[column].str.strip()
    bad = ~values.isin(("True", "False"))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path} line {line_of(values, row)}, column {column!r}: {values.iloc[row]!r} is not "
            "True or False"
        )
    return values == "True"


def typed_table(
    path: Path,
    columns: Sequence[str],
    *,
    integers: Collection[str] = (),
    numbers: Collection[str] = (),
    booleans: Collection[str] = (),
    optional: Collection[str] = (),
) -> pd.DataFrame:
    """The table's `columns` in order (other columns left out): `integers` (blank in an
    `optional` one: <NA>), `numbers` (blank in an `optional` one: NaN), `booleans`, the rest
    text. Errors name the file, the line and the column."""
    path = Path(path)
    text = read_text_table(path, columns)
    frame = text[list(columns)].reset_index(drop=True)
    for column in integers:
        values = numeric_column(text, path, column, integer=True, optional=column in optional)
        frame[column] = (values.astype("Int64") if column in optional else values).to_numpy()
    for column in numbers:
        values = numeric_column(text, path, column, integer=False, optional=column in optional)
        frame[column] = values.to_numpy()
    for column in booleans:
        frame[column] = boolean_column(text, path, column).to_numpy()
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def read_landmark_summary(path: Path) -> pd.DataFrame:
    """The landmark evaluation summary's `LANDMARK_SUMMARY_COLUMNS`: held-out MRE in px, and in mm
    where the images had a pixel spacing (blank: NaN)."""
    return typed_table(
        path,
        LANDMARK_SUMMARY_COLUMNS,
        integers=("n_images", "n_images_with_spacing", "n_images_without_spacing"),
        numbers=("mre_px", "mre_mm"),
        optional=("mre_mm",),
    )


def read_fidelity_table(path: Path) -> pd.DataFrame:
    """fidelity.csv: set and measure as text, step an optional integer (blank for the floor), the
    counts and distances as numbers (blank: NaN)."""
    numbers = FIDELITY_COLUMNS[3:]
    return typed_table(
        path,
        FIDELITY_COLUMNS,
        integers=("step",),
        numbers=numbers,
        optional=("step", *numbers),
    )


def read_fd_table(path: Path) -> pd.DataFrame:
    """The Frechet-distance table: step and checkpoint optional integers (blank for the floor),
    the image counts integers, the distances numbers (blank: NaN), the rest text."""
    return typed_table(
        path,
        FD_COLUMNS,
        integers=("step", "checkpoint", "n_reference", "n_compared"),
        numbers=("landmark_fd", "inception_fid"),
        optional=("step", "checkpoint", "landmark_fd", "inception_fid"),
    )


def read_two_sample_table(path: Path) -> pd.DataFrame:
    """The two-sample table: the AUROC, its interval and level as numbers, the rest integers."""
    return typed_table(
        path,
        TWO_SAMPLE_COLUMNS,
        integers=(
            "step",
            "checkpoint",
            "n_real_train",
            "n_synthetic_train",
            "n_real_test",
            "n_synthetic_test",
        ),
        numbers=("auroc", "auroc_low", "auroc_high", "level"),
    )


def read_utility_summary(path: Path) -> pd.DataFrame:
    """The utility summary: arm as text, synthetic True/False, the counts integers, the MRE means
    and stds numbers (a std is blank for one seed, the mm figures without pixel spacings: NaN)."""
    return typed_table(
        path,
        UTILITY_SUMMARY_COLUMNS,
        integers=("n_real", "n_synthetic", "seeds"),
        numbers=("real_fraction", "mre_px_mean", "mre_px_std", "mre_mm_mean", "mre_mm_std"),
        booleans=("synthetic",),
        optional=("mre_px_std", "mre_mm_mean", "mre_mm_std"),
    )
