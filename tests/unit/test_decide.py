"""The pure core, without a cluster: given observed objects, the decided actions."""

from __future__ import annotations

from typing import Any

from sluice.api.v1alpha1 import DeploymentStatus, StorageSpec, StorageState, StorageStatus
from sluice.controller import _drop_none, status_body
from sluice.core import decide as d
from sluice.core.labels import DETACHED_FROM_UID, FINALIZER, claim_name
from sluice.core.manifests import event, event_name, mounted_claim
from sluice.core.observed import Observed

NOW = "2026-11-28T10:00:00Z"
UID = "11111111-2222-3333-4444-555555555555"


def pipeline(
    desired: str = "Running",
    clear_request: str | None = None,
    policy: str = "Delete",
    status: dict[str, Any] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    storage: dict[str, Any] = {"size": "1Gi", "clearPolicy": policy}
    if clear_request is not None:
        storage["clearRequest"] = clear_request
    meta: dict[str, Any] = {
        "name": "orders",
        "namespace": "analytics",
        "uid": UID,
        "generation": 2,
        "resourceVersion": "100",
        "finalizers": [FINALIZER],
    }
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {
        "metadata": meta,
        "spec": {"desiredState": desired, "image": "img:1", "storage": storage},
        "status": status or {},
    }


def settled_status(
    storage: str = "InUse", deployment: str = "Stopped", **extra: Any
) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "deploymentStatus": deployment,
        "storage": {"status": storage, "claims": [], **extra},
    }


def claim(name: str = "orders-storage-abcde", owner: str = UID, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-28T09:00:00Z",
            "labels": {"sluice.dev/pipeline": "orders"},
            "ownerReferences": [{"kind": "Pipeline", "name": "orders", "uid": owner}],
            **meta,
        }
    }


def statefulset(deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "orders",
        "uid": "sts-uid",
        "ownerReferences": [{"uid": UID}],
    }
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {
        "metadata": meta,
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "pipeline", "image": "img:1"}],
                    "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": "c"}}],
                }
            }
        },
    }


def ready_pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "orders-0",
            "uid": "pod-uid",
            "labels": {"sluice.dev/pipeline-uid": UID},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def kinds(plan: d.Plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


def test_new_pipeline_gets_finalizer_and_a_fresh_claim_and_storage_starts_cleared() -> None:
    observed = Observed(pipeline(status={}))
    observed.pipeline["metadata"]["finalizers"] = []
    assert kinds(d.decide(observed, NOW)) == ["AddFinalizer"]
    observed.pipeline["metadata"]["finalizers"] = [FINALIZER]
    plan = d.decide(observed, NOW)
    assert kinds(plan) == ["Create"]
    created = plan.actions[0]
    assert isinstance(created, d.Create) and created.kind == "PersistentVolumeClaim"
    assert created.manifest["metadata"]["name"] == claim_name("orders", UID, 0)
    assert created.manifest["metadata"]["name"].startswith("orders-storage-")
    assert created.manifest["metadata"]["ownerReferences"][0]["uid"] == UID
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.deployment_status == DeploymentStatus.PROVISIONING


def test_with_a_claim_the_statefulset_mounts_it_and_storage_is_in_use() -> None:
    plan = d.decide(Observed(pipeline(status=settled_status()), claims=[claim()]), NOW)
    created = [a for a in plan.actions if isinstance(a, d.Create)]
    assert [c.kind for c in created] == ["Service", "StatefulSet"]
    assert mounted_claim(created[1].manifest) == "orders-storage-abcde"
    assert plan.status.storage.status == StorageStatus.IN_USE
    assert plan.status.storage.claims == ["orders-storage-abcde"]


def test_ready_pod_means_running_and_a_settled_pipeline_needs_no_action() -> None:
    observed = Observed(
        pipeline(status=settled_status(deployment="Provisioning")),
        statefulset=statefulset(),
        service={"metadata": {"name": "orders"}},
        pods=[ready_pod()],
        claims=[claim()],
    )
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.deployment_status == DeploymentStatus.RUNNING
    ready = {c.type: c.status for c in plan.status.conditions}
    assert ready == {
        **{"Ready": "True", "Running": "True", "StorageCleared": "False"},
        **{"Reconciling": "False", "Stalled": "False"},
    }
    # Deciding again on the result changes nothing: no writes when settled.
    from sluice.controller import status_body

    again = Observed({**observed.pipeline, "status": status_body(plan.status)}, **_rest(observed))
    assert d.decide(again, "2026-11-28T11:00:00Z").status == plan.status


def test_a_pod_that_cannot_run_is_explained_in_the_conditions() -> None:
    unschedulable = {
        "metadata": {
            "name": "orders-0",
            "uid": "pod-uid",
            "labels": {"sluice.dev/pipeline-uid": UID},
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ],
        },
    }
    observed = Observed(
        pipeline(status=settled_status(deployment="Provisioning")),
        statefulset=statefulset(),
        service={"metadata": {"name": "orders"}},
        pods=[unschedulable],
        claims=[claim()],
    )
    plan = d.decide(observed, NOW)
    assert plan.status.deployment_status == DeploymentStatus.PROVISIONING
    conditions = {c.type: c for c in plan.status.conditions}
    why = "Pod orders-0 cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."
    assert conditions["Running"].reason == "Provisioning"
    assert why in conditions["Running"].message
    assert why in conditions["Ready"].message
    # Once it runs, the explanation goes away.
    ran = d.decide(Observed(observed.pipeline, **{**_rest(observed), "pods": [ready_pod()]}), NOW)
    assert all("Pod orders-0" not in c.message for c in ran.status.conditions)


