"""What the operator sees of one pipeline: the resource and the objects it owns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.api import v1alpha1 as api
from sluice.core.autoscale import VolumeUsage
from sluice.core.labels import DETACHED_FROM_UID, PIPELINE_UID_LABEL, detached_from, owned_by


@dataclass(frozen=True)
class Observed:
    """Plain JSON objects as the API server returned them.

    `claims` holds every PVC carrying the pipeline's labels; `associated_claims`
    narrows that to the ones proven to belong to this very object (rule 13). `volumes`
    holds the PersistentVolumes (by name) bound to those claims or recorded by a clear in
    progress, read only while a clear may run (`volumes.volume_names_to_observe`).
    `volume_events` holds the Events about those of them waiting for their provisioner
    (`volumes.provisioner_to_ask`), by PV name: a CSI provisioner reports a failing deletion
    only there. `snapshots` holds the VolumeSnapshots labelled with the pipeline's name
    (of this object or of an earlier one of the same name; none has an ownerReference).
    `restore_source` is the VolumeSnapshot `spec.storage.restoreFrom` names, read only
    while a claim is to be created from it (None: it does not exist). `volume_usage` is what
    the kubelet last reported of each claim's volume (by claim name), kept only for
    pipelines with spec.storage.autoscaling (usage.py).
    """

    pipeline: dict[str, Any]
    statefulset: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    restore_source: dict[str, Any] | None = None
    # False when the cluster has no VolumeSnapshot API (the CRDs are not installed).
    snapshots_available: bool = True
    volume_usage: dict[str, VolumeUsage] = field(default_factory=dict)
    # The owned StatefulSet's FailedCreate Events (its controller's only account of a pod
    # the API server refused, e.g. by Pod Security admission), read only while it has none.
    statefulset_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.pipeline["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pipeline["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.pipeline["metadata"]["uid"])

    @property
    def generation(self) -> int:
        return int(self.pipeline["metadata"].get("generation", 0))

    @property
    def deleting(self) -> bool:
        return bool(self.pipeline["metadata"].get("deletionTimestamp"))

    @property
    def finalizers(self) -> list[str]:
        return list(self.pipeline["metadata"].get("finalizers") or [])

    @property
    def spec(self) -> api.PipelineSpec:
        return api.PipelineSpec.model_validate(self.pipeline.get("spec") or {})

    @property
    def status(self) -> api.PipelineStatus:
        return api.PipelineStatus.model_validate(self.pipeline.get("status") or {})

    def owns(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and owned_by(obj, self.uid)

    @property
    def associated_claims(self) -> list[dict[str, Any]]:
        """Owned, not detached claims, oldest first."""
        claims = [
            c
            for c in self.claims
            if owned_by(c, self.uid)
            and DETACHED_FROM_UID not in (c["metadata"].get("annotations") or {})
        ]
        return sorted(
            claims,
            key=lambda c: (c["metadata"].get("creationTimestamp", ""), c["metadata"]["name"]),
        )

    @property
    def detached_claims(self) -> list[dict[str, Any]]:
        """Claims this very object detached (the operator's mark carries its UID)."""
        return [c for c in self.claims if detached_from(c, self.uid)]

    @property
    def owned_statefulset(self) -> dict[str, Any] | None:
        return self.statefulset if self.owns(self.statefulset) else None

    @property
    def owned_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods if _pod_belongs(p, self.uid)]


def _pod_belongs(pod: dict[str, Any], uid: str) -> bool:
    return bool((pod["metadata"].get("labels") or {}).get(PIPELINE_UID_LABEL) == uid)
