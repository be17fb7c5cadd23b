"""The operator observes through its watch-fed cache (issue 10): reconciles cost no API
reads, and a restart costs one LIST per kind, counted from the API server's own
`apiserver_request_total`. The test's own reads are LISTs of pipelines (never GETs), so
every GET counted is someone else's."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kubernetes import client
from localkube.fixtures import Kubectl, wait_for
from sluice.api import v1alpha1 as api
from sluice_fixtures import Operator

from .metrics import requests_by_verb
from .pipelines import apply, manifest, wait_settled

# What a reconcile read before the cache: GET pipeline, StatefulSet, Service; LIST pods, PVCs.
OBSERVE_READS = {
    ("GET", "pipelines"),
    ("GET", "statefulsets"),
    ("GET", "services"),
    ("LIST", "pods"),
    ("LIST", "persistentvolumeclaims"),
}
OWNED = {"statefulsets", "services", "pods", "persistentvolumeclaims"}


def _listed(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """A LIST (a LIST with a metadata.name field selector counts as a GET)."""
    items = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL
    )["items"]
    (found,) = (o for o in items if o["metadata"]["name"] == name)
    return dict(found)


def _quiet(api_client: client.ApiClient) -> None:
    """The controller-manager reads claims while it deletes earlier tests' namespaces
    (apiserver_request_total has no namespace label): let that finish first."""

    def no_namespace_terminating() -> bool:
        items = client.CoreV1Api(api_client).list_namespace().items
        return all(ns.status.phase != "Terminating" for ns in items)

    wait_for(no_namespace_terminating, timeout=120, what="earlier tests' namespaces to go")


def _reads(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> dict[Any, int]:
    return {key: after[key] - before[key] for key in OBSERVE_READS if after[key] != before[key]}


def test_reconciles_read_nothing_from_the_api_server(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    # A stopped pipeline with a claim: nothing of the controller-manager's moves meanwhile.
    apply(kubectl, manifest("orders", namespace, "Running"))
    wait_settled(kubectl, namespace, "orders")
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    wait_settled(kubectl, namespace, "orders")
    custom = client.CustomObjectsApi(api_client)
    _quiet(api_client)
    before = requests_by_verb(kubectl)
    writes_before = before[("PATCH", "pipelines/status")]
    for i in range(3):  # each edit is a new generation the operator must observe
        custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            "orders",
            {"spec": {"image": f"registry.example/orders:{i + 2}"}},
        )
        wait_for(
            lambda: (
                (obj := _listed(api_client, namespace, "orders"))["metadata"]["generation"]
                == (obj.get("status") or {}).get("observedGeneration")
            ),
            timeout=60,
            what="the operator to observe the new generation",
        )
    after = requests_by_verb(kubectl)
    assert after[("PATCH", "pipelines/status")] - writes_before >= 3  # it did reconcile
    assert _reads(before, after) == {}


def test_a_restart_lists_each_kind_and_gets_nothing(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    wait_settled(kubectl, namespace, "orders")
    _quiet(api_client)  # (while the operator runs: it holds their pipelines' finalizers)
    live_operator.stop()
    before = requests_by_verb(kubectl)
    live_operator.start()
    wait_for(
        lambda: (
            requests_by_verb(kubectl)[("LIST", "persistentvolumeclaims")]
            > before[("LIST", "persistentvolumeclaims")]
        ),
        timeout=60,
        what="the restarted operator to list claims",
    )
    time.sleep(5)  # an observation window for the restarted operator's reconciles
    after = requests_by_verb(kubectl)
    gets = {k: after[k] - before[k] for k in after if k[0] == "GET" and after[k] != before[k]}
    gets = {k: n for k, n in gets.items() if k[1].split("/")[0] in {"pipelines", *OWNED}}
    assert gets == {}
    lists = {k[1]: after[k] - before[k] for k in after if k[0] == "LIST" and after[k] != before[k]}
    for kind in ("pipelines", *OWNED):
        assert lists.get(kind, 0) >= 1, lists
