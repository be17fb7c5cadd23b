"""The local cluster is a real Kubernetes control plane, not a mock.

Every test relies on behaviour only the real apiserver and controllers have:
structural-schema pruning and CEL validation, the StatefulSet, PV binder,
pvc-protection and garbage-collector controllers, the scheduler plus kwok,
ServiceAccount tokens with RBAC, and the version the binaries were built at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import REPO
from localkube.fixtures import Kubectl, wait_for

KUBERNETES_VERSION = "v1.36.3"
PAUSE = "registry.k8s.io/pause:3.10"

GROUP = "localkube.sluice.dev"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "string", "enum": ["small", "large"]},
                                    "replicas": {
                                        "type": "integer",
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self >= oldSelf",
                                                "message": "replicas may not decrease",
                                            }
                                        ],
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _status(err: client.ApiException) -> tuple[int | None, str]:
    """HTTP status and the apiserver's Status message of a failed call."""
    return err.status, str(json.loads(str(err.body))["message"])


def _gone(read: Any, *args: str) -> bool:
    """True once read(*args) answers 404."""
    try:
        read(*args)
    except client.ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def _pod_running_ready(core: client.CoreV1Api, name: str, namespace: str) -> bool:
    pod: Any = core.read_namespaced_pod(name, namespace)
    conditions = pod.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return bool(pod.status.phase == "Running" and ready)


def _pvc_phase(core: client.CoreV1Api, name: str, namespace: str) -> str | None:
    pvc: Any = core.read_namespaced_persistent_volume_claim(name, namespace)
    return pvc.status.phase if pvc.status else None


@pytest.mark.cluster
def test_crd_schema_prunes_validates_enum_and_cel_transition(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump(WIDGET_CRD))
    kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=30s")
    custom = client.CustomObjectsApi(api_client)

    def create(name: str, spec: dict[str, Any]) -> Any:
        body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}}
        return custom.create_namespaced_custom_object(
            GROUP, "v1", namespace, "widgets", {**body, "spec": spec}
        )

    # Established can precede the handler by a moment: retry the first create on 404.
    created = wait_for(
        lambda: create("w1", {"size": "small", "replicas": 2, "colour": "blue"}),
        timeout=15,
        what="the widgets endpoint",
    )
    assert created["spec"] == {"size": "small", "replicas": 2}
    stored: Any = custom.get_namespaced_custom_object(GROUP, "v1", namespace, "widgets", "w1")
    assert "colour" not in stored["spec"], "unknown field was not pruned"

    with pytest.raises(client.ApiException) as bad_enum:
        create("w2", {"size": "huge", "replicas": 1})
    status, body = _status(bad_enum.value)
    assert status == 422
    assert 'Unsupported value: "huge"' in body

    stored["spec"]["replicas"] = 1
    with pytest.raises(client.ApiException) as decrease:
        custom.replace_namespaced_custom_object(GROUP, "v1", namespace, "widgets", "w1", stored)
    status, body = _status(decrease.value)
    assert status == 422
    assert "replicas may not decrease" in body

    stored["spec"]["replicas"] = 3
    replaced: Any = custom.replace_namespaced_custom_object(
        GROUP, "v1", namespace, "widgets", "w1", stored
    )
    assert replaced["spec"]["replicas"] == 3
    kubectl("delete", "crd", f"widgets.{GROUP}", "--wait=false")


@pytest.mark.cluster
def test_statefulset_gets_bound_pvc_and_ready_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    labels = {"app": "web"}
    statefulset = client.V1StatefulSet.model_validate(
        {
            "metadata": {"name": "web"},
            "spec": {
                "serviceName": "web",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": PAUSE,
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Mi"}},
                        },
                    }
                ],
            },
        }
    )
    apps.create_namespaced_stateful_set(namespace, statefulset)

    wait_for(
        lambda: _pvc_phase(core, "data-web-0", namespace) == "Bound",
        timeout=60,
        what="PVC data-web-0 Bound",
    )
    pvc: Any = core.read_namespaced_persistent_volume_claim("data-web-0", namespace)
    assert pvc.spec.storage_class_name == "standard"
    pv: Any = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.host_path.path.startswith("/tmp/")

    wait_for(
        lambda: _pod_running_ready(core, "web-0", namespace),
        timeout=60,
        what="pod web-0 Running and Ready",
    )
    pod: Any = core.read_namespaced_pod("web-0", namespace)
    assert pod.spec.node_name == "kwok-node-0"

    def ready_replicas() -> int:
        statefulset: Any = apps.read_namespaced_stateful_set("web", namespace)
        return int(statefulset.status.ready_replicas or 0)

    wait_for(lambda: ready_replicas() == 1, timeout=60, what="StatefulSet web readyReplicas 1")


