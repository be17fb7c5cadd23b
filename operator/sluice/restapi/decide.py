"""The pure part of the REST API: a Pipeline resource as Feldera's JSON, and what
/clear, /start, /stop and DELETE do to it (a merge patch to send, nothing, or an error).

No I/O here, so every rule is unit-tested without a cluster (tests/unit/test_restapi_*.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sluice.api import v1alpha1 as api
from sluice.core.decide import CANNOT_START_WHILE_CLEARING
from sluice.core.labels import FORCE_STOP
from sluice.restapi import feldera_types
from sluice.restapi.models import (
    ErrorResponse,
    PipelineInfo,
    PipelineStatusInfo,
    PipelineStatusWithConnectorsInfo,
    ProgramError,
)

PLATFORM_VERSION = "sluice-0.2.0"
DESCRIPTION_ANNOTATION = "sluice.dev/description"
PIPELINE_FAILED = "PipelineFailed"  # deployment_error when the pod failed

# A Pipeline's name is a DNS-1123 subdomain (the API server's rule for custom resources),
# at most api.MAX_NAME_LENGTH long (the CRD's CEL rule).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME = re.compile(NAME_PATTERN)

Selector = Literal["all", "status", "status_with_connectors"]


@dataclass
class ApiError(Exception):
    """An answer in the seed's error shape; raised anywhere, rendered by the app."""

    status: int
    error_code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return ErrorResponse(
            message=self.message, error_code=self.error_code, details=self.details
        ).model_dump()


# ---- errors ---------------------------------------------------------------------------


def unknown_pipeline(name: str) -> ApiError:
    # Exactly the seed's 404 example, with the name substituted.
    return ApiError(
        404, "UnknownPipelineName", f"Unknown pipeline name '{name}'", {"pipeline_name": name}
    )


def check_name(name: str) -> None:
    """A name no Pipeline can have (longer than api.MAX_NAME_LENGTH, or not a DNS-1123
    subdomain) names no pipeline: 404 UnknownPipelineName, as Feldera answers for any name
    it does not know (it checks a name's form only when a pipeline is created)."""
    if len(name) > api.MAX_NAME_LENGTH or not _NAME.match(name):
        raise unknown_pipeline(name)


def invalid_parameter(name: str, value: str, expected: list[str]) -> ApiError:
    return ApiError(
        400,
        "InvalidQueryParameter",
        f"Query parameter '{name}' has invalid value '{value}'; expected one of: "
        + ", ".join(expected),
        {"parameter": name, "value": value, "expected": expected},
    )


# ---- reading a Pipeline as Feldera's JSON ---------------------------------------------


def _status(obj: dict[str, Any]) -> api.PipelineStatus:
    return api.PipelineStatus.model_validate(obj.get("status") or {})


def clear_pending(obj: dict[str, Any]) -> bool:
    """A clearRequest (from git or a user's apply) or an actionClearRequest (this API's
    /clear, `kubectl sluice clear`, Argo CD's action) not handled yet."""
    storage = _status(obj).storage
    spec = ((obj.get("spec") or {}).get("storage")) or {}
    request = spec.get("clearRequest") or None
    action = spec.get("actionClearRequest") or None
    return (bool(request) and request != storage.last_clear_request) or (
        bool(action) and action != storage.last_action_clear_request
    )


def storage_status(obj: dict[str, Any]) -> str:
    """Feldera's storage_status. An accepted /clear shows as Clearing at once, as in Feldera,
    although the operator may not have picked it up yet (a request on Cleared storage is a
    no-op for the operator, so it stays Cleared)."""
    current = str(_status(obj).storage.status)
    if current == api.StorageStatus.IN_USE and clear_pending(obj):
        return api.StorageStatus.CLEARING.value
    return current


def storage_status_details(obj: dict[str, Any]) -> dict[str, Any]:
    return feldera_types.storage_status_details(_status(obj).storage)


def desired_state(obj: dict[str, Any]) -> str:
    return str((obj.get("spec") or {}).get("desiredState") or api.DesiredState.RUNNING.value)


def deployment_status(obj: dict[str, Any]) -> str:
    return str(_status(obj).deployment_status)


