"""csi-local volumes on the real node have their size and grow while in use (issue 26).

A pod mounts a 64Mi claim of StorageClass csi-local: writing past 64Mi fails with ENOSPC in
the pod; the kubelet's Summary API (/stats/summary) and its kubelet_volume_stats_* metrics
show the volume's own bytes (csi-local's NodeGetVolumeStats). Growing the claim to 128Mi
runs the real path: the API server checks the request (no shrinking), csi-resizer calls
ControllerExpandVolume, the kubelet NodeExpandVolume on the mounted volume; the pod keeps
running with its data. A fail-expand/<volume-id> file in csi-local's state makes the
expansion fail: the resizer's Warning event and the claim's ControllerResizeError condition
say why, until it is removed.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

PROBE = "localhost/sluice/probe:0.1.0"
MI = 1 << 20


def _claim(name: str, size: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "storageClassName": CSI_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }


def _pod(name: str, claim: str, text: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE,
                    "imagePullPolicy": "Never",
                    "args": ["write", "/data/hello", text],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def _kubelet_get(cluster: LocalCluster, path: str) -> str:
    """GET from the real node's kubelet API, as the API server's kubelet client."""
    context = ssl.create_default_context(cafile=str(cluster.pki_dir / "ca.crt"))
    context.load_cert_chain(
        str(cluster.pki_dir / "apiserver-kubelet-client.crt"),
        str(cluster.pki_dir / "apiserver-kubelet-client.key"),
    )
    conn = http.client.HTTPSConnection(
        cluster.kubelet_address, cluster.kubelet_port, context=context
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, (path, response.status, body)
        return body
    finally:
        conn.close()


def _volume_stats(cluster: LocalCluster, namespace: str, pod: str) -> dict[str, Any] | None:
    """The pod's volume "data" in the kubelet's Summary API (None until it is there)."""
    raw = _kubelet_get(cluster, "/stats/summary")
    for entry in json.loads(raw).get("pods", []):
        ref = entry["podRef"]
        if ref["namespace"] == namespace and ref["name"] == pod:
            for volume in entry.get("volume", []):
                if volume["name"] == "data":
                    return dict(volume)
    return None


def _patch_size(kubectl: Kubectl, namespace: str, size: str, check: bool = True) -> Any:
    patch = {"spec": {"resources": {"requests": {"storage": size}}}}
    return kubectl("-n", namespace, "patch", "pvc", "data", "-p", json.dumps(patch), check=check)


@pytest.mark.cluster
def test_a_csi_local_claim_fills_up_reports_its_usage_and_grows_while_mounted(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str, cluster: LocalCluster
) -> None:
    core = client.CoreV1Api(api_client)
    text = f"hello {uuid.uuid4().hex}"
    core.create_namespaced_persistent_volume_claim(
        namespace, client.V1PersistentVolumeClaim.model_validate(_claim("data", "64Mi"))
    )
    core.create_namespaced_pod(namespace, client.V1Pod.model_validate(_pod("probe", "data", text)))

    def ready() -> Any:
        pod: Any = core.read_namespaced_pod("probe", namespace)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].ready else None

    pod = wait_for(ready, timeout=90, what="pod probe Ready")
    pvc: Any = core.read_namespaced_persistent_volume_claim("data", namespace)
    volume: Any = core.read_persistent_volume(pvc.spec.volume_name)
    handle = volume.spec.csi.volume_handle
    assert pvc.status.capacity["storage"] == "64Mi"

    # Past 64Mi: ENOSPC in the pod.
    filled = kubectl(
        "-n", namespace, "exec", "probe", "--", "/probe", "fill", "/data/big", "80", check=False
    )
    assert filled.returncode != 0, filled.stdout
    assert "No space left on device" in filled.stderr, filled.stderr
    filled_at = datetime.now(UTC)

    # The kubelet's view of the volume: its own filesystem (64Mi less XFS's log), nearly full.
    # The kubelet measures volumes every volumeStatsAggPeriod (5 s here) and serves the last
    # measurement: only one taken after the fill ended says what the fill left.
    def measured_after_fill() -> dict[str, Any] | None:
        stats = _volume_stats(cluster, namespace, "probe")
        if not stats:
            return None
        taken = datetime.fromisoformat(stats["time"].replace("Z", "+00:00"))
        return stats if taken > filled_at else None

    before = wait_for(measured_after_fill, timeout=60, what="the kubelet's stats after the fill")
    assert before["pvcRef"] == {"name": "data", "namespace": namespace}, before
    assert 48 * MI < before["capacityBytes"] <= 64 * MI, before
    assert before["usedBytes"] > 48 * MI, before
    assert before["availableBytes"] < 2 * MI, before
    assert before["inodesUsed"] > 0, before
    metrics = _kubelet_get(cluster, "/metrics")
    series = f'namespace="{namespace}",persistentvolumeclaim="data"'
    assert f"kubelet_volume_stats_capacity_bytes{{{series}}}" in metrics

    # No shrinking: the API server refuses it before anything else sees it.
    refused = _patch_size(kubectl, namespace, "32Mi", check=False)
    assert refused.returncode != 0
    assert "can not be less than" in refused.stderr, refused.stderr

    # Grow to 128Mi: csi-resizer (ControllerExpandVolume), then the kubelet
    # (NodeExpandVolume), the pod running all along.
    _patch_size(kubectl, namespace, "128Mi")

    def capacity(size: str) -> bool:
        claim: Any = core.read_namespaced_persistent_volume_claim("data", namespace)
        return bool(claim.status.capacity["storage"] == size)

    wait_for(lambda: capacity("128Mi"), timeout=120, what="the claim's capacity 128Mi")
    pv: Any = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.capacity["storage"] == "128Mi"

    def grown() -> dict[str, Any] | None:
        stats = _volume_stats(cluster, namespace, "probe")
        return stats if stats and stats["capacityBytes"] > 112 * MI else None

    after = wait_for(grown, timeout=60, what="the Summary API's capacity past 112Mi")
    assert after["capacityBytes"] <= 128 * MI, after
    assert after["availableBytes"] > 56 * MI, after
    now: Any = core.read_namespaced_pod("probe", namespace)
    assert now.metadata.uid == pod.metadata.uid
    assert now.status.container_statuses[0].restart_count == 0
    assert now.status.container_statuses[0].ready
    out = kubectl("-n", namespace, "exec", "probe", "--", "/probe", "cat", "/data/hello").stdout
    assert out == text
    # The new room is there for the pod.
    more = kubectl("-n", namespace, "exec", "probe", "--", "/probe", "fill", "/data/more", "40")
    assert "filled 40 MiB" in more.stdout, more.stdout

    # An expansion that fails: the resizer's Warning event and the claim's condition carry
    # the driver's message; it completes once the fault is gone.
    fault = cluster.csi_dir / "fail-expand" / handle
    fault.write_text("csi-local: expansion refused by the test\n")
    try:
        _patch_size(kubectl, namespace, "192Mi")

        def warned() -> bool:
            events: Any = core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=data"
            )
            return any(
                e.type == "Warning"
                and e.reason == "VolumeResizeFailed"
                and "expansion refused by the test" in (e.message or "")
                for e in events.items
            )

        wait_for(warned, timeout=60, what="a VolumeResizeFailed event on the claim")

        def condition() -> Any:
            claim: Any = core.read_namespaced_persistent_volume_claim("data", namespace)
            found = [c for c in claim.status.conditions or [] if c.type == "ControllerResizeError"]
            return found[0] if found else None

        error = wait_for(condition, timeout=60, what="the claim's ControllerResizeError")
        assert "expansion refused by the test" in error.message, error
        assert capacity("128Mi")
    finally:
        fault.unlink(missing_ok=True)
    wait_for(lambda: capacity("192Mi"), timeout=120, what="the claim's capacity 192Mi")
    wait_for(lambda: condition() is None, timeout=60, what="ControllerResizeError cleared")