@pytest.mark.cluster
def test_pvc_in_use_is_protected_until_its_pod_is_deleted(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    claim = client.V1PersistentVolumeClaim.model_validate(
        {
            "metadata": {"name": "claim"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(namespace, claim)
    wait_for(lambda: _pvc_phase(core, "claim", namespace) == "Bound", timeout=60, what="PVC Bound")
    pvc: Any = core.read_namespaced_persistent_volume_claim("claim", namespace)
    assert "kubernetes.io/pvc-protection" in (pvc.metadata.finalizers or [])
    pv_name: str = pvc.spec.volume_name
    pv: Any = core.read_persistent_volume(pv_name)
    host_path = Path(pv.spec.host_path.path)
    assert host_path.is_dir(), "the hostpath provisioner did not create the volume directory"

    pod = client.V1Pod.model_validate(
        {
            "metadata": {"name": "user"},
            "spec": {
                "containers": [
                    {
                        "name": "user",
                        "image": PAUSE,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "claim"}}],
            },
        }
    )
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: _pod_running_ready(core, "user", namespace), timeout=60, what="pod user Running"
    )

    witness = client.V1PersistentVolumeClaim.model_validate(
        {**claim.to_dict(), "metadata": {"name": "witness"}}
    )
    core.create_namespaced_persistent_volume_claim(namespace, witness)

    core.delete_namespaced_persistent_volume_claim("claim", namespace)
    terminating: Any = core.read_namespaced_persistent_volume_claim("claim", namespace)
    assert terminating.metadata.deletion_timestamp is not None
    assert "kubernetes.io/pvc-protection" in terminating.metadata.finalizers
    # The pvc-protection controller has one worker and a FIFO queue: once it has
    # released the unused witness claim, deleted after "claim", it has also
    # looked at "claim" and must have kept it because the pod uses it.
    core.delete_namespaced_persistent_volume_claim("witness", namespace)
    wait_for(
        lambda: _gone(core.read_namespaced_persistent_volume_claim, "witness", namespace),
        timeout=30,
        what="unused PVC witness deleted",
    )
    still: Any = core.read_namespaced_persistent_volume_claim("claim", namespace)
    assert still.metadata.deletion_timestamp is not None
    assert "kubernetes.io/pvc-protection" in still.metadata.finalizers

    core.delete_namespaced_pod("user", namespace)
    # kwok's pod-delete stage finishes the deletion (no kubelet here).
    wait_for(
        lambda: _gone(core.read_namespaced_pod, "user", namespace), timeout=30, what="pod gone"
    )
    wait_for(
        lambda: _gone(core.read_namespaced_persistent_volume_claim, "claim", namespace),
        timeout=30,
        what="PVC gone after its pod",
    )
    # reclaimPolicy Delete: the PV and its hostPath directory go too.
    wait_for(lambda: _gone(core.read_persistent_volume, pv_name), timeout=30, what="PV deleted")
    wait_for(lambda: not host_path.exists(), timeout=30, what="hostPath directory removed")


@pytest.mark.cluster
def test_garbage_collector_deletes_owned_configmap(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner: Any = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap.model_validate({"metadata": {"name": "owner"}})
    )
    child = {
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner.metadata.uid,
                }
            ],
        }
    }
    core.create_namespaced_config_map(namespace, client.V1ConfigMap.model_validate(child))
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap.model_validate({"metadata": {"name": "bystander"}})
    )

    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: _gone(core.read_namespaced_config_map, "child", namespace),
        timeout=30,
        what="child ConfigMap garbage-collected",
    )
    core.read_namespaced_config_map("bystander", namespace)  # not owned: kept


@pytest.mark.cluster
def test_service_account_token_without_rbac_is_forbidden(
    api_client: client.ApiClient, kubeconfig: Path, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount.model_validate({"metadata": {"name": "nobody"}})
    )
    request = client.AuthenticationV1TokenRequest.model_validate(
        {"spec": {"audiences": [], "expirationSeconds": 600}}
    )
    token_request: Any = core.create_namespaced_service_account_token("nobody", namespace, request)
    token: str = token_request.status.token
    assert token.count(".") == 2, "not a JWT"

    admin = api_client.configuration

    def as_bearer(bearer: str) -> client.ApiClient:
        conf = client.Configuration(host=admin.host)
        conf.ssl_ca_cert = admin.ssl_ca_cert
        conf.api_key = {"authorization": bearer}
        conf.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(conf)

    with as_bearer(token) as sa_client:
        review: Any = client.AuthenticationV1Api(sa_client).create_self_subject_review(
            client.V1SelfSubjectReview.model_validate({})
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
        with pytest.raises(client.ApiException) as forbidden:
            client.CoreV1Api(sa_client).list_namespaced_pod(namespace)
        status, body = _status(forbidden.value)
        assert status == 403
        assert f'"system:serviceaccount:{namespace}:nobody" cannot list resource "pods"' in body

    with as_bearer(token[:-4] + "AAAA") as bad_client:
        with pytest.raises(client.ApiException) as unauthorized:
            client.CoreV1Api(bad_client).list_namespaced_pod(namespace)
        assert unauthorized.value.status == 401


@pytest.mark.cluster
def test_kubectl_and_server_are_the_built_version(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl("version", "--output=json").stdout)
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the go tool")
def test_go_mod_replace_block_is_in_sync() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.run(
        [sys.executable, "-m", "localkube.replaces", "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
