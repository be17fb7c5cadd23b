"""A Pipeline resource in Feldera's own types: `RuntimeConfig` (with `ResourceConfig` and
`StorageOptions`), `StorageStatusDetails` and the server's `Configuration`, as Feldera's
OpenAPI document (crate `feldera-rest-api`) defines them.

Pure: the JSON dicts only. tests/unit/test_restapi_feldera_types.py validates every one
against Feldera's document. What has no Feldera counterpart either goes into a field the
schema allows (extra fields: Feldera's schemas do not forbid them and its serde types
ignore them) or stays in Kubernetes (`kubectl get pipeline -o yaml`).
"""

from __future__ import annotations

import math
import platform
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from sluice.api import v1alpha1 as api

Quantity = str | int | float  # as the API server stores it (int-or-string)

# Feldera's RuntimeConfig default. Sluice runs an image, which picks its own threads: the
# value says what Feldera would assume, it is not passed to the pipeline.
DEFAULT_WORKERS = 8
MEGABYTE = Decimal(1_000_000)  # Feldera's *_mb fields are megabytes, as their names say


def _parse(quantity: Quantity) -> Decimal:
    parsed: Decimal = parse_quantity(quantity)  # type: ignore[no-untyped-call]
    return parsed


def _cores(quantity: Quantity | None) -> float | None:
    return None if quantity is None else float(_parse(quantity))


def _megabytes(quantity: Quantity | None, round_up: bool) -> int | None:
    if quantity is None:
        return None
    value = _parse(quantity) / MEGABYTE
    return int(math.ceil(value) if round_up else math.floor(value))


def resource_config(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Feldera's ResourceConfig from spec.resources and spec.storage: requests are the
    minimum, limits the maximum (a minimum rounded up, a maximum down, to whole MB).
    Extended resources and hugepages have no Feldera field; they stay in the spec."""
    resources = spec.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    storage = spec.get("storage") or {}
    return {
        "cpu_cores_min": _cores(requests.get("cpu")),
        "cpu_cores_max": _cores(limits.get("cpu")),
        "memory_mb_min": _megabytes(requests.get("memory"), round_up=True),
        "memory_mb_max": _megabytes(limits.get("memory"), round_up=False),
        "storage_mb_max": _megabytes(storage.get("size"), round_up=True),
        "storage_class": storage.get("storageClassName"),
        "service_account_name": None,  # the pod runs as its namespace's default account
        "namespace": namespace,
    }


def runtime_config(obj: dict[str, Any]) -> dict[str, Any]:
    """Feldera's RuntimeConfig. Storage is always on (a PersistentVolumeClaim, Feldera's
    `default` backend: files in the pipeline's storage directory); fault tolerance is off
    (Sluice takes no checkpoints). `image` is Sluice's own field: what the pipeline runs."""
    spec = obj.get("spec") or {}
    return {
        "workers": DEFAULT_WORKERS,
        "storage": {
            "backend": {"name": "default"},
            "min_storage_bytes": None,
            "min_step_storage_bytes": None,
            "compression": "default",
            "cache_mib": None,
        },
        "fault_tolerance": {"model": "none", "checkpoint_interval_secs": None},
        "resources": resource_config(spec, str(obj["metadata"].get("namespace") or "")),
        "image": spec.get("image"),
    }


def _volume(record: api.VolumeRecord) -> dict[str, Any]:
    return {
        "persistent_volume": record.persistent_volume,
        "claim": record.claim,
        "reclaim_policy": record.reclaim_policy,
        "storage_class_name": record.storage_class_name,
    }


def _snapshot(record: api.SnapshotRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "claim": record.claim,
        "taken_at": record.taken_at,
        "expires_at": record.expires_at,
        "ready_to_use": record.ready_to_use,
        "restore_size": record.restore_size,
        "clear_request": record.clear_request,
    }


def storage_status_details(storage: api.StorageState) -> dict[str, Any]:
    """Feldera's StorageStatusDetails: no checkpoints (Sluice takes none), and, as extra
    fields, the claims in use and their capacity now, the volumes a clear in progress
    waits for, where data outlived the last clear by policy (a Retain volume, a detached
    claim), the snapshots kept from earlier clears and what the claim was restored from.

    The snapshots are not Feldera checkpoints, so they are not in `checkpoints`: a
    CheckpointMetadata is the circuit's own (a uuid and the circuit's fingerprint), kept
    inside the storage; a VolumeSnapshot is a copy of the whole volume, outside it."""
    return {
        "checkpoints": [],
        "claims": list(storage.claims),
        "capacity": storage.capacity,
        "clearing_volumes": [_volume(r) for r in storage.clearing_volumes],
        "retained_volumes": [_volume(r) for r in storage.retained_volumes],
        "snapshots": [_snapshot(r) for r in storage.snapshots],
        "restored_from": storage.restored_from,
    }


def configuration(version: str, namespace: str) -> dict[str, Any]:
    """Feldera's Configuration (GET /v0/config). The build fields describe a Python
    process, not a Rust build: the ones without a meaning here are empty strings."""
    return {
        "version": version,
        "edition": "Open source",  # Feldera's client accepts only its known editions
        "revision": "",
        "runtime_revision": "",
        "changelog_url": "",
        "posthog": "",  # no telemetry
        "conceptualhq": "",
        "product_fruits": "",
        "build_source": "source",
        "build_info": {
            "build_timestamp": "",
            "build_cpu": platform.machine(),
            "build_os": platform.system().lower(),
            "cargo_dependencies": "",
            "cargo_features": "",
            "cargo_debug": "",
            "cargo_opt_level": "",
            "cargo_target_triple": "",
            "rustc_version": "",
        },
        "update_info": None,
        "license_validity": None,
        "unstable_features": None,
        "namespace": namespace,
    }
