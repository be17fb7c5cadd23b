"""Rule 6 one level down, without a cluster: a clear records each claim's volume before
deleting anything, and is Cleared only when every Delete volume is gone."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import StorageStatus
from sluice.core import decide as d
from sluice.core import volumes
from sluice.core.labels import DETACHED_FROM_UID
from sluice.core.observed import Observed

from .test_decide import NOW, UID, claim, kinds, pipeline, settled_status
from .test_snapshots import snapshot

LATER = "2026-11-28T10:00:05Z"
MUCH_LATER = "2026-11-28T11:00:00Z"


def bound(name: str = "orders-storage-abcde", pv: str = "pvc-1") -> dict[str, Any]:
    out = claim(name)
    out["spec"] = {"volumeName": pv, "storageClassName": "standard"}
    return out


def volume(
    name: str = "pvc-1",
    policy: str = "Delete",
    phase: str = "Bound",
    claim_name: str = "orders-storage-abcde",
    message: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if message:
        status["message"] = message
    return {
        "metadata": {"name": name},
        "spec": {
            "persistentVolumeReclaimPolicy": policy,
            "storageClassName": "standard",
            "claimRef": {"name": claim_name, "namespace": "analytics"},
        },
        "status": status,
    }


def clearing(policy: str = "Delete", records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return pipeline(
        desired="Stopped",
        clear_request="r1",
        policy=policy,
        status=settled_status(
            "Clearing",
            clearingRequest="r1",
            clearingSince=NOW,
            clearingVolumes=records
            if records is not None
            else [
                {
                    "persistentVolume": "pvc-1",
                    "claim": "orders-storage-abcde",
                    "reclaimPolicy": "Delete",
                    "storageClassName": "standard",
                }
            ],
        ),
    )


def test_starting_a_clear_records_each_claims_volume_and_deletes_nothing() -> None:
    observed = Observed(
        pipeline(desired="Stopped", clear_request="r1", status=settled_status()),
        claims=[bound()],
        volumes={"pvc-1": volume()},
    )
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.status.storage.clearing_volumes == [
        api.VolumeRecord(
            persistent_volume="pvc-1",
            claim="orders-storage-abcde",
            reclaim_policy="Delete",
            storage_class_name="standard",
        )
    ]


def test_a_deleted_claim_whose_delete_volume_remains_keeps_the_clear_going() -> None:
    for phase in ("Released", "Bound"):
        plan = d.decide(Observed(clearing(), volumes={"pvc-1": volume(phase=phase)}), LATER)
        assert plan.status.storage.status == StorageStatus.CLEARING
        assert plan.status.storage.last_clear_request is None
        assert plan.recheck, "nothing watched reports the volume's deletion: look again"
        assert plan.recheck_max_delay == d.VOLUME_RECHECK_MAX_DELAY
        assert plan.status.error is None
        cond = {c.type: c for c in plan.status.conditions}["StorageCleared"]
        assert "pvc-1" in cond.message


def test_cleared_only_once_the_delete_volume_is_gone() -> None:
    plan = d.decide(Observed(clearing(), volumes={}), LATER)
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.storage.last_clear_request == "r1"
    assert plan.status.storage.clearing_volumes == []
    assert plan.status.storage.retained_volumes == []
    assert not plan.recheck
    (event,) = [e for e in plan.events if e.reason == "StorageCleared"]
    assert "pvc-1" in event.message


def test_a_failed_volume_deletion_is_an_error_naming_the_volume_in_its_own_words() -> None:
    why = "host_path deleter only supports /tmp/.+ but received provided /var/data"
    observed = Observed(clearing(), volumes={"pvc-1": volume(phase="Failed", message=why)})
    plan = d.decide(observed, LATER)
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.recheck and plan.recheck_max_delay is None, "the full backoff once it failed"
    error = plan.status.error
    assert error is not None and error.error_code == "StorageClearFailed"
    assert "pvc-1" in error.message and why in error.message
    assert error.details["volumes"][0]["persistentVolume"] == "pvc-1"
    (warning,) = [e for e in plan.events if e.type == "Warning"]
    assert warning.reason == "StorageClearFailed"
    conditions = {c.type: c for c in plan.status.conditions}
    assert conditions["StorageCleared"].reason == "StorageClearFailed"
    assert conditions["Ready"].status == "False"


def test_the_same_failure_is_not_announced_twice() -> None:
    why = "deleter failed"
    first = d.decide(
        Observed(clearing(), volumes={"pvc-1": volume(phase="Failed", message=why)}), LATER
    )
    again = clearing()
    again["status"]["error"] = first.status.error.model_dump(mode="json")  # type: ignore[union-attr]
    plan = d.decide(Observed(again, volumes={"pvc-1": volume(phase="Failed", message=why)}), LATER)
    assert plan.status.error == first.status.error
    assert [e for e in plan.events if e.type == "Warning"] == []


def failed_delete(message: str, last: str = LATER) -> dict[str, Any]:
    """A VolumeFailedDelete Event as the CSI external-provisioner posts it on the PV."""
    return {
        "reason": "VolumeFailedDelete",
        "type": "Warning",
        "message": message,
        "lastTimestamp": last,
        "involvedObject": {"kind": "PersistentVolume", "name": "pvc-1"},
    }


def test_a_csi_deletion_failing_in_an_event_is_an_error_in_the_provisioners_words() -> None:
    """CSI: the PV stays Released (no phase Failed); the provisioner's Event says why."""
    why = "rpc error: code = Internal desc = disk is read-only"
    observed = Observed(
        clearing(),
        volumes={"pvc-1": volume(phase="Released")},
        volume_events={"pvc-1": [failed_delete("older words", NOW), failed_delete(why)]},
    )
    plan = d.decide(observed, LATER)
    assert plan.status.storage.status == StorageStatus.CLEARING
    error = plan.status.error
    assert error is not None and error.error_code == "StorageClearFailed"
    assert "pvc-1" in error.message and why in error.message and "older" not in error.message
    assert error.details["volumes"][0]["reason"] == f"VolumeFailedDelete: {why}"
    assert plan.recheck and plan.recheck_max_delay is None


