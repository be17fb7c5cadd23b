"""Overload: 300 pipelines stopped and cleared at once while the API server answers 429 to the
operator (a low --max-requests-inflight on a cluster of its own). All clears complete exactly
once, and the operator backs off: its requests are counted (its own metric) and printed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.ha import (
    check_exactly_once,
    foreign_claim,
    request_clears,
    wait_cleared,
)
from integration.pipelines import apply, manifest
from localkube.cluster import LocalCluster
from localkube.fixtures import TEST_STATE_DIR, kubectl_for

from .conftest import FaultEnv, environment, start_cluster

PIPELINES = [f"p{i:03d}" for i in range(300)]
# Without priority and fairness, the API server answers 429 at once past these limits. Its own
# components and kubectl (system:masters) are exempt; the operator runs as a ServiceAccount.
LIMITS = [
    "--enable-priority-and-fairness=false",
    "--max-requests-inflight=3",
    "--max-mutating-requests-inflight=2",
]


@pytest.fixture(scope="module")
def overload_cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(
        state_dir=TEST_STATE_DIR.parent / "overload", extra_args={"kube-apiserver": LIMITS}
    )
    start_cluster(local)
    try:
        yield local
    finally:
        local.down()


def service_account_kubeconfig(env: FaultEnv) -> Path:
    kubectl = env.kubectl
    kubectl("-n", env.namespace, "create", "serviceaccount", "operator")
    kubectl(
        *(
            "create",
            "clusterrolebinding",
            f"{env.namespace}-operator",
            "--clusterrole=cluster-admin",
        ),
        f"--serviceaccount={env.namespace}:operator",
    )
    token = kubectl("-n", env.namespace, "create", "token", "operator", "--duration=2h")
    return env.cluster.token_kubeconfig("operator", token.stdout.strip(), env.log_dir / "sa")


@pytest.mark.faults
def test_300_clears_at_once_under_429_complete_and_back_off(
    overload_cluster: LocalCluster, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with environment(overload_cluster, request, tmp_path) as env:
        operator = env.operator("operator", kubeconfig=service_account_kubeconfig(env))
        operator.start(namespace=env.namespace)
        try:
            kubectl = kubectl_for(env.cluster)
            apply(kubectl, "---\n".join(manifest(n, env.namespace) for n in PIPELINES))
            kubectl(
                *("-n", env.namespace, "wait", "pipeline", "--all", "--timeout=900s"),
                "--for=jsonpath={.status.storage.status}=InUse",
                timeout=910,
            )
            foreign = foreign_claim(env.api, env.namespace, looks_like="p000")
            before = operator.by_label("sluice_kube_requests_total", "code")
            start = time.monotonic()
            request_clears(kubectl, env.namespace, PIPELINES, "r1")
            wait_cleared(kubectl, env.namespace, timeout=900)
            took = time.monotonic() - start
            after = operator.by_label("sluice_kube_requests_total", "code")
            spent = {code: after.get(code, 0) - before.get(code, 0) for code in after}
            total = sum(spent.values())
            print(
                f"\nFAULT | overload: 300 clears at once, API server 429s | clears 300 | "
                f"completed exactly once | {took:.0f}s; operator requests {total:.0f} "
                f"({total / len(PIPELINES):.1f} per clear), by answer {spent}"
            )
            check_exactly_once(kubectl, env.api, env.namespace, PIPELINES, "r1", foreign)
            assert operator.alive
            assert spent.get("429", 0) > 0, "the case needs the API server to refuse"
            # Backing off, not hammering: most requests get through, few are refused.
            assert spent["429"] < total / 4, spent
            assert operator.log().count("Traceback") == 0
        finally:
            with contextlib.suppress(Exception):
                operator.stop()
