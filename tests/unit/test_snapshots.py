"""Rule 18's take and expire decisions, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from sluice.api.v1alpha1 import StorageStatus
from sluice.core import decide as d
from sluice.core import snapshots
from sluice.core.observed import Observed

from unit.test_decide import NOW, UID, claim, pipeline, settled_status

SNAP = "orders-clear-abcde"


def guarded(status: dict[str, Any], retain: str = "72h", deleting: bool = False) -> dict[str, Any]:
    p = pipeline("Stopped", "r1", status=status, deleting=deleting)
    p["spec"]["storage"]["snapshotBeforeClear"] = {
        "retainFor": retain,
        "volumeSnapshotClassName": "csi-local",
    }
    return p


def snapshot(
    ready: bool = False,
    error: str | None = None,
    uid: str = UID,
    expires: str = "2026-12-01T10:00:00Z",
    name: str = SNAP,
) -> dict[str, Any]:
    status: dict[str, Any] = {"readyToUse": ready}
    if ready:
        status["restoreSize"] = "1Gi"
    if error:
        status["error"] = {"message": error}
    return {
        "metadata": {
            "name": name,
            "namespace": "analytics",
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": {"sluice.dev/pipeline": "orders", "sluice.dev/pipeline-uid": uid},
            "annotations": {
                "sluice.dev/claim": "orders-storage-abcde",
                "sluice.dev/expires-at": expires,
                "sluice.dev/clear-request": "r1",
            },
        },
        "spec": {"source": {"persistentVolumeClaimName": "orders-storage-abcde"}},
        "status": status,
    }


def clearing() -> dict[str, Any]:
    return settled_status("Clearing", clearingRequest="r1")


def test_durations_and_expiry_times() -> None:
    assert snapshots.parse_duration("1h30m").total_seconds() == 5400
    assert snapshots.parse_duration("15s").total_seconds() == 15
    assert snapshots.expires_at(NOW, "72h") == "2026-12-01T10:00:00Z"
    with pytest.raises(ValueError):
        snapshots.parse_duration("3 days")


def test_a_guarded_clear_snapshots_first_and_deletes_nothing() -> None:
    plan = d.decide(Observed(guarded(clearing()), claims=[claim()]), NOW)
    assert [type(a) for a in plan.actions] == [snapshots.CreateSnapshot]
    manifest = plan.actions[0].manifest  # type: ignore[union-attr]
    assert manifest["metadata"]["name"] == SNAP
    assert "ownerReferences" not in manifest["metadata"]
    assert manifest["metadata"]["annotations"]["sluice.dev/expires-at"] == "2026-12-01T10:00:00Z"
    assert manifest["spec"] == {
        "source": {"persistentVolumeClaimName": "orders-storage-abcde"},
        "volumeSnapshotClassName": "csi-local",
    }
    assert plan.status.storage.status == StorageStatus.CLEARING
    assert plan.waiting_for and SNAP in plan.waiting_for


def test_clearing_is_still_persisted_alone_first() -> None:
    plan = d.decide(Observed(guarded(settled_status()), claims=[claim()]), NOW)
    assert plan.actions == []
    assert plan.status.storage.status == StorageStatus.CLEARING


def test_a_snapshot_not_yet_ready_is_waited_for_and_taken_once() -> None:
    plan = d.decide(Observed(guarded(clearing()), claims=[claim()], snapshots=[snapshot()]), NOW)
    assert plan.actions == []
    assert plan.status.storage.snapshots[0].name == SNAP


def test_once_ready_the_claim_is_deleted_and_the_event_says_so() -> None:
    observed = Observed(guarded(clearing()), claims=[claim()], snapshots=[snapshot(ready=True)])
    plan = d.decide(observed, NOW)
    assert plan.actions == [d.DeleteClaim("orders-storage-abcde", "uid-orders-storage-abcde")]
    assert "StorageSnapshotted" in [e.reason for e in plan.events]
    assert plan.status.storage.snapshots[0].ready_to_use


def test_a_failed_snapshot_is_an_error_in_its_words_and_deletes_nothing() -> None:
    observed = Observed(
        guarded(clearing()), claims=[claim()], snapshots=[snapshot(error="disk on fire")]
    )
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.error is not None
    assert plan.status.error.error_code == d.STORAGE_CLEAR_FAILED
    assert SNAP in plan.status.error.message and "disk on fire" in plan.status.error.message


def test_a_look_alike_snapshot_is_not_taken_for_ours() -> None:
    observed = Observed(
        guarded(clearing()), claims=[claim()], snapshots=[snapshot(ready=True, uid="other")]
    )
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.error is not None


def test_without_the_snapshot_api_a_guarded_clear_is_an_error_not_a_delete() -> None:
    observed = Observed(guarded(clearing()), claims=[claim()], snapshots_available=False)
    plan = d.decide(observed, NOW)
    assert plan.actions == []
    assert plan.status.error is not None
    assert plan.status.error.error_code == d.STORAGE_CLEAR_FAILED


def test_the_clear_of_a_deleted_pipeline_snapshots_too() -> None:
    observed = Observed(guarded(clearing(), deleting=True), claims=[claim()])
    plan = d.decide(observed, NOW)
    assert [type(a) for a in plan.actions] == [snapshots.CreateSnapshot]


def test_expired_snapshots_are_deleted_and_the_next_expiry_is_requested() -> None:
    old = snapshot(ready=True, name="orders-clear-old", expires="2026-11-28T09:59:00Z")
    new = snapshot(ready=True, expires="2026-11-28T10:05:00Z")
    plan = d.decide(Observed(guarded(settled_status("Cleared")), snapshots=[old, new]), NOW)
    assert d_deletes(plan) == ["orders-clear-old"]
    assert "SnapshotExpired" in [e.reason for e in plan.events]
    assert plan.requeue_after == 301.0


def d_deletes(plan: d.Plan) -> list[str]:
    return [a.name for a in plan.actions if isinstance(a, snapshots.DeleteSnapshot)]


def test_a_snapshot_whose_expiry_annotation_is_removed_is_kept() -> None:
    """Keeping one snapshot for good: `kubectl annotate volumesnapshot X sluice.dev/expires-at-`."""
    kept = snapshot(ready=True, name="orders-clear-kept", expires="2026-11-28T09:59:00Z")
    del kept["metadata"]["annotations"]["sluice.dev/expires-at"]
    plan = d.decide(Observed(guarded(settled_status("Cleared")), snapshots=[kept]), NOW)
    assert d_deletes(plan) == []
    assert plan.requeue_after is None
    (record,) = plan.status.storage.snapshots
    assert record.name == "orders-clear-kept" and record.expires_at is None
