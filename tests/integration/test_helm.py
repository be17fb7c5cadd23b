"""deploy/helm/sluice: the Helm chart lints, renders what the kustomize base installs,
applies (server dry run), installs on the real control plane, and its operator
ServiceAccount's rights are enough to reconcile and clear; upgrade and uninstall leave
Pipelines, their storage and the CRD alone."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sluice.api.crd as generated
import yaml
from kubernetes import client
from localkube.cluster import KWOK_NAMESPACE_ANNOTATIONS, REPO, LocalCluster
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import can_i, clear_and_wait, get, run_and_wait
from .pod_security import (
    assert_refused,
    dry_run_pod,
    enforce_restricted,
    wait_admitted,
    without_security_context,
)
from .test_deploy import pipeline_claims

CHART = REPO / "deploy/helm/sluice"
DEPLOY = REPO / "deploy"


def helm(cluster: LocalCluster, *args: str, timeout: float = 120) -> str:
    cmd = [str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind_and_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Deployment's pod that must be the same however it is installed."""
    spec = dict(deployment["spec"]["template"]["spec"])
    (container,) = spec.pop("containers")
    container = {k: v for k, v in container.items()}
    return {"pod": spec, "container": container}


@pytest.fixture
def release_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"sluice-helm-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    # The chart's operator Deployment runs an image no node can pull: its pod stays on kwok.
    kubectl(
        "annotate", "namespace", name, *(f"{k}={v}" for k, v in KWOK_NAMESPACE_ANNOTATIONS.items())
    )
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_chart_crd_is_the_generated_one() -> None:
    copy = CHART / "crds" / generated.CRD_FILE
    assert copy.read_text() == generated.render(), "the chart's CRD is stale: run `make crds`"


def test_helm_lint_with_default_and_every_optional_value(cluster: LocalCluster) -> None:
    helm(cluster, "lint", "--strict", str(CHART))
    helm(
        cluster,
        *("lint", "--strict", str(CHART)),
        *("--set", "operator.watchNamespaces={team-a,team-b}"),
        *("--set", "operator.leaderElection.enabled=true,operator.replicas=2"),
        *("--set", "metrics.serviceMonitor.enabled=true,operator.logFormat=json"),
        *("--set", "api.enabled=false"),
        *("--set", "alerts.enabled=true,dashboard.enabled=true"),
    )
    helm(cluster, *("lint", "--strict", str(CHART)), *("--set", "api.tls.enabled=false"))
    helm(cluster, *("lint", "--strict", str(CHART)), *("--set", "api.networkPolicy.enabled=true"))


def _api_pod(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = by_kind_and_name(rendered)[("Deployment", "sluice-api")]["spec"][
        "template"
    ]["spec"]
    return pod


def test_the_api_serves_https_from_a_secret_by_default(cluster: LocalCluster) -> None:
    rendered = documents(
        helm(cluster, "template", "sluice", str(CHART), "--namespace", "sluice-system")
    )
    pod = _api_pod(rendered)
    (container,) = pod["containers"]
    assert "--tls-cert=/etc/sluice-api/tls/tls.crt" in container["args"]
    assert "--tls-key=/etc/sluice-api/tls/tls.key" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "sluice-api-tls"}
    service = by_kind_and_name(rendered)[("Service", "sluice-api")]
    assert service["spec"]["ports"][0] == {
        "name": "https",
        "port": 443,
        "targetPort": "https",
        "protocol": "TCP",
    }
    assert not [d for d in rendered if d["kind"] == "Certificate"]  # cert-manager: opt-in

    given = documents(
        helm(
            cluster,
            *("template", "sluice", str(CHART), "--namespace", "sluice-system"),
            *("--set", "api.tls.secretName=my-cert"),
        )
    )
    volumes = _api_pod(given)["volumes"]
    assert {v["secret"]["secretName"] for v in volumes if "secret" in v} == {"my-cert"}

    plain = _api_pod(
        documents(
            helm(
                cluster,
                *("template", "sluice", str(CHART), "--namespace", "sluice-system"),
                *("--set", "api.tls.enabled=false"),
            )
        )
    )
    assert "--bind=0.0.0.0:8080" in plain["containers"][0]["args"]
    assert not [v for v in plain["volumes"] if "secret" in v]


def test_a_cert_manager_certificate_writes_the_api_secret(cluster: LocalCluster) -> None:
    """Rendered with cert-manager's API declared (this cluster has no cert-manager, so not
    applied); without cert-manager's CRDs the chart refuses, saying why."""
    options = ("--set", "api.tls.certManager.enabled=true")
    issuer = ("--set", "api.tls.certManager.issuerRef.name=corp-ca")
    rendered = documents(
        helm(
            cluster,
            *("template", "sluice", str(CHART), "--namespace", "sluice-system"),
            *("--api-versions", "cert-manager.io/v1/Certificate", *options, *issuer),
            *("--set", "api.tls.certManager.issuerRef.kind=ClusterIssuer"),
        )
    )
    certificate = by_kind_and_name(rendered)[("Certificate", "sluice-api")]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == "sluice-api-tls"  # what the pods mount
    assert "sluice-api.sluice-system.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    cmd = [str(cluster.bin_dir / "helm"), "template", "sluice", str(CHART), *options, *issuer]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "needs cert-manager's CRDs" in refused.stderr


