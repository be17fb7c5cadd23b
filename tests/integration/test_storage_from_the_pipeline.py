"""Storage truth from the pipeline's side (contract rules 20 and 21), on the real node.

The engine pipeline (tests/pipeline: Feldera's engine, `dbsp`) runs as a real pod with its
state in the claim. What it says about itself (`engine-pipeline status` through `kubectl
exec`, its log) is what these tests check: after a stop it resumes from the checkpoint its
SIGTERM took; after `Cleared` it starts with no checkpoint; after a restore it resumes from
the snapshot's; a detached claim keeps the checkpoint. A pod that ignores SIGTERM holds the
clear for its grace period, and its claim is never deleted under it; a forced stop does not
wait. On both storage classes: the in-tree hostPath provisioner and csi-local (whose Node
service the kubelet stages and publishes).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for
from pipeline import report

from .conftest import Operator
from .pipelines import (
    IMAGE,
    IMAGE_IGNORING_SIGTERM,
    apply,
    claim_names,
    get,
    patch,
    pod_security,
    wait_jsonpath,
    wait_storage,
)
from .volumes import volume, volume_dir

ENGINE, IGNORES_SIGTERM = IMAGE, IMAGE_IGNORING_SIGTERM
CLASSES = [STORAGE_CLASS, CSI_CLASS]


def engine_pipeline(
    name: str, namespace: str, storage_class: str, image: str = ENGINE, **spec: Any
) -> str:
    storage: dict[str, Any] = {"size": "1Gi", "storageClassName": storage_class}
    storage.update(spec.pop("storage", {}))
    return yaml.safe_dump(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "desiredState": "Running",
                "image": image,
                "storage": storage,
                **pod_security(storage_class),
                **spec,
            },
        }
    )


def pod_of(name: str) -> str:
    return f"{name}-0"  # the StatefulSet's one replica


def wait_running(kubectl: Kubectl, namespace: str, name: str) -> None:
    wait_jsonpath(kubectl, namespace, name, ".status.deploymentStatus", "Running", timeout=120)


def wait_checkpointed(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The pipeline's status once this process has taken a checkpoint of its own."""

    def checkpointed() -> dict[str, Any] | None:
        status = report.status(kubectl, pod_of(name), namespace)
        return status if status["checkpoints_taken"] >= 1 else None

    return wait_for(checkpointed, timeout=90, what=f"{name} to checkpoint", interval=0.5)


