"""Feldera's OpenAPI document (from the `feldera-rest-api` crate, see fetch.sh), and
validation of Sluice's answers against it with openapi-core.

`make test` fetches the document first (`make feldera-schema`); a focused pytest run
fetches it here when it is missing, so no test ever skips for want of it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent.parent / ".cache" / "feldera"


def document_path() -> Path:
    configured = os.environ.get("SLUICE_FELDERA_OPENAPI")
    path = Path(configured) if configured else CACHE / "openapi.json"
    if not path.exists():
        subprocess.run([str(HERE / "fetch.sh"), str(path.parent)], check=True)
    return path


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(document_path().read_text())
    return loaded


def schema(name: str) -> dict[str, Any]:
    """One of Feldera's component schemas, e.g. "RuntimeConfig"."""
    found: dict[str, Any] = document()["components"]["schemas"][name]
    return found


# ---- validation ---------------------------------------------------------------------------
#
# Feldera's document is OpenAPI 3.0, whose `nullable: true` is not JSON Schema, and it writes
# a nullable reference as `{"allOf": [{"$ref": ...}], "nullable": true}`. Read literally
# (OpenAPI 3.0.3: nullable only widens a `type` in the same schema), openapi-core and
# openapi-schema-validator refuse `null` there, although Feldera itself sends null and every
# client generator reads it as nullable. Its discriminators name no mapping over inline
# schemas, which openapi-core cannot resolve. So: the document as JSON Schema 2020-12 (each
# nullable schema becomes `anyOf: [schema, null]`, discriminators dropped: the `oneOf` and
# each variant's `enum` already decide), validated by jsonschema with `referencing` resolving
# every $ref inside the document, formats checked (date-time, uuid).

BASE = "urn:feldera-openapi"


def _as_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {
        key: _as_json_schema(value)
        for key, value in node.items()
        if key not in ("nullable", "discriminator", "example")
    }
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _registry() -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    contents = _as_json_schema(document())
    resource = Resource.from_contents(contents, default_specification=DRAFT202012)
    return Registry().with_resource(BASE, resource)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def schema_errors(ref: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema at `ref`, a JSON pointer into Feldera's
    document (e.g. "/components/schemas/RuntimeConfig"); [] when it conforms."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(
        {"$ref": f"{BASE}#{ref}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_describe(best_match([error])) for error in errors]


def _describe(error: Any) -> str:
    # best_match descends into anyOf/oneOf to the branch that came closest (for a nullable
    # field: the schema, not the null), so the message names the field that is wrong.
    return f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"


def component_errors(name: str, instance: Any) -> list[str]:
    return schema_errors(f"/components/schemas/{name}", instance)


def response_errors(
    method: str, path: str, status: int, content_type: str, body: bytes
) -> list[str]:
    """How one answer breaks what Feldera's document says of `method path` answering
    `status`: an undocumented status, a body where none is documented, or a body that does
    not match the schema. `path` is the document's template, e.g. /v0/pipelines/{pipeline_name}."""
    operation = document()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return [f"{method} {path} is not in Feldera's document"]
    response = operation["responses"].get(str(status))
    if response is None:
        documented = ", ".join(operation["responses"])
        return [f"{method} {path}: status {status} is not documented (only {documented})"]
    content = response.get("content") or {}
    if not content:
        return [] if not body else [f"{method} {path} {status}: a body where none is documented"]
    media = content_type.split(";")[0].strip()
    if media not in content:
        return [f"{method} {path} {status}: content type {media!r} is not {sorted(content)}"]
    if "schema" not in content[media]:
        return []
    try:
        instance = json.loads(body)
    except ValueError as error:
        return [f"{method} {path} {status}: body is not JSON ({error})"]
    ref = _pointer("", "paths", path, method.lower(), "responses", str(status), "content", media)
    return schema_errors(f"{ref}/schema", instance)


# ---- a client generated from Feldera's document ------------------------------------------
#
# openapi-python-client (PyPI, pinned in the dev extras) generates a typed client whose
# from_dict refuses a missing required field and an unknown enum value. It cannot build a
# model for a property that is a `$ref` (or `allOf: [$ref]`) with a `default` ("ModelProperty
# cannot have a default value"), and then drops RuntimeConfig, StorageOptions and
# PipelineInfo entirely, so it is given the document without those defaults: they only say
# what the server assumes for an absent field, which a parser never fills in.

CLIENT_PACKAGE = "feldera_api_client"


def _without_model_defaults(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_model_defaults(item) for item in node]
    if not isinstance(node, dict):
        return node
    drop = "default" if ("allOf" in node or "$ref" in node) else None
    return {k: _without_model_defaults(v) for k, v in node.items() if k != drop}


def generated_client_path() -> Path:
    """The directory holding the generated package `feldera_api_client` (made once per
    document version, in .cache/feldera)."""
    version = document()["info"]["version"]
    out = document_path().parent / f"python-client-{version}"
    if (out / CLIENT_PACKAGE / "client.py").exists():
        return out
    work = document_path().parent / "python-client-work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "openapi.json").write_text(json.dumps(_without_model_defaults(document())))
    (work / "config.yaml").write_text(
        f"post_hooks: []\nproject_name_override: feldera-api-client\n"
        f"package_name_override: {CLIENT_PACKAGE}\n"
    )
    generator = Path(sys.executable).parent / "openapi-python-client"
    target = work / CLIENT_PACKAGE
    subprocess.run(
        [
            *(str(generator), "generate", "--path", str(work / "openapi.json")),
            *("--config", str(work / "config.yaml"), "--meta", "none"),
            *("--output-path", str(target), "--overwrite"),
        ],
        check=True,
        capture_output=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    target.replace(out / CLIENT_PACKAGE)
    return out
