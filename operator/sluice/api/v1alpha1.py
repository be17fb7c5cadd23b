"""`Pipeline` (sluice.dev/v1alpha1): the models the CRD is generated from.

Every field's description becomes `kubectl explain` text. Validation that the
API server must do at apply time (contract rules 4, 12 and 15) lives here too,
as patterns, enums and CEL rules, so bad input never reaches the operator.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

GROUP = "sluice.dev"
VERSION = "v1alpha1"
KIND = "Pipeline"
PLURAL = "pipelines"
SINGULAR = "pipeline"
API_VERSION = f"{GROUP}/{VERSION}"

# StatefulSet pod labels carry "<name>-<10-char hash>" and must fit in 63 characters.
MAX_NAME_LENGTH = 52

# Exponents have at most two digits: parsing `1e64914025368` takes the API server longer
# than its request timeout (found by the property test as a 504).
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][0-9]{1,2})?$"
# A quantity's text is short; the bound also keeps the CEL rules' cost estimate low.
QUANTITY_MAX_LENGTH = 64
# DNS-1123 subdomain, as the API server checks a claim's storageClassName.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1035 label, as the API server checks a Service name: the pipeline's name becomes one.
DNS_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Printable ASCII without spaces: the API server refuses an image with leading or trailing
# whitespace in Unicode's sense (Go's strings.TrimSpace), which `\S` in a schema pattern
# (RE2, ASCII-only) does not catch, e.g. a vertical tab or a no-break space.
IMAGE_PATTERN = r"^[!-~]+$"
# Container resources Sluice accepts: the standard ones. Extended resources (vendor.com/x)
# and hugepages carry more rules (integers, requests == limits, paired cpu/memory) that the
# operator does not need; refusing them keeps "admitted" == "runnable" (rule 16).
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _int_or_quantity(cel_on_quantity: str, cel_on_int: str) -> str:
    """A CEL rule on an int-or-string quantity: integers as such, strings as quantities."""
    return (
        f"type(self) == int ? {cel_on_int} : (type(self) == string"
        f" && self.matches(r'{QUANTITY_PATTERN}') && isQuantity(self) && {cel_on_quantity})"
    )


def _quantity(description: str, positive: bool) -> Any:
    rule = (
        _int_or_quantity("quantity(self).isGreaterThan(quantity('0'))", "self > 0")
        if positive
        else _int_or_quantity("!quantity(self).isLessThan(quantity('0'))", "self >= 0")
    )
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "description": description,
            "x-kubernetes-validations": [
                {
                    "rule": rule,
                    "message": f"must be a {'positive' if positive else 'non-negative'} "
                    "quantity, e.g. 500m, 2, 30Gi",
                }
            ],
        }
    )


# Like core/v1 quantities: `cpu: 2` and `memory: 4Gi` are both accepted.
Quantity = Annotated[
    int | str, _quantity("A non-negative Kubernetes quantity, e.g. 500m, 2, 4Gi.", positive=False)
]
PositiveQuantity = Annotated[
    int | str, _quantity("A positive Kubernetes quantity, e.g. 30Gi.", positive=True)
]


def _resource_map(what: str) -> dict[str, Any]:
    names = ", ".join(f"'{n}'" for n in RESOURCE_NAMES)
    return {
        "maxProperties": len(RESOURCE_NAMES),
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(name, name in [{names}])",
                "message": f"{what} may name only {', '.join(RESOURCE_NAMES)}",
            }
        ],
    }


class DesiredState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class ClearPolicy(StrEnum):
    DELETE = "Delete"
    DETACH = "Detach"


class DeploymentStatus(StrEnum):
    STOPPED = "Stopped"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    STOPPING = "Stopping"
    FAILED = "Failed"


class StorageStatus(StrEnum):
    """Feldera's `storage_status`."""

    CLEARED = "Cleared"
    IN_USE = "InUse"
    CLEARING = "Clearing"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, use_enum_values=True, extra="ignore"
    )


