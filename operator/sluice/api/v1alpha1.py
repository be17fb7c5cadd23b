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

# What the API server checks, mirrored in CEL so that a Pipeline is admitted if and only if
# the claim and StatefulSet built from it would be (contract rule 16). The Go functions named
# below are Kubernetes' own (k8s.io/kubernetes pkg/apis/core/validation and .../core/helper,
# k8s.io/apimachinery pkg/api/resource); CEL's quantity() is the same parser as theirs.

# A quantity's text is short; the bound also keeps the CEL rules' cost estimate low.
QUANTITY_MAX_LENGTH = 64
# Parsing `1e64914025368` takes the API server longer than its request timeout (found by the
# property test as a 504): the exponent becomes a power of ten with billions of digits. An
# exponent of at most three digits parses at once; longer ones are refused before parsing.
LONG_EXPONENT = "[eE][-+]?[0-9]{4}"
# Extended resources and hugepages are counted in int64 milli-units by Kubernetes, which
# overflow silently beyond ~9.2e15; amounts above 2^53 - 1 are refused rather than judged
# by wrapped-around arithmetic (and so that a double holds them exactly).
LARGEST_COUNTED = 2**53 - 1
# The pod's terminationGracePeriodSeconds is an int64; kept where a double holds it exactly.
MAX_GRACE_PERIOD_SECONDS = LARGEST_COUNTED
# DNS-1123 subdomain, as the API server checks a claim's storageClassName.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1035 label, as the API server checks a Service name: the pipeline's name becomes one.
DNS_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
# The name part of a qualified name (IsQualifiedName): at most 63 characters.
QUALIFIED_NAME_PART = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# A qualified name with a DNS subdomain prefix, e.g. nvidia.com/gpu (prefix length apart).
PREFIXED_RESOURCE_NAME = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/" + QUALIFIED_NAME_PART + "$"
)
# The container runtime's reference grammar: github.com/distribution/reference v0.6.0's
# ReferenceRegexp (what the kubelet's ParseNormalizedNamed applies before pulling), with
# `\w` and `[[:xdigit:]]` spelled out. The StatefulSet itself only needs a non-empty image;
# a reference outside this grammar is refused on purpose: the kubelet can never pull it
# (the pod waits in InvalidImageName forever).
IMAGE_REFERENCE = (
    r"^((?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[(?:[a-fA-F0-9:]+)\])"
    r"(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*)"
    r"(?::([0-9A-Za-z_][0-9A-Za-z_.-]{0,127}))?"
    r"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}))?$"
)
# go-digest accepts the algorithms it has linked (the kubelet links sha256 and sha512), each
# with its exact length of lower-case hex.
IMAGE_DIGEST = "@(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$"
# The repository path (the name without registry, tag or digest) has at most 255 characters.
IMAGE_PATH = r"^((localhost|[^/]*[.:A-Z][^/]*)/)?[^:@]{1,255}(:[^/@]*)?(@.*)?$"
# The standard container resources; hugepages-<size> and domain-prefixed names also exist.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# A Go duration as CEL's duration() parses it (e.g. 72h, 90m, 1h30m); positive.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
# How many resource names one map may hold: Kubernetes sets no bound, the CEL cost
# estimate needs one, and a container with more than 16 kinds of resource is unheard of.
MAX_RESOURCE_NAMES = 16


# White space other than ' ' that strings.TrimSpace would remove. Quantity.UnmarshalJSON
# trims the raw JSON text, where a JSON encoder writes these as escapes (\t, \u00a0), so
# the API server trims only plain spaces from the claim and StatefulSet the operator sends.
OTHER_SPACE = (
    r"[\t\n\v\f\r\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}"
    r"\x{205F}\x{3000}]"
)


def _text(value: str) -> str:
    """A quantity's text as the API server parses it: spaces around it are trimmed."""
    return f"string({value}).trim()"


def _parses(value: str) -> str:
    text = _text(value)
    raw = f"string({value})"
    return (
        f"(!{raw}.matches(r'^ *{OTHER_SPACE}|{OTHER_SPACE} *$')"
        f" && !{text}.matches(r'{LONG_EXPONENT}') && isQuantity({text}))"
    )


