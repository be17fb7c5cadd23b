"""Generate the Pipeline CustomResourceDefinition from the pydantic models.

Pydantic writes JSON Schema with `$ref`s, titles and `anyOf: [X, null]` for
optional fields; the API server wants a structural OpenAPI v3 schema. This
module inlines the references and keeps only what Kubernetes understands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sluice.api import v1alpha1 as api

_DROP = {"title", "$defs"}


def _resolve(node: Any, defs: dict[str, Any], in_status: bool) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs, in_status) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs, in_status)
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        # Optional[X]: absent means unset; Kubernetes has no use for the null branch.
        rest = [o for o in options if o != {"type": "null"}]
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        merged.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        return _resolve(merged, defs, in_status)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and (value is None or in_status)):
            continue
        if key == "properties":
            out[key] = {
                name: _resolve(prop, defs, in_status or name == "status")
                for name, prop in value.items()
            }
        else:
            out[key] = _resolve(value, defs, in_status)
    if out.get("default") in ({}, []):
        del out["default"]
    return out


# Storage is not in use (no status yet, or Cleared): any storage edit is allowed then.
IN_USE_NOT = (
    "!has(oldSelf.status) || !has(oldSelf.status.storage)"
    " || !has(oldSelf.status.storage.status)"
    " || oldSelf.status.storage.status == 'Cleared'"
)


def _quantity_of(obj: str) -> str:
    """spec.storage.size of `obj` as a CEL quantity (an int or a string; its own rule has
    checked that it parses)."""
    return f"quantity(string({obj}.spec.storage.size).trim())"


def openapi_schema() -> dict[str, Any]:
    """The structural schema of the whole Pipeline object."""
    raw = api.Pipeline.model_json_schema(by_alias=True)
    schema: dict[str, Any] = _resolve(raw, raw.get("$defs", {}), in_status=False)
    schema["properties"] = {
        "apiVersion": {
            "type": "string",
            "description": "Versioned schema of this representation: sluice.dev/v1alpha1.",
        },
        "kind": {"type": "string", "description": "The REST resource: Pipeline."},
        "metadata": {"type": "object"},  # the API server allows nothing more here
        **schema["properties"],
    }
    schema["properties"]["status"]["description"] = (
        "The observed state of the pipeline, written by the operator."
    )
    schema["properties"]["spec"]["description"] = "The desired state of the pipeline."
    schema["x-kubernetes-validations"] = [
        {
            "rule": f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}",
            "message": f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters: "
            "the StatefulSet and pod names are derived from it",
        },
        {
            "rule": f"self.metadata.name.matches('{api.DNS_LABEL_PATTERN}')",
            "message": "metadata.name must be a DNS label (lower-case letters, digits and '-', "
            "starting with a letter, no dots): the pipeline's Service takes its name",
        },
        # Contract rule 12, the seed's EditRestrictedToClearedStorage: the class only while
        # Cleared; the size may also grow in use (whether the class can expand is the
        # storage-growth ValidatingAdmissionPolicy's to say: a CRD rule sees no StorageClass).
        {
            "rule": f"{IN_USE_NOT} || self.spec.storage.size == oldSelf.spec.storage.size"
            f" || {_quantity_of('self')}.isGreaterThan({_quantity_of('oldSelf')})",
            "fieldPath": ".spec.storage.size",
            "reason": "FieldValueForbidden",
            "message": "spec.storage.size can only grow while storage is in use "
            "(EditRestrictedToClearedStorage): a volume cannot shrink; stop the pipeline and "
            "clear its storage to make it smaller",
        },
        {
            "rule": f"{IN_USE_NOT}"
            " || (has(self.spec.storage.storageClassName)"
            " == has(oldSelf.spec.storage.storageClassName)"
            " && (!has(self.spec.storage.storageClassName)"
            " || self.spec.storage.storageClassName == oldSelf.spec.storage.storageClassName))",
            "fieldPath": ".spec.storage.storageClassName",
            "reason": "FieldValueForbidden",
            "message": "spec.storage.storageClassName can only change while storage is Cleared "
            "(EditRestrictedToClearedStorage): stop the pipeline and clear its storage first",
        },
        # Contract rule 18: a restore applies to the next claim, so it is named while there
        # is none. Removing it is allowed at any time (nothing is restored then).
        {
            "rule": "!has(oldSelf.status) || !has(oldSelf.status.storage)"
            " || !has(oldSelf.status.storage.status)"
            " || oldSelf.status.storage.status == 'Cleared'"
            " || !has(self.spec.storage.restoreFrom)"
            " || (has(oldSelf.spec.storage.restoreFrom)"
            " && self.spec.storage.restoreFrom == oldSelf.spec.storage.restoreFrom)",
            "fieldPath": ".spec.storage.restoreFrom",
            "reason": "FieldValueForbidden",
            "message": "spec.storage.restoreFrom can only be set while storage is Cleared "
            "(EditRestrictedToClearedStorage): the next claim is restored from it, and the "
            "pipeline has a claim now; stop the pipeline and clear its storage first",
        },
    ]
    return schema


def custom_resource_definition() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": ["pl"],
                "categories": ["sluice"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "additionalPrinterColumns": [
                        _column("Desired", ".spec.desiredState"),
                        _column("Status", ".status.deploymentStatus"),
                        _column("Storage", ".status.storage.status"),
                        _column("Error", ".status.error.error_code", priority=1),
                        # -o wide: which snapshot the current claim was restored from.
                        _column("Restored-From", ".status.storage.restoredFrom", priority=1),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def _column(name: str, path: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": "string", "jsonPath": path}
    if priority:
        column["priority"] = priority
    return column


CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"


def render() -> str:
    header = "# Generated from operator/sluice/api/v1alpha1.py by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=100)


def write(directory: Path) -> Path:
    """The CRD and, beside it, the storage-growth policy (api/policy.py)."""
    from sluice.api import policy

    directory.mkdir(parents=True, exist_ok=True)
    (directory / policy.POLICY_FILE).write_text(policy.render())
    path = directory / CRD_FILE
    path.write_text(render())
    return path
