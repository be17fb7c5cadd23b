"""The kstatus conditions, `Reconciling` and `Stalled`, so that Flux, kpt and cli-utils
judge a Pipeline as the Argo CD health check does (deploy/argocd/.../health.lua):

    Argo CD      kstatus       conditions
    Healthy      Current       Ready=True,  Reconciling=False, Stalled=False
    Suspended    Current       Ready=True,  Reconciling=False, Stalled=False
    Progressing  InProgress    Ready=False, Reconciling=True,  Stalled=False
    Degraded     Failed        Ready=False, Reconciling=False, Stalled=True

Both are "abnormal-true" (kstatus's convention): True means attention, False means
normal. Stalled is True when a person is needed: an error (status.error) other than those
that resolve themselves (`resolves_itself`), or a failed pod.
kstatus also reads status.observedGeneration: behind metadata.generation is InProgress.
Pure, like the rest of core/.
"""

from __future__ import annotations

from sluice.api import v1alpha1 as api
from sluice.api.v1alpha1 import DeploymentStatus
from sluice.core.conditions import condition

RECONCILING, STALLED, READY = "Reconciling", "Stalled", "Ready"
CANNOT_START_WHILE_CLEARING = "CannotStartWhileClearingStorage"
POD_FAILED = "PodFailed"

# (type, is true, reason, message), the shape decide._conditions builds its list from.
Wanted = tuple[str, bool, str, str]


# core/snapshots.py's: a restore waiting for its snapshot to become ready.
RESTORE_SNAPSHOT_NOT_READY = "RestoreSnapshotNotReady"


def resolves_itself(error: api.PipelineError) -> bool:
    """Errors that go away without a person: a start waiting for a clear, and a restore
    waiting for a snapshot that is being taken (no error from the snapshot controller)."""
    if error.error_code == CANNOT_START_WHILE_CLEARING:
        return True
    return error.error_code == RESTORE_SNAPSHOT_NOT_READY and not (error.details or {}).get(
        "snapshot_error"
    )


def stalled_by(status: api.PipelineStatus, pod_problem: str | None) -> tuple[str, str] | None:
    """(reason, message) when the pipeline needs a person, else None."""
    error = status.error
    if error is not None and not resolves_itself(error):
        return error.error_code, error.message
    if status.deployment_status == DeploymentStatus.FAILED:
        return POD_FAILED, pod_problem or "The pipeline's pod failed."
    return None


def reconciling_and_stalled(
    status: api.PipelineStatus,
    settled: bool,
    progress_reason: str,
    progress_message: str,
    pod_problem: str | None,
) -> list[Wanted]:
    """The two kstatus conditions, consistent with Ready (`settled`): at most one is True,
    and neither while Ready is True."""
    stalled = stalled_by(status, pod_problem)
    reconciling = not settled and stalled is None
    if reconciling:
        why = (progress_reason, progress_message)
    elif stalled:
        why = ("Stalled", "Not progressing by itself: see the Stalled condition.")
    else:
        why = ("Settled", "Nothing left to do.")
    return [
        (RECONCILING, reconciling, *why),
        (
            STALLED,
            stalled is not None,
            *(stalled or ("NotStalled", "Nothing needs attention.")),
        ),
    ]


def failed_conditions(
    conditions: list[api.Condition], error: api.PipelineError, generation: int, now: str
) -> list[api.Condition]:
    """The conditions to write with status.error after a failed reconcile: Stalled=True with
    the error, Ready and Reconciling False; the others (Running, StorageCleared) as they were."""
    wanted = {
        READY: ("False", error.error_code, error.message),
        RECONCILING: ("False", "Stalled", "Not progressing by itself: see the Stalled condition."),
        STALLED: ("True", error.error_code, error.message),
    }
    out = [c for c in conditions if c.type not in wanted]
    previous = {c.type: c for c in conditions}
    for type_, (value, reason, message) in wanted.items():
        out.append(condition(type_, value, reason, message, previous, now, generation))
    return out
