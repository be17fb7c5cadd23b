"""`make bench`: many stopped pipelines in one namespace (issue 10: 1,000 and 10,000).

For each size in SLUICE_BENCH_PIPELINES (default "1000,10000"): creates that many stopped
pipelines while the operator is stopped (creating 10,000 takes longer than observing
them), starts it, then prints the time from its start until it has observed every one
(timed from a watch), its CPU and memory, the API requests during settling by verb (from the API
server's `apiserver_request_total`), writes while idle, and after a restart the requests
by verb (writes should be 0, GETs 0: it lists each kind once), CPU, and the time to delete
them all through the finalizer. Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from integration.metrics import OWNED_RESOURCES, writes
from integration.pipelines import document
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for
from sluice.api import v1alpha1 as api
from sluice_fixtures import Operator

from bench.watching import (
    Requests,
    by_verb,
    cpu_seconds,
    ours,
    reads_and_writes,
    rss_mib,
    wait_quiet,
    watch_until,
)

SIZES = [int(n) for n in os.environ.get("SLUICE_BENCH_PIPELINES", "1000,10000").split(",")]
IDLE_WINDOW = float(os.environ.get("SLUICE_BENCH_IDLE_SECONDS", "30"))
TIMEOUT = 1800.0


def _observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"]["generation"])


def _pid(operator: Operator) -> int:
    assert operator.process is not None
    return operator.process.pid


def many_stopped_pipelines(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    operator: Operator,
    pipelines: int,
    idle_window: float,
) -> None:
    custom = client.CustomObjectsApi(api_client)
    listing = functools.partial(
        custom.list_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL
    )
    documents = [document(f"p{i:05d}", namespace, "Stopped") for i in range(pipelines)]
    operator.stop()
    start = time.perf_counter()

    def create(document: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, document
        )

    with ThreadPoolExecutor(16) as pool:  # one kubectl create is ~20/s here
        list(pool.map(create, documents))
    created = time.perf_counter() - start
    settling = Requests(kubectl)
    start = time.perf_counter()
    operator.start()
    settled = (
        watch_until(listing, _observed, lambda n: n >= pipelines, TIMEOUT, "all observed") - start
    )
    wait_quiet(lambda: writes(kubectl, OWNED_RESOURCES))  # trailing writes land first
    settle_counts = ours(settling.delta())
    cpu_settle = cpu_seconds(_pid(operator))
    rss = rss_mib(_pid(operator))

    # Two windows back to back: the first may still include the echoes of the operator's
    # own status writes (each comes back as a watch event and is reconciled to a no-op).
    idle: list[tuple[int, float]] = []
    for _ in range(2):
        idle_start = writes(kubectl, OWNED_RESOURCES)
        cpu_idle_start = cpu_seconds(_pid(operator))
        time.sleep(idle_window)
        idle.append(
            (
                writes(kubectl, OWNED_RESOURCES) - idle_start,
                cpu_seconds(_pid(operator)) - cpu_idle_start,
            )
        )

    operator.stop()
    restart = Requests(kubectl)
    restarted = time.perf_counter()
    operator.start()
    # Until the restarted operator has listed and reconciled every pipeline (each is then in
    # its census), and its requests have landed.
    wait_for(
        lambda: operator.total("sluice_pipelines") >= pipelines,
        timeout=TIMEOUT,
        interval=0.5,
        what="every pipeline reconciled after the restart",
    )
    restarted = time.perf_counter() - restarted
    wait_quiet(lambda: cpu_seconds(_pid(operator)))
    restart_counts = ours(restart.delta())
    cpu_restart = cpu_seconds(_pid(operator))
    rss_restart = rss_mib(_pid(operator))

    start = time.perf_counter()
    kubectl("-n", namespace, "delete", "pipelines", "--all", "--wait=false", timeout=1200)
    deleted = watch_until(listing, lambda _: True, lambda n: n == 0, TIMEOUT, "all deleted") - start

    reads, settle_writes = reads_and_writes(settle_counts)
    print(f"\n{pipelines} stopped pipelines in one namespace")
    print(
        f"  created (16 client threads, operator stopped) in {created:.1f} s; "
        f"operator started: all observed after {settled:.1f} s"
    )
    print(
        f"  requests while settling (all clients): {reads} reads, {settle_writes} writes "
        f"({settle_writes / pipelines:.2f} per pipeline)"
    )
    print(f"    {by_verb(settle_counts)}")
    print(f"  operator CPU from start until settled: {cpu_settle:.1f} s; RSS {rss:.0f} MiB")
    for n, (idle_writes, cpu_idle) in enumerate(idle, 1):
        print(
            f"  idle window {n} ({idle_window:.0f} s): {idle_writes} writes, "
            f"{cpu_idle:.2f} s operator CPU ({cpu_idle / idle_window * 100:.1f}% of a core)"
        )
    restart_reads, restart_writes = reads_and_writes(restart_counts)
    print(
        f"  operator restart, until all reconciled ({restarted:.1f} s): {restart_reads} reads, "
        f"{restart_writes} writes, {cpu_restart:.1f} s CPU, RSS {rss_restart:.0f} MiB"
    )
    print(f"    {by_verb(restart_counts)}")
    print(f"  delete all (finalizer path): {deleted:.1f} s")


@pytest.mark.parametrize("pipelines", SIZES)
def test_many_pipelines_in_one_namespace(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
    pipelines: int,
) -> None:
    many_stopped_pipelines(kubectl, api_client, namespace, live_operator, pipelines, IDLE_WINDOW)
