"""`kubectl sluice`, run through the real kubectl (which finds kubectl-sluice on PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localkube.cluster import LocalCluster
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import get, run_and_wait


def kubectl_sluice(
    cluster: LocalCluster, namespace: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # kubectl looks plugins up on PATH; the venv's bin holds the console script.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "sluice", "-n", namespace, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


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
    refused = kubectl_sluice(cluster, namespace, "clear", "orders")
    assert refused.returncode == 1
    assert "StorageStatusImmutableUnlessStopped" in refused.stderr
    assert "--stop" in refused.stderr

    done = kubectl_sluice(cluster, namespace, "clear", "orders", "--stop", "--wait")
    assert done.returncode == 0, done.stderr
    assert "Cleared" in done.stdout
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["storage"]["status"] == "Cleared"
    assert obj["spec"]["storage"]["clearRequest"] == obj["status"]["storage"]["lastClearRequest"]

    table = kubectl_sluice(cluster, namespace, "status").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "DEPLOYMENT", "STORAGE", "LAST-CLEAR", "ERROR"]
    assert table[1].split()[:4] == ["orders", "Stopped", "Stopped", "Cleared"]


def test_wait_times_out_with_a_clear_message(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    live_operator.stop()  # nobody acts on the request, so the wait must time out
    result = kubectl_sluice(
        cluster, namespace, "clear", "orders", "--stop", "--wait", "--timeout", "3s"
    )
    assert result.returncode == 2
    assert "timed out after 3s" in result.stderr


def test_status_of_a_missing_pipeline_is_an_error(cluster: LocalCluster, namespace: str) -> None:
    result = kubectl_sluice(cluster, namespace, "status", "nope")
    assert result.returncode == 1
    assert "not found" in result.stderr
