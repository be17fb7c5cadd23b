"""kstatus (Flux, kpt, cli-utils) on a pipeline whose reconcile fails: a ResourceQuota that
forbids claims makes it Failed (Stalled=True, as Argo CD says Degraded); once the quota
goes, the operator's retry succeeds and kstatus says Current. The real library judges."""

from __future__ import annotations

from localkube.cluster import LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .argocd_capture import ArgoLua
from .conftest import Operator
from .pipelines import apply, condition, get, manifest, wait_condition, wait_jsonpath
from .test_argocd import kstatus

NO_CLAIMS = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: no-claims}
spec: {hard: {persistentvolumeclaims: "0"}}
"""


def test_a_quota_forbidding_claims_is_failed_then_current_once_lifted(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input=NO_CLAIMS)
    apply(kubectl, manifest("orders", namespace))

    def failed() -> dict[str, str] | None:
        obj = get(kubectl, namespace, "orders")
        verdict = kstatus(cluster, obj)
        return verdict if verdict["status"] == "Failed" else None

    verdict = wait_for(failed, timeout=60, what="kstatus Failed")
    assert (
        "exceeded quota" in get(kubectl, namespace, "orders")["status"]["error"]["details"]["body"]
    )
    assert "exceeded quota: no-claims" in verdict["message"]  # the API server's own words
    assert ArgoLua().health(get(kubectl, namespace, "orders"))["status"] == "Degraded"
    wait_condition(kubectl, namespace, "orders", "Stalled")  # what `kubectl wait` users see

    kubectl("-n", namespace, "delete", "resourcequota", "no-claims")
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Running", timeout=120)
    wait_condition(kubectl, namespace, "orders", "Ready")
    obj = get(kubectl, namespace, "orders")
    assert kstatus(cluster, obj)["status"] == "Current"
    assert ArgoLua().health(obj)["status"] == "Healthy"
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "False"
