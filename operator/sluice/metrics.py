"""Prometheus metrics of the operator (served by `sluice run --metrics-port`)."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CLEARS_REQUESTED = Counter(
    "sluice_clears_requested", "Clear requests accepted for handling (no-ops included)."
)
CLEARS_COMPLETED = Counter("sluice_clears_completed", "Clears that reached Cleared.")
CLEARS_FAILED = Counter("sluice_clears_failed", "Failed attempts while clearing (retried).")
CLEAR_DURATION = Histogram(
    "sluice_clear_duration_seconds",
    "From Clearing written to Cleared written.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
RECONCILE_ERRORS = Counter("sluice_reconcile_errors", "Reconciles that ended in an error.")
KUBE_REQUESTS = Counter(
    "sluice_kube_requests",
    "The controller's requests to the API server, by method and answer (code, or error when "
    "none came).",
    ["method", "code"],
)
VOLUME_EVENTS = Counter(
    "sluice_volume_events",
    "PersistentVolume watch events that woke a pipeline whose clear waits for that volume.",
)
VOLUME_READS = Counter(
    "sluice_volume_reads",
    "PersistentVolumes read by name: where PVs are not watched, or for one the watch cannot "
    "vouch for (deleted before the operator started).",
)
LEADER = Gauge("sluice_leader", "1 while this process leads (reconciles), 0 on a standby.")


class PipelineCensus(Collector):
    """`sluice_pipelines{deployment_status, storage_status}`, from the last reconcile of each."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], tuple[str, str]] = {}

    def record(self, key: tuple[str, str], deployment: str, storage: str) -> None:
        self._states[key] = (deployment, storage)

    def forget(self, key: tuple[str, str]) -> None:
        self._states.pop(key, None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sluice_pipelines",
            "Pipelines by deployment and storage status.",
            labels=["deployment_status", "storage_status"],
        )
        for (deployment, storage), count in sorted(Tally(self._states.values()).items()):
            family.add_metric([deployment, storage], count)
        yield family


CENSUS = PipelineCensus()
REGISTRY.register(CENSUS)


class TaskCensus(Collector):
    """`sluice_asyncio_tasks`: tasks alive in the operator's event loop (a leak shows here)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("sluice_asyncio_tasks", "asyncio tasks alive.")
        if self.loop is not None:
            family.add_metric([], len(asyncio.all_tasks(self.loop)))
        yield family


TASKS = TaskCensus()
REGISTRY.register(TASKS)


def seconds_between(start: str, end: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()
