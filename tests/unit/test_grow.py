"""Storage that grows in place (rule 12), decided by the pure core: a claim below
spec.storage.size is patched up, never down; status says the capacity and, while the volume
is smaller than asked, StorageResizing with the resizer's own words when it failed."""

from __future__ import annotations

from typing import Any

from sluice.core import decide as d
from sluice.core import resize
from sluice.core.observed import Observed

from .test_decide import NOW, claim, pipeline, settled_status


def sized_claim(
    requested: str, capacity: str | None, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out = claim()
    out["spec"] = {"resources": {"requests": {"storage": requested}}}
    out["status"] = {"phase": "Bound", "conditions": conditions or []}
    if capacity is not None:
        out["status"]["capacity"] = {"storage": capacity}
    return out


def decided(size: str, claim_: dict[str, Any], status: dict[str, Any] | None = None) -> d.Plan:
    obj = pipeline(desired="Stopped", status=status or settled_status())
    obj["spec"]["storage"]["size"] = size
    return d.decide(Observed(obj, claims=[claim_]), NOW)


def resizing(plan: d.Plan) -> Any:
    return next((c for c in plan.status.conditions if c.type == "StorageResizing"), None)


def test_a_larger_size_grows_the_claim_in_place() -> None:
    plan = decided("2Gi", sized_claim("1Gi", "1Gi"))
    assert [a for a in plan.actions if isinstance(a, resize.ResizeClaim)] == [
        resize.ResizeClaim("orders-storage-abcde", "2Gi")
    ]
    assert plan.status.storage.status == "InUse"
    assert plan.status.storage.capacity == "1Gi"
    assert ("Normal", "StorageResizing") in [(e.type, e.reason) for e in plan.events]
    assert resizing(plan).status == "True"


def test_the_same_or_a_smaller_size_never_touches_the_claim() -> None:
    for size in ("1Gi", "1024Mi", "512Mi"):
        plan = decided(size, sized_claim("1Gi", "1Gi"))
        assert not [a for a in plan.actions if isinstance(a, resize.ResizeClaim)], size
        assert resizing(plan) is None, size  # never grown: no condition at all
        assert plan.status.storage.capacity == "1Gi"


def test_while_the_volume_is_smaller_than_asked_status_says_so() -> None:
    plan = decided("2Gi", sized_claim("2Gi", "1Gi"))
    assert not [a for a in plan.actions if isinstance(a, resize.ResizeClaim)]
    condition = resizing(plan)
    assert (condition.status, condition.reason) == ("True", "Resizing")
    assert "from 1Gi to 2Gi" in condition.message


def test_a_failed_resize_shows_the_resizers_words_and_a_warning_once() -> None:
    failed = [{"type": "ControllerResizeError", "status": "True", "message": "disk full"}]
    plan = decided("2Gi", sized_claim("2Gi", "1Gi", failed))
    condition = resizing(plan)
    assert (condition.status, condition.reason) == ("True", "ControllerResizeError")
    assert "disk full" in condition.message
    warnings = [e for e in plan.events if e.reason == resize.RESIZE_FAILED_EVENT]
    assert len(warnings) == 1 and "disk full" in warnings[0].message
    # Written to status, the same failure is not announced again.
    stored = plan.status.model_dump(by_alias=True, mode="json")
    again = decided("2Gi", sized_claim("2Gi", "1Gi", failed), status=stored)
    assert not [e for e in again.events if e.reason == resize.RESIZE_FAILED_EVENT]


def test_grown_the_condition_turns_false_with_the_capacity() -> None:
    grown = decided("2Gi", sized_claim("2Gi", "1Gi")).status.model_dump(by_alias=True, mode="json")
    plan = decided("2Gi", sized_claim("2Gi", "2Gi"), status=grown)
    condition = resizing(plan)
    assert (condition.status, condition.reason) == ("False", "Resized")
    assert plan.status.storage.capacity == "2Gi"


def test_a_pending_filesystem_resize_waits_for_the_next_start() -> None:
    pending = [{"type": "FileSystemResizePending", "status": "True"}]
    condition = resizing(decided("2Gi", sized_claim("2Gi", "1Gi", pending)))
    assert condition.reason == "FileSystemResizePending"
    assert "next start" in condition.message


def test_a_clear_in_progress_grows_nothing() -> None:
    status = settled_status(storage="Clearing", clearingRequest="r1")
    obj = pipeline(desired="Stopped", clear_request="r1", status=status)
    obj["spec"]["storage"]["size"] = "2Gi"
    plan = d.decide(Observed(obj, claims=[sized_claim("1Gi", "1Gi")]), NOW)
    assert not [a for a in plan.actions if isinstance(a, resize.ResizeClaim)]
