"""The official `feldera` Python client (PyPI), used as a user would, against `sluice api`
with a ServiceAccount token: it clears storage end-to-end (the operator does the work)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from feldera import FelderaClient, Pipeline
from feldera.enums import PipelineFieldSelector, PipelineStatus, StorageStatus
from feldera.rest.errors import FelderaAPIError
from localkube.cluster import CSI_CLASS, STORAGE_CLASS
from localkube.fixtures import Kubectl
from sluice.core import resize

from .conftest import Operator
from .pipelines import get, manifest, run_and_wait, storage
from .test_rest_api import ApiServer, self_signed, stopped_with_storage, token_for


@pytest.fixture
def feldera(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, crd: None, tmp_path: Path
) -> Iterator[FelderaClient]:
    token = token_for(kubectl, namespace, "feldera-user", ["get", "list", "patch", "delete"])
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log")
    try:
        yield FelderaClient(server.url, api_key=token, timeout=30)
    finally:
        server.stop()


def test_client_clears_a_stopped_pipeline_and_sees_cleared(
    kubectl: Kubectl, namespace: str, live_operator: Operator, feldera: FelderaClient
) -> None:
    stopped_with_storage(kubectl, namespace, "orders")
    assert feldera.get_pipeline("orders", PipelineFieldSelector.STATUS).storage_status == "InUse"

    feldera.clear_storage("orders", timeout_s=90)  # POST /clear, then polls GET ?selector=status

    assert feldera.get_pipeline("orders", PipelineFieldSelector.STATUS).storage_status == "Cleared"
    obj = get(kubectl, namespace, "orders")
    assert obj["status"]["storage"]["status"] == "Cleared"
    storage = obj["spec"]["storage"]
    assert obj["status"]["storage"]["lastActionClearRequest"] == storage["actionClearRequest"]

    # The high-level Pipeline object works the same way.
    pipeline = Pipeline.get("orders", feldera)
    assert pipeline.storage_status() == StorageStatus.CLEARED
    pipeline.clear_storage(timeout_s=30)  # already Cleared: accepted, nothing to do
    assert pipeline.status() == PipelineStatus.STOPPED


def test_client_gets_feldera_errors(
    kubectl: Kubectl, namespace: str, live_operator: Operator, feldera: FelderaClient
) -> None:
    run_and_wait(kubectl, namespace, "live")
    with pytest.raises(FelderaAPIError) as running:
        feldera.clear_storage("live", timeout_s=10)
    assert running.value.status_code == 400
    assert running.value.error_code == "StorageStatusImmutableUnlessStopped"
    assert running.value.details["current_status"] == "InUse"

    with pytest.raises(FelderaAPIError) as missing:
        feldera.clear_storage("non-existent-pipeline", timeout_s=10)
    assert missing.value.status_code == 404
    assert missing.value.error_code == "UnknownPipelineName"
    assert missing.value.details == {"pipeline_name": "non-existent-pipeline"}
    assert "Unknown pipeline name 'non-existent-pipeline'" in str(missing.value)

    # Stop with the client (it polls until Stopped), then the clear goes through.
    feldera.stop_pipeline("live", force=True, timeout_s=90)
    feldera.clear_storage("live", timeout_s=90)
    assert feldera.get_pipeline("live", PipelineFieldSelector.STATUS).storage_status == "Cleared"
    names = [p.name for p in feldera.pipelines()]
    assert names == ["live"]


def test_sdk_delete_with_clear_storage_removes_the_pipeline(
    kubectl: Kubectl, namespace: str, live_operator: Operator, feldera: FelderaClient
) -> None:
    stopped_with_storage(kubectl, namespace, "orders")
    claims = get(kubectl, namespace, "orders")["status"]["storage"]["claims"]
    assert claims

    Pipeline.get("orders", feldera).delete(clear_storage=True)  # POST /clear, poll, DELETE

    gone = kubectl("-n", namespace, "get", "pipeline", "orders", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout
    for claim in claims:
        assert kubectl("-n", namespace, "get", "pvc", claim, check=False).returncode != 0
    with pytest.raises(FelderaAPIError) as after:
        feldera.get_pipeline("orders", PipelineFieldSelector.STATUS)
    assert after.value.status_code == 404


def test_delete_is_refused_with_feldera_codes(
    kubectl: Kubectl, namespace: str, live_operator: Operator, feldera: FelderaClient
) -> None:
    run_and_wait(kubectl, namespace, "live")
    with pytest.raises(FelderaAPIError) as running:
        feldera.delete_pipeline("live")
    assert running.value.status_code == 400
    assert running.value.error_code == "DeleteRestrictedToFullyStopped"

    feldera.stop_pipeline("live", force=True, timeout_s=90)
    with pytest.raises(FelderaAPIError) as in_use:
        feldera.delete_pipeline("live")  # stopped, but its storage is still InUse
    assert in_use.value.status_code == 400
    assert in_use.value.error_code == "DeleteRestrictedToClearedStorage"
    assert in_use.value.details == {"storage_status": "InUse"}
    assert get(kubectl, namespace, "live")["metadata"].get("deletionTimestamp") is None

    with pytest.raises(FelderaAPIError) as missing:
        feldera.delete_pipeline("non-existent-pipeline")
    assert missing.value.status_code == 404
    assert missing.value.error_code == "UnknownPipelineName"

    # Never ran, so its storage is Cleared from the start: deleted at once.
    kubectl("apply", "-f", "-", input=manifest("idle", namespace, desired="Stopped"))
    feldera.delete_pipeline("idle")
    assert kubectl("-n", namespace, "get", "pipeline", "idle", check=False).returncode != 0


def test_client_over_https_with_a_token_file(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, live_operator: Operator, tmp_path: Path
) -> None:
    """As a deployment is used: HTTPS with the API's CA, the token read from a file (as a
    projected ServiceAccount token is mounted)."""
    stopped_with_storage(kubectl, namespace, "orders")
    token_file = tmp_path / "token"
    token_file.write_text(token_for(kubectl, namespace, "job", ["get", "list", "patch"]))
    cert, key = self_signed(tmp_path)
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log", tls=(cert, key))
    try:
        assert server.url.startswith("https://")
        client = FelderaClient(
            server.url, api_key=token_file.read_text(), requests_verify=str(cert), timeout=30
        )
        client.clear_storage("orders", timeout_s=90)
        info = client.get_pipeline("orders", PipelineFieldSelector.STATUS)
        assert info.storage_status == "Cleared"
        assert [p.name for p in Pipeline.all(client)] == ["orders"]
    finally:
        server.stop()


def _with_storage_mb(runtime_config: dict[str, Any], mb: int) -> dict[str, Any]:
    """The whole runtime_config as GET shows it, with another size: what a client sends."""
    return {**runtime_config, "resources": {**runtime_config["resources"], "storage_mb_max": mb}}


def test_client_edits_the_size_where_sluice_can_grow_it_and_gets_feldera_400_elsewhere(
    kubectl: Kubectl, namespace: str, live_operator: Operator, feldera: FelderaClient
) -> None:
    """Feldera's PATCH with runtime_config: while storage is in use the size grows in place
    on csi-local (it can expand); shrinking, or growing on the hostPath class, is Feldera's
    400 EditRestrictedToClearedStorage; fields Sluice does not take from this API, 400."""
    run_and_wait(kubectl, namespace, "grows", storage_class=CSI_CLASS)
    run_and_wait(kubectl, namespace, "fixed", storage_class=STORAGE_CLASS)
    grows = feldera.get_pipeline("grows", PipelineFieldSelector.ALL)
    assert grows.runtime_config["resources"]["storage_mb_max"] == 1074  # 1Gi, MB rounded up

    feldera.patch_pipeline("grows", runtime_config=_with_storage_mb(grows.runtime_config, 2000))
    obj = get(kubectl, namespace, "grows")
    assert obj["spec"]["storage"]["size"] == "2000M"
    after = feldera.get_pipeline("grows", PipelineFieldSelector.ALL)
    assert after.runtime_config["resources"]["storage_mb_max"] == 2000
    kubectl(
        "-n", namespace, "wait", "--for=condition=StorageResizing=False",
        "pipeline/grows", "--timeout=120s", timeout=130,
    )  # fmt: skip
    grown = storage(get(kubectl, namespace, "grows"))
    assert resize.quantity_bytes(grown["capacity"]) >= 2000 * 10**6, grown
    assert grown["status"] == "InUse"  # grown in place, no clear
    details = Pipeline.get("grows", feldera).storage_status_details()
    assert details["capacity"] == grown["capacity"], details

    for name, mb in (("grows", 1500), ("fixed", 2000)):
        current = feldera.get_pipeline(name, PipelineFieldSelector.ALL).runtime_config
        with pytest.raises(FelderaAPIError) as refused:
            feldera.patch_pipeline(name, runtime_config=_with_storage_mb(current, mb))
        assert refused.value.status_code == 400, name
        assert refused.value.error_code == "EditRestrictedToClearedStorage", refused.value
        assert "spec.storage.size" in str(refused.value), refused.value
    assert get(kubectl, namespace, "fixed")["spec"]["storage"]["size"] == "1Gi"

    with pytest.raises(FelderaAPIError) as unsupported:
        feldera.patch_pipeline("grows", runtime_config={**after.runtime_config, "workers": 2})
    assert unsupported.value.status_code == 400
    assert unsupported.value.error_code == "EditNotSupported"
    assert unsupported.value.details == {"field": "runtime_config.workers"}

    # The description is Sluice's annotation; the same body again changes nothing.
    feldera.patch_pipeline("grows", description="orders, grown")
    assert feldera.get_pipeline("grows", PipelineFieldSelector.ALL).description == "orders, grown"
    feldera.patch_pipeline("grows", runtime_config=after.runtime_config)
    assert get(kubectl, namespace, "grows")["spec"]["storage"]["size"] == "2000M"
