"""The volumes behind a pipeline's claims: what to record before a clear, and when the
data is really gone.

A deleted claim is not deleted data: the PersistentVolume bound to it is deleted by its
provisioner only if its reclaim policy is Delete, and only afterwards is the PV object
removed. So a clear records each claim's volume before deleting anything, and counts as
done only when every such volume is gone or kept on purpose (Retain, or a detached claim).
This module is pure: plain JSON objects in, verdicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sluice.api import v1alpha1 as api

# How long a Delete volume may outlive its claim before the wait counts as a failure that
# a person should look at (provisioners normally take seconds). The clear keeps waiting.
VOLUME_DELETE_DEADLINE_SECONDS = 300.0
# A CSI provisioner (kubernetes-csi external-provisioner) whose DeleteVolume fails leaves
# the PV Released, retries, and says why only in a Warning Event with this reason on the PV.
FAILED_DELETE_REASON = "VolumeFailedDelete"
# Where Events about cluster-scoped objects (PVs) are recorded.
CLUSTER_EVENTS_NAMESPACE = "default"
# The provisioner is asked why (its Events on the PV read, one LIST) only about a volume it
# has left Released this long: a deletion normally takes about a second, and asking on every
# look was one LIST per volume per look, hundreds with 100 clears at once.
ASK_PROVISIONER_AFTER_SECONDS = 5.0


class VolumeFate(StrEnum):
    GONE = "Gone"  # the data is deleted (the PV object is gone, or was recycled)
    RETAINED = "Retained"  # kept on purpose: reclaim policy Retain, or a detached claim
    DELETING = "Deleting"  # the provisioner has not finished yet
    FAILED = "Failed"  # the provisioner failed, or took longer than the deadline


@dataclass(frozen=True)
class Verdict:
    record: api.VolumeRecord
    fate: VolumeFate
    why: str = ""  # for FAILED: the PV's own words, or how long it has been waiting


def bound_volume(claim: dict[str, Any]) -> str | None:
    name = (claim.get("spec") or {}).get("volumeName")
    return str(name) if name else None


def record(claim: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> api.VolumeRecord:
    """What to remember about a claim's volume before the claim is deleted or detached."""
    pv_name = bound_volume(claim)
    pv = volumes.get(pv_name) if pv_name else None
    pv_spec = (pv or {}).get("spec") or {}
    return api.VolumeRecord(
        persistent_volume=pv_name,
        claim=str(claim["metadata"]["name"]),
        reclaim_policy=pv_spec.get("persistentVolumeReclaimPolicy"),
        storage_class_name=pv_spec.get("storageClassName")
        or (claim.get("spec") or {}).get("storageClassName"),
    )


def unrecorded(
    claims: list[dict[str, Any]], records: list[api.VolumeRecord]
) -> list[dict[str, Any]]:
    """Claims whose bound volume is not yet recorded (bound after Clearing was written, or a
    clear begun by an older operator): record first, delete after, so a crash in between
    cannot lose the volume's name. An unbound claim has no volume to lose."""
    known = {(r.claim, r.persistent_volume) for r in records}
    return [
        c
        for c in claims
        if bound_volume(c) and (c["metadata"]["name"], bound_volume(c)) not in known
    ]


def merge(
    records: list[api.VolumeRecord], claims: list[dict[str, Any]], volumes: dict[str, Any]
) -> list[api.VolumeRecord]:
    """Records updated with the claims' current bindings (one record per claim)."""
    fresh = {c["metadata"]["name"]: record(c, volumes) for c in claims}
    kept = [r for r in records if r.claim not in fresh]
    return [*kept, *fresh.values()]


def judge(
    rec: api.VolumeRecord,
    pv: dict[str, Any] | None,
    detached: bool,
    clearing_since: str | None,
    now: str,
    pv_events: list[dict[str, Any]] | None = None,
) -> Verdict:
    """The fate of one recorded volume once its claim is gone (or detached). `pv_events`:
    the Events about the PV (read only once it has waited a while for its deletion,
    `provisioner_to_ask`)."""
    if detached:
        return Verdict(rec, VolumeFate.RETAINED)
    if rec.persistent_volume is None or pv is None or not _still_ours(pv, rec):
        return Verdict(rec, VolumeFate.GONE)
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    policy = spec.get("persistentVolumeReclaimPolicy") or rec.reclaim_policy
    rec = rec.model_copy(update={"reclaim_policy": policy})
    phase = status.get("phase")
    if policy == "Retain":
        return Verdict(rec, VolumeFate.RETAINED)
    if policy == "Recycle" and phase == "Available":
        return Verdict(rec, VolumeFate.GONE)  # scrubbed and offered again: the data is gone
    if phase == "Failed":
        why = status.get("message") or status.get("reason") or "no reason given"
        return Verdict(rec, VolumeFate.FAILED, f"phase Failed: {why}")
    refused = failed_deletion(pv_events or [], clearing_since)
    if refused:
        return Verdict(rec, VolumeFate.FAILED, f"{FAILED_DELETE_REASON}: {refused}")
    waited = _seconds_between(clearing_since, now)
    if waited is not None and waited > VOLUME_DELETE_DEADLINE_SECONDS:
        return Verdict(
            rec,
            VolumeFate.FAILED,
            f"still {phase or 'present'} {int(waited)}s after the clear began "
            f"(reclaim policy {policy})",
        )
    return Verdict(rec, VolumeFate.DELETING)


