"""Storage autoscaling (spec.storage.autoscaling): a claim whose volume is fuller than the
threshold grows by a step, up to maxSize, without a clear. Pure: decides from the claims and
the volume usage the kubelet last reported for them (usage.py reads it); the growth itself is
a resize.ResizeClaim, as when spec.storage.size grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sluice.api import v1alpha1 as api
from sluice.core import resize

GROWN_EVENT = "StorageAutoscaled"
AT_MAX_CONDITION = "StorageAtMaxSize"
AT_MAX_REASON = "AutoscalingLimitReached"
MI = 1 << 20


@dataclass(frozen=True)
class VolumeUsage:
    """One claim's volume as the kubelet last measured it (its Summary API)."""

    used_bytes: int
    capacity_bytes: int
    measured_at: str | None = None  # the kubelet's own time of the measurement (RFC 3339)

    @property
    def percent(self) -> float:
        return 100.0 * self.used_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass(frozen=True)
class Full:
    """A claim over the threshold that cannot grow: it is at maxSize already."""

    claim: str
    usage: VolumeUsage
    max_size: str


@dataclass(frozen=True)
class Decision:
    grow: list[resize.ResizeClaim]
    messages: list[str]  # one per growth, for its Event
    full: list[Full]


def _mib(n: Decimal) -> str:
    return f"{math.ceil(n / MI)}Mi"


def step_bytes(step: int | str, capacity: Decimal) -> Decimal:
    """What one growth adds: a share of the capacity now, or an amount."""
    text = str(step).strip()
    if text.endswith("%"):
        return capacity * Decimal(text[:-1]) / 100
    return resize.quantity_bytes(text)


def over_threshold(autoscaling: api.StorageAutoscaling, usage: VolumeUsage) -> bool:
    return usage.percent >= autoscaling.usage_threshold_percent


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def fresh(usage: VolumeUsage, resized_at: str | None) -> bool:
    """Measured after the last resize completed: the kubelet measures on its own schedule
    (every minute by default), so a reading taken before the file system grew still shows
    the old size; growing again on it would take two steps for one."""
    if resized_at is None:
        return True
    return usage.measured_at is not None and _seconds(usage.measured_at) > _seconds(resized_at)


def decide(
    autoscaling: api.StorageAutoscaling,
    claims: list[dict[str, Any]],
    usage: dict[str, VolumeUsage],
    resized_at: str | None = None,
) -> Decision:
    """For each claim over the threshold whose last resize is done (its capacity has reached
    its request) and measured since (`resized_at`): a ResizeClaim by one step, capped at
    maxSize; or, already at maxSize, a Full. A claim with no fresh reading, or still
    resizing, is left alone."""
    maximum = resize.quantity_bytes(autoscaling.max_size)
    decision = Decision([], [], [])
    for claim in claims:
        name = claim["metadata"]["name"]
        measured = usage.get(name)
        if measured is not None and not fresh(measured, resized_at):
            continue
        requested, current = resize.requested(claim), resize.capacity(claim)
        if measured is None or requested is None or current is None:
            continue
        if not over_threshold(autoscaling, measured):
            continue
        request_bytes = resize.quantity_bytes(requested)
        if resize.quantity_bytes(current) < request_bytes:
            continue  # the last growth is still under way: measure its result first
        if request_bytes >= maximum:
            decision.full.append(Full(name, measured, str(autoscaling.max_size).strip()))
            continue
        base = resize.quantity_bytes(current)
        target = min(maximum, base + max(step_bytes(autoscaling.step, base), Decimal(MI)))
        size = _mib(target) if target < maximum else str(autoscaling.max_size).strip()
        decision.grow.append(resize.ResizeClaim(name, size))
        decision.messages.append(
            f"Claim {name}'s volume is {measured.percent:.0f}% full "
            f"({_mib(Decimal(measured.used_bytes))} of {_mib(Decimal(measured.capacity_bytes))}, "
            f"threshold {autoscaling.usage_threshold_percent}%): growing it from {current} "
            f"to {size} (spec.storage.autoscaling, maxSize {str(autoscaling.max_size).strip()})."
        )
    return decision


def full_message(full: list[Full]) -> str:
    return " ".join(
        f"Claim {f.claim}'s volume is {f.usage.percent:.0f}% full and already at "
        f"spec.storage.autoscaling.maxSize ({f.max_size}): raise maxSize, or free space "
        "(a clear deletes the pipeline's state)."
        for f in full
    )
