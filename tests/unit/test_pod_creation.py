"""A pod the API server refuses to create (Pod Security admission, a quota, a webhook): the
StatefulSet's controller says why only in a FailedCreate Event, and the pure core quotes it
in the pipeline's conditions, looking again (with backoff) while there is no pod."""

from __future__ import annotations

from typing import Any

from sluice.api.v1alpha1 import DeploymentStatus
from sluice.core import compute
from sluice.core import decide as d
from sluice.core.observed import Observed

from .test_decide import NOW, claim, pipeline, ready_pod, settled_status, statefulset

REFUSAL = (
    'create Pod orders-0 in StatefulSet orders failed error: pods "orders-0" is forbidden: '
    'violates PodSecurity "restricted:latest": runAsNonRoot != true'
)


def processed(replicas: int = 0, generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    sts = statefulset()
    sts["metadata"]["generation"] = generation
    sts["spec"]["replicas"] = 1
    sts["status"] = {"replicas": replicas}
    if observed is not None:
        sts["status"]["observedGeneration"] = observed
    return sts


def failed_create(message: str, at: str) -> dict[str, Any]:
    return {
        "reason": "FailedCreate",
        "message": message,
        "lastTimestamp": at,
        "involvedObject": {"kind": "StatefulSet", "name": "orders", "uid": "sts-uid"},
    }


def observed_with(sts: dict[str, Any], pods: list[Any], events: list[Any]) -> Observed:
    return Observed(
        pipeline(status=settled_status(deployment="Provisioning")),
        statefulset=sts,
        service={"metadata": {"name": "orders"}},
        pods=pods,
        claims=[claim()],
        statefulset_events=events,
    )


def test_only_a_statefulset_its_controller_saw_without_a_pod_cannot_create_it() -> None:
    assert compute.cannot_create_pod(processed(), [])
    assert not compute.cannot_create_pod(processed(replicas=1), [])
    assert not compute.cannot_create_pod(processed(observed=None), [])  # not seen yet
    assert not compute.cannot_create_pod(processed(generation=2, observed=1), [])
    assert not compute.cannot_create_pod(processed(), [ready_pod()])
    assert not compute.cannot_create_pod(None, [])


def test_the_newest_refusal_is_quoted_in_the_conditions_and_it_looks_again() -> None:
    events = [failed_create("an older refusal", "2026-11-28T09:00:00Z")]
    events.append(failed_create(REFUSAL, "2026-11-28T09:59:00Z"))
    plan = d.decide(observed_with(processed(), [], events), NOW)
    assert plan.status.deployment_status == DeploymentStatus.PROVISIONING
    conditions = {c.type: c for c in plan.status.conditions}
    why = f"StatefulSet orders cannot create its pod: {REFUSAL}"
    assert why in conditions["Running"].message
    assert why in conditions["Ready"].message
    assert "older" not in conditions["Ready"].message
    assert plan.recheck and plan.recheck_unwatched
    assert plan.recheck_max_delay == compute.POD_CREATION_RECHECK_MAX_DELAY


def test_once_the_pod_exists_there_is_no_refusal_and_no_looking_again() -> None:
    plan = d.decide(observed_with(processed(replicas=1), [ready_pod()], []), NOW)
    assert plan.status.deployment_status == DeploymentStatus.RUNNING
    assert all("cannot create" not in c.message for c in plan.status.conditions)
    assert not plan.recheck