def awaits_deletion(pv: dict[str, Any]) -> bool:
    """A Released Delete volume: its provisioner is deleting it, or failing to."""
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    return (
        spec.get("persistentVolumeReclaimPolicy") == "Delete" and status.get("phase") == "Released"
    )


def _released_for(pv: dict[str, Any], now: str) -> float | None:
    """Seconds since the volume turned Released (its lastPhaseTransitionTime); None if the
    API server does not say."""
    return _seconds_between((pv.get("status") or {}).get("lastPhaseTransitionTime"), now)


def provisioner_to_ask(pv: dict[str, Any], now: str) -> bool:
    """Whether to read the provisioner's Events about this volume: Released for
    ASK_PROVISIONER_AFTER_SECONDS already, or since when is unknown."""
    if not awaits_deletion(pv):
        return False
    waited = _released_for(pv, now)
    return waited is None or waited >= ASK_PROVISIONER_AFTER_SECONDS


def ask_provisioner_in(pvs: list[dict[str, Any]], now: str) -> float | None:
    """Seconds until the first of these volumes is to be asked about (provisioner_to_ask);
    None if none is waiting to be. The clear looks again then: a failing provisioner changes
    nothing on the PV that a watch would bring."""
    waits = [
        ASK_PROVISIONER_AFTER_SECONDS - waited
        for pv in pvs
        if awaits_deletion(pv)
        and (waited := _released_for(pv, now)) is not None
        and waited < ASK_PROVISIONER_AFTER_SECONDS
    ]
    return max(0.0, min(waits)) if waits else None


def failed_deletion(events: list[dict[str, Any]], clearing_since: str | None) -> str | None:
    """The provisioner's words for its latest failed deletion of the volume during this
    clear (a VolumeFailedDelete Event last seen since the clear began), else None."""
    latest: tuple[datetime, str] | None = None
    for event in events:
        if event.get("reason") != FAILED_DELETE_REASON:
            continue
        stamp = event.get("lastTimestamp") or event.get("eventTime")
        try:
            seen = _parse(str(stamp))
            began = _parse(clearing_since) if clearing_since else None
        except ValueError:
            continue
        if began is not None and seen < began.replace(microsecond=0):
            continue  # an earlier clear's (or an earlier claim's) failure
        if latest is None or seen >= latest[0]:
            latest = (seen, str(event.get("message") or "no message"))
    return latest[1] if latest else None


def _still_ours(pv: dict[str, Any], rec: api.VolumeRecord) -> bool:
    """False when the PV object now holds some other claim: the name was reused."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    return not ref.get("name") or ref.get("name") == rec.claim


def _seconds_between(start: str | None, end: str) -> float | None:
    if not start:
        return None
    try:
        return (_parse(end) - _parse(start)).total_seconds()
    except ValueError:
        return None


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def describe(records: list[api.VolumeRecord]) -> str:
    """`PersistentVolume pvc-1 (claim orders-storage-x, reclaim policy Retain)`, joined."""
    parts = []
    for r in records:
        where = (
            f"PersistentVolume {r.persistent_volume} (claim {r.claim}"
            if r.persistent_volume
            else f"claim {r.claim} (never bound"
        )
        extra = f", reclaim policy {r.reclaim_policy}" if r.reclaim_policy else ""
        parts.append(f"{where}{extra})")
    return "; ".join(parts)


def volume_names_to_observe(pipeline: dict[str, Any], claims: list[dict[str, Any]]) -> list[str]:
    """The PVs a reconcile must read: those bound to the pipeline's claims and those
    recorded by a clear in progress. Only while a clear may run (a request is pending, the
    pipeline is being deleted, or storage is Clearing): a settled pipeline reads no PV."""
    meta, spec = pipeline["metadata"], pipeline.get("spec") or {}
    storage_status = (pipeline.get("status") or {}).get("storage") or {}
    storage_spec = spec.get("storage") or {}
    request = storage_spec.get("clearRequest")
    action = storage_spec.get("actionClearRequest")
    may_clear = (
        bool(meta.get("deletionTimestamp"))
        or storage_status.get("status") == api.StorageStatus.CLEARING
        or (bool(request) and request != storage_status.get("lastClearRequest"))
        or (bool(action) and action != storage_status.get("lastActionClearRequest"))
    )
    if not may_clear:
        return []
    names = {n for c in claims if (n := bound_volume(c))}
    names |= {
        str(r["persistentVolume"])
        for r in storage_status.get("clearingVolumes") or []
        if r.get("persistentVolume")
    }
    return sorted(names)
