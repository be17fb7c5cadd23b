"""`make bench`: how long a clear takes and how many API writes it causes.

Prints figures; asserts nothing about timing (shared, noisy machines).
"""

from __future__ import annotations

import statistics
import time

from integration.metrics import OWNED_RESOURCES, write_requests, writes
from integration.pipelines import patch, run_and_wait, wait_jsonpath, wait_settled
from kubernetes import client
from localkube.fixtures import Kubectl
from sluice_fixtures import Operator

RUNS = 5


def test_clear_latency_and_writes(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    durations, per_clear = [], []
    for i in range(RUNS):
        run_and_wait(kubectl, namespace, "orders")
        patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Stopped"}})
        wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Stopped")
        wait_settled(kubectl, namespace, "orders")
        before = write_requests(kubectl)
        start = time.perf_counter()
        patch(kubectl, namespace, "orders", {"spec": {"storage": {"clearRequest": f"r{i}"}}})
        wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
        durations.append(time.perf_counter() - start)
        time.sleep(1)  # let trailing writes (Events) land before counting
        per_clear.append(write_requests(kubectl) - before)
        patch(kubectl, namespace, "orders", {"spec": {"desiredState": "Running"}})

    print(f"\nclear of a stopped pipeline with one PVC, kubectl patch -> Cleared, {RUNS} runs")
    print(
        f"  median {statistics.median(durations):.3f} s"
        f"  (min {min(durations):.3f}, max {max(durations):.3f})"
    )
    median_writes = statistics.median(sum(c.values()) for c in per_clear)
    print(
        f"  API write requests per clear (all clients, the user's patch included): "
        f"median {median_writes}"
    )
    for key, n in sorted(per_clear[-1].items()):
        print(f"    {key}: {n}")

    wait_settled(kubectl, namespace, "orders")
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Running")
    start_count = writes(kubectl, OWNED_RESOURCES)
    window = 30.0
    time.sleep(window)
    idle = writes(kubectl, OWNED_RESOURCES) - start_count
    print(
        f"idle settled pipeline: {idle * 60 / window:.1f} writes/min to pipelines, "
        "statefulsets, PVCs, services"
    )
