"""The pipeline pod's securityContext (spec.podSecurity): restricted by default, none with
ImageDefault, and only ever set when the StatefulSet is created (a pipeline's next start):
a running pipeline started before it is not rolled, and an image change does not give it
half of it."""

from __future__ import annotations

from typing import Any

from sluice.api import v1alpha1 as api
from sluice.core import decide as d
from sluice.core import manifests
from sluice.core.observed import Observed

from .test_decide import NOW, claim, pipeline, ready_pod, settled_status, statefulset


def spec(**extra: Any) -> api.PipelineSpec:
    return api.PipelineSpec.model_validate({"image": "img:1", "storage": {"size": "1Gi"}, **extra})


def pod(built: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = built["spec"]["template"]["spec"]
    return template


def test_by_default_the_pod_meets_the_restricted_standard() -> None:
    built = pod(manifests.stateful_set("orders", "u", spec(), "c"))
    assert built["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = built["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert pod(manifests.stateful_set("o", "u", spec(podSecurity="Restricted"), "c")) == built


def test_image_default_sets_no_security_context() -> None:
    built = pod(manifests.stateful_set("orders", "u", spec(podSecurity="ImageDefault"), "c"))
    assert "securityContext" not in built
    assert "securityContext" not in built["containers"][0]


def test_the_container_an_update_patches_in_carries_no_security_context() -> None:
    assert "securityContext" not in manifests.container(spec())


def running(image: str) -> Observed:
    """A running pipeline whose StatefulSet was made before securityContexts (none in it)."""
    obj = pipeline(status=settled_status(deployment="Running"))
    obj["spec"]["image"] = image
    return Observed(
        obj,
        statefulset=statefulset(),
        service={"metadata": {"name": "orders"}},
        pods=[ready_pod()],
        claims=[claim()],
    )


def test_a_pipeline_started_without_it_is_not_rolled() -> None:
    assert d.decide(running("img:1"), NOW).actions == []


def test_an_image_change_rolls_the_container_without_a_security_context() -> None:
    (update,) = d.decide(running("img:2"), NOW).actions
    assert isinstance(update, d.UpdateContainer)
    assert update.container["image"] == "img:2"
    assert "securityContext" not in update.container
