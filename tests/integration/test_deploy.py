"""deploy/ (contract section 4): the kustomize base installs on the real control plane, and its
RBAC is enough for the operator, run with the ServiceAccount's own token, and no more."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sluice.api.crd as generated
from kubernetes import client
from localkube.cluster import KWOK_NAMESPACE_ANNOTATIONS, REPO, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    can_i,
    claims,
    clear_and_wait,
    manifest,
    reasons_once,
    run_and_wait,
    wait_jsonpath,
)
from .pod_security import assert_refused, dry_run_pod, wait_admitted, without_security_context
from .test_rest_api import self_signed

DEPLOY = REPO / "deploy"
SYSTEM = "sluice-system"
ACCOUNT = "sluice-operator"
LABEL = "sluice.dev/pipeline"


def pipeline_claims(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    return [
        str(c.metadata.name)
        for c in claims(api, namespace)
        if (c.metadata.labels or {}).get(LABEL) == name
    ]


@pytest.fixture(scope="module")
def cluster_objects(kubectl: Kubectl) -> Iterator[None]:
    """Removes what deploy/ creates outside test namespaces (the CRD stays: others use it)."""
    yield
    kubectl(
        "delete",
        "clusterrolebinding/sluice-operator",
        "clusterrole/sluice-operator",
        "clusterrolebinding/sluice-api",
        "clusterrole/sluice-api",
        f"namespace/{SYSTEM}",
        "--ignore-not-found",
        "--timeout=120s",
        timeout=130,
    )


@pytest.fixture(scope="module")
def installed(
    kubectl: Kubectl, crd: None, cluster_objects: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`kubectl apply -k deploy/`, and the REST API's TLS Secret, as a user installs."""
    # The operator's image (deploy/Dockerfile) is not built here (no image builder for it):
    # its namespace gets the annotations that send its pods to kwok before any pod exists.
    kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    kubectl(
        *("annotate", "--overwrite", "namespace", SYSTEM),
        *(f"{k}={v}" for k, v in KWOK_NAMESPACE_ANNOTATIONS.items()),
    )
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(DEPLOY))
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    kubectl(
        *("-n", SYSTEM, "create", "secret", "tls", "sluice-api-tls"),
        *(f"--cert={cert}", f"--key={key}"),
    )


