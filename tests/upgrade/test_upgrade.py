"""Upgrading Sluice in place, on a cluster of its own with a real node.

The previous release (tests/upgrade/release.py: its operator and CRD, from git) brings
pipelines into every state: Running, Stopped with storage, Cleared, Cleared with a detached
claim, Cleared with a snapshot kept by the safety net, and a clear cut off by SIGKILL after
its first claim delete. Then the new CRD and operator are installed as docs/upgrading.md
says. Asserted as a user would check: the cut-off clear completes exactly once; the running
pipeline's StatefulSet is not rolled (its pod keeps its UID); every claim, detached claim and
snapshot is still there; the new operator acts on the old objects and on new ones. Then the
reverse danger: the previous operator put back (a rollback) over the new CRD, with every
field it does not know set, deletes and detaches nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.pipelines import (
    apply,
    clear_and_wait,
    events,
    get,
    manifest,
    patch,
    reasons_once,
    run_and_wait,
    stop_and_clear,
    storage,
    wait_condition,
    wait_jsonpath,
    wait_storage,
)
from kubernetes import client, config
from localkube.cluster import CSI_CLASS, REPO, LocalCluster
from localkube.fixtures import Kubectl, fresh_namespace, kubectl_for, wait_for
from sluice import failpoints
from sluice.core.labels import PIPELINE_LABEL
from sluice_fixtures import CRD_DIR, Operator

from upgrade.crd_compat import added_properties
from upgrade.release import PREVIOUS_VERSION, previous_crd

# A value for every spec field the previous release does not know (crd_compat.added_properties
# lists them; the test fails when one has no example here): a rolled-back operator sees them.
NEW_FIELD_EXAMPLES: dict[str, Any] = {
    ".spec.podSecurity": "ImageDefault",
    ".spec.storage.autoscaling": {"maxSize": "4Gi", "usageThresholdPercent": 90},
}
# Set on the running and the stopped pipeline, unless named here: autoscaling needs a class
# that can expand (the stopped one's csi-local; the running one has the default, hostPath).
EXAMPLE_PIPELINES: dict[str, tuple[str, ...]] = {".spec.storage.autoscaling": ("stopped",)}

CHART = REPO / "deploy/helm/sluice"
SNAPSHOTS = ("snapshot.storage.k8s.io", "v1", "volumesnapshots")


def previous_manifest(name: str, namespace: str, **kwargs: Any) -> str:
    """A Pipeline as a user of the previous release wrote it (no field it did not have)."""
    obj = yaml.safe_load(manifest(name, namespace, **kwargs))
    obj["spec"].pop("podSecurity", None)
    return yaml.safe_dump(obj)


def run_previous(kubectl: Kubectl, namespace: str, name: str, **kwargs: Any) -> None:
    apply(kubectl, previous_manifest(name, namespace, **kwargs))
    wait_condition(kubectl, namespace, name, "Running")
    wait_jsonpath(kubectl, namespace, name, ".status.storage.status", "InUse")


def install_crd(kubectl: Kubectl, folder: Path) -> None:
    """As docs/upgrading.md says: server-side apply of the release's crds/ folder."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(folder))
    kubectl("wait", "--for=condition=Established", "crd/pipelines.sluice.dev", "--timeout=60s")
    # Right after a CRD is (re)installed the API server may answer 429 for a moment.
    wait_for(
        lambda: kubectl("get", "pipelines", "-A", check=False).returncode == 0,
        timeout=60,
        what="pipelines served",
    )


@contextlib.contextmanager
def running(operator: Operator, namespace: str, failpoint: str = "") -> Iterator[Operator]:
    operator.start(namespace=namespace, failpoints=failpoint)
    try:
        yield operator
    finally:
        operator.stop()


def _items(listed: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = listed.to_dict()["items"]
    return items


def pod_uid(api: client.ApiClient, namespace: str, pipeline: str) -> str:
    (pod,) = _items(
        client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"{PIPELINE_LABEL}={pipeline}"
        )
    )
    return str(pod["metadata"]["uid"])


def statefulset(api: client.ApiClient, namespace: str, pipeline: str) -> tuple[str, int]:
    """The pipeline's StatefulSet's UID and generation (a rolled template bumps it)."""
    (sts,) = _items(
        client.AppsV1Api(api).list_namespaced_stateful_set(
            namespace, label_selector=f"{PIPELINE_LABEL}={pipeline}"
        )
    )
    return str(sts["metadata"]["uid"]), int(sts["metadata"]["generation"])


def claims(api: client.ApiClient, namespace: str) -> dict[str, tuple[str, bool]]:
    """Every claim in the namespace: name -> (UID, being deleted)."""
    listed = client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace)
    return {
        c["metadata"]["name"]: (
            c["metadata"]["uid"],
            c["metadata"]["deletion_timestamp"] is not None,
        )
        for c in _items(listed)
    }


