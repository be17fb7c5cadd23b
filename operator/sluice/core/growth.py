"""Storage that grows (contract rule 12), for core/decide.py: a larger spec.storage.size
patches the claims, autoscaling (spec.storage.autoscaling) grows a filling volume by a step;
the conditions StorageResizing and StorageAtMaxSize say how far it got. Pure."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import StorageStatus
from sluice.core import autoscale, resize
from sluice.core.conditions import condition
from sluice.core.observed import Observed
from sluice.core.plan import Event, Plan


def grow(observed: Observed, plan: Plan) -> None:
    """Grow claims below spec.storage.size in place (rule 12), and say how far it got."""
    live = live_claims(observed)
    plan.status.storage.capacity = resize.capacity(live[0]) if live else None
    for action in resize.grow(live, observed.spec.storage.size):
        plan.actions.append(action)
        plan.events.append(
            Event(
                "Normal",
                resize.RESIZING_CONDITION,
                f"Growing claim {action.name} to {action.size}.",
            )
        )


def live_claims(observed: Observed) -> list[dict[str, Any]]:
    return [c for c in observed.associated_claims if not c["metadata"].get("deletionTimestamp")]


def autoscale_claims(observed: Observed, plan: Plan, now: str) -> None:
    """spec.storage.autoscaling: grow a claim whose volume is over the threshold by a step
    (an Event says why), unless spec.storage.size already grows it in this step."""
    settings = observed.spec.storage.autoscaling
    if settings is None:
        return
    growing = {a.name for a in plan.actions if isinstance(a, resize.ResizeClaim)}
    claims = [c for c in live_claims(observed) if c["metadata"]["name"] not in growing]
    decision = autoscale.decide(settings, claims, observed.volume_usage, _resized_at(observed, now))
    plan.actions.extend(decision.grow)
    plan.events.extend(Event("Normal", autoscale.GROWN_EVENT, m) for m in decision.messages)


def _resized_at(observed: Observed, now: str) -> str | None:
    """When the last resize was seen complete: when StorageResizing turned False, or now if
    it is still True (complete now, or still under way, when autoscaling waits anyway)."""
    resizing = next(
        (c for c in observed.status.conditions if c.type == resize.RESIZING_CONDITION), None
    )
    if resizing is None:
        return None
    return now if resizing.status == "True" else resizing.last_transition_time


def at_max_size_condition(
    observed: Observed, old: api.PipelineStatus, now: str, plan: Plan
) -> list[api.Condition]:
    """StorageAtMaxSize: True (with a Warning Event when it becomes so) while a volume over
    the autoscaling threshold cannot grow because its claim is at maxSize; False once that
    is no longer so; absent on a pipeline that never got there."""
    previous = {c.type: c for c in old.conditions}
    before = previous.get(autoscale.AT_MAX_CONDITION)
    settings = observed.spec.storage.autoscaling
    full: list[autoscale.Full] = []
    if settings is not None and plan.status.storage.status == StorageStatus.IN_USE:
        usage, resized_at = observed.volume_usage, _resized_at(observed, now)
        full = autoscale.decide(settings, live_claims(observed), usage, resized_at).full
    if not full and before is None:
        return []
    if full:
        message = autoscale.full_message(full)
        if before is None or before.status != "True":
            plan.events.append(Event("Warning", autoscale.AT_MAX_CONDITION, message))
        status, reason = "True", autoscale.AT_MAX_REASON
    else:
        status, reason = "False", "BelowMaxSize"
        message = "Every volume is below the autoscaling threshold or can still grow."
    return [
        condition(
            autoscale.AT_MAX_CONDITION,
            status,
            reason,
            message,
            previous,
            now,
            observed.generation,
        )
    ]


def resizing_condition(
    observed: Observed, old: api.PipelineStatus, now: str, plan: Plan
) -> list[api.Condition]:
    """StorageResizing: True while a claim's volume is below its request (with the resizer's
    words when it failed, and a Warning Event once per failure); False once it has grown;
    absent on a pipeline that never grew."""
    previous = {c.type: c for c in old.conditions}
    before = previous.get(resize.RESIZING_CONDITION)
    live = live_claims(observed)
    if plan.status.storage.status != StorageStatus.IN_USE:
        return []
    under_way = resize.pending(live)
    if under_way:
        reason = under_way[0].reason
        message = " ".join(r.message for r in under_way)
        failed = reason in resize.RESIZE_ERRORS
        if failed and (before is None or before.message != message):
            plan.events.append(Event("Warning", resize.RESIZE_FAILED_EVENT, message))
        return [
            condition(
                resize.RESIZING_CONDITION,
                "True",
                reason,
                message,
                previous,
                now,
                observed.generation,
            )
        ]
    growing = [a for a in plan.actions if isinstance(a, resize.ResizeClaim)]
    if before is None and not growing:
        return []
    if growing:
        return [
            condition(
                resize.RESIZING_CONDITION,
                "True",
                "Resizing",
                "Growing " + ", ".join(f"claim {a.name} to {a.size}" for a in growing) + ".",
                previous,
                now,
                observed.generation,
            )
        ]
    message = f"Claims have the size asked for (capacity {plan.status.storage.capacity})."
    return [
        condition(
            resize.RESIZING_CONDITION,
            "False",
            "Resized",
            message,
            previous,
            now,
            observed.generation,
        )
    ]
