"""Contract section 2, rule by rule, against the real control plane, as a user drives it."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from localkube.cluster import KWOK_NAMESPACE_ANNOTATIONS
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    claim_policy,
    claims,
    events,
    get,
    hold,
    manifest,
    patch,
    pods,
    reasons_once,
    release,
    run_and_wait,
    wait_condition,
    wait_jsonpath,
    wait_settled,
)

pytestmark = pytest.mark.usefixtures("live_operator")


def claim_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {str(c.metadata.name) for c in claims(api, namespace)}


def storage(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = obj.get("status", {}).get("storage", {})
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


# Rule 1
def test_new_pipeline_storage_is_cleared_until_first_provisioning(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    apply(kubectl, manifest("orders", namespace, desired="Stopped"))
    obj = wait_settled(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "Cleared"
    assert claim_names(api_client, namespace) == set()

    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})
    wait_condition(kubectl, namespace, "orders", "Ready")
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["deploymentStatus"] == "Running"
    assert storage(obj)["status"] == "InUse"
    (claim,) = claims(api_client, namespace)
    assert storage(obj)["claims"] == [claim.metadata.name]
    assert claim.metadata.owner_references[0].uid == obj["metadata"]["uid"]
    wait_for(lambda: claims(api_client, namespace)[0].status.phase == "Bound", what="Bound")


# Rule 2
def test_stop_removes_compute_and_keeps_storage_in_use(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    before = claim_names(api_client, namespace)
    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Stopped"}})
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Stopped")
    assert pods(api_client, namespace) == []
    sts = kubectl("-n", namespace, "get", "statefulsets", "-o", "name").stdout
    assert sts.strip() == ""
    assert storage(get(kubectl, namespace, "orders"))["status"] == "InUse"
    assert claim_names(api_client, namespace) == before


# Rule 3
def test_empty_clear_request_is_no_request(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": ""}}},
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Stopped")
    obj = wait_settled(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "InUse"
    assert len(claim_names(api_client, namespace)) == 1


# Rule 4
def test_clear_request_while_running_is_refused_at_apply_time(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    before = get(kubectl, namespace, "orders")
    refused = patch(
        kubectl, namespace, "orders", {"spec": {"storage": {"clearRequest": "r1"}}}, check=False
    )
    assert refused.returncode != 0
    assert "spec.storage.clearRequest" in refused.stderr
    assert "StorageStatusImmutableUnlessStopped" in refused.stderr
    after = get(kubectl, namespace, "orders")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "clearRequest" not in after["spec"]["storage"]
    assert len(claim_names(api_client, namespace)) == 1
    assert after["status"]["deploymentStatus"] == "Running"


# Rule 5
def test_stop_and_clear_in_one_apply_waits_for_the_stop(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    hold(api_client, "pod", namespace, "orders-0")
    (claim,) = claim_names(api_client, namespace)
    apply(kubectl, manifest("orders", namespace, desired="Stopped", clear_request="r1"))

    def waiting() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "orders")
        ok = condition(obj, "StorageCleared")["reason"] == "WaitingForStop"
        return obj if ok else None

    obj = wait_for(waiting, what="status says it waits for the stop")
    assert obj["status"]["deploymentStatus"] == "Stopping"
    assert storage(obj)["status"] == "InUse"
    (still,) = claims(api_client, namespace)
    assert still.metadata.name == claim and still.metadata.deletion_timestamp is None

    release(api_client, "pod", namespace, "orders-0")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    obj = get(kubectl, namespace, "orders")
    assert storage(obj)["lastClearRequest"] == "r1"
    assert obj["status"]["deploymentStatus"] == "Stopped"
    assert claim_names(api_client, namespace) == set()


# Rule 6
def test_clearing_waits_for_real_deletion_then_writes_cleared_and_an_event(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    (claim,) = claim_names(api_client, namespace)
    hold(api_client, "persistent_volume_claim", namespace, claim)
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": "r1"}}},
    )
    wait_for(
        lambda: claims(api_client, namespace)[0].metadata.deletion_timestamp,
        what="the claim's deletion to be sent",
    )
    obj = get(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "Clearing"
    assert storage(obj).get("lastClearRequest") != "r1"
    assert condition(obj, "StorageCleared")["reason"] == "Clearing"

    release(api_client, "persistent_volume_claim", namespace, claim)
    wait_condition(kubectl, namespace, "orders", "StorageCleared")
    obj = get(kubectl, namespace, "orders")
    assert storage(obj) == {
        "status": "Cleared",
        "claims": [],
        "lastClearRequest": "r1",
        "claimGeneration": 1,
    }
    assert claim_names(api_client, namespace) == set()
    reasons = reasons_once(api_client, namespace, "orders")
    assert reasons.count("StorageClearing") == 1
    assert reasons.count("StorageCleared") == 1


# Rule 7
def test_request_on_cleared_storage_is_recorded_as_handled(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    apply(kubectl, manifest("orders", namespace, desired="Stopped"))
    wait_settled(kubectl, namespace, "orders")
    patch(kubectl, namespace, "orders", {"spec": {"storage": {"clearRequest": "r1"}}})
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.lastClearRequest", "r1")
    obj = get(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "Cleared"
    assert "ClearRequestHandled" in [e.reason for e in events(api_client, namespace, "orders")]
    assert "StorageClearing" not in [e.reason for e in events(api_client, namespace, "orders")]


# Rule 8
def test_clear_cannot_be_cancelled_and_a_start_waits_for_it(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    (claim,) = claim_names(api_client, namespace)
    hold(api_client, "persistent_volume_claim", namespace, claim)
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": "r1"}}},
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Clearing")
    # Try to cancel: remove the request and ask to run again.
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Running", "storage": {"clearRequest": None}}},
    )
    wait_jsonpath(
        kubectl, namespace, "orders", ".status.error.error_code", "CannotStartWhileClearingStorage"
    )
    obj = get(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "Clearing"
    assert pods(api_client, namespace) == []

    release(api_client, "persistent_volume_claim", namespace, claim)
    wait_condition(kubectl, namespace, "orders", "Running")
    obj = get(kubectl, namespace, "orders")
    assert "error" not in obj["status"]
    assert storage(obj)["lastClearRequest"] == "r1"
    (fresh,) = claim_names(api_client, namespace)
    assert fresh != claim


# Rule 9
def test_failing_clear_is_retried_shows_the_error_and_never_goes_back_to_in_use(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    policy = f"deny-pvc-delete-{namespace}"[:63]
    kubectl("apply", "-f", "-", input=claim_policy(policy, namespace, ["DELETE"]))
    wait_for(lambda: _deletes_denied(api_client, namespace), what="the deny policy to apply")
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": "r1"}}},
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.error.error_code", "StorageClearFailed")
    obj = get(kubectl, namespace, "orders")
    assert storage(obj)["status"] == "Clearing"
    assert "blocked by test policy" in obj["status"]["error"]["details"]["body"]
    warnings = [e for e in events(api_client, namespace, "orders") if e.type == "Warning"]
    assert warnings and warnings[0].reason == "StorageClearFailed"

    kubectl("delete", "validatingadmissionpolicybinding", policy)
    kubectl("delete", "validatingadmissionpolicy", policy)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared", timeout=90)
    obj = get(kubectl, namespace, "orders")
    assert "error" not in obj["status"]
    assert claim_names(api_client, namespace) == {"deny-probe"}


def _deletes_denied(api: client.ApiClient, namespace: str) -> bool:
    """True once a (dry-run) delete of a claim in the namespace is refused by the policy."""
    core = client.CoreV1Api(api)
    probe = "deny-probe"
    try:
        core.read_namespaced_persistent_volume_claim(probe, namespace)
    except client.ApiException:
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
        core.create_namespaced_persistent_volume_claim(
            namespace, {"metadata": {"name": probe}, "spec": spec}
        )
    try:
        core.delete_namespaced_persistent_volume_claim(probe, namespace, dry_run="All")
    except client.ApiException as error:
        return "blocked by test policy" in str(error.body)
    return False


# Rule 10
def test_detach_keeps_the_claim_marked_and_the_next_start_gets_fresh_storage(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders", policy="Detach")
    uid = get(kubectl, namespace, "orders")["metadata"]["uid"]
    (old,) = claim_names(api_client, namespace)
    apply(kubectl, manifest("orders", namespace, "Stopped", "r1", policy="Detach"))
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    core = client.CoreV1Api(api_client)
    detached = core.read_namespaced_persistent_volume_claim(old, namespace)
    assert detached.metadata.deletion_timestamp is None
    assert not any(ref.uid == uid for ref in detached.metadata.owner_references or [])
    assert detached.metadata.annotations["sluice.dev/detached-from-uid"] == uid
    assert detached.metadata.annotations["sluice.dev/detached-from"] == f"{namespace}/orders"
    assert detached.metadata.annotations["sluice.dev/detached-at"]
    version = detached.metadata.resource_version

    apply(kubectl, manifest("orders", namespace, "Running", "r1", policy="Detach"))
    wait_condition(kubectl, namespace, "orders", "Running")
    obj = get(kubectl, namespace, "orders")
    (fresh,) = storage(obj)["claims"]
    assert fresh != old
    sts = client.AppsV1Api(api_client).read_namespaced_stateful_set("orders", namespace)
    volumes = sts.spec.template.spec.volumes
    assert [v.persistent_volume_claim.claim_name for v in volumes] == [fresh]
    again = core.read_namespaced_persistent_volume_claim(old, namespace)
    assert again.metadata.resource_version == version  # never touched again


# Rule 11
def test_deleting_a_pipeline_deletes_its_storage_first(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    (claim,) = claim_names(api_client, namespace)
    hold(api_client, "persistent_volume_claim", namespace, claim)
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--wait=false")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Clearing")
    assert get(kubectl, namespace, "orders")["metadata"]["deletionTimestamp"]
    release(api_client, "persistent_volume_claim", namespace, claim)
    kubectl("-n", namespace, "wait", "--for=delete", "pipeline/orders", "--timeout=60s")
    assert claim_names(api_client, namespace) == set()


def test_deleting_a_detach_pipeline_leaves_its_claims_behind(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders", policy="Detach")
    (claim,) = claim_names(api_client, namespace)
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=60s")
    left = client.CoreV1Api(api_client).read_namespaced_persistent_volume_claim(claim, namespace)
    assert left.metadata.deletion_timestamp is None
    assert not left.metadata.owner_references
    assert left.metadata.annotations["sluice.dev/detached-from"] == f"{namespace}/orders"


# Rule 12
def test_size_and_class_are_frozen_unless_storage_is_cleared(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    for field, value in (("size", "2Gi"), ("storageClassName", "fast")):
        refused = patch(
            kubectl, namespace, "orders", {"spec": {"storage": {field: value}}}, check=False
        )
        assert refused.returncode != 0
        assert f"spec.storage.{field}" in refused.stderr
        assert "EditRestrictedToClearedStorage" in refused.stderr
    assert get(kubectl, namespace, "orders")["spec"]["storage"]["size"] == "1Gi"

    apply(kubectl, manifest("orders", namespace, "Stopped", "r1"))
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    patch(kubectl, namespace, "orders", {"spec": {"storage": {"size": "2Gi"}}})
    assert get(kubectl, namespace, "orders")["spec"]["storage"]["size"] == "2Gi"


# Rule 13
def test_look_alike_claims_are_never_touched(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "someone-else"}})
    labels = {"sluice.dev/pipeline": "orders"}
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    foreign_owner = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "someone-else", "uid": owner.metadata.uid}
    ]
    look_alikes = {
        "orders-storage-fake1": {"labels": labels},
        "orders-storage-fake2": {"labels": labels, "ownerReferences": foreign_owner},
    }
    for name, meta in look_alikes.items():
        core.create_namespaced_persistent_volume_claim(
            namespace, {"metadata": {"name": name, **meta}, "spec": spec}
        )
    run_and_wait(kubectl, namespace, "orders")
    ours = set(storage(get(kubectl, namespace, "orders"))["claims"])
    assert ours.isdisjoint(look_alikes)
    apply(kubectl, manifest("orders", namespace, "Stopped", "r1"))
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    assert claim_names(api_client, namespace) == set(look_alikes)
    for name in look_alikes:
        assert (
            core.read_namespaced_persistent_volume_claim(
                name, namespace
            ).metadata.deletion_timestamp
            is None
        )


def test_other_namespaces_are_never_touched(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    core = client.CoreV1Api(api_client)
    other = f"{namespace[:50]}-other"
    # On kwok like `namespace` (see conftest.py): this pipeline's image cannot be pulled.
    core.create_namespace({"metadata": {"name": other, "annotations": KWOK_NAMESPACE_ANNOTATIONS}})
    try:
        run_and_wait(kubectl, other, "orders")
        run_and_wait(kubectl, namespace, "orders")
        (theirs,) = claim_names(api_client, other)
        apply(kubectl, manifest("orders", namespace, "Stopped", "r1"))
        wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
        kept = core.read_namespaced_persistent_volume_claim(theirs, other)
        assert kept.metadata.deletion_timestamp is None
        assert storage(get(kubectl, other, "orders"))["status"] == "InUse"
    finally:
        kubectl("-n", other, "delete", "pipeline", "--all", "--timeout=60s", check=False)
        core.delete_namespace(other)
