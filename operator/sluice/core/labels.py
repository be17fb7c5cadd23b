"""Labels, annotations and names that tie owned objects to their Pipeline."""

from __future__ import annotations

from typing import Any

PIPELINE_LABEL = "sluice.dev/pipeline"
PIPELINE_UID_LABEL = "sluice.dev/pipeline-uid"
FINALIZER = "sluice.dev/clear-storage"

# The operator's mark on a detached claim: which pipeline object it came from, and when.
DETACHED_LABEL = "sluice.dev/detached"
DETACHED_FROM_UID = "sluice.dev/detached-from-uid"
DETACHED_FROM = "sluice.dev/detached-from"
DETACHED_AT = "sluice.dev/detached-at"

STORAGE_MOUNT_PATH = "/storage"


def claim_name_prefix(pipeline_name: str) -> str:
    return f"{pipeline_name}-storage-"


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """True when `obj` carries an ownerReference to the object with this UID."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def detached_from(obj: dict[str, Any], uid: str) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(DETACHED_FROM_UID) == uid)
