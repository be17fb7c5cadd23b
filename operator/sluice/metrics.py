"""Prometheus metrics of the operator (served by `sluice run --metrics-port`)."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import UTC, datetime

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


class PipelineAlarms(Collector):
    """Per pipeline, what the alerts (deploy/helm/sluice/files/alerts.yaml) need a person for:

    - `sluice_clearing_since_timestamp_seconds{namespace,pipeline}`: while storage is
      `Clearing`, when the clear began (`status.storage.clearingSince`), as Unix seconds;
      absent otherwise (Cleared, InUse, or the pipeline gone).
    - `sluice_pipeline_error{namespace,pipeline,error_code}`: 1 while `status.error` holds
      that code (e.g. StorageClearFailed); absent otherwise.
    - `sluice_snapshot_oldest_expiry_timestamp_seconds{namespace,pipeline}`: the earliest
      expires-at of the operator's VolumeSnapshots of that pipeline that still exist (also
      after the Pipeline was deleted), as Unix seconds; absent when it has none. In the past
      by more than a moment: an expired snapshot is not going away.

    Only the leader reconciles, so only the leader exports them (a standby has none). Set
    from what the operator observed and wrote, never from the pure core."""

    def __init__(self) -> None:
        self._clearing: dict[tuple[str, str], float] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._snapshots: dict[tuple[str, str], float] = {}

    def record(
        self,
        key: tuple[str, str],
        clearing: bool,
        clearing_since: str | None,
        error_code: str | None,
        now: float,
    ) -> None:
        """The pipeline's status as persisted (observed, or just written). A Clearing status
        without clearingSince (written before the field existed) counts from when this
        process first saw it."""
        if not clearing:
            self._clearing.pop(key, None)
        elif clearing_since:
            self._clearing[key] = timestamp(clearing_since)
        else:
            self._clearing.setdefault(key, now)
        if error_code:
            self._errors[key] = error_code
        else:
            self._errors.pop(key, None)

    def record_snapshots(self, key: tuple[str, str], oldest_expiry: str | None) -> None:
        if oldest_expiry:
            self._snapshots[key] = timestamp(oldest_expiry)
        else:
            self._snapshots.pop(key, None)

    def forget(self, key: tuple[str, str]) -> None:
        """The Pipeline is gone (its snapshots are recorded apart: they outlive it)."""
        self._clearing.pop(key, None)
        self._errors.pop(key, None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        clearing = GaugeMetricFamily(
            "sluice_clearing_since_timestamp_seconds",
            "While a pipeline's storage is Clearing: when the clear began (Unix seconds).",
            labels=["namespace", "pipeline"],
        )
        for (namespace, name), since in sorted(dict(self._clearing).items()):
            clearing.add_metric([namespace, name], since)
        yield clearing
        errors = GaugeMetricFamily(
            "sluice_pipeline_error",
            "1 while a pipeline's status.error holds error_code.",
            labels=["namespace", "pipeline", "error_code"],
        )
        for (namespace, name), code in sorted(dict(self._errors).items()):
            errors.add_metric([namespace, name, code], 1)
        yield errors
        expiry = GaugeMetricFamily(
            "sluice_snapshot_oldest_expiry_timestamp_seconds",
            "The earliest expires-at of a pipeline's kept VolumeSnapshots (Unix seconds).",
            labels=["namespace", "pipeline"],
        )
        for (namespace, name), at in sorted(dict(self._snapshots).items()):
            expiry.add_metric([namespace, name], at)
        yield expiry


ALARMS = PipelineAlarms()
REGISTRY.register(ALARMS)


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


def timestamp(stamp: str) -> float:
    """An RFC 3339 time as the operator writes it (or with an offset), as Unix seconds."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