_RESOURCES = {
    api.DeploymentStatus.STOPPED: "Stopped",
    api.DeploymentStatus.PROVISIONING: "Provisioning",
    api.DeploymentStatus.RUNNING: "Provisioned",
    api.DeploymentStatus.STOPPING: "Stopping",
    api.DeploymentStatus.FAILED: "Provisioned",
}
# Feldera's combined status; a failed pod is "Unavailable" (provisioned, runtime unreachable).
_COMBINED = {
    api.DeploymentStatus.STOPPED: "Stopped",
    api.DeploymentStatus.PROVISIONING: "Provisioning",
    api.DeploymentStatus.RUNNING: "Running",
    api.DeploymentStatus.STOPPING: "Stopping",
    api.DeploymentStatus.FAILED: "Unavailable",
}
_RUNTIME = {api.DeploymentStatus.RUNNING: "Running", api.DeploymentStatus.FAILED: "Unavailable"}


def _since(status: api.PipelineStatus, created: str) -> str:
    # The conditions' newest transition is the last time the deployment changed.
    times = [c.last_transition_time for c in status.conditions if c.last_transition_time]
    return max(times, default=created)


def _deployment_error(status: api.PipelineStatus) -> dict[str, Any] | None:
    """status.error; for a failed pod (no error of the operator's own), the Running
    condition's words, which quote the pod's reason."""
    if status.error:
        return status.error.model_dump()
    if status.deployment_status != api.DeploymentStatus.FAILED:
        return None
    running = next((c for c in status.conditions if c.type == "Running"), None)
    return {
        "message": running.message if running and running.message else "The pod failed.",
        "error_code": PIPELINE_FAILED,
        "details": {"deployment_status": str(status.deployment_status)},
    }


def to_feldera(obj: dict[str, Any], selector: Selector = "all") -> dict[str, Any]:
    meta = obj["metadata"]
    status = _status(obj)
    created = str(meta.get("creationTimestamp") or "1970-01-01T00:00:00Z")
    since = _since(status, created)
    deployment = api.DeploymentStatus(status.deployment_status)
    running = desired_state(obj) == api.DesiredState.RUNNING
    runtime = _RUNTIME.get(deployment)
    generation = int(meta.get("generation") or 1)
    info: dict[str, Any] = {
        "id": meta.get("uid", ""),
        "name": meta["name"],
        "description": (meta.get("annotations") or {}).get(DESCRIPTION_ANNOTATION, ""),
        "tags": [],
        "created_at": created,
        "version": generation,
        "platform_version": PLATFORM_VERSION,
        "program_version": 1,
        "program_status": "Success",
        "program_status_since": created,
        "program_error": ProgramError(),
        "deployment_error": _deployment_error(status),
        "deployment_status": _COMBINED[deployment],
        "deployment_status_since": since,
        "deployment_desired_status": "Running" if running else "Stopped",
        "deployment_desired_status_since": since,
        "deployment_resources_status": _RESOURCES[deployment],
        "deployment_resources_status_since": since,
        "deployment_resources_desired_status": "Provisioned" if running else "Stopped",
        "deployment_resources_desired_status_since": since,
        "deployment_runtime_status": runtime,
        "deployment_runtime_status_details": None,
        "deployment_runtime_status_since": since if runtime else None,
        "deployment_runtime_desired_status": "Running" if running else None,
        "deployment_runtime_desired_status_since": since if running else None,
        "deployment_id": None,
        "deployment_initial": "Running" if running else None,
        "deployment_location": None,
        "refresh_version": generation,
        "storage_status": storage_status(obj),
        "storage_status_details": storage_status_details(obj),
    }
    if selector == "status":
        return PipelineStatusInfo.model_validate(info).model_dump(mode="json")
    if selector == "status_with_connectors":
        # Sluice runs an image and does not know its connectors: their statistics are null.
        info["connectors"] = None
        return PipelineStatusWithConnectorsInfo.model_validate(info).model_dump(mode="json")
    info |= {
        "program_code": "",
        "udf_rust": "",
        "udf_toml": "",
        "program_config": {},
        "program_info": None,
        "runtime_config": feldera_types.runtime_config(obj),
        "deployment_config": None,
    }
    return PipelineInfo.model_validate(info).model_dump(mode="json")


