"""Undo a clear (contract rule 18, restore): `spec.storage.restoreFrom` names a
VolumeSnapshot in the pipeline's namespace, and the next claim is restored from it, on
csi-local with the real csi-provisioner and snapshot-controller. Checked where a user
looks (kubectl get/wait, Events, kubectl apply's answer) and one level down: the files in
csi-local's directory of the restored volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .pipelines import (
    apply,
    clear_and_wait,
    events,
    get,
    manifest,
    patch,
    reasons_once,
    run_and_wait,
    wait_condition,
    wait_jsonpath,
)
from .volumes import bound_volume, run_with_data, volume, volume_dir, volume_snapshot

pytestmark = pytest.mark.usefixtures("live_operator")

SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")


def take_snapshot(api: client.ApiClient, namespace: str, name: str, claim: str) -> None:
    """A VolumeSnapshot of a claim, as a user makes one; returns once it is readyToUse."""
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        *SNAPSHOTS,
        namespace,
        "volumesnapshots",
        volume_snapshot(name, claim),
    )

    def ready() -> bool:
        snap: Any = custom.get_namespaced_custom_object(
            *SNAPSHOTS, namespace, "volumesnapshots", name
        )
        return (snap.get("status") or {}).get("readyToUse") is True

    wait_for(ready, timeout=60, what=f"VolumeSnapshot {name} readyToUse")


def the_claim(kubectl: Kubectl, api: client.ApiClient, namespace: str, name: str):  # type: ignore[no-untyped-def]
    (claim,) = get(kubectl, namespace, name)["status"]["storage"]["claims"]
    pvc: client.V1PersistentVolumeClaim = client.CoreV1Api(
        api
    ).read_namespaced_persistent_volume_claim(claim, namespace)
    return pvc


def files_in_volume(
    api: client.ApiClient, kubectl: Kubectl, cluster: LocalCluster, namespace: str, name: str
) -> Path:
    pv = volume(api, bound_volume(api, kubectl, namespace, name))
    assert pv is not None
    return volume_dir(cluster, pv)


def storage_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    storage: dict[str, Any] = get(kubectl, namespace, name)["status"]["storage"]
    return storage


def with_restore_from(text: str, snapshot: str | None, desired: str | None = None) -> str:
    obj = yaml.safe_load(text)
    if snapshot is not None:
        obj["spec"]["storage"]["restoreFrom"] = snapshot
    if desired is not None:
        obj["spec"]["desiredState"] = desired
    return yaml.safe_dump(obj)


def test_data_survives_a_clear_through_a_snapshot_and_the_next_clear_starts_empty(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, cluster: LocalCluster
) -> None:
    _, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=CSI_CLASS
    )
    content = data.read_bytes()  # the volume is deleted by the clear
    first = the_claim(kubectl, api_client, namespace, "orders").metadata.name
    take_snapshot(api_client, namespace, "orders-before-reset", first)
    clear_and_wait(kubectl, namespace, "orders")

    body = {"spec": {"desiredState": "Running", "storage": {"restoreFrom": "orders-before-reset"}}}
    patch(kubectl, namespace, "orders", body)
    wait_condition(kubectl, namespace, "orders", "Running")
    wait_jsonpath(
        kubectl, namespace, "orders", ".status.storage.restoredFrom", "orders-before-reset"
    )

    restored = the_claim(kubectl, api_client, namespace, "orders")
    assert restored.metadata.name != first
    ref = restored.spec.data_source_ref
    assert (ref.api_group, ref.kind, ref.name) == (
        "snapshot.storage.k8s.io",
        "VolumeSnapshot",
        "orders-before-reset",
    )
    directory = files_in_volume(api_client, kubectl, cluster, namespace, "orders")
    assert (directory / data.name).read_bytes() == content
    assert storage_status(kubectl, namespace, "orders")["lastRestoreFrom"] == (
        "orders-before-reset"
    )
    wanted = f"Claim {restored.metadata.name} restored from VolumeSnapshot orders-before-reset."
    wait_for(
        lambda: wanted in [e.message for e in events(api_client, namespace, "orders")],
        what="the StorageRestored Event",
    )

    # While InUse, restoreFrom cannot change (kubectl apply says so, naming the field) ...
    text = manifest("orders", namespace, storage_class=CSI_CLASS)
    refused = apply(kubectl, with_restore_from(text, "other"), check=False)
    assert refused.returncode != 0
    assert "spec.storage.restoreFrom can only be set while storage is Cleared" in refused.stderr

    # ... and a later clear then start gives empty storage, with restoreFrom still set (as a
    # GitOps manifest keeps it): the snapshot is restored once.
    clear_and_wait(kubectl, namespace, "orders", "r2")
    assert "restoredFrom" not in storage_status(kubectl, namespace, "orders")
    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})
    wait_condition(kubectl, namespace, "orders", "Running")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    fresh = the_claim(kubectl, api_client, namespace, "orders")
    assert fresh.spec.data_source_ref is None and fresh.spec.data_source is None
    directory = files_in_volume(api_client, kubectl, cluster, namespace, "orders")
    # Empty but for what the running pipeline itself wrote since: nothing of before.
    assert not (directory / data.name).exists(), sorted(directory.iterdir())
    storage = storage_status(kubectl, namespace, "orders")
    assert "restoredFrom" not in storage
    assert storage["lastRestoreFrom"] == "orders-before-reset"

    # Removing restoreFrom is allowed while InUse; it is forgotten (set again, it restores).
    patch(kubectl, namespace, "orders", {"spec": {"storage": {"restoreFrom": None}}})

    def forgotten() -> bool:
        return "lastRestoreFrom" not in storage_status(kubectl, namespace, "orders")

    wait_for(forgotten, what="lastRestoreFrom removed")


def test_a_missing_snapshot_is_a_clear_error_until_it_exists(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, cluster: LocalCluster
) -> None:
    _, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=CSI_CLASS
    )
    content = data.read_bytes()  # the volume is deleted by the clear
    source = the_claim(kubectl, api_client, namespace, "orders").metadata.name

    # Another pipeline, created restoring from a snapshot (of orders) that is not there yet.
    text = manifest("audit", namespace, storage_class=CSI_CLASS)
    apply(kubectl, with_restore_from(text, "orders-later"))
    wait_jsonpath(
        kubectl, namespace, "audit", ".status.error.error_code", "RestoreSnapshotNotFound"
    )
    status = get(kubectl, namespace, "audit")["status"]
    message = status["error"]["message"]
    for words in ("spec.storage.restoreFrom", "orders-later", namespace, "does not exist"):
        assert words in message, message
    assert status["deploymentStatus"] == "Provisioning"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "RestoreSnapshotNotFound"
    assert message in conditions["Ready"]["message"]
    assert message in conditions["Running"]["message"]
    assert status["storage"]["status"] == "Cleared"
    audit_claims = client.CoreV1Api(api_client).list_namespaced_persistent_volume_claim(
        namespace, label_selector="sluice.dev/pipeline=audit"
    )
    assert audit_claims.items == []  # never a fresh empty claim instead
    reasons_once(api_client, namespace, "audit", "RestoreSnapshotNotFound")

    # The snapshot appears: the pipeline proceeds on its own (nothing else is changed).
    take_snapshot(api_client, namespace, "orders-later", source)
    wait_condition(kubectl, namespace, "audit", "Running", timeout=120)
    wait_jsonpath(kubectl, namespace, "audit", ".status.storage.restoredFrom", "orders-later")
    assert "error" not in get(kubectl, namespace, "audit")["status"]
    directory = files_in_volume(api_client, kubectl, cluster, namespace, "audit")
    assert (directory / data.name).read_bytes() == content


def test_restore_from_is_refused_while_in_use_and_accepted_while_cleared(
    kubectl: Kubectl, namespace: str
) -> None:
    text = manifest("orders", namespace)
    run_and_wait(kubectl, namespace, "orders")

    refused = apply(kubectl, with_restore_from(text, "orders-snap"), check=False)
    assert refused.returncode != 0
    assert "spec.storage.restoreFrom can only be set while storage is Cleared" in refused.stderr
    assert "restoreFrom" not in get(kubectl, namespace, "orders")["spec"]["storage"]

    stopped = manifest("orders", namespace, desired="Stopped", clear_request="r1")
    apply(kubectl, stopped)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    apply(kubectl, with_restore_from(stopped, "orders-snap"))
    assert get(kubectl, namespace, "orders")["spec"]["storage"]["restoreFrom"] == "orders-snap"
