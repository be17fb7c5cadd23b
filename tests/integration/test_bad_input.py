"""Rule 15: bad input is refused by the API server at apply time, naming the field;
nothing is stored, and the operator keeps running. Input the API server admits but the
cluster cannot satisfy is explained in status, without a write loop, and can be undone."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import apply, claims, get, manifest, patch, wait_jsonpath

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


def _condition_message(obj: dict[str, Any], type_: str) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return str(condition.get("message", ""))
    return ""


def test_admitted_but_unsatisfiable_spec_is_explained_and_can_be_undone(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    """A storage class that does not exist is valid input: the claim never binds, so the
    pod never schedules. The user sees why, the operator does not loop, and stop-and-clear
    still works."""
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["storage"]["storageClassName"] = "no-such-class"
    apply(kubectl, yaml.safe_dump(obj))

    def explained() -> dict[str, Any] | None:
        now = get(kubectl, namespace, "orders")
        return now if "cannot be scheduled" in _condition_message(now, "Running") else None

    stuck = wait_for(explained, what="the scheduler's reason in the Running condition")
    assert stuck["status"]["deploymentStatus"] == "Provisioning"
    assert "unbound" in _condition_message(stuck, "Ready"), stuck["status"]["conditions"]

    time.sleep(5)  # an observation window: the operator must not keep rewriting status
    after = get(kubectl, namespace, "orders")
    assert after["metadata"]["resourceVersion"] == stuck["metadata"]["resourceVersion"]

    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": "r1"}}},
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    assert claims(api_client, namespace) == []
    cleared = get(kubectl, namespace, "orders")
    assert "cannot be scheduled" not in _condition_message(cleared, "Running")
    assert live_operator.alive
