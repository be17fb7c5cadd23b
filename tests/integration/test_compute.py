"""Compute: deployment status is observed, and spec changes reach the StatefulSet."""

from __future__ import annotations

import yaml
from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    IMAGE_IGNORING_SIGTERM,
    apply,
    condition,
    get,
    manifest,
    patch,
    run_and_wait,
    wait_condition,
    wait_jsonpath,
)


def test_provisioning_until_the_pod_is_running_and_ready(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    core = client.CoreV1Api(api_client)
    obj = yaml.safe_load(manifest("orders", namespace))
    obj["spec"]["resources"] = {"requests": {"cpu": 1000}}  # no node has that much
    apply(kubectl, yaml.safe_dump(obj))
    wait_for(lambda: core.read_namespaced_pod("orders-0", namespace), what="the pod")
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Provisioning")
    status = {
        c["type"]: c["status"] for c in get(kubectl, namespace, "orders")["status"]["conditions"]
    }
    assert status["Ready"] == "False" and status["Running"] == "False"
    assert core.read_namespaced_pod("orders-0", namespace).status.phase == "Pending"

    # A request a node can meet: once the pod runs and is ready, so is the pipeline. The
    # StatefulSet controller leaves a pod that never ran on the old template (a stuck
    # rollout, as documented), so the user deletes it.
    patch(kubectl, namespace, "orders", {"spec": {"resources": {"requests": {"cpu": "10m"}}}})
    wait_for(
        lambda: (
            client.AppsV1Api(api_client)
            .read_namespaced_stateful_set("orders", namespace)
            .spec.template.spec.containers[0]
            .resources.requests["cpu"]
            == "10m"
        ),
        what="the new request in the StatefulSet",
    )
    kubectl("-n", namespace, "delete", "pod", "orders-0", "--wait=false")
    wait_condition(kubectl, namespace, "orders", "Running", timeout=120)
    pod = core.read_namespaced_pod("orders-0", namespace)
    assert pod.status.phase == "Running", pod.status
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["deploymentStatus"] == "Running"
    assert condition(obj, "Ready")["status"] == "True"


def test_image_change_reaches_the_statefulset(
    kubectl: Kubectl, api_client: client.ApiClient, namespace: str, live_operator: Operator
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    patch(kubectl, namespace, "orders", {"spec": {"image": IMAGE_IGNORING_SIGTERM}})

    def image() -> str:
        sts = client.AppsV1Api(api_client).read_namespaced_stateful_set("orders", namespace)
        return str(sts.spec.template.spec.containers[0].image)

    wait_for(lambda: image() == IMAGE_IGNORING_SIGTERM, what="the new image")
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Running")
