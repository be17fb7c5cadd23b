"""Compute: deployment status is observed, and spec changes reach the StatefulSet."""

from __future__ import annotations

import yaml
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import apply, get, manifest, patch, run_and_wait, wait_jsonpath


def test_provisioning_until_the_pod_is_running_and_ready(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["resources"] = {"requests": {"cpu": 1000}}  # no node has that much
    apply(kubectl, yaml.safe_dump(obj))
    wait_for(
        lambda: client.CoreV1Api(api_client).read_namespaced_pod("orders-0", namespace),
        what="the pod to be created",
    )
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Provisioning")
    ready = {
        c["type"]: c["status"] for c in get(kubectl, namespace, "orders")["status"]["conditions"]
    }
    assert ready["Ready"] == "False" and ready["Running"] == "False"
    pod = client.CoreV1Api(api_client).read_namespaced_pod("orders-0", namespace)
    assert pod.status.phase == "Pending"


def test_image_change_reaches_the_statefulset(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    patch(kubectl, namespace, "orders", {"spec": {"image": "registry.example/orders:2"}})

    def image() -> str:
        sts = client.AppsV1Api(api_client).read_namespaced_stateful_set("orders", namespace)
        return str(sts.spec.template.spec.containers[0].image)

    wait_for(lambda: image() == "registry.example/orders:2", what="the new image")
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Running")
