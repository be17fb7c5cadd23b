"""Feldera's stop, honoured (rule 21): the pod gets the grace period its Pipeline asks for, a
forced stop 1 second, and the force-stop mark is for one stop only."""

from __future__ import annotations

from typing import Any

import pytest
from sluice.api.v1alpha1 import DeploymentStatus, PipelineSpec
from sluice.core import decide as d
from sluice.core.labels import FORCE_STOP, FORCE_STOP_GRACE_SECONDS
from sluice.core.manifests import stateful_set
from sluice.core.observed import Observed
from sluice.restapi import decide as rest

from unit.test_decide import NOW, UID, claim, pipeline, settled_status, statefulset


def pod(deleting_with: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "orders-0",
        "uid": "pod-uid",
        "labels": {"sluice.dev/pipeline-uid": UID},
    }
    if deleting_with is not None:
        meta["deletionTimestamp"] = NOW
        meta["deletionGracePeriodSeconds"] = deleting_with
    return {"metadata": meta, "status": {"phase": "Running"}}


def stopping(grace: int | None = None, force: bool = False, **observed: Any) -> Observed:
    obj = pipeline(desired="Stopped", status=settled_status(deployment="Running"))
    if grace is not None:
        obj["spec"]["terminationGracePeriodSeconds"] = grace
    if force:
        obj["metadata"]["annotations"] = {FORCE_STOP: "true"}
    return Observed(obj, claims=[claim()], **observed)


def pod_deletions(plan: d.Plan) -> list[d.DeletePod]:
    return [a for a in plan.actions if isinstance(a, d.DeletePod)]


def test_the_pod_template_carries_the_grace_period_only_when_set() -> None:
    spec = PipelineSpec.model_validate({"image": "img:1", "storage": {"size": "1Gi"}})
    template = stateful_set("orders", UID, spec, "c")["spec"]["template"]["spec"]
    assert "terminationGracePeriodSeconds" not in template  # Kubernetes' 30 s
    spec = spec.model_copy(update={"termination_grace_period_seconds": 120})
    template = stateful_set("orders", UID, spec, "c")["spec"]["template"]["spec"]
    assert template["terminationGracePeriodSeconds"] == 120


def test_a_stop_deletes_the_pod_with_the_grace_period_the_pipeline_asks_for_now() -> None:
    plan = d.decide(stopping(grace=90, statefulset=statefulset(), pods=[pod()]), NOW)
    assert pod_deletions(plan) == [d.DeletePod("orders-0", "pod-uid", 90)]
    assert plan.status.deployment_status == DeploymentStatus.STOPPING


def test_without_a_grace_period_the_pods_own_applies() -> None:
    plan = d.decide(stopping(statefulset=statefulset(), pods=[pod()]), NOW)
    assert [type(a).__name__ for a in plan.actions] == ["DeletePod", "DeleteStatefulSet"]
    assert pod_deletions(plan) == [d.DeletePod("orders-0", "pod-uid", None)]
    # Deleting already, with its own grace period: nothing to shorten it to.
    assert pod_deletions(d.decide(stopping(pods=[pod(deleting_with=30)]), NOW)) == []


def test_a_terminating_pod_is_not_deleted_again_unless_the_grace_period_shrinks() -> None:
    assert pod_deletions(d.decide(stopping(grace=90, pods=[pod(deleting_with=90)]), NOW)) == []
    assert pod_deletions(d.decide(stopping(grace=90, pods=[pod(deleting_with=30)]), NOW)) == []
    shorter = d.decide(stopping(grace=10, pods=[pod(deleting_with=90)]), NOW)
    assert pod_deletions(shorter) == [d.DeletePod("orders-0", "pod-uid", 10)]


def test_a_forced_stop_gives_one_second_also_to_a_stop_under_way() -> None:
    plan = d.decide(stopping(grace=600, force=True, pods=[pod(deleting_with=600)]), NOW)
    assert pod_deletions(plan) == [d.DeletePod("orders-0", "pod-uid", FORCE_STOP_GRACE_SECONDS)]
    assert FORCE_STOP_GRACE_SECONDS >= 1  # 0 would drop the pod before its process exits


def test_stopped_means_the_pod_is_gone_and_only_then_storage_is_cleared() -> None:
    obj = pipeline(
        desired="Stopped", clear_request="r1", status=settled_status(deployment="Running")
    )
    obj["spec"]["terminationGracePeriodSeconds"] = 60
    waiting = d.decide(Observed(obj, claims=[claim()], pods=[pod(deleting_with=60)]), NOW)
    assert not any(isinstance(a, d.DeleteClaim) for a in waiting.actions)
    assert waiting.status.deployment_status == DeploymentStatus.STOPPING
    gone = d.decide(Observed(obj, claims=[claim()]), NOW)
    assert gone.status.storage.status == "Clearing"


def test_the_force_mark_is_dropped_when_the_pipeline_runs_again() -> None:
    obj = pipeline(desired="Running", status=settled_status())
    obj["metadata"]["annotations"] = {FORCE_STOP: "true"}
    plan = d.decide(Observed(obj, claims=[claim()]), NOW)
    assert d.RemoveForceStop() in plan.actions
    del obj["metadata"]["annotations"]
    assert d.RemoveForceStop() not in d.decide(Observed(obj, claims=[claim()]), NOW).actions


def rest_pipeline(desired: str, deployment: str, marked: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "orders", "uid": UID, "resourceVersion": "7"}
    if marked:
        meta["annotations"] = {FORCE_STOP: "true"}
    return {
        "metadata": meta,
        "spec": {"desiredState": desired, "image": "img:1", "storage": {"size": "1Gi"}},
        "status": {"deploymentStatus": deployment, "storage": {"status": "InUse"}},
    }


@pytest.mark.parametrize(
    ("desired", "deployment", "marked", "patched"),
    [
        ("Running", "Running", False, True),
        ("Stopped", "Stopping", False, True),  # shortens a stop under way
        ("Stopped", "Stopping", True, False),
        ("Stopped", "Stopped", False, False),  # nothing to force
    ],
)
def test_rest_stop_force_sets_the_mark_beside_desired_state(
    desired: str, deployment: str, marked: bool, patched: bool
) -> None:
    patch = rest.decide_stop(rest_pipeline(desired, deployment, marked), force=True)
    if not patched:
        assert patch is None
        return
    assert patch == {
        "metadata": {"resourceVersion": "7", "annotations": {FORCE_STOP: "true"}},
        "spec": {"desiredState": "Stopped"},
    }


def test_rest_stop_without_force_never_sets_the_mark() -> None:
    patch = rest.decide_stop(rest_pipeline("Running", "Running"), force=False)
    assert patch == {"metadata": {"resourceVersion": "7"}, "spec": {"desiredState": "Stopped"}}
