"""Pieces of the project's self-contained offline HTML pages (the rating form, the review pages):
shared so that every page has the same head (a Content-Security-Policy that forbids any network
request, provenance, the base stylesheet), the same script helpers (saved progress, CSV export),
and escapes its data the same way.

The pieces live in templates/ beside this module: head.html, base.css and offline_page.js. A
page template starts with {{PAGE_HEAD}}, adds its own <style> and closes </head>; its script
starts with {{OFFLINE_SCRIPT}} (the `OfflinePage` object). Scripts and styles are inlined, so a
page works from file://; images are inlined too, or (the screening review's sprite sheets) files
beside the page, which the policy admits from the page's own origin or the local disk (img-src
'self' file:; browsers differ on whether 'self' covers file: URLs), never from the network.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path

#: A template field: {{NAME}}, filled in one pass so inserted text is never re-substituted.
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
TEMPLATES = Path(__file__).resolve().parent / "templates"


def fill_template(template: str, fields: Mapping[str, str], *, name: str) -> str:
    """`template` (the text of the file `name`) with every {{FIELD}} filled in one pass, so
    inserted text is never re-substituted. Fields and placeholders must match."""
    found = set(PLACEHOLDER.findall(template))
    if found != set(fields):
        raise ValueError(
            f"{name}: placeholders {sorted(found)} do not match fields {sorted(fields)}"
        )
    return PLACEHOLDER.sub(lambda match: fields[match.group(1)], template)


def page_fields(title: str, provenance: Mapping[str, str]) -> dict[str, str]:
    """PAGE_HEAD (doctype to the base stylesheet, the <head> left open for the page's own
    style) and OFFLINE_SCRIPT, for a page titled `title`."""
    head = TEMPLATES / "head.html"
    fields = {
        "TITLE": html.escape(title),
        "PROVENANCE_META": provenance_meta(provenance),
        "BASE_STYLE": (TEMPLATES / "base.css").read_text(encoding="utf-8"),
    }
    return {
        "PAGE_HEAD": fill_template(head.read_text(encoding="utf-8"), fields, name=str(head)),
        "OFFLINE_SCRIPT": (TEMPLATES / "offline_page.js").read_text(encoding="utf-8"),
    }


def script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no '<' can close it early."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def provenance_meta(provenance: Mapping[str, str]) -> str:
    """Provenance as <meta> elements, readable in the saved page without running it."""
    return "\n".join(
        f'<meta name="radsynth:{html.escape(str(key))}" content="{html.escape(str(value))}">'
        for key, value in provenance.items()
    )
