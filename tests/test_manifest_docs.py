"""The manifest reference and JSON Schema are generated from the schema and kept in step with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runner import manifest_docs
from runner.manifest import load_manifest

STALE = "is stale: run `python -m runner.manifest_docs` and commit the result"


def test_the_committed_reference_is_the_generated_one():
    assert manifest_docs.DOC.read_text(encoding="utf-8") == manifest_docs.markdown(), f"docs/manifests.md {STALE}"


def test_the_committed_json_schema_is_the_generated_one():
    assert manifest_docs.SCHEMA.read_text(encoding="utf-8") == manifest_docs.json_schema(), f"manifest.schema.json {STALE}"


def test_the_reference_documents_every_field_and_the_default_rule():
    text = manifest_docs.markdown()
    for cls in manifest_docs.CLASSES:
        for name, description in manifest_docs.fields(cls).items():
            assert f"| `{name}` |" in text and description, (cls.__name__, name)
    assert "A field's `default` is what the runner sends when a job gives no value" in text
    assert "`send_default: false`" in text and "It is optional; a third-party manifest may leave it out" in text


def test_the_reference_example_is_a_valid_manifest():
    example = re.search(r"```yaml\n(.*?)```", manifest_docs.EXAMPLE, re.S).group(1)
    model = load_manifest(Path("example.yaml"), example).models[0]
    assert model.modes["image-to-video"].constraints[0].allowed == {"duration": [4]}


def test_the_json_schema_names_every_class():
    schema = json.loads(manifest_docs.json_schema())
    assert schema["title"] == "video-runner manifest" and schema["additionalProperties"] is False
    assert {cls.__name__ for cls in manifest_docs.CLASSES} - {"ManifestFile"} <= set(schema["$defs"])
