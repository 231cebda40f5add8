"""Facts of the Cervical Spine X-ray Atlas (CSXA V3.0) on-disk format, shared by the demo
generator (which imitates it) and the preprocessing stage (which reads it)."""

from __future__ import annotations

import re

#: The 23 point labels of a CSXA LabelMe file, in the order radsynth stores keypoints.
KEYPOINT_LABELS: tuple[str, ...] = (
    "C2 centroid",
    "C2 bottom left",
    "C2 bottom right",
    *(
        f"C{level} {corner}"
        for level in range(3, 8)
        for corner in ("top left", "top right", "bottom left", "bottom right")
    ),
)

#: CSXA's per-image metadata sheet (`datasets.xlsx`, Sheet1, header in row 1; Ran et al., Sci Data
#: 2024): the column naming the image and the column of its pixel equivalent, mm per pixel (one
#: value: square pixels). The id column holds the 7-digit stem; a spreadsheet stores it as a number
#: and drops its leading zeros, so numbers are zero-padded back. The pixel-equivalent header is the
#: data descriptor's term, not checked against the sheet from here: a table without it fails,
#: naming the headers it has.
METADATA_ID_COLUMN = "Number"
METADATA_SPACING_COLUMN = "Pixel equivalent"

#: A CSXA image stem: 4-digit case number followed by the 3-digit patient age ("0001035").
STEM_PATTERN = re.compile(r"^(?P<case>\d{4})(?P<age>\d{3})$")


def make_stem(case: int, age: int) -> str:
    """The CSXA file stem for a case number and an age in years."""
    if not (0 <= case <= 9999 and 0 <= age <= 999):
        raise ValueError(f"case {case} / age {age} do not fit CSXA's 4+3 digit stem")
    return f"{case:04d}{age:03d}"
