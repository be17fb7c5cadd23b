"""The fault suite's own control plane: components are killed, frozen and restarted here,
never on the session cluster the rest of the suite uses (architecture notes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from localkube.cluster import LocalCluster
from localkube.fixtures import (
    TEST_STATE_DIR,
    Kubectl,
    for_this_worker,
    fresh_namespace,
    kubectl_for,
)
from sluice_fixtures import CRD_DIR, Operator

FAULTS_STATE_DIR = for_this_worker(TEST_STATE_DIR.parent / "faults")


@dataclass
class FaultEnv:
    cluster: LocalCluster
    kubectl: Kubectl
    api: client.ApiClient
    namespace: str
    log_dir: Path

    def operator(self, name: str, kubeconfig: Path | None = None) -> Operator:
        (self.log_dir / name).mkdir()
        return Operator(kubeconfig or self.cluster.kubeconfig, self.log_dir / name)

    def kubeconfig_via(self, port: int) -> Path:
        """The admin kubeconfig, pointed at another port on loopback (a proxy)."""
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        admin["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        path = self.log_dir / f"kubeconfig-{port}"
        path.write_text(yaml.safe_dump(admin))
        return path


def start_cluster(local: LocalCluster) -> LocalCluster:
    """Up (a no-op while it runs), with the CRD installed."""
    local.up()
    kubectl = kubectl_for(local)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kubectl("wait", "--for=condition=Established", "crd/pipelines.sluice.dev", "--timeout=60s")
    return local


@pytest.fixture(scope="session")
def fault_cluster() -> Iterator[LocalCluster]:
    local = start_cluster(LocalCluster(state_dir=FAULTS_STATE_DIR))
    try:
        yield local
    finally:
        local.down()


@contextlib.contextmanager
def environment(
    local: LocalCluster, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[FaultEnv]:
    """A fresh namespace on `local`, and clients for it."""
    api: client.ApiClient = config.new_client_from_config(
        config_file=str(local.kubeconfig), persist_config=False
    )
    # Control-plane faults with pipelines whose image cannot run: their pods stay on kwok.
    name = fresh_namespace(api, request, timeout=60, on_kwok=True)
    core = client.CoreV1Api(api)
    with contextlib.closing(api):
        try:
            yield FaultEnv(local, kubectl_for(local), api, name, tmp_path)
        finally:
            with contextlib.suppress(Exception):
                core.delete_namespace(name)


@pytest.fixture
def fault_env(
    fault_cluster: LocalCluster, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[FaultEnv]:
    if not fault_cluster.is_running():  # a case that failed half-way leaves it broken
        fault_cluster.down()
        start_cluster(fault_cluster)
    with environment(fault_cluster, request, tmp_path) as env:
        yield env
