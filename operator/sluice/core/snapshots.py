"""The safety net (contract rule 18): pure decisions about VolumeSnapshots.

Take: with `spec.storage.snapshotBeforeClear`, a clear snapshots each claim and deletes
nothing until every snapshot is readyToUse (`decide.py` asks here at the point where it
would delete claims). Expire: each snapshot is deleted once `retainFor` has passed, also
after its Pipeline is gone. Restore: `spec.storage.restoreFrom` makes the next claim
restore from a snapshot, or says why it cannot.

No I/O and no clock: the observed snapshots and `now` come in, actions and records go out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from sluice.api import v1alpha1 as api
from sluice.core import kstatus, manifests
from sluice.core.labels import (
    PIPELINE_UID_LABEL,
    SNAPSHOT_API_GROUP,
    SNAPSHOT_CLEAR_REQUEST,
    SNAPSHOT_EXPIRES_AT,
    SNAPSHOT_OF_CLAIM,
    snapshot_name,
)
from sluice.core.observed import Observed

# ---- take and expire -----------------------------------------------------------------

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """A Go duration as the CRD admits it (e.g. 72h, 1h30m, 15s)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def _parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expires_at(taken_at: str, retain_for: str) -> str:
    return _format_time(_parse_time(taken_at) + parse_duration(retain_for))


@dataclass(frozen=True)
class CreateSnapshot:
    """Create a VolumeSnapshot of a claim (a 409 on its fixed name is ours when its labels
    carry this pipeline's UID)."""

    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class DeleteSnapshot:
    """Delete an expired snapshot (precondition: its UID)."""

    name: str
    namespace: str
    uid: str


@dataclass
class Gate:
    """Where the snapshots of a clear stand: `open` once every claim has a ready snapshot
    (only then may a claim be deleted or detached)."""

    creates: list[CreateSnapshot] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # snapshot names not yet ready
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (snapshot, claim, why)
    ready: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return not self.creates and not self.waiting and not self.failed


def _by_name(snapshots: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in snapshots}


def is_ready(snapshot: dict[str, Any]) -> bool:
    return bool((snapshot.get("status") or {}).get("readyToUse"))


def snapshot_error(snapshot: dict[str, Any]) -> str | None:
    """The snapshot controller's (or csi-snapshotter's) words, while not ready."""
    if is_ready(snapshot):
        return None
    error = (snapshot.get("status") or {}).get("error") or {}
    message = error.get("message")
    return str(message) if message else None


def gate(
    pipeline: str,
    namespace: str,
    uid: str,
    claims: list[dict[str, Any]],
    snapshots: list[dict[str, Any]],
    settings: api.SnapshotBeforeClear,
    clear_request: str | None,
    now: str,
) -> Gate:
    """Before a clear touches `claims`: a snapshot of each, each taken once (fixed names)."""
    found = _by_name(snapshots)
    result = Gate()
    for claim in claims:
        claim_name = claim["metadata"]["name"]
        name = snapshot_name(pipeline, claim_name)
        snapshot = found.get(name)
        if snapshot is None:
            manifest = manifests.volume_snapshot(
                pipeline,
                namespace,
                uid,
                claim_name,
                expires_at(now, settings.retain_for),
                clear_request,
                settings.volume_snapshot_class_name,
            )
            result.creates.append(CreateSnapshot(manifest))
            result.waiting.append(name)
            continue
        labels = snapshot["metadata"].get("labels") or {}
        if labels.get(PIPELINE_UID_LABEL) != uid:
            result.failed.append(
                (
                    name,
                    claim_name,
                    "a VolumeSnapshot of that name exists and is not this "
                    "pipeline's; delete or rename it",
                )
            )
        elif is_ready(snapshot):
            result.ready.append(name)
        elif (why := snapshot_error(snapshot)) is not None:
            result.failed.append((name, claim_name, why))
        else:
            result.waiting.append(name)
    return result


