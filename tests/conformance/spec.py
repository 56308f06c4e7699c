"""The published REST API specifications, as fixtures: schemas to validate against, examples to replay.

Everything under ``fixtures/`` is copied from ``Azure/azure-rest-api-specs``; each file records its
``source`` path, the ``commit`` it was read at and the ``api_version``. Nothing here is derived
from the sandbox.

* ``fixtures/schemas/*.json``: ``definitions`` excerpted from a spec file (descriptions left out).
  ``$ref`` values are kept exactly as the spec writes them (``../../../../../../common-types/...``)
  and resolved here against the source path, so a definition from another spec file (common
  types) resolves to the fixture holding that file.
* ``fixtures/examples/<service>/*.json``: ``{"source", "commit", "api_version", "example"}`` where
  ``example`` is the spec's ``x-ms-examples`` file, verbatim (``parameters`` and ``responses``).

Swagger 2.0 schemas are JSON Schema draft 4 plus extensions; the validator reads them as draft 4
with two rules stated here, not hidden:

* ``null`` is accepted for a property that is not ``required`` (ARM services and the SDKs'
  deserializers treat ``"prop": null`` as absent);
* ``enum`` is strict, also for ``modelAsString`` enums: a value the spec does not list is what
  this suite exists to find;
* a bare ``{"type": "object"}`` (no properties) is any JSON value, as AutoRest reads it
  (Resource Graph's ``data`` is an array or a table under that schema).
"""

from __future__ import annotations

import copy
import json
import posixpath
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

FIXTURES = Path(__file__).parent / "fixtures"
_URN = "urn:azure-rest-api-specs:"


@dataclass(frozen=True)
class Example:
    """One ``x-ms-examples`` file and where it came from."""

    name: str
    source: str
    commit: str
    api_version: str
    parameters: dict[str, Any]
    responses: dict[str, Any]

    def response_body(self, status: int | str) -> Any:
        return copy.deepcopy(self.responses[str(status)].get("body"))

    def param(self, name: str) -> Any:
        return copy.deepcopy(self.parameters[name])


def example(service: str, name: str) -> Example:
    """Loads ``fixtures/examples/<service>/<name>.json``."""
    data = json.loads((FIXTURES / "examples" / service / f"{name}.json").read_text(encoding="utf-8"))
    ex = data["example"]
    return Example(
        name=name,
        source=data["source"],
        commit=data["commit"],
        api_version=data["api_version"],
        parameters=ex.get("parameters", {}),
        responses=ex.get("responses", {}),
    )


def _nullable(schema: Any) -> Any:
    """Lets a non-required property be ``null`` (see the module docstring); ``schema`` is a schema."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "object" and not {"properties", "additionalProperties", "allOf", "$ref"} & set(schema):
        return {k: v for k, v in schema.items() if k != "type"}  # AutoRest's AnyObject
    out: dict[str, Any] = {}
    required = set(schema.get("required", []))
    for k, v in schema.items():
        if k == "properties" and isinstance(v, dict):
            out[k] = {
                name: (_nullable(sub) if name in required else {"anyOf": [{"type": "null"}, _nullable(sub)]})
                for name, sub in v.items()
            }
        elif k in ("items", "additionalProperties"):
            out[k] = _nullable(v)
        elif k in ("allOf", "anyOf", "oneOf") and isinstance(v, list):
            out[k] = [_nullable(s) for s in v]
        else:
            out[k] = v
    return out


def _rewrite_refs(node: Any, source: str) -> Any:
    """Turns ``other/file.json#/definitions/X`` into an absolute URN of that spec file."""
    if isinstance(node, list):
        return [_rewrite_refs(n, source) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str) and not v.startswith("#"):
            file, _, pointer = v.partition("#")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(source), file))
            out[k] = f"{_URN}{target}#{pointer}"
        else:
            out[k] = _rewrite_refs(v, source)
    return out


@cache
def _registry() -> tuple[Registry, dict[str, str]]:
    """Every schema fixture, registered under the URN of its source path."""
    registry: Registry = Registry()
    by_name: dict[str, str] = {}
    for path in sorted((FIXTURES / "schemas").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        source = data["source"]
        defs = _rewrite_refs(data["definitions"], source)
        contents = {"definitions": {name: _nullable(d) for name, d in defs.items()}}
        registry = registry.with_resource(f"{_URN}{source}", Resource.from_contents(contents, default_specification=DRAFT4))
        by_name[path.stem] = source
    return registry.crawl(), by_name


def validator(schema_file: str, definition: str) -> jsonschema.Draft4Validator:
    """A validator for ``definition`` of the spec held in ``fixtures/schemas/<schema_file>.json``."""
    registry, by_name = _registry()
    source = by_name[schema_file]
    schema = {"$ref": f"{_URN}{source}#/definitions/{definition}"}
    return jsonschema.Draft4Validator(schema, registry=registry)


def _reason(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error inside the anyOf wrappers that make properties nullable (never the null branch)."""
    reasons = [e for e in err.context or [] if e.schema != {"type": "null"}]
    if not reasons:
        return err
    return _reason(jsonschema.exceptions.best_match(reasons))


def violations(schema_file: str, definition: str, body: Any) -> list[str]:
    """Every way ``body`` breaks the spec's schema, as ``path: message`` lines (empty: conforms)."""
    out = []
    for err in validator(schema_file, definition).iter_errors(body):
        # A nullable property wraps its schema in anyOf; report the reason inside, not the wrapper.
        inner = _reason(err)
        where = "/".join(str(p) for p in inner.absolute_path) or "(root)"
        out.append(f"{where}: {inner.message}")
    return sorted(out)


def assert_conforms(schema_file: str, definition: str, body: Any) -> None:
    """Fails with the list of violations when ``body`` does not match the spec's definition."""
    found = violations(schema_file, definition, body)
    assert not found, f"response does not match {schema_file}#/definitions/{definition}:\n" + "\n".join(found)
