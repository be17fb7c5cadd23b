"""The local cluster is a real Kubernetes control plane, not a mock.

Every test relies on behaviour only the real apiserver and controllers have:
structural-schema pruning and CEL validation, the StatefulSet, PV binder,
pvc-protection and garbage-collector controllers, the scheduler plus kwok,
ServiceAccount tokens with RBAC, and the version the binaries were built at.
Pods run on the real node (a kubelet with containerd): their containers run, write into
their volumes, answer `kubectl logs` and `exec`; the kubelet answers no anonymous request.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import NODE_NAME as KWOK_NODE_NAME
from localkube.cluster import REPO, LocalCluster
from localkube.fixtures import Kubectl, wait_for
from localkube.node import PAUSE_IMAGE, REAL_NODE_NAME

KUBERNETES_VERSION = "v1.36.3"
# Built and imported by the launcher (tests/images): no registry is reachable.
PAUSE = PAUSE_IMAGE
PROBE = "localhost/sluice/probe:0.1.0"

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
    assert pod.spec.node_name == REAL_NODE_NAME

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
    # The kubelet stops the container (pause exits on SIGTERM) and finishes the deletion.
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


@pytest.mark.cluster
def test_the_real_node_is_a_kubelet_on_containerd(api_client: client.ApiClient) -> None:
    node: Any = client.CoreV1Api(api_client).read_node(REAL_NODE_NAME)
    info = node.status.node_info
    assert info.kubelet_version == KUBERNETES_VERSION
    assert info.container_runtime_version.startswith("containerd://"), info
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["Hostname"] == "localhost"
    assert node.metadata.labels["type"] == "real"


@pytest.mark.cluster
def test_the_api_server_proxies_to_the_kubelet(cluster: LocalCluster, kubectl: Kubectl) -> None:
    """The node proxy, as the operator reads volume usage through it: the kubelet listens on
    the node's InternalIP, the machine's own address (the API server refuses a loopback one,
    "address not allowed")."""
    node = json.loads(kubectl("get", "node", REAL_NODE_NAME, "-o", "json").stdout)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster.kubelet_address != "127.0.0.1"
    summary = json.loads(
        kubectl("get", "--raw", f"/api/v1/nodes/{REAL_NODE_NAME}/proxy/stats/summary").stdout
    )
    assert summary["node"]["nodeName"] == REAL_NODE_NAME


def probe_pod(name: str, claim: str, text: str) -> dict[str, Any]:
    """A pod of the probe image that writes `text` into its claim at /data/hello."""
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE,
                    "imagePullPolicy": "Never",
                    "args": ["write", "/data/hello", text],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def claim(name: str, storage_class: str = "standard") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "storageClassName": storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }


@pytest.mark.cluster
@pytest.mark.parametrize("storage_class", ["standard", "csi-local"])
def test_a_pod_on_the_real_node_writes_into_its_claim_and_answers_logs_and_exec(
    api_client: client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    cluster: LocalCluster,
    storage_class: str,
) -> None:
    core = client.CoreV1Api(api_client)
    text = f"hello {uuid.uuid4().hex}"
    core.create_namespaced_persistent_volume_claim(
        namespace, client.V1PersistentVolumeClaim.model_validate(claim("data", storage_class))
    )
    core.create_namespaced_pod(
        namespace, client.V1Pod.model_validate(probe_pod("probe", "data", text))
    )
    wait_for(
        lambda: _pod_running_ready(core, "probe", namespace), timeout=60, what="pod probe Ready"
    )
    pod: Any = core.read_namespaced_pod("probe", namespace)
    assert pod.spec.node_name == REAL_NODE_NAME
    assert pod.status.pod_ip and pod.status.pod_ip != "127.0.0.1", pod.status.pod_ip

    # The container really wrote into the volume behind the claim: the hostPath directory,
    # or csi-local's, bind-mounted by its node service (staged and published by the kubelet).
    pvc: Any = core.read_namespaced_persistent_volume_claim("data", namespace)
    pv: Any = core.read_persistent_volume(pvc.spec.volume_name)
    if storage_class == "standard":
        written = Path(pv.spec.host_path.path) / "hello"
    else:
        written = cluster.csi_volume_dir(pv.spec.csi.volume_handle) / "hello"
    wait_for(written.exists, timeout=30, what=f"{written}")
    assert written.read_text() == text

    logs = wait_for(
        lambda: kubectl("-n", namespace, "logs", "probe").stdout, timeout=30, what="logs"
    )
    assert "probe: wrote" in logs and "/data/hello" in logs, logs
    # exec: through the API server, the kubelet and containerd's stream server.
    out = kubectl("-n", namespace, "exec", "probe", "--", "/probe", "cat", "/data/hello").stdout
    assert out == text

    # Deleting the pod stops its container (SIGTERM), well inside the grace period.
    core.delete_namespaced_pod("probe", namespace)
    wait_for(
        lambda: _gone(core.read_namespaced_pod, "probe", namespace), timeout=30, what="pod gone"
    )


@pytest.mark.cluster
def test_pods_of_a_kwok_namespace_land_on_the_kwok_node(
    api_client: client.ApiClient, kwok_namespace: str
) -> None:
    """Scale tests' namespaces: every pod tolerates the kwok node's taint and is bound to it
    (admission plugins add both), and runs there without its image."""
    core = client.CoreV1Api(api_client)
    pod = client.V1Pod.model_validate(
        {
            "metadata": {"name": "fake"},
            "spec": {"containers": [{"name": "fake", "image": "registry.example/none:1"}]},
        }
    )
    core.create_namespaced_pod(kwok_namespace, pod)
    wait_for(
        lambda: _pod_running_ready(core, "fake", kwok_namespace), timeout=60, what="pod on kwok"
    )
    placed: Any = core.read_namespaced_pod("fake", kwok_namespace)
    assert placed.spec.node_name == KWOK_NODE_NAME
    assert placed.spec.node_selector == {"type": "kwok"}


def _kubelet_get(cluster: LocalCluster, path: str, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection(
        cluster.kubelet_address, cluster.kubelet_port, context=context, timeout=10
    )
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.cluster
def test_the_kubelet_refuses_anonymous_requests(cluster: LocalCluster) -> None:
    # The kubelet's serving certificate is signed by the cluster CA, for its address.
    anonymous = ssl.create_default_context(cafile=str(cluster.pki_dir / "ca.crt"))
    for path in ("/pods", "/healthz", "/metrics", "/logs/"):
        assert _kubelet_get(cluster, path, anonymous) == 401, path
    # The API server's own client certificate is let in (RBAC: system:kubelet-api-admin).
    apiserver = ssl.create_default_context(cafile=str(cluster.pki_dir / "ca.crt"))
    apiserver.load_cert_chain(
        str(cluster.pki_dir / "apiserver-kubelet-client.crt"),
        str(cluster.pki_dir / "apiserver-kubelet-client.key"),
    )
    assert _kubelet_get(cluster, "/pods", apiserver) == 200


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
