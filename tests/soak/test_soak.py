"""`make soak` (not in CI): churn over 200 pipelines with two `--leader-elect` operators and a
forced failover every few minutes (SIGKILL and SIGTERM in turn; the stopped one is started
again as a standby, as the kubelet would). Prints, once a minute, each operator's RSS and
asyncio tasks, and at the end clears requested vs completed and stuck pipelines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench import watching
from faults.conftest import FaultEnv, environment, start_cluster
from integration.ha import request_clears, run_pipelines, wait_cleared
from localkube.cluster import LocalCluster
from localkube.fixtures import TEST_STATE_DIR, wait_for
from sluice_fixtures import Operator

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
POOL = [f"s{i:03d}" for i in range(200)]
BATCH = 20
FAILOVER_EVERY = 180.0  # seconds
SAMPLE_EVERY = 60.0


@pytest.fixture(scope="module")
def soak_cluster() -> Iterator[LocalCluster]:
    local = start_cluster(LocalCluster(state_dir=TEST_STATE_DIR.parent / "soak"))
    try:
        yield local
    finally:
        local.down()


def rss_mib(operator: Operator) -> float:
    assert operator.process is not None
    return watching.rss_mib(operator.process.pid)


def metric(operator: Operator, name: str) -> float:
    """NaN while the process is (re)starting and not serving yet."""
    try:
        value = operator.metric(name)
    except OSError:
        return float("nan")
    return float("nan") if value is None else value


def current_leader(operators: list[Operator]) -> Operator:
    def find() -> Operator | None:
        return next((op for op in operators if metric(op, "sluice_leader") == 1.0), None)

    return wait_for(find, timeout=120, what="a leader")


def start(env: FaultEnv, operator: Operator) -> None:
    operator.start(
        namespace=env.namespace,
        extra=("--leader-elect", "--leader-election-namespace", env.namespace),
    )


@pytest.mark.soak
def test_churn_with_failovers(
    soak_cluster: LocalCluster, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with environment(soak_cluster, request, tmp_path) as env:
        operators = [env.operator("a"), env.operator("b")]
        for operator in operators:
            start(env, operator)
        kubectl = env.kubectl
        requested = cycles = failovers = unplanned_exits = 0
        began = last_failover = last_sample = time.monotonic()
        samples: list[str] = []
        try:
            while time.monotonic() - began < MINUTES * 60:
                batch = POOL[(cycles * BATCH) % len(POOL) :][:BATCH]
                run_pipelines(kubectl, env.namespace, batch, timeout=600)
                request_clears(kubectl, env.namespace, batch, f"c{cycles}")
                requested += len(batch)
                wait_cleared(kubectl, env.namespace, timeout=600)
                kubectl(
                    *("-n", env.namespace, "delete", "pipeline", *batch, "--wait=true"),
                    "--timeout=600s",
                    timeout=610,
                )
                cycles += 1
                for operator in operators:  # as the kubelet restarts a container that exited
                    if not operator.alive:
                        unplanned_exits += 1
                        start(env, operator)
                now = time.monotonic()
                if now - last_failover > FAILOVER_EVERY:
                    leader = current_leader(operators)
                    sig = signal.SIGKILL if failovers % 2 == 0 else signal.SIGTERM
                    assert leader.process is not None
                    leader.process.send_signal(sig)
                    leader.process.wait(60)
                    start(env, leader)  # as the kubelet restarts the container
                    failovers += 1
                    last_failover = now
                if now - last_sample > SAMPLE_EVERY or not samples:
                    line = f"{(now - began) / 60:5.1f} min " + "  ".join(
                        f"[{'leader' if metric(op, 'sluice_leader') == 1.0 else 'standby'} "
                        f"pid {op.process.pid if op.process else '-'}: RSS {rss_mib(op):.0f} MiB, "
                        f"{metric(op, 'sluice_asyncio_tasks'):.0f} tasks]"
                        for op in operators
                    )
                    samples.append(line)
                    print(line, flush=True)
                    last_sample = now
            events = json.loads(
                kubectl(
                    *("-n", env.namespace, "get", "events", "-o", "json"),
                    "--field-selector=reason=StorageCleared",
                ).stdout
            )["items"]
            completed = sum(e.get("count", 1) for e in events)
            left = json.loads(kubectl("-n", env.namespace, "get", "pipelines", "-o", "json").stdout)
            stuck = len(left["items"])
            print(
                f"\nSOAK | {(time.monotonic() - began) / 60:.1f} min | {cycles} cycles of {BATCH} "
                f"| {failovers} failovers, {unplanned_exits} unplanned exits | clears requested "
                f"{requested}, completed {completed} | stuck {stuck}"
            )
            assert completed == requested
            assert stuck == 0
            assert unplanned_exits == 0
        finally:
            for operator in operators:
                with contextlib.suppress(Exception):
                    operator.stop()