def snapshots(api: client.ApiClient, namespace: str) -> dict[str, str]:
    group, version, plural = SNAPSHOTS
    listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        group, version, namespace, plural
    )
    return {s["metadata"]["name"]: s["metadata"]["uid"] for s in listed["items"]}


def cleared_events(api: client.ApiClient, namespace: str, name: str) -> int:
    return sum(e.count or 1 for e in events(api, namespace, name) if e.reason == "StorageCleared")


def reconciled_all(operator: Operator, count: int) -> None:
    """Until the operator has decided on each of `count` pipelines (its census of them)."""
    wait_for(
        lambda: operator.total("sluice_pipelines") == count,
        timeout=90,
        what=f"{count} pipelines reconciled",
    )


def settled(operator: Operator, seconds: float = 5.0) -> None:
    """Until the operator has sent no write for `seconds` (it has done what it decided)."""
    last = [operator.writes(), 0]

    def quiet() -> bool:
        now = operator.writes()
        last[1] = last[1] + 1 if now == last[0] else 0
        last[0] = now
        return last[1] >= seconds / 0.5

    wait_for(quiet, timeout=120, interval=0.5, what="the operator quiet")


def test_upgrade_from_the_previous_release_loses_nothing(
    upgrade_cluster: LocalCluster,
    previous_release: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    local = upgrade_cluster
    kubectl = kubectl_for(local)
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    namespace = fresh_namespace(api, request, timeout=60)
    for folder in ("old", "new", "rollback"):
        (tmp_path / folder).mkdir()
    old = Operator(local.kubeconfig, tmp_path / "old", source=previous_release / "operator")
    new = Operator(local.kubeconfig, tmp_path / "new")
    rollback = Operator(local.kubeconfig, tmp_path / "rollback", source=old.source)
    for operator in (old, new, rollback):
        request.addfinalizer(operator.stop)

    # The previous release, and pipelines in every state.
    install_crd(kubectl, previous_release / "crds")
    with running(old, namespace):
        run_previous(kubectl, namespace, "running")
        # On csi-local, whose volumes take a pod's fsGroup: it starts again after the upgrade
        # under the new release's restricted securityContext, on the files root wrote.
        run_previous(kubectl, namespace, "stopped", storage_class=CSI_CLASS)
        patch(kubectl, namespace, "stopped", {"spec": {"desiredState": "Stopped"}})
        wait_jsonpath(kubectl, namespace, "stopped", ".status.deploymentStatus", "Stopped")
        run_previous(kubectl, namespace, "cleared")
        clear_and_wait(kubectl, namespace, "cleared")
        run_previous(kubectl, namespace, "detached", policy="Detach")
        clear_and_wait(kubectl, namespace, "detached")
        safety_net = yaml.safe_load(
            previous_manifest("snapshotted", namespace, storage_class=CSI_CLASS)
        )
        safety_net["spec"]["storage"]["snapshotBeforeClear"] = {
            "volumeSnapshotClassName": CSI_CLASS,
            "retainFor": "24h",
        }
        apply(kubectl, yaml.safe_dump(safety_net))
        wait_jsonpath(kubectl, namespace, "snapshotted", ".status.storage.status", "InUse", 90)
        clear_and_wait(kubectl, namespace, "snapshotted", timeout=180)
        run_previous(kubectl, namespace, "cut")
    # A clear cut off by SIGKILL: the previous operator dies right after its first claim delete.
    old.start(namespace=namespace, failpoints=failpoints.AFTER_FIRST_CLAIM_DELETE)
    stop_and_clear(kubectl, namespace, "cut", "r1")
    assert old.wait_exit(timeout=120) == -9, "the failpoint did not fire"
    assert storage(get(kubectl, namespace, "cut"))["status"] == "Clearing"

    running_pod = pod_uid(api, namespace, "running")
    running_sts = statefulset(api, namespace, "running")
    (cut_claim,) = storage(get(kubectl, namespace, "cut"))["claims"]
    kept_claims = {n: c for n, c in claims(api, namespace).items() if n != cut_claim}
    assert len(kept_claims) == 3, kept_claims  # running's, stopped's, the detached one
    assert all(not deleting for _, deleting in kept_claims.values()), kept_claims
    kept_snapshots = snapshots(api, namespace)
    assert len(kept_snapshots) == 1, kept_snapshots
    before = {n: storage(get(kubectl, namespace, n))["status"] for n in PIPELINES}

    # The upgrade, as docs/upgrading.md says: the new CRD, then the new operator.
    install_crd(kubectl, CRD_DIR)
    with running(new, namespace):
        cut = wait_storage(kubectl, namespace, "cut", "Cleared", timeout=180)
        assert storage(cut)["lastClearRequest"] == "r1"
        reasons_once(api, namespace, "cut")
        reconciled_all(new, len(PIPELINES))
        settled(new)
        assert cleared_events(api, namespace, "cut") == 1, "the cut-off clear ran twice"
        assert new.total("sluice_clears_completed_total") == 1
        assert claims(api, namespace) == kept_claims, "a claim was touched by the upgrade"
        assert snapshots(api, namespace) == kept_snapshots
        assert pod_uid(api, namespace, "running") == running_pod, "the running pod restarted"
        assert statefulset(api, namespace, "running") == running_sts, "the StatefulSet rolled"
        after = {n: storage(get(kubectl, namespace, n))["status"] for n in PIPELINES}
        assert after == {**before, "cut": "Cleared"}

        # The new operator acts on the old objects, and on new ones.
        patch(kubectl, namespace, "stopped", {"spec": {"desiredState": "Running"}})
        wait_jsonpath(kubectl, namespace, "stopped", ".status.deploymentStatus", "Running", 90)
        (pod,) = _items(
            client.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=f"{PIPELINE_LABEL}=stopped"
            )
        )
        assert pod["spec"]["security_context"]["run_as_user"] == 1000, "not restricted"
        run_and_wait(kubectl, namespace, "fresh")
        clear_and_wait(kubectl, namespace, "fresh", timeout=120)
        settled(new)

    # A rollback: the previous operator over the new CRD and objects the new one wrote,
    # with every field it does not know set. It must delete and detach nothing.
    current = yaml.safe_load((CRD_DIR / "sluice.dev_pipelines.yaml").read_text())
    unknown = [p for p in added_properties(previous_crd(), current) if p.startswith(".spec.")]
    assert sorted(unknown) == sorted(NEW_FIELD_EXAMPLES), (
        f"fields {PREVIOUS_VERSION} does not know, each needs an example here: {unknown}"
    )
    for path, value in NEW_FIELD_EXAMPLES.items():
        body: dict[str, Any] = value
        for key in reversed(path.strip(".").split(".")):
            body = {key: body}
        for name in EXAMPLE_PIPELINES.get(path, ("running", "stopped")):
            patch(kubectl, namespace, name, body)
    claims_now, pods_now = (
        claims(api, namespace),
        {n: pod_uid(api, namespace, n) for n in ("running", "stopped")},
    )
    with running(rollback, namespace):
        reconciled_all(rollback, len(PIPELINES) + 1)
        settled(rollback)
        assert claims(api, namespace) == claims_now, "the rolled-back operator touched a claim"
        assert {n: pod_uid(api, namespace, n) for n in ("running", "stopped")} == pods_now
        assert snapshots(api, namespace) == kept_snapshots
        assert rollback.total("sluice_clears_requested_total") == 0
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()  # type: ignore[no-untyped-call]


