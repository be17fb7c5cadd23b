"""`make bench`: the operator's memory with many PersistentVolumes that are not Sluice's.

PVs are cluster-scoped and carry no label of Sluice's, so the operator's PV informer keeps
every PV of the cluster (trimmed, cache.py). With SLUICE_BENCH_VOLUMES (default 10,000)
hostPath PVs with no claim (Available) created while the operator is stopped, prints its
RSS once it has started and observed a pipeline (workers start only after every informer
has listed), against the same without those PVs; and the time from its start until then.
Goal (issue 17): less than 30 MiB more. Prints figures; asserts nothing about them.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from integration.pipelines import apply, manifest, wait_settled
from kubernetes import client
from localkube.fixtures import Kubectl
from sluice_fixtures import Operator

from bench.watching import cpu_seconds, rss_mib, wait_quiet

VOLUMES = int(os.environ.get("SLUICE_BENCH_VOLUMES", "10000"))
CREATORS = 8
LABEL = "sluice.dev/bench-volume"


def volume(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {LABEL: "yes"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "bench-not-sluice",
            "hostPath": {"path": f"/tmp/sluice-bench-not-used/{name}"},
        },
    }


def _started(
    operator: Operator, kubectl: Kubectl, namespace: str, probe: str
) -> tuple[float, float, float]:
    """(Re)start the operator; (seconds until it observed `probe`, RSS MiB, CPU s)."""
    operator.stop()
    start = time.perf_counter()
    operator.start()
    apply(kubectl, manifest(probe, namespace, "Stopped"))
    wait_settled(kubectl, namespace, probe, timeout=600)
    elapsed = time.perf_counter() - start
    assert operator.process is not None
    pid = operator.process.pid
    wait_quiet(lambda: cpu_seconds(pid))  # idle: the lists' garbage is freed
    return elapsed, rss_mib(pid), cpu_seconds(pid)


def memory_with_many_volumes(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, operator: Operator, n: int
) -> None:
    core = client.CoreV1Api(api_client)
    prefix = f"bench-{namespace[-6:]}"
    try:
        without = _started(operator, kubectl, namespace, "probe-a")
        operator.stop()
        created = time.perf_counter()
        with ThreadPoolExecutor(CREATORS) as pool:  # kubectl creates one at a time
            list(
                pool.map(
                    core.create_persistent_volume, (volume(f"{prefix}-{i:05d}") for i in range(n))
                )
            )
        created = time.perf_counter() - created
        listed = core.list_persistent_volume(label_selector=LABEL, limit=1)
        assert listed.metadata.remaining_item_count in (None, n - 1)
        with_volumes = _started(operator, kubectl, namespace, "probe-b")
    finally:
        kubectl("delete", "pv", "-l", LABEL, "--wait=false", timeout=600, check=False)
    print(f"\noperator memory with {n} PersistentVolumes that are not Sluice's")
    print(f"  (created in {created:.1f} s while the operator was stopped)")
    for label, (seconds, rss, cpu) in (("without", without), (f"with {n}", with_volumes)):
        print(
            f"  {label:<11} RSS {rss:.1f} MiB; start until a pipeline is observed "
            f"{seconds:.1f} s; CPU {cpu:.1f} s"
        )
    print(f"  difference: {with_volumes[1] - without[1]:+.1f} MiB (goal: < 30 MiB)")


def test_memory_with_many_volumes(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    memory_with_many_volumes(kubectl, api_client, namespace, live_operator, VOLUMES)
