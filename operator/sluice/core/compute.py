"""The pipeline's compute, for core/decide.py: run it (StatefulSet, Service, claim, a
restore's source), stop it (its pod with the grace period the Pipeline asks for), and read
its deployment status from its pods. Pure."""

from __future__ import annotations

from typing import Any

from sluice.api.v1alpha1 import DeploymentStatus
from sluice.core import manifests, snapshots
from sluice.core.labels import (
    FORCE_STOP,
    FORCE_STOP_GRACE_SECONDS,
)
from sluice.core.observed import Observed
from sluice.core.plan import (
    Create,
    DeletePod,
    DeleteStatefulSet,
    Event,
    Plan,
    RemoveForceStop,
    UpdateContainer,
)


def compute_present(observed: Observed) -> bool:
    return observed.owned_statefulset is not None or bool(observed.owned_pods)


def stop(observed: Observed, plan: Plan) -> None:
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
        DeploymentStatus.STOPPING if compute_present(observed) else DeploymentStatus.STOPPED
    )


def stop_grace_period(observed: Observed) -> int | None:
    """The grace period a stop gives the pipeline's pod: 1 s when forced, else the Pipeline's
    terminationGracePeriodSeconds; None leaves the pod's own (its template's)."""
    annotations = observed.pipeline["metadata"].get("annotations") or {}
    if FORCE_STOP in annotations:
        return FORCE_STOP_GRACE_SECONDS
    return observed.spec.termination_grace_period_seconds


FAILED_CREATE = "FailedCreate"  # the StatefulSet controller's Event reason
POD_CREATION_RECHECK_MAX_DELAY = 15.0  # seconds between looks for why a pod is not created


def run(observed: Observed, plan: Plan) -> None:
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
    if cannot_create_pod(sts, observed.owned_pods):
        # Its controller retries with backoff and says why only in Events, which no watch
        # of ours brings: look again, backing off.
        plan.recheck, plan.recheck_unwatched = True, True
        plan.recheck_max_delay = POD_CREATION_RECHECK_MAX_DELAY


def cannot_create_pod(sts: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """The StatefulSet's controller has acted on its spec and still has no pod: creating it
    failed (it says why in a FailedCreate Event)."""
    if sts is None or any(not p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    status, spec = sts.get("status") or {}, sts.get("spec") or {}
    seen = int(status.get("observedGeneration") or 0) >= int(sts["metadata"].get("generation") or 1)
    return seen and not status.get("replicas") and int(spec.get("replicas", 1)) > 0


def statefulset_problem(observed: Observed) -> str | None:
    """Why the StatefulSet has no pod, in the API server's words via its controller's newest
    FailedCreate Event (e.g. `pods "orders-0" is forbidden: violates PodSecurity ...`)."""
    if not observed.statefulset_events:
        return None
    newest = max(
        observed.statefulset_events,
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
    )
    return f"StatefulSet {observed.name} cannot create its pod: {newest.get('message', '')}"


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
