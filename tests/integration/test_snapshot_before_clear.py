"""The safety net (contract rules 18 and 19): with `spec.storage.snapshotBeforeClear`, a
clear snapshots each claim and deletes nothing until every snapshot is readyToUse; the
snapshots are kept for `retainFor`, also after the Pipeline is deleted, and a pipeline can
start again from one. On csi-local, with the real csi-provisioner, snapshot-controller and
csi-snapshotter; checked where a user looks (kubectl get/wait, Events) and one level down
(the files in csi-local's directories)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for
from sluice import failpoints

from .conftest import Operator
from .pipelines import (
    apply,
    get,
    manifest,
    patch,
    read_claim,
    reasons_once,
    stop_and_clear,
    wait_condition,
    wait_jsonpath,
)
from .volumes import bound_volume, volume, volume_dir, write_data

SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")


def safety_net(name: str, namespace: str, retain_for: str, **kwargs: Any) -> str:
    """The pipeline's manifest on csi-local, with snapshotBeforeClear."""
    obj = yaml.safe_load(manifest(name, namespace, storage_class=CSI_CLASS, **kwargs))
    obj["spec"]["storage"]["snapshotBeforeClear"] = {
        "volumeSnapshotClassName": CSI_CLASS,
        "retainFor": retain_for,
    }
    return yaml.safe_dump(obj)


def run_with_safety_net(
    kubectl: Kubectl, namespace: str, name: str, retain_for: str
) -> dict[str, Any]:
    apply(kubectl, safety_net(name, namespace, retain_for))
    wait_condition(kubectl, namespace, name, "Running")
    wait_jsonpath(kubectl, namespace, name, ".status.storage.status", "InUse")
    return get(kubectl, namespace, name)


def volume_snapshots(api: client.ApiClient, namespace: str, pipeline: str = "orders") -> list[Any]:
    items: list[Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        *SNAPSHOTS, namespace, "volumesnapshots", label_selector=f"sluice.dev/pipeline={pipeline}"
    )["items"]
    return items