# ---- actions --------------------------------------------------------------------------


def _precondition(obj: dict[str, Any]) -> dict[str, Any]:
    # A merge patch carrying resourceVersion fails with 409 if the object changed since it
    # was read, so a decision is never applied to a state it was not made on.
    return {"resourceVersion": obj["metadata"]["resourceVersion"]}


def decide_clear(obj: dict[str, Any], token: str) -> dict[str, Any] | None:
    """The merge patch that requests a clear, None when there is nothing to do (202 either
    way), or ApiError(400) when the pipeline is not fully stopped (Feldera's rule)."""
    current = storage_status(obj)
    deployment, desired = deployment_status(obj), desired_state(obj)
    if deployment != api.DeploymentStatus.STOPPED or desired != api.DesiredState.STOPPED:
        resources = _RESOURCES[api.DeploymentStatus(deployment)]
        raise ApiError(
            400,
            "StorageStatusImmutableUnlessStopped",
            # Feldera's message, with its lower-case Display spellings.
            f"Cannot transition storage status from '{_snake(current)}' to 'clearing' with "
            f"resources status '{resources.lower()}'. Storage status cannot be changed unless "
            "the pipeline is stopped.",
            {
                "resources_status": resources,
                "current_status": current,
                "new_status": api.StorageStatus.CLEARING.value,
                "deployment_status": _COMBINED[api.DeploymentStatus(deployment)],
                "deployment_desired_status": desired,
            },
        )
    if current != api.StorageStatus.IN_USE:
        return None  # Cleared: nothing to clear; Clearing: already under way (Feldera: 202)
    # actionClearRequest, not clearRequest: a request made on the live object, as Argo CD's
    # clear-storage action makes one. clearRequest may be git's, and selfHeal would put
    # git's value back over ours (refused while Running: a failing sync; else a second clear).
    return {"metadata": _precondition(obj), "spec": {"storage": {"actionClearRequest": token}}}


def decide_start(obj: dict[str, Any]) -> dict[str, Any] | None:
    if storage_status(obj) == api.StorageStatus.CLEARING:
        raise ApiError(
            400,
            CANNOT_START_WHILE_CLEARING,
            "Cannot start the pipeline while its storage is being cleared; wait until "
            "storage_status is Cleared.",
            {"storage_status": api.StorageStatus.CLEARING.value},
        )
    if desired_state(obj) == api.DesiredState.RUNNING:
        return None
    return {"metadata": _precondition(obj), "spec": {"desiredState": "Running"}}


def decide_stop(obj: dict[str, Any], force: bool = False) -> dict[str, Any] | None:
    """/stop lets the pipeline take its last checkpoint within its grace period; with
    force=true the operator gives the pod 1 s (the force-stop mark), also to a stop already
    under way. None when there is nothing to change."""
    stopped = desired_state(obj) == api.DesiredState.STOPPED
    if not force:
        return None if stopped else {"metadata": _precondition(obj), "spec": _STOPPED}
    marked = FORCE_STOP in (obj["metadata"].get("annotations") or {})
    if stopped and (marked or deployment_status(obj) == api.DeploymentStatus.STOPPED):
        return None
    return {
        "metadata": {**_precondition(obj), "annotations": {FORCE_STOP: "true"}},
        "spec": _STOPPED,
    }


_STOPPED = {"desiredState": "Stopped"}


