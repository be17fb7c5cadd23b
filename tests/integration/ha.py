"""What every high-availability and fault case checks: clears on several pipelines complete
exactly once, a claim outside the pipelines is never touched, nothing is left Clearing."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from localkube.fixtures import Kubectl, wait_for

from .pipelines import apply, get, hold, manifest, reasons_once, release

FOREIGN_CLAIM = "foreign-storage"


def run_pipelines(kubectl: Kubectl, namespace: str, names: list[str], timeout: int = 180) -> None:
    apply(kubectl, "---\n".join(manifest(name, namespace) for name in names))
    kubectl(
        *("-n", namespace, "wait", "--for=condition=Running", "pipeline", "--all"),
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def request_clears(kubectl: Kubectl, namespace: str, names: list[str], request: str) -> None:
    """Stop and clear every pipeline in one apply (rule 5)."""
    text = "---\n".join(
        manifest(name, namespace, desired="Stopped", clear_request=request) for name in names
    )
    apply(kubectl, text)


def wait_cleared(kubectl: Kubectl, namespace: str, timeout: int = 240) -> None:
    kubectl(
        *("-n", namespace, "wait", "--for=condition=StorageCleared", "pipeline", "--all"),
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def storage_statuses(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = json.loads(kubectl("-n", namespace, "get", "pipelines", "-o", "json").stdout)["items"]
    return {
        p["metadata"]["name"]: ((p.get("status") or {}).get("storage") or {}).get("status", "")
        for p in items
    }


def wait_clearing(kubectl: Kubectl, namespace: str, name: str, timeout: float = 120) -> None:
    """Until `name` is Clearing: not Cleared, which would mean the clear is already over."""
    wait_for(
        lambda: storage_statuses(kubectl, namespace).get(name) == "Clearing",
        timeout=timeout,
        interval=0.05,
        what=f"{namespace}/{name} Clearing",
    )


@contextlib.contextmanager
def mid_clear(
    kubectl: Kubectl,
    api: client.ApiClient,
    namespace: str,
    names: list[str],
    request: str,
    held: str = "p0",
) -> Iterator[None]:
    """Request clears of `names` (stop and clear in one apply) with the clear of `held` held
    open: a finalizer on its claim keeps the claim's deletion from completing, so the
    operator must wait (rule 6). The block runs once `held` is Clearing, so a fault injected
    in it strikes mid-clear; when the block ends `held` must still be Clearing (checked),
    then the hold is released and the clear may finish."""
    (claim,) = get(kubectl, namespace, held)["status"]["storage"]["claims"]
    hold(api, "persistent_volume_claim", namespace, claim)
    try:
        request_clears(kubectl, namespace, names, request)
        wait_clearing(kubectl, namespace, held)
        yield
        # Read as soon as the API server answers again (a fault may have just ended).
        status = wait_for(
            lambda: storage_statuses(kubectl, namespace)[held], timeout=60, what="a status"
        )
        assert status == "Clearing", f"{held}'s clear was over before the fault ended: {status}"
    finally:
        release(api, "persistent_volume_claim", namespace, claim)


def foreign_claim(api: client.ApiClient, namespace: str, looks_like: str) -> str:
    """A claim carrying a pipeline's label but no ownership: it must never be touched.
    Returns its resourceVersion once Bound (binding itself changes it)."""
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": FOREIGN_CLAIM, "labels": {"sluice.dev/pipeline": looks_like}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )

    def bound() -> str | None:
        claim = core.read_namespaced_persistent_volume_claim(FOREIGN_CLAIM, namespace)
        return str(claim.metadata.resource_version) if claim.status.phase == "Bound" else None

    return wait_for(bound, timeout=60, what="foreign claim Bound")


def check_exactly_once(
    kubectl: Kubectl,
    api: client.ApiClient,
    namespace: str,
    names: list[str],
    request: str,
    foreign_version: str,
) -> None:
    """One StorageCleared per request, the request recorded, no claim of the pipelines left,
    the foreign claim as it was, nothing Clearing."""
    items = json.loads(kubectl("-n", namespace, "get", "pipelines", "-o", "json").stdout)["items"]
    by_name: dict[str, Any] = {p["metadata"]["name"]: p for p in items}
    for name in names:
        storage = by_name[name]["status"]["storage"]
        assert storage.get("status") == "Cleared", (name, storage)
        assert storage.get("lastClearRequest") == request, (name, storage)
        reasons = reasons_once(api, namespace, name)
        assert reasons.count("StorageCleared") == 1, (name, reasons)
    core = client.CoreV1Api(api)
    left = [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(namespace).items]
    assert left == [FOREIGN_CLAIM], left
    claim = core.read_namespaced_persistent_volume_claim(FOREIGN_CLAIM, namespace)
    assert claim.metadata.resource_version == foreign_version
    assert claim.metadata.deletion_timestamp is None


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start