@pytest.fixture(scope="module")
def account_kubeconfig(
    cluster: LocalCluster,
    kubectl: Kubectl,
    installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The admin kubeconfig's server and CA, with the operator ServiceAccount's token."""
    token = kubectl("-n", SYSTEM, "create", "token", ACCOUNT, "--duration=2h").stdout.strip()
    path = tmp_path_factory.mktemp("deploy") / "operator-kubeconfig"
    return cluster.token_kubeconfig(ACCOUNT, token, path)


@pytest.fixture(scope="module")
def as_operator(cluster: LocalCluster, account_kubeconfig: Path) -> Kubectl:
    """kubectl authenticated as the operator's ServiceAccount (never raises on failure)."""

    def run(
        *args: str, input: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={account_kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        assert not check or proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
        return proc

    return run


def test_deploy_crd_is_the_generated_one() -> None:
    """kustomize only loads files under deploy/, so the CRD is a copy; it must not drift."""
    copy = DEPLOY / "crd" / generated.CRD_FILE
    assert copy.read_text() == generated.render(), (
        "deploy/crd is stale: run `python -m sluice crds --output deploy/crd`"
    )


def test_server_dry_run_accepts_the_whole_base(kubectl: Kubectl, cluster_objects: None) -> None:
    # Namespaced objects can only be dry-run into a namespace that exists.
    kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    result = kubectl("apply", "--dry-run=server", "-k", str(DEPLOY))
    # e.g. Pod Security "restricted". kubectl's note that the CRD (installed server-side by
    # the test session) lacks its client-side annotation is not about deploy/ itself.
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "Warning" in line and "last-applied-configuration" not in line
    ]
    assert warnings == [], result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.split() if "/" in line}
    assert {
        "customresourcedefinition.apiextensions.k8s.io",
        "namespace",
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "deployment.apps",
        "service",
    } <= kinds, result.stdout


def test_apply_installs_and_the_deployment_rolls_out(kubectl: Kubectl, installed: None) -> None:
    kubectl(
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deployment/sluice-operator",
        "--timeout=60s",
        timeout=70,
    )
    pod: dict[str, Any] = json.loads(
        kubectl(
            *("-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/component=operator"),
            *("-o", "json"),
        ).stdout
    )["items"][0]
    assert pod["spec"]["serviceAccountName"] == ACCOUNT
    (container,) = pod["spec"]["containers"]
    assert container["args"][:2] == ["run", "--all-namespaces"]
    assert "--leader-elect" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("component", ["operator", "api"])
def test_two_replicas_roll_and_a_budget_keeps_one(
    kubectl: Kubectl, installed: None, component: str
) -> None:
    name = f"sluice-{component}"
    deployment = json.loads(kubectl("-n", SYSTEM, "get", "deployment", name, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    kubectl("-n", SYSTEM, "rollout", "status", f"deployment/{name}", "--timeout=60s", timeout=70)
    budget = json.loads(kubectl("-n", SYSTEM, "get", "pdb", name, "-o", "json").stdout)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    # The API server's own view: two healthy pods, so one may be disrupted at a time.
    wait_for(
        lambda: (
            json.loads(kubectl("-n", SYSTEM, "get", "pdb", name, "-o", "json").stdout)
            .get("status", {})
            .get("disruptionsAllowed")
            == 1
        ),
        what=f"PDB {name} allows one disruption",
    )


def test_the_lease_role_is_namespaced(as_operator: Kubectl) -> None:
    for verb in ("get", "create", "update"):
        answer = as_operator("auth", "can-i", verb, "leases.coordination.k8s.io", "-n", SYSTEM)
        assert answer.stdout.strip() == "yes", verb
    for namespace in ("default", "kube-system"):
        answer = as_operator(
            "auth", "can-i", "update", "leases.coordination.k8s.io", "-n", namespace
        )
        assert answer.stdout.strip() == "no", namespace
    answer = as_operator("auth", "can-i", "delete", "leases.coordination.k8s.io", "-n", SYSTEM)
    assert answer.stdout.strip() == "no"


def test_operator_with_its_service_account_token_runs_the_lifecycle(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    operator: Operator,
    account_kubeconfig: Path,
) -> None:
    operator.stop()
    try:
        # As deployed: with leader election, on the Lease in the operator's namespace.
        election = ("--leader-elect", "--leader-election-namespace", SYSTEM)
        operator.start(kubeconfig=account_kubeconfig, extra=election)
        wait_for(lambda: operator.metric("sluice_leader") == 1.0, timeout=60, what="leader")

        # Run, then stop and clear in one patch: the claim is deleted.
        run_and_wait(kubectl, namespace, "orders")
        assert pipeline_claims(api_client, namespace, "orders")
        clear_and_wait(kubectl, namespace, "orders")
        assert pipeline_claims(api_client, namespace, "orders") == []

        # Detach: the claim is patched loose and left behind.
        run_and_wait(kubectl, namespace, "kept", policy="Detach")
        (kept,) = pipeline_claims(api_client, namespace, "kept")
        apply(kubectl, manifest("kept", namespace, "Stopped", "r1", policy="Detach"))
        wait_jsonpath(kubectl, namespace, "kept", ".status.storage.status", "Cleared")
        left = client.CoreV1Api(api_client).read_namespaced_persistent_volume_claim(kept, namespace)
        assert left.metadata.deletion_timestamp is None
        assert left.metadata.annotations["sluice.dev/detached-from"] == f"{namespace}/kept"

        # Delete: the finalizer path removes the storage, then lets the pipeline go.
        run_and_wait(kubectl, namespace, "gone")
        kubectl("-n", namespace, "delete", "pipeline", "gone", "--timeout=60s", timeout=70)
        assert pipeline_claims(api_client, namespace, "gone") == []

        reasons_once(api_client, namespace, "orders")  # created with the account's token
        assert operator.alive
        # Lines about other namespaces are left out: a namespace left over from an earlier
        # test may be terminating, and the API server refuses new objects there (403).
        log = "\n".join(
            line
            for line in operator.log().splitlines()
            if not line.startswith("{") or json.loads(line).get("namespace", namespace) == namespace
        )
        for denied in ("forbidden", "not enough permissions", "unauthorized"):
            assert denied not in log.lower(), log
    finally:
        operator.stop()
        operator.start()


# What the operator calls (operator/sluice/kube.py, cache.py, handlers.py), cluster-wide;
# kopf needs nothing of its own (no resource handlers, scanning off, standalone).
ALLOWED = [
    *((verb, "pipelines.sluice.dev") for verb in ("get", "list", "watch", "patch")),
    ("patch", "pipelines.sluice.dev/status"),
    ("update", "pipelines.sluice.dev/finalizers"),  # blockOwnerDeletion, where enforced
    *(
        (verb, "statefulsets.apps")
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ),
    *((verb, "services") for verb in ("get", "list", "watch", "create")),
    ("list", "pods"),
    ("watch", "pods"),
    ("delete", "pods"),  # a stopping pipeline's pod, with the grace period its spec asks for
    *((verb, "persistentvolumeclaims") for verb in ("list", "watch", "create", "patch", "delete")),
    *((verb, "persistentvolumes") for verb in ("get", "list", "watch")),
    ("create", "events"),
    ("list", "events"),  # a PV's VolumeFailedDelete Events, while it awaits deletion
    # The safety net (rule 18): watched, taken before a clear, read to restore, expired.
    *(
        (verb, "volumesnapshots.snapshot.storage.k8s.io")
        for verb in ("get", "list", "watch", "create", "delete")
    ),
    ("get", "nodes/proxy"),  # storage autoscaling: the kubelets' /stats/summary (usage.py)
]
DENIED = [
    ("create", "pipelines.sluice.dev"),
    ("update", "pipelines.sluice.dev"),
    ("delete", "pipelines.sluice.dev"),
    ("update", "pipelines.sluice.dev/status"),
    ("update", "statefulsets.apps"),
    ("get", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", "services"),
    ("update", "persistentvolumeclaims"),
    ("delete", "persistentvolumes"),
    ("patch", "persistentvolumes"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("get", "configmaps"),
    ("list", "namespaces"),
    ("delete", "namespaces"),
    ("delete", "nodes"),
    ("get", "nodes"),
    ("create", "nodes/proxy"),  # a POST through the proxy (exec, port-forward): never
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),  # kopf's scanning is off
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "namespaces"),
    ("create", "serviceaccounts/token"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("delete", "events"),
    ("patch", "volumesnapshots.snapshot.storage.k8s.io"),
    ("update", "volumesnapshots.snapshot.storage.k8s.io"),
    ("delete", "volumesnapshotcontents.snapshot.storage.k8s.io"),
    ("create", "volumesnapshotclasses.snapshot.storage.k8s.io"),
    ("*", "*"),
]


def test_the_role_allows_what_the_operator_calls_and_nothing_else(as_operator: Kubectl) -> None:
    answers = {
        f"{verb} {res}": can_i(as_operator, verb, res, "--all-namespaces")
        for verb, res in ALLOWED + DENIED
    }
    expected = {f"{verb} {res}": "yes" for verb, res in ALLOWED}
    expected |= {f"{verb} {res}": "no" for verb, res in DENIED}
    assert answers == expected


def test_verbs_outside_the_role_are_forbidden(as_operator: Kubectl, namespace: str) -> None:
    rules = as_operator("auth", "can-i", "--list", "-n", namespace, check=True).stdout
    assert "pipelines.sluice.dev" in rules
    assert "secrets" not in rules

    secrets = as_operator("-n", namespace, "get", "secrets")
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr, secrets.stderr

    delete = as_operator("delete", "namespace", "default", "--dry-run=server")
    assert delete.returncode != 0
    assert "Forbidden" in delete.stderr, delete.stderr


# ---- the REST API's own ServiceAccount (deploy/api-rbac.yaml) --------------------------------

API_ACCOUNT = f"system:serviceaccount:{SYSTEM}:sluice-api"
API_ALLOWED = [
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    *((verb, "pipelines.sluice.dev") for verb in ("get", "list", "watch", "patch", "delete")),
    ("create", "events"),
]
API_DENIED = [
    ("deletecollection", "pipelines.sluice.dev"),
    ("create", "pipelines.sluice.dev"),
    ("update", "pipelines.sluice.dev"),
    ("patch", "pipelines.sluice.dev/status"),
    ("delete", "persistentvolumeclaims"),
    ("list", "persistentvolumeclaims"),
    ("delete", "statefulsets.apps"),
    ("get", "secrets"),
    ("create", "serviceaccounts/token"),
    ("create", "localsubjectaccessreviews.authorization.k8s.io"),
    # storage_status_details reads the snapshots from the Pipeline's status, not the API.
    ("list", "volumesnapshots.snapshot.storage.k8s.io"),
    ("impersonate", "users"),
    ("delete", "events"),
    ("*", "*"),
]


def test_the_api_account_may_review_and_patch_pipelines_and_nothing_else(
    kubectl: Kubectl, installed: None
) -> None:
    def answer(verb: str, resource: str) -> str:
        name, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        return kubectl(
            *("auth", "can-i", verb, name, *extra, "-n", "default", f"--as={API_ACCOUNT}"),
            check=False,
        ).stdout.strip()

    answers = {f"{v} {r}": answer(v, r) for v, r in API_ALLOWED + API_DENIED}
    expected = {f"{v} {r}": "yes" for v, r in API_ALLOWED}
    expected |= {f"{v} {r}": "no" for v, r in API_DENIED}
    assert answers == expected


def test_the_api_deployment_rolls_out_with_its_own_account(
    kubectl: Kubectl, installed: None
) -> None:
    kubectl(
        *("-n", SYSTEM, "rollout", "status", "deployment/sluice-api", "--timeout=60s"),
        timeout=70,
    )
    pods = kubectl(
        *("-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/component=api", "-o", "json")
    ).stdout
    pod: dict[str, Any] = json.loads(pods)["items"][0]
    assert pod["spec"]["serviceAccountName"] == "sluice-api"
    (container,) = pod["spec"]["containers"]
    assert container["args"][0] == "api"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # HTTPS from the Secret: the only way the base serves.
    assert "--tls-cert=/etc/sluice-api/tls/tls.crt" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "sluice-api-tls"
    service = json.loads(kubectl("-n", SYSTEM, "get", "service", "sluice-api", "-o", "json").stdout)
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 443)]


# ---- Pod Security: sluice-system enforces "restricted" (namespace.yaml) ----------------------


@pytest.mark.parametrize("component", ["operator", "api"])
def test_the_pods_are_admitted_under_restricted_and_refused_without_their_security_context(
    kubectl: Kubectl, installed: None, component: str
) -> None:
    """The API server's PodSecurity admission enforces restricted in sluice-system: the
    Deployment's pods exist, and the same pod without its securityContexts is refused."""
    labels = json.loads(kubectl("get", "namespace", SYSTEM, "-o", "json").stdout)["metadata"][
        "labels"
    ]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    name = f"sluice-{component}"
    wait_admitted(kubectl, SYSTEM, f"app.kubernetes.io/component={component}", 2)
    pods = json.loads(
        kubectl(
            *("-n", SYSTEM, "get", "pods", "-l", f"app.kubernetes.io/component={component}"),
            *("-o", "json"),
        ).stdout
    )["items"]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    template = json.loads(kubectl("-n", SYSTEM, "get", "deployment", name, "-o", "json").stdout)[
        "spec"
    ]["template"]
    assert dry_run_pod(kubectl, f"{name}-again", SYSTEM, template).returncode == 0
    assert_refused(dry_run_pod(kubectl, f"{name}-bare", SYSTEM, without_security_context(template)))
