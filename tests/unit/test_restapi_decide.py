"""The REST API's pure rules, without a cluster: Feldera's JSON and /clear /start /stop."""

from __future__ import annotations

from typing import Any

import pytest
from sluice.restapi import decide as d

UID = "11111111-2222-3333-4444-555555555555"


def pipeline(
    desired: str = "Stopped",
    deployment: str = "Stopped",
    storage: str = "InUse",
    clear_request: str | None = None,
    last_clear: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec_storage: dict[str, Any] = {"size": "1Gi"}
    if clear_request is not None:
        spec_storage["clearRequest"] = clear_request
    status: dict[str, Any] = {
        "deploymentStatus": deployment,
        "storage": {"status": storage, "lastClearRequest": last_clear},
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "lastTransitionTime": "2026-11-28T10:05:00Z",
            }
        ],
    }
    if error is not None:
        status["error"] = error
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {
            "name": "orders",
            "namespace": "analytics",
            "uid": UID,
            "generation": 3,
            "resourceVersion": "4242",
            "creationTimestamp": "2026-11-28T10:00:00Z",
        },
        "spec": {
            "desiredState": desired,
            "image": "registry.example/orders:1",
            "storage": spec_storage,
        },
        "status": status,
    }


# ---- JSON -----------------------------------------------------------------------------


def test_status_selector_uses_feldera_field_names_and_spellings() -> None:
    info = d.to_feldera(pipeline(desired="Running", deployment="Running"), "status")
    assert info["name"] == "orders"
    assert info["id"] == UID
    assert info["deployment_status"] == "Running"
    assert info["deployment_desired_status"] == "Running"
    assert info["deployment_resources_status"] == "Provisioned"
    assert info["deployment_resources_desired_status"] == "Provisioned"
    assert info["deployment_runtime_status"] == "Running"
    assert info["storage_status"] == "InUse"
    assert info["program_status"] == "Success"
    assert info["deployment_error"] is None
    assert info["deployment_status_since"] == "2026-11-28T10:05:00Z"
    assert "runtime_config" not in info and "program_code" not in info


def test_all_selector_adds_the_spec() -> None:
    info = d.to_feldera(pipeline(), "all")
    assert info["runtime_config"]["image"] == "registry.example/orders:1"
    assert info["program_code"] == ""
    assert set(d.to_feldera(pipeline(), "status")) < set(info)


@pytest.mark.parametrize(
    ("deployment", "combined", "resources"),
    [
        ("Stopped", "Stopped", "Stopped"),
        ("Provisioning", "Provisioning", "Provisioning"),
        ("Running", "Running", "Provisioned"),
        ("Stopping", "Stopping", "Stopping"),
        ("Failed", "Unavailable", "Provisioned"),
    ],
)
def test_deployment_status_mapping(deployment: str, combined: str, resources: str) -> None:
    info = d.to_feldera(pipeline(deployment=deployment), "status")
    assert (info["deployment_status"], info["deployment_resources_status"]) == (
        combined,
        resources,
    )


def test_error_is_reported_in_the_seed_shape() -> None:
    error = {"message": "boom", "error_code": "Oops", "details": {"x": 1}}
    assert d.to_feldera(pipeline(error=error), "status")["deployment_error"] == error


def test_a_failed_pod_is_the_deployment_error_in_its_own_words() -> None:
    failed = pipeline(desired="Running", deployment="Failed")
    words = "Deployment status is Failed. Pod orders-0 failed: The node was low on memory."
    failed["status"]["conditions"].append(
        {
            "type": "Running",
            "status": "False",
            "reason": "Failed",
            "message": words,
            "lastTransitionTime": "2026-11-28T10:06:00Z",
        }
    )
    info = d.to_feldera(failed, "status")
    assert info["deployment_status"] == "Unavailable"
    assert info["deployment_error"] == {
        "message": words,
        "error_code": "PipelineFailed",
        "details": {"deployment_status": "Failed"},
    }
    assert (
        d.to_feldera(pipeline(desired="Running", deployment="Running"))["deployment_error"] is None
    )


def test_a_pending_clear_reads_as_clearing_at_once() -> None:
    obj = pipeline(clear_request="r2", last_clear="r1")
    assert d.to_feldera(obj, "status")["storage_status"] == "Clearing"
    handled = pipeline(clear_request="r2", last_clear="r2")
    assert d.to_feldera(handled, "status")["storage_status"] == "InUse"
    # On Cleared storage the operator only records the request: it stays Cleared.
    noop = pipeline(storage="Cleared", clear_request="r2", last_clear="r1")
    assert d.to_feldera(noop, "status")["storage_status"] == "Cleared"


