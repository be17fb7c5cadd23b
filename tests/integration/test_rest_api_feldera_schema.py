"""Every answer of `sluice api`, in every state the operator produces, checked against
Feldera's own OpenAPI document (the `feldera-rest-api` crate's openapi.json): the schema
of that path and status code. Extra fields are allowed (Feldera's schemas allow them);
a missing, wrongly typed or undocumented one is a failure.

The states are held open with finalizers (a pod, a claim, a volume) and an admission
policy, so each is observed through the REST API while it lasts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import yaml
from feldera_schema import response_errors
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    claim_policy,
    failed_pod,
    get,
    hold,
    manifest,
    patch,
    pipeline_claim,
    release,
    wait_condition,
    wait_jsonpath,
)
from .test_rest_api import ApiServer, token_for
from .test_rest_api import api as api  # the REST API fixture, shared
from .volumes import claim_volume

LIST = "/v0/pipelines"
ONE = "/v0/pipelines/{pipeline_name}"
SELECTORS = ("", "?selector=all", "?selector=status", "?selector=status_with_connectors")


@dataclass
class Conformance:
    """Calls the API and checks each answer against Feldera's document; collects every
    breach (so one run shows them all) and what was checked."""

    api: ApiServer
    token: str
    breaches: list[str] = field(default_factory=list)
    checked: set[tuple[str, str, int]] = field(default_factory=set)

    def call(
        self, state: str, method: str, template: str, name: str = "", query: str = ""
    ) -> requests.Response:
        path = template.replace("{pipeline_name}", name) + query
        response = self.api.request(method, path, self.token)
        content_type = response.headers.get("Content-Type", "")
        for breach in response_errors(
            method, template, response.status_code, content_type, response.content
        ):
            self.breaches.append(f"[{state}] {method} {path} -> {response.status_code}: {breach}")
        self.checked.add((method, template, response.status_code))
        return response

    def observe(self, state: str, name: str) -> dict[str, Any]:
        """GET the list and the pipeline with every selector Feldera defines (a status
        other than 200 is a breach too: Feldera documents none for these)."""
        for query in SELECTORS:
            self.call(state, "GET", LIST, query=query)
            self.call(state, "GET", ONE, name, query)
        response = self.call(state, "GET", ONE, name)
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get(kubectl, namespace, name).get("status") or {}
    return status


@pytest.fixture
def held(api_client: client.ApiClient, kubectl: Kubectl, namespace: str) -> Iterator[list[Any]]:
    """Holds to release after the test: ("pod"|"persistent_volume_claim", name), or
    ("pv", name), or ("policy", name)."""
    holds: list[Any] = []
    yield holds
    core = client.CoreV1Api(api_client)
    for kind, name in reversed(holds):
        if kind == "pv":
            try:
                core.patch_persistent_volume(name, {"metadata": {"finalizers": None}})
            except client.ApiException as error:
                if error.status != 404:
                    raise
        elif kind == "policy":
            kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
            kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
        else:
            release(api_client, kind, namespace, name)


def test_every_answer_in_every_state_matches_feldera_schema(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
    api: ApiServer,
    held: list[Any],
) -> None:
    token = token_for(kubectl, namespace, "feldera", ["get", "list", "patch", "delete"])
    check = Conformance(api, token)
    ns = namespace
    running = ["running", "failed", "stopping", "clearing", "volume-wait", "clear-failed"]
    running += ["stopped", "cleared", "detached", "deleting"]
    for name in running:
        apply(kubectl, manifest(name, ns, policy="Detach" if name == "detached" else "Delete"))
    slow = yaml.safe_load(manifest("provisioning", ns))
    slow["spec"]["resources"] = {"requests": {"cpu": 1000, "memory": "2Gi"}}  # fits no node
    apply(kubectl, yaml.safe_dump(slow))
    for name in running:
        wait_condition(kubectl, ns, name, "Running")
        wait_jsonpath(kubectl, ns, name, ".status.storage.status", "InUse")
    wait_jsonpath(kubectl, ns, "provisioning", ".status.deploymentStatus", "Provisioning")

    assert check.observe("Running", "running")["deployment_status"] == "Running"
    assert check.observe("Provisioning", "provisioning")["deployment_status"] == "Provisioning"
    assert check.call("Running", "GET", "/v0/config").status_code == 200
    # Refusals while running: Feldera's 400s.
    assert check.call("Running", "POST", f"{ONE}/clear", "running").status_code == 400
    assert check.call("Running", "DELETE", ONE, "running").status_code == 400

    # Hold each state open: a pod's deletion, a claim's, a volume's; a refused claim delete.
    hold(api_client, "pod", ns, "stopping-0")
    held.append(("pod", "stopping-0"))
    for name in ("clearing", "deleting"):
        claim = pipeline_claim(api_client, ns, name)
        hold(api_client, "persistent_volume_claim", ns, claim)
        held.append(("persistent_volume_claim", claim))
    volume = claim_volume(api_client, ns, pipeline_claim(api_client, ns, "volume-wait"))
    client.CoreV1Api(api_client).patch_persistent_volume(
        volume, {"metadata": {"finalizers": ["sluice.dev/test-hold"]}}
    )
    held.append(("pv", volume))
    policy = f"deny-delete-{ns}"[:63]
    kubectl(
        "apply", "-f", "-", input=claim_policy(policy, ns, ["DELETE"], pipelines=["clear-failed"])
    )
    held.append(("policy", policy))

    # Stop through the API (with and without force), as Feldera's clients do.
    for name in running:
        if name not in ("running", "failed"):
            query = "?force=true" if name in ("stopping", "clearing") else ""
            stop = check.call("Stopping", "POST", f"{ONE}/stop", name, query)
            assert stop.status_code == 202, stop.text
    failed_pod(api_client, ns, get(kubectl, ns, "failed"))
    wait_jsonpath(kubectl, ns, "stopping", ".status.deploymentStatus", "Stopping")
    assert check.observe("Stopping", "stopping")["deployment_status"] == "Stopping"
    wait_jsonpath(kubectl, ns, "failed", ".status.deploymentStatus", "Failed")
    assert check.observe("Failed pod", "failed")["deployment_status"] == "Unavailable"
    assert check.call("Failed pod", "POST", f"{ONE}/dismiss_error", "failed").ok

    for name in ("stopped", "clearing", "volume-wait", "clear-failed", "cleared", "detached"):
        wait_jsonpath(kubectl, ns, name, ".status.deploymentStatus", "Stopped")
    assert check.observe("Stopped", "stopped")["storage_status"] == "InUse"
    for name in ("clearing", "volume-wait", "clear-failed", "cleared", "detached"):
        accepted = check.call("Stopped", "POST", f"{ONE}/clear", name)
        assert accepted.status_code == 202, accepted.text

    wait_jsonpath(kubectl, ns, "clearing", ".status.storage.status", "Clearing")
    assert check.observe("Clearing", "clearing")["storage_status"] == "Clearing"
    refused = check.call("Clearing", "POST", f"{ONE}/start", "clearing")
    assert refused.status_code == 400, refused.text
    assert check.call("Clearing", "POST", f"{ONE}/clear", "clearing").status_code == 202
    patch(kubectl, ns, "clearing", {"spec": {"desiredState": "Running"}})
    wait_jsonpath(
        kubectl, ns, "clearing", ".status.error.error_code", "CannotStartWhileClearingStorage"
    )
    info = check.observe("CannotStartWhileClearingStorage", "clearing")
    assert info["deployment_error"]["error_code"] == "CannotStartWhileClearingStorage"

    wait_for(
        lambda: _status(kubectl, ns, "volume-wait")["storage"].get("clearingVolumes"),
        what="volume-wait to wait for its volume",
    )
    info = check.observe("Clearing, waiting for volumes", "volume-wait")
    assert info["storage_status"] == "Clearing"

    wait_jsonpath(kubectl, ns, "clear-failed", ".status.error.error_code", "StorageClearFailed")
    info = check.observe("StorageClearFailed", "clear-failed")
    assert info["deployment_error"]["error_code"] == "StorageClearFailed"

    wait_jsonpath(kubectl, ns, "cleared", ".status.storage.status", "Cleared")
    assert check.observe("Cleared", "cleared")["storage_status"] == "Cleared"
    wait_jsonpath(kubectl, ns, "detached", ".status.storage.status", "Cleared")
    wait_for(
        lambda: _status(kubectl, ns, "detached")["storage"].get("retainedVolumes"),
        what="the detached claim to be reported",
    )
    assert check.observe("Cleared, retained volume", "detached")["storage_status"] == "Cleared"

    # Deleting: the operator's finalizer clears the storage, whose claim is held.
    wait_jsonpath(kubectl, ns, "deleting", ".status.deploymentStatus", "Stopped")
    kubectl("-n", ns, "delete", "pipeline", "deleting", "--wait=false")
    wait_for(
        lambda: get(kubectl, ns, "deleting")["metadata"].get("deletionTimestamp"),
        what="deleting to be deleting",
    )
    check.observe("Deleting", "deleting")

    # Start, delete, and every 404, from Cleared.
    assert check.call("Cleared", "POST", f"{ONE}/start", "cleared").status_code == 202
    assert check.call("Cleared", "POST", f"{ONE}/stop", "cleared").status_code == 202
    wait_jsonpath(kubectl, ns, "cleared", ".status.deploymentStatus", "Stopped")
    wait_jsonpath(kubectl, ns, "cleared", ".status.storage.status", "InUse")
    assert check.call("Stopped", "POST", f"{ONE}/clear", "cleared").status_code == 202
    wait_jsonpath(kubectl, ns, "cleared", ".status.storage.status", "Cleared")
    assert check.call("Cleared", "DELETE", ONE, "cleared").status_code == 200
    for method, template in (
        ("GET", ONE),
        ("DELETE", ONE),
        ("POST", f"{ONE}/clear"),
        ("POST", f"{ONE}/start"),
        ("POST", f"{ONE}/stop"),
        ("POST", f"{ONE}/dismiss_error"),
    ):
        assert check.call("Missing", method, template, "cleared").status_code == 404
    # A name no pipeline can have does not exist either (Feldera: 404, not 400).
    check.call("Missing", "GET", ONE, "Not_A_Name")

    assert not check.breaches, "\n".join(check.breaches)
    every = {
        ("GET", LIST, 200),
        ("GET", ONE, 200),
        ("GET", ONE, 404),
        ("GET", "/v0/config", 200),
        ("POST", f"{ONE}/clear", 202),
        ("POST", f"{ONE}/clear", 400),
        ("POST", f"{ONE}/start", 202),
        ("POST", f"{ONE}/start", 400),
        ("POST", f"{ONE}/stop", 202),
        ("POST", f"{ONE}/dismiss_error", 200),
        ("DELETE", ONE, 200),
        ("DELETE", ONE, 400),
    }
    assert every <= check.checked, sorted(every - check.checked)
    print(json.dumps(sorted(check.checked)))
