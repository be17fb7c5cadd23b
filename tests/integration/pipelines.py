"""What a user does with kubectl, and what they check, as small helpers for tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from localkube.cluster import CSI_CLASS, KWOK_TAINT, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

# The engine pipeline (tests/pipeline: Feldera's engine), imported into the real node's
# containerd by localkube; the variant ignores SIGTERM (a pod that holds its grace period).
IMAGE = "localhost/sluice/engine-pipeline:0.1.0"
IMAGE_IGNORING_SIGTERM = f"{IMAGE}-ignores-sigterm"
# Both of the local cluster's classes: `standard` (the in-tree hostPath provisioner) and
# `csi-local` (CSI: the upstream external-provisioner over csi-local's directories).
both_classes = pytest.mark.parametrize("storage_class_name", [STORAGE_CLASS, CSI_CLASS])


def pod_security(storage_class: str | None) -> dict[str, str]:
    """The spec field a pipeline needs to write its volume on this class: the in-tree hostPath
    provisioner's directories are root's, mode 0750, and the kubelet gives no fsGroup to
    hostPath volumes, so a pipeline there runs as its image's user (root); csi-local's get
    the Restricted default's fsGroup (test_pod_security.py)."""
    return {"podSecurity": "ImageDefault"} if storage_class in (None, STORAGE_CLASS) else {}


HOLD = "sluice.dev/test-hold"  # a finalizer tests use to hold a deletion open
MERGE = "application/merge-patch+json"


def document(
    name: str,
    namespace: str,
    desired: str = "Running",
    clear_request: str | None = None,
    policy: str = "Delete",
    size: str = "1Gi",
    storage_class: str | None = None,
) -> dict[str, Any]:
    """A Pipeline as a user writes it, as a dict (the API client's body)."""
    storage: dict[str, Any] = {"size": size, "clearPolicy": policy}
    if storage_class is not None:
        storage["storageClassName"] = storage_class
    if clear_request is not None:
        storage["clearRequest"] = clear_request
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "desiredState": desired,
            "image": IMAGE,
            "storage": storage,
            **pod_security(storage_class),
        },
    }


def manifest(name: str, namespace: str, *args: Any, **kwargs: Any) -> str:
    """The same as YAML, for kubectl apply."""
    return yaml.safe_dump(document(name, namespace, *args, **kwargs))


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