def test_chart_renders_the_installation_the_kustomize_base_describes(
    cluster: LocalCluster, kubectl: Kubectl
) -> None:
    """One installation, two ways: same rights, same pods (image, args, probes, resources,
    security), same Service. Names match for a release called `sluice`."""
    chart = by_kind_and_name(
        documents(
            helm(
                cluster,
                *("template", "sluice", str(CHART), "--namespace", "sluice-system"),
                *("--set", "api.namespace=default"),
            )
        )
    )
    base = by_kind_and_name(documents(kubectl("kustomize", str(DEPLOY)).stdout))

    for name in ("sluice-operator", "sluice-api"):
        assert pod_spec(chart[("Deployment", name)]) == pod_spec(base[("Deployment", name)]), name
        assert ("ServiceAccount", name) in chart
    assert rules(chart[("ClusterRole", "sluice-operator")]) == rules(
        base[("ClusterRole", "sluice-operator")]
    )
    # The chart grants the API's pipeline rights in the served namespace only (a Role).
    api_rights = rules(chart[("ClusterRole", "sluice-api")]) | rules(chart[("Role", "sluice-api")])
    assert api_rights == rules(base[("ClusterRole", "sluice-api")])
    assert chart[("Role", "sluice-api")]["metadata"]["namespace"] == "default"
    assert (
        chart[("Service", "sluice-api")]["spec"]["ports"]
        == (base[("Service", "sluice-api")]["spec"]["ports"])
    )


def test_namespaced_rights_and_leader_election_render(cluster: LocalCluster) -> None:
    rendered = documents(
        helm(
            cluster,
            *("template", "sluice", str(CHART), "--namespace", "sluice-system"),
            *("--set", "operator.watchNamespaces={team-a,team-b}"),
            *("--set", "operator.leaderElection.enabled=true,operator.replicas=2"),
        )
    )
    chart = by_kind_and_name(rendered)
    operator = chart[("Deployment", "sluice-operator")]
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"  # the Lease keeps one acting
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args
    assert "--leader-elect" in args
    assert ("PodDisruptionBudget", "sluice-operator") in chart
    # Pipelines, claims, StatefulSets only in the watched namespaces; nothing cluster-wide.
    cluster_rights = rules(chart[("ClusterRole", "sluice-operator")])
    assert not {r for r in cluster_rights if r[1] in ("pipelines", "persistentvolumeclaims")}
    operator_roles = {
        d["metadata"]["namespace"]: rules(d)
        for d in rendered
        if d["kind"] == "Role" and d["metadata"]["name"] == "sluice-operator"
    }
    assert set(operator_roles) == {"team-a", "team-b"}
    assert operator_roles["team-a"] == operator_roles["team-b"]
    assert ("sluice.dev", "pipelines", "watch") in operator_roles["team-a"]
    lease = chart[("Role", "sluice-operator-leader-election")]
    assert rules(lease) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
    }


def test_template_applies_with_server_dry_run(
    cluster: LocalCluster, kubectl: Kubectl, release_namespace: str
) -> None:
    rendered = helm(
        cluster,
        *("template", "sluice-dry", str(CHART), "--namespace", release_namespace),
        "--include-crds",
    )
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "deployment.apps/sluice-dry-operator created (server dry run)" in result.stdout
    assert "customresourcedefinition.apiextensions.k8s.io/pipelines.sluice.dev" in result.stdout


def install(cluster: LocalCluster, release_namespace: str, *flags: str) -> tuple[str, str]:
    """helm install of the chart in release_namespace: (the release, its operator's account)."""
    release = f"sluice-{release_namespace[-6:]}"
    helm(cluster, "install", release, str(CHART), "--namespace", release_namespace, *flags)
    return release, f"{release}-operator"


def account_kubeconfig(
    cluster: LocalCluster, kubectl: Kubectl, release_namespace: str, account: str, where: Path
) -> Path:
    """A kubeconfig with a token of the release's operator account."""
    token = kubectl("-n", release_namespace, "create", "token", account).stdout.strip()
    return cluster.token_kubeconfig(account, token, where / "kubeconfig")


