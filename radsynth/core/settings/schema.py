"""The config's JSON schema, generated from the settings models (the models are the source;
the schema is for editors, the workflow catalog and readers). Write it with
`python -m radsynth.core.settings.schema`; tests/test_config.py fails when the committed file
differs from what this generates.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from radsynth.core.settings import PRESETS, RadsynthConfig

SCHEMA_FILE = PRESETS.parent / "workflow" / "schemas" / "config.schema.yaml"
HEADER = (
    "# GENERATED from the settings models in radsynth/core/settings/ by\n"
    "# `python -m radsynth.core.settings.schema`: edit the models, not this file.\n"
)


class _AbsentNotNull(GenerateJsonSchema):
    """A key the model leaves None when absent (data.demo, evaluate.extractor.weights, ...) is
    optional in the schema, not nullable: a config omits it, it never writes null."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        generated = super().default_schema(schema)
        if "default" not in generated or generated["default"] is not None:
            return generated
        kept = [option for option in generated["anyOf"] if option != {"type": "null"}]
        rest = {key: value for key, value in generated.items() if key not in ("anyOf", "default")}
        return {**kept[0], **rest} if len(kept) == 1 else {"anyOf": kept, **rest}


def _without_titles(node: Any) -> Any:
    """The schema without pydantic's titles (each repeats its property's name)."""
    if isinstance(node, dict):
        return {
            key: _without_titles(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_titles(item) for item in node]
    return node


def generated_schema() -> dict[str, Any]:
    """The JSON schema of RadsynthConfig (draft 2020-12), keyed as config files are (aliases)."""
    schema = RadsynthConfig.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_AbsentNotNull
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_without_titles(schema)}


def schema_text() -> str:
    """The schema file's text: the header, then the schema as YAML."""
    body = yaml.safe_dump(generated_schema(), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write the schema file; with --check, only report whether it is up to date (exit 1 if not)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        if SCHEMA_FILE.read_text() == schema_text():
            return 0
        print(f"{SCHEMA_FILE} is out of date: run python -m radsynth.core.settings.schema")
        return 1
    if args:
        print("usage: python -m radsynth.core.settings.schema [--check]", file=sys.stderr)
        return 2
    SCHEMA_FILE.write_text(schema_text())
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
