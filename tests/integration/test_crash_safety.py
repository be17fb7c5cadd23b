"""Rule 14: the operator is killed (SIGKILL) at the riskiest instants of a clear; after a
restart the clear completes exactly once and nothing else is touched."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for
from sluice import failpoints

from .conftest import Operator
from .pipelines import (
    both_classes,
    events,
    get,
    patch,
    read_claim,
    run_and_wait,
    stop_and_clear,
    wait_condition,
    wait_settled,
)


def _bound(api: client.ApiClient, namespace: str, name: str) -> bool:
    claim = read_claim(api, namespace, name)
    return claim is not None and claim.status is not None and claim.status.phase == "Bound"


def _versions(api: client.ApiClient, namespace: str, names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        claim = read_claim(api, namespace, name)
        assert claim is not None, f"{name} is gone"
        out[name] = (claim.metadata.resource_version, claim.metadata.deletion_timestamp)
    return out


@both_classes
@pytest.mark.parametrize(
    "point",
    [
        failpoints.AFTER_CLEARING_WRITTEN,
        failpoints.AFTER_FIRST_CLAIM_DELETE,
        failpoints.BEFORE_CLEARED_WRITTEN,
        failpoints.AFTER_CLEARED_WRITTEN,
    ],
)
def test_killed_mid_clear_resumes_and_clears_exactly_once(
    point: str,
    storage_class_name: str,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
) -> None:
    # A bystander pipeline and a look-alike claim in the same namespace must survive.
    run_and_wait(kubectl, namespace, "bystander", storage_class=storage_class_name)
    run_and_wait(kubectl, namespace, "orders", storage_class=storage_class_name)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {
                "name": "orders-storage-lookalike",
                "labels": {"sluice.dev/pipeline": "orders"},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    # Snapshot only once the look-alike is Bound: binding itself changes its resourceVersion.
    wait_for(
        lambda: _bound(api_client, namespace, "orders-storage-lookalike"),
        what="look-alike claim Bound",
    )
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    others = [
        *get(kubectl, namespace, "bystander")["status"]["storage"]["claims"],
        "orders-storage-lookalike",
    ]
    untouched = _versions(api_client, namespace, others)

    live_operator.stop()
    live_operator.start(failpoints=point, namespace=namespace)
    stop_and_clear(kubectl, namespace, "orders")
    assert live_operator.wait_exit(timeout=60) == -9, live_operator.log()

    obj = get(kubectl, namespace, "orders")
    done = point == failpoints.AFTER_CLEARED_WRITTEN
    assert obj["status"]["storage"]["status"] == ("Cleared" if done else "Clearing")
    state = read_claim(api_client, namespace, claim)
    if point == failpoints.AFTER_CLEARING_WRITTEN:
        assert state is not None and state.metadata.deletion_timestamp is None
    elif point == failpoints.AFTER_FIRST_CLAIM_DELETE:
        assert state is None or state.metadata.deletion_timestamp is not None
    else:
        assert state is None

    live_operator.start()
    wait_condition(kubectl, namespace, "orders", "StorageCleared")
    # Once status says Cleared, its Event is there: it is posted before that status write.
    cleared = [str(e.reason) for e in events(api_client, namespace, "orders")]
    assert cleared.count("StorageCleared") == 1, cleared
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["storage"] == {
        "status": "Cleared",
        "claims": [],
        "lastClearRequest": "r1",
        "claimGeneration": 1,
    }
    assert obj["status"]["deploymentStatus"] == "Stopped"
    assert "error" not in obj["status"]
    assert read_claim(api_client, namespace, claim) is None
    assert _versions(api_client, namespace, others) == untouched

    # Exactly once: the handled request is not replayed by the next process. What counts is
    # what that process decides, so it must first have acted on the pipeline: a spec change
    # after the restart (compute untouched) is settled only once it has.
    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})
    wait_condition(kubectl, namespace, "orders", "Running")
    (fresh,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    apps = client.AppsV1Api(api_client)
    sts = apps.read_namespaced_stateful_set("orders", namespace).metadata.uid
    live_operator.stop()
    live_operator.start()
    patch(kubectl, namespace, "orders", {"spec": {"storage": {"clearPolicy": "Detach"}}})
    settled = wait_settled(kubectl, namespace, "orders")["status"]
    assert settled["deploymentStatus"] == "Running", settled
    assert settled["storage"]["status"] == "InUse", settled
    assert settled["storage"]["claims"] == [fresh], settled
    assert "error" not in settled, settled
    again = read_claim(api_client, namespace, fresh)
    assert again is not None and again.metadata.deletion_timestamp is None
    still = apps.read_namespaced_stateful_set("orders", namespace).metadata
    assert still.uid == sts and still.deletion_timestamp is None
    reasons = [str(e.reason) for e in events(api_client, namespace, "orders")]
    # Exactly once each, whichever instant the kill came at: a clear's Events are posted
    # before the status write that records them, named by the clear (a retry gets 409).
    assert reasons.count("StorageCleared") == 1 and reasons.count("StorageClearing") == 1
