"""Storage that grows instead of being cleared (rule 12): on csi-local (allowVolumeExpansion)
a running pipeline's spec.storage.size grows in place (the claim is patched, the resizer
and the kubelet grow the volume online, the pod and its checkpoints stay); shrinking, and
growing on a class that cannot expand, are refused at apply time naming the field; a resize
the driver fails is in status and an Event, and completes once the driver lets it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from localkube.cluster import CSI_CLASS, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import event_once, get, patch, run_with_claim, storage, wait_jsonpath
from .volumes import claim_volume, volume


def _status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    out = kubectl("-n", namespace, "exec", "orders-0", "--", "engine-pipeline", "status")
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def _resizing(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    conditions = (get(kubectl, namespace, "orders").get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "StorageResizing"), None)


def _pod_uid(api: client.ApiClient, namespace: str) -> str:
    return str(client.CoreV1Api(api).read_namespaced_pod("orders-0", namespace).metadata.uid)


def test_a_running_pipeline_grows_in_place_on_csi_local(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    claim = run_with_claim(kubectl, api_client, namespace, "orders", storage_class=CSI_CLASS)
    wait_for(
        lambda: _status(kubectl, namespace)["checkpoints_taken"] >= 1,
        timeout=60,
        what="a checkpoint",
    )
    pod = _pod_uid(api_client, namespace)
    assert storage(get(kubectl, namespace, "orders"))["capacity"] == "1Gi"

    patch(kubectl, namespace, "orders", {"spec": {"storage": {"size": "2Gi"}}})
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.capacity", "2Gi", timeout=120)
    kubectl(
        "-n",
        namespace,
        "wait",
        "--for=condition=StorageResizing=False",
        "pipeline/orders",
        "--timeout=60s",
        timeout=70,
    )
    core = client.CoreV1Api(api_client)
    grown = core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert grown.status.capacity["storage"] == "2Gi"
    assert _pod_uid(api_client, namespace) == pod, "the pipeline was restarted"
    after = get(kubectl, namespace, "orders")
    assert storage(after)["status"] == "InUse" and storage(after)["claims"] == [claim]
    status = _status(kubectl, namespace)
    assert status["resumed_from"] is None and status["checkpoints_taken"] >= 1  # same process
    event_once(api_client, namespace, "orders", "StorageResizing", "Normal", "2Gi")

    # Shrinking stays refused, at apply time, naming the field.
    refused = patch(
        kubectl, namespace, "orders", {"spec": {"storage": {"size": "1Gi"}}}, check=False
    )
    assert refused.returncode != 0
    assert "spec.storage.size can only grow" in refused.stderr, refused.stderr


@pytest.mark.parametrize("named", [True, False], ids=["named-class", "default-class"])
def test_growing_where_the_class_cannot_expand_is_refused_at_apply_time(
    named: bool,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
) -> None:
    # Unnamed, the claim gets the cluster's default class (standard): the policy checks that.
    storage_class = STORAGE_CLASS if named else None
    run_with_claim(kubectl, api_client, namespace, "orders", storage_class=storage_class)
    before = get(kubectl, namespace, "orders")["metadata"]["resourceVersion"]
    refused = patch(
        kubectl, namespace, "orders", {"spec": {"storage": {"size": "2Gi"}}}, check=False
    )
    assert refused.returncode != 0
    assert "spec.storage.size" in refused.stderr, refused.stderr
    assert f"StorageClass {STORAGE_CLASS} does not" in refused.stderr, refused.stderr
    assert get(kubectl, namespace, "orders")["metadata"]["resourceVersion"] == before


def test_a_resize_the_driver_fails_is_in_status_and_an_event_then_completes(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    live_operator: Operator,
) -> None:
    claim = run_with_claim(kubectl, api_client, namespace, "orders", storage_class=CSI_CLASS)
    pv = volume(api_client, claim_volume(api_client, namespace, claim))
    assert pv is not None and pv.spec.csi is not None
    handle = pv.spec.csi.volume_handle
    fault = cluster.csi_dir / "fail-expand" / handle
    fault.parent.mkdir(parents=True, exist_ok=True)
    fault.write_text("csi-local: expansion refused by the test\n")
    try:
        patch(kubectl, namespace, "orders", {"spec": {"storage": {"size": "2Gi"}}})

        def failed() -> dict[str, Any] | None:
            found = _resizing(kubectl, namespace)
            ok = found and found["reason"] == "ControllerResizeError"
            return found if ok else None

        condition = wait_for(failed, timeout=90, what="StorageResizing ControllerResizeError")
        assert condition["status"] == "True"
        assert "expansion refused by the test" in condition["message"]
        event_once(
            api_client,
            namespace,
            "orders",
            "StorageResizeFailed",
            "Warning",
            "expansion refused by the test",
        )
        assert storage(get(kubectl, namespace, "orders"))["capacity"] == "1Gi"
    finally:
        fault.unlink(missing_ok=True)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.capacity", "2Gi", timeout=180)