def _quantity(value: str) -> str:
    return f"quantity({_text(value)})"


def _ceil(text: str) -> str:
    """ceil() of a quantity, as an int (Quantity.Value()). Exact below 2^53: the double is
    within one of the value, so the ceiling is one of three integers next to it."""
    q = f"quantity({text})"
    t = f"int({q}.asApproximateFloat())"
    return (
        f"(quantity('0').add({t}).compareTo({q}) >= 0 ? {t}"
        f" : (quantity('1').add({t}).compareTo({q}) >= 0 ? {t} + 1 : {t} + 2))"
    )


def _whole(text: str) -> str:
    """Kubernetes' integer test, MilliValue() % 1000 == 0: milli-units round up, so a value
    within 1m below a whole number counts as whole (0.9999 does, 0.999 does not)."""
    return f"quantity({text}).add(quantity('1m')).isGreaterThan(quantity('0').add({_ceil(text)}))"


def _counted(text: str) -> str:
    return f"!quantity({text}).isGreaterThan(quantity('{LARGEST_COUNTED}'))"


def _native(name: str) -> str:
    """IsNativeResource: unprefixed, or anywhere in the kubernetes.io/ namespace."""
    return f"(!{name}.contains('/') || {name}.contains('kubernetes.io/'))"


def _overcommit_allowed(name: str) -> str:
    return f"({_native(name)} && !{name}.startsWith('hugepages-'))"


def _valid_name(name: str) -> str:
    """validateContainerResourceName: a standard name, hugepages-<anything qualified>, a
    kubernetes.io/ name, or an extended name (IsExtendedResourceName: not `requests.`, and
    still a qualified name with `requests.` in front, so a prefix of at most 244)."""
    standard = ", ".join(f"'{n}'" for n in STANDARD_RESOURCES)
    return (
        f"({name} in [{standard}]"
        f" || ({name}.startsWith('hugepages-') && {name}.matches(r'^{QUALIFIED_NAME_PART}$'))"
        f" || ({name}.matches(r'{PREFIXED_RESOURCE_NAME}')"
        f" && ({name}.contains('kubernetes.io/') ? {name}.indexOf('/') <= 253"
        f" : (!{name}.startsWith('requests.') && {name}.indexOf('/') <= 244))))"
    )


def _page(name: str) -> str:
    return f"{name}.substring(10)"  # after "hugepages-"


def _whole_pages(name: str, value: str) -> str:
    """IsHugePageResourceValueDivisible: the page size parses, is positive and whole, and
    the amount rounded up is a multiple of it."""
    page = _page(name)
    return (
        f"!{page}.matches(r'{LONG_EXPONENT}') && isQuantity({page})"
        f" && quantity({page}).isGreaterThan(quantity('0')) && {_counted(page)}"
        f" && {_whole(page)} && {_ceil(_text(value))} % {_ceil(page)} == 0"
    )


def _map_rules(field: str) -> list[dict[str, str]]:
    """Rules on one of resources.limits / resources.requests (self is the map)."""
    valid = _parses("self[k]")
    return [
        {
            "rule": f"self.all(k, {_valid_name('k')})",
            "messageExpression": f"'{field} names \"' + self.filter(k, !{_valid_name('k')})[0]"
            " + '\", but a container resource is cpu, "
            "memory, ephemeral-storage, hugepages-<size> (e.g. hugepages-2Mi) or a "
            "domain-prefixed name (e.g. nvidia.com/gpu); the name part has at most 63 "
            "letters, digits, dashes, dots or underscores'",
            "message": f"{field} names a resource that containers do not have",
        },
        {
            "rule": f"self.all(k, {_native('k')} || !{valid}"
            f" || ({_counted(_text('self[k]'))} && {_whole(_text('self[k]'))}))",
            "message": f"{field} gives an extended resource (a domain-prefixed name such as "
            f"nvidia.com/gpu) an amount that is not a whole number of at most "
            f"{LARGEST_COUNTED}, e.g. 1 or 2",
        },
        {
            "rule": f"self.all(k, !k.startsWith('hugepages-') || !{valid}"
            f" || ({_counted(_text('self[k]'))} && {_whole_pages('k', 'self[k]')}))",
            "message": f"{field} gives hugepages-<size> an amount that is not a whole number "
            f"of pages (e.g. hugepages-2Mi: 64Mi), or a size that is not a positive whole "
            f"quantity, or more than {LARGEST_COUNTED} bytes",
        },
    ]


