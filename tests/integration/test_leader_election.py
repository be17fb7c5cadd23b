"""Rule 17: two operators with --leader-elect; exactly one acts. The leader is killed mid-clear
(SIGKILL) or stopped (SIGTERM); the standby takes over and every clear completes once."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from localkube.cluster import free_ports
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .ha import (
    Stopwatch,
    check_exactly_once,
    foreign_claim,
    mid_clear,
    request_clears,
    run_pipelines,
    wait_cleared,
)

PIPELINES = [f"p{i}" for i in range(4)]


def elected_pair(kubeconfig: Path, tmp_path: Path, namespace: str) -> list[Operator]:
    pair = []
    for which in ("a", "b"):
        (tmp_path / which).mkdir()
        operator = Operator(kubeconfig, tmp_path / which)
        (port,) = free_ports(1)
        operator.liveness_port = port
        operator.start(
            namespace=namespace,
            extra=(
                "--leader-elect",
                *("--leader-election-namespace", namespace),
                *("--liveness", f"http://127.0.0.1:{port}/healthz"),
            ),
        )
        pair.append(operator)
    return pair


def leader_and_standby(pair: list[Operator]) -> tuple[Operator, Operator]:
    def split() -> tuple[Operator, Operator] | None:
        values = [op.metric("sluice_leader") for op in pair]
        if sorted(values, key=str) == [0.0, 1.0]:
            return (pair[0], pair[1]) if values[0] == 1.0 else (pair[1], pair[0])
        return None

    return wait_for(split, timeout=60, what="one leader and one standby")


def healthy(operator: Operator) -> bool:
    url = f"http://127.0.0.1:{operator.liveness_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


@pytest.fixture
def pair(
    kubeconfig: Path, tmp_path: Path, namespace: str, live_operator: Operator
) -> Iterator[list[Operator]]:
    live_operator.stop()  # the shared operator would act on these pipelines too
    operators = elected_pair(kubeconfig, tmp_path, namespace)
    try:
        yield operators
    finally:
        for operator in operators:
            with contextlib.suppress(Exception):
                operator.stop()


def logged(operator: Operator, line: str) -> None:
    """Lines follow the status write that kubectl waited for: give them a moment."""
    wait_for(lambda: line in operator.log(), timeout=30, what=line)


def _acted(operator: Operator, namespace: str) -> bool:
    return f"{namespace}/p0: DeploymentRunning" in operator.log()


def test_leader_sigkilled_mid_clear_standby_finishes(
    pair: list[Operator], kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    leader, standby = leader_and_standby(pair)
    wait_for(lambda: healthy(standby), timeout=30, what="the standby's liveness endpoint")
    run_pipelines(kubectl, namespace, PIPELINES)
    logged(leader, f"{namespace}/p0: DeploymentRunning")
    assert not _acted(standby, namespace)
    foreign = foreign_claim(api_client, namespace, looks_like="p0")

    with mid_clear(kubectl, api_client, namespace, PIPELINES, "r1"):
        # The stuck-clear alert's gauge: the leader's only (a standby reconciles nothing).
        began = wait_for(lambda: clearing_since(leader, namespace), what="leader's gauge")
        assert clearing_since(standby, namespace) is None
        leader.kill()
        clock = Stopwatch()
        wait_for(lambda: standby.metric("sluice_leader") == 1.0, timeout=60, what="standby leads")
        print(f"failover after SIGKILL: {clock.seconds():.1f}s")
        # The new leader exports the same start, read from the persisted status.
        assert wait_for(lambda: clearing_since(standby, namespace), what="gauge") == began
    wait_cleared(kubectl, namespace)
    check_exactly_once(kubectl, api_client, namespace, PIPELINES, "r1", foreign)
    assert standby.alive, standby.log()
    assert clearing_since(standby, namespace) is None  # gone once Cleared


def clearing_since(operator: Operator, namespace: str) -> float | None:
    """p0's sluice_clearing_since_timestamp_seconds on that operator's /metrics, or None."""
    key = f'sluice_clearing_since_timestamp_seconds{{namespace="{namespace}",pipeline="p0"}}'
    return operator.samples().get(key)


def test_graceful_stop_hands_over_by_releasing_the_lease(
    pair: list[Operator], kubectl: Kubectl, api_client: client.ApiClient, namespace: str
) -> None:
    leader, standby = leader_and_standby(pair)
    run_pipelines(kubectl, namespace, PIPELINES[:2])
    leader.stop()
    assert leader.wait_exit(timeout=5) == 0, leader.log()
    assert "released lease" in leader.log()
    clock = Stopwatch()
    wait_for(lambda: standby.metric("sluice_leader") == 1.0, timeout=60, what="standby leads")
    print(f"failover after SIGTERM: {clock.seconds():.1f}s")
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("sluice-operator", namespace)
    assert lease.spec.lease_transitions == 1  # one handover
    request_clears(kubectl, namespace, PIPELINES[:2], "r1")
    wait_cleared(kubectl, namespace)
    for name in PIPELINES[:2]:
        logged(standby, f"{namespace}/{name}: StorageCleared")


def test_two_operators_without_election_create_each_object_once(
    kubeconfig: Path,
    tmp_path: Path,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
) -> None:
    """A misconfiguration (two replicas, no --leader-elect): both act on the same pipelines.
    Deterministic names make the second create a 409, and preconditions make the second
    delete or status write fail, so nothing is duplicated, lost or cleared twice."""
    live_operator.stop()
    operators = []
    for which in ("a", "b"):
        (tmp_path / which).mkdir()
        operators.append(Operator(kubeconfig, tmp_path / which))
        operators[-1].start(namespace=namespace)
    try:
        names = [f"p{i}" for i in range(20)]
        run_pipelines(kubectl, namespace, names, timeout=300)
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        assert len(core.list_namespaced_persistent_volume_claim(namespace).items) == 20
        assert len(apps.list_namespaced_stateful_set(namespace).items) == 20
        assert len(core.list_namespaced_service(namespace).items) == 20
        # Both act (the point of the case): each has sent writes for these pipelines.
        writes = [op.writes() for op in operators]
        conflicts = sum(op.total("sluice_kube_requests_total", code="409") for op in operators)
        print(f"writes by each operator: {writes}; 409 conflicts: {conflicts:.0f}")
        assert all(n > 0 for n in writes), writes
        foreign = foreign_claim(api_client, namespace, looks_like="p0")
        request_clears(kubectl, namespace, names, "r1")
        wait_cleared(kubectl, namespace, timeout=300)
        check_exactly_once(kubectl, api_client, namespace, names, "r1", foreign)
        assert all(op.alive for op in operators)
    finally:
        for operator in operators:
            operator.stop()
