"""Storage autoscaling (spec.storage.autoscaling), decided by the pure core: a claim whose
volume the kubelet reports fuller than the threshold grows by one step, capped at maxSize,
with an Event; at maxSize a Warning and the condition StorageAtMaxSize; never while a
growth is under way, a clear is pending, or without a reading."""

from __future__ import annotations

from typing import Any

import pytest
from sluice.api import v1alpha1 as api
from sluice.core import autoscale, resize
from sluice.core import decide as d
from sluice.core.autoscale import VolumeUsage
from sluice.core.observed import Observed

from .test_decide import NOW, pipeline, settled_status
from .test_grow import sized_claim

MI = 1 << 20
CLAIM = "orders-storage-abcde"


def decided(
    claim_: dict[str, Any],
    used_mib: float | None,
    autoscaling: dict[str, Any] | None,
    status: dict[str, Any] | None = None,
    size: str = "64Mi",
    **spec: Any,
) -> d.Plan:
    obj = pipeline(desired="Running", status=status or settled_status())
    obj["spec"]["storage"]["size"] = size
    obj["spec"].update(spec)
    if autoscaling is not None:
        obj["spec"]["storage"]["autoscaling"] = autoscaling
    capacity = resize.quantity_bytes(resize.capacity(claim_) or "0")
    usage = {} if used_mib is None else {CLAIM: VolumeUsage(int(used_mib * MI), int(capacity))}
    return d.decide(Observed(obj, claims=[claim_], volume_usage=usage), NOW)


def grows(plan: d.Plan) -> list[resize.ResizeClaim]:
    return [a for a in plan.actions if isinstance(a, resize.ResizeClaim)]


def at_max(plan: d.Plan) -> Any:
    return next((c for c in plan.status.conditions if c.type == autoscale.AT_MAX_CONDITION), None)


SETTINGS = {"maxSize": "192Mi", "usageThresholdPercent": 80, "step": "50%"}


def test_a_volume_over_the_threshold_grows_by_a_step_with_an_event() -> None:
    plan = decided(sized_claim("64Mi", "64Mi"), 56, SETTINGS)
    assert grows(plan) == [resize.ResizeClaim(CLAIM, "96Mi")]
    [event] = [e for e in plan.events if e.reason == autoscale.GROWN_EVENT]
    assert event.type == "Normal"
    assert "88% full" in event.message and "from 64Mi to 96Mi" in event.message
    assert at_max(plan) is None


def test_under_the_threshold_or_without_a_reading_nothing_grows() -> None:
    for used in (0, 51, None):  # 80% of 64Mi is 51.2Mi
        plan = decided(sized_claim("64Mi", "64Mi"), used, SETTINGS)
        assert grows(plan) == [], used
        assert not [e for e in plan.events if e.reason == autoscale.GROWN_EVENT]
    # And only when asked: the same full volume without spec.storage.autoscaling.
    assert grows(decided(sized_claim("64Mi", "64Mi"), 63, None)) == []


def test_the_threshold_is_inclusive_and_read_from_the_spec() -> None:
    exactly = {**SETTINGS, "usageThresholdPercent": 50}
    assert grows(decided(sized_claim("64Mi", "64Mi"), 32, exactly)) != []
    assert grows(decided(sized_claim("64Mi", "64Mi"), 31.9, exactly)) == []


@pytest.mark.parametrize(
    ("step", "expected"),
    [("50%", "96Mi"), ("1%", "65Mi"), ("10Mi", "74Mi"), ("1Gi", "192Mi"), ("1000%", "192Mi")],
)
def test_each_step_is_a_share_or_an_amount_capped_at_max_size(step: str, expected: str) -> None:
    plan = decided(sized_claim("64Mi", "64Mi"), 60, {**SETTINGS, "step": step})
    assert grows(plan) == [resize.ResizeClaim(CLAIM, expected)]


def test_a_growth_under_way_is_measured_before_the_next() -> None:
    plan = decided(sized_claim("96Mi", "64Mi"), 60, SETTINGS)
    assert grows(plan) == []


