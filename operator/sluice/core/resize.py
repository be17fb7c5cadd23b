"""Storage that grows in place (contract rule 12): when spec.storage.size is above a claim's
request, the claim is patched to it; the volume's CSI driver (through the external resizer
and the kubelet) grows it while the pipeline keeps running. Pure: decides from the claims as
observed; the API server refuses a claim whose StorageClass cannot expand, in its own words.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# The claim conditions the external resizer and the kubelet write while a resize is pending.
RESIZE_ERRORS = ("ControllerResizeError", "NodeResizeError")
FILE_SYSTEM_PENDING = "FileSystemResizePending"

RESIZING_CONDITION = "StorageResizing"
RESIZE_FAILED_EVENT = "StorageResizeFailed"


@dataclass(frozen=True)
class ResizeClaim:
    """Ask for a larger volume: the claim's spec.resources.requests.storage becomes `size`."""

    name: str
    size: str


@dataclass(frozen=True)
class Resize:
    """Where one claim's resize stands."""

    claim: str
    requested: str  # the claim's request (what it was resized to)
    capacity: str | None  # what the volume has now (status.capacity), None before Bound
    reason: str  # Resizing, FileSystemResizePending, or the resize error's type
    message: str


def quantity_bytes(quantity: Any) -> Decimal:
    return Decimal(parse_quantity(str(quantity).strip()))  # type: ignore[no-untyped-call]


def requested(claim: dict[str, Any]) -> str | None:
    spec = claim.get("spec") or {}
    requests = (spec.get("resources") or {}).get("requests") or {}
    value = requests.get("storage")
    return str(value) if value is not None else None


def capacity(claim: dict[str, Any]) -> str | None:
    value = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    return str(value) if value is not None else None


def grow(claims: list[dict[str, Any]], size: Any) -> list[ResizeClaim]:
    """A ResizeClaim for each claim whose request is below `size` (spec.storage.size).
    Never a smaller request: shrinking is refused at apply time (the CRD's rule)."""
    wanted = quantity_bytes(size)
    out = []
    for claim in claims:
        request = requested(claim)
        if request is not None and quantity_bytes(request) < wanted:
            out.append(ResizeClaim(claim["metadata"]["name"], str(size).strip()))
    return out


def pending(claims: list[dict[str, Any]]) -> list[Resize]:
    """The claims whose volume is still smaller than their request (a resize under way or
    failing), with the resizer's or the kubelet's own words when they wrote any."""
    out = []
    for claim in claims:
        request, current = requested(claim), capacity(claim)
        if request is None or current is None or quantity_bytes(current) >= quantity_bytes(request):
            continue
        conditions = {c.get("type"): c for c in (claim.get("status") or {}).get("conditions") or []}
        failed = next((conditions[t] for t in RESIZE_ERRORS if t in conditions), None)
        name = claim["metadata"]["name"]
        if failed is not None:
            reason = str(failed["type"])
            message = f"Growing claim {name} to {request} failed: {failed.get('message', '')}"
        elif FILE_SYSTEM_PENDING in conditions:
            reason = FILE_SYSTEM_PENDING
            message = (
                f"Claim {name}'s volume is {request}; its filesystem grows when the kubelet "
                "next mounts it (the pipeline's next start)."
            )
        else:
            reason = "Resizing"
            message = f"Claim {name} is growing from {current} to {request}."
        out.append(Resize(name, request, current, reason, message))
    return out
