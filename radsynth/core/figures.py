"""Saving figures the same way everywhere: atomically, with provenance in the PNG's text chunks
(the whole record as JSON under "provenance", plus one "provenance_<key>" chunk per key), so a
figure pasted into a manuscript can be traced back to the code and config that made it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from radsynth.core.atomic import atomic_output


def png_metadata(
    provenance: Mapping[str, Any], *, title: str, description: str = ""
) -> dict[str, str]:
    return {
        "Title": title,
        "Description": description,
        "Software": "radsynth",
        "provenance": json.dumps(dict(provenance), sort_keys=True),
        **{f"provenance_{key}": str(value) for key, value in provenance.items()},
    }


def save_figure(
    figure: Figure,
    out_png: Path,
    *,
    title: str,
    provenance: Mapping[str, Any],
    description: str = "",
    dpi: float | None = None,
    **extra_metadata: str,
) -> Path:
    out_png = Path(out_png)
    metadata = {**png_metadata(provenance, title=title, description=description), **extra_metadata}
    with atomic_output(out_png) as temporary:
        figure.savefig(
            temporary, format="png", dpi=dpi if dpi is not None else "figure", metadata=metadata
        )
    return out_png
