"""pytest plugin: one real local Kubernetes cluster for the whole session.

Enable it with ``pytest_plugins = ["localkube.fixtures"]`` in ``tests/conftest.py``.
The cluster lives in ``.cache/localkube/test`` (LOCALKUBE_TEST_STATE_DIR overrides),
apart from the one ``python -m localkube up`` starts, and is stopped at the end. Run by
pytest-xdist (`make test`), each worker process has a cluster of its own: its state
directory ends in the worker's id (``test-gw0``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from kubernetes import client, config

from localkube.cluster import KWOK_NAMESPACE_ANNOTATIONS, REPO, LocalCluster

TEST_STATE_DIR = REPO / ".cache/localkube/test"


def for_this_worker(state_dir: Path) -> Path:
    """`state_dir`, or under pytest-xdist one per worker process (`test` -> `test-gw1`):
    clusters run side by side, never sharing a state directory."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return state_dir.with_name(f"{state_dir.name}-{worker}") if worker else state_dir


T = TypeVar("T")


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30,
    what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll predicate until it returns a truthy value (returned) or timeout expires.

    An exception raised by predicate counts as "not yet"; the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as err:
            last = err
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    state_dir = for_this_worker(Path(os.environ.get("LOCALKUBE_TEST_STATE_DIR", TEST_STATE_DIR)))
    local = LocalCluster(state_dir=state_dir)
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), persist_config=False
    )
    with contextlib.closing(api):
        yield api


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return kubectl_for(cluster)


def kubectl_for(cluster: LocalCluster, kubeconfig: Path | None = None) -> Kubectl:
    """kubectl for one cluster (as admin, or with another kubeconfig); raises on failure."""
    binary = cluster.bin_dir / "kubectl"
    config_path = kubeconfig or cluster.kubeconfig

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(binary), f"--kubeconfig={config_path}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    return run


def fresh_namespace(
    api: client.ApiClient,
    request: pytest.FixtureRequest,
    timeout: float = 30,
    on_kwok: bool = False,
) -> str:
    """A fresh namespace named after the test, once its ServiceAccount `default` exists (the
    ServiceAccount controller populates each namespace; pods need it). Its pods run on the
    real node, or with `on_kwok` on the kwok node (no containers: for tests that need
    hundreds of pods, or images that cannot run)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    annotations = KWOK_NAMESPACE_ANNOTATIONS if on_kwok else None
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, annotations=annotations))
    )
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=timeout,
        what=f"ServiceAccount {name}/default",
    )
    return name


def namespace_for_test(
    api: client.ApiClient, request: pytest.FixtureRequest, on_kwok: bool = False
) -> Iterator[str]:
    """A fresh namespace for one test (`fresh_namespace`), deleted afterwards."""
    name = fresh_namespace(api, request, on_kwok=on_kwok)
    try:
        yield name
    finally:
        try:
            client.CoreV1Api(api).delete_namespace(name)
        except client.ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards; its pods run on the real node."""
    yield from namespace_for_test(api_client, request)


@pytest.fixture
def kwok_namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose pods all go to the kwok node, deleted afterwards."""
    yield from namespace_for_test(api_client, request, on_kwok=True)
