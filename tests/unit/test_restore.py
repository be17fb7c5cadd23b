"""Restore (contract rule 18), without a cluster: spec.storage.restoreFrom makes the next
claim restore from a VolumeSnapshot, once per value, or says why no claim is created."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.core import decide as d
from sluice.core import snapshots
from sluice.core.labels import claim_name
from sluice.core.observed import Observed

from .test_decide import pipeline as pipeline_object

NOW = "2026-12-03T10:00:00Z"
UID = "11111111-2222-3333-4444-555555555555"
SNAP = "orders-clear-bcdfg"


def pipeline(
    restore_from: str | None = SNAP,
    desired: str = "Running",
    size: str = "1Gi",
    **storage_status: Any,
) -> dict[str, Any]:
    status = {
        "observedGeneration": 2,
        "deploymentStatus": "Stopped",
        "storage": {"status": "Cleared", "claims": [], "claimGeneration": 1, **storage_status},
    }
    obj = pipeline_object(desired, status=status)
    obj["metadata"]["generation"] = 3
    obj["spec"]["storage"]["size"] = size
    if restore_from is not None:
        obj["spec"]["storage"]["restoreFrom"] = restore_from
    return obj


def snapshot(ready: bool = True, restore_size: str | None = "1Gi", error: str | None = None):  # type: ignore[no-untyped-def]
    status: dict[str, Any] = {"readyToUse": ready}
    if restore_size is not None:
        status["restoreSize"] = restore_size
    if error is not None:
        status["error"] = {"message": error, "time": NOW}
    return {"metadata": {"name": SNAP, "namespace": "analytics"}, "status": status}


def restored_claim(phase: str = "Bound", source: str = SNAP) -> dict[str, Any]:
    return {
        "metadata": {
            "name": claim_name("orders", UID, 1),
            "uid": "claim-uid",
            "resourceVersion": "7",
            "creationTimestamp": "2026-12-03T09:59:00Z",
            "labels": {"sluice.dev/pipeline": "orders"},
            "ownerReferences": [{"kind": "Pipeline", "name": "orders", "uid": UID}],
        },
        "spec": {
            "dataSourceRef": {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": source,
            }
        },
        "status": {"phase": phase},
    }


def created_claims(plan: d.Plan) -> list[dict[str, Any]]:
    return [
        a.manifest
        for a in plan.actions
        if isinstance(a, d.Create) and a.kind == "PersistentVolumeClaim"
    ]


def condition(plan: d.Plan, type_: str) -> api.Condition:
    (found,) = [c for c in plan.status.conditions if c.type == type_]
    return found


# ---- when to read the snapshot ---------------------------------------------------------


def test_the_snapshot_is_read_only_when_a_claim_is_about_to_be_created_from_it() -> None:
    assert snapshots.restore_to_read(Observed(pipeline())) == SNAP
    assert snapshots.restore_to_read(Observed(pipeline(restore_from=None))) is None
    assert snapshots.restore_to_read(Observed(pipeline(lastRestoreFrom=SNAP))) is None
    assert snapshots.restore_to_read(Observed(pipeline(desired="Stopped"))) is None
    clearing = pipeline()
    clearing["status"]["storage"]["status"] = "Clearing"
    assert snapshots.restore_to_read(Observed(clearing)) is None
    with_claim = Observed(pipeline(), claims=[restored_claim()])
    assert snapshots.restore_to_read(with_claim) is None
    deleting = pipeline()
    deleting["metadata"]["deletionTimestamp"] = NOW
    assert snapshots.restore_to_read(Observed(deleting)) is None


# ---- a snapshot that cannot be restored now -----------------------------------------------


def test_a_missing_snapshot_is_a_clear_error_and_no_claim_is_created() -> None:
    plan = d.decide(Observed(pipeline(), restore_source=None), NOW)

    assert created_claims(plan) == []
    error = plan.status.error
    assert error is not None and error.error_code == "RestoreSnapshotNotFound"
    for words in ("spec.storage.restoreFrom", SNAP, "analytics", "does not exist"):
        assert words in error.message, error.message
    assert error.details == {"restore_from": SNAP, "namespace": "analytics"}
    assert plan.status.deployment_status == api.DeploymentStatus.PROVISIONING
    # Nothing watches a user's VolumeSnapshot: look again with backoff.
    assert plan.recheck and plan.recheck_unwatched
    assert plan.recheck_max_delay == snapshots.RESTORE_RECHECK_MAX_DELAY
    ready, running = condition(plan, "Ready"), condition(plan, "Running")
    assert ready.status == "False" and ready.reason == "RestoreSnapshotNotFound"
    assert error.message in ready.message and error.message in running.message
    assert condition(plan, "Stalled").status == "True"
    assert [(e.type, e.reason) for e in plan.events if e.type == "Warning"] == [
        ("Warning", "RestoreSnapshotNotFound")
    ]


def test_the_warning_event_is_emitted_once_per_distinct_reason() -> None:
    first = d.decide(Observed(pipeline(), restore_source=None), NOW)
    again = pipeline()
    again["status"] = first.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    plan = d.decide(Observed(again, restore_source=None), NOW)
    assert plan.status.error is not None
    assert [e for e in plan.events if e.type == "Warning"] == []


def test_a_snapshot_not_ready_gives_no_claim_and_quotes_the_snapshot_controller() -> None:
    plan = d.decide(Observed(pipeline(), restore_source=snapshot(ready=False)), NOW)
    assert created_claims(plan) == []
    error = plan.status.error
    assert error is not None and error.error_code == "RestoreSnapshotNotReady"
    assert "not readyToUse" in error.message and SNAP in error.message
    # Being taken: it gets ready by itself (kstatus Reconciling, not Stalled).
    assert conditions(plan) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}

    failed = snapshot(ready=False, error="Failed to check and update snapshot content: boom")
    plan = d.decide(Observed(pipeline(), restore_source=failed), NOW)
    error = plan.status.error
    assert error is not None and error.error_code == "RestoreSnapshotNotReady"
    assert "Failed to check and update snapshot content: boom" in error.message
    assert error.details["snapshot_error"] == "Failed to check and update snapshot content: boom"
    assert created_claims(plan) == []
    # The snapshot controller reports an error: a person is needed.
    assert conditions(plan) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}


def conditions(plan: d.Plan) -> dict[str, str]:
    wanted = ("Ready", "Reconciling", "Stalled")
    return {c.type: c.status for c in plan.status.conditions if c.type in wanted}


# ---- the restore -------------------------------------------------------------------------


def test_a_ready_snapshot_gives_a_claim_with_a_data_source_ref() -> None:
    plan = d.decide(Observed(pipeline(), restore_source=snapshot()), NOW)
    (claim,) = created_claims(plan)
    assert claim["metadata"]["name"] == claim_name("orders", UID, 1)
    assert claim["spec"]["dataSourceRef"] == {
        "apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot",
        "name": SNAP,
    }
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert plan.status.error is None and not plan.recheck


def test_the_claim_is_at_least_the_snapshots_restore_size() -> None:
    def size(spec_size: str, restore_size: str | None) -> str:
        source = snapshot(restore_size=restore_size)
        (claim,) = created_claims(
            d.decide(Observed(pipeline(size=spec_size), restore_source=source), NOW)
        )
        return str(claim["spec"]["resources"]["requests"]["storage"])

    assert size("1Gi", "5Gi") == "5Gi"
    assert size("1Gi", "512Mi") == "1Gi"
    assert size("1G", "1Gi") == "1Gi"  # 10^9 < 2^30
    assert size("1Gi", "2147483648") == "2147483648"  # in bytes, as drivers often report
    assert size("3Gi", "2147483648") == "3Gi"
    assert size("1Gi", None) == "1Gi"  # no restoreSize reported


def test_restored_from_and_the_event_once_the_restored_claim_is_bound() -> None:
    pending = d.decide(Observed(pipeline(), claims=[restored_claim(phase="Pending")]), NOW)
    assert pending.status.storage.restored_from is None
    assert pending.status.storage.last_restore_from is None
    assert not [e for e in pending.events if e.reason == "StorageRestored"]

    plan = d.decide(Observed(pipeline(), claims=[restored_claim()]), NOW)
    storage = plan.status.storage
    assert storage.restored_from == SNAP and storage.last_restore_from == SNAP
    (event,) = [e for e in plan.events if e.reason == "StorageRestored"]
    assert event.message == (
        f"Claim {claim_name('orders', UID, 1)} restored from VolumeSnapshot {SNAP}."
    )


def test_a_restore_happens_once_per_value_of_restore_from() -> None:
    # After a later clear, with restoreFrom still set (a GitOps manifest): empty storage.
    used = pipeline(lastRestoreFrom=SNAP)
    plan = d.decide(Observed(used, restore_source=snapshot()), NOW)
    (claim,) = created_claims(plan)
    assert "dataSourceRef" not in claim["spec"]
    assert plan.status.storage.last_restore_from == SNAP

    # Unset: forgotten; set again, it restores again.
    unset = d.decide(Observed(pipeline(restore_from=None, lastRestoreFrom=SNAP)), NOW)
    assert unset.status.storage.last_restore_from is None
    again = d.decide(Observed(pipeline(), restore_source=snapshot()), NOW)
    (claim,) = created_claims(again)
    assert claim["spec"]["dataSourceRef"]["name"] == SNAP


def test_restored_from_holds_after_a_crash_between_create_and_status() -> None:
    # The claim was created, the operator died before writing status: the claim says it.
    plan = d.decide(Observed(pipeline(), claims=[restored_claim()]), NOW)
    assert plan.status.storage.restored_from == SNAP
    assert created_claims(plan) == []


def test_restored_from_goes_when_storage_is_cleared() -> None:
    clearing = pipeline(desired="Stopped", restoredFrom=SNAP, lastRestoreFrom=SNAP)
    clearing["status"]["storage"].update(
        {"status": "Clearing", "clearingRequest": "r1", "clearingSince": NOW}
    )
    clearing["spec"]["storage"]["clearRequest"] = "r1"
    plan = d.decide(Observed(clearing), NOW)
    storage = plan.status.storage
    assert storage.status == api.StorageStatus.CLEARED
    assert storage.restored_from is None
    assert storage.last_restore_from == SNAP  # restoreFrom is still set: not again


def test_the_claims_restore_source_is_read_from_its_data_source_ref() -> None:
    assert snapshots.restored_from([restored_claim()]) == SNAP
    assert snapshots.restored_from([restored_claim(phase="Pending")]) is None
    plain = restored_claim()
    del plain["spec"]["dataSourceRef"]
    assert snapshots.restored_from([plain]) is None
    cloned = restored_claim()
    cloned["spec"]["dataSourceRef"] = {"kind": "PersistentVolumeClaim", "name": "other"}
    assert snapshots.restored_from([cloned]) is None
