"""`kubectl sluice`, run through the real kubectl (which finds kubectl-sluice on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import (
    apply,
    get,
    kubectl_sluice,
    manifest,
    run_and_wait,
    wait_condition,
    wait_jsonpath,
)
from .volumes import volume_snapshot

HEADER = ["NAME", "DESIRED", "DEPLOYMENT", "STORAGE", "LAST-CLEAR", "ERROR"]


def _kubeconfig_with_context(cluster: LocalCluster, tmp_path: Path, namespace: str) -> Path:
    """A copy of the cluster's kubeconfig with a second context `team` whose namespace is
    `namespace`; the current context stays the original (namespace default)."""
    doc: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text())
    original = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
    doc["contexts"].append(
        {"name": "team", "context": {**original["context"], "namespace": namespace}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def test_plugin_is_found_by_kubectl(cluster: LocalCluster) -> None:
    listed = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "plugin", "list"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert "kubectl-sluice" in listed.stdout


def test_clear_refused_while_running_then_stop_wait_clears(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    refused = kubectl_sluice(cluster, "clear", "orders", "-n", namespace)
    assert refused.returncode == 1
    assert "StorageStatusImmutableUnlessStopped" in refused.stderr
    assert "--stop" in refused.stderr

    done = kubectl_sluice(
        cluster, "clear", "orders", "--stop", "--wait", f"--namespace={namespace}"
    )
    assert done.returncode == 0, done.stderr
    assert "Cleared" in done.stdout
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["storage"]["status"] == "Cleared"
    # An actionClearRequest: a GitOps tool's clearRequest is never overwritten.
    request = obj["spec"]["storage"]["actionClearRequest"]
    assert request == obj["status"]["storage"]["lastActionClearRequest"]
    assert "clearRequest" not in obj["spec"]["storage"]

    table = kubectl_sluice(cluster, "-n", namespace, "status").stdout.splitlines()
    assert table[0].split() == HEADER
    assert table[1].split()[:4] == ["orders", "Stopped", "Stopped", "Cleared"]


def test_kubectl_flags_anywhere_and_the_contexts_namespace(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """-n/--namespace, --context and --kubeconfig before or after the subcommand and its
    argument, as kubectl takes them; without -n, the chosen context's namespace is used."""
    apply(kubectl, manifest("orders", namespace, desired="Stopped"))
    config = _kubeconfig_with_context(cluster, tmp_path, namespace)
    placements = [
        ("status", "-n", namespace),
        ("-n", namespace, "status"),
        ("status", "orders", "--namespace", namespace),
        (f"--namespace={namespace}", "status", "orders"),
        ("status", "--kubeconfig", str(config), "--context", "team"),
        ("--context=team", "status", "orders", f"--kubeconfig={config}"),
    ]
    for args in placements:
        result = kubectl_sluice(cluster, *args)
        assert result.returncode == 0, (args, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[0].split() == HEADER, args
        assert [line.split()[0] for line in lines[1:]] == ["orders"], (args, result.stdout)

    # KUBECONFIG's current context decides the namespace when no flag does.
    doc = yaml.safe_load(config.read_text())
    doc["current-context"] = "team"
    config.write_text(yaml.safe_dump(doc))
    status = kubectl_sluice(cluster, "status", "orders", kubeconfig=config)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[0] == "orders"
    # ... and the original context (namespace default) does not have it.
    missing = kubectl_sluice(
        cluster, "status", "orders", "--context", "localkube", kubeconfig=config
    )
    assert missing.returncode == 1
    assert 'pipelines.sluice.dev "orders" not found' in missing.stderr


def test_status_all_namespaces_and_output_formats(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, manifest("orders", namespace, desired="Stopped"))
    apply(kubectl, manifest("billing", namespace, desired="Stopped"))

    every = kubectl_sluice(cluster, "status", "-A")
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", *HEADER]
    mine = [line.split()[:2] for line in lines[1:] if line.split()[0] == namespace]
    assert mine == [[namespace, "billing"], [namespace, "orders"]]

    as_json = kubectl_sluice(cluster, "status", "-n", namespace, "-o", "json")
    listed = json.loads(as_json.stdout)
    assert listed["kind"] == "List"
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["billing", "orders"]
    one = yaml.safe_load(
        kubectl_sluice(cluster, "status", "orders", "-oyaml", "-n", namespace).stdout
    )
    assert one["kind"] == "Pipeline"
    assert one["metadata"]["uid"] == get(kubectl, namespace, "orders")["metadata"]["uid"]

    wide = kubectl_sluice(cluster, "--all-namespaces", "status", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAMESPACE", *HEADER, "CLAIMS", "RETAINED", "READY"]

    both = kubectl_sluice(cluster, "status", "orders", "-A")
    assert both.returncode == 1
    assert "--all-namespaces" in both.stderr


def test_wait_times_out_with_a_clear_message(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    live_operator.stop()  # nobody acts on the request, so the wait must time out
    result = kubectl_sluice(
        cluster, "-n", namespace, "clear", "orders", "--stop", "--wait", "--timeout", "3s"
    )
    assert result.returncode == 2
    assert "timed out after 3s" in result.stderr


def test_status_of_a_missing_pipeline_is_an_error(cluster: LocalCluster, namespace: str) -> None:
    result = kubectl_sluice(cluster, "status", "nope", "-n", namespace)
    assert result.returncode == 1
    assert "not found" in result.stderr


def _with_safety_net(name: str, namespace: str) -> str:
    """A Pipeline on csi-local whose clears keep a snapshot of each claim for an hour."""
    obj = yaml.safe_load(manifest(name, namespace, storage_class=CSI_CLASS))
    obj["spec"]["storage"]["snapshotBeforeClear"] = {
        "volumeSnapshotClassName": CSI_CLASS,
        "retainFor": "1h",
    }
    return yaml.safe_dump(obj)


def test_snapshots_then_restore_then_snapshots_of_the_deleted_pipeline(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    text = _with_safety_net("orders", namespace)
    apply(kubectl, text)
    wait_condition(kubectl, namespace, "orders", "Ready")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    snapshot = claim.replace("orders-storage-", "orders-clear-")

    none = kubectl_sluice(cluster, "snapshots", "orders", "-n", namespace)
    assert none.returncode == 0, none.stderr
    assert f"No snapshots of pipeline orders in namespace {namespace}." in none.stderr

    # A name that does not exist is refused before anything is patched.
    refused = kubectl_sluice(cluster, "restore", "orders", "--from", "anything", "-n", namespace)
    assert refused.returncode == 1
    assert "VolumeSnapshot anything not found" in refused.stderr  # checked before the patch

    done = kubectl_sluice(cluster, "clear", "orders", "--stop", "--wait", "-n", namespace)
    assert done.returncode == 0, done.stderr

    listed = kubectl_sluice(cluster, "snapshots", "orders", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CLAIM", "READY", "RESTORE-SIZE", "TAKEN", "EXPIRES"]
    assert lines[1].split()[:3] == [snapshot, claim, "true"]

    status = kubectl_sluice(cluster, "status", "orders", "-n", namespace).stdout
    assert f"Snapshot: {snapshot} of claim {claim} (ready, restore size " in status
    assert "Restore one: kubectl sluice restore orders --from SNAPSHOT" in status

    restored = kubectl_sluice(
        cluster, "restore", "orders", "--from", snapshot, "--start", "-n", namespace
    )
    assert restored.returncode == 0, restored.stderr
    assert f"spec.storage.restoreFrom set to {snapshot}" in restored.stdout
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.restoredFrom", snapshot)
    wait_condition(kubectl, namespace, "orders", "Ready")
    status = kubectl_sluice(cluster, "status", "orders", "-n", namespace).stdout
    assert f"Restored from: VolumeSnapshot {snapshot}" in status

    # The same value again: restored once per value (the operator's rule), said plainly.
    other = kubectl_sluice(cluster, "restore", "orders", "--from", snapshot, "-n", namespace)
    assert other.returncode == 1
    assert "already restored from" in other.stderr

    # The Pipeline deleted (its clear keeps a second snapshot): both are still listed.
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--timeout=120s", timeout=130)
    after = kubectl_sluice(cluster, "snapshots", "orders", "-n", namespace)
    assert after.returncode == 0, after.stderr
    names = [line.split()[0] for line in after.stdout.splitlines()[1:3]]
    assert snapshot in names and len(names) == 2, after.stdout
    assert "Pipeline orders does not exist" in after.stdout


def test_restore_while_in_use_prints_the_api_servers_refusal(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    apply(kubectl, _with_safety_net("orders", namespace))
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    (claim,) = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(volume_snapshot("by-hand", claim)),
    )
    refused = kubectl_sluice(cluster, "restore", "orders", "--from", "by-hand", "-n", namespace)
    assert refused.returncode == 1
    assert "spec.storage.restoreFrom can only be set while storage is Cleared" in refused.stderr
    assert "kubectl sluice clear orders --stop --wait" in refused.stderr
    assert "restoreFrom" not in get(kubectl, namespace, "orders")["spec"]["storage"]
