"""Rule 16, as a class: every Pipeline the API server admits can be run.

Pipelines are generated from the CRD's own schema (`schema_strategy.py`), names from the
API server's rule for custom resource names (DNS subdomains), and each is sent to the real
API server (server-side dry run). For every one it admits, the operator's own builders
(`core/manifests.py`) make the PVC, Service and StatefulSet, and a server-side dry-run
create of each must succeed; the operator's models and `decide` must accept it too. Every
one it refuses must be refused naming the field.

SLUICE_PROPERTY_EXAMPLES sets the number of generated pipelines (default 2,000).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from sluice.api import crd
from sluice.api import v1alpha1 as api
from sluice.core import decide as d
from sluice.core import manifests
from sluice.core.labels import FINALIZER
from sluice.core.observed import Observed

from .schema_strategy import from_crd_schema

EXAMPLES = int(os.environ.get("SLUICE_PROPERTY_EXAMPLES", "2000"))
NOW = "2026-11-29T00:00:00Z"

# Names the API server accepts for any custom resource: DNS-1123 subdomains.
SUBDOMAIN = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,2}"
# Resource names worth trying beside arbitrary text: the standard ones, and those the
# API server accepts for containers only under extra rules (extended, hugepages).
RESOURCE_NAME_HINTS = [
    *api.RESOURCE_NAMES,
    "hugepages-2Mi",
    "example.com/gpu",
    "pods",
    "storage",
    "requests.cpu",
]


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
        from_crd_schema(SPEC_SCHEMA, RESOURCE_NAME_HINTS),
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
        claim = manifests.persistent_volume_claim(name, uid, spec.storage, claim_generation=0)
        created = core.create_namespaced_persistent_volume_claim(namespace, claim, dry_run="All")
        core.create_namespaced_service(
            namespace, manifests.headless_service(name, uid), dry_run="All"
        )
        apps.create_namespaced_stateful_set(
            namespace,
            manifests.stateful_set(name, uid, spec, created.metadata.name),
            dry_run="All",
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
            assert "spec" in message or "metadata.name" in message, message
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
