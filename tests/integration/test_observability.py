"""Prometheus metrics move during a real clear; JSON logs name the pipeline."""

from __future__ import annotations

import json

from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import clear_and_wait, run_and_wait


def scrape(operator: Operator) -> dict[str, float]:
    return {k: v for k, v in operator.samples().items() if k.startswith("sluice_")}


def test_clear_moves_the_counters_and_logs_name_the_pipeline(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    before = wait_for(lambda: scrape(live_operator), what="metrics endpoint")
    clear_and_wait(kubectl, namespace, "orders")
    after = scrape(live_operator)
    for counter in ("sluice_clears_requested_total", "sluice_clears_completed_total"):
        assert after[counter] == before.get(counter, 0) + 1, counter
    assert after["sluice_clear_duration_seconds_count"] == (
        before.get("sluice_clear_duration_seconds_count", 0) + 1
    )
    assert after['sluice_pipelines{deployment_status="Stopped",storage_status="Cleared"}'] >= 1

    def logged_cleared() -> bool:
        lines = live_operator.log().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return any(
            r.get("namespace") == namespace
            and r.get("pipeline") == "orders"
            and "StorageCleared" in r["message"]
            for r in records
        )

    wait_for(logged_cleared, what="a JSON log line naming the pipeline")
