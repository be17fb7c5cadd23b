"""mkdocs hook: the Pipeline API reference page, generated from the CRD in crds/ at build time.

crds/ is generated from the pydantic models (`make crds`, a test fails when it drifts), so
this page says what the API server enforces and cannot drift from it. The page is never
checked in: `on_files` adds it to the build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.livereload import LiveReloadServer
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "sluice.dev_pipelines.yaml"
POLICY = REPO / "crds" / "sluice.dev_storage-growth-policy.yaml"
PAGE = "reference/pipeline.md"

Schema = dict[str, Any]

# Length and range keywords, as a user reads them.
BOUNDS = {
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minimum": "at least {}",
    "maximum": "at most {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minProperties": "at least {} entries",
    "maxProperties": "at most {} entries",
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, PAGE, content=render(CRD, POLICY)))
    return files


def on_serve(server: LiveReloadServer, config: MkDocsConfig, builder: Any) -> LiveReloadServer:
    server.watch(str(CRD.parent))  # `mkdocs serve` rebuilds after `make crds`
    return server


def render(crd_path: Path, policy_path: Path) -> str:
    crd = yaml.safe_load(crd_path.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    lines = [
        f"# {kind} API reference",
        "",
        f"`{group}/{version['name']}`, kind `{kind}`, namespaced"
        f" (short name `{', '.join(crd['spec']['names'].get('shortNames', []))}`).",
        f"{schema.get('description', '')}",
        "",
        '!!! note "Generated"',
        f"    This page is generated from `crds/{crd_path.name}` each time the site is built;",
        "    the CRD itself is generated from the operator's pydantic models (`make crds`).",
        "    `kubectl explain pipeline.spec --recursive` reads the same descriptions.",
        "",
        "Each field lists its type, default and allowed values, and, under *Refused when*, the",
        "message the API server answers when an apply breaks one of its validation rules.",
        "",
        "## Columns of `kubectl get pipelines`",
        "",
        "| column | from | shown |",
        "|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns", []):
        shown = "with `-o wide`" if column.get("priority", 0) else "always"
        lines.append(f"| {column['name'].upper()} | `{column['jsonPath']}` | {shown} |")
    for top in ("spec", "status"):
        section = schema["properties"][top]
        lines += ["", f"## {top}", ""]
        lines += _fields(section, top, required=False)
    lines += ["", *_policy(policy_path)]
    return "\n".join(lines) + "\n"


def _fields(schema: Schema, path: str, required: bool) -> list[str]:
    lines = _field(schema, path, required)
    needed = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        lines += _fields(sub, f"{path}.{name}", name in needed)
    items = schema.get("items")
    if isinstance(items, dict) and "properties" in items:
        needed_items = set(items.get("required", []))
        for name, sub in items["properties"].items():
            lines += _fields(sub, f"{path}[].{name}", name in needed_items)
    return lines


def _field(schema: Schema, path: str, required: bool) -> list[str]:
    facts = [f"**Type** {type_name(schema)}"]
    if required:
        facts.append("**required**")
    if "default" in schema:
        facts.append(f"**Default** `{_inline(schema['default'])}`")
    if "enum" in schema:
        facts.append("**One of** " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, text in BOUNDS.items():
        if key in schema:
            fact = text.format(schema[key])
            facts.append(fact.replace(" characters", " character") if schema[key] == 1 else fact)
    if "format" in schema:
        facts.append(f"format `{schema['format']}`")
    lines = [f"### `{path}`", "", " · ".join(facts), ""]
    if schema.get("description"):
        lines += [_one_line(schema["description"]), ""]
    rules = _rules(schema)
    if rules:
        lines += ["Refused when:", ""] + [f"- {rule}" for rule in rules] + [""]
    return lines


def type_name(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {type_name(schema.get('items', {}))}"
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, dict):
        return f"map of string to {type_name(values)}"
    return str(kind)


def _rules(schema: Schema) -> list[str]:
    """Every CEL rule's message (a static message, else its expression), on this field and on
    the values of a map."""
    found = []
    for where in (schema, schema.get("additionalProperties") or {}):
        if not isinstance(where, dict):
            continue
        for rule in where.get("x-kubernetes-validations", []):
            if "message" in rule:
                found.append(_one_line(rule["message"]))
            elif "messageExpression" in rule:
                found.append(f"`{_one_line(rule['messageExpression'])}`")
    return found


def _policy(policy_path: Path) -> list[str]:
    """The ValidatingAdmissionPolicies installed from crds/ beside the CRD."""
    lines = [
        "## Admission policies",
        "",
        f"Installed from `crds/{policy_path.name}` with the CRD: rules a CRD cannot express",
        "because they read other objects.",
        "",
    ]
    for doc in yaml.safe_load_all(policy_path.read_text()):
        if not doc or doc["kind"] != "ValidatingAdmissionPolicy":
            continue
        lines += [f"### `{doc['metadata']['name']}`", ""]
        param = doc["spec"].get("paramKind")
        if param:
            lines += [f"Takes each `{param['kind']}` as a parameter. Refused when:", ""]
        for validation in doc["spec"].get("validations", []):
            message = validation.get("message") or validation.get("messageExpression", "")
            lines.append(f"- {_one_line(message)}")
        lines.append("")
    return lines


def _one_line(text: str) -> str:
    # Descriptions are folded YAML; Markdown table cells and list items need one line, and
    # a literal pipe or angle bracket would be read as Markdown or HTML.
    flat = " ".join(str(text).split())
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _inline(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
