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
from .pipelines import apply, claims, clear_and_wait, condition, get, manifest

BAD: list[tuple[str, str, Any]] = [
    ("spec.desiredState", "spec.desiredState", "Paused"),
    ("spec.image", "spec.image", ""),
    ("spec.image", "spec.image", "has spaces:1"),
    ("spec.storage.size", "spec.storage.size", "lots"),
    ("spec.storage.size", "spec.storage.size", "-1Gi"),
    ("spec.storage.clearPolicy", "spec.storage.clearPolicy", "Shred"),
    ("spec.storage.storageClassName", "spec.storage.storageClassName", ""),
    ("spec.storage.clearRequest", "spec.storage.clearRequest", "x" * 254),
    ("spec.resources.limits[cpu]", "spec.resources.limits", {"cpu": "two"}),
    # Rule 16: admitted only if its claim and StatefulSet would be admitted too.
    ("spec.storage.size", "spec.storage.size", 0),
    ("spec.storage.size", "spec.storage.size", -5),
    ("spec.storage.size", "spec.storage.size", "0"),
    ("spec.storage.size", "spec.storage.size", "0.0Gi"),
    ("spec.storage.size", "spec.storage.size", "1e64914025368"),
    ("spec.resources.limits[memory]", "spec.resources.limits", {"memory": -1}),
    (
        "spec.resources.requests",
        "spec.resources",
        {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1500m"}},
    ),
    ("spec.resources.limits", "spec.resources.limits", {"nvidia com/gpu": 1}),
    ("spec.resources.limits", "spec.resources.limits", {"pods": 1}),
    ("spec.resources.limits", "spec.resources.limits", {"requests.example.com/gpu": 1}),
    # Extended resources and hugepages are admitted (test_extended_resources.py) under
    # Kubernetes' own rules: whole amounts, requests == limits, hugepages with cpu or memory.
    ("spec.resources.requests", "spec.resources.requests", {"example.com/gpu": 1}),
    ("spec.resources.limits", "spec.resources.limits", {"example.com/gpu": "0.5"}),
    (
        "spec.resources.requests",
        "spec.resources",
        {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}},
    ),
    ("spec.resources", "spec.resources.limits", {"hugepages-2Mi": "64Mi"}),
    ("spec.resources.limits", "spec.resources.limits", {"memory": "1Gi", "hugepages-2Mi": "3Mi"}),
    ("spec.storage.size", "spec.storage.size", "\t1Gi"),
    ("spec.image", "spec.image", "registry.example/Orders:1"),
    ("spec.image", "spec.image", "registry.example/orders@sha256:abc"),
    ("spec.image", "spec.image", "registry.example/orders:1\x0b"),
    ("spec.image", "spec.image", "\u00a0registry.example/orders:1"),
    ("spec.storage.storageClassName", "spec.storage.storageClassName", "Fast_SSD"),
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


@pytest.mark.parametrize("name", ["x" * 53, "orders.v2", "1orders"])
def test_a_name_that_cannot_name_a_service_is_refused(
    name: str, kubectl: Kubectl, namespace: str
) -> None:
    refused = kubectl("apply", "-f", "-", input=manifest(name, namespace), check=False)
    assert refused.returncode != 0
    assert "metadata.name" in refused.stderr


def test_kubectl_explain_and_get_show_the_api(kubectl: Kubectl, namespace: str) -> None:
    explained = kubectl("explain", "pipeline.spec.storage.clearPolicy").stdout
    assert "Detach" in explained
    kubectl("apply", "-f", "-", input=manifest("orders", namespace, desired="Stopped"))
    header = kubectl("-n", namespace, "get", "pipelines").stdout.splitlines()[0].split()
    assert header == ["NAME", "DESIRED", "STATUS", "STORAGE", "AGE"]


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
        return (
            now if "cannot be scheduled" in condition(now, "Running").get("message", "") else None
        )

    stuck = wait_for(explained, what="the scheduler's reason in the Running condition")
    assert stuck["status"]["deploymentStatus"] == "Provisioning"
    assert "unbound" in condition(stuck, "Ready").get("message", ""), stuck["status"]["conditions"]

    time.sleep(5)  # an observation window: the operator must not keep rewriting status
    after = get(kubectl, namespace, "orders")
    assert after["metadata"]["resourceVersion"] == stuck["metadata"]["resourceVersion"]

    clear_and_wait(kubectl, namespace, "orders")
    assert claims(api_client, namespace) == []
    cleared = get(kubectl, namespace, "orders")
    assert "cannot be scheduled" not in condition(cleared, "Running").get("message", "")
    assert live_operator.alive


def test_a_refusal_downstream_reads_like_the_api_server(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    """What still fails after admission (here a ResourceQuota that allows no claims) shows
    the API server's own message in status.error and Ready, keeps the raw body in details,
    and `kubectl get` never shows an empty STATUS column."""
    client.CoreV1Api(api_client).create_namespaced_resource_quota(
        namespace,
        {"metadata": {"name": "no-claims"}, "spec": {"hard": {"persistentvolumeclaims": "0"}}},
    )
    wait_for(
        lambda: (
            client.CoreV1Api(api_client)
            .read_namespaced_resource_quota("no-claims", namespace)
            .status.hard
        ),
        what="the quota to be counted",
    )
    apply(kubectl, manifest("orders", namespace))

    def reported() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "orders")
        return obj if (obj.get("status") or {}).get("error") else None

    obj = wait_for(reported, what="status.error")
    error = obj["status"]["error"]
    assert error["error_code"] == "ReconcileFailed"
    assert "exceeded quota: no-claims" in error["message"], error
    assert "422" not in error["message"] and "403 Forbidden" not in error["message"]
    assert "exceeded quota" in error["details"]["body"]
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and "exceeded quota" in ready["message"]
    row = kubectl("-n", namespace, "get", "pipeline", "orders", "--no-headers").stdout.split()
    assert row[:4] == ["orders", "Running", "Provisioning", "Cleared"], row
    assert live_operator.alive


@pytest.mark.parametrize(
    "image",
    [
        "orders",
        "orders:1.2",
        "registry.example:5000/team/orders:1.2",
        "Registry.Example/orders",
        "localhost/orders",
        "[::1]:5000/orders:v1",
        "registry.example/orders@sha256:" + "0123456789abcdef" * 4,
        "registry.example/orders:1@sha512:" + "0123456789abcdef" * 8,
    ],
)
def test_every_kind_of_image_reference_is_admitted(
    image: str, crd: None, kubectl: Kubectl, namespace: str
) -> None:
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["image"] = image
    kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
