"""Rule 16, as a class, both ways: every Pipeline the API server admits can be run, and every
spec Kubernetes would run is admitted.

The first test: Pipelines are generated from the CRD's own schema (`schema_strategy.py`),
names from the API server's rule for custom resource names (DNS subdomains), and each is
sent to the real API server (server-side dry run). For every one it admits, the operator's
own builders (`core/manifests.py`) make the PVC, Service and StatefulSet, and a server-side dry-run
create of each must succeed; the operator's models and `decide` must accept it too. Every
one it refuses must be refused naming the field.

The second test does not start from the CRD: `kube_rules_strategy.py` builds container
`resources` and the claim's storage size from Kubernetes' own rules (every kind of resource
name, quantities in every notation, valid and not). Each Pipeline must be admitted if and
only if the PVC and StatefulSet `core/manifests.py` builds from it pass a server-side
dry-run create; a disagreement either way fails, printing the example. The only exceptions
are the refusals Sluice makes on purpose (`deliberate_refusal`), which must be refusals.

SLUICE_PROPERTY_EXAMPLES sets the number of generated pipelines of each test (default 2,000).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from sluice.api import crd
from sluice.api import v1alpha1 as api
from sluice.core import autoscale, manifests, resize, snapshots
from sluice.core import decide as d
from sluice.core.labels import FINALIZER
from sluice.core.observed import Observed

from . import kube_rules_strategy as kube_rules
from .schema_strategy import from_crd_schema

EXAMPLES = int(os.environ.get("SLUICE_PROPERTY_EXAMPLES", "2000"))
NOW = "2026-11-29T00:00:00Z"
NAMES_A_FIELD = re.compile(r"\b(spec(\.[A-Za-z]+|\[[^\]]+\])+|metadata\.name)\b")
SNAPSHOT_API = ("snapshot.storage.k8s.io", "v1")
# What a restore reads of its VolumeSnapshot: ready, and larger than many specs' sizes.
READY_SNAPSHOT = {"status": {"readyToUse": True, "restoreSize": "1Gi"}}

# Names the API server accepts for any custom resource: DNS-1123 subdomains.
SUBDOMAIN = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,2}"
# Resource names worth trying beside arbitrary text: the standard ones, and those the
# API server accepts for containers only under extra rules (extended, hugepages).
RESOURCE_NAME_HINTS = [
    *api.STANDARD_RESOURCES,
    "hugepages-2Mi",
    "example.com/gpu",
    "pods",
    "storage",
    "requests.cpu",
]


# Values beside the drawn ones for fields whose only check is a CEL rule (the walker reads
# patterns, not CEL): valid ones, so that the admitted side is reached, and near misses.
VALUE_HINTS: dict[str, list[Any]] = {
    "retainFor": ["72h", "90m", "1h30m", "15s", "1.5h", "0s", "0.5ns", "3d", "-1h", "2562047h"],
    "restoreFrom": ["orders-clear-bcdfg", "snap.v1", "Snap", "-x", "a" * 253],
    "volumeSnapshotClassName": ["csi-local", "fast.snapshots", "Fast_Snap", ""],
    "maxSize": ["8Ei", "100Ti", "10Gi", "1.5Gi", 2**40, "0", "-1Gi", " 4Gi", "1e3000"],
    "step": ["25%", "1%", "1000%", "10Gi", "500Mi", 4096, "0%", "1001%", "25 %", "0", "x"],
    # Autoscaling as a whole, so that specs with it are admitted often (maxSize >= size).
    "autoscaling": [
        {"maxSize": "8Ei"},
        {"maxSize": "8Ei", "step": "50%", "usageThresholdPercent": 80},
        {"maxSize": "8Ei", "step": "3Gi", "usageThresholdPercent": 1},
    ],
}

SPEC_SCHEMA = crd.openapi_schema()["properties"]["spec"]


def pipelines() -> st.SearchStrategy[dict[str, Any]]:
    labels = st.from_regex(r"[a-z]([-a-z0-9]{0,60}[a-z0-9])?", fullmatch=True)
    names = st.one_of(
        st.from_regex(SUBDOMAIN, fullmatch=True).filter(lambda n: len(n) <= 63),
        *[labels] * 4,
        *[st.sampled_from(["orders", "a", "x" * 52, "p-1"])] * 4,
    )
    return st.builds(
        lambda name, spec: {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name},
            "spec": spec,
        },
        names,
        from_crd_schema(SPEC_SCHEMA, RESOURCE_NAME_HINTS, VALUE_HINTS),
    )


def _message(error: client.ApiException) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body)


@pytest.mark.cluster
def test_every_admitted_pipeline_can_run(
    crd: None, api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    tally = {"admitted": 0, "refused": 0}
    reasons: collections.Counter[str] = collections.Counter()

    def owned_objects_admitted(admitted: dict[str, Any]) -> None:
        meta = admitted["metadata"]
        name, uid = meta["name"], meta.get("uid") or str(uuid.uuid4())
        spec = api.PipelineSpec.model_validate(admitted["spec"])  # the operator reads it
        # `decide` runs on it as the operator would: first provisioning, then a clear.
        observed = copy.deepcopy(admitted)
        observed["metadata"] |= {"uid": uid, "finalizers": [FINALIZER], "namespace": namespace}
        d.decide(Observed(observed), NOW)
        restore = None
        if spec.storage.restore_from:
            found = snapshots.restore_source(
                spec.storage.restore_from, namespace, READY_SNAPSHOT, str(spec.storage.size)
            )
            assert isinstance(found, snapshots.RestoreSource), found
            restore = found
        claim = manifests.persistent_volume_claim(
            name, uid, spec.storage, claim_generation=0, restore=restore
        )
        created = core.create_namespaced_persistent_volume_claim(namespace, claim, dry_run="All")
        if spec.storage.autoscaling is not None:
            # A full volume: the size autoscaling grows the claim to is one the API server
            # takes as a claim's request, and above the claim's, at most maxSize.
            request = created.spec.resources.requests["storage"]
            bound = {**claim, "status": {"capacity": {"storage": request}}}
            bound["metadata"] = {**claim["metadata"], "name": "full"}
            full = {"full": autoscale.VolumeUsage(1 << 30, 1 << 30)}
            (grow,) = autoscale.decide(spec.storage.autoscaling, [bound], full).grow or (None,)
            if grow is not None:
                grown = resize.quantity_bytes(grow.size)
                assert resize.quantity_bytes(request) < grown
                assert grown <= resize.quantity_bytes(spec.storage.autoscaling.max_size)
                bigger = copy.deepcopy(claim)
                bigger["spec"]["resources"]["requests"]["storage"] = grow.size
                core.create_namespaced_persistent_volume_claim(namespace, bigger, dry_run="All")
        core.create_namespaced_service(
            namespace, manifests.headless_service(name, uid), dry_run="All"
        )
        apps.create_namespaced_stateful_set(
            namespace,
            manifests.stateful_set(name, uid, spec, created.metadata.name),
            dry_run="All",
        )
        settings_ = spec.storage.snapshot_before_clear
        if settings_ is not None:
            # The snapshot a clear would take: its expiry computes, and the snapshot CRD
            # (external-snapshotter's own) admits it.
            expires = snapshots.expires_at(NOW, settings_.retain_for)
            snapshot = manifests.volume_snapshot(
                name,
                namespace,
                uid,
                created.metadata.name,
                expires,
                spec.storage.clear_request,
                settings_.volume_snapshot_class_name,
            )
            custom.create_namespaced_custom_object(
                *SNAPSHOT_API, namespace, "volumesnapshots", snapshot, dry_run="All"
            )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # CI starts clean; a failure prints the example to reproduce it
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(pipelines())
    def check(pipeline: dict[str, Any]) -> None:
        try:
            admitted = custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, pipeline, dry_run="All"
            )
        except client.ApiException as error:
            assert error.status in (400, 422), (error.status, _message(error))
            message = _message(error)
            # Names the field: a path below spec (spec.storage.size, spec.resources.limits[x])
            # or metadata.name, not merely the word "spec" that almost every refusal holds.
            assert NAMES_A_FIELD.search(message), message
            tally["refused"] += 1
            reasons[message.split(": ", 1)[-1][:60]] += 1
            return
        tally["admitted"] += 1
        try:
            owned_objects_admitted(admitted)
        except client.ApiException as error:
            raise AssertionError(
                f"the API server admitted {json.dumps(pipeline)} but refused what the "
                f"operator builds from it: {_message(error)}"
            ) from error

    check()
    print(f"generated {sum(tally.values())} pipelines: {tally}")
    print("most common refusals:", *reasons.most_common(8), sep="\n  ")
    # The generator must reach both sides of the line, or the test proves nothing.
    assert tally["admitted"] >= EXAMPLES // 10, tally
    assert tally["refused"] >= EXAMPLES // 10, tally


# How many generated specs one Hypothesis example carries, sent to the API server at once.
BATCH = 25
PARALLEL = 8
UID = "0b5a2ac0-6a4f-4a57-9b5e-2a1d3c4e5f60"


def deliberate_refusal(spec: dict[str, Any]) -> str | None:
    """Why Sluice refuses this spec on purpose though Kubernetes may admit it (docs/concepts.md,
    "What is admitted"), or None."""
    maps = [m for m in (spec.get("resources") or {}).values() if isinstance(m, dict)]
    values: list[tuple[str | None, Any]] = [(None, spec["storage"]["size"])]
    values += [(name, value) for m in maps for name, value in m.items()]
    if any(len(m) > api.MAX_RESOURCE_NAMES for m in maps):
        return "more names than the bound"
    for name, value in values:
        text = str(value).strip() if isinstance(value, str) else str(value)
        if isinstance(value, str) and len(value) > api.QUANTITY_MAX_LENGTH:
            return "quantity text too long"
        page = name[len("hugepages-") :] if name and name.startswith("hugepages-") else ""
        if re.search(api.LONG_EXPONENT, text) or re.search(api.LONG_EXPONENT, page):
            return "exponent of four digits or more"
        counted = name is not None and (name.startswith("hugepages-") or "/" in name)
        if counted and ("kubernetes.io/" not in name or name.startswith("hugepages-")):
            for number in (text, page):
                if _beyond_largest_counted(number):
                    return "extended or hugepages amount beyond 2^53 - 1"
    return None


def _beyond_largest_counted(text: str) -> bool:
    """Whether a quantity's text is a number above api.LARGEST_COUNTED (parsed roughly:
    only used to recognise the deliberate refusal, which the API server then confirms)."""
    scale = {"k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18, "m": -3}
    binary = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
    match = re.fullmatch(
        r"([+-]?[0-9]*\.?[0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPEm]|[eE][-+]?[0-9]+)?", text
    )
    if not match:
        return False
    number, suffix = match.groups()
    try:
        value = Decimal(number if number.strip("+-.") else "0")
    except InvalidOperation:
        return False
    if suffix in binary:
        value *= 2 ** binary[suffix]
    elif suffix in scale:
        value *= Decimal(10) ** scale[suffix]
    elif suffix:
        if len(suffix.lstrip("eE+-")) > 3:
            return False
        value *= Decimal(10) ** int(suffix[1:])
    return value > api.LARGEST_COUNTED


def _pipeline_from(resources: dict[str, Any], size: int | str) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "registry.example/orders:1", "storage": {"size": size}}
    if resources:
        spec["resources"] = resources
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "generated"},
        "spec": spec,
    }


@pytest.mark.cluster
def test_a_spec_is_admitted_iff_kubernetes_admits_its_claim_and_statefulset(
    crd: None, api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    def refusal(call: Any) -> str | None:
        """None if the dry-run create is admitted, else the API server's message."""
        try:
            call()
        except client.ApiException as error:
            assert error.status in (400, 422), (error.status, _message(error))
            return _message(error)
        return None

    def judge(pipeline: dict[str, Any]) -> tuple[str | None, str | None]:
        ours = refusal(
            lambda: custom.create_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                pipeline,
                dry_run="All",
                _preload_content=False,
            )
        )
        if deliberate_refusal(pipeline["spec"]):
            # Not sent on: a page size such as hugepages-1e99 makes the API server panic
            # (integer divide by zero in IsHugePageResourceValueDivisible, Kubernetes
            # 1.36.3) and drop the connection.
            return ours, None
        spec = api.PipelineSpec.model_validate(pipeline["spec"])  # the operator reads it
        claim = manifests.persistent_volume_claim("generated", UID, spec.storage, 0)
        statefulset = manifests.stateful_set("generated", UID, spec, "generated-storage")
        kube = refusal(
            lambda: core.create_namespaced_persistent_volume_claim(
                namespace, claim, dry_run="All", _preload_content=False
            )
        ) or refusal(
            lambda: apps.create_namespaced_stateful_set(
                namespace, statefulset, dry_run="All", _preload_content=False
            )
        )
        return ours, kube

    pool = ThreadPoolExecutor(PARALLEL)

    @settings(
        max_examples=max(1, EXAMPLES // BATCH),
        deadline=None,
        database=None,  # CI starts clean; a failure prints the example to reproduce it
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(
            st.tuples(kube_rules.resources(), kube_rules.STORAGE_SIZES),
            min_size=BATCH,
            max_size=BATCH,
        )
    )
    def check(batch: list[tuple[dict[str, Any], int | str]]) -> None:
        pipelines = [_pipeline_from(resources, size) for resources, size in batch]
        verdicts = list(pool.map(judge, pipelines))
        for pipeline, (ours, kube) in zip(pipelines, verdicts, strict=True):
            shown = json.dumps(pipeline["spec"])
            deliberate = deliberate_refusal(pipeline["spec"])
            if deliberate:
                assert ours is not None, f"admitted, though refused on purpose: {shown}"
                tally[f"refused on purpose ({deliberate})"] += 1
                continue
            assert (ours is None) == (kube is None), (
                f"Sluice {'admitted' if ours is None else 'refused'} {shown}"
                + (f" ({ours})" if ours else "")
                + f", Kubernetes {'admitted' if kube is None else 'refused'} its claim and"
                " StatefulSet" + (f" ({kube})" if kube else "")
            )
            if ours is not None:
                assert "spec." in ours, ours
            tally["admitted" if ours is None else "refused"] += 1

    try:
        check()
    finally:
        pool.shutdown()
    elapsed = time.monotonic() - started
    print(f"{sum(tally.values())} specs in {elapsed:.0f} s: {dict(tally)}")
    # Both sides of the line must be reached often, or the test proves little.
    assert tally["admitted"] >= EXAMPLES // 10, tally
    assert tally["refused"] >= EXAMPLES // 10, tally
