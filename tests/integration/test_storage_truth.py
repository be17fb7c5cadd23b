"""Rule 6 one level down: `Cleared` means the data is gone, or says precisely where it
remains. Checked at the storage level: the PersistentVolume objects and the files in the
directories behind them, on both of the local cluster's classes: `standard` (the in-tree
hostPath provisioner) and `csi-local` (CSI: the upstream external-provisioner, with its own
PV finalizer and retries, over csi-local's volume directories)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from feldera import FelderaClient, Pipeline
from kubernetes import client, watch
from localkube.cluster import CSI_CLASS, CSI_DRIVER, HOSTPATH_PV, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for
from sluice import failpoints

from .argocd_capture import ArgoLua
from .conftest import Operator
from .pipelines import (
    apply,
    both_classes,
    condition,
    event_once,
    events,
    get,
    kubectl_sluice,
    manifest,
    patch,
    reasons_once,
    run_and_wait,
    stop_and_clear,
    wait_condition,
    wait_error,
    wait_jsonpath,
)
from .test_rest_api import ApiServer, token_for
from .volumes import (
    bound_volume,
    edit_volume_finalizers,
    run_with_data,
    volume,
    volume_dir,
    volume_snapshot,
    write_data,
)

pytestmark = pytest.mark.usefixtures("live_operator")

# The provisioner behind each of the local cluster's classes.
PROVISIONERS = {STORAGE_CLASS: "kubernetes.io/host-path", CSI_CLASS: CSI_DRIVER}


def _first_cleared(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Watch the pipeline and return the first version of it that says Cleared."""
    custom = client.CustomObjectsApi(api)
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        "sluice.dev",
        "v1alpha1",
        namespace,
        "pipelines",
        field_selector=f"metadata.name={name}",
        timeout_seconds=120,
    ):
        obj: dict[str, Any] = event["object"]
        if ((obj.get("status") or {}).get("storage") or {}).get("status") == "Cleared":
            stream.stop()
            return obj
    raise AssertionError(f"{namespace}/{name} was not Cleared within 120s")


@pytest.fixture
def storage_class(api_client: client.ApiClient, cluster: LocalCluster) -> Iterator[Any]:
    """Makes StorageClasses for one test and deletes them (and volumes left behind) after."""
    made: list[str] = []
    storage = client.StorageV1Api(api_client)
    core = client.CoreV1Api(api_client)

    def make(reclaim_policy: str, provisioner: str = "kubernetes.io/host-path") -> str:
        name = f"test-{reclaim_policy.lower()}-{uuid.uuid4().hex[:6]}"
        storage.create_storage_class(
            {
                "metadata": {"name": name},
                "provisioner": provisioner,
                "reclaimPolicy": reclaim_policy,
                "volumeBindingMode": "Immediate",
            }
        )
        made.append(name)
        return name

    yield make
    for pv in core.list_persistent_volume().items:
        if pv.spec.storage_class_name in made:
            core.delete_persistent_volume(pv.metadata.name)
            # A Retain volume's directory outlives its PV by design: the test removes it.
            path = pv.spec.host_path.path if pv.spec.host_path else ""
            if HOSTPATH_PV.match(path):
                shutil.rmtree(path, ignore_errors=True)
            if pv.spec.csi is not None:
                shutil.rmtree(cluster.csi_volume_dir(pv.spec.csi.volume_handle), True)
    for name in made:
        storage.delete_storage_class(name)


@both_classes
def test_cleared_means_the_claim_the_volume_and_the_files_are_gone(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    storage_class_name: str,
) -> None:
    pv_name, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=storage_class_name
    )

    stop_and_clear(kubectl, namespace, "orders")
    cleared = _first_cleared(api_client, namespace, "orders")

    # At the first moment Cleared is observable, the data is gone, one level down too.
    assert volume(api_client, pv_name) is None
    assert not data.exists() and not data.parent.exists()
    storage = cleared["status"]["storage"]
    assert storage["lastClearRequest"] == "r1"
    assert "retainedVolumes" not in storage and "clearingVolumes" not in storage
    reasons_once(api_client, namespace, "orders")
    (event,) = [e for e in events(api_client, namespace, "orders") if e.reason == "StorageCleared"]
    assert pv_name in event.message


