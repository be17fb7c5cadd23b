"""A pipeline that has reached its desired state causes no API writes (issue: quiet when
settled), measured from the API server's own request counters."""

from __future__ import annotations

import time

from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .metrics import write_requests
from .pipelines import get, run_and_wait, wait_settled


def test_settled_pipeline_causes_no_writes(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    before = wait_settled(kubectl, namespace, "orders")

    def no_namespace_terminating() -> bool:
        items = client.CoreV1Api(api_client).list_namespace().items
        return all(ns.status.phase != "Terminating" for ns in items)

    wait_for(no_namespace_terminating, timeout=120, what="earlier tests' namespaces to go")
    # The operator's own writes: on the real node the kubelet and the controllers write too
    # (pod status, leases), so the API server's counters are shown, not judged.
    start, counts = live_operator.writes(), write_requests(kubectl)
    time.sleep(10)  # an observation window, not a timing assertion
    assert live_operator.writes() - start == 0, write_requests(kubectl) - counts
    after = get(kubectl, namespace, "orders")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert live_operator.alive