def test_a_waiting_container_is_explained_and_a_long_message_is_cut() -> None:
    waiting = {
        "metadata": {
            "name": "orders-0",
            "uid": "pod-uid",
            "labels": {"sluice.dev/pipeline-uid": UID},
        },
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "pipeline",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "x" * 50000}},
                }
            ],
        },
    }
    assert (
        d.pod_problem([waiting])
        == f"Pod orders-0 container pipeline: ImagePullBackOff: {'x' * 50000}"
    )
    creating = {
        "metadata": {"name": "orders-0"},
        "status": {
            "containerStatuses": [
                {"name": "pipeline", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]
        },
    }
    assert d.pod_problem([creating]) is None
    observed = Observed(
        pipeline(status=settled_status(deployment="Provisioning")),
        statefulset=statefulset(),
        service={"metadata": {"name": "orders"}},
        pods=[waiting],
        claims=[claim()],
    )
    running = {c.type: c for c in d.decide(observed, NOW).status.conditions}["Running"]
    assert "ImagePullBackOff" in running.message and len(running.message) < 1100


def _rest(observed: Observed) -> dict[str, Any]:
    return {
        "statefulset": observed.statefulset,
        "service": observed.service,
        "pods": observed.pods,
        "claims": observed.claims,
    }


def test_stop_deletes_the_statefulset_and_keeps_storage_in_use() -> None:
    observed = Observed(
        pipeline("Stopped", status=settled_status(deployment="Running")),
        statefulset=statefulset(),
        pods=[ready_pod()],
        claims=[claim()],
    )
    plan = d.decide(observed, NOW)
    assert kinds(plan) == ["DeletePod", "DeleteStatefulSet"]
    assert plan.status.deployment_status == DeploymentStatus.STOPPING
    assert plan.status.storage.status == StorageStatus.IN_USE


def test_clear_request_waits_for_the_stop_and_says_so() -> None:
    terminating = ready_pod()
    terminating["metadata"]["deletionTimestamp"] = NOW  # taking its grace period
    observed = Observed(
        pipeline("Stopped", "r1", status=settled_status(deployment="Running")),
        statefulset=statefulset(deleting=True),
        pods=[terminating],
        claims=[claim()],
    )
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.IN_USE
    cleared = next(c for c in plan.status.conditions if c.type == "StorageCleared")
    assert (cleared.status, cleared.reason) == ("False", "WaitingForStop")


def test_clearing_is_persisted_before_any_claim_is_touched() -> None:
    observed = Observed(pipeline("Stopped", "r1", status=settled_status()), claims=[claim()])
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.status.storage.clearing_request == "r1"
    assert [e.reason for e in plan.events] == ["StorageClearing"]


def test_the_step_that_deletes_the_claims_writes_no_status_of_its_own() -> None:
    """Clearing is persisted already saying what the deletes will say, so deleting the
    claims needs no status write: with 100 clears at once that was 100 writes."""
    observed = Observed(pipeline("Stopped", "r1", status=settled_status()), claims=[claim()])
    first = d.decide(observed, NOW)
    persisted = _drop_none(status_body(first.status))
    second = d.decide(Observed(pipeline("Stopped", "r1", status=persisted), claims=[claim()]), NOW)
    assert kinds(second) == ["DeleteClaim"]
    assert _drop_none(status_body(second.status)) == persisted


def test_clearing_deletes_only_claims_proven_to_be_ours() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    look_alike = claim("orders-storage-zzzzz", owner="someone-else")
    observed = Observed(pipeline("Stopped", "r1", status=status), claims=[claim(), look_alike])
    plan = d.decide(observed, NOW)
    assert plan.actions == [d.DeleteClaim("orders-storage-abcde", "uid-orders-storage-abcde")]
    assert plan.status.storage.status == StorageStatus.CLEARING


def test_clearing_waits_until_deletion_has_really_completed() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    terminating = claim(deletionTimestamp=NOW)
    plan = d.decide(Observed(pipeline("Stopped", "r1", status=status), claims=[terminating]), NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.CLEARING


def test_cleared_once_no_claim_is_left_records_the_request() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    plan = d.decide(Observed(pipeline("Stopped", "r1", status=status)), NOW)
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.storage.last_clear_request == "r1"
    assert plan.status.storage.clearing_request is None
    assert [e.reason for e in plan.events] == ["StorageCleared"]


def test_the_status_write_that_says_cleared_also_says_ready() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    plan = d.decide(Observed(pipeline("Stopped", "r1", status=status)), NOW)
    conditions = {c.type: c for c in plan.status.conditions}
    assert conditions["Ready"].status == "True"
    assert conditions["StorageCleared"].status == "True"
    assert conditions["StorageCleared"].reason == "Cleared"


def test_detach_drops_our_owner_reference_and_marks_the_claim() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    shared = claim()
    shared["metadata"]["ownerReferences"].append({"kind": "Other", "uid": "other"})
    plan = d.decide(Observed(pipeline("Stopped", "r1", "Detach", status), claims=[shared]), NOW)
    (action,) = plan.actions
    assert isinstance(action, d.DetachClaim)
    assert action.owner_references == [{"kind": "Other", "uid": "other"}]
    assert action.annotations[DETACHED_FROM_UID] == UID
    assert action.annotations["sluice.dev/detached-at"] == NOW


def test_a_detached_claim_is_never_adopted_again() -> None:
    detached = claim(annotations={DETACHED_FROM_UID: UID})
    detached["metadata"]["ownerReferences"] = []
    plan = d.decide(Observed(pipeline(status=settled_status("Cleared")), claims=[detached]), NOW)
    (created,) = [a for a in plan.actions if isinstance(a, d.Create)]
    assert created.kind == "PersistentVolumeClaim"


def test_each_clear_moves_the_claim_name_on_so_a_detached_name_is_never_reused() -> None:
    """Two operators decide the same name from the same observation; after a clear (status
    claimGeneration + 1) the next claim gets another, and a new object of the same name too."""
    detaching = settled_status("Clearing", clearingRequest="r1")
    gone = d.decide(Observed(pipeline("Stopped", "r1", "Detach", detaching)), NOW)
    assert gone.status.storage.claim_generation == 1
    names = []
    for generation in (0, 1, 2):
        status = settled_status("Cleared", claimGeneration=generation)
        plan = d.decide(Observed(pipeline(status=status)), NOW)
        (created,) = plan.actions
        assert isinstance(created, d.Create)
        again = d.decide(Observed(pipeline(status=status)), NOW).actions[0]
        assert isinstance(again, d.Create) and again.manifest == created.manifest
        names.append(created.manifest["metadata"]["name"])
    assert len(set(names)) == 3
    assert claim_name("orders", "another-uid", 0) != names[0]


def test_request_on_cleared_storage_is_a_recorded_no_op() -> None:
    plan = d.decide(Observed(pipeline("Stopped", "r2", status=settled_status("Cleared"))), NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.storage.last_clear_request == "r2"


def test_start_waits_while_clearing_with_the_seed_error() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    plan = d.decide(Observed(pipeline("Running", "r1", status=status), claims=[claim()]), NOW)
    assert not any(isinstance(a, d.Create) for a in plan.actions)
    assert plan.status.error is not None
    assert plan.status.error.error_code == "CannotStartWhileClearingStorage"


def test_removing_the_request_mid_clear_does_not_cancel_it() -> None:
    status = settled_status("Clearing", clearingRequest="r1")
    plan = d.decide(Observed(pipeline("Stopped", None, status=status)), NOW)
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.storage.last_clear_request == "r1"


def test_changing_the_request_mid_clear_finishes_it_then_handles_the_new_one_once() -> None:
    """r1 -> r2 mid-clear: the clear of r1 goes on with its claim and records r1; r2 then
    differs from lastClearRequest, a request of its own (rule 3), on Cleared storage: a
    recorded no-op (rule 7), handled once."""
    clearing = settled_status("Clearing", clearingRequest="r1")
    mid = d.decide(Observed(pipeline("Stopped", "r2", status=clearing), claims=[claim()]), NOW)
    assert kinds(mid) == ["DeleteClaim"]
    assert mid.status.storage.status == StorageStatus.CLEARING
    assert mid.status.storage.clearing_request == "r1"
    done = d.decide(Observed(pipeline("Stopped", "r2", status=clearing)), NOW)
    assert done.status.storage.status == StorageStatus.CLEARED
    assert done.status.storage.last_clear_request == "r1"
    assert [e.reason for e in done.events] == ["StorageCleared"]
    assert "(r1)" in done.events[0].message
    after = done.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    then = d.decide(Observed(pipeline("Stopped", "r2", status=after)), NOW)
    assert then.actions == []
    assert then.status.storage.status == StorageStatus.CLEARED
    assert then.status.storage.last_clear_request == "r2"
    assert [e.reason for e in then.events] == ["ClearRequestHandled"]
    again = then.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert d.decide(Observed(pipeline("Stopped", "r2", status=again)), NOW).events == []


def test_a_clears_events_have_one_identity_per_clear_stable_when_a_step_is_retried() -> None:
    """StorageClearing, StorageCleared and StorageRetained are named by the clear (the claim
    generation it ends): a step retried after a crash, at another time, gives the same
    identity (posted once: 409), the next clear another."""

    def clear(generation: int, when: str) -> tuple[str | None, str | None]:
        start = settled_status(claimGeneration=generation)
        begun = d.decide(Observed(pipeline("Stopped", "r1", status=start), claims=[claim()]), when)
        (clearing,) = begun.events
        end = settled_status("Clearing", clearingRequest="r1", claimGeneration=generation)
        (cleared,) = d.decide(Observed(pipeline("Stopped", "r1", status=end)), when).events
        assert (clearing.reason, cleared.reason) == ("StorageClearing", "StorageCleared")
        return clearing.once, cleared.once

    first = clear(0, NOW)
    assert first[0] and first[0] == first[1]
    assert clear(0, "2026-11-28T10:05:00Z") == first
    assert clear(1, NOW) != first


def test_a_handled_request_is_one_event_per_request() -> None:
    """ClearRequestHandled is named by the spec change that carried the request (its
    metadata.generation): the same for a retried step, another for the next request."""

    def handled(generation: int) -> str | None:
        spec = pipeline("Stopped", "r2", status=settled_status("Cleared"))
        spec["metadata"]["generation"] = generation
        (event,) = d.decide(Observed(spec), NOW).events
        assert event.reason == "ClearRequestHandled"
        return event.once

    assert handled(3) and handled(3) == handled(3)
    assert handled(4) != handled(3)


def test_an_events_own_name_is_a_valid_name_per_pipeline_reason_and_transition() -> None:
    meta = {"name": "orders", "namespace": "analytics", "uid": UID}
    name = event_name(meta, "StorageCleared", "clear-0")
    assert name.startswith("orders.storagecleared-")
    assert name == event_name(meta, "StorageCleared", "clear-0")
    others = {
        event_name(meta, "StorageRetained", "clear-0"),
        event_name(meta, "StorageCleared", "clear-1"),
        event_name({**meta, "uid": "another-uid"}, "StorageCleared", "clear-0"),
    }
    assert name not in others and len(others) == 3
    long = event_name({**meta, "name": "p" * 253}, "StorageCleared", "clear-0")
    assert len(long) == 253 and long.endswith(name.removeprefix("orders"))
    body = event(meta_pipeline := {"metadata": meta}, "Normal", "StorageCleared", "m", "c", NOW)
    assert "generateName" in body["metadata"] and "name" not in body["metadata"]
    named = event(meta_pipeline, "Normal", "StorageCleared", "m", "c", NOW, "clear-0")
    assert named["metadata"] == {"name": name, "namespace": "analytics"}


def test_deletion_clears_by_policy_then_drops_the_finalizer() -> None:
    deleting = pipeline("Running", status=settled_status(), deleting=True)
    plan = d.decide(Observed(deleting, claims=[claim()]), NOW)
    assert plan.status.storage.status == StorageStatus.CLEARING
    done = pipeline("Running", status=settled_status("Cleared"), deleting=True)
    assert kinds(d.decide(Observed(done), NOW)) == ["RemoveFinalizer"]


def test_a_new_pipeline_created_with_a_request_treats_it_as_handled() -> None:
    plan = d.decide(Observed(pipeline("Running", "r0", status={})), NOW)
    assert plan.status.storage.last_clear_request == "r0"
    assert plan.status.error is None


# ---- Argo CD's clear-storage action: spec.storage.actionClearRequest (rule 22) -------------


def with_action(obj: dict[str, Any], action: str) -> dict[str, Any]:
    obj["spec"]["storage"]["actionClearRequest"] = action
    return obj


def test_an_action_request_next_to_gits_handled_request_clears_once() -> None:
    """git's clearRequest r1 was handled; the action's a1 is new: one clear, recorded apart."""
    status = settled_status(lastClearRequest="r1")
    obj = with_action(pipeline("Stopped", "r1", status=status), "a1")
    plan = d.decide(Observed(obj, claims=[claim()]), NOW)
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.status.storage.clearing_action_request == "a1"
    assert plan.status.storage.clearing_request is None
    assert [e.message for e in plan.events] == [
        "Clearing storage (a1): claims orders-storage-abcde will be deleted."
    ]

    clearing = settled_status("Clearing", lastClearRequest="r1", clearingActionRequest="a1")
    done = d.decide(Observed(with_action(pipeline("Stopped", "r1", status=clearing), "a1")), NOW)
    assert done.status.storage.status == StorageStatus.CLEARED
    assert done.status.storage.last_action_clear_request == "a1"
    assert done.status.storage.last_clear_request == "r1"
    assert done.status.storage.clearing_action_request is None
    assert [e.message for e in done.events] == ["Storage cleared: claims deleted (a1)."]


def test_self_heal_putting_gits_desired_state_back_does_not_cancel_the_actions_clear() -> None:
    """Rule 8 for the action's request: Running again mid-clear waits, as for clearRequest."""
    clearing = settled_status("Clearing", lastClearRequest="r1", clearingActionRequest="a1")
    obj = with_action(pipeline("Running", "r1", status=clearing), "a1")
    plan = d.decide(Observed(obj, claims=[claim()]), NOW)
    assert not any(isinstance(a, d.Create) for a in plan.actions)
    assert plan.status.error is not None
    assert plan.status.error.error_code == "CannotStartWhileClearingStorage"


def test_a_pending_action_request_is_kept_when_desired_state_goes_back_to_running() -> None:
    """Accepted with Stopped, then git's Running put back before the operator saw it: the
    request still stands (rule 8), so the pipeline stops, clears, and only then starts."""
    status = settled_status(deployment="Running", lastClearRequest="r1")
    obj = with_action(pipeline("Running", "r1", status=status), "a1")
    plan = d.decide(Observed(obj, statefulset=statefulset(), pods=[ready_pod()]), NOW)
    assert [type(a).__name__ for a in plan.actions] == ["DeletePod", "DeleteStatefulSet"]
    assert plan.status.error is not None
    assert plan.status.error.error_code == "CannotStartWhileClearingStorage"


def test_handled_requests_of_both_kinds_are_no_requests() -> None:
    """After the action's clear, git's older clearRequest (put back by a sync) is not new."""
    status = settled_status(lastClearRequest="r1", lastActionClearRequest="a1")
    obj = with_action(pipeline("Running", "r1", status=status), "a1")
    plan = d.decide(Observed(obj, claims=[claim()]), NOW)
    assert plan.status.storage.status == StorageStatus.IN_USE
    assert d.pending_requests(
        StorageSpec.model_validate(obj["spec"]["storage"]),
        StorageState.model_validate(status["storage"]),
    ) == (None, None)


def test_an_action_request_on_a_new_pipeline_or_cleared_storage_is_a_recorded_no_op() -> None:
    new = d.decide(Observed(with_action(pipeline("Stopped", status={}), "a1")), NOW)
    assert new.status.storage.last_action_clear_request == "a1"
    obj = with_action(pipeline("Stopped", status=settled_status("Cleared")), "a2")
    plan = d.decide(Observed(obj), NOW)
    assert plan.actions == []
    assert plan.status.storage.last_action_clear_request == "a2"
    assert [e.reason for e in plan.events] == ["ClearRequestHandled"]


def test_both_kinds_pending_at_once_are_one_clear() -> None:
    obj = with_action(pipeline("Stopped", "r2", status=settled_status()), "a1")
    plan = d.decide(Observed(obj, claims=[claim()]), NOW)
    storage = plan.status.storage
    assert (storage.clearing_request, storage.clearing_action_request) == ("r2", "a1")
    clearing = settled_status("Clearing", clearingRequest="r2", clearingActionRequest="a1")
    done = d.decide(Observed(with_action(pipeline("Stopped", "r2", status=clearing), "a1")), NOW)
    storage = done.status.storage
    assert (storage.last_clear_request, storage.last_action_clear_request) == ("r2", "a1")
    assert [e.reason for e in done.events] == ["StorageCleared"]


def test_a_running_pipeline_without_resources_is_not_rolled_by_the_api_servers_default() -> None:
    """The API server stores an unset container `resources` as {}; a pod's status change
    (the kubelet's, on a real node) must not make that look like a change to roll."""
    sts = statefulset()
    sts["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    observed = Observed(
        pipeline(status=settled_status(deployment="Running")),
        statefulset=sts,
        service={"metadata": {"name": "orders"}},
        pods=[ready_pod()],
        claims=[claim()],
    )
    assert d.decide(observed, NOW).actions == []
