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


class ResourceConfig(_Strict):
    """Feldera's ResourceConfig, from spec.resources (requests: min, limits: max) and
    spec.storage."""

    cpu_cores_min: float | None = Field(description="spec.resources.requests.cpu, in cores.")
    cpu_cores_max: float | None = Field(description="spec.resources.limits.cpu, in cores.")
    memory_mb_min: int | None = Field(
        description="spec.resources.requests.memory, in MB (10^6 bytes), rounded up."
    )
    memory_mb_max: int | None = Field(
        description="spec.resources.limits.memory, in MB (10^6 bytes), rounded down."
    )
    storage_mb_max: int | None = Field(description="spec.storage.size, in MB, rounded up.")
    storage_class: str | None = Field(description="spec.storage.storageClassName.")
    service_account_name: str | None = Field(description="Always null: the default account.")
    namespace: str | None = Field(description="The pipeline's namespace.")


class StorageBackendConfig(_Strict):
    name: Literal["default"] = Field(description="Files in the pipeline's storage (its PVC).")


class StorageOptions(_Strict):
    backend: StorageBackendConfig
    min_storage_bytes: int | None
    min_step_storage_bytes: int | None
    compression: Literal["default"]
    cache_mib: int | None


class FtConfig(_Strict):
    model: Literal["none"] = Field(description="No fault tolerance: Sluice takes no checkpoints.")
    checkpoint_interval_secs: int | None


class PatchPipeline(BaseModel):
    """Feldera's PatchPipeline: each field left out or null is left as it is. Sluice changes
    `description` and runtime_config.resources.storage_mb_max; the other fields are accepted
    as GET shows them (a client sends them back unchanged)."""

    name: str | None = None
    description: str | None = None
    runtime_config: dict[str, Any] | None = Field(
        default=None,
        description="Feldera's RuntimeConfig, whole or in part: only "
        "resources.storage_mb_max may differ from what GET shows.",
    )
    program_code: str | None = None
    udf_rust: str | None = None
    udf_toml: str | None = None
    program_config: dict[str, Any] | None = None


class RuntimeConfig(_Strict):
    """Feldera's RuntimeConfig for a Sluice pipeline; `image` is Sluice's own field."""

    workers: int = Field(description="Feldera's default; the image picks its own threads.")
    storage: StorageOptions
    fault_tolerance: FtConfig
    resources: ResourceConfig
    image: str | None = Field(description="The pipeline's runtime image (spec.image).")


class VolumeDetail(_Strict):
    persistent_volume: str | None
    claim: str
    reclaim_policy: str | None
    storage_class_name: str | None


class SnapshotDetail(_Strict):
    """A VolumeSnapshot taken before a clear (spec.storage.snapshotBeforeClear), still kept."""

    name: str = Field(description="The VolumeSnapshot (in the pipeline's namespace).")
    claim: str = Field(description="The PersistentVolumeClaim it is a snapshot of.")
    taken_at: str | None = Field(json_schema_extra={"format": "date-time"})
    expires_at: str | None = Field(
        description="When it is deleted (taken_at + retainFor).",
        json_schema_extra={"format": "date-time"},
    )
    ready_to_use: bool = Field(description="The snapshot controller's readyToUse.")
    restore_size: str | None = Field(description="The smallest claim it restores into.")
    clear_request: str | None = Field(
        description="The clear that took it; null for the clear of a deleted Pipeline."
    )


class StorageStatusDetails(_Strict):
    """Feldera's StorageStatusDetails, with Sluice's volume details as extra fields."""

    checkpoints: list[dict[str, Any]] = Field(description="Always empty: Sluice takes none.")
    claims: list[str] = Field(description="The PersistentVolumeClaims in use.")
    capacity: str | None = Field(
        description="The claim's capacity now (status.storage.capacity), e.g. 2Gi: below "
        "runtime_config.resources.storage_mb_max while it grows, above it once storage "
        "autoscaling has grown it."
    )
    clearing_volumes: list[VolumeDetail] = Field(
        description="The volumes a clear in progress waits for."
    )
    retained_volumes: list[VolumeDetail] = Field(
        description="Where data outlived the last clear by policy (Retain volume, detached claim)."
    )
    snapshots: list[SnapshotDetail] = Field(
        description="Snapshots taken before clears, still kept, oldest first: a name here can "
        "be restored (spec.storage.restoreFrom, while storage is Cleared). Not checkpoints: "
        "Feldera's checkpoints are the pipeline's own, inside its storage."
    )
    restored_from: str | None = Field(
        description="The VolumeSnapshot the claim in use was restored from, if any."
    )


class PipelineStatusInfo(_Strict):
    """A pipeline with `selector=status`: the fields needed to follow its lifecycle."""

    id: str = Field(description="Pipeline identifier (the resource's metadata.uid).")
    name: str = Field(description="Unique pipeline name (the resource's metadata.name).")
    description: str = Field(description="Pipeline description (sluice.dev/description).")
    tags: list[str] = Field(description="Always empty.")
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
    storage_status_details: StorageStatusDetails


class PipelineStatusWithConnectorsInfo(PipelineStatusInfo):
    """A pipeline with `selector=status_with_connectors`."""

    connectors: dict[str, Any] | None = Field(
        description="Always null: Sluice does not know the image's connectors."
    )


class PipelineInfo(PipelineStatusInfo):
    """A pipeline with `selector=all`."""

    program_code: str = Field(description="Always empty: a Sluice pipeline runs an image.")
    udf_rust: str
    udf_toml: str
    program_config: dict[str, Any]
    program_info: dict[str, Any] | None
    runtime_config: RuntimeConfig
    deployment_config: dict[str, Any] | None


class BuildInformation(_Strict):
    build_timestamp: str
    build_cpu: str
    build_os: str
    cargo_dependencies: str
    cargo_features: str
    cargo_debug: str
    cargo_opt_level: str
    cargo_target_triple: str
    rustc_version: str


class ServerConfig(_Strict):
    """Feldera's Configuration (`GET /v0/config`; the feldera client reads it when
    connecting), plus the namespace served."""

    version: str
    edition: str
    revision: str
    runtime_revision: str
    changelog_url: str
    posthog: str
    conceptualhq: str
    product_fruits: str
    build_source: str
    build_info: BuildInformation
    update_info: dict[str, Any] | None
    license_validity: dict[str, Any] | None
    unstable_features: str | None
    namespace: str = Field(description="The Kubernetes namespace whose pipelines are served.")


class Health(_Strict):
    status: Literal["ok"]
