"""Decide the next actions and the status for one pipeline, from what is observed.

Pure: no I/O, no clock (`now` is passed in). The controller executes the
actions in order, then writes the status if it changed. Each call moves the
pipeline one step; the watch events caused by that step bring the next call.

Storage clearing follows the seed (Feldera's POST /clear) and contract rules 3-11:
  InUse --(request, compute gone)--> Clearing  [status written alone, with each claim's
                                                volume recorded; nothing deleted yet]
  Clearing --(claims deleted or detached, and every recorded volume whose reclaim policy
              is Delete gone)--> Cleared  [volumes kept by policy named in retainedVolumes]
A clear cannot be cancelled: once Clearing, nothing but finishing it happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import ClearPolicy, DeploymentStatus, DesiredState, StorageStatus
from sluice.core import autoscale, kstatus, manifests, resize, snapshots, volumes
from sluice.core.conditions import condition
from sluice.core.labels import (
    DETACHED_AT,
    DETACHED_FROM,
    DETACHED_FROM_UID,
    DETACHED_LABEL,
    FINALIZER,
    FORCE_STOP,
    FORCE_STOP_GRACE_SECONDS,
)
from sluice.core.observed import Observed

CANNOT_START_WHILE_CLEARING = kstatus.CANNOT_START_WHILE_CLEARING
STORAGE_CLEAR_FAILED = "StorageClearFailed"
VOLUME_RECHECK_MAX_DELAY = (
    2.0  # seconds between looks while a volume is deleted, if nothing wakes us
)


# ---- actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddFinalizer:
    finalizer: str = FINALIZER


@dataclass(frozen=True)
class RemoveFinalizer:
    finalizer: str = FINALIZER


@dataclass(frozen=True)
class Create:
    """Create an owned object (claim, Service, StatefulSet)."""

    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


@dataclass(frozen=True)
class UpdateContainer:
    """Roll the StatefulSet to a new image or resources."""

    statefulset: str
    container: dict[str, Any]


@dataclass(frozen=True)
class DeleteStatefulSet:
    """Delete the StatefulSet (background propagation), after its pod was deleted by
    DeletePod with the grace period the Pipeline asks for now: the garbage collector's own
    deletion of that pod comes second and changes nothing (a deletion only ever shortens a
    pending one's grace period, and the collector asks for the template's), and the
    StatefulSet controller never replaces a terminating pod. Not orphaning the pod also
    spares the garbage collector two writes per stop (the pod's ownerReference, the orphan
    finalizer) out of kube-controller-manager's small request budget, which its volume
    deletions share: with 100 stops at once that was the difference to its own clears."""

    name: str
    uid: str


@dataclass(frozen=True)
class DeletePod:
    """Delete a stopping pipeline's pod with the grace period the Pipeline asks for now
    (None: the pod's own). The API server only ever shortens a deletion's grace period, so
    this is safe to repeat; but a kubelet keeps the grace period of the first deletion it
    acted on (kubernetes/kubernetes#83916), so a force must come with the stop itself."""

    name: str
    uid: str
    grace_period_seconds: int | None


@dataclass(frozen=True)
class RemoveForceStop:
    """Drop the force-stop mark once the pipeline runs again: it was for one stop."""


@dataclass(frozen=True)
class DeleteClaim:
    name: str
    uid: str


@dataclass(frozen=True)
class DetachClaim:
    """Drop the pipeline's ownerReference and set the operator's detached mark, atomically."""

    name: str
    uid: str
    resource_version: str
    owner_references: list[dict[str, Any]]
    labels: dict[str, str]
    annotations: dict[str, str]


Action = (
    AddFinalizer
    | RemoveFinalizer
    | Create
    | UpdateContainer
    | DeleteStatefulSet
    | DeletePod
    | RemoveForceStop
    | DeleteClaim
    | DetachClaim
    | snapshots.CreateSnapshot
    | snapshots.DeleteSnapshot
    | resize.ResizeClaim
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: api.PipelineStatus = field(default_factory=api.PipelineStatus)
    events: list[Event] = field(default_factory=list)
    # Waiting on something no watch reports (a provisioner deleting a volume): look again
    # later, with backoff, even if no event arrives.
    recheck: bool = False
    # The longest wait between two such looks: short while a provisioner is at work, the
    # work queue's full backoff once its deletion has failed.
    recheck_max_delay: float | None = None
    # While Clearing: what the clear is waiting for, for the StorageCleared condition.
    waiting_for: str | None = None
    # Come back after this many seconds even if nothing changes (the next snapshot expiry).
    requeue_after: float | None = None
    # The recheck waits on something no watch of the operator reports at all (a user's
    # VolumeSnapshot to restore from): back off, also where PVs are watched.
    recheck_unwatched: bool = False

    @property
    def starts_clearing(self) -> bool:
        return self.status.storage.status == StorageStatus.CLEARING

    @property
    def is_settled(self) -> bool:
        return not self.actions


# ---- the decision --------------------------------------------------------------------


def decide(observed: Observed, now: str) -> Plan:
    spec, old = observed.spec, observed.status
    status = old.model_copy(deep=True)
    status.observed_generation = observed.generation
    status.error = None
    plan = Plan(status=status)

    if not observed.deleting and FINALIZER not in observed.finalizers:
        # Alone, before anything is created: no owned object may exist without it.
        return Plan(actions=[AddFinalizer()], status=old)

    first_sight = old.observed_generation is None
    if first_sight and not observed.associated_claims:
        # A new pipeline's storage is already Cleared: a request is a no-op (rule 7).
        if spec.storage.clear_request:
            status.storage.last_clear_request = spec.storage.clear_request
        if spec.storage.action_clear_request:
            status.storage.last_action_clear_request = spec.storage.action_clear_request
    request, action_request = pending_requests(spec.storage, status.storage)
    pending = bool(request or action_request)
    if not spec.storage.restore_from:
        status.storage.last_restore_from = None  # unset: set again, it restores again
    wants_running = spec.desired_state == DesiredState.RUNNING and not observed.deleting

    if status.storage.status == StorageStatus.CLEARING:
        _continue_clearing(observed, plan, now)
    elif pending or (observed.deleting and observed.associated_claims):
        _start_clearing(observed, plan, request, action_request, now)
    elif observed.deleting:
        _stop(observed, plan)
        if status.deployment_status == DeploymentStatus.STOPPED:
            plan.actions.append(RemoveFinalizer())
    elif wants_running:
        _run(observed, plan)
    else:
        _stop(observed, plan)

    # Re-read: finishing a clear above records the request, so it is no longer pending.
    pending = any(pending_requests(spec.storage, status.storage))
    clearing = status.storage.status == StorageStatus.CLEARING or pending
    if wants_running and clearing and status.error is None:
        status.error = api.PipelineError(
            message="The pipeline cannot start while its storage is being cleared; "
            "it starts once storage is Cleared.",
            error_code=CANNOT_START_WHILE_CLEARING,
            details={"storage_status": status.storage.status},
        )

    if status.storage.status != StorageStatus.CLEARING:
        claims = observed.associated_claims
        status.storage.status = StorageStatus.IN_USE if claims else StorageStatus.CLEARED
        status.storage.claims = [c["metadata"]["name"] for c in claims]
        # Read from the claim itself (its dataSourceRef, once Bound): true after a crash too.
        status.storage.restored_from = snapshots.restored_from(claims)
        if status.storage.restored_from == spec.storage.restore_from:
            status.storage.last_restore_from = status.storage.restored_from  # used: once
        if not pending and not observed.deleting:
            _grow(observed, plan)
            _autoscale(observed, plan, now)

    _expire_snapshots(observed, plan, now)
    status.conditions = _conditions(observed, status, pending, now, plan.waiting_for)
    status.conditions += _resizing_condition(observed, old, now, plan)
    status.conditions += _at_max_size_condition(observed, old, now, plan)
    plan.events.extend(_transition_events(old, status))
    return plan


def _grow(observed: Observed, plan: Plan) -> None:
    """Grow claims below spec.storage.size in place (rule 12), and say how far it got."""
    live = _live_claims(observed)
    plan.status.storage.capacity = resize.capacity(live[0]) if live else None
    for action in resize.grow(live, observed.spec.storage.size):
        plan.actions.append(action)
        plan.events.append(
            Event(
                "Normal",
                resize.RESIZING_CONDITION,
                f"Growing claim {action.name} to {action.size}.",
            )
        )


def _live_claims(observed: Observed) -> list[dict[str, Any]]:
    return [c for c in observed.associated_claims if not c["metadata"].get("deletionTimestamp")]


def _autoscale(observed: Observed, plan: Plan, now: str) -> None:
    """spec.storage.autoscaling: grow a claim whose volume is over the threshold by a step
    (an Event says why), unless spec.storage.size already grows it in this step."""
    settings = observed.spec.storage.autoscaling
    if settings is None:
        return
    growing = {a.name for a in plan.actions if isinstance(a, resize.ResizeClaim)}
    claims = [c for c in _live_claims(observed) if c["metadata"]["name"] not in growing]
    decision = autoscale.decide(settings, claims, observed.volume_usage, _resized_at(observed, now))
    plan.actions.extend(decision.grow)
    plan.events.extend(Event("Normal", autoscale.GROWN_EVENT, m) for m in decision.messages)


def _resized_at(observed: Observed, now: str) -> str | None:
    """When the last resize was seen complete: when StorageResizing turned False, or now if
    it is still True (complete now, or still under way, when autoscaling waits anyway)."""
    resizing = next(
        (c for c in observed.status.conditions if c.type == resize.RESIZING_CONDITION), None
    )
    if resizing is None:
        return None
    return now if resizing.status == "True" else resizing.last_transition_time


def _at_max_size_condition(
    observed: Observed, old: api.PipelineStatus, now: str, plan: Plan
) -> list[api.Condition]:
    """StorageAtMaxSize: True (with a Warning Event when it becomes so) while a volume over
    the autoscaling threshold cannot grow because its claim is at maxSize; False once that
    is no longer so; absent on a pipeline that never got there."""
    previous = {c.type: c for c in old.conditions}
    before = previous.get(autoscale.AT_MAX_CONDITION)
    settings = observed.spec.storage.autoscaling
    full: list[autoscale.Full] = []
    if settings is not None and plan.status.storage.status == StorageStatus.IN_USE:
        usage, resized_at = observed.volume_usage, _resized_at(observed, now)
        full = autoscale.decide(settings, _live_claims(observed), usage, resized_at).full
    if not full and before is None:
        return []
    if full:
        message = autoscale.full_message(full)
        if before is None or before.status != "True":
            plan.events.append(Event("Warning", autoscale.AT_MAX_CONDITION, message))
        status, reason = "True", autoscale.AT_MAX_REASON
    else:
        status, reason = "False", "BelowMaxSize"
        message = "Every volume is below the autoscaling threshold or can still grow."
    return [
        condition(
            autoscale.AT_MAX_CONDITION,
            status,
            reason,
            message,
            previous,
            now,
            observed.generation,
        )
    ]


def _resizing_condition(
    observed: Observed, old: api.PipelineStatus, now: str, plan: Plan
) -> list[api.Condition]:
    """StorageResizing: True while a claim's volume is below its request (with the resizer's
    words when it failed, and a Warning Event once per failure); False once it has grown;
    absent on a pipeline that never grew."""
    previous = {c.type: c for c in old.conditions}
    before = previous.get(resize.RESIZING_CONDITION)
    live = _live_claims(observed)
    if plan.status.storage.status != StorageStatus.IN_USE:
        return []
    under_way = resize.pending(live)
    if under_way:
        reason = under_way[0].reason
        message = " ".join(r.message for r in under_way)
        failed = reason in resize.RESIZE_ERRORS
        if failed and (before is None or before.message != message):
            plan.events.append(Event("Warning", resize.RESIZE_FAILED_EVENT, message))
        return [
            condition(
                resize.RESIZING_CONDITION,
                "True",
                reason,
                message,
                previous,
                now,
                observed.generation,
            )
        ]
    growing = [a for a in plan.actions if isinstance(a, resize.ResizeClaim)]
    if before is None and not growing:
        return []
    if growing:
        return [
            condition(
                resize.RESIZING_CONDITION,
                "True",
                "Resizing",
                "Growing " + ", ".join(f"claim {a.name} to {a.size}" for a in growing) + ".",
                previous,
                now,
                observed.generation,
            )
        ]
    message = f"Claims have the size asked for (capacity {plan.status.storage.capacity})."
    return [
        condition(
            resize.RESIZING_CONDITION,
            "False",
            "Resized",
            message,
            previous,
            now,
            observed.generation,
        )
    ]


def pending_requests(
    spec: api.StorageSpec, storage: api.StorageState
) -> tuple[str | None, str | None]:
    """The clear requests not handled yet: clearRequest (git, kubectl) and
    actionClearRequest (Argo CD's action on the live object), each against its own record,
    so a sync that puts git's older clearRequest back next to the action's is no request."""
    request = spec.clear_request or None
    action = spec.action_clear_request or None
    return (
        request if request != storage.last_clear_request else None,
        action if action != storage.last_action_clear_request else None,
    )


def _compute_present(observed: Observed) -> bool:
    return observed.owned_statefulset is not None or bool(observed.owned_pods)


def _stop(observed: Observed, plan: Plan) -> None:
    """Remove compute, giving each pod its grace period to checkpoint and exit (rule 21):
    stopped means the pods are gone, so a claim is never cleared under a running process.
    The pod is deleted before its StatefulSet (see DeleteStatefulSet)."""
    grace = stop_grace_period(observed)
    for pod in observed.owned_pods:
        meta = pod["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        deleting = bool(meta.get("deletionTimestamp"))
        if not deleting or (grace is not None and (current or 0) > grace):
            plan.actions.append(DeletePod(meta["name"], meta["uid"], grace))
    sts = observed.owned_statefulset
    if sts is not None and not sts["metadata"].get("deletionTimestamp"):
        plan.actions.append(DeleteStatefulSet(sts["metadata"]["name"], sts["metadata"]["uid"]))
    plan.status.deployment_status = (
        DeploymentStatus.STOPPING if _compute_present(observed) else DeploymentStatus.STOPPED
    )


def stop_grace_period(observed: Observed) -> int | None:
    """The grace period a stop gives the pipeline's pod: 1 s when forced, else the Pipeline's
    terminationGracePeriodSeconds; None leaves the pod's own (its template's)."""
    annotations = observed.pipeline["metadata"].get("annotations") or {}
    if FORCE_STOP in annotations:
        return FORCE_STOP_GRACE_SECONDS
    return observed.spec.termination_grace_period_seconds


def _start_clearing(
    observed: Observed, plan: Plan, request: str | None, action_request: str | None, now: str
) -> None:
    """Stop first (rule 5); once compute is gone, persist Clearing before touching a claim.
    Both kinds of request pending at once are one clear."""
    _stop(observed, plan)
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
    plan.events.append(
        Event(
            "Normal",
            "StorageClearing",
            f"Clearing storage ({request or 'deletion'}): claims {', '.join(storage.claims)} "
            f"will be {'deleted' if policy == ClearPolicy.DELETE else 'detached'}.",
        )
    )


def _continue_clearing(observed: Observed, plan: Plan, now: str) -> None:
    _stop(observed, plan)
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
        plan.waiting_for = (
            f"Claims {', '.join(storage.claims)} are being "
            f"{'deleted' if policy == ClearPolicy.DELETE else 'detached'}."
        )
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
    if _wait_for_volumes(observed, plan, verdicts):
        return
    done, done_action = storage.clearing_request, storage.clearing_action_request
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
    plan.events.append(Event("Normal", "StorageCleared", f"{message} ({done or 'deletion'})."))
    if retained:
        plan.events.append(
            Event("Warning", "StorageRetained", f"Data remains in {volumes.describe(retained)}.")
        )


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


def _expire_snapshots(observed: Observed, plan: Plan, now: str) -> None:
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
    plan.requeue_after = snapshots.next_expiry_in(observed.snapshots, now)


def _wait_for_volumes(observed: Observed, plan: Plan, verdicts: list[volumes.Verdict]) -> bool:
    """True while a Delete volume still exists: the clear stays Clearing. A failed deletion
    becomes a StorageClearFailed error naming the volume, in the provisioner's words."""
    failed = [v for v in verdicts if v.fate == volumes.VolumeFate.FAILED]
    deleting = [v for v in verdicts if v.fate == volumes.VolumeFate.DELETING]
    if not failed and not deleting:
        return False
    plan.recheck = True
    plan.recheck_max_delay = None if failed else VOLUME_RECHECK_MAX_DELAY
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


def _run(observed: Observed, plan: Plan) -> None:
    name, uid, spec = observed.name, observed.uid, observed.spec
    sts = observed.owned_statefulset
    if sts is not None and sts["metadata"].get("deletionTimestamp"):
        plan.status.deployment_status = DeploymentStatus.STOPPING  # a stop is finishing
        return
    if FORCE_STOP in (observed.pipeline["metadata"].get("annotations") or {}):
        plan.actions.append(RemoveForceStop())
    claims = [c for c in observed.associated_claims if not c["metadata"].get("deletionTimestamp")]
    if not claims:
        plan.status.deployment_status = DeploymentStatus.PROVISIONING
        restore = None
        if snapshots.wanted_restore(spec.storage, plan.status.storage):
            restore = _restore_source(observed, plan)
            if restore is None:
                return  # why is in status.error; never a fresh empty claim instead
        generation = plan.status.storage.claim_generation or 0
        fresh = manifests.persistent_volume_claim(name, uid, spec.storage, generation, restore)
        plan.actions.append(Create(fresh))
        return
    if observed.service is None:
        plan.actions.append(Create(manifests.headless_service(name, uid)))
    if sts is None:
        claim = claims[0]["metadata"]["name"]
        plan.actions.append(Create(manifests.stateful_set(name, uid, spec, claim)))
        plan.status.deployment_status = DeploymentStatus.PROVISIONING
        return
    wanted = manifests.container(spec)
    current = manifests.running_container(sts)
    # The API server stores an unset `resources` as {}: the same as none, not a change.
    if any((current.get(k) or None) != (wanted.get(k) or None) for k in ("image", "resources")):
        plan.actions.append(UpdateContainer(sts["metadata"]["name"], wanted))
    plan.status.deployment_status = _deployment_status(observed.owned_pods)


def _restore_source(observed: Observed, plan: Plan) -> snapshots.RestoreSource | None:
    """The ready snapshot the new claim is restored from; else None, with status.error
    saying why (rule 18) and a Warning Event once per distinct reason."""
    storage = observed.spec.storage
    found = snapshots.restore_source(
        str(storage.restore_from), observed.namespace, observed.restore_source, str(storage.size)
    )
    if isinstance(found, snapshots.RestoreSource):
        return found
    plan.status.error = found
    # The operator watches no VolumeSnapshot a user made: nothing would wake it when this
    # one appears or becomes ready, so it looks again, with backoff.
    plan.recheck = True
    plan.recheck_max_delay = snapshots.RESTORE_RECHECK_MAX_DELAY
    plan.recheck_unwatched = True
    old = observed.status.error
    if old is None or old.message != found.message:
        plan.events.append(Event("Warning", found.error_code, found.message))
    return None


def _deployment_status(pods: list[dict[str, Any]]) -> DeploymentStatus:
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if any(p.get("status", {}).get("phase") == "Failed" for p in live):
        return DeploymentStatus.FAILED
    if any(_ready(p) for p in live):
        return DeploymentStatus.RUNNING
    return DeploymentStatus.PROVISIONING


def pod_problem(pods: list[dict[str, Any]]) -> str | None:
    """Why the pipeline's pod is not running, in the scheduler's or kubelet's words, so that
    `kubectl describe pipeline` answers "why is it still Provisioning?"."""
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        if status.get("phase") == "Failed":
            why = status.get("message") or status.get("reason") or "no reason given"
            return f"Pod {meta['name']} failed: {why.rstrip('.')}."
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("message") or cond.get("reason")
                return f"Pod {meta['name']} cannot be scheduled: {why}"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                why = ": ".join(filter(None, (waiting["reason"], waiting.get("message"))))
                return f"Pod {meta['name']} container {container.get('name')}: {why}"
    return None


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


# ---- conditions and events -----------------------------------------------------------


def _conditions(
    observed: Observed,
    status: api.PipelineStatus,
    pending: bool,
    now: str,
    waiting_for: str | None = None,
) -> list[api.Condition]:
    deployment, storage = status.deployment_status, status.storage.status
    desired = observed.spec.desired_state
    clearing = storage == StorageStatus.CLEARING or pending
    settled = not clearing and deployment == (
        DeploymentStatus.RUNNING if desired == DesiredState.RUNNING else DeploymentStatus.STOPPED
    )
    failure = (
        status.error if status.error and status.error.error_code == STORAGE_CLEAR_FAILED else None
    )
    if storage == StorageStatus.CLEARING and failure is not None:
        storage_reason, storage_message = failure.error_code, failure.message
    elif storage == StorageStatus.CLEARING:
        storage_reason = "Clearing"
        storage_message = waiting_for or "Claims are being deleted or detached."
    elif pending:
        storage_reason = "WaitingForStop"
        storage_message = "A clear was requested; waiting until the pipeline is fully stopped."
    elif storage == StorageStatus.IN_USE:
        storage_reason, storage_message = "InUse", "Claims hold the pipeline's state."
    elif status.storage.retained_volumes:
        storage_reason = "ClearedWithRetainedData"
        storage_message = (
            "No storage is associated; data of the last clear remains in "
            f"{volumes.describe(status.storage.retained_volumes)}."
        )
    else:
        storage_reason, storage_message = "Cleared", "No storage is associated."
    if settled:
        ready_reason, ready_message = str(deployment), f"Pipeline is {deployment}, as desired."
    elif clearing:
        ready_reason, ready_message = storage_reason, storage_message
    else:
        ready_reason, ready_message = (
            str(deployment),
            f"Pipeline is {deployment}; desired {desired}.",
        )
    running_message = f"Deployment status is {deployment}."
    restore = status.error
    # No claim can be created from the snapshot: say why where kubectl wait looks.
    if restore is not None and restore.error_code in snapshots.RESTORE_ERRORS:
        ready_reason = restore.error_code
        ready_message = f"{ready_message} {restore.message}"
        running_message = f"{running_message} {restore.message}"
    problem = (
        pod_problem(observed.owned_pods)
        if deployment in (DeploymentStatus.PROVISIONING, DeploymentStatus.FAILED)
        else None
    )
    if problem:
        problem = problem[:1024]  # other components' words: keep well within the schema's limit
        running_message = f"{running_message} {problem}"
        if not settled and not clearing:
            ready_message = f"{ready_message} {problem}"
    wanted = [
        ("Ready", settled, ready_reason, ready_message),
        (
            "Running",
            deployment == DeploymentStatus.RUNNING,
            str(deployment),
            running_message,
        ),
        ("StorageCleared", storage == StorageStatus.CLEARED, storage_reason, storage_message),
    ]
    # kstatus's Reconciling/Stalled (Flux, kpt), consistent with Ready and Argo CD's health.
    wanted += kstatus.reconciling_and_stalled(status, settled, ready_reason, ready_message, problem)
    previous = {c.type: c for c in status.conditions}
    return [
        condition(
            type_, "True" if ok else "False", reason, message, previous, now, observed.generation
        )
        for type_, ok, reason, message in wanted
    ]


def _transition_events(old: api.PipelineStatus, new: api.PipelineStatus) -> list[Event]:
    events = []
    if old.deployment_status != new.deployment_status:
        events.append(
            Event(
                "Normal",
                f"Deployment{new.deployment_status}",
                f"Deployment status {old.deployment_status} -> {new.deployment_status}.",
            )
        )
    restored = new.storage.restored_from
    if restored and restored != old.storage.restored_from:
        events.append(
            Event(
                "Normal",
                snapshots.RESTORED_EVENT,
                f"Claim {', '.join(new.storage.claims)} restored from VolumeSnapshot {restored}.",
            )
        )
    if old.storage.status != new.storage.status and new.storage.status == StorageStatus.IN_USE:
        events.append(
            Event(
                "Normal",
                f"Storage{new.storage.status}",
                f"Storage status {old.storage.status} -> {new.storage.status}.",
            )
        )
    return events