def records(snapshots: list[dict[str, Any]]) -> list[api.SnapshotRecord]:
    """status.storage.snapshots: the kept snapshots, oldest first."""
    out = []
    for s in snapshots:
        meta = s["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        annotations = meta.get("annotations") or {}
        status = s.get("status") or {}
        out.append(
            api.SnapshotRecord(
                name=meta["name"],
                claim=annotations.get(SNAPSHOT_OF_CLAIM)
                or (s.get("spec") or {}).get("source", {}).get("persistentVolumeClaimName", ""),
                taken_at=meta.get("creationTimestamp"),
                expires_at=annotations.get(SNAPSHOT_EXPIRES_AT),
                ready_to_use=bool(status.get("readyToUse")),
                restore_size=status.get("restoreSize"),
                clear_request=annotations.get(SNAPSHOT_CLEAR_REQUEST),
            )
        )
    return sorted(out, key=lambda r: (r.taken_at or "", r.name))


def _expiry(snapshot: dict[str, Any]) -> datetime | None:
    stamp = (snapshot["metadata"].get("annotations") or {}).get(SNAPSHOT_EXPIRES_AT)
    if not stamp:
        return None  # not one the operator took: never deleted by it
    try:
        return _parse_time(stamp)
    except ValueError:
        return None


def expired(snapshots: list[dict[str, Any]], now: str) -> list[DeleteSnapshot]:
    """The snapshots whose expires-at has passed (and whose deletion is not yet sent)."""
    at = _parse_time(now)
    out = []
    for s in snapshots:
        meta = s["metadata"]
        when = _expiry(s)
        if when is not None and when <= at and not meta.get("deletionTimestamp"):
            out.append(DeleteSnapshot(meta["name"], meta["namespace"], meta["uid"]))
    return out


def oldest_expiry(snapshots: list[dict[str, Any]]) -> str | None:
    """The earliest expires-at among the operator's snapshots that still exist, also those
    whose deletion was sent and has not completed (for the snapshot-overdue alert)."""
    stamps = [(w, s) for s in snapshots if (w := _expiry(s)) is not None]
    if not stamps:
        return None
    return _format_time(min(w for w, _ in stamps))


def next_expiry_in(snapshots: list[dict[str, Any]], now: str) -> float | None:
    """Seconds until the next snapshot expires (for the work queue's add_after), if any."""
    at = _parse_time(now)
    future = [
        w
        for s in snapshots
        if (w := _expiry(s)) is not None and w > at and not s["metadata"].get("deletionTimestamp")
    ]
    if not future:
        return None
    return max((min(future) - at).total_seconds(), 0.0) + 1.0  # +1 s: past the stamp's second


# ---- restore -------------------------------------------------------------------------

RESTORE_SNAPSHOT_NOT_FOUND = "RestoreSnapshotNotFound"
RESTORE_SNAPSHOT_NOT_READY = kstatus.RESTORE_SNAPSHOT_NOT_READY
RESTORE_ERRORS = (RESTORE_SNAPSHOT_NOT_FOUND, RESTORE_SNAPSHOT_NOT_READY)
RESTORED_EVENT = "StorageRestored"
SNAPSHOTTED_EVENT = "StorageSnapshotted"
EXPIRED_EVENT = "SnapshotExpired"
# Seconds between looks at a snapshot that is missing or not ready, at most: the operator
# watches no VolumeSnapshot a user made, so nothing wakes it when one appears or gets ready.
RESTORE_RECHECK_MAX_DELAY = 10.0


@dataclass(frozen=True)
class RestoreSource:
    """A ready VolumeSnapshot to restore the next claim from, and the claim's size."""

    snapshot: str
    size: str


def wanted_restore(spec: api.StorageSpec, status: api.StorageState) -> str | None:
    """The snapshot the next claim is restored from: `restoreFrom`, used once per value
    (a later clear then gives empty storage, as every clear does)."""
    name = spec.restore_from
    return name if name and name != status.last_restore_from else None


def restore_to_read(observed: Observed) -> str | None:
    """The VolumeSnapshot to read for this reconcile: only when a claim is about to be
    created from it, so that a settled pipeline reads nothing."""
    status = observed.status
    if (
        observed.deleting
        or observed.spec.desired_state != api.DesiredState.RUNNING
        or status.storage.status == api.StorageStatus.CLEARING
        or any(not c["metadata"].get("deletionTimestamp") for c in observed.associated_claims)
    ):
        return None
    return wanted_restore(observed.spec.storage, status.storage)


def restore_source(
    name: str, namespace: str, snapshot: dict[str, Any] | None, size: str
) -> RestoreSource | api.PipelineError:
    """What to restore the claim from, or why no claim can be created now (never a fresh
    empty claim instead: the user asked for the data)."""
    field = f"spec.storage.restoreFrom names VolumeSnapshot {name} in namespace {namespace}"
    details: dict[str, Any] = {"restore_from": name, "namespace": namespace}
    if snapshot is None:
        return api.PipelineError(
            message=f"{field}, which does not exist; no claim is created until it does. "
            f"Create it, or change restoreFrom (kubectl get volumesnapshots -n {namespace}), "
            "or remove restoreFrom to start with empty storage.",
            error_code=RESTORE_SNAPSHOT_NOT_FOUND,
            details=details,
        )
    status = snapshot.get("status") or {}
    if status.get("readyToUse") is not True:
        why = ((status.get("error") or {}).get("message") or "").strip()
        message = f"{field}, which is not readyToUse yet"
        if why:
            details["snapshot_error"] = why
            message += f": the snapshot controller says: {why.rstrip('.')}"
        return api.PipelineError(
            message=f"{message}. No claim is created until it is ready "
            f"(kubectl describe volumesnapshot {name} -n {namespace}).",
            error_code=RESTORE_SNAPSHOT_NOT_READY,
            details=details,
        )
    return RestoreSource(snapshot=name, size=claim_size(size, status.get("restoreSize")))


def claim_size(requested: str, restore_size: str | int | None) -> str:
    """The larger of the spec's size and the snapshot's restoreSize (a provisioner refuses a
    claim smaller than the snapshot), as written where it came from."""
    if restore_size is None:
        return requested
    try:
        larger = _amount(restore_size) > _amount(requested)
    except (ValueError, ArithmeticError):
        return requested  # not a quantity Python parses: the spec's, as before
    return str(restore_size) if larger else requested


def _amount(quantity: str | int) -> Decimal:
    """A Kubernetes quantity as a number, by the client library's parser."""
    return Decimal(parse_quantity(quantity))  # type: ignore[no-untyped-call]


def restored_from(claims: list[dict[str, Any]]) -> str | None:
    """The VolumeSnapshot the pipeline's claim was restored from: its dataSourceRef, once
    the claim is Bound (restored). Read from the claim itself, so it holds also when the
    operator stopped between creating the claim and writing status."""
    for claim in claims:
        if (claim.get("status") or {}).get("phase") != "Bound":
            continue
        spec = claim.get("spec") or {}
        ref = spec.get("dataSourceRef") or spec.get("dataSource") or {}
        if ref.get("apiGroup") == SNAPSHOT_API_GROUP and ref.get("kind") == "VolumeSnapshot":
            return str(ref["name"])
    return None
