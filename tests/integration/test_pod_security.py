"""Pipelines under the "restricted" Pod Security Standard, judged by the API server's own
PodSecurity admission (on by default) in namespaces labelled to enforce it.

A Pipeline's pod (podSecurity Restricted, the default) is admitted there and runs the engine
pipeline on the real node as uid 1000, its checkpoints on a csi-local volume (whose
CSIDriver has fsGroupPolicy File, so the kubelet gives the volume the pod's fsGroup). The
same pod without its securityContext (podSecurity ImageDefault) is refused, naming the
fields it lacks: the namespace really enforces. The in-tree hostPath provisioner (`standard`)
makes its directories root's with mode 0750 and the kubelet applies no fsGroup to hostPath
volumes, so a non-root pipeline cannot open its storage there: it runs with ImageDefault,
outside restricted namespaces.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for
from pipeline import report
from sluice.api import v1alpha1 as api
from sluice.core import manifests

from .conftest import Operator
from .pipelines import IMAGE, apply, patch, wait_jsonpath
from .pod_security import assert_refused, dry_run_pod, enforce_restricted, without_security_context
from .volumes import bound_volume, volume, volume_dir

UID = manifests.PIPELINE_USER


@pytest.fixture
def restricted(kubectl: Kubectl, namespace: str) -> str:
    """The test's namespace (real node), enforcing the restricted profile."""
    enforce_restricted(kubectl, namespace)
    return namespace


def pipeline(name: str, namespace: str, storage_class: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "desiredState": "Running",
                "image": IMAGE,
                "storage": {"size": "1Gi", "storageClassName": storage_class},
                **spec,
            },
        }
    )


def template_of(spec: dict[str, Any]) -> dict[str, Any]:
    model = api.PipelineSpec.model_validate(spec)
    template: dict[str, Any] = manifests.stateful_set("orders", "uid-1", model, "claim-1")["spec"][
        "template"
    ]
    return template


def test_the_pipeline_pod_is_admitted_and_without_its_security_context_refused(
    kubectl: Kubectl, restricted: str
) -> None:
    """If and only if: the default template passes restricted; stripped of its
    securityContext (which is what podSecurity ImageDefault builds) it is refused."""
    spec = {"image": IMAGE, "storage": {"size": "1Gi"}}
    default = template_of(spec)
    admitted = dry_run_pod(kubectl, "orders-0", restricted, default)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning" not in admitted.stderr, admitted.stderr

    image_default = template_of({**spec, "podSecurity": "ImageDefault"})
    assert image_default == without_security_context(default)
    assert_refused(dry_run_pod(kubectl, "orders-0", restricted, image_default))


def pod_of(name: str) -> str:
    return f"{name}-0"


