"""Pod Security admission helpers: a namespace enforcing "restricted", and the server's
verdict on a pod made from a pod template, with or without its securityContexts."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from localkube.fixtures import Kubectl, wait_for

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# What PodSecurity says of a pod with no securityContext (k8s.io/pod-security-admission,
# policy/check_*.go): one check each of the restricted profile.
VIOLATIONS = [
    'violates PodSecurity "restricted:latest"',
    "allowPrivilegeEscalation != false",
    "unrestricted capabilities",
    "runAsNonRoot != true",
    "seccompProfile",
]


def enforce_restricted(kubectl: Kubectl, namespace: str) -> None:
    kubectl(
        *("label", "--overwrite", "namespace", namespace),
        *(f"{k}={v}" for k, v in RESTRICTED.items()),
    )


def without_security_context(template: dict[str, Any]) -> dict[str, Any]:
    """The pod template with no securityContext, the pod's nor any container's."""
    stripped: dict[str, Any] = json.loads(json.dumps(template))
    stripped["spec"].pop("securityContext", None)
    for c in stripped["spec"].get("initContainers", []) + stripped["spec"]["containers"]:
        c.pop("securityContext", None)
    return stripped


def dry_run_pod(
    kubectl: Kubectl, name: str, namespace: str, template: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`kubectl create --dry-run=server` of a pod made from the template (never raises)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template.get("metadata", {}).get("labels", {}),
        },
        "spec": template["spec"],
    }
    return kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)


def assert_refused(result: subprocess.CompletedProcess[str]) -> None:
    """Refused by PodSecurity, naming every restricted check a bare pod fails."""
    assert result.returncode != 0, result.stdout
    assert "Forbidden" in result.stderr, result.stderr
    for violation in VIOLATIONS:
        assert violation in result.stderr, (violation, result.stderr)


def wait_admitted(kubectl: Kubectl, namespace: str, selector: str, count: int) -> list[str]:
    """The names of `count` pods matching the selector once they exist; if they never do,
    fails with the controllers' FailedCreate Events (PodSecurity's refusal, in its words)."""

    def pods() -> list[str] | None:
        names = kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "name").stdout
        return names.split() if len(names.split()) == count else None

    try:
        return wait_for(pods, timeout=60, what=f"{count} pods {selector}", interval=1)
    except AssertionError:
        refusals = kubectl(
            *("-n", namespace, "get", "events", "--field-selector", "reason=FailedCreate"),
            *("-o", "jsonpath={.items[*].message}"),
        ).stdout
        raise AssertionError(f"pods {selector} not created: {refusals}") from None
