"""Rule 16's other direction, by the issue's own examples: extended resources and hugepages
that Kubernetes runs are admitted, and run. No node here has a GPU or hugepages, so the pod
waits: the pipeline is Provisioning and says why in the scheduler's words, as `kubectl
describe pipeline` shows."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import apply, get, manifest

SPECS: list[tuple[dict[str, Any], str]] = [
    ({"limits": {"example.com/gpu": 1}}, "example.com/gpu"),
    (
        {"requests": {"nvidia.com/gpu": "2", "cpu": "500m"}, "limits": {"nvidia.com/gpu": "2"}},
        "nvidia.com/gpu",
    ),
    (
        {
            "requests": {"memory": "1Gi", "hugepages-2Mi": "64Mi"},
            "limits": {"memory": "1Gi", "hugepages-2Mi": "64Mi"},
        },
        "hugepages-2Mi",
    ),
]


def _running_message(obj: dict[str, Any]) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Running":
            return str(condition.get("message", ""))
    return ""


@pytest.mark.parametrize(("resources", "resource"), SPECS, ids=[s[1] for s in SPECS])
def test_extended_resources_and_hugepages_are_admitted_and_run(
    resources: dict[str, Any],
    resource: str,
    kubectl: Kubectl,
    namespace: str,
    live_operator: Operator,
) -> None:
    obj = yaml.safe_load(manifest("gpu", namespace))
    obj["spec"]["resources"] = resources
    apply(kubectl, yaml.safe_dump(obj))  # admitted: check=True fails on a refusal

    def explained() -> dict[str, Any] | None:
        now = get(kubectl, namespace, "gpu")
        return now if f"Insufficient {resource}" in _running_message(now) else None

    waiting = wait_for(explained, what=f"the scheduler's 'Insufficient {resource}'")
    assert waiting["status"]["deploymentStatus"] == "Provisioning"
    assert "cannot be scheduled" in _running_message(waiting)
    described = kubectl("-n", namespace, "describe", "pipeline", "gpu").stdout
    assert f"Insufficient {resource}" in described, described
    sts = kubectl("-n", namespace, "get", "statefulset", "gpu", "-o", "yaml").stdout
    container = yaml.safe_load(sts)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        kind: {name: str(value) for name, value in amounts.items()}
        for kind, amounts in resources.items()
    }
    assert live_operator.alive
