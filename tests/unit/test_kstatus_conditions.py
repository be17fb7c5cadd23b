"""kstatus's Reconciling/Stalled conditions (Flux, kpt, cli-utils), without a cluster:
consistent with Ready, and with the Argo CD health verdict."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.core import decide as d
from sluice.core import kstatus
from sluice.core.observed import Observed

from .test_decide import NOW, UID, claim, pipeline, ready_pod, settled_status, statefulset


def _conditions(plan: d.Plan) -> dict[str, api.Condition]:
    return {c.type: c for c in plan.status.conditions}


def _decide(status: dict[str, Any], pods: list[dict[str, Any]], **kw: Any) -> d.Plan:
    observed = Observed(
        pipeline(status=status, **kw),
        statefulset=statefulset(),
        service={"metadata": {"name": "orders"}},
        pods=pods,
        claims=[claim()],
    )
    return d.decide(observed, NOW)


def _verdict(conditions: dict[str, api.Condition]) -> str:
    """What kstatus concludes from the conditions (its generic rule: the first of
    Reconciling/Stalled that is True decides; else Current)."""
    for c in conditions.values():
        if c.type == "Reconciling" and c.status == "True":
            return "InProgress"
        if c.type == "Stalled" and c.status == "True":
            return "Failed"
    return "Current"


def test_settled_is_current_with_both_conditions_false() -> None:
    conditions = _conditions(_decide(settled_status(deployment="Running"), [ready_pod()]))
    assert conditions["Ready"].status == "True"
    assert (conditions["Reconciling"].status, conditions["Stalled"].status) == ("False", "False")
    assert all(c.observed_generation == 2 for c in conditions.values())
    assert _verdict(conditions) == "Current"


def test_provisioning_is_reconciling_with_the_ready_reason() -> None:
    conditions = _conditions(_decide(settled_status(deployment="Provisioning"), []))
    assert conditions["Ready"].status == "False"
    assert conditions["Reconciling"].status == "True"
    assert conditions["Reconciling"].reason == conditions["Ready"].reason == "Provisioning"
    assert conditions["Stalled"].status == "False"
    assert _verdict(conditions) == "InProgress"


def test_a_failed_pod_is_stalled_in_the_pods_words() -> None:
    failed = {
        "metadata": {"name": "orders-0", "labels": {"sluice.dev/pipeline-uid": UID}},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on memory.",
        },
    }
    conditions = _conditions(_decide(settled_status(deployment="Running"), [failed]))
    assert conditions["Ready"].status == "False"
    assert conditions["Reconciling"].status == "False"
    stalled = conditions["Stalled"]
    assert (stalled.status, stalled.reason) == ("True", kstatus.POD_FAILED)
    assert "The node was low on memory" in stalled.message
    assert _verdict(conditions) == "Failed"


def test_a_start_waiting_for_a_clear_is_reconciling_not_stalled() -> None:
    status = settled_status(storage="Clearing", clearingRequest="r1")
    observed = Observed(pipeline(status=status, clear_request="r1"), claims=[claim()])
    plan = d.decide(observed, NOW)
    assert plan.status.error is not None
    assert plan.status.error.error_code == d.CANNOT_START_WHILE_CLEARING
    assert _verdict(_conditions(plan)) == "InProgress"


def test_a_failed_reconcile_is_stalled_and_keeps_the_other_conditions() -> None:
    before = _decide(settled_status(deployment="Provisioning"), []).status.conditions
    error = api.PipelineError(
        message="Failed reconciling: 403 Forbidden; retrying with backoff.",
        error_code="ReconcileFailed",
    )
    after = {c.type: c for c in kstatus.failed_conditions(before, error, 3, "2026-11-28T11:00:00Z")}
    assert set(after) == {"Ready", "Running", "StorageCleared", "Reconciling", "Stalled"}
    assert (after["Stalled"].status, after["Stalled"].reason) == ("True", "ReconcileFailed")
    assert after["Stalled"].last_transition_time == "2026-11-28T11:00:00Z"
    assert after["Reconciling"].status == after["Ready"].status == "False"
    assert after["Ready"].last_transition_time == NOW  # it was False already
    assert after["Running"] == {c.type: c for c in before}["Running"]
    assert after["Stalled"].observed_generation == 3
    assert _verdict(after) == "Failed"
    # The next successful reconcile clears it.
    status = settled_status(deployment="Provisioning")
    status["conditions"] = [c.model_dump(by_alias=True, exclude_none=True) for c in after.values()]
    assert _verdict(_conditions(_decide(status, []))) == "InProgress"
