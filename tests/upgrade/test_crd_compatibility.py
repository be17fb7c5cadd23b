"""The CRD this version generates against the previous release's (tests/upgrade/release.py):
no field, enum value, printer column or version removed, no type changed, no new validation
that could refuse an object the old CRD stored (how: crd_compat's docstring). The checker
itself is shown to catch each kind of break on purpose-made changes of today's CRD."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from sluice.api import crd

from upgrade.crd_compat import incompatibilities
from upgrade.release import PREVIOUS_VERSION, previous_crd


def current() -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(crd.render())
    return out


def test_the_generated_crd_is_compatible_with_the_previous_release() -> None:
    found = incompatibilities(previous_crd(), current())
    assert found == [], f"breaks what {PREVIOUS_VERSION} stored or served:\n" + "\n".join(found)


def _root(d: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _storage(d: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = _root(d)["properties"]["spec"]["properties"]["storage"]
    return props


def _status_storage(d: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = _root(d)["properties"]["status"]["properties"]["storage"]
    return props


Edit = Callable[[dict[str, Any]], None]
BREAKS: dict[str, tuple[Edit, str]] = {
    "field removed": (
        lambda d: _storage(d)["properties"].pop("clearPolicy"),
        "<root>.spec.storage.clearPolicy: removed",
    ),
    "status field removed": (
        lambda d: _status_storage(d)["properties"].pop("lastClearRequest"),
        "<root>.status.storage.lastClearRequest: removed",
    ),
    "enum value removed": (
        lambda d: _storage(d)["properties"]["clearPolicy"].update(enum=["Delete"]),
        "<root>.spec.storage.clearPolicy: enum value 'Detach' removed",
    ),
    "type changed": (
        lambda d: _storage(d)["properties"]["clearRequest"].update(type="integer"),
        "<root>.spec.storage.clearRequest: type changed 'string' -> 'integer'",
    ),
    "newly required": (
        lambda d: _storage(d).setdefault("required", []).append("storageClassName"),
        "<root>.spec.storage: property 'storageClassName' newly required",
    ),
    "new CEL rule": (
        lambda d: (
            _storage(d)
            .setdefault("x-kubernetes-validations", [])
            .append({"rule": "has(self.storageClassName)", "message": "m"})
        ),
        "<root>.spec.storage: new validation rule 'has(self.storageClassName)'",
    ),
    "bound tightened": (
        lambda d: _storage(d)["properties"]["size"].update(maxLength=8),
        "<root>.spec.storage.size: maxLength lowered 64 -> 8",
    ),
    "pattern added": (
        lambda d: _storage(d)["properties"]["clearRequest"].update(pattern="^[a-z]+$"),
        "<root>.spec.storage.clearRequest: pattern None -> '^[a-z]+$'",
    ),
    "printer column removed": (
        lambda d: d["spec"]["versions"][0]["additionalPrinterColumns"].pop(2),
        "printer column 'Storage': removed",
    ),
    "status subresource removed": (
        lambda d: d["spec"]["versions"][0]["subresources"].pop("status"),
        "subresources.status: removed",
    ),
    "version no longer served": (
        lambda d: d["spec"]["versions"][0].update(served=False),
        "version no longer served",
    ),
}


@pytest.mark.parametrize("change", sorted(BREAKS))
def test_each_kind_of_break_is_found(change: str) -> None:
    edit, expected = BREAKS[change]
    old, new = current(), current()
    edit(new)
    found = incompatibilities(old, new)
    assert any(f.endswith(expected) for f in found), f"{change}: not found in {found}"


LOOSENINGS: dict[str, Edit] = {
    "optional field added": lambda d: _storage(d)["properties"].update(
        growBy={"type": "string", "description": "d"}
    ),
    "enum value added": lambda d: _storage(d)["properties"]["clearPolicy"]["enum"].append("Keep"),
    "rule removed": lambda d: _storage(d)["properties"]["size"].pop("x-kubernetes-validations"),
    "bound widened": lambda d: _storage(d)["properties"]["size"].update(maxLength=128),
    "printer column added": lambda d: d["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Image", "type": "string", "jsonPath": ".spec.image"}
    ),
}


@pytest.mark.parametrize("change", sorted(LOOSENINGS))
def test_loosening_is_not_a_break(change: str) -> None:
    old, new = current(), copy.deepcopy(current())
    LOOSENINGS[change](new)
    assert incompatibilities(old, new) == []
