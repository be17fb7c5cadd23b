"""`make bench`: leader failover with two `sluice run --leader-elect` replicas: from the
leader's SIGKILL (the lease must expire) or SIGTERM (it releases the Lease) until the standby
leads (its `sluice_leader` gauge is 1). Prints medians of 3; asserts nothing about timing."""

from __future__ import annotations

import contextlib
import signal
import statistics
import time
from pathlib import Path

from integration.pipelines import apply, manifest
from integration.test_leader_election import elected_pair, leader_and_standby
from localkube.fixtures import Kubectl, wait_for
from sluice_fixtures import Operator

RUNS = 3


def _failover(kubeconfig: Path, tmp_path: Path, namespace: str, sig: signal.Signals) -> float:
    pair = elected_pair(kubeconfig, tmp_path, namespace)
    try:
        leader, standby = leader_and_standby(pair)
        assert leader.process is not None
        # A leader whose watches deliver (it has reconciled the probe), as in a rolling update.
        wait_for(lambda: leader.total("sluice_pipelines") >= 1, timeout=60, what="watches")
        start = time.monotonic()
        leader.process.send_signal(sig)
        wait_for(lambda: standby.metric("sluice_leader") == 1.0, timeout=60, interval=0.05)
        return time.monotonic() - start
    finally:
        for operator in pair:
            with contextlib.suppress(Exception):
                operator.stop()


def test_failover_times(
    kubeconfig: Path, kubectl: Kubectl, tmp_path: Path, namespace: str, live_operator: Operator
) -> None:
    live_operator.stop()
    apply(kubectl, manifest("probe", namespace, "Stopped"))
    results: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    for run in range(RUNS):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            where = tmp_path / f"{sig.name}-{run}"
            where.mkdir()
            results[sig.name].append(_failover(kubeconfig, where, namespace, sig))
    print("\nleader failover, two replicas (lease 15 s, renew deadline 10 s, retry 2 s)")
    for name, times in results.items():
        print(
            f"  after {name}: median {statistics.median(times):.1f} s "
            f"(runs: {', '.join(f'{t:.1f}' for t in times)})"
        )
