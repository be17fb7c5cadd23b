"""The storage under a pipeline, as the tests look at it: its PersistentVolume and the
files in the directory behind it (a hostPath, or csi-local's directory for the volume)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from localkube.cluster import CSI_CLASS, CSI_DRIVER, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .pipelines import edit_finalizers, get, run_and_wait


def volume(api: client.ApiClient, name: str) -> client.V1PersistentVolume | None:
    try:
        pv: client.V1PersistentVolume = client.CoreV1Api(api).read_persistent_volume(name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return pv


def bound_volume(api: client.ApiClient, kubectl: Kubectl, namespace: str, name: str) -> str:
    """The PV bound to the pipeline's one claim, once the operator has named it in status
    (right after an apply it may not have yet) and it is Bound."""

    def named() -> list[str] | None:
        status = get(kubectl, namespace, name).get("status") or {}
        return (status.get("storage") or {}).get("claims") or None

    (claim,) = wait_for(named, what=f"{namespace}/{name}'s claim in status")
    return claim_volume(api, namespace, claim)


def claim_volume(api: client.ApiClient, namespace: str, claim: str) -> str:
    """The PV bound to a claim, once it is Bound."""
    core = client.CoreV1Api(api)

    def bound() -> str | None:
        pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
        return pvc.spec.volume_name if pvc.status.phase == "Bound" else None

    return wait_for(bound, what=f"claim {claim} Bound")


def volume_dir(cluster: LocalCluster, pv: client.V1PersistentVolume) -> Path:
    """Where the volume's data lives: its hostPath, or csi-local's directory for it."""
    if pv.spec.csi is not None:
        assert pv.spec.csi.driver == CSI_DRIVER, pv.spec.csi
        return cluster.csi_volume_dir(pv.spec.csi.volume_handle)
    assert pv.spec.host_path is not None, pv
    return Path(pv.spec.host_path.path)


def write_data(api: client.ApiClient, cluster: LocalCluster, pv_name: str) -> Path:
    """A file in the volume's directory, as the pipeline would leave its state."""
    pv = volume(api, pv_name)
    assert pv is not None, pv_name
    directory = volume_dir(cluster, pv)
    assert directory.is_dir(), directory
    data = directory / "state.bin"
    data.write_bytes(b"pipeline state")
    return data


def edit_volume_finalizers(
    api: client.ApiClient, pv_name: str, edit: Callable[[list[str]], list[str]]
) -> None:
    """Change a PV's finalizers without undoing a controller's concurrent change."""
    edit_finalizers(api, "persistent_volume", None, pv_name, edit)


def run_with_data(
    api: client.ApiClient,
    kubectl: Kubectl,
    cluster: LocalCluster,
    namespace: str,
    name: str,
    **kwargs: Any,
) -> tuple[str, Path]:
    """Run the pipeline (manifest keywords, e.g. storage_class) until its storage is InUse,
    and leave state in its volume: (the PV's name, the file written)."""
    run_and_wait(kubectl, namespace, name, **kwargs)
    pv_name = bound_volume(api, kubectl, namespace, name)
    return pv_name, write_data(api, cluster, pv_name)


def volume_snapshot(name: str, claim: str, snapshot_class: str = CSI_CLASS) -> dict[str, Any]:
    """A VolumeSnapshot of a claim, as a user writes one."""
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {
            "volumeSnapshotClassName": snapshot_class,
            "source": {"persistentVolumeClaimName": claim},
        },
    }