def test_a_pipeline_without_status_yet() -> None:
    obj = pipeline()
    del obj["status"]
    info = d.to_feldera(obj, "all")
    assert info["deployment_status"] == "Stopped"
    assert info["storage_status"] == "Cleared"
    assert info["deployment_status_since"] == "2026-11-28T10:00:00Z"


# ---- /clear ---------------------------------------------------------------------------


def test_clear_of_a_stopped_pipeline_patches_a_new_request_with_a_precondition() -> None:
    """The request goes in actionClearRequest, never in clearRequest, which may be git's:
    a GitOps tool's selfHeal would write git's value back over it (docs/gitops.md)."""
    assert d.decide_clear(pipeline(), "tok") == {
        "metadata": {"resourceVersion": "4242"},
        "spec": {"storage": {"actionClearRequest": "tok"}},
    }


@pytest.mark.parametrize("storage", ["Cleared", "Clearing"])
def test_clear_of_cleared_or_clearing_storage_changes_nothing(storage: str) -> None:
    assert d.decide_clear(pipeline(storage=storage), "tok") is None
    assert d.decide_clear(pipeline(clear_request="r2", last_clear="r1"), "tok") is None


@pytest.mark.parametrize(
    ("desired", "deployment"),
    [
        ("Running", "Running"),
        ("Stopped", "Running"),  # stop requested, compute still there
        ("Stopped", "Stopping"),
        ("Running", "Stopped"),  # about to start
        ("Stopped", "Failed"),
    ],
)
def test_clear_needs_a_fully_stopped_pipeline(desired: str, deployment: str) -> None:
    with pytest.raises(d.ApiError) as raised:
        d.decide_clear(pipeline(desired=desired, deployment=deployment), "tok")
    error = raised.value
    assert error.status == 400
    assert error.error_code == "StorageStatusImmutableUnlessStopped"
    assert error.message.startswith("Cannot transition storage status from 'in_use' to 'clearing'")
    assert error.message.endswith(
        "Storage status cannot be changed unless the pipeline is stopped."
    )
    assert error.details["current_status"] == "InUse"
    assert error.details["new_status"] == "Clearing"
    assert error.details["deployment_desired_status"] == desired
    assert set(error.body()) == {"message", "error_code", "details"}


# ---- /start, /stop ------------------------------------------------------------------------


def test_start_and_stop_set_the_desired_state_once() -> None:
    assert d.decide_start(pipeline()) == {
        "metadata": {"resourceVersion": "4242"},
        "spec": {"desiredState": "Running"},
    }
    assert d.decide_start(pipeline(desired="Running")) is None
    assert d.decide_stop(pipeline(desired="Running", deployment="Running")) == {
        "metadata": {"resourceVersion": "4242"},
        "spec": {"desiredState": "Stopped"},
    }
    assert d.decide_stop(pipeline()) is None


def test_start_while_clearing_is_refused() -> None:
    with pytest.raises(d.ApiError) as raised:
        d.decide_start(pipeline(storage="Clearing"))
    assert (raised.value.status, raised.value.error_code) == (
        400,
        "CannotStartWhileClearingStorage",
    )


# ---- DELETE: Feldera's rules ----------------------------------------------------------------


def test_delete_of_a_stopped_cleared_pipeline_is_preconditioned_on_what_was_checked() -> None:
    assert d.decide_delete(pipeline(storage="Cleared")) == (UID, "4242")


@pytest.mark.parametrize(
    ("desired", "deployment"),
    [
        ("Running", "Running"),
        ("Stopped", "Stopping"),
        ("Running", "Stopped"),
        ("Running", "Failed"),
    ],
)
def test_delete_needs_a_fully_stopped_pipeline(desired: str, deployment: str) -> None:
    with pytest.raises(d.ApiError) as raised:
        d.decide_delete(pipeline(desired=desired, deployment=deployment, storage="Cleared"))
    assert (raised.value.status, raised.value.error_code) == (400, "DeleteRestrictedToFullyStopped")
    assert raised.value.message.startswith("Cannot delete a pipeline which is not fully stopped.")


@pytest.mark.parametrize(
    ("storage", "clear_request", "reported"),
    [("InUse", None, "InUse"), ("Clearing", "r1", "Clearing"), ("InUse", "r2", "Clearing")],
)
def test_delete_needs_cleared_storage(
    storage: str, clear_request: str | None, reported: str
) -> None:
    with pytest.raises(d.ApiError) as raised:
        d.decide_delete(pipeline(storage=storage, clear_request=clear_request))
    assert (raised.value.status, raised.value.error_code) == (
        400,
        "DeleteRestrictedToClearedStorage",
    )
    assert raised.value.details == {"storage_status": reported}


