"""Clearing storage (contract rules 3-11 and the safety net of rule 18), for
core/decide.py: stop first, persist Clearing with each claim's volume recorded, snapshot
then delete or detach the claims, wait until every Delete volume is gone, then Cleared.
Pure."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import ClearPolicy, DeploymentStatus, StorageStatus
from sluice.core import snapshots, volumes
from sluice.core.compute import stop
from sluice.core.labels import (
    DETACHED_AT,
    DETACHED_FROM,
    DETACHED_FROM_UID,
    DETACHED_LABEL,
)
from sluice.core.observed import Observed
from sluice.core.plan import DeleteClaim, DetachClaim, Event, Plan

STORAGE_CLEAR_FAILED = "StorageClearFailed"
VOLUME_RECHECK_MAX_DELAY = (
    2.0  # seconds between looks while a volume is deleted, if nothing wakes us
)


def start_clearing(
    observed: Observed, plan: Plan, request: str | None, action_request: str | None, now: str
) -> None:
    """Stop first (rule 5); once compute is gone, persist Clearing before touching a claim.
    Both kinds of request pending at once are one clear."""
    stop(observed, plan)
    if plan.status.deployment_status != DeploymentStatus.STOPPED:
        return
    storage = plan.status.storage
    if not observed.associated_claims:
        # Seed 202 on Cleared storage: recorded as handled, nothing else (rule 7).
        if request:
            storage.last_clear_request = request
        if action_request:
            storage.last_action_clear_request = action_request
        if request or action_request:
            plan.events.append(
                Event(
                    "Normal",
                    "ClearRequestHandled",
                    f"Storage already Cleared ({request or action_request}).",
                    # Each new request is a spec change: its own metadata.generation.
                    once=f"request-{observed.generation}",
                )
            )
        return
    storage.status = StorageStatus.CLEARING
    storage.clearing_request = request
    storage.clearing_action_request = action_request
    request = request or action_request  # the name the messages give this clear
    storage.clearing_since = now
    storage.claims = [c["metadata"]["name"] for c in observed.associated_claims]
    # Persisted with Clearing, before any claim is touched: once a claim is deleted, its
    # volume can no longer be found from it (rule 6 waits for the volumes too).
    storage.clearing_volumes = [
        volumes.record(c, observed.volumes) for c in observed.associated_claims
    ]
    policy = observed.spec.storage.clear_policy
    # What the next step (the deletes) says too: one status write fewer per clear.
    plan.waiting_for = _claims_in_progress(storage.claims, policy)
    plan.events.append(
        Event(
            "Normal",
            "StorageClearing",
            f"Clearing storage ({request or 'deletion'}): claims {', '.join(storage.claims)} "
            f"will be {'deleted' if policy == ClearPolicy.DELETE else 'detached'}.",
            once=_this_clear(storage),
        )
    )


def continue_clearing(observed: Observed, plan: Plan, now: str) -> None:
    stop(observed, plan)
    if plan.status.deployment_status != DeploymentStatus.STOPPED:
        return  # cannot happen after a clean start of Clearing; a crash may leave compute
    storage = plan.status.storage
    claims = observed.associated_claims
    policy = observed.spec.storage.clear_policy
    # A claim that got bound after Clearing was written: record its volume in this step's
    # status write, and touch the claim only in the next step.
    late = volumes.unrecorded(claims, storage.clearing_volumes)
    if late:
        storage.clearing_volumes = volumes.merge(storage.clearing_volumes, late, observed.volumes)
    late_names = {c["metadata"]["name"] for c in late}
    if not _snapshots_taken(observed, plan, claims, late_names, now):
        return
    for claim in claims:
        meta = claim["metadata"]
        if meta.get("deletionTimestamp") or meta["name"] in late_names:
            continue  # deletion sent (wait until it is really gone), or recorded first
        if policy == ClearPolicy.DELETE:
            plan.actions.append(DeleteClaim(meta["name"], meta["uid"]))
        else:
            plan.actions.append(_detach(observed, claim, now))
    if claims:
        storage.claims = [c["metadata"]["name"] for c in claims]
        plan.waiting_for = _claims_in_progress(storage.claims, policy)
        return
    storage.claims = []
    detached = {c["metadata"]["name"] for c in observed.detached_claims}
    verdicts = [
        volumes.judge(
            record,
            observed.volumes.get(record.persistent_volume or ""),
            record.claim in detached,
            storage.clearing_since,
            now,
            observed.volume_events.get(record.persistent_volume or ""),
        )
        for record in storage.clearing_volumes
    ]
    if _wait_for_volumes(observed, plan, verdicts, now):
        return
    done, done_action = storage.clearing_request, storage.clearing_action_request
    once = _this_clear(storage)
    retained = [v.record for v in verdicts if v.fate == volumes.VolumeFate.RETAINED]
    storage.status = StorageStatus.CLEARED
    storage.clearing_request = None
    storage.clearing_action_request = None
    storage.clearing_since = None
    storage.clearing_volumes = []
    storage.retained_volumes = retained
    storage.claim_generation = (storage.claim_generation or 0) + 1  # the next claim: a new name
    if done:
        storage.last_clear_request = done
    if done_action:
        storage.last_action_clear_request = done_action
    done = done or done_action
    verb = "deleted" if policy == ClearPolicy.DELETE else "detached"
    gone = [v.record for v in verdicts if v.fate == volumes.VolumeFate.GONE]
    message = f"Storage cleared: claims {verb}"
    if gone and policy == ClearPolicy.DELETE:
        message += f", volumes {', '.join(r.persistent_volume or r.claim for r in gone)} deleted"
    plan.events.append(
        Event("Normal", "StorageCleared", f"{message} ({done or 'deletion'}).", once=once)
    )
    if retained:
        plan.events.append(
            Event(
                "Warning",
                "StorageRetained",
                f"Data remains in {volumes.describe(retained)}.",
                once=once,
            )
        )


def _this_clear(storage: api.StorageState) -> str:
    """A clear's identity for its Events: the claim generation it ends (each clear ends one;
    persisted, so the same when a step is retried after a crash)."""
    return f"clear-{storage.claim_generation or 0}"


def _snapshots_taken(
    observed: Observed,
    plan: Plan,
    claims: list[dict[str, Any]],
    late_names: set[str],
    now: str,
) -> bool:
    """Rule 18: with snapshotBeforeClear, no claim is touched until each has a ready
    snapshot. False while waiting (or failing): the clear stays Clearing."""
    settings = observed.spec.storage.snapshot_before_clear
    untouched = [
        c
        for c in claims
        if not c["metadata"].get("deletionTimestamp") and c["metadata"]["name"] not in late_names
    ]
    if settings is None or not untouched:
        return True
    storage = plan.status.storage
    if not observed.snapshots_available:
        plan.status.error = api.PipelineError(
            message="spec.storage.snapshotBeforeClear is set but the cluster has no "
            "VolumeSnapshot API (snapshot.storage.k8s.io/v1); nothing is deleted. Install "
            "the snapshot CRDs and controller, then restart the operator (it looks for the API "
            "when it starts), or unset snapshotBeforeClear.",
            error_code=STORAGE_CLEAR_FAILED,
            details={"claims": [c["metadata"]["name"] for c in untouched]},
        )
        plan.waiting_for = "The VolumeSnapshot API is missing."
        plan.recheck = True  # with backoff, until the API is installed
        return False
    result = snapshots.gate(
        observed.name,
        observed.namespace,
        observed.uid,
        untouched,
        observed.snapshots,
        settings,
        storage.clearing_request or storage.clearing_action_request,
        now,
    )
    plan.actions.extend(result.creates)
    if result.open:
        return True
    storage.claims = [c["metadata"]["name"] for c in claims]
    if result.failed:
        name, claim, why = result.failed[0]
        plan.status.error = api.PipelineError(
            message=f"Snapshot {name} of claim {claim} failed: {why}; nothing is deleted "
            "until it is ready.",
            error_code=STORAGE_CLEAR_FAILED,
            details={"snapshot": name, "claim": claim, "reason": why},
        )
        # csi-snapshotter retries CreateSnapshot itself with backoff; each retry updates
        # the VolumeSnapshot, whose watch event brings the next look.
        plan.recheck = True
        old = observed.status.error
        if old is None or old.message != plan.status.error.message:
            plan.events.append(Event("Warning", STORAGE_CLEAR_FAILED, plan.status.error.message))
    waiting = [n for n in result.waiting] + [f for f, _, _ in result.failed]
    plan.waiting_for = f"Snapshots {', '.join(waiting)} are being taken."
    return False


def expire_snapshots(observed: Observed, plan: Plan, now: str) -> None:
    """Status lists the kept snapshots; expired ones are deleted; come back at the next."""
    old = {r.name: r for r in observed.status.storage.snapshots}
    plan.status.storage.snapshots = snapshots.records(observed.snapshots)
    for record in plan.status.storage.snapshots:
        was = old.get(record.name)
        if record.ready_to_use and (was is None or not was.ready_to_use):
            plan.events.append(
                Event(
                    "Normal",
                    snapshots.SNAPSHOTTED_EVENT,
                    f"Snapshot {record.name} of claim {record.claim} is ready; kept until "
                    f"{record.expires_at}.",
                )
            )
    for delete in snapshots.expired(observed.snapshots, now):
        plan.actions.append(delete)
        plan.events.append(
            Event("Normal", snapshots.EXPIRED_EVENT, f"Snapshot {delete.name} expired; deleted.")
        )
    expiry = snapshots.next_expiry_in(observed.snapshots, now)
    if expiry is not None:
        plan.requeue_after = (
            expiry if plan.requeue_after is None else min(expiry, plan.requeue_after)
        )


def _wait_for_volumes(
    observed: Observed, plan: Plan, verdicts: list[volumes.Verdict], now: str
) -> bool:
    """True while a Delete volume still exists: the clear stays Clearing. A failed deletion
    becomes a StorageClearFailed error naming the volume, in the provisioner's words."""
    failed = [v for v in verdicts if v.fate == volumes.VolumeFate.FAILED]
    deleting = [v for v in verdicts if v.fate == volumes.VolumeFate.DELETING]
    if not failed and not deleting:
        return False
    plan.recheck = True
    plan.recheck_max_delay = None if failed else VOLUME_RECHECK_MAX_DELAY
    waiting = [observed.volumes[v.record.persistent_volume or ""] for v in deleting]
    plan.requeue_after = volumes.ask_provisioner_in(waiting, now)
    names = ", ".join(str(v.record.persistent_volume) for v in deleting)
    plan.waiting_for = f"Claims deleted; waiting for the provisioner to delete {names}."
    if failed:
        plan.waiting_for = None
        message = "Storage is not cleared: " + "; ".join(
            f"PersistentVolume {v.record.persistent_volume} (claim {v.record.claim}) was not "
            f"deleted: {v.why.rstrip('.')}"
            for v in failed
        )
        message += (
            ". The clear keeps retrying and completes once the volume is gone (an "
            "administrator may delete it)."
        )
        plan.status.error = api.PipelineError(
            message=message,
            error_code=STORAGE_CLEAR_FAILED,
            details={
                "volumes": [
                    {**v.record.model_dump(by_alias=True, exclude_none=True), "reason": v.why}
                    for v in failed
                ]
            },
        )
        old = observed.status.error
        if old is None or old.message != message:
            plan.events.append(Event("Warning", STORAGE_CLEAR_FAILED, message))
    return True


def _claims_in_progress(claims: list[str], policy: ClearPolicy) -> str:
    verb = "deleted" if policy == ClearPolicy.DELETE else "detached"
    return f"Claims {', '.join(claims)} are being {verb}."


def _detach(observed: Observed, claim: dict[str, Any], now: str) -> DetachClaim:
    meta = claim["metadata"]
    return DetachClaim(
        name=meta["name"],
        uid=meta["uid"],
        resource_version=meta["resourceVersion"],
        owner_references=[
            ref for ref in meta.get("ownerReferences") or [] if ref.get("uid") != observed.uid
        ],
        labels={DETACHED_LABEL: "true"},
        annotations={
            DETACHED_FROM_UID: observed.uid,
            DETACHED_FROM: f"{observed.namespace}/{observed.name}",
            DETACHED_AT: now,
        },
    )
