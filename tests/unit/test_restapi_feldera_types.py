"""The mapping onto Feldera's types, checked against Feldera's own OpenAPI document (the
`feldera-rest-api` crate's openapi.json, fetched by `make feldera-schema`).

The Pipeline objects are the live ones the real operator produced in every state (the
Argo CD testdata, captured from a cluster by tests/integration/argocd_capture.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from feldera_schema import component_errors, response_errors, schema_errors
from sluice.restapi import decide as d
from sluice.restapi import feldera_types as ft
from sluice.restapi.models import ServerConfig

from .test_kubectl_plugin_output import KEPT

TESTDATA = (
    Path(__file__).resolve().parents[2]
    / "deploy/argocd/resource_customizations/sluice.dev/Pipeline/testdata"
)
STATES = sorted(p.stem for p in TESTDATA.glob("*.yaml"))
SELECTORS: tuple[d.Selector, ...] = ("all", "status", "status_with_connectors")
ONE = "/paths/~1v0~1pipelines~1{pipeline_name}/get/responses/200/content/application~1json/schema"


def _live(state: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((TESTDATA / f"{state}.yaml").read_text())
    # The testdata drops what differs between runs; the API server always sets these.
    obj["metadata"] |= {
        "uid": "0b6b9c7e-3c1f-4a47-9a0e-6d1f2b8c4e11",
        "creationTimestamp": "2026-11-29T07:16:10Z",
        "resourceVersion": "1",
    }
    return obj


def _with(spec: dict[str, Any]) -> dict[str, Any]:
    obj = _live("running")
    obj["spec"] |= spec
    return obj


def test_every_state_is_covered() -> None:
    assert {"clearing", "clear_failed", "failed", "start_while_clearing", "stopping"} <= set(STATES)


@pytest.mark.parametrize("selector", SELECTORS)
@pytest.mark.parametrize("state", STATES)
def test_every_state_is_a_valid_feldera_pipeline(state: str, selector: d.Selector) -> None:
    info = d.to_feldera(_live(state), selector)
    assert schema_errors(ONE, info) == []
    assert component_errors("StorageStatusDetails", info["storage_status_details"]) == []
    if selector == "all":
        assert component_errors("RuntimeConfig", info["runtime_config"]) == []


def test_clearing_reports_no_checkpoints_and_the_claims_being_deleted() -> None:
    details = d.to_feldera(_live("clearing"), "status")["storage_status_details"]
    assert details["checkpoints"] == []
    assert details["claims"] == _live("clearing")["status"]["storage"]["claims"]


def test_the_seed_failure_on_main_is_caught() -> None:
    """What Sluice answered before this mapping fails Feldera's schema: a runtime_config
    with no `resources`, and details without `checkpoints` (so this test can fail)."""
    info = d.to_feldera(_live("clearing"), "all")
    info["runtime_config"] = {"image": "x", "resources": None, "storage": {"size": "1Gi"}}
    info["storage_status_details"] = {"clearing_volumes": []}
    errors = schema_errors(ONE, info)
    assert any("runtime_config/resources" in e for e in errors), errors
    assert any("'checkpoints' is a required property" in e for e in errors), errors


def test_resources_become_feldera_resource_config() -> None:
    obj = _with(
        {
            "resources": {
                "requests": {"cpu": "500m", "memory": "1536Mi", "hugepages-2Mi": "2Mi"},
                "limits": {"cpu": 2, "memory": "2G", "nvidia.com/gpu": 1},
            },
            "storage": {"size": "30Gi", "storageClassName": "fast", "clearPolicy": "Delete"},
        }
    )
    config = ft.runtime_config(obj)
    assert config["resources"] == {
        "cpu_cores_min": 0.5,
        "cpu_cores_max": 2.0,
        "memory_mb_min": 1611,  # 1536 MiB = 1610.6 MB, rounded up
        "memory_mb_max": 2000,
        "storage_mb_max": 32213,  # 30 GiB = 32212.25 MB, rounded up
        "storage_class": "fast",
        "service_account_name": None,
        "namespace": "default",
    }
    assert config["storage"]["backend"] == {"name": "default"}
    assert config["workers"] == ft.DEFAULT_WORKERS
    assert config["image"] == obj["spec"]["image"]
    assert component_errors("RuntimeConfig", config) == []


def test_no_resources_is_nulls_not_a_missing_object() -> None:
    config = ft.runtime_config(_with({"resources": None}))
    assert config["resources"]["cpu_cores_min"] is None
    assert config["resources"]["storage_mb_max"] == 1074  # 1Gi
    assert component_errors("ResourceConfig", config["resources"]) == []


def test_configuration_is_feldera_configuration() -> None:
    config = ServerConfig.model_validate(ft.configuration(d.PLATFORM_VERSION, "analytics"))
    dumped = config.model_dump()
    assert component_errors("Configuration", dumped) == []
    assert dumped["namespace"] == "analytics" and dumped["edition"] == "Open source"


def test_a_wrongly_typed_field_fails() -> None:
    """The validator is strict where the schema is: a string for an integer fails."""
    config = ft.runtime_config(_live("running"))
    assert component_errors("RuntimeConfig", config | {"workers": "8"})
    assert response_errors("POST", "/v0/pipelines/{pipeline_name}/dismiss_error", 202, "", b"")
    assert response_errors("POST", "/v0/pipelines/{pipeline_name}/clear", 202, "", b"") == []


SNAPSHOTS = [
    *KEPT,  # one kept by a clear
    # Being taken by the clear of a deleted Pipeline: not ready, no size, no request.
    {"name": "orders-clear-hjklm", "claim": "orders-storage-hjklm", "readyToUse": False},
]


@pytest.mark.parametrize("selector", SELECTORS)
def test_kept_snapshots_and_restored_from_are_valid_feldera_details(selector: d.Selector) -> None:
    obj = _live("running")
    obj["status"]["storage"] |= {"snapshots": SNAPSHOTS, "restoredFrom": "orders-clear-bcdfg"}
    info = d.to_feldera(obj, selector)
    assert schema_errors(ONE, info) == []
    details = info["storage_status_details"]
    assert component_errors("StorageStatusDetails", details) == []
    assert details["restored_from"] == "orders-clear-bcdfg"
    assert details["snapshots"] == [
        {
            "name": "orders-clear-bcdfg",
            "claim": "orders-storage-bcdfg",
            "taken_at": "2026-11-29T07:16:10Z",
            "expires_at": "2026-12-02T07:16:10Z",
            "ready_to_use": True,
            "restore_size": "1Gi",
            "clear_request": "r1",
        },
        {
            "name": "orders-clear-hjklm",
            "claim": "orders-storage-hjklm",
            "taken_at": None,
            "expires_at": None,
            "ready_to_use": False,
            "restore_size": None,
            "clear_request": None,
        },
    ]
    # A volume snapshot is no Feldera checkpoint (which is the circuit's own, by uuid).
    assert details["checkpoints"] == []


def test_without_snapshots_the_details_say_none_kept_and_nothing_restored() -> None:
    details = d.to_feldera(_live("cleared"), "status")["storage_status_details"]
    assert (details["snapshots"], details["restored_from"]) == ([], None)


def test_snapshots_as_checkpoints_would_fail_feldera_schema() -> None:
    """Why the snapshots are an extra field: as CheckpointMetadata they lack its required
    uuid and fingerprint (so the schema check above can fail)."""
    obj = _live("running")
    obj["status"]["storage"]["snapshots"] = SNAPSHOTS
    details = d.to_feldera(obj, "status")["storage_status_details"]
    wrong = details | {"checkpoints": details["snapshots"]}
    errors = component_errors("StorageStatusDetails", wrong)
    assert any("'uuid' is a required property" in e for e in errors), errors