def test_a_failed_volume_deletion_keeps_clearing_with_an_error_until_the_volume_goes(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, storage_class: Any
) -> None:
    """A pre-made Delete volume whose hostPath the in-tree deleter refuses (only paths
    under /tmp/ are deleted): the PV goes Failed and the data stays; so does Clearing."""
    manual = storage_class("Delete", provisioner="kubernetes.io/no-provisioner")
    core = client.CoreV1Api(api_client)
    pv_name = f"failing-{uuid.uuid4().hex[:6]}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": manual,
                "hostPath": {"path": f"/srv/sluice-test/{pv_name}"},
            },
        }
    )
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["storage"]["storageClassName"] = manual
    apply(kubectl, yaml.safe_dump(obj))
    wait_condition(kubectl, namespace, "orders", "Running")
    assert bound_volume(api_client, kubectl, namespace, "orders") == pv_name

    stop_and_clear(kubectl, namespace, "orders")
    stuck = wait_error(kubectl, namespace, "orders", "StorageClearFailed", timeout=90)
    assert stuck["status"]["storage"]["status"] == "Clearing"
    message = stuck["status"]["error"]["message"]
    assert pv_name in message and "/tmp/" in message, message  # the deleter's own words
    volumes = stuck["status"]["error"]["details"]["volumes"]
    assert volumes[0].get("persistentVolume") == pv_name, stuck["status"]["error"]
    event_once(api_client, namespace, "orders", "StorageClearFailed", "Warning", pv_name)
    pv = volume(api_client, pv_name)
    assert pv is not None and pv.status.phase == "Failed"

    # An administrator deletes the volume (after dealing with its data): the clear finishes.
    core.delete_persistent_volume(pv_name)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared", timeout=120)
    done = get(kubectl, namespace, "orders")
    assert "error" not in done["status"]
    assert done["status"]["storage"]["lastClearRequest"] == "r1"
    reasons = reasons_once(api_client, namespace, "orders")
    assert reasons.count("StorageCleared") == 1


