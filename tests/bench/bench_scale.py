"""`make bench`: one namespace with many pipelines (issue 3: "design for 1,000").

Creates N stopped pipelines (SLUICE_BENCH_PIPELINES, default 1000), then prints: the time
until the operator has observed every one, its API writes per pipeline, writes while idle
and after a restart (both should be 0: watch-driven, level-triggered, no polling), the
operator's CPU time and memory, and the time to delete them all through the finalizer.
Prints figures; asserts nothing about timing (shared, noisy machines).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from integration.metrics import OWNED_RESOURCES, writes
from integration.pipelines import IMAGE
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for
from sluice.api import v1alpha1 as api
from sluice_fixtures import Operator

PIPELINES = int(os.environ.get("SLUICE_BENCH_PIPELINES", "1000"))
IDLE_WINDOW = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pipelines(api_client: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def _observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"]["generation"])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pid(operator: Operator) -> int:
    assert operator.process is not None
    return operator.process.pid


def test_many_pipelines_in_one_namespace(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    documents = [
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": f"p{i:04d}", "namespace": namespace},
            "spec": {"desiredState": "Stopped", "image": IMAGE, "storage": {"size": "1Gi"}},
        }
        for i in range(PIPELINES)
    ]
    cpu_before = _cpu_seconds(_pid(live_operator))
    writes_before = writes(kubectl, OWNED_RESOURCES)
    start = time.perf_counter()
    kubectl("create", "-f", "-", input=yaml.safe_dump_all(documents), timeout=600)
    created = time.perf_counter() - start
    wait_for(
        lambda: sum(map(_observed, _pipelines(api_client, namespace))) == PIPELINES,
        timeout=900,
        interval=1.0,
        what=f"all {PIPELINES} pipelines observed",
    )
    settled = time.perf_counter() - start
    time.sleep(2)  # trailing writes land before counting
    settle_writes = writes(kubectl, OWNED_RESOURCES) - writes_before - PIPELINES  # minus creates
    cpu_settle = _cpu_seconds(_pid(live_operator)) - cpu_before
    rss = _rss_mib(_pid(live_operator))

    # Two windows back to back: the first may still include the echoes of the operator's
    # own status writes (each comes back as a watch event and is reconciled to a no-op).
    idle: list[tuple[int, float]] = []
    for _ in range(2):
        idle_start = writes(kubectl, OWNED_RESOURCES)
        cpu_idle_start = _cpu_seconds(_pid(live_operator))
        time.sleep(IDLE_WINDOW)
        idle.append(
            (
                writes(kubectl, OWNED_RESOURCES) - idle_start,
                _cpu_seconds(_pid(live_operator)) - cpu_idle_start,
            )
        )

    live_operator.stop()
    restart_start = writes(kubectl, OWNED_RESOURCES)
    live_operator.start()
    time.sleep(IDLE_WINDOW)  # the restarted operator lists and reconciles every pipeline
    restart_writes = writes(kubectl, OWNED_RESOURCES) - restart_start
    cpu_restart = _cpu_seconds(_pid(live_operator))

    start = time.perf_counter()
    kubectl("-n", namespace, "delete", "pipelines", "--all", "--wait=false", timeout=600)
    wait_for(
        lambda: not _pipelines(api_client, namespace),
        timeout=900,
        interval=1.0,
        what="all pipelines deleted",
    )
    deleted = time.perf_counter() - start

    print(f"\n{PIPELINES} stopped pipelines in one namespace")
    print(f"  kubectl create of all: {created:.1f} s; all observed after {settled:.1f} s")
    print(
        f"  operator writes while settling: {settle_writes} "
        f"({settle_writes / PIPELINES:.2f} per pipeline: finalizer + status)"
    )
    print(f"  operator CPU while settling: {cpu_settle:.1f} s; RSS after: {rss:.0f} MiB")
    for n, (idle_writes, cpu_idle) in enumerate(idle, 1):
        print(
            f"  idle window {n} ({IDLE_WINDOW:.0f} s): {idle_writes} writes, "
            f"{cpu_idle:.2f} s operator CPU ({cpu_idle / IDLE_WINDOW * 100:.1f}% of a core)"
        )
    print(
        f"  operator restart, first {IDLE_WINDOW:.0f} s: {restart_writes} writes, "
        f"{cpu_restart:.1f} s CPU"
    )
    print(f"  delete all (finalizer path): {deleted:.1f} s")
