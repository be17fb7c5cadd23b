"""`make run`, the first command a user types (contract section 4): against the cluster in
$KUBECONFIG it installs the CRD, runs the operator and serves the REST API; Ctrl-C stops
everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests
import yaml
from localkube.cluster import REPO, LocalCluster, free_ports, port_in_use
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import run_and_wait
from .test_rest_api import token_for


def _answers(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.ConnectionError:
        return None


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_make_run_runs_operator_and_api_until_interrupted(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    live_operator: Operator,
    tmp_path: Path,
) -> None:
    live_operator.stop()  # so that what happens below is the work of `make run`'s operator
    # The user's kubeconfig, with the context's namespace set (`kubectl config set-context
    # --current --namespace=...`): the REST API serves that namespace.
    config = yaml.safe_load(kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    user_kubeconfig = tmp_path / "kubeconfig"
    user_kubeconfig.write_text(yaml.safe_dump(config))
    api_port, health_port, metrics_port = free_ports(3)
    operator_flags = (
        f"--namespace {namespace} --liveness http://127.0.0.1:{health_port}/healthz "
        f"--metrics-port {metrics_port}"
    )
    with (tmp_path / "make-run.log").open("wb") as log:
        make_run = subprocess.Popen(
            [
                *("make", "-C", str(REPO), "run"),
                f"API_BIND=127.0.0.1:{api_port}",
                f"OPERATOR_FLAGS={operator_flags}",
            ],
            env={**os.environ, "KUBECONFIG": str(user_kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job is
        )
    try:
        run_and_wait(kubectl, namespace, "orders")
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{health_port}/healthz") == 200,
            what="the operator's liveness endpoint",
        )
        token = token_for(kubectl, namespace, "reader", ["get"])
        url = f"http://127.0.0.1:{api_port}/v0/pipelines/orders"
        wait_for(lambda: _answers(url) is not None, what="the REST API to listen")
        assert requests.get(url, timeout=5).status_code == 401
        seen = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert seen.status_code == 200, seen.text
        assert seen.json()["deployment_status"] == "Running"
        assert seen.json()["storage_status"] == "InUse"
    finally:
        os.killpg(make_run.pid, signal.SIGINT)  # Ctrl-C
        make_run.wait(timeout=60)
    log_text = (tmp_path / "make-run.log").read_text(errors="replace")
    wait_for(lambda: _group_gone(make_run.pid), timeout=30, what="every process make run started")
    for port in (api_port, health_port, metrics_port):
        assert not port_in_use(port), f"port {port} still bound after Ctrl-C\n{log_text}"
    # A healthy run is quiet, and says how to use the cluster from another terminal.
    noisy = [line for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line]
    assert noisy == [], log_text
    assert f"export KUBECONFIG={user_kubeconfig}" in log_text, log_text
    assert f"export PATH={REPO / '.cache/localkube/bin'}:$PATH" in log_text, log_text
    assert f"REST API: http://127.0.0.1:{api_port}" in log_text, log_text
    assert "plain HTTP, for loopback only" in log_text, log_text  # says deployments differ


def test_first_make_run_on_a_new_cluster_is_quiet(tmp_path: Path) -> None:
    """No KUBECONFIG: `make run` starts a cluster of its own and installs the CRD into it.
    Right after that the API server answers 429 "storage is (re)initializing" for a moment;
    the operator must not start into it (kopf logs each such answer as an ERROR)."""
    state_dir = tmp_path / "localkube"
    api_port, health_port, metrics_port = free_ports(3)
    liveness = f"http://127.0.0.1:{health_port}/healthz"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["LOCALKUBE_STATE_DIR"] = str(state_dir)
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        make_run = subprocess.Popen(
            [
                *("make", "-C", str(REPO), "run"),
                f"API_BIND=127.0.0.1:{api_port}",
                "OPERATOR_FLAGS=--all-namespaces "
                f"--liveness {liveness} --metrics-port {metrics_port}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: _answers(liveness) == 200,
            timeout=120,
            what="the operator's liveness endpoint",
        )
        # The operator's first lists and watches of pipelines happen at start-up.
        wait_for(
            lambda: "Initial authentication has finished" in log_path.read_text(),
            what="the operator to start",
        )
        time.sleep(3)
    finally:
        os.killpg(make_run.pid, signal.SIGINT)
        make_run.wait(timeout=60)
        LocalCluster(state_dir=state_dir).down()
    log_text = log_path.read_text(errors="replace")
    noisy = [line for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line]
    assert noisy == [], log_text
    assert f"export KUBECONFIG={state_dir / 'kubeconfig'}" in log_text, log_text