def _quantity_schema(field: str, description: str, positive: bool) -> Any:
    comparison = "isGreaterThan" if positive else "isLessThan"
    sign = "" if positive else "!"
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": QUANTITY_MAX_LENGTH,
            "description": description,
            "x-kubernetes-validations": [
                {
                    "rule": f"{_parses('self')} && {sign}{_quantity('self')}"
                    f".{comparison}(quantity('0'))",
                    "message": f"{field} must be a {'positive' if positive else 'non-negative'}"
                    " quantity, e.g. 500m, 2, 1.5 or 30Gi (an exponent has at most three "
                    "digits)",
                }
            ],
        }
    )


# Like core/v1 quantities: `cpu: 2` and `memory: 4Gi` are both accepted.
ResourceQuantity = Annotated[
    int | str,
    _quantity_schema(
        "each amount in spec.resources",
        "A non-negative Kubernetes quantity, e.g. 500m, 2, 4Gi.",
        positive=False,
    ),
]
StorageSize = Annotated[
    int | str,
    _quantity_schema(
        "spec.storage.size", "A positive Kubernetes quantity, e.g. 30Gi.", positive=True
    ),
]


AutoscalingMaxSize = Annotated[
    int | str,
    _quantity_schema(
        "spec.storage.autoscaling.maxSize",
        "A positive Kubernetes quantity, e.g. 100Gi.",
        positive=True,
    ),
]
# A step is a share of the volume's capacity now (1% to 1000%), or an amount.
STEP_PERCENT_PATTERN = "^[1-9][0-9]{0,2}%$|^1000%$"


def _resource_map(field: str) -> dict[str, Any]:
    return {"maxProperties": MAX_RESOURCE_NAMES, "x-kubernetes-validations": _map_rules(field)}


class DesiredState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class ClearPolicy(StrEnum):
    DELETE = "Delete"
    DETACH = "Detach"


class PodSecurity(StrEnum):
    RESTRICTED = "Restricted"
    IMAGE_DEFAULT = "ImageDefault"


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


def _both_parse(name: str) -> str:
    return f"{_parses(f'self.requests[{name}]')} && {_parses(f'self.limits[{name}]')}"


def _request_vs_limit() -> str:
    return f"{_quantity('self.requests[k]')}.compareTo({_quantity('self.limits[k]')})"


def _hugepages_in(field: str) -> str:
    return f"(has(self.{field}) && self.{field}.exists(k, k.startsWith('hugepages-')))"


def _cpu_or_memory_in(field: str) -> str:
    return f"(has(self.{field}) && ('cpu' in self.{field} || 'memory' in self.{field}))"