def test_a_deletion_failure_from_before_the_clear_does_not_count() -> None:
    before = "2026-11-28T09:00:00Z"
    observed = Observed(
        clearing(),
        volumes={"pvc-1": volume(phase="Released")},
        volume_events={"pvc-1": [failed_delete("an old failure", before)]},
    )
    plan = d.decide(observed, LATER)
    assert plan.status.error is None
    assert plan.recheck_max_delay == d.VOLUME_RECHECK_MAX_DELAY


def test_failure_events_are_read_only_for_released_delete_volumes() -> None:
    assert volumes.awaits_deletion(volume(phase="Released"))
    assert not volumes.awaits_deletion(volume(phase="Bound"))
    assert not volumes.awaits_deletion(volume(phase="Released", policy="Retain"))
    assert volumes.failed_deletion([{"reason": "Other", "lastTimestamp": LATER}], NOW) is None


def released_at(stamp: str) -> dict[str, Any]:
    pv = volume(phase="Released")
    pv["status"]["lastPhaseTransitionTime"] = stamp
    return pv


def test_the_provisioner_is_asked_why_only_once_it_has_had_time_to_delete() -> None:
    """A deletion takes about a second: its Events are read (one LIST) only about a volume
    Released for ASK_PROVISIONER_AFTER_SECONDS, or for an unknown time; never about one in
    use or kept."""
    just_now, a_while_ago = released_at("2026-11-28T10:00:03Z"), released_at(NOW)
    assert not volumes.provisioner_to_ask(just_now, LATER)
    assert volumes.provisioner_to_ask(a_while_ago, LATER)
    assert volumes.provisioner_to_ask(volume(phase="Released"), LATER)  # since unknown
    assert not volumes.provisioner_to_ask(volume(phase="Bound"), LATER)
    assert not volumes.provisioner_to_ask(
        {**released_at(NOW), "spec": {"persistentVolumeReclaimPolicy": "Retain"}}, LATER
    )
    assert volumes.ask_provisioner_in([just_now, a_while_ago], LATER) == 3.0
    assert volumes.ask_provisioner_in([a_while_ago, volume(phase="Bound")], LATER) is None


def test_a_clear_waiting_on_a_fresh_release_looks_again_when_it_is_time_to_ask() -> None:
    """A failing provisioner changes nothing a watch brings: the clear comes back by a timer
    when the volume is old enough to ask about."""
    released = released_at("2026-11-28T10:00:03Z")
    plan = d.decide(Observed(clearing(), volumes={"pvc-1": released}), LATER)
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.requeue_after == 3.0
    # A kept snapshot's expiry (looked at a second after it) is the other timer: the
    # earlier of the two comes first.
    for expires, first in (("2026-11-28T10:05:05Z", 3.0), ("2026-11-28T10:00:06Z", 2.0)):
        kept = snapshot(ready=True, expires=expires)
        observed = Observed(clearing(), volumes={"pvc-1": released}, snapshots=[kept])
        assert d.decide(observed, LATER).requeue_after == first


