"""What one decision produces (core/decide.py): the actions the controller executes in
order, the Events it posts, and the status it writes. Plain data, no logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import StorageStatus
from sluice.core import resize, snapshots
from sluice.core.labels import FINALIZER

# ---- actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddFinalizer:
    finalizer: str = FINALIZER


@dataclass(frozen=True)
class RemoveFinalizer:
    finalizer: str = FINALIZER


@dataclass(frozen=True)
class Create:
    """Create an owned object (claim, Service, StatefulSet)."""

    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


@dataclass(frozen=True)
class UpdateContainer:
    """Roll the StatefulSet to a new image or resources."""

    statefulset: str
    container: dict[str, Any]


@dataclass(frozen=True)
class DeleteStatefulSet:
    """Delete the StatefulSet (background propagation), after its pod was deleted by
    DeletePod with the grace period the Pipeline asks for now: the garbage collector's own
    deletion of that pod comes second and changes nothing (a deletion only ever shortens a
    pending one's grace period, and the collector asks for the template's), and the
    StatefulSet controller never replaces a terminating pod. Not orphaning the pod also
    spares the garbage collector two writes per stop (the pod's ownerReference, the orphan
    finalizer) out of kube-controller-manager's small request budget, which its volume
    deletions share: with 100 stops at once that was the difference to its own clears."""

    name: str
    uid: str


@dataclass(frozen=True)
class DeletePod:
    """Delete a stopping pipeline's pod with the grace period the Pipeline asks for now
    (None: the pod's own). The API server only ever shortens a deletion's grace period, so
    this is safe to repeat; but a kubelet keeps the grace period of the first deletion it
    acted on (kubernetes/kubernetes#83916), so a force must come with the stop itself."""

    name: str
    uid: str
    grace_period_seconds: int | None


@dataclass(frozen=True)
class RemoveForceStop:
    """Drop the force-stop mark once the pipeline runs again: it was for one stop."""


@dataclass(frozen=True)
class DeleteClaim:
    name: str
    uid: str


@dataclass(frozen=True)
class DetachClaim:
    """Drop the pipeline's ownerReference and set the operator's detached mark, atomically."""

    name: str
    uid: str
    resource_version: str
    owner_references: list[dict[str, Any]]
    labels: dict[str, str]
    annotations: dict[str, str]


Action = (
    AddFinalizer
    | RemoveFinalizer
    | Create
    | UpdateContainer
    | DeleteStatefulSet
    | DeletePod
    | RemoveForceStop
    | DeleteClaim
    | DetachClaim
    | snapshots.CreateSnapshot
    | snapshots.DeleteSnapshot
    | resize.ResizeClaim
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    # A transition that must be recorded exactly once, also across a crash (a clear's start
    # and end, a handled request): its identity, stable when the step is retried. Such an
    # Event gets a name derived from it and is posted before the status write that records
    # the transition, so a retry finds it there (409) instead of losing or doubling it.
    once: str | None = None


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: api.PipelineStatus = field(default_factory=api.PipelineStatus)
    events: list[Event] = field(default_factory=list)
    # Waiting on something no watch reports (a provisioner deleting a volume): look again
    # later, with backoff, even if no event arrives.
    recheck: bool = False
    # The longest wait between two such looks: short while a provisioner is at work, the
    # work queue's full backoff once its deletion has failed.
    recheck_max_delay: float | None = None
    # While Clearing: what the clear is waiting for, for the StorageCleared condition.
    waiting_for: str | None = None
    # Come back after this many seconds even if nothing changes (the next snapshot expiry,
    # the time to ask a slow provisioner why: volumes.ask_provisioner_in).
    requeue_after: float | None = None
    # The recheck waits on something no watch of the operator reports at all (a user's
    # VolumeSnapshot to restore from): back off, also where PVs are watched.
    recheck_unwatched: bool = False

    @property
    def starts_clearing(self) -> bool:
        return self.status.storage.status == StorageStatus.CLEARING

    @property
    def is_settled(self) -> bool:
        return not self.actions