class ResourceRequirements(_Model):
    """Compute resources of the pipeline's container (core/v1 ResourceRequirements)."""

    # validateResourceRequirements' rules across the two maps.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k,"
                    f" !(k in self.limits) || !{_overcommit_allowed('k')}"
                    f" || !({_both_parse('k')}) || {_request_vs_limit()} <= 0)",
                    "fieldPath": ".requests",
                    "reason": "FieldValueInvalid",
                    "message": "each of spec.resources.requests must be less than or equal to "
                    "its spec.resources.limits",
                },
                {
                    "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k,"
                    f" !(k in self.limits) || {_overcommit_allowed('k')}"
                    f" || !({_both_parse('k')}) || {_request_vs_limit()} == 0)",
                    "fieldPath": ".requests",
                    "reason": "FieldValueInvalid",
                    "message": "spec.resources.requests of an extended resource or of "
                    "hugepages must equal its spec.resources.limits: they cannot be "
                    "overcommitted",
                },
                {
                    "rule": "!has(self.requests) || self.requests.all(k,"
                    f" {_overcommit_allowed('k')} || (has(self.limits) && k in self.limits))",
                    "fieldPath": ".limits",
                    "reason": "FieldValueRequired",
                    "message": "an extended resource or hugepages in spec.resources.requests "
                    "needs the same amount in spec.resources.limits: they cannot be "
                    "overcommitted",
                },
                {
                    "rule": f"!({_hugepages_in('limits')} || {_hugepages_in('requests')})"
                    f" || {_cpu_or_memory_in('limits')} || {_cpu_or_memory_in('requests')}",
                    "reason": "FieldValueForbidden",
                    "message": "spec.resources with hugepages must also set cpu or memory "
                    "(in spec.resources.requests or spec.resources.limits)",
                },
            ]
        }
    )

    limits: dict[str, ResourceQuantity] | None = Field(
        default=None,
        description="Maximum resources, e.g. {cpu: 2, memory: 4Gi, nvidia.com/gpu: 1}; names: "
        "cpu, memory, ephemeral-storage, hugepages-<size>, or an extended resource (a "
        "domain-prefixed name, whole amounts).",
        json_schema_extra=_resource_map("spec.resources.limits"),
    )
    requests: dict[str, ResourceQuantity] | None = Field(
        default=None,
        description="Resources the scheduler reserves, e.g. {cpu: 1}; at most the limit, and "
        "equal to it for extended resources and hugepages; names as for limits.",
        json_schema_extra=_resource_map("spec.resources.requests"),
    )


class SnapshotBeforeClear(_Model):
    """The safety net: each claim is snapshotted before a clear deletes it, and the
    snapshots are kept for a while (contract rule 18)."""

    volume_snapshot_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{DNS_SUBDOMAIN_PATTERN}')",
                    "message": "spec.storage.snapshotBeforeClear.volumeSnapshotClassName "
                    "must be a DNS subdomain, e.g. csi-local",
                }
            ]
        },
        description="VolumeSnapshotClass of the snapshots; the cluster's default class "
        "(annotation snapshot.storage.kubernetes.io/is-default-class) when unset.",
    )
    retain_for: str = Field(
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{DURATION_PATTERN}')"
                    " && duration(self) > duration('0s')",
                    "message": "spec.storage.snapshotBeforeClear.retainFor must be a positive "
                    "duration in hours, minutes or seconds, e.g. 72h, 90m or 1h30m",
                }
            ]
        },
        description="How long each snapshot is kept after it is taken, e.g. 72h; it is "
        "deleted then, also if the Pipeline was deleted meanwhile.",
    )


class StorageAutoscaling(_Model):
    """Grow the claim when its volume fills up, up to a maximum, where its StorageClass
    allows volume expansion. Usage is the kubelet's volume statistics."""

    max_size: AutoscalingMaxSize = Field(
        description="The largest the claim is grown to, e.g. 100Gi; at least "
        "spec.storage.size. At it, a full volume gets a Warning Event and the condition "
        "StorageAtMaxSize instead."
    )
    usage_threshold_percent: int = Field(
        default=80,
        ge=1,
        le=99,
        description="Grow once the volume is this full (used bytes over capacity, in percent).",
    )
    step: int | str = Field(
        default="25%",
        json_schema_extra={
            # int-or-string like the quantities: the API server's cost estimate bounds
            # string(self) by maxLength there (for a plain string it does not).
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-validations": [
                {
                    "rule": f"string(self).matches(r'{STEP_PERCENT_PATTERN}')"
                    f" || ({_parses('self')} && {_quantity('self')}.isGreaterThan(quantity('0')))",
                    "message": "spec.storage.autoscaling.step must be a share of the capacity "
                    "from 1% to 1000%, e.g. 25%, or a positive quantity, e.g. 10Gi",
                }
            ],
        },
        description="How much each growth adds: a share of the capacity now (e.g. 25%) or an "
        "amount (e.g. 10Gi); the new size is rounded up to whole MiB and capped at maxSize.",
    )