# ---- names --------------------------------------------------------------------------------


def test_unknown_pipeline_is_the_seed_example() -> None:
    assert d.unknown_pipeline("non-existent-pipeline").body() == {
        "message": "Unknown pipeline name 'non-existent-pipeline'",
        "error_code": "UnknownPipelineName",
        "details": {"pipeline_name": "non-existent-pipeline"},
    }


@pytest.mark.parametrize("name", ["orders", "a", "orders-2", "a.b", "x" * 52])
def test_valid_names(name: str) -> None:
    d.check_name(name)


@pytest.mark.parametrize("name", ["Orders", "-orders", "orders_1", "", "x" * 53])
def test_a_name_no_pipeline_can_have_is_unknown(name: str) -> None:
    """Feldera answers 404 for any name it does not know; it checks a name's form only
    when a pipeline is created."""
    with pytest.raises(d.ApiError) as raised:
        d.check_name(name)
    assert raised.value.status == 404
    assert raised.value.body() == {
        "message": f"Unknown pipeline name '{name}'",
        "error_code": "UnknownPipelineName",
        "details": {"pipeline_name": name},
    }


# ---- edits (PATCH) ----------------------------------------------------------------------


def _runtime_config(obj: dict[str, Any], **resources: Any) -> dict[str, Any]:
    current = d.to_feldera(obj, "all")["runtime_config"]
    return {**current, "resources": {**current["resources"], **resources}}


def test_an_edit_of_the_storage_size_patches_spec_storage_size_in_mb() -> None:
    obj = pipeline()
    assert d.to_feldera(obj, "all")["runtime_config"]["resources"]["storage_mb_max"] == 1074
    patch = d.decide_edit(obj, {"runtime_config": _runtime_config(obj, storage_mb_max=2000)})
    assert patch == {
        "metadata": {"resourceVersion": "4242"},
        "spec": {"storage": {"size": "2000M"}},
    }
    # In part: a field left out is unchanged.
    part = {"runtime_config": {"resources": {"storage_mb_max": 2000}}}
    assert d.decide_edit(obj, part) == patch


def test_what_get_shows_left_out_or_null_changes_nothing() -> None:
    obj = pipeline()
    as_shown = d.to_feldera(obj, "all")
    for body in (
        {},
        {"runtime_config": as_shown["runtime_config"]},
        {"name": None, "program_code": None, "runtime_config": None, "tags": None},
        {"program_code": "", "udf_rust": "", "program_config": {}, "name": "orders"},
        {"description": ""},
    ):
        assert d.decide_edit(obj, body) is None, body


def test_the_description_is_an_annotation() -> None:
    patch = d.decide_edit(pipeline(), {"description": "orders, in MB"})
    assert patch == {
        "metadata": {
            "annotations": {d.DESCRIPTION_ANNOTATION: "orders, in MB"},
            "resourceVersion": "4242",
        }
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"runtime_config": {"workers": 2}}, "runtime_config.workers"),
        (
            {"runtime_config": {"resources": {"cpu_cores_max": 4}}},
            "runtime_config.resources.cpu_cores_max",
        ),
        ({"program_code": "CREATE TABLE t (x INT);"}, "program_code"),
        ({"name": "renamed"}, "name"),
        ({"tags": ["a"]}, "tags"),
    ],
)
def test_any_other_change_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(d.ApiError) as refused:
        d.decide_edit(pipeline(), body)
    assert (refused.value.status, refused.value.error_code) == (400, "EditNotSupported")
    assert refused.value.details == {"field": field}


@pytest.mark.parametrize("value", [0, -5, 1.5, "2Gi", True])
def test_a_size_that_is_not_whole_megabytes_is_refused(value: Any) -> None:
    body = {"runtime_config": {"resources": {"storage_mb_max": value}}}
    with pytest.raises(d.ApiError) as refused:
        d.decide_edit(pipeline(), body)
    assert (refused.value.status, refused.value.error_code) == (400, "InvalidRequestBody")


def test_the_api_servers_storage_refusal_is_feldera_s_400() -> None:
    words = (
        "spec.storage.size can only grow while storage is in use (EditRestrictedToClearedStorage)"
    )
    assert d.edit_refused("orders", words).error_code == "EditRestrictedToClearedStorage"
    assert d.edit_refused("orders", words).message == words
    assert d.edit_refused("orders", "spec.image: Invalid").error_code == "PipelineChangeRejected"
