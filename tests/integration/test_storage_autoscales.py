"""Storage that grows by itself (spec.storage.autoscaling) on the real node: a running
pipeline's csi-local volume fills past the threshold (ballast written into the mounted
volume), the kubelet's volume statistics say so, the operator grows the claim by a step
with an Event; the pipeline keeps running with its checkpoints, nothing is cleared. At
maxSize a Warning and the condition StorageAtMaxSize instead, False again once space is
freed. Refused at apply time: autoscaling on a class that cannot expand, and a maxSize
below spec.storage.size."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localkube.cluster import CSI_CLASS, STORAGE_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    document,
    event_once,
    events,
    get,
    storage,
    wait_condition,
    wait_jsonpath,
)
from .volumes import claim_volume, volume

MI = 1 << 20
# Small steps on small volumes: 64Mi grows by 32Mi to its maximum, 96Mi.
AUTOSCALING = {"maxSize": "96Mi", "usageThresholdPercent": 50, "step": "32Mi"}


@pytest.fixture
def polling_operator(live_operator: Operator) -> Iterator[Operator]:
    """The shared operator, reading volume usage every 2 s instead of every minute."""
    live_operator.stop()
    live_operator.start(extra=["--volume-usage-seconds", "2"])
    try:
        yield live_operator
    finally:
        live_operator.stop()
        live_operator.start()


def _pipeline(namespace: str, storage_class: str | None, **autoscaling: Any) -> str:
    doc = document("orders", namespace, size="64Mi", storage_class=storage_class)
    doc["spec"]["storage"]["autoscaling"] = {**AUTOSCALING, **autoscaling}
    return yaml.safe_dump(doc)


def _engine_status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    out = kubectl("-n", namespace, "exec", "orders-0", "--", "engine-pipeline", "status")
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def _condition(kubectl: Kubectl, namespace: str, type_: str) -> dict[str, Any] | None:
    conditions = (get(kubectl, namespace, "orders").get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def _fill(mount: Path, name: str, mib: int) -> None:
    """Ballast in the volume as mounted on the host (the pod's mount is the same file
    system), written and synced so that statfs counts it."""
    with (mount / name).open("wb") as out:
        for _ in range(mib):
            out.write(b"\0" * MI)
        out.flush()
        os.fsync(out.fileno())


def test_a_filling_volume_grows_by_steps_up_to_max_size_without_a_clear(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    polling_operator: Operator,
) -> None:
    apply(kubectl, _pipeline(namespace, CSI_CLASS))
    wait_condition(kubectl, namespace, "orders", "Running")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    (claim,) = storage(get(kubectl, namespace, "orders"))["claims"]
    wait_for(
        lambda: _engine_status(kubectl, namespace)["checkpoints_taken"] >= 1,
        timeout=60,
        what="a checkpoint",
    )
    core = client.CoreV1Api(api_client)
    pod_uid = core.read_namespaced_pod("orders-0", namespace).metadata.uid
    pv = volume(api_client, claim_volume(api_client, namespace, claim))
    assert pv is not None and pv.spec.csi is not None
    mount = cluster.csi_volume_dir(pv.spec.csi.volume_handle)

    # Past 50% of 64Mi: one step, to 96Mi (= maxSize), announced by an Event.
    _fill(mount, "ballast-1", 36)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.capacity", "96Mi", timeout=120)
    grown = event_once(api_client, namespace, "orders", "StorageAutoscaled", "Normal", "96Mi")
    assert "threshold 50%" in grown.message, grown.message
    request = core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert request.spec.resources.requests["storage"] == "96Mi"
    # The same pod and process, its checkpoints going on; the same claim, nothing cleared.
    assert core.read_namespaced_pod("orders-0", namespace).metadata.uid == pod_uid
    engine = _engine_status(kubectl, namespace)
    assert engine["resumed_from"] is None and engine["checkpoints_taken"] >= 1
    after = get(kubectl, namespace, "orders")
    assert storage(after)["status"] == "InUse" and storage(after)["claims"] == [claim]
    assert "lastClearRequest" not in storage(after)
    assert (mount / "ballast-1").stat().st_size == 36 * MI  # no data lost
    assert _condition(kubectl, namespace, "StorageAtMaxSize") is None  # 36Mi of 96Mi

    # Past 50% of 96Mi at maxSize: a Warning and the condition, the claim left as it is.
    _fill(mount, "ballast-2", 20)
    kubectl(
        "-n", namespace, "wait", "--for=condition=StorageAtMaxSize",
        "pipeline/orders", "--timeout=60s", timeout=70,
    )  # fmt: skip
    full = _condition(kubectl, namespace, "StorageAtMaxSize")
    assert full is not None and "maxSize (96Mi)" in full["message"], full
    event_once(api_client, namespace, "orders", "StorageAtMaxSize", "Warning", "96Mi")
    assert storage(get(kubectl, namespace, "orders"))["capacity"] == "96Mi"

    # Space freed: the condition turns False; one growth Event in all.
    (mount / "ballast-2").unlink()
    (mount / "ballast-1").unlink()
    kubectl(
        "-n", namespace, "wait", "--for=condition=StorageAtMaxSize=False",
        "pipeline/orders", "--timeout=60s", timeout=70,
    )  # fmt: skip
    growths = [
        e for e in events(api_client, namespace, "orders") if e.reason == "StorageAutoscaled"
    ]
    assert len(growths) == 1 and (growths[0].count or 1) == 1, growths
    assert core.read_namespaced_pod("orders-0", namespace).metadata.uid == pod_uid


def test_autoscaling_where_the_class_cannot_expand_is_refused_at_apply_time(
    kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    refused = apply(kubectl, _pipeline(namespace, STORAGE_CLASS), check=False)
    assert refused.returncode != 0
    assert "spec.storage.autoscaling needs a StorageClass" in refused.stderr, refused.stderr
    assert f"StorageClass {STORAGE_CLASS} does not" in refused.stderr, refused.stderr
    # Without autoscaling the same Pipeline is admitted; with it on csi-local too.
    plain = document("orders", namespace, size="64Mi", storage_class=STORAGE_CLASS)
    apply(kubectl, yaml.safe_dump(plain), check=True)
    kubectl("-n", namespace, "delete", "pipeline", "orders", "--wait=false")


def test_a_max_size_below_the_size_is_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    refused = apply(kubectl, _pipeline(namespace, CSI_CLASS, maxSize="32Mi"), check=False)
    assert refused.returncode != 0
    assert "spec.storage.autoscaling.maxSize must be at least spec.storage.size" in (
        refused.stderr
    ), refused.stderr
    assert "spec.storage.autoscaling.maxSize" in refused.stderr
    bad_step = apply(kubectl, _pipeline(namespace, CSI_CLASS, step="0%"), check=False)
    assert "spec.storage.autoscaling.step must be" in bad_step.stderr, bad_step.stderr