def test_install_operator_with_its_account_clears_and_upgrade_uninstall_keep_pipelines(
    cluster: LocalCluster,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    operator: Operator,
    release_namespace: str,
    tmp_path: Path,
) -> None:
    release, account = install(cluster, release_namespace)
    kubeconfig = account_kubeconfig(cluster, kubectl, release_namespace, account, tmp_path)

    operator.stop()
    try:
        operator.start(kubeconfig=kubeconfig)
        run_and_wait(kubectl, namespace, "orders")
        assert pipeline_claims(api_client, namespace, "orders")
        clear_and_wait(kubectl, namespace, "orders")
        assert pipeline_claims(api_client, namespace, "orders") == []

        run_and_wait(kubectl, namespace, "kept")
        kept_claims = pipeline_claims(api_client, namespace, "kept")
        assert kept_claims
    finally:
        operator.stop()
        operator.start()

    before = get(kubectl, namespace, "kept")
    helm(
        cluster,
        *("upgrade", release, str(CHART), "--namespace", release_namespace),
        *("--set", "api.replicas=2,operator.logFormat=json"),
    )
    deployment = kubectl("-n", release_namespace, "get", "deployment", account, "-o", "yaml")
    assert "--log-format=json" in deployment.stdout
    helm(cluster, "uninstall", release, "--namespace", release_namespace, "--wait")

    after = get(kubectl, namespace, "kept")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"].get("deletionTimestamp") is None
    assert pipeline_claims(api_client, namespace, "kept") == kept_claims
    kubectl("get", "crd", "pipelines.sluice.dev")
    gone = kubectl("get", "clusterrole", account, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_an_operator_watching_one_namespace_works_with_only_its_roles(
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
    operator: Operator,
    release_namespace: str,
    tmp_path: Path,
) -> None:
    release, account = install(
        cluster,
        release_namespace,
        *("--set", f"operator.watchNamespaces={{{namespace}}},api.enabled=false"),
    )
    subject = f"system:serviceaccount:{release_namespace}:{account}"

    def may(verb: str, resource: str, where: str) -> str:
        return can_i(kubectl, verb, resource, "-n", where, f"--as={subject}")

    assert may("delete", "persistentvolumeclaims", namespace) == "yes"
    assert may("list", "pipelines.sluice.dev", namespace) == "yes"
    assert may("delete", "persistentvolumeclaims", release_namespace) == "no"
    assert may("list", "pipelines.sluice.dev", "default") == "no"

    kubeconfig = account_kubeconfig(cluster, kubectl, release_namespace, account, tmp_path)
    operator.stop()
    try:
        operator.start(kubeconfig=kubeconfig, namespace=namespace)
        run_and_wait(kubectl, namespace, "orders")
        clear_and_wait(kubectl, namespace, "orders")
        assert operator.alive
        # A refusal is logged as "403 Forbidden" (not a timestamp's digits) and counted.
        log = operator.log().splitlines()
        denied = [line for line in log if re.search(r"\b403\b|Forbidden", line)]
        assert denied == [], operator.log()
        assert "403" not in operator.by_label("sluice_kube_requests_total", "code")
    finally:
        operator.stop()
        operator.start()
        helm(cluster, "uninstall", release, "--namespace", release_namespace)


def network_policies(cluster: LocalCluster, *flags: str) -> list[dict[str, Any]]:
    rendered = helm(cluster, "template", "sluice", str(CHART), "-n", "sluice-system", *flags)
    return [d for d in documents(rendered) if d["kind"] == "NetworkPolicy"]


def test_the_api_network_policy_renders_only_when_enabled(cluster: LocalCluster) -> None:
    assert network_policies(cluster) == []  # off by default
    team = ("--set-json", 'api.networkPolicy.namespaceSelector={"matchLabels":{"team":"a"}}')
    gateway = ("--set-json", 'api.networkPolicy.podSelector={"matchLabels":{"app":"gw"}}')
    on = ("--set", "api.networkPolicy.enabled=true")
    (policy,) = network_policies(cluster, *on, *team, *gateway)
    api_deployment = by_kind_and_name(
        documents(helm(cluster, "template", "sluice", str(CHART), "-n", "sluice-system"))
    )[("Deployment", "sluice-api")]
    assert policy["metadata"]["namespace"] == "sluice-system"
    # It selects exactly the API's pods, and lets in only its port from the given peers.
    assert policy["spec"]["podSelector"] == api_deployment["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "a"}},
                    "podSelector": {"matchLabels": {"app": "gw"}},
                }
            ],
            "ports": [{"port": "https", "protocol": "TCP"}],
        }
    ]
    ports = api_deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in ports] == ["https"]
    (plain,) = network_policies(cluster, *on, "--set", "api.tls.enabled=false")
    assert plain["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert plain["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}, "podSelector": {}}]
    assert network_policies(cluster, *on, "--set", "api.enabled=false") == []


def test_install_is_admitted_in_a_namespace_enforcing_restricted(
    cluster: LocalCluster, kubectl: Kubectl, release_namespace: str
) -> None:
    """The operator's and the API's pods are created under restricted (on kwok: their image
    is not built); the same pods without their securityContexts would be refused there."""
    enforce_restricted(kubectl, release_namespace)
    release, _ = install(cluster, release_namespace, *("--set", "api.networkPolicy.enabled=true"))
    try:
        for component in ("operator", "api"):
            name = f"{release}-{component}"
            selector = (
                f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"
            )
            wait_admitted(kubectl, release_namespace, selector, 2)
            deployment = kubectl(
                "-n", release_namespace, "get", "deployment", name, "-o", "yaml"
            ).stdout
            template = yaml.safe_load(deployment)["spec"]["template"]
            bare = without_security_context(template)
            assert_refused(dry_run_pod(kubectl, f"{name}-bare", release_namespace, bare))
        kubectl("-n", release_namespace, "get", "networkpolicy", f"{release}-api")
    finally:
        helm(cluster, "uninstall", release, "--namespace", release_namespace)
