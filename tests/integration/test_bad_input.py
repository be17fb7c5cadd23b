"""Rule 15: bad input is refused by the API server at apply time, naming the field;
nothing is stored, and the operator keeps running."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import manifest

BAD: list[tuple[str, str, Any]] = [
    ("spec.desiredState", "spec.desiredState", "Paused"),
    ("spec.image", "spec.image", ""),
    ("spec.image", "spec.image", "has spaces:1"),
    ("spec.storage.size", "spec.storage.size", "lots"),
    ("spec.storage.size", "spec.storage.size", "-1Gi"),
    ("spec.storage.clearPolicy", "spec.storage.clearPolicy", "Shred"),
    ("spec.storage.storageClassName", "spec.storage.storageClassName", ""),
    ("spec.storage.clearRequest", "spec.storage.clearRequest", "x" * 254),
    ("spec.resources.limits.cpu", "spec.resources.limits", {"cpu": "two"}),
    ("spec.storage", "spec.storage", None),
    ("spec.unknownField", "spec.unknownField", 1),
]


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    if value is None:
        obj.pop(leaf, None)
    else:
        obj[leaf] = value


@pytest.mark.parametrize(("field", "path", "value"), BAD, ids=[f"{b[0]}={b[2]!r:.20}" for b in BAD])
def test_invalid_spec_is_refused_naming_the_field(
    field: str, path: str, value: Any, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    obj = yaml.safe_load(manifest("orders", namespace))
    _set(obj, path, copy.deepcopy(value))
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert refused.returncode != 0
    assert field in refused.stderr, refused.stderr
    missing = kubectl("-n", namespace, "get", "pipeline", "orders", check=False)
    assert "NotFound" in missing.stderr
    assert live_operator.alive


def test_too_long_a_name_is_refused(kubectl: Kubectl, namespace: str) -> None:
    refused = kubectl("apply", "-f", "-", input=manifest("x" * 53, namespace), check=False)
    assert refused.returncode != 0
    assert "metadata.name" in refused.stderr


def test_kubectl_explain_and_get_show_the_api(kubectl: Kubectl, namespace: str) -> None:
    explained = kubectl("explain", "pipeline.spec.storage.clearPolicy").stdout
    assert "Detach" in explained
    kubectl("apply", "-f", "-", input=manifest("orders", namespace, desired="Stopped"))
    header = kubectl("-n", namespace, "get", "pipelines").stdout.splitlines()[0].split()
    assert header == ["NAME", "DESIRED", "STATUS", "STORAGE", "AGE"]
