"""The JSON the REST API speaks, as pydantic models: Feldera's field names and spellings.

The OpenAPI document (openapi.py) is generated from these models, and the handlers
serialize through them, so what is documented and what is served cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Feldera's combined deployment status. Sluice produces a subset: Stopped, Provisioning,
# Running, Unavailable (compute present but failed) and Stopping.
FelderaDeploymentStatus = Literal[
    "Stopped",
    "Provisioning",
    "Unavailable",
    "Standby",
    "AwaitingApproval",
    "Initializing",
    "Bootstrapping",
    "Replaying",
    "Paused",
    "Running",
    "Suspended",
    "Stopping",
]
FelderaDesiredStatus = Literal[
    "Stopped", "Unavailable", "Standby", "Paused", "Running", "Suspended"
]
ResourcesStatus = Literal["Stopped", "Provisioning", "Provisioned", "Stopping"]
ResourcesDesiredStatus = Literal["Stopped", "Provisioned"]
RuntimeStatus = Literal[
    "Unavailable",
    "Standby",
    "AwaitingApproval",
    "Initializing",
    "Bootstrapping",
    "Replaying",
    "Paused",
    "Running",
    "Suspended",
]
FelderaStorageStatus = Literal["Cleared", "InUse", "Clearing"]
ProgramStatus = Literal[
    "Pending",
    "CompilingSql",
    "SqlCompiled",
    "CompilingRust",
    "Success",
    "SqlError",
    "RustError",
    "SystemError",
]


class _Strict(BaseModel):
    # Responses never carry fields the document does not list (schemathesis checks this).
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(_Strict):
    """Information returned by REST API endpoints on error."""

    message: str = Field(description="Human-readable error message.")
    error_code: str = Field(description="Error code is a string that specifies this error type.")
    details: dict[str, Any] = Field(
        description="Detailed error metadata. The contents of this field is determined by "
        "`error_code`."
    )


class ProgramError(_Strict):
    """Compilation errors; a Sluice pipeline runs a container image, so never any."""

    sql_compilation: dict[str, Any] | None = None
    rust_compilation: dict[str, Any] | None = None
    system_error: str | None = None


class PipelineStatusInfo(_Strict):
    """A pipeline with `selector=status`: the fields needed to follow its lifecycle."""

    id: str = Field(description="Pipeline identifier (the resource's metadata.uid).")
    name: str = Field(description="Unique pipeline name (the resource's metadata.name).")
    description: str = Field(description="Pipeline description (sluice.dev/description).")
    created_at: str = Field(
        description="Creation timestamp.", json_schema_extra={"format": "date-time"}
    )
    version: int = Field(description="Pipeline version (the resource's metadata.generation).")
    platform_version: str = Field(description="Version of Sluice serving the pipeline.")
    program_version: int = Field(description="Program version; always 1 (no SQL program).")
    program_status: ProgramStatus = Field(description="Always Success: the image is the program.")
    program_status_since: str = Field(json_schema_extra={"format": "date-time"})
    program_error: ProgramError
    deployment_error: ErrorResponse | None = Field(
        description="The current error (the resource's status.error), if any."
    )
    deployment_status: FelderaDeploymentStatus = Field(
        description="Combined resources and runtime status."
    )
    deployment_status_since: str = Field(json_schema_extra={"format": "date-time"})
    deployment_desired_status: FelderaDesiredStatus = Field(
        description="Desired status (the resource's spec.desiredState)."
    )
    deployment_desired_status_since: str = Field(json_schema_extra={"format": "date-time"})
    deployment_resources_status: ResourcesStatus
    deployment_resources_status_since: str = Field(json_schema_extra={"format": "date-time"})
    deployment_resources_desired_status: ResourcesDesiredStatus
    deployment_resources_desired_status_since: str = Field(
        json_schema_extra={"format": "date-time"}
    )
    deployment_runtime_status: RuntimeStatus | None
    deployment_runtime_status_details: dict[str, Any] | None
    deployment_runtime_status_since: str | None = Field(json_schema_extra={"format": "date-time"})
    deployment_runtime_desired_status: RuntimeStatus | None
    deployment_runtime_desired_status_since: str | None = Field(
        json_schema_extra={"format": "date-time"}
    )
    deployment_id: str | None
    deployment_initial: RuntimeStatus | None
    deployment_location: str | None
    refresh_version: int = Field(description="Changes whenever the spec changes (generation).")
    storage_status: FelderaStorageStatus = Field(
        description="Cleared, InUse, or Clearing (also while an accepted /clear is pending)."
    )
    storage_status_details: dict[str, Any] | None


class PipelineInfo(PipelineStatusInfo):
    """A pipeline with `selector=all`."""

    program_code: str = Field(description="Always empty: a Sluice pipeline runs an image.")
    udf_rust: str
    udf_toml: str
    program_config: dict[str, Any]
    program_info: dict[str, Any] | None
    runtime_config: dict[str, Any] = Field(
        description="The image, resources and storage of the pipeline (from its spec)."
    )
    deployment_config: dict[str, Any] | None


class ServerConfig(_Strict):
    """What `GET /v0/config` returns (the feldera client reads it when connecting)."""

    version: str
    edition: str
    revision: str
    runtime_revision: str
    changelog_url: str
    telemetry: str
    update_info: dict[str, Any] | None
    license_validity: dict[str, Any] | None
    namespace: str = Field(description="The Kubernetes namespace whose pipelines are served.")


class Health(_Strict):
    status: Literal["ok"]
