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

This module chooses what a step does and writes the conditions and Events; the steps
themselves are in compute.py (run, stop), clearing.py (a clear, the safety net's snapshots)
and growth.py (storage that grows); plan.py names the actions.
"""

from __future__ import annotations

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import DeploymentStatus, DesiredState, StorageStatus
from sluice.core import clearing, compute, growth, kstatus, snapshots, volumes
from sluice.core.clearing import STORAGE_CLEAR_FAILED, VOLUME_RECHECK_MAX_DELAY
from sluice.core.compute import pod_problem, stop_grace_period
from sluice.core.conditions import condition
from sluice.core.labels import FINALIZER
from sluice.core.observed import Observed

# The plan's vocabulary lives in core/plan.py; named here too, as callers spell d.DeleteClaim.
from sluice.core.plan import (
    Action,
    AddFinalizer,
    Create,
    DeleteClaim,
    DeletePod,
    DeleteStatefulSet,
    DetachClaim,
    Event,
    Plan,
    RemoveFinalizer,
    RemoveForceStop,
    UpdateContainer,
)

CANNOT_START_WHILE_CLEARING = kstatus.CANNOT_START_WHILE_CLEARING


__all__ = [
    "CANNOT_START_WHILE_CLEARING",
    "STORAGE_CLEAR_FAILED",
    "VOLUME_RECHECK_MAX_DELAY",
    "Action",
    "AddFinalizer",
    "Create",
    "DeleteClaim",
    "DeletePod",
    "DeleteStatefulSet",
    "DetachClaim",
    "Event",
    "Plan",
    "RemoveFinalizer",
    "RemoveForceStop",
    "UpdateContainer",
    "decide",
    "pending_requests",
    "pod_problem",
    "stop_grace_period",
]


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
        clearing.continue_clearing(observed, plan, now)
    elif pending or (observed.deleting and observed.associated_claims):
        clearing.start_clearing(observed, plan, request, action_request, now)
    elif observed.deleting:
        compute.stop(observed, plan)
        if status.deployment_status == DeploymentStatus.STOPPED:
            plan.actions.append(RemoveFinalizer())
    elif wants_running:
        compute.run(observed, plan)
    else:
        compute.stop(observed, plan)

    # Re-read: finishing a clear above records the request, so it is no longer pending.
    pending = any(pending_requests(spec.storage, status.storage))
    being_cleared = status.storage.status == StorageStatus.CLEARING or pending
    if wants_running and being_cleared and status.error is None:
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
            growth.grow(observed, plan)
            growth.autoscale_claims(observed, plan, now)

    clearing.expire_snapshots(observed, plan, now)
    status.conditions = _conditions(observed, status, pending, now, plan.waiting_for)
    status.conditions += growth.resizing_condition(observed, old, now, plan)
    status.conditions += growth.at_max_size_condition(observed, old, now, plan)
    plan.events.extend(_transition_events(old, status))
    return plan


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
    being_cleared = storage == StorageStatus.CLEARING or pending
    settled = not being_cleared and deployment == (
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
    elif being_cleared:
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
        pod_problem(observed.owned_pods) or compute.statefulset_problem(observed)
        if deployment in (DeploymentStatus.PROVISIONING, DeploymentStatus.FAILED)
        else None
    )
    if problem:
        problem = problem[:1024]  # other components' words: keep well within the schema's limit
        running_message = f"{running_message} {problem}"
        if not settled and not being_cleared:
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
