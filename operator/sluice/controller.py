"""Reconcile one pipeline: observe, decide (pure core), act, write status.

Failpoints mark the instants the crash-safety tests kill the operator at.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from sluice import failpoints, metrics
from sluice.api import v1alpha1 as api
from sluice.core import decide as d
from sluice.core import kstatus, snapshots
from sluice.core.conditions import MAX_MESSAGE
from sluice.core.observed import Observed
from sluice.events import EventRecorder
from sluice.kube import Kube
from sluice.transient import api_server_message

log = logging.getLogger("sluice.controller")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(status: api.PipelineStatus) -> dict[str, Any]:
    """The status as a merge patch: None values remove fields (error: null clears it)."""
    body = status.model_dump(by_alias=True, mode="json")
    for key in ("clearingVolumes", "retainedVolumes", "snapshots"):
        if not body["storage"][key]:
            body["storage"][key] = None  # absent when empty, as `kubectl get` shows status
    body["conditions"] = [
        c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in status.conditions
    ]
    return dict(body)


def _comparable(status: dict[str, Any] | None) -> dict[str, Any]:
    """Status as stored, for change detection (stored objects have no null fields)."""
    parsed = api.PipelineStatus.model_validate(status or {})
    stored: dict[str, Any] = _drop_none(status_body(parsed))
    return stored


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


@dataclass(frozen=True)
class Outcome:
    """What a step asks of the work queue."""

    # Status was written: with a cache the written object is already observed, so the
    # next step may follow at once instead of waiting for the watch to echo the write.
    wrote_status: bool = False
    # Look again later (with backoff) even without an event: the step waits on something
    # no watch event names this pipeline for.
    recheck: bool = False
    recheck_max_delay: float | None = None  # None: the work queue's own maximum
    recheck_unwatched: bool = False  # no watch at all reports it (a user's VolumeSnapshot)
    # Come back after this many seconds whatever happens: a snapshot expires then. A timer,
    # not a poll: nothing is read in between.
    requeue_after: float | None = None


class StaleObservation(Exception):
    """What was observed changed under us (409 conflict, 404 gone): observe again.
    Not an error to report."""


class Controller:
    def __init__(self, kube: Kube, events: EventRecorder) -> None:
        self.kube = kube
        self.events = events

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """One step for one pipeline."""
        observed = self.kube.observe(namespace, name)
        if observed is None:
            metrics.CENSUS.forget((namespace, name))
            metrics.ALARMS.forget((namespace, name))
            # Deleted; owned objects follow by garbage collection. Its snapshots have no
            # owner (they outlive it, rule 18): they are expired here, on time.
            return self._expire_orphaned_snapshots(namespace, name)
        # What is persisted now: also a new leader whose first step fails exports it.
        self._export(observed, observed.status)
        metrics.ALARMS.record_snapshots(
            (namespace, name), snapshots.oldest_expiry(observed.snapshots)
        )
        plan = d.decide(observed, utc_now())
        try:
            self._act(observed, plan)
        except ApiException as error:
            if error.status in (404, 409):
                raise StaleObservation(f"{error.status} {error.reason}") from error
            self._report(observed, plan, error)
            raise
        wrote = self._write_status(observed, plan)
        if plan.recheck and not plan.status.storage.claims:
            failpoints.hit(failpoints.WHILE_WAITING_FOR_VOLUME)
        return Outcome(
            wrote_status=wrote,
            recheck=plan.recheck,
            recheck_max_delay=plan.recheck_max_delay,
            recheck_unwatched=plan.recheck_unwatched,
            requeue_after=plan.requeue_after,
        )

    def _expire_orphaned_snapshots(self, namespace: str, name: str) -> Outcome:
        """The snapshots of a Pipeline that no longer exists: delete the expired ones (an
        Event on each VolumeSnapshot, as there is no Pipeline to put it on) and come back
        when the next one expires."""
        taken = self.kube.pipeline_snapshots(namespace, name)
        metrics.ALARMS.record_snapshots((namespace, name), snapshots.oldest_expiry(taken))
        now = utc_now()
        for delete in snapshots.expired(taken, now):
            self.kube.delete_snapshot(delete)
            log.info(
                "%s/%s: SnapshotExpired: snapshot %s of the deleted pipeline deleted",
                namespace,
                name,
                delete.name,
                extra={"namespace": namespace, "pipeline": name},
            )
            snapshot = next(s for s in taken if s["metadata"]["name"] == delete.name)
            event = d.Event(
                "Normal",
                snapshots.EXPIRED_EVENT,
                f"Snapshot {delete.name} of deleted pipeline {namespace}/{name} expired; deleted.",
            )
            try:
                self.kube.emit_snapshot_event(snapshot, event)
            except ApiException as error:  # best effort, as every Event
                log.warning("could not record Event on %s: %s", delete.name, error)
        return Outcome(requeue_after=snapshots.next_expiry_in(taken, now))

    def _act(self, observed: Observed, plan: d.Plan) -> None:
        first_claim_delete = True
        first_claim_touch = True
        for action in plan.actions:
            if isinstance(action, d.DeleteClaim | d.DetachClaim) and first_claim_touch:
                first_claim_touch = False
                if observed.spec.storage.snapshot_before_clear is not None:
                    # Every snapshot is ready (decide let a claim be touched): a crash here
                    # must neither take them again nor lose the clear.
                    failpoints.hit(failpoints.AFTER_SNAPSHOTS_READY)
            self.kube.apply(observed, action)
            if isinstance(action, d.DeleteClaim) and first_claim_delete:
                first_claim_delete = False
                failpoints.hit(failpoints.AFTER_FIRST_CLAIM_DELETE)

    def _write_status(self, observed: Observed, plan: d.Plan) -> bool:
        was = observed.status.storage.status
        new = status_body(plan.status)
        wrote = _drop_none(new) != _comparable(observed.pipeline.get("status"))
        for event in plan.events:
            if event.once:  # a clear's Events: exactly once, so before status (events.py)
                self.events.post_now(observed, event)
        if wrote:
            now = plan.status.storage.status
            if was == api.StorageStatus.CLEARING and now == api.StorageStatus.CLEARED:
                failpoints.hit(failpoints.BEFORE_CLEARED_WRITTEN)
            self.kube.write_status(observed, new)
            self._export(observed, plan.status)
            if was != api.StorageStatus.CLEARING and now == api.StorageStatus.CLEARING:
                metrics.CLEARS_REQUESTED.inc()
                failpoints.hit(failpoints.AFTER_CLEARING_WRITTEN)
            if was == api.StorageStatus.CLEARING and now == api.StorageStatus.CLEARED:
                failpoints.hit(failpoints.AFTER_CLEARED_WRITTEN)
                metrics.CLEARS_COMPLETED.inc()
                started = observed.status.storage.clearing_since
                if started:
                    metrics.CLEAR_DURATION.observe(metrics.seconds_between(started, utc_now()))
        key = (observed.namespace, observed.name)
        metrics.CENSUS.record(key, plan.status.deployment_status, plan.status.storage.status)
        for event in plan.events:
            if event.reason == "ClearRequestHandled":
                metrics.CLEARS_REQUESTED.inc()
                metrics.CLEARS_COMPLETED.inc()
            if not event.once:
                self._emit(observed, event)
            log.info(
                "%s/%s: %s: %s",
                observed.namespace,
                observed.name,
                event.reason,
                event.message,
                extra={"namespace": observed.namespace, "pipeline": observed.name},
            )
        return bool(wrote)

    @staticmethod
    def _export(observed: Observed, status: api.PipelineStatus) -> None:
        """The per-pipeline gauges the alerts read (metrics.PipelineAlarms), from a status
        the API server holds."""
        metrics.ALARMS.record(
            (observed.namespace, observed.name),
            status.storage.status == api.StorageStatus.CLEARING,
            status.storage.clearing_since,
            status.error.error_code if status.error else None,
            time.time(),
        )

    def _emit(self, observed: Observed, event: d.Event) -> None:
        """Events are best effort, as with client-go's recorder (events.py): the state they
        describe is already in status. Posted off the reconcile path."""
        self.events.record(observed, event)

    def _report(self, observed: Observed, plan: d.Plan, error: ApiException) -> None:
        """Put the failure in status.error (the seed's shape), in the API server's own words,
        with the rest of the decided status (so `kubectl get` never shows an empty column),
        and a Warning Event. A failing clear stays Clearing (rule 9)."""
        clearing = observed.status.storage.status == api.StorageStatus.CLEARING
        if clearing:
            metrics.CLEARS_FAILED.inc()
        code = d.STORAGE_CLEAR_FAILED if clearing else "ReconcileFailed"
        what = "clearing storage" if clearing else "reconciling"
        reason = api_server_message(error)
        pipeline_error = api.PipelineError(
            message=f"Failed {what}: {reason} (retrying with backoff)",
            error_code=code,
            details={"status": error.status, "reason": str(error.reason), "body": _body(error)},
        )
        status = plan.status.model_copy(deep=True)
        status.error = pipeline_error
        # kstatus's Stalled=True beside status.error (Flux and kpt then say Failed, as Argo
        # CD says Degraded); a failing clear also says why in StorageCleared.
        status.conditions = kstatus.failed_conditions(
            status.conditions, pipeline_error, observed.generation, utc_now()
        )
        for condition in status.conditions:
            if clearing and condition.type == "StorageCleared":
                condition.reason, condition.message = code, pipeline_error.message[:MAX_MESSAGE]
        try:
            self.kube.write_status(observed, status_body(status))
            self._export(observed, status)
            self._emit(observed, d.Event("Warning", code, pipeline_error.message))
        except ApiException as nested:
            log.warning(
                "could not report error on %s/%s: %s", observed.namespace, observed.name, nested
            )


def _body(error: ApiException) -> str:
    text = str(error.body or "")
    return text[:1000]
