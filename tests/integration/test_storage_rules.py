"""Contract section 2, rule by rule, against the real control plane, as a user drives it."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from localkube.cluster import CSI_CLASS, KWOK_NAMESPACE_ANNOTATIONS, STORAGE_CLASS
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    both_classes,
    claim_names,
    claim_policy,
    claims,
    clear_and_wait,
    condition,
    event_once,
    events,
    get,
    hold,
    manifest,
    patch,
    pods,
    read_claim,
    reasons_once,
    release,
    run_and_wait,
    run_with_claim,
    stop_and_clear,
    storage,
    wait_condition,
    wait_error,
    wait_jsonpath,
    wait_settled,
    wait_storage,
    watch_storage,
)

pytestmark = pytest.mark.usefixtures("live_operator")


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
@both_classes
def test_clearing_waits_for_real_deletion_then_writes_cleared_and_an_event(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    claim = run_with_claim(
        kubectl, api_client, namespace, "orders", held=True, storage_class=storage_class_name
    )
    stop_and_clear(kubectl, namespace, "orders")
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
@both_classes
def test_request_on_cleared_storage_is_recorded_as_handled(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped", storage_class=storage_class_name))
    wait_settled(kubectl, namespace, "orders")
    with watch_storage(api_client, namespace, "orders") as seen:
        patch(kubectl, namespace, "orders", {"spec": {"storage": {"clearRequest": "r1"}}})
        wait_jsonpath(kubectl, namespace, "orders", ".status.storage.lastClearRequest", "r1")
    assert storage(get(kubectl, namespace, "orders"))["status"] == "Cleared"
    assert seen == ["Cleared"], seen  # never Clearing, not even for a moment
    # Events go out in order: once ClearRequestHandled is there, a StorageClearing before it
    # would be too.
    reasons = reasons_once(api_client, namespace, "orders", "ClearRequestHandled")
    assert "StorageClearing" not in reasons and "StorageCleared" not in reasons, reasons


# Rule 8
@both_classes
def test_clear_cannot_be_cancelled_and_a_start_waits_for_it(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    claim = run_with_claim(
        kubectl, api_client, namespace, "orders", held=True, storage_class=storage_class_name
    )
    stop_and_clear(kubectl, namespace, "orders")
    wait_storage(kubectl, namespace, "orders", "Clearing")
    # Try to cancel: remove the request and ask to run again.
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Running", "storage": {"clearRequest": None}}},
    )
    obj = wait_error(kubectl, namespace, "orders", "CannotStartWhileClearingStorage")
    assert storage(obj)["status"] == "Clearing"
    assert pods(api_client, namespace) == []

    release(api_client, "persistent_volume_claim", namespace, claim)
    wait_condition(kubectl, namespace, "orders", "Running")
    obj = get(kubectl, namespace, "orders")
    assert "error" not in obj["status"]
    assert storage(obj)["lastClearRequest"] == "r1"
    (fresh,) = claim_names(api_client, namespace)
    assert fresh != claim


@both_classes
def test_a_changed_request_mid_clear_neither_cancels_it_nor_is_lost(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    """r1 -> r2 while r1 clears: r1 completes exactly once (rule 8); r2 is then a value other
    than lastClearRequest (r1), so a request of its own (rule 3), on Cleared storage: a
    no-op recorded as handled (rule 7). Nothing is cleared twice."""
    claim = run_with_claim(
        kubectl, api_client, namespace, "orders", held=True, storage_class=storage_class_name
    )
    with watch_storage(api_client, namespace, "orders") as seen:
        stop_and_clear(kubectl, namespace, "orders", "r1")
        wait_storage(kubectl, namespace, "orders", "Clearing")
        stop_and_clear(kubectl, namespace, "orders", "r2")
        obj = wait_settled(kubectl, namespace, "orders")
        assert storage(obj)["status"] == "Clearing", obj["status"]
        assert storage(obj)["clearingRequest"] == "r1", obj["status"]
        assert read_claim(api_client, namespace, claim) is not None  # still held

        release(api_client, "persistent_volume_claim", namespace, claim)
        obj = wait_storage(kubectl, namespace, "orders", "Cleared")
        wait_jsonpath(kubectl, namespace, "orders", ".status.storage.lastClearRequest", "r2")
    assert seen == ["InUse", "Clearing", "Cleared"], seen
    cleared = event_once(api_client, namespace, "orders", "StorageCleared")
    assert "(r1)" in cleared.message, cleared.message
    handled = event_once(api_client, namespace, "orders", "ClearRequestHandled")
    assert "(r2)" in handled.message, handled.message
    reasons = reasons_once(api_client, namespace, "orders", "ClearRequestHandled")
    assert reasons.count("StorageClearing") == 1 and reasons.count("StorageCleared") == 1
    assert reasons.count("ClearRequestHandled") == 1, reasons
    assert claim_names(api_client, namespace) == set()


# Rule 9
@both_classes
def test_failing_clear_is_retried_shows_the_error_and_never_goes_back_to_in_use(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders", storage_class=storage_class_name)
    policy = f"deny-pvc-delete-{namespace}"[:63]
    kubectl("apply", "-f", "-", input=claim_policy(policy, namespace, ["DELETE"]))
    wait_for(lambda: _deletes_denied(api_client, namespace), what="the deny policy to apply")
    with watch_storage(api_client, namespace, "orders") as seen:
        stop_and_clear(kubectl, namespace, "orders")
        obj = wait_error(kubectl, namespace, "orders", "StorageClearFailed")
        assert storage(obj)["status"] == "Clearing"
        assert "blocked by test policy" in obj["status"]["error"]["details"]["body"]
        warning = event_once(
            api_client, namespace, "orders", "StorageClearFailed", "Warning", "blocked"
        )
        assert "blocked by test policy" in warning.message
        # Retried: a later attempt fails too (the counter on the Event, or another Event).
        wait_for(
            lambda: _attempts(api_client, namespace, "StorageClearFailed") >= 2,
            timeout=60,
            what="a second attempt",
        )

        kubectl("delete", "validatingadmissionpolicybinding", policy)
        kubectl("delete", "validatingadmissionpolicy", policy)
        obj = wait_storage(kubectl, namespace, "orders", "Cleared", timeout=90)
    assert seen == ["InUse", "Clearing", "Cleared"], seen  # watched: never back to InUse
    assert "error" not in obj["status"]
    assert claim_names(api_client, namespace) == {"deny-probe"}


def _attempts(api: client.ApiClient, namespace: str, reason: str) -> int:
    return sum(e.count or 1 for e in events(api, namespace, "orders") if e.reason == reason)


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
@both_classes
def test_detach_keeps_the_claim_marked_and_the_next_start_gets_fresh_storage(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    detach = {"policy": "Detach", "storage_class": storage_class_name}
    run_and_wait(kubectl, namespace, "orders", **detach)
    uid = get(kubectl, namespace, "orders")["metadata"]["uid"]
    (old,) = claim_names(api_client, namespace)
    apply(kubectl, manifest("orders", namespace, "Stopped", "r1", **detach))
    wait_storage(kubectl, namespace, "orders", "Cleared")
    core = client.CoreV1Api(api_client)
    detached = core.read_namespaced_persistent_volume_claim(old, namespace)
    assert detached.metadata.deletion_timestamp is None
    assert not any(ref.uid == uid for ref in detached.metadata.owner_references or [])
    assert detached.metadata.annotations["sluice.dev/detached-from-uid"] == uid
    assert detached.metadata.annotations["sluice.dev/detached-from"] == f"{namespace}/orders"
    assert detached.metadata.annotations["sluice.dev/detached-at"]
    version = detached.metadata.resource_version

    apply(kubectl, manifest("orders", namespace, "Running", "r1", **detach))
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
@both_classes
def test_deleting_a_pipeline_deletes_its_storage_first(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    claim = run_with_claim(
        kubectl, api_client, namespace, "orders", held=True, storage_class=storage_class_name
    )
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--wait=false")
    obj = wait_storage(kubectl, namespace, "orders", "Clearing")
    assert obj["metadata"]["deletionTimestamp"]
    release(api_client, "persistent_volume_claim", namespace, claim)
    kubectl("-n", namespace, "wait", "--for=delete", "pipeline/orders", "--timeout=60s")
    assert claim_names(api_client, namespace) == set()


@both_classes
def test_deleting_a_detach_pipeline_leaves_its_claims_behind(
    storage_class_name: str, kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    claim = run_with_claim(
        kubectl, api_client, namespace, "orders", policy="Detach", storage_class=storage_class_name
    )
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=60s")
    left = client.CoreV1Api(api_client).read_namespaced_persistent_volume_claim(claim, namespace)
    assert left.metadata.deletion_timestamp is None
    assert not left.metadata.owner_references
    assert left.metadata.annotations["sluice.dev/detached-from"] == f"{namespace}/orders"


# Rule 12 where the class cannot expand (standard: the in-tree hostPath provisioner): every
# size change needs Cleared, as does any class change; refused by the API server while storage
# is InUse or Clearing (growing by the storage-growth policy, the rest by the CRD's rules).
# Growing where it can expand: test_storage_grows.py.
FROZEN_EDITS = [
    pytest.param({"size": "2Gi"}, "size", id="grow"),
    pytest.param({"size": "512Mi"}, "size", id="shrink"),
    pytest.param({"storageClassName": CSI_CLASS}, "storageClassName", id="class-change"),
    pytest.param({"storageClassName": None}, "storageClassName", id="class-removed"),
]


def _refused(kubectl: Kubectl, namespace: str, edit: dict[str, Any], field: str) -> None:
    before = get(kubectl, namespace, "orders")
    refused = patch(kubectl, namespace, "orders", {"spec": {"storage": edit}}, check=False)
    assert refused.returncode != 0, edit
    assert f"spec.storage.{field}" in refused.stderr, refused.stderr
    assert "EditRestrictedToClearedStorage" in refused.stderr, refused.stderr
    after = get(kubectl, namespace, "orders")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize(("edit", "field"), FROZEN_EDITS)
def test_size_and_class_are_frozen_while_storage_is_not_cleared(
    edit: dict[str, Any],
    field: str,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    claim = run_with_claim(kubectl, api_client, namespace, "orders", storage_class=STORAGE_CLASS)
    _refused(kubectl, namespace, edit, field)  # InUse
    hold(api_client, "persistent_volume_claim", namespace, claim)
    stop_and_clear(kubectl, namespace, "orders")
    wait_storage(kubectl, namespace, "orders", "Clearing")
    _refused(kubectl, namespace, edit, field)  # Clearing
    release(api_client, "persistent_volume_claim", namespace, claim)
    wait_storage(kubectl, namespace, "orders", "Cleared")
    spec = get(kubectl, namespace, "orders")["spec"]["storage"]
    assert (spec["size"], spec["storageClassName"]) == ("1Gi", STORAGE_CLASS)


def test_size_and_class_change_freely_once_cleared_and_the_next_claim_follows(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders", storage_class=STORAGE_CLASS)
    clear_and_wait(kubectl, namespace, "orders")
    for edit in ({"size": "512Mi"}, {"size": "2Gi"}, {"storageClassName": CSI_CLASS}):
        patch(kubectl, namespace, "orders", {"spec": {"storage": edit}})
    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})
    wait_condition(kubectl, namespace, "orders", "Running")
    (claim,) = claims(api_client, namespace)
    assert claim.spec.storage_class_name == CSI_CLASS
    assert claim.spec.resources.requests["storage"] == "2Gi"


# Rule 13
def test_look_alike_claims_are_never_touched(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    # A claim with Sluice's own detached mark, carrying another pipeline's UID: the one an
    # earlier Pipeline of the same name left behind by clearPolicy: Detach.
    run_and_wait(kubectl, namespace, "orders", policy="Detach")
    earlier = get(kubectl, namespace, "orders")["metadata"]["uid"]
    (detached,) = claim_names(api_client, namespace)
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=60s", timeout=70)
    marks = core.read_namespaced_persistent_volume_claim(detached, namespace).metadata
    assert marks.annotations["sluice.dev/detached-from-uid"] == earlier

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
    others = {*look_alikes, detached}
    wait_for(
        lambda: all(read_claim(api_client, namespace, n).status.phase == "Bound" for n in others),
        what="the other claims Bound",
    )
    versions = {n: read_claim(api_client, namespace, n).metadata.resource_version for n in others}
    run_and_wait(kubectl, namespace, "orders")
    assert get(kubectl, namespace, "orders")["metadata"]["uid"] != earlier
    ours = set(storage(get(kubectl, namespace, "orders"))["claims"])
    assert ours.isdisjoint(others)
    apply(kubectl, manifest("orders", namespace, "Stopped", "r1"))
    wait_storage(kubectl, namespace, "orders", "Cleared")
    assert claim_names(api_client, namespace) == others
    after = {n: read_claim(api_client, namespace, n).metadata.resource_version for n in others}
    assert after == versions  # never touched: not even a label or an annotation


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