def started(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """What the running process says it started from (its log), and its status now."""
    reports = wait_for(
        lambda: report.of_kind(report.events(kubectl, pod_of(name), namespace), "started"),
        timeout=60,
        what=f"{name}'s start report",
    )
    status = report.status(kubectl, pod_of(name), namespace)
    assert status["resumed_from"] == reports[-1]["resumed_from"]
    # The state itself came back (or started empty), not just a step counter.
    assert status["total"] == status["expected_total"], status
    return status


def set_desired(kubectl: Kubectl, namespace: str, name: str, desired: str, **storage: Any) -> None:
    body: dict[str, Any] = {"spec": {"desiredState": desired}}
    if storage:
        body["spec"]["storage"] = storage
    patch(kubectl, namespace, name, body)


def stop(kubectl: Kubectl, namespace: str, name: str, **storage: Any) -> None:
    set_desired(kubectl, namespace, name, "Stopped", **storage)
    wait_jsonpath(kubectl, namespace, name, ".status.deploymentStatus", "Stopped", timeout=120)


def restart(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    set_desired(kubectl, namespace, name, "Running")
    wait_running(kubectl, namespace, name)
    return started(kubectl, namespace, name)


def run_ignoring_sigterm(kubectl: Kubectl, namespace: str, name: str, grace: int) -> None:
    """A running pipeline whose process ignores SIGTERM, with this grace period."""
    text = engine_pipeline(
        name, namespace, STORAGE_CLASS, IGNORES_SIGTERM, terminationGracePeriodSeconds=grace
    )
    apply(kubectl, text)
    wait_running(kubectl, namespace, name)


@pytest.mark.parametrize("storage_class", CLASSES)
def test_a_stop_checkpoints_and_after_a_clear_the_pipeline_starts_with_nothing(
    kubectl: Kubectl, namespace: str, live_operator: Operator, storage_class: str
) -> None:
    ns = namespace
    apply(kubectl, engine_pipeline("orders", ns, storage_class))
    wait_running(kubectl, ns, "orders")
    first = started(kubectl, ns, "orders")
    assert first["resumed_from"] is None  # rule 1: a new pipeline's storage is empty
    before_stop = wait_checkpointed(kubectl, ns, "orders")

    # Rule 21: the stop gives the pod its grace period; its SIGTERM checkpoint is on the
    # volume, so the restart resumes at least where it was when we asked it to stop.
    stop(kubectl, ns, "orders")
    resumed = restart(kubectl, ns, "orders")
    assert resumed["resumed_from"] is not None
    assert resumed["resumed_from"]["steps"] >= before_stop["steps"], (before_stop, resumed)

    # Rule 20: after Cleared, the restarted pipeline finds no checkpoint.
    wait_checkpointed(kubectl, ns, "orders")
    stop(kubectl, ns, "orders", clearRequest="r1")
    wait_storage(kubectl, ns, "orders", "Cleared", timeout=120)
    fresh = restart(kubectl, ns, "orders")
    assert fresh["resumed_from"] is None, fresh


@pytest.mark.parametrize("storage_class", CLASSES)
def test_a_detached_claim_keeps_the_checkpoint_and_the_next_start_has_none(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    live_operator: Operator,
    storage_class: str,
) -> None:
    ns = namespace
    apply(kubectl, engine_pipeline("orders", ns, storage_class, storage={"clearPolicy": "Detach"}))
    wait_running(kubectl, ns, "orders")
    wait_checkpointed(kubectl, ns, "orders")
    [claim] = claim_names(api_client, ns)
    pv_name = client.CoreV1Api(api_client).read_namespaced_persistent_volume_claim(claim, ns)
    stop(kubectl, ns, "orders", clearRequest="detach-1")
    wait_storage(kubectl, ns, "orders", "Cleared", timeout=120)

    # The detached claim (and its volume) still holds the engine's checkpoint catalog.
    pv = volume(api_client, pv_name.spec.volume_name)
    assert pv is not None
    catalog = volume_dir(cluster, pv) / "data" / "checkpoints.feldera"
    assert catalog.is_file() and catalog.stat().st_size > 0, catalog
    fresh = restart(kubectl, ns, "orders")
    assert fresh["resumed_from"] is None, fresh
    claims = claim_names(api_client, ns)
    assert claim in claims and len(claims) == 2  # the detached one, and a fresh one


def test_a_restored_claim_resumes_from_the_checkpoint_taken_before_the_clear(
    kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    """The safety net (rule 18) from the pipeline's side: snapshots need CSI (csi-local)."""
    ns = namespace
    safety_net = {"snapshotBeforeClear": {"volumeSnapshotClassName": CSI_CLASS, "retainFor": "1h"}}
    apply(kubectl, engine_pipeline("orders", ns, CSI_CLASS, storage=safety_net))
    wait_running(kubectl, ns, "orders")
    before_clear = wait_checkpointed(kubectl, ns, "orders")
    stop(kubectl, ns, "orders", clearRequest="oops")
    wait_storage(kubectl, ns, "orders", "Cleared", timeout=120)
    [snapshot] = get(kubectl, ns, "orders")["status"]["storage"]["snapshots"]

    patch(kubectl, ns, "orders", {"spec": {"storage": {"restoreFrom": snapshot["name"]}}})
    restored = restart(kubectl, ns, "orders")
    assert restored["resumed_from"] is not None, restored
    # Counts continue from where the pipeline stopped before the clear (its last checkpoint).
    assert restored["resumed_from"]["steps"] >= before_clear["steps"], (before_clear, restored)
    assert get(kubectl, ns, "orders")["status"]["storage"]["restoredFrom"] == snapshot["name"]


def test_a_clear_waits_for_a_pod_that_ignores_sigterm_and_never_deletes_its_claim_under_it(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    ns, grace = namespace, 8
    run_ignoring_sigterm(kubectl, ns, "orders", grace)
    wait_checkpointed(kubectl, ns, "orders")
    [claim] = claim_names(api_client, ns)
    core = client.CoreV1Api(api_client)
    asked = time.monotonic()
    set_desired(kubectl, ns, "orders", "Stopped", clearRequest="r1")

    # While the process runs (the pod exists), the claim is untouched and nothing is Clearing.
    # The pod is listed after the reads: still there then, it was there while they were made.
    seen_running = 0
    while True:
        storage = get(kubectl, ns, "orders")["status"]["storage"]["status"]
        held = {
            str(c.metadata.name)
            for c in core.list_namespaced_persistent_volume_claim(ns).items
            if c.metadata.deletion_timestamp is None
        }
        if not core.list_namespaced_pod(ns).items:
            break
        seen_running += 1
        assert claim in held  # there, and not being deleted
        assert storage == "InUse"
        assert time.monotonic() - asked < grace + 60, "the pod outlived its grace period"
        time.sleep(0.25)
    gone_after = time.monotonic() - asked
    assert seen_running > 0
    assert gone_after >= grace - 1, f"the pod was gone after {gone_after:.1f}s, grace {grace}s"
    wait_storage(kubectl, ns, "orders", "Cleared", timeout=120)
    assert claim not in claim_names(api_client, ns)


def test_a_forced_stop_does_not_wait_for_the_grace_period(
    kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    ns, grace = namespace, 600
    run_ignoring_sigterm(kubectl, ns, "orders", grace)
    # Feldera's stop?force=true, as the REST API writes it: the mark and the stop in one
    # change (a kubelet keeps the grace period of the first deletion it acted on).
    forced = {
        "metadata": {"annotations": {"sluice.dev/force-stop": "true"}},
        "spec": {"desiredState": "Stopped"},
    }
    asked = time.monotonic()
    patch(kubectl, ns, "orders", forced)
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Stopped", timeout=60)
    assert time.monotonic() - asked < 60
    # The mark was for one stop: gone once the pipeline runs again.
    set_desired(kubectl, ns, "orders", "Running")
    wait_running(kubectl, ns, "orders")
    wait_for(
        lambda: (
            "sluice.dev/force-stop"
            not in (get(kubectl, ns, "orders")["metadata"].get("annotations") or {})
        ),
        timeout=30,
        what="the force-stop mark to be removed",
    )
    # Leave no 600 s pod behind for the namespace's deletion to wait on.
    patch(kubectl, ns, "orders", forced)
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Stopped", timeout=60)
