"""Pieces of the project's self-contained offline HTML pages (the rating form, the review pages):
shared so that every page escapes its data and records its provenance the same way."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping

#: A template field: {{NAME}}, filled in one pass so inserted text is never re-substituted.
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no '<' can close it early."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def provenance_meta(provenance: Mapping[str, str]) -> str:
    """Provenance as <meta> elements, readable in the saved page without running it."""
    return "\n".join(
        f'<meta name="radsynth:{html.escape(str(key))}" content="{html.escape(str(value))}">'
        for key, value in provenance.items()
    )
