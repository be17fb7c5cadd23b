"""What a user does with kubectl, and what they check, as small helpers for tests."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

IMAGE = "registry.example/orders:1"


HOLD = "sluice.dev/test-hold"  # a finalizer tests use to hold a deletion open
MERGE = "application/merge-patch+json"


def manifest(
    name: str,
    namespace: str,
    desired: str = "Running",
    clear_request: str | None = None,
    policy: str = "Delete",
    size: str = "1Gi",
    storage_class: str | None = None,
) -> str:
    storage: dict[str, Any] = {"size": size, "clearPolicy": policy}
    if storage_class is not None:
        storage["storageClassName"] = storage_class
    if clear_request is not None:
        storage["clearRequest"] = clear_request
    return yaml.safe_dump(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"desiredState": desired, "image": IMAGE, "storage": storage},
        }
    )


def apply(kubectl: Kubectl, text: str, check: bool = True) -> Any:
    return kubectl("apply", "-f", "-", input=text, check=check)


def patch(kubectl: Kubectl, namespace: str, name: str, body: dict[str, Any], check: bool = True):  # type: ignore[no-untyped-def]
    return kubectl(
        "-n",
        namespace,
        "patch",
        "pipeline",
        name,
        "--type",
        "merge",
        "-p",
        json.dumps(body),
        check=check,
    )


def get(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        kubectl("-n", namespace, "get", "pipeline", name, "-o", "json").stdout
    )
    return out


def wait_jsonpath(
    kubectl: Kubectl, namespace: str, name: str, path: str, value: str, timeout: int = 60
) -> None:
    kubectl(
        "-n",
        namespace,
        "wait",
        f"--for=jsonpath={{{path}}}={value}",
        f"pipeline/{name}",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def wait_condition(
    kubectl: Kubectl, namespace: str, name: str, condition: str, timeout: int = 60
) -> None:
    kubectl(
        "-n",
        namespace,
        "wait",
        f"--for=condition={condition}",
        f"pipeline/{name}",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def wait_settled(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = 60
) -> dict[str, Any]:
    """Until the operator has acted on the latest generation and Ready reflects it."""

    def settled() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, name)
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    return wait_for(settled, timeout=timeout, what=f"{namespace}/{name} settled")


def claims(api: client.ApiClient, namespace: str) -> list[client.V1PersistentVolumeClaim]:
    items: list[client.V1PersistentVolumeClaim] = (
        client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items
    )
    return items


def events(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    items: list[client.CoreV1Event] = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [e for e in items if e.involved_object.kind == "Pipeline"]


def reasons_once(
    api: client.ApiClient, namespace: str, name: str, reason: str = "StorageCleared"
) -> list[str]:
    """The pipeline's Event reasons, once `reason` is among them. Events are posted off the
    reconcile path (and retried across an API server outage), so status can say what they
    say a moment before they are there."""

    def listed() -> list[str] | None:
        reasons = [str(e.reason) for e in events(api, namespace, name)]
        return reasons if reason in reasons else None

    return wait_for(listed, what=f"the {reason} Event of {namespace}/{name}")


def read_claim(
    api: client.ApiClient, namespace: str, name: str
) -> client.V1PersistentVolumeClaim | None:
    """A claim, or None once it is gone."""
    try:
        claim: client.V1PersistentVolumeClaim = client.CoreV1Api(
            api
        ).read_namespaced_persistent_volume_claim(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return claim


def pods(api: client.ApiClient, namespace: str) -> list[client.V1Pod]:
    items: list[client.V1Pod] = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    return items


def run_and_wait(kubectl: Kubectl, namespace: str, name: str, **kwargs: Any) -> None:
    apply(kubectl, manifest(name, namespace, **kwargs))
    wait_condition(kubectl, namespace, name, "Running")
    wait_jsonpath(kubectl, namespace, name, ".status.storage.status", "InUse")


def claim_policy(
    name: str,
    namespace: str,
    operations: list[str],
    expression: str = "false",
    pipelines: list[str] | None = None,
) -> str:
    """A ValidatingAdmissionPolicy (+ binding) that refuses the given operations on PVCs in
    one namespace where `expression` is false: a real API server refusing the operator."""
    match: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    if pipelines:
        match["objectSelector"] = {
            "matchExpressions": [
                {"key": "sluice.dev/pipeline", "operator": "In", "values": pipelines}
            ]
        }
    admission = "admissionregistration.k8s.io/v1"
    rule = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": operations,
        "resources": ["persistentvolumeclaims"],
    }
    policy = {
        "apiVersion": admission,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [{"expression": expression, "message": "blocked by test policy"}],
        },
    }
    binding = {
        "apiVersion": admission,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": match},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})


def edit_finalizers(
    api: client.ApiClient, kind: str, namespace: str | None, name: str, edit: Any
) -> None:
    """Read-modify-write with a resourceVersion precondition, retried on conflict: the
    operator and controllers may change the object between our read and our write.
    `namespace` None: a cluster-scoped kind (e.g. persistent_volume)."""
    core = client.CoreV1Api(api)
    scope = "" if namespace is None else "namespaced_"
    where = () if namespace is None else (namespace,)
    read = getattr(core, f"read_{scope}{kind}")
    patch_ = getattr(core, f"patch_{scope}{kind}")
    for _ in range(20):
        try:
            meta = read(name, *where).metadata
        except client.ApiException as error:
            if error.status == 404:
                return  # already gone: nothing to hold or release
            raise
        body = {
            "metadata": {
                "finalizers": edit(list(meta.finalizers or [])),
                "resourceVersion": meta.resource_version,
            }
        }
        try:
            patch_(name, *where, body, _content_type=MERGE)
            return
        except client.ApiException as error:
            if error.status != 409:
                raise
    raise AssertionError(f"{kind} {name}: conflicts on every attempt")


def hold(api: client.ApiClient, kind: str, namespace: str, name: str) -> None:
    edit_finalizers(api, kind, namespace, name, lambda fs: [*fs, HOLD])


def release(api: client.ApiClient, kind: str, namespace: str, name: str) -> None:
    edit_finalizers(api, kind, namespace, name, lambda fs: [f for f in fs if f != HOLD])


def failed_pod(api: client.ApiClient, namespace: str, pipeline: dict[str, Any]) -> None:
    """A pod of the pipeline (by its labels) that fails; owned by a ConfigMap as controller so
    the StatefulSet controller neither adopts nor replaces it."""
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "failed-owner"}})
    meta = pipeline["metadata"]
    labels = {"sluice.dev/pipeline": meta["name"], "sluice.dev/pipeline-uid": meta["uid"]}
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "failed-owner",
        "uid": owner.metadata.uid,
        "controller": True,
    }
    body = {
        "metadata": {"name": "failed-extra", "labels": labels, "ownerReferences": [ref]},
        "spec": {"containers": [{"name": "pipeline", "image": IMAGE}]},
    }
    core.create_namespaced_pod(namespace, body)
    wait_for(
        lambda: core.read_namespaced_pod("failed-extra", namespace).status.phase == "Running",
        what="the extra pod to run",
    )
    core.patch_namespaced_pod_status(
        "failed-extra",
        namespace,
        # What the kubelet writes when it evicts a pod.
        {
            "status": {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory.",
            }
        },
        _content_type=MERGE,
    )