def test_at_max_size_a_warning_and_a_condition_once_then_false_when_it_eases() -> None:
    plan = decided(sized_claim("192Mi", "192Mi"), 180, SETTINGS)
    assert grows(plan) == []
    condition = at_max(plan)
    assert (condition.status, condition.reason) == ("True", autoscale.AT_MAX_REASON)
    assert "spec.storage.autoscaling.maxSize (192Mi)" in condition.message
    [warning] = [e for e in plan.events if e.reason == autoscale.AT_MAX_CONDITION]
    assert warning.type == "Warning"
    stored = plan.status.model_dump(by_alias=True, mode="json")
    again = decided(sized_claim("192Mi", "192Mi"), 181, SETTINGS, status=stored)
    assert at_max(again).status == "True"
    assert not [e for e in again.events if e.reason == autoscale.AT_MAX_CONDITION]
    eased = decided(sized_claim("192Mi", "192Mi"), 20, SETTINGS, status=stored)
    assert at_max(eased).status == "False"
    raised = decided(sized_claim("192Mi", "192Mi"), 180, {**SETTINGS, "maxSize": "1Gi"}, stored)
    assert at_max(raised).status == "False"
    assert grows(raised) == [resize.ResizeClaim(CLAIM, "288Mi")]


def test_a_larger_spec_size_wins_over_a_step_in_the_same_decision() -> None:
    plan = decided(sized_claim("64Mi", "64Mi"), 60, SETTINGS, size="128Mi")
    assert grows(plan) == [resize.ResizeClaim(CLAIM, "128Mi")]
    assert not [e for e in plan.events if e.reason == autoscale.GROWN_EVENT]


def test_an_autoscaled_claim_larger_than_spec_size_is_never_shrunk() -> None:
    plan = decided(sized_claim("96Mi", "96Mi"), 10, SETTINGS, size="64Mi")
    assert grows(plan) == []
    assert plan.status.storage.capacity == "96Mi"


def test_a_stopped_pipeline_grows_but_not_once_a_clear_is_asked_for() -> None:
    claim_ = sized_claim("64Mi", "64Mi")
    assert grows(decided(claim_, 63, SETTINGS, desiredState="Stopped")) != []
    obj = pipeline(desired="Stopped", status=settled_status())
    obj["spec"]["storage"].update(size="64Mi", autoscaling=SETTINGS, clearRequest="now")
    usage = {CLAIM: VolumeUsage(63 * MI, 64 * MI)}
    assert grows(d.decide(Observed(obj, claims=[claim_], volume_usage=usage), NOW)) == []


def test_the_settings_defaults() -> None:
    settings = api.StorageAutoscaling.model_validate({"maxSize": "10Gi"})
    assert (settings.usage_threshold_percent, settings.step) == (80, "25%")


def _with_usage(claim_: dict[str, Any], used_mib: int, measured_at: str, status: Any) -> d.Plan:
    obj = pipeline(desired="Running", status=status)
    obj["spec"]["storage"].update(size="64Mi", autoscaling=SETTINGS)
    usage = {CLAIM: VolumeUsage(used_mib * MI, 59 * MI, measured_at)}
    return d.decide(Observed(obj, claims=[claim_], volume_usage=usage), NOW)


def test_a_reading_from_before_the_last_resize_completed_is_not_acted_on() -> None:
    """The kubelet measures on its own schedule: right after a growth its last reading may
    still show the old file system, fuller than the threshold. Found on the real node: that
    reading declared the grown volume at maxSize."""
    growing = decided(sized_claim("64Mi", "64Mi"), 56, SETTINGS).status
    stored = growing.model_dump(by_alias=True, mode="json")
    assert any(
        c["type"] == "StorageResizing" and c["status"] == "True" for c in stored["conditions"]
    )
    # Grown (capacity reached the request) and seen so now: an older reading counts for nothing.
    stale = _with_usage(sized_claim("128Mi", "128Mi"), 56, "2026-11-28T09:59:59Z", stored)
    assert grows(stale) == [] and at_max(stale) is None
    done = stale.status.model_dump(by_alias=True, mode="json")
    # Measured after the resize was seen complete: it counts.
    fresh = _with_usage(sized_claim("128Mi", "128Mi"), 120, "2026-11-28T10:00:01Z", done)
    assert grows(fresh) == [resize.ResizeClaim(CLAIM, "192Mi")]