def test_a_volume_that_outlives_the_deadline_is_a_failure_but_the_clear_keeps_waiting() -> None:
    plan = d.decide(Observed(clearing(), volumes={"pvc-1": volume(phase="Released")}), MUCH_LATER)
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.status.error is not None and "Released" in plan.status.error.message
    assert plan.recheck


def test_a_retain_volume_completes_the_clear_and_is_reported_as_retained() -> None:
    records = [
        {"persistentVolume": "pvc-1", "claim": "orders-storage-abcde", "reclaimPolicy": "Retain"}
    ]
    observed = Observed(
        clearing(records=records), volumes={"pvc-1": volume(policy="Retain", phase="Released")}
    )
    plan = d.decide(observed, LATER)
    assert plan.status.storage.status == StorageStatus.CLEARED
    (kept,) = plan.status.storage.retained_volumes
    assert (kept.persistent_volume, kept.claim, kept.reclaim_policy) == (
        "pvc-1",
        "orders-storage-abcde",
        "Retain",
    )
    (warning,) = [e for e in plan.events if e.type == "Warning"]
    assert warning.reason == "StorageRetained" and "pvc-1" in warning.message
    cond = {c.type: c for c in plan.status.conditions}["StorageCleared"]
    assert cond.status == "True" and "pvc-1" in cond.message


def test_a_policy_changed_to_retain_after_recording_counts_as_retained() -> None:
    plan = d.decide(
        Observed(clearing(), volumes={"pvc-1": volume(policy="Retain", phase="Released")}), LATER
    )
    assert plan.status.storage.status == StorageStatus.CLEARED
    assert plan.status.storage.retained_volumes[0].reclaim_policy == "Retain"


def test_detach_reports_the_detached_claim_as_retained() -> None:
    detached = bound()
    detached["metadata"]["ownerReferences"] = []
    detached["metadata"]["annotations"] = {DETACHED_FROM_UID: UID}
    observed = Observed(clearing(policy="Detach"), claims=[detached], volumes={"pvc-1": volume()})
    plan = d.decide(observed, LATER)
    assert plan.status.storage.status == StorageStatus.CLEARED
    (kept,) = plan.status.storage.retained_volumes
    assert kept.claim == "orders-storage-abcde" and kept.persistent_volume == "pvc-1"
    assert any(e.reason == "StorageRetained" for e in plan.events)


def test_a_claim_bound_after_clearing_began_is_recorded_before_it_is_deleted() -> None:
    late = bound("orders-storage-late", pv="pvc-9")
    observed = Observed(clearing(records=[]), claims=[late], volumes={"pvc-9": volume("pvc-9")})
    plan = d.decide(observed, LATER)
    assert kinds(plan) == [], "record first, in this step's status write"
    assert [r.persistent_volume for r in plan.status.storage.clearing_volumes] == ["pvc-9"]
    again = clearing(
        records=[r.model_dump(by_alias=True) for r in plan.status.storage.clearing_volumes]
    )
    plan = d.decide(Observed(again, claims=[late], volumes={"pvc-9": volume("pvc-9")}), LATER)
    assert kinds(plan) == ["DeleteClaim"]


def test_a_pv_name_reused_by_another_claim_is_not_ours_any_more() -> None:
    plan = d.decide(
        Observed(clearing(), volumes={"pvc-1": volume(claim_name="someone-else")}), LATER
    )
    assert plan.status.storage.status == StorageStatus.CLEARED


def test_volumes_are_read_only_while_a_clear_may_run() -> None:
    claims = [bound()]
    settled = pipeline(desired="Stopped", status=settled_status())
    assert volumes.volume_names_to_observe(settled, claims) == []
    requested = pipeline(desired="Stopped", clear_request="r1", status=settled_status())
    assert volumes.volume_names_to_observe(requested, claims) == ["pvc-1"]
    assert volumes.volume_names_to_observe(clearing(), []) == ["pvc-1"]
    deleting = pipeline(deleting=True, status=settled_status())
    assert volumes.volume_names_to_observe(deleting, claims) == ["pvc-1"]