def snapshot_content(api: client.ApiClient, name: str) -> Any | None:
    try:
        return client.CustomObjectsApi(api).get_cluster_custom_object(
            *SNAPSHOTS, "volumesnapshotcontents", name
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def snapshot_archive(cluster: LocalCluster, content: Any) -> Path:
    """Where csi-local keeps a snapshot's data (its content's snapshotHandle)."""
    return cluster.csi_dir / "snapshots" / f"{content['status']['snapshotHandle']}.tar"


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def check_expires_on_time(
    api: client.ApiClient, cluster: LocalCluster, namespace: str, snapshot: Any
) -> None:
    """The snapshot is deleted once its expires-at has passed, never before, and with it its
    VolumeSnapshotContent and csi-local's copy of the data (deletionPolicy Delete)."""
    expires = parse_time(snapshot["metadata"]["annotations"]["sluice.dev/expires-at"])
    content = snapshot_content(api, snapshot["status"]["boundVolumeSnapshotContentName"])
    assert content is not None
    archive = snapshot_archive(cluster, content)
    assert archive.exists()
    name = snapshot["metadata"]["name"]

    def gone() -> bool:  # the snapshot controller's finalizer goes first
        return name not in [s["metadata"]["name"] for s in volume_snapshots(api, namespace)]

    wait_for(gone, timeout=120, what=f"VolumeSnapshot {name} expired")
    assert datetime.now(UTC) >= expires  # the stamp has whole seconds
    wait_for(
        lambda: snapshot_content(api, content["metadata"]["name"]) is None,
        timeout=60,
        what="the VolumeSnapshotContent deleted",
    )
    wait_for(lambda: not archive.exists(), timeout=60, what="csi-local's snapshot data deleted")


def test_a_clear_snapshots_each_claim_first_and_a_restart_restores_the_data(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    live_operator: Operator,
) -> None:
    obj = run_with_safety_net(kubectl, namespace, "orders", retain_for="1h")
    (claim,) = obj["status"]["storage"]["claims"]
    data = write_data(api_client, cluster, bound_volume(api_client, kubectl, namespace, "orders"))
    content = data.read_bytes()  # the volume is deleted by the clear

    stop_and_clear(kubectl, namespace, "orders", "r1")
    wait_condition(kubectl, namespace, "orders", "StorageCleared", timeout=120)

    storage = get(kubectl, namespace, "orders")["status"]["storage"]
    assert storage["status"] == "Cleared" and storage["claims"] == []
    (record,) = storage["snapshots"]
    assert record["claim"] == claim
    assert record["readyToUse"] is True
    assert record["clearRequest"] == "r1"
    assert record["restoreSize"]
    kept = parse_time(record["expiresAt"]) - parse_time(record["takenAt"])
    assert abs(kept.total_seconds() - 3600) <= 5, record
    assert read_claim(api_client, namespace, claim) is None

    (snapshot,) = volume_snapshots(api_client, namespace)
    assert snapshot["metadata"]["name"] == record["name"]
    assert snapshot["spec"]["source"] == {"persistentVolumeClaimName": claim}
    assert snapshot["metadata"]["labels"]["sluice.dev/pipeline-uid"] == obj["metadata"]["uid"]
    assert "ownerReferences" not in snapshot["metadata"]  # it outlives a deleted Pipeline
    reasons_once(api_client, namespace, "orders", "StorageSnapshotted")

    # Undo: start again from the snapshot; the file written before the clear is back.
    body = {"spec": {"desiredState": "Running", "storage": {"restoreFrom": record["name"]}}}
    patch(kubectl, namespace, "orders", body)
    wait_condition(kubectl, namespace, "orders", "Running", timeout=120)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.restoredFrom", record["name"])
    wide = kubectl("-n", namespace, "get", "pipeline", "orders", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["RESTORED-FROM", "AGE"], wide
    assert wide[1].split()[-2] == record["name"], wide
    pv = volume(api_client, bound_volume(api_client, kubectl, namespace, "orders"))
    assert pv is not None
    assert (volume_dir(cluster, pv) / data.name).read_bytes() == content


def test_a_failing_snapshot_keeps_the_claim_and_says_why(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    live_operator: Operator,
) -> None:
    obj = run_with_safety_net(kubectl, namespace, "orders", retain_for="20s")
    (claim,) = obj["status"]["storage"]["claims"]
    pv_name = bound_volume(api_client, kubectl, namespace, "orders")
    data = write_data(api_client, cluster, pv_name)
    pv = volume(api_client, pv_name)
    assert pv is not None
    failure = cluster.csi_dir / "fail-snapshot" / pv.spec.csi.volume_handle
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text("the snapshot store is full")

    try:
        stop_and_clear(kubectl, namespace, "orders", "r1")
        wait_jsonpath(
            kubectl, namespace, "orders", ".status.error.error_code", "StorageClearFailed", 120
        )
        status = get(kubectl, namespace, "orders")["status"]
        assert status["storage"]["status"] == "Clearing"
        message = status["error"]["message"]
        assert "the snapshot store is full" in message, message
        assert status["error"]["details"]["claim"] == claim
        assert status["error"]["details"]["snapshot"] in message
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["StorageCleared"]["status"] == "False"
        assert "the snapshot store is full" in conditions["StorageCleared"]["message"]
        # Nothing is deleted without its snapshot: the claim and its data are as they were.
        kept = read_claim(api_client, namespace, claim)
        assert kept is not None and kept.metadata.deletion_timestamp is None
        assert data.exists()
        reasons_once(api_client, namespace, "orders", "StorageClearFailed")
    finally:
        failure.unlink()

    # The store recovers: csi-snapshotter's retry succeeds, and the clear completes.
    wait_condition(kubectl, namespace, "orders", "StorageCleared", timeout=120)
    status = get(kubectl, namespace, "orders")["status"]
    assert "error" not in status
    assert read_claim(api_client, namespace, claim) is None
    (record,) = status["storage"]["snapshots"]

    # Expiry while the Pipeline exists: gone on time, status and an Event say so.
    (snapshot,) = volume_snapshots(api_client, namespace)
    assert snapshot["metadata"]["name"] == record["name"]
    check_expires_on_time(api_client, cluster, namespace, snapshot)
    wait_for(
        lambda: not get(kubectl, namespace, "orders")["status"]["storage"].get("snapshots"),
        what="the snapshot gone from status",
    )
    reasons_once(api_client, namespace, "orders", "SnapshotExpired")


def test_killed_between_snapshot_and_delete_finishes_exactly_once(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
) -> None:
    obj = run_with_safety_net(kubectl, namespace, "orders", retain_for="1h")
    (claim,) = obj["status"]["storage"]["claims"]

    live_operator.stop()
    live_operator.start(failpoints=failpoints.AFTER_SNAPSHOTS_READY, namespace=namespace)
    stop_and_clear(kubectl, namespace, "orders", "r1")
    assert live_operator.wait_exit(timeout=120) == -9, live_operator.log()

    # Killed with every snapshot ready and nothing deleted yet.
    assert get(kubectl, namespace, "orders")["status"]["storage"]["status"] == "Clearing"
    kept = read_claim(api_client, namespace, claim)
    assert kept is not None and kept.metadata.deletion_timestamp is None
    (taken,) = volume_snapshots(api_client, namespace)
    assert (taken.get("status") or {}).get("readyToUse") is True

    live_operator.start()
    wait_condition(kubectl, namespace, "orders", "StorageCleared", timeout=120)
    assert read_claim(api_client, namespace, claim) is None
    (after,) = volume_snapshots(api_client, namespace)  # the same one, not a second
    assert after["metadata"]["uid"] == taken["metadata"]["uid"]
    (record,) = get(kubectl, namespace, "orders")["status"]["storage"]["snapshots"]
    assert record["name"] == taken["metadata"]["name"]
    assert reasons_once(api_client, namespace, "orders").count("StorageCleared") == 1


def test_a_deleted_pipelines_snapshot_is_kept_until_it_expires(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    live_operator: Operator,
) -> None:
    obj = run_with_safety_net(kubectl, namespace, "orders", retain_for="30s")
    (claim,) = obj["status"]["storage"]["claims"]

    # An accidental delete: the clear it makes snapshots first, then the Pipeline is gone.
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=120s", timeout=130)
    assert read_claim(api_client, namespace, claim) is None
    (snapshot,) = volume_snapshots(api_client, namespace)
    meta = snapshot["metadata"]
    assert meta["labels"]["sluice.dev/pipeline-uid"] == obj["metadata"]["uid"]
    assert meta["annotations"]["sluice.dev/pipeline-namespaced-name"] == f"{namespace}/orders"
    assert snapshot["status"]["readyToUse"] is True
    check_expires_on_time(api_client, cluster, namespace, snapshot)


def test_a_bad_retain_for_is_refused_naming_the_field(kubectl: Kubectl, namespace: str) -> None:
    refused = apply(kubectl, safety_net("orders", namespace, "3 days"), check=False)
    assert refused.returncode != 0
    assert "spec.storage.snapshotBeforeClear.retainFor" in refused.stderr, refused.stderr


def test_a_claim_that_cannot_be_snapshotted_is_kept_until_the_safety_net_is_removed(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    # On the in-tree hostPath class: not a CSI volume, so no snapshot of it can be taken.
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["storage"]["snapshotBeforeClear"] = {"retainFor": "1h"}
    apply(kubectl, yaml.safe_dump(obj))
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]

    stop_and_clear(kubectl, namespace, "orders", "r1")
    wait_jsonpath(
        kubectl, namespace, "orders", ".status.error.error_code", "StorageClearFailed", 120
    )
    status = get(kubectl, namespace, "orders")["status"]
    assert status["storage"]["status"] == "Clearing"
    assert status["error"]["details"]["claim"] == claim
    # In the snapshot controller's own words.
    assert "snapshotting non-CSI volumes is not supported" in status["error"]["message"]
    kept = read_claim(api_client, namespace, claim)
    assert kept is not None and kept.metadata.deletion_timestamp is None

    # The user decides the data may go without a snapshot: the clear goes on.
    patch(kubectl, namespace, "orders", {"spec": {"storage": {"snapshotBeforeClear": None}}})
    wait_condition(kubectl, namespace, "orders", "StorageCleared", timeout=120)
    assert read_claim(api_client, namespace, claim) is None
    assert "error" not in get(kubectl, namespace, "orders")["status"]