class ResourceRequirements(_Model):
    """Compute resources of the pipeline's container (core/v1 ResourceRequirements)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # The API server's own rule for containers: a request above its limit
                    # would make the StatefulSet unadmittable.
                    "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(r,"
                    " !(r in self.limits) || !isQuantity(string(self.requests[r]))"
                    " || !isQuantity(string(self.limits[r]))"
                    " || quantity(string(self.requests[r]))"
                    ".compareTo(quantity(string(self.limits[r]))) <= 0)",
                    "fieldPath": ".requests",
                    "reason": "FieldValueInvalid",
                    "message": "each of resources.requests must be less than or equal to "
                    "its resources.limits",
                }
            ]
        }
    )

    limits: dict[str, Quantity] | None = Field(
        default=None,
        description="Maximum resources, e.g. {cpu: 2, memory: 4Gi}; "
        f"names: {', '.join(RESOURCE_NAMES)}.",
        json_schema_extra=_resource_map("resources.limits"),
    )
    requests: dict[str, Quantity] | None = Field(
        default=None,
        description="Resources the scheduler reserves, e.g. {cpu: 1}; at most the limit; "
        f"names: {', '.join(RESOURCE_NAMES)}.",
        json_schema_extra=_resource_map("resources.requests"),
    )


class StorageSpec(_Model):
    """Where the pipeline keeps its state, and how a clear disposes of it."""

    size: PositiveQuantity = Field(
        description="Size of the pipeline's PersistentVolumeClaim, e.g. 30Gi; more than 0. "
        "Can only change while storage is Cleared."
    )
    storage_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="StorageClass of the claim; the cluster default when unset. "
        "Can only change while storage is Cleared.",
    )
    clear_policy: ClearPolicy = Field(
        default=ClearPolicy.DELETE,
        description="What a clear does to the claims: Delete deletes them; Detach keeps them "
        "but disassociates them from the pipeline, which never mounts them again.",
    )
    clear_request: str | None = Field(
        default=None,
        max_length=253,
        description="Set to a new value (a timestamp, a counter) to request one clear of the "
        "storage, like Feldera's POST /clear. Accepted only together with desiredState: "
        "Stopped. A request cannot be cancelled. Empty or unset: no request.",
    )


class PipelineSpec(_Model):
    """The desired state of a pipeline."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # Contract rule 4, the seed's 400 StorageStatusImmutableUnlessStopped.
                    "rule": "self.desiredState == 'Stopped'"
                    " || !has(self.storage.clearRequest) || self.storage.clearRequest == ''"
                    " || (has(oldSelf.storage.clearRequest)"
                    " && oldSelf.storage.clearRequest == self.storage.clearRequest)",
                    "fieldPath": ".storage.clearRequest",
                    "reason": "FieldValueForbidden",
                    "message": "a new storage.clearRequest needs desiredState: Stopped "
                    "(StorageStatusImmutableUnlessStopped): storage can only be cleared "
                    "once the pipeline is stopped; set desiredState: Stopped in the same "
                    "change and the operator stops, then clears",
                }
            ]
        }
    )

    desired_state: DesiredState = Field(
        default=DesiredState.RUNNING,
        description="Running: the operator provisions compute and storage. Stopped: the "
        "operator removes compute and keeps storage.",
    )
    image: str = Field(
        min_length=1,
        max_length=1024,
        pattern=IMAGE_PATTERN,
        description="Container image of the pipeline's runtime (printable ASCII, no spaces).",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources of the pipeline's container."
    )
    storage: StorageSpec = Field(description="The pipeline's persistent storage.")


class PipelineError(BaseModel):
    """An error in the seed's (Feldera's) shape."""

    message: str = Field(description="Human-readable error message.")
    error_code: str = Field(description="Error code: a string that names this error type.")
    # No `additionalProperties` here: under it, nested objects would be pruned.
    details: Annotated[
        dict[str, Any],
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        default_factory=dict,
        description="Detailed error metadata; its contents depend on error_code.",
    )


class VolumeRecord(_Model):
    """Where a claim's data lives: the claim and the PersistentVolume bound to it."""

    persistent_volume: str | None = Field(
        default=None,
        description="The PersistentVolume bound to the claim; absent if it was never bound.",
    )
    claim: str = Field(description="The PersistentVolumeClaim (in the pipeline's namespace).")
    reclaim_policy: str | None = Field(
        default=None,
        description="The volume's persistentVolumeReclaimPolicy (Delete, Retain or Recycle).",
    )
    storage_class_name: str | None = Field(
        default=None, description="The volume's (or else the claim's) StorageClass."
    )


class StorageState(_Model):
    """What the operator knows about the pipeline's storage."""

    status: StorageStatus = Field(
        default=StorageStatus.CLEARED,
        description="Cleared: no storage is associated. InUse: claims hold state. Clearing: a "
        "clear is in progress and cannot be cancelled.",
    )
    claims: list[Annotated[str, Field(description="A PersistentVolumeClaim name.")]] = Field(
        default_factory=list,
        description="Names of the PersistentVolumeClaims associated with the pipeline now.",
    )
    last_clear_request: str | None = Field(
        default=None, description="The last spec.storage.clearRequest that was handled."
    )
    clearing_request: str | None = Field(
        default=None, description="The clearRequest being handled while status is Clearing."
    )
    clearing_since: str | None = Field(
        default=None,
        description="When the current clear started (status became Clearing).",
        json_schema_extra={"format": "date-time"},
    )
    clearing_volumes: list[VolumeRecord] = Field(
        default_factory=list,
        description="While Clearing: the volumes bound to the claims being cleared, recorded "
        "before any claim is deleted; the clear completes only once each one whose reclaim "
        "policy is Delete is gone.",
    )
    retained_volumes: list[VolumeRecord] = Field(
        default_factory=list,
        description="Where data outlived the last clear by policy: volumes kept by their "
        "reclaim policy (Retain) and claims kept by clearPolicy: Detach. Replaced by the next "
        "clear's.",
    )

    @field_validator("clearing_volumes", "retained_volumes", mode="before")
    @classmethod
    def _absent_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value  # written as null to remove the field

    claim_generation: int | None = Field(
        default=None,
        ge=0,
        description="How many clears have completed; the next claim's name derives from it "
        "(and the pipeline's UID), so every operator replica creates the same name and a "
        "detached claim's name is never used again.",
    )


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(max_length=316, description="Type of the condition, e.g. Ready.")
    status: str = Field(
        description="True, False or Unknown.",
        json_schema_extra={"enum": ["True", "False", "Unknown"]},
    )
    reason: str = Field(default="", max_length=1024, description="Machine-readable reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When the status last changed.", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition reflects."
    )


class PipelineStatus(_Model):
    """The observed state of a pipeline, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last acted on."
    )
    deployment_status: DeploymentStatus = Field(
        default=DeploymentStatus.STOPPED,
        description="Observed state of the compute: Stopped, Provisioning, Running, "
        "Stopping or Failed.",
    )
    storage: StorageState = Field(
        default_factory=StorageState, description="State of the pipeline's storage."
    )
    error: PipelineError | None = Field(
        default=None, description="The current error, in the seed's shape; null when none."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Running and StorageCleared conditions, for kubectl wait.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Pipeline(_Model):
    """A streaming pipeline: its compute and its storage."""

    spec: PipelineSpec
    status: PipelineStatus = Field(default_factory=PipelineStatus)
