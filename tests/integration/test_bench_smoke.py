"""`make bench`'s code, run small in CI so that it keeps working: a smoke test with no
timing assertions (the figures are printed; run `make bench` for real ones)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_clear import many_at_once, one_clear, report_many, report_one
from bench.bench_kopf_start import kopf_against_own_informers
from bench.bench_scale import many_stopped_pipelines
from bench.bench_volumes import memory_with_many_volumes
from kubernetes import client
from localkube.fixtures import Kubectl
from sluice_fixtures import Operator


def test_clear_bench_runs(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    one = one_clear(api_client, kubectl, namespace, runs=1)
    report_one(one)
    # Each side's one clear was observed end to end and cost API requests.
    assert all(timing.requests for side in one.values() for timing in side)
    report_many(many_at_once(api_client, kubectl, namespace, many=3), 3)


def test_scale_bench_runs(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    many_stopped_pipelines(kubectl, api_client, namespace, live_operator, 20, idle_window=2.0)


def test_volume_memory_bench_runs(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    memory_with_many_volumes(kubectl, api_client, namespace, live_operator, 20)


def test_kopf_start_bench_runs(
    crd: None, kubectl: Kubectl, api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    kopf_against_own_informers(kubectl, api_client, namespace, kubeconfig, [5])
