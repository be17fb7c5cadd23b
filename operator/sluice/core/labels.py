"""Labels, annotations and names that tie owned objects to their Pipeline."""

from __future__ import annotations

import hashlib
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

# Feldera's `stop?force=true`: stop without waiting for the pipeline's last checkpoint. Set by
# the REST API (or a user) beside desiredState: Stopped; the operator then shortens the pod's
# grace period to FORCE_STOP_GRACE_SECONDS and drops the mark when the pipeline starts again.
# An annotation, not spec: a GitOps tool leaves a field that git does not set alone.
FORCE_STOP = "sluice.dev/force-stop"
# Not 0: a pod deleted with 0 is removed from the API at once, before its process has
# exited, and pvc-protection would then let its claim go under a running process (rule 21).
FORCE_STOP_GRACE_SECONDS = 1

# VolumeSnapshots (external-snapshotter's CRDs).
SNAPSHOT_API_GROUP = "snapshot.storage.k8s.io"
SNAPSHOT_API_VERSION = "v1"

# A snapshot taken before a clear carries the pipeline's labels (name and UID) but no
# ownerReference: it must outlive a deleted Pipeline until it expires. These say what it is.
SNAPSHOT_OF_CLAIM = "sluice.dev/claim"
SNAPSHOT_EXPIRES_AT = "sluice.dev/expires-at"
SNAPSHOT_CLEAR_REQUEST = "sluice.dev/clear-request"
SNAPSHOT_FROM = "sluice.dev/pipeline-namespaced-name"  # namespace/name, for people


def claim_name_prefix(pipeline_name: str) -> str:
    return f"{pipeline_name}-storage-"


# generateName's alphabet (apimachinery's util/rand): no vowels, no look-alike characters.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def claim_name(pipeline_name: str, uid: str, claim_generation: int) -> str:
    """Deterministic per pipeline object and storage generation: two operators creating the
    claim at once create the same name, so the second gets 409 AlreadyExists instead of a
    second claim; after a clear the generation moves on, so a detached claim's name is
    never reused (rule 10), nor one of an earlier pipeline object of the same name."""
    digest = hashlib.sha256(f"{uid}/{claim_generation}".encode()).digest()
    suffix = "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])
    return f"{claim_name_prefix(pipeline_name)}{suffix}"


def snapshot_name(pipeline_name: str, claim: str) -> str:
    """The fixed name of the snapshot a clear takes of a claim: `<pipeline>-clear-<the
    claim's suffix>` (unique per pipeline object and claim generation, as the claim's name
    is), so a clear resumed after a crash finds the snapshot it already asked for."""
    prefix = claim_name_prefix(pipeline_name)
    if claim.startswith(prefix):
        return f"{pipeline_name}-clear-{claim[len(prefix) :]}"
    return f"{claim}-clear"[:253]


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """True when `obj` carries an ownerReference to the object with this UID."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def detached_from(obj: dict[str, Any], uid: str) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(DETACHED_FROM_UID) == uid)
