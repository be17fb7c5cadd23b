"""One metav1.Condition, keeping its lastTransitionTime while its status stays the same."""

from __future__ import annotations

from sluice.api import v1alpha1 as api

MAX_MESSAGE = 32768  # the schema's limit (metav1.Condition's)


def condition(
    type_: str,
    value: str,
    reason: str,
    message: str,
    previous: dict[str, api.Condition],
    now: str,
    generation: int,
) -> api.Condition:
    before = previous.get(type_)
    since = now if before is None or before.status != value else before.last_transition_time
    return api.Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:MAX_MESSAGE],
        last_transition_time=since,
        observed_generation=generation,
    )