class StorageSpec(_Model):
    """Where the pipeline keeps its state, and how a clear disposes of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.autoscaling)"
                    f" || !({_parses('self.size')} && {_parses('self.autoscaling.maxSize')})"
                    f" || !{_quantity('self.size')}"
                    f".isGreaterThan({_quantity('self.autoscaling.maxSize')})",
                    "fieldPath": ".autoscaling.maxSize",
                    "reason": "FieldValueInvalid",
                    "message": "spec.storage.autoscaling.maxSize must be at least "
                    "spec.storage.size",
                }
            ]
        }
    )

    size: StorageSize = Field(
        description="Size of the pipeline's PersistentVolumeClaim, e.g. 30Gi; more than 0. "
        "May grow at any time where the claim's StorageClass allows volume expansion (the "
        "claim grows in place, the pipeline keeps running); any other change only while "
        "storage is Cleared."
    )
    storage_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{DNS_SUBDOMAIN_PATTERN}')",
                    "message": "spec.storage.storageClassName must be a DNS subdomain: "
                    "lower-case letters, digits, '-' and '.', starting and ending with a "
                    "letter or digit, e.g. fast-ssd",
                }
            ]
        },
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
    action_clear_request: str | None = Field(
        default=None,
        max_length=253,
        description="A clear request made on the live object by a tool that is not the "
        "source of truth (Argo CD's clear-storage action, the REST API's clear, `kubectl "
        "sluice clear`): a new value requests one clear, as "
        "clearRequest does, and is recorded apart (status.storage.lastActionClearRequest), so "
        "git's clearRequest put back by a sync never counts as new. Never set it in git. "
        "Accepted only together with desiredState: Stopped; it cannot be cancelled.",
    )
    snapshot_before_clear: SnapshotBeforeClear | None = Field(
        default=None,
        description="Snapshot each claim (a VolumeSnapshot, kept for retainFor) before a "
        "clear deletes it; a clear whose snapshot fails deletes nothing. Unset: a clear "
        "deletes without a snapshot.",
    )
    restore_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{DNS_SUBDOMAIN_PATTERN}')",
                    "message": "spec.storage.restoreFrom must name a VolumeSnapshot (a DNS "
                    "subdomain), e.g. orders-clear-bcdfg",
                }
            ]
        },
        description="A VolumeSnapshot in the pipeline's namespace (one of "
        "status.storage.snapshots, or any other) that the next claim is restored from. Can "
        "only be set or changed while storage is Cleared; it is used once (the claim after a "
        "later clear starts empty, as after any clear).",
    )
    autoscaling: StorageAutoscaling | None = Field(
        default=None,
        description="Grow the claim in place when its volume fills up (its StorageClass "
        "must allow volume expansion). The claim may then be larger than spec.storage.size, "
        "which stays the size of a new claim (after a clear). Unset: storage grows only when "
        "spec.storage.size does.",
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
                    "message": "a new spec.storage.clearRequest needs desiredState: Stopped "
                    "(StorageStatusImmutableUnlessStopped): storage can only be cleared "
                    "once the pipeline is stopped; set desiredState: Stopped in the same "
                    "change and the operator stops, then clears",
                },
                {
                    # Rule 4 for the actions' request too: a selfHeal that puts git's
                    # desiredState back leaves it unchanged, so it is not refused.
                    "rule": "self.desiredState == 'Stopped'"
                    " || !has(self.storage.actionClearRequest)"
                    " || self.storage.actionClearRequest == ''"
                    " || (has(oldSelf.storage.actionClearRequest)"
                    " && oldSelf.storage.actionClearRequest == self.storage.actionClearRequest)",
                    "fieldPath": ".storage.actionClearRequest",
                    "reason": "FieldValueForbidden",
                    "message": "a new spec.storage.actionClearRequest needs desiredState: "
                    "Stopped (StorageStatusImmutableUnlessStopped): storage can only be "
                    "cleared once the pipeline is stopped; set desiredState: Stopped in the "
                    "same change and the operator stops, then clears",
                },
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
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{IMAGE_REFERENCE}')"
                    f" && !self.matches(r'^[a-f0-9]{{64}}$')"
                    f" && (!self.contains('@') || self.matches(r'{IMAGE_DIGEST}'))"
                    f" && self.matches(r'{IMAGE_PATH}')",
                    "message": "spec.image must be an image reference the kubelet can "
                    "pull, such as orders:1.2, registry.example:5000/team/orders:1.2 or "
                    "registry.example/orders@sha256:<64 hex digits>: the repository is "
                    "lower-case ASCII letters, digits and . _ - / separators, with no spaces",
                }
            ]
        },
        description="Container image of the pipeline's runtime: a reference the kubelet can "
        "pull, e.g. registry.example:5000/team/orders:1.2 or ...@sha256:<digest>.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources of the pipeline's container."
    )
    termination_grace_period_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GRACE_PERIOD_SECONDS,
        description="Seconds a stopping pipeline gets between SIGTERM and SIGKILL to take its "
        "last checkpoint and exit (Feldera's stop with a checkpoint); the pod's "
        "terminationGracePeriodSeconds, 30 when unset. A stop waits for the pod to exit "
        "within it; a forced stop (the REST API's stop?force=true, or the annotation "
        "sluice.dev/force-stop) gives 1 second. At least 1: a pod deleted with 0 leaves the "
        "API before its process has exited.",
    )
    pod_security: PodSecurity | None = Field(
        default=None,
        description="The pipeline pod's securityContext, applied from its next start. "
        "Restricted (when unset): what the restricted Pod Security Standard requires, as "
        "uid, gid and fsGroup 1000 with a read-only root filesystem; the storage is written "
        "as that uid, so its volume must honour fsGroup (most CSI drivers do; the in-tree "
        "hostPath provisioner does not). ImageDefault: no securityContext, the image's own "
        "user (as before Sluice set one); refused in a namespace enforcing restricted.",
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


class SnapshotRecord(_Model):
    """A VolumeSnapshot the operator took of a claim before a clear."""

    name: str = Field(description="The VolumeSnapshot (in the pipeline's namespace).")
    claim: str = Field(description="The PersistentVolumeClaim it is a snapshot of.")
    taken_at: str | None = Field(
        default=None,
        description="When the snapshot was requested.",
        json_schema_extra={"format": "date-time"},
    )
    expires_at: str | None = Field(
        default=None,
        description="When the operator deletes it (takenAt + retainFor).",
        json_schema_extra={"format": "date-time"},
    )
    ready_to_use: bool = Field(
        default=False, description="The snapshot controller's status.readyToUse."
    )
    restore_size: str | None = Field(
        default=None, description="The smallest claim it can be restored into, e.g. 1Gi."
    )
    clear_request: str | None = Field(
        default=None,
        description="The spec.storage.clearRequest of the clear that took it; absent for the "
        "clear of a deleted Pipeline.",
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
    capacity: str | None = Field(
        default=None,
        description="The claim's capacity now (its status.capacity), e.g. 2Gi; below "
        "spec.storage.size while the claim grows (condition StorageResizing).",
    )
    last_clear_request: str | None = Field(
        default=None, description="The last spec.storage.clearRequest that was handled."
    )
    clearing_request: str | None = Field(
        default=None, description="The clearRequest being handled while status is Clearing."
    )
    last_action_clear_request: str | None = Field(
        default=None, description="The last spec.storage.actionClearRequest that was handled."
    )
    clearing_action_request: str | None = Field(
        default=None,
        description="The actionClearRequest being handled while status is Clearing.",
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

    snapshots: list[SnapshotRecord] = Field(
        default_factory=list,
        description="The snapshots taken before clears of this pipeline (and of earlier "
        "Pipelines of the same name) that are still kept, oldest first.",
    )
    restored_from: str | None = Field(
        default=None,
        description="The VolumeSnapshot the current claim was restored from, if any.",
    )
    last_restore_from: str | None = Field(
        default=None,
        description="The last spec.storage.restoreFrom a claim was restored from; it is not "
        "restored again until restoreFrom is unset and set again.",
    )

    @field_validator("clearing_volumes", "retained_volumes", "snapshots", mode="before")
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