@both_classes
def test_a_retain_volume_is_cleared_from_the_pipeline_and_reported_where_it_remains(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    storage_class: Any,
    kubeconfig: Path,
    tmp_path: Path,
    cluster: LocalCluster,
    storage_class_name: str,
) -> None:
    retain = storage_class("Retain", provisioner=PROVISIONERS[storage_class_name])
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["storage"]["storageClassName"] = retain
    apply(kubectl, yaml.safe_dump(obj))
    wait_condition(kubectl, namespace, "orders", "Running")
    pv_name = bound_volume(api_client, kubectl, namespace, "orders")
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    data = write_data(api_client, cluster, pv_name)

    stop_and_clear(kubectl, namespace, "orders")
    wait_condition(kubectl, namespace, "orders", "StorageCleared")
    done = get(kubectl, namespace, "orders")
    assert done["status"]["storage"]["retainedVolumes"] == [
        {
            "persistentVolume": pv_name,
            "claim": claim,
            "reclaimPolicy": "Retain",
            "storageClassName": retain,
        }
    ]
    assert data.read_bytes() == b"pipeline state", "Retain keeps the data; status says so"
    assert pv_name in condition(done, "StorageCleared")["message"]
    reasons_once(api_client, namespace, "orders", "StorageRetained")
    retained = [e for e in events(api_client, namespace, "orders") if e.reason == "StorageRetained"]
    assert len(retained) == 1 and retained[0].type == "Warning" and pv_name in retained[0].message

    # Argo CD's health message (the real Lua, on the live object).
    health = ArgoLua().health(done)
    assert health["status"] == "Suspended" and pv_name in health["message"], health

    # kubectl sluice status, as a user types it.
    shown = kubectl_sluice(cluster, "status", "orders", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert pv_name in shown.stdout and "Retain" in shown.stdout, shown.stdout
    wide = kubectl_sluice(cluster, "-n", namespace, "status", "-o", "wide")
    assert pv_name in wide.stdout, wide.stdout

    # Feldera's storage_status_details, through the REST API and the feldera SDK.
    token = token_for(kubectl, namespace, "feldera-user", ["get", "list", "patch"])
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log")
    try:
        details = Pipeline.get("orders", FelderaClient(server.url, api_key=token))
        kept = details.storage_status_details()["retained_volumes"]
        assert kept == [
            {
                "persistent_volume": pv_name,
                "claim": claim,
                "reclaim_policy": "Retain",
                "storage_class_name": retain,
            }
        ]
    finally:
        server.stop()

    # The next clear's list replaces it: a fresh claim on the same class, cleared again.
    patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})
    wait_condition(kubectl, namespace, "orders", "Running")
    second = bound_volume(api_client, kubectl, namespace, "orders")
    patch(
        kubectl,
        namespace,
        "orders",
        {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": "r2"}}},
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.lastClearRequest", "r2")
    again = get(kubectl, namespace, "orders")["status"]["storage"]["retainedVolumes"]
    assert [v["persistentVolume"] for v in again] == [second]


def test_detach_names_the_detached_claim_as_retained(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    run_and_wait(kubectl, namespace, "orders", policy="Detach")
    pv_name = bound_volume(api_client, kubectl, namespace, "orders")
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    stop_and_clear(kubectl, namespace, "orders")
    wait_condition(kubectl, namespace, "orders", "StorageCleared")
    kept = get(kubectl, namespace, "orders")["status"]["storage"]["retainedVolumes"]
    assert kept == [
        {
            "persistentVolume": pv_name,
            "claim": claim,
            "reclaimPolicy": "Delete",
            "storageClassName": "standard",
        }
    ]
    event_once(api_client, namespace, "orders", "StorageRetained", "Warning", claim)
    assert volume(api_client, pv_name) is not None


@both_classes
def test_deleting_a_pipeline_waits_for_its_volume(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    cluster: LocalCluster,
    storage_class_name: str,
) -> None:
    """Rule 11 one level down: the Pipeline goes away only after its volume has."""
    pv_name, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=storage_class_name
    )
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=90s", timeout=100)
    assert volume(api_client, pv_name) is None
    assert not data.exists()


@both_classes
def test_killed_while_waiting_for_the_volume_clears_exactly_once(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
    storage_class_name: str,
) -> None:
    """Rule 14 extends to the new wait: a finalizer holds the PV (its directory already
    deleted by the provisioner) while the operator is killed; after a restart, once the PV
    is gone, the clear completes exactly once."""
    run_and_wait(kubectl, namespace, "orders", storage_class=storage_class_name)
    pv_name = bound_volume(api_client, kubectl, namespace, "orders")
    hold = "sluice.dev/test-hold"
    # Beside the PV's own finalizers (the CSI provisioner's among them).
    edit_volume_finalizers(api_client, pv_name, lambda present: [*present, hold])

    live_operator.stop()
    live_operator.start(failpoints=failpoints.WHILE_WAITING_FOR_VOLUME, namespace=namespace)
    stop_and_clear(kubectl, namespace, "orders")
    assert live_operator.wait_exit(timeout=60) == -9, live_operator.log()

    waiting = get(kubectl, namespace, "orders")
    assert waiting["status"]["storage"]["status"] == "Clearing"
    assert waiting["status"]["storage"]["claims"] == []
    recorded = waiting["status"]["storage"]["clearingVolumes"]
    assert [v["persistentVolume"] for v in recorded] == [pv_name]

    live_operator.start()
    pv = volume(api_client, pv_name)
    assert pv is not None and pv.metadata.deletion_timestamp is not None
    assert get(kubectl, namespace, "orders")["status"]["storage"]["status"] == "Clearing"
    edit_volume_finalizers(api_client, pv_name, lambda present: [f for f in present if f != hold])
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared", timeout=90)
    reasons = reasons_once(api_client, namespace, "orders")
    assert reasons.count("StorageCleared") == 1
    assert reasons.count("StorageClearing") == 1


def _provisioner_events(api: client.ApiClient, pv_name: str, reason: str) -> list[str]:
    """Messages of the PV's Events with that reason (a PV's Events live in `default`)."""
    listed = client.CoreV1Api(api).list_namespaced_event(
        "default",
        field_selector=f"involvedObject.kind=PersistentVolume,involvedObject.name={pv_name}",
    )
    return [str(e.message) for e in listed.items if e.reason == reason]


def test_a_csi_deletion_that_keeps_failing_is_an_error_in_the_provisioners_words(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, cluster: LocalCluster
) -> None:
    """On CSI a failed DeleteVolume leaves the PV Released (not Failed): the provisioner
    retries and says why only in its VolumeFailedDelete Event. The clear stays Clearing with
    StorageClearFailed in those words (seconds, not the 5-minute deadline), keeps the data,
    and completes on its own once the driver deletes the volume."""
    pv_name, data = run_with_data(
        api_client, kubectl, cluster, namespace, "orders", storage_class=CSI_CLASS
    )
    handle = data.parent.name
    refusal = f"injected: disk {uuid.uuid4().hex[:6]} is read-only"
    marker = cluster.csi_dir / "fail-delete" / handle
    marker.write_text(refusal)
    try:
        stop_and_clear(kubectl, namespace, "orders")
        stuck = wait_error(kubectl, namespace, "orders", "StorageClearFailed")
        assert stuck["status"]["storage"]["status"] == "Clearing"
        message = stuck["status"]["error"]["message"]
        assert pv_name in message and refusal in message and "VolumeFailedDelete" in message
        (failing,) = stuck["status"]["error"]["details"]["volumes"]
        assert failing["persistentVolume"] == pv_name, failing
        provisioner = _provisioner_events(api_client, pv_name, "VolumeFailedDelete")
        assert any(refusal in m for m in provisioner), provisioner
        event_once(api_client, namespace, "orders", "StorageClearFailed", "Warning", pv_name)
        pv = volume(api_client, pv_name)
        assert pv is not None and pv.status.phase == "Released", pv and pv.status
        assert data.read_bytes() == b"pipeline state"
    finally:
        marker.unlink(missing_ok=True)

    # The driver deletes on the provisioner's next retry: the clear finishes by itself.
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared", timeout=120)
    assert volume(api_client, pv_name) is None
    assert not data.parent.exists()
    done = get(kubectl, namespace, "orders")
    assert "error" not in done["status"]
    assert reasons_once(api_client, namespace, "orders").count("StorageCleared") == 1


def test_a_pipeline_on_csi_gets_a_csi_volume_and_a_snapshot_of_its_claim_is_ready(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, cluster: LocalCluster
) -> None:
    run_and_wait(kubectl, namespace, "orders", storage_class=CSI_CLASS)
    pv_name = bound_volume(api_client, kubectl, namespace, "orders")
    pv = volume(api_client, pv_name)
    assert pv is not None and pv.spec.csi is not None, pv
    assert pv.spec.csi.driver == CSI_DRIVER and pv.spec.host_path is None
    data = write_data(api_client, cluster, pv_name)
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]

    custom = client.CustomObjectsApi(api_client)
    snapshots = ("snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots")
    custom.create_namespaced_custom_object(
        *snapshots,
        volume_snapshot("orders-snap", claim),
    )

    def ready() -> dict[str, Any] | None:
        snap: Any = custom.get_namespaced_custom_object(*snapshots, "orders-snap")
        status = snap.get("status") or {}
        return snap if status.get("readyToUse") is True else None

    snap = wait_for(ready, timeout=60, what="VolumeSnapshot orders-snap ReadyToUse")
    content = custom.get_cluster_custom_object(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotcontents",
        snap["status"]["boundVolumeSnapshotContentName"],
    )
    handle = content["status"]["snapshotHandle"]
    assert (cluster.csi_dir / "snapshots" / f"{handle}.tar").is_file()

    # The archive is the volume's content: a claim restored from it holds the same file.
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "restored"},
            "spec": {
                "storageClassName": CSI_CLASS,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "dataSource": {
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": "orders-snap",
                },
            },
        },
    )

    def restored() -> str | None:
        pvc = core.read_namespaced_persistent_volume_claim("restored", namespace)
        return pvc.spec.volume_name if pvc.status.phase == "Bound" else None

    restored_pv = volume(api_client, wait_for(restored, timeout=60, what="restored claim Bound"))
    assert restored_pv is not None
    copy = volume_dir(cluster, restored_pv) / data.name
    assert copy.read_bytes() == data.read_bytes()