PIPELINES = ("running", "stopped", "cleared", "detached", "snapshotted", "cut")


def helm(local: LocalCluster, *args: str) -> str:
    cmd = [str(local.bin_dir / "helm"), f"--kubeconfig={local.kubeconfig}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def deployments(api: client.ApiClient, namespace: str) -> dict[str, tuple[str, Any]]:
    """Each Deployment's UID and selector (immutable: a changed one fails `helm upgrade`)."""
    listed = client.AppsV1Api(api).list_namespaced_deployment(namespace)
    return {
        d["metadata"]["name"]: (d["metadata"]["uid"], d["spec"]["selector"]) for d in _items(listed)
    }


def test_helm_upgrade_from_the_previous_chart(
    upgrade_cluster: LocalCluster, previous_release: Path, request: pytest.FixtureRequest
) -> None:
    """`helm upgrade` from the previous release's chart to this one, with the new chart's
    defaults and with the values file a user copied from the previous chart: both succeed,
    and the Deployments are updated in place (same objects, same selectors)."""
    local = upgrade_cluster
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    # The operator image is not built here: the pods go to the kwok node.
    namespace = fresh_namespace(api, request, timeout=60, on_kwok=True)
    old_chart = previous_release / "deploy/helm/sluice"
    release = "sluice"
    helm(local, "install", release, str(old_chart), "--namespace", namespace)
    before = deployments(api, namespace)
    assert len(before) == 2, before  # the operator and the REST API
    helm(local, "upgrade", release, str(CHART), "--namespace", namespace)
    assert deployments(api, namespace) == before
    values = str(old_chart / "values.yaml")
    helm(local, "upgrade", release, str(CHART), "--namespace", namespace, "-f", values)
    assert deployments(api, namespace) == before
    history = yaml.safe_load(helm(local, "history", release, "-n", namespace, "-o", "yaml"))
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
    helm(local, "uninstall", release, "--namespace", namespace, "--wait")
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()  # type: ignore[no-untyped-call]