def stop_and_clear(kubectl: Kubectl, namespace: str, name: str, request: str = "r1") -> None:
    """Stop the pipeline and request a clear in one change (rule 5), as a merge patch."""
    body = {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": request}}}
    patch(kubectl, namespace, name, body)


def can_i(kubectl: Kubectl, verb: str, resource: str, *where: str) -> str:
    """`kubectl auth can-i` ("yes" or "no"); `resource` may name a subresource after a "/";
    `where`: e.g. "-n", namespace, or "--all-namespaces", and "--as=..."."""
    name, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = kubectl("auth", "can-i", verb, name, *extra, *where, check=False)
    return answer.stdout.strip()


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


def storage(obj: dict[str, Any]) -> dict[str, Any]:
    """status.storage, or {} before the operator wrote it."""
    result: dict[str, Any] = (obj.get("status") or {}).get("storage") or {}
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """One of the pipeline's status conditions, by type ({} while there is none)."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def wait_error(
    kubectl: Kubectl, namespace: str, name: str, code: str, timeout: float = 60
) -> dict[str, Any]:
    """The pipeline, once status.error carries `code`."""

    def failed() -> dict[str, Any] | None:
        now = get(kubectl, namespace, name)
        error = now["status"].get("error") or {}
        return now if error.get("error_code") == code else None

    return wait_for(failed, timeout=timeout, what=f"{namespace}/{name} error {code}")


@contextlib.contextmanager
def watch_storage(api: client.ApiClient, namespace: str, name: str) -> Iterator[list[str]]:
    """Every status.storage.status the pipeline takes while the block runs, in order (from a
    watch, so none is missed between two looks); the list fills as the block runs."""
    custom = client.CustomObjectsApi(api)
    seen: list[str] = []
    start = custom.list_namespaced_custom_object(
        "sluice.dev", "v1alpha1", namespace, "pipelines", field_selector=f"metadata.name={name}"
    )
    for item in start["items"]:
        seen.append(storage(item).get("status", ""))
    stream = watch.Watch()
    stopped = threading.Event()

    def follow() -> None:
        version = start["metadata"]["resourceVersion"]
        while not stopped.is_set():
            try:
                for event in stream.stream(
                    custom.list_namespaced_custom_object,
                    *("sluice.dev", "v1alpha1", namespace, "pipelines"),
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=5,
                ):
                    version = event["object"]["metadata"]["resourceVersion"]
                    value = storage(event["object"]).get("status", "")
                    if not seen or seen[-1] != value:
                        seen.append(value)
            except Exception:  # stopped mid-read, or a dropped watch: resume from `version`
                if not stopped.is_set():
                    time.sleep(0.1)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        yield seen
    finally:
        stopped.set()
        stream.stop()
        follower.join(timeout=10)


def claims(api: client.ApiClient, namespace: str) -> list[client.V1PersistentVolumeClaim]:
    items: list[client.V1PersistentVolumeClaim] = (
        client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items
    )
    return items


def pipeline_claim(api: client.ApiClient, namespace: str, pipeline: str) -> str:
    """The name of the one claim labelled with the pipeline's name."""
    items = (
        client.CoreV1Api(api)
        .list_namespaced_persistent_volume_claim(
            namespace, label_selector=f"sluice.dev/pipeline={pipeline}"
        )
        .items
    )
    assert len(items) == 1, [c.metadata.name for c in items]
    return str(items[0].metadata.name)


def claim_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {str(c.metadata.name) for c in claims(api, namespace)}


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
    """The pipeline's Event reasons, once `reason` is among them. Most Events are posted off
    the reconcile path (and retried across an API server outage), so status can say what
    they say a moment before they are there (a clear's own are posted before its status)."""

    def listed() -> list[str] | None:
        reasons = [str(e.reason) for e in events(api, namespace, name)]
        return reasons if reason in reasons else None

    return wait_for(listed, what=f"the {reason} Event of {namespace}/{name}")


def event_once(
    api: client.ApiClient,
    namespace: str,
    name: str,
    reason: str,
    type_: str | None = None,
    says: str = "",
) -> client.CoreV1Event:
    """The pipeline's first Event with this reason (and type, and words in its message), once
    it is there: Events are posted off the reconcile path, after status."""

    def found() -> client.CoreV1Event | None:
        return next(
            (
                e
                for e in events(api, namespace, name)
                if e.reason == reason
                and (type_ is None or e.type == type_)
                and says in (e.message or "")
            ),
            None,
        )

    return wait_for(found, what=f"a {reason} Event of {namespace}/{name} saying {says!r}")


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


def clear_and_wait(
    kubectl: Kubectl, namespace: str, name: str, request: str = "r1", timeout: int = 60
) -> dict[str, Any]:
    """Stop and clear in one change, and the pipeline once its storage is Cleared."""
    stop_and_clear(kubectl, namespace, name, request)
    return wait_storage(kubectl, namespace, name, "Cleared", timeout=timeout)


def run_and_wait(kubectl: Kubectl, namespace: str, name: str, **kwargs: Any) -> None:
    apply(kubectl, manifest(name, namespace, **kwargs))
    wait_condition(kubectl, namespace, name, "Running")
    wait_jsonpath(kubectl, namespace, name, ".status.storage.status", "InUse")


def run_with_claim(
    kubectl: Kubectl,
    api: client.ApiClient,
    namespace: str,
    name: str,
    held: bool = False,
    **kwargs: Any,
) -> str:
    """Run the pipeline until Running with storage InUse; its one claim's name. `held`: a
    finalizer on the claim keeps its deletion from completing until `release`."""
    run_and_wait(kubectl, namespace, name, **kwargs)
    (claim,) = storage(get(kubectl, namespace, name))["claims"]
    if held:
        hold(api, "persistent_volume_claim", namespace, claim)
    return str(claim)


def wait_storage(
    kubectl: Kubectl, namespace: str, name: str, status: str, timeout: int = 60
) -> dict[str, Any]:
    """The pipeline, once status.storage.status is `status`."""
    wait_jsonpath(kubectl, namespace, name, ".status.storage.status", status, timeout=timeout)
    return get(kubectl, namespace, name)


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
    the StatefulSet controller neither adopts nor replaces it. On the kwok node: a real
    kubelet runs its container and writes back the status it sees, so the failure patched in
    below would not stay (it was seen gone within 0.1 s)."""
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
        "spec": {
            "containers": [{"name": "pipeline", "image": IMAGE}],
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists"}],
        },
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


def kubectl_sluice(
    cluster: LocalCluster, *args: str, timeout: float = 120, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl sluice ARGS` as a user runs it: kubectl finds kubectl-sluice on PATH."""
    env = {
        **os.environ,
        # kubectl looks plugins up on PATH; the venv's bin holds the console script.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig or cluster.kubeconfig),
    }
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "sluice", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