def decide_delete(obj: dict[str, Any]) -> tuple[str, str]:
    """Feldera's rules for DELETE: only a fully stopped pipeline (stopped and desired
    stopped) whose storage is cleared; else 400 with Feldera's codes and messages. Returns
    the delete preconditions (uid, resourceVersion): the state checked is the state deleted."""
    deployment, desired = deployment_status(obj), desired_state(obj)
    if deployment != api.DeploymentStatus.STOPPED or desired != api.DesiredState.STOPPED:
        raise ApiError(
            400,
            "DeleteRestrictedToFullyStopped",
            "Cannot delete a pipeline which is not fully stopped. Stop the pipeline first "
            "fully by invoking the '/stop' endpoint.",
            {
                "deployment_status": _COMBINED[api.DeploymentStatus(deployment)],
                "deployment_desired_status": desired,
            },
        )
    current = storage_status(obj)
    if current != api.StorageStatus.CLEARED:
        raise ApiError(
            400,
            "DeleteRestrictedToClearedStorage",
            "Cannot delete pipeline unless its storage is cleared. Clear storage first "
            "using `/clear`.",
            {"storage_status": current},
        )
    meta = obj["metadata"]
    return str(meta["uid"]), str(meta["resourceVersion"])


def _snake(status: str) -> str:
    return {"InUse": "in_use", "Cleared": "cleared", "Clearing": "clearing"}.get(status, status)


# ---- edits (PATCH /v0/pipelines/{name}) ------------------------------------------------

STORAGE_SIZE_FIELD = "runtime_config.resources.storage_mb_max"
EDIT_RESTRICTED = "EditRestrictedToClearedStorage"


def _not_editable(path: str) -> ApiError:
    return ApiError(
        400,
        "EditNotSupported",
        f"Sluice cannot change '{path}' through the REST API: a Pipeline is edited as a "
        "Kubernetes resource (kubectl apply, GitOps). The REST API edits `description` and "
        f"`{STORAGE_SIZE_FIELD}` (spec.storage.size) only.",
        {"field": path},
    )


def _changes(current: Any, new: Any, path: str) -> list[tuple[str, Any]]:
    """(path, value) for each field of `new` that differs from `current`; a field `new`
    leaves out is unchanged (Feldera's SDK sends the whole runtime_config, a person may not)."""
    if isinstance(new, dict) and isinstance(current, dict):
        out: list[tuple[str, Any]] = []
        for key, value in new.items():
            out += _changes(current.get(key), value, f"{path}.{key}")
        return out
    return [] if new == current else [(path, new)]


def decide_edit(obj: dict[str, Any], body: Any) -> dict[str, Any] | None:
    """Feldera's PATCH, on what Sluice can change: `description` (an annotation) and
    runtime_config.resources.storage_mb_max (spec.storage.size, in MB). Fields left out,
    null, or as GET shows them change nothing; anything else is 400 EditNotSupported. The
    API server judges the size as for any edit (EditRestrictedToClearedStorage where the
    storage is in use and cannot grow to it). None: nothing to change."""
    if not isinstance(body, dict):
        raise ApiError(
            400, "InvalidRequestBody", "The body must be a JSON object (PatchPipeline)", {}
        )
    current = to_feldera(obj, "all")
    patch: dict[str, Any] = {}
    for key, value in body.items():
        if value is None:
            continue  # PatchPipeline: null leaves the field as it is
        if key == "description":
            if not isinstance(value, str):
                raise ApiError(400, "InvalidRequestBody", "description must be a string", {})
            if value != current["description"]:
                patch["metadata"] = {"annotations": {DESCRIPTION_ANNOTATION: value}}
            continue
        for path, new in _changes(current.get(key), value, key):
            if path != STORAGE_SIZE_FIELD:
                raise _not_editable(path)
            if isinstance(new, bool) or not isinstance(new, int) or new < 1:
                raise ApiError(
                    400,
                    "InvalidRequestBody",
                    f"{STORAGE_SIZE_FIELD} must be a whole number of megabytes, at least 1",
                    {"field": path, "value": new},
                )
            patch["spec"] = {"storage": {"size": f"{new}M"}}
    if not patch:
        return None
    patch.setdefault("metadata", {}).update(_precondition(obj))
    return patch


def edit_refused(name: str, message: str) -> ApiError:
    """The API server refused an edit: Feldera's 400 EditRestrictedToClearedStorage when
    its rules on storage say so (the CRD's size rule, the storage-growth policy), in its own
    words; otherwise PipelineChangeRejected."""
    code = EDIT_RESTRICTED if EDIT_RESTRICTED in message else "PipelineChangeRejected"
    return ApiError(400, code, message, {"pipeline_name": name})
