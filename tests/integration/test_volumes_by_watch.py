"""A clear's wait for its volume follows the PersistentVolume watch (issue 17): no PV is read
by name, and the clear completes although the operator's safety recheck is an hour away, so
it was the PV's own watch events that brought the reconciles. Without list/watch on PVs the
operator says so once at start-up and waits by reading the volumes by name instead."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl
from sluice_fixtures import Operator

from .pipelines import (
    clear_and_wait,
    get,
    pipeline_claim,
    run_and_wait,
    stop_and_clear,
    wait_error,
    wait_storage,
)
from .volumes import claim_volume
from .volumes import volume as read_volume

NO_SAFETY_RECHECK = ("--volume-recheck-seconds", "3600")  # longer than any wait below
UNWATCHED = "PersistentVolumes cannot be watched"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _metric(operator: Operator, name: str) -> float:
    value = operator.metric(name)
    assert value is not None, f"{name} is exported"
    return value


def _clear(kubectl: Kubectl, api_client: client.ApiClient, namespace: str) -> str:
    """Run a pipeline, clear it; the name of the volume the clear deleted."""
    run_and_wait(kubectl, namespace, "orders")
    volume = claim_volume(api_client, namespace, pipeline_claim(api_client, namespace, "orders"))
    clear_and_wait(kubectl, namespace, "orders", timeout=180)
    assert read_volume(api_client, volume) is None, "Cleared means the volume is gone"
    return volume


def test_the_volume_wait_is_driven_by_the_pv_watch(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    operator.stop()
    try:
        operator.start(namespace=namespace, extra=NO_SAFETY_RECHECK)
        volume = _clear(kubectl, api_client, namespace)
        assert _metric(operator, "sluice_volume_reads_total") == 0, "no PV read by name"
        # Its Released and deleted events, at least, woke the clear waiting for it.
        assert _metric(operator, "sluice_volume_events_total") >= 1
        storage = get(kubectl, namespace, "orders")["status"]["storage"]
        assert storage["lastClearRequest"] == "r1" and "clearingVolumes" not in storage, volume
        assert UNWATCHED not in operator.log()
    finally:
        operator.stop()
        operator.start()


def test_a_failing_csi_deletion_is_asked_about_by_a_timer_not_the_safety_recheck(
    cluster: LocalCluster,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    operator: Operator,
) -> None:
    """The provisioner's Events are read only once a volume has been Released for a few
    seconds, and a failing CSI deletion changes nothing on the PV that its watch would bring:
    a timer brings that look. With the safety recheck an hour away, the failure is still
    reported in the provisioner's words."""
    operator.stop()
    marker: Path | None = None
    try:
        operator.start(namespace=namespace, extra=NO_SAFETY_RECHECK)
        run_and_wait(kubectl, namespace, "orders", storage_class=CSI_CLASS)
        pv_name = claim_volume(
            api_client, namespace, pipeline_claim(api_client, namespace, "orders")
        )
        pv = read_volume(api_client, pv_name)
        assert pv is not None and pv.spec.csi is not None
        refusal = f"injected: disk {uuid.uuid4().hex[:6]} is read-only"
        marker = cluster.csi_dir / "fail-delete" / pv.spec.csi.volume_handle
        marker.write_text(refusal)
        stop_and_clear(kubectl, namespace, "orders")
        stuck = wait_error(kubectl, namespace, "orders", "StorageClearFailed", timeout=90)
        assert refusal in stuck["status"]["error"]["message"]
        assert stuck["status"]["storage"]["status"] == "Clearing"
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
        operator.stop()
        operator.start()
    wait_storage(kubectl, namespace, "orders", "Cleared", timeout=120)


def _rules_without_watching_volumes() -> list[dict[str, Any]]:
    """The operator's ClusterRole (deploy/rbac.yaml) with only `get` on PVs."""
    documents = yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text())
    (role,) = (d for d in documents if d["kind"] == "ClusterRole")
    rules: list[dict[str, Any]] = role["rules"]
    for rule in rules:
        if rule["resources"] == ["persistentvolumes"]:
            rule["verbs"] = ["get"]
    return rules


def test_without_rights_to_watch_volumes_it_says_so_and_reads_them(
    cluster: LocalCluster,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    name = f"sluice-no-pv-watch-{uuid.uuid4().hex[:6]}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": _rules_without_watching_volumes(),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    }
    kubectl("-n", namespace, "create", "serviceaccount", "operator")
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}),
    )
    operator.stop()
    try:
        token = kubectl("-n", namespace, "create", "token", "operator").stdout.strip()
        kubeconfig = cluster.token_kubeconfig("operator", token, tmp_path / "kubeconfig")
        operator.start(kubeconfig=kubeconfig, namespace=namespace)
        _clear(kubectl, api_client, namespace)
        said = [line for line in operator.log().splitlines() if UNWATCHED in line]
        assert len(said) == 1, operator.log()
        assert _metric(operator, "sluice_volume_reads_total") >= 1, "read by name instead"
        assert _metric(operator, "sluice_volume_events_total") == 0
    finally:
        operator.stop()
        operator.start()
        kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)