def checkpointed(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def taken() -> dict[str, Any] | None:
        status = report.status(kubectl, pod_of(name), namespace)
        return status if status["checkpoints_taken"] >= 1 else None

    return wait_for(taken, timeout=90, what=f"{name} to checkpoint", interval=0.5)


def test_a_restricted_pipeline_runs_and_checkpoints_on_csi_local(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    restricted: str,
    live_operator: Operator,
) -> None:
    ns = restricted
    apply(kubectl, pipeline("orders", ns, CSI_CLASS))
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Running", timeout=120)
    pod = json.loads(kubectl("-n", ns, "get", "pod", pod_of("orders"), "-o", "json").stdout)
    assert pod["spec"]["securityContext"]["runAsUser"] == UID
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    before = checkpointed(kubectl, ns, "orders")

    # The checkpoint is on the volume, written by uid 1000 into a root the kubelet gave
    # the pod's fsGroup (setgid, group-writable).
    pv = volume(api_client, bound_volume(api_client, kubectl, ns, "orders"))
    assert pv is not None
    root = volume_dir(cluster, pv)
    info = root.stat()
    assert info.st_gid == UID and info.st_mode & stat.S_ISGID and info.st_mode & stat.S_IWGRP
    data = root / "data"
    assert data.stat().st_uid == UID
    assert any(p.stat().st_uid == UID for p in data.rglob("*") if p.is_file())

    # Its SIGTERM checkpoint too: the next start resumes from it.
    patch(kubectl, ns, "orders", {"spec": {"desiredState": "Stopped"}})
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Stopped", timeout=120)
    patch(kubectl, ns, "orders", {"spec": {"desiredState": "Running"}})
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Running", timeout=120)
    resumed = wait_for(
        lambda: report.of_kind(report.events(kubectl, pod_of("orders"), ns), "started"),
        timeout=60,
        what="the restart's report",
    )[-1]["resumed_from"]
    assert resumed is not None and resumed["steps"] >= before["steps"], (before, resumed)

    # The StatefulSet the operator made, stripped of its securityContext, is refused here.
    sts = json.loads(kubectl("-n", ns, "get", "statefulset", "orders", "-o", "json").stdout)
    stripped = without_security_context(sts["spec"]["template"])
    assert_refused(dry_run_pod(kubectl, "stripped", ns, stripped))


def test_the_hostpath_class_needs_image_default_which_restricted_refuses(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    live_operator: Operator,
) -> None:
    """`standard`: the provisioner's MkdirAll(path, 0750) as root, no fsGroup for hostPath;
    the restricted pipeline cannot open its storage. From its next start with ImageDefault
    (in a namespace that allows it) it runs and checkpoints."""
    ns = namespace
    apply(kubectl, pipeline("orders", ns, STORAGE_CLASS))
    pv = volume(api_client, bound_volume(api_client, kubectl, ns, "orders"))
    assert pv is not None
    root: Path = volume_dir(cluster, pv)
    info = root.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o750)

    def denied() -> list[dict[str, Any]] | None:
        for previous in (False, True):
            got = kubectl(
                "-n",
                ns,
                "logs",
                pod_of("orders"),
                *(["--previous"] if previous else []),
                check=False,
            )
            errors = report.of_kind(report.parse_events(got.stdout), "error")
            if errors:
                return errors
        return None

    (error, *_) = wait_for(denied, timeout=120, what="the engine's error report", interval=1)
    assert "Permission denied" in error["message"], error

    patch(kubectl, ns, "orders", {"spec": {"desiredState": "Stopped"}})
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Stopped", timeout=120)
    patch(
        kubectl, ns, "orders", {"spec": {"desiredState": "Running", "podSecurity": "ImageDefault"}}
    )
    wait_jsonpath(kubectl, ns, "orders", ".status.deploymentStatus", "Running", timeout=120)
    pod = json.loads(kubectl("-n", ns, "get", "pod", pod_of("orders"), "-o", "json").stdout)
    assert "securityContext" not in pod["spec"]["containers"][0]
    checkpointed(kubectl, ns, "orders")


def test_a_pod_the_namespace_refuses_is_quoted_in_the_pipelines_conditions(
    kubectl: Kubectl, restricted: str, live_operator: Operator
) -> None:
    """ImageDefault in a namespace enforcing restricted: the API server refuses the pod and
    the StatefulSet's controller says so only in its Events; the Pipeline's conditions quote
    it (`kubectl describe pipeline`, `kubectl wait` on Ready) instead of a silent
    Provisioning. Changing podSecurity back lets it run."""
    apply(kubectl, pipeline("orders", restricted, CSI_CLASS, podSecurity="ImageDefault"))

    def quoted() -> str | None:
        got = json.loads(
            kubectl("-n", restricted, "get", "pipeline", "orders", "-o", "json").stdout
        )
        conditions = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        message = str(conditions.get("Ready", {}).get("message", ""))
        return message if "violates PodSecurity" in message else None

    message = wait_for(quoted, timeout=90, what="the refusal in the Ready condition", interval=1)
    assert "StatefulSet orders cannot create its pod" in message, message
    assert "restricted:latest" in message, message
    status = json.loads(kubectl("-n", restricted, "get", "pipeline", "orders", "-o", "json").stdout)
    assert status["status"]["deploymentStatus"] == "Provisioning"

    patch(kubectl, restricted, "orders", {"spec": {"podSecurity": "Restricted"}})
    # The StatefulSet is rolled only when the pipeline stops and starts again (from its next
    # start): stop, start.
    patch(kubectl, restricted, "orders", {"spec": {"desiredState": "Stopped"}})
    wait_jsonpath(kubectl, restricted, "orders", ".status.deploymentStatus", "Stopped", timeout=90)
    patch(kubectl, restricted, "orders", {"spec": {"desiredState": "Running"}})
    wait_jsonpath(kubectl, restricted, "orders", ".status.deploymentStatus", "Running", timeout=120)
    assert quoted() is None
