"""A client generated from Feldera's OpenAPI document (openapi-python-client, from PyPI,
generating into .cache at test time), used over HTTPS with a ServiceAccount token the way
a user of Feldera's generated clients would: list, get, stop, clear, poll until Cleared,
start. Its parsers refuse a missing required field, an unknown enum value and any status
the document does not list, so every answer it accepts has Feldera's shape."""

from __future__ import annotations

import importlib
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from feldera_schema import CLIENT_PACKAGE, generated_client_path
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import run_and_wait
from .test_rest_api import ApiServer, self_signed, stopped_with_storage, token_for


@pytest.fixture(scope="session")
def generated() -> Iterator[ModuleType]:
    path = str(generated_client_path())
    sys.path.insert(0, path)
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        sys.path.remove(path)


def _module(name: str) -> Any:
    return importlib.import_module(f"{CLIENT_PACKAGE}.{name}")


def _poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 90) -> Any:
    """Feldera's client pattern: GET until the status says done."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_generated_client_lists_stops_clears_polls_and_starts(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    crd: None,
    live_operator: Operator,
    generated: ModuleType,
    tmp_path: Path,
) -> None:
    list_pipelines = _module("api.pipeline_crud.list_pipelines")
    get_pipeline = _module("api.pipeline_crud.get_pipeline")
    stop = _module("api.pipeline_lifecycle.post_pipeline_stop")
    clear = _module("api.pipeline_lifecycle.post_pipeline_clear")
    start = _module("api.pipeline_lifecycle.post_pipeline_start")
    get_config = _module("api.platform.get_config")
    models = _module("models")

    stopped_with_storage(kubectl, namespace, "orders")
    run_and_wait(kubectl, namespace, "live")
    token = token_for(kubectl, namespace, "generated", ["get", "list", "patch"])
    cert, key = self_signed(tmp_path)
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log", tls=(cert, key))
    client = generated.AuthenticatedClient(
        base_url=server.url,
        token=token,
        verify_ssl=ssl.create_default_context(cafile=str(cert)),
        raise_on_unexpected_status=True,
    )
    status = models.PipelineFieldSelector.STATUS

    def get(name: str) -> Any:
        response = get_pipeline.sync_detailed(name, client=client, selector=status)
        assert response.status_code == 200, response.content
        assert isinstance(response.parsed, models.PipelineSelectedInfo), response.content
        return response.parsed

    try:
        listed = list_pipelines.sync_detailed(client=client)
        assert listed.status_code == 200, listed.content
        assert [p.name for p in listed.parsed] == ["live", "orders"]
        for info in listed.parsed:
            assert isinstance(info, models.PipelineSelectedInfo)
            assert isinstance(info.runtime_config, models.RuntimeConfig)
            assert isinstance(info.runtime_config.resources, models.ResourceConfig)
            assert isinstance(info.storage_status_details, models.StorageStatusDetails)
        full = get_pipeline.sync_detailed("orders", client=client).parsed
        assert full.runtime_config.resources.storage_mb_max == 1074
        assert full.runtime_config.additional_properties["image"]  # Sluice's own field
        assert get("orders").storage_status == models.StorageStatus.INUSE

        config = get_config.sync_detailed(client=client)
        assert isinstance(config.parsed, models.Configuration), config.content
        assert config.parsed.edition == "Open source"

        stopped = stop.sync_detailed("live", client=client, force=True)
        assert stopped.status_code == 202, stopped.content
        live = _poll(lambda: get("live"), lambda p: p.deployment_status == "Stopped")
        assert live.deployment_status == models.CombinedStatus.STOPPED

        cleared = clear.sync_detailed("orders", client=client)
        assert cleared.status_code == 202, cleared.content
        seen: list[Any] = []

        def polled() -> Any:
            info = get("orders")
            seen.append(info.storage_status)
            return info

        orders = _poll(polled, lambda p: p.storage_status == models.StorageStatus.CLEARED)
        assert orders.storage_status == models.StorageStatus.CLEARED, seen
        assert set(seen) <= {models.StorageStatus.CLEARING, models.StorageStatus.CLEARED}

        started = start.sync_detailed("orders", client=client)
        assert started.status_code == 202, started.content
        orders = _poll(lambda: get("orders"), lambda p: p.deployment_status == "Running")
        assert orders.deployment_status == models.CombinedStatus.RUNNING
        assert orders.storage_status == models.StorageStatus.INUSE

        missing = get_pipeline.sync_detailed("non-existent-pipeline", client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorResponse)
        assert missing.parsed.error_code == "UnknownPipelineName"
    finally:
        server.stop()
