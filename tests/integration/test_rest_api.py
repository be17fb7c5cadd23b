"""`sluice api` as a real process against the real control plane: every status code and
body over plain HTTP(S), with real ServiceAccount tokens (TokenRequest API).

ApiServer and token_for are also used by test_feldera_client.py, test_rest_api_fuzz.py
and tests/bench/bench_rest_api.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from localkube.cluster import LocalCluster, free_ports
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import apply, failed_pod, get, manifest, patch, run_and_wait, wait_jsonpath


class ApiServer:
    """`python -m sluice api` as a child process, serving one namespace on loopback."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        *extra: str,
        tls: tuple[Path, Path] | None = None,
        launcher: tuple[str, ...] = (sys.executable, "-m", "sluice"),
    ) -> None:
        (self.port,) = free_ports(1)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.verify: bool | str = str(tls[0]) if tls else True
        args = [
            *(*launcher, "api", "--bind", f"127.0.0.1:{self.port}"),
            *("--namespace", namespace, "--kubeconfig", str(kubeconfig)),
            *(("--tls-cert", str(tls[0]), "--tls-key", str(tls[1])) if tls else ()),
            *extra,
        ]
        self.process = subprocess.Popen(
            args,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._ready, timeout=30, what=f"sluice api on {self.url}", interval=0.1)
        except BaseException:
            self.stop()  # never leave a server behind that did not come up in time
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"sluice api exited {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2, verify=self.verify).ok
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers |= kwargs.pop("headers", {})
        return requests.request(
            method, f"{self.url}{path}", headers=headers, timeout=30, verify=self.verify, **kwargs
        )


def token_for(kubectl: Kubectl, namespace: str, account: str, verbs: list[str]) -> str:
    """A ServiceAccount with a Role of `verbs` on pipelines (none: no Role), and a token
    for it from the TokenRequest API, as `kubectl create token` gets one."""
    kubectl("-n", namespace, "create", "serviceaccount", account)
    if verbs:
        kubectl(
            *("-n", namespace, "create", "role", account, f"--verb={','.join(verbs)}"),
            "--resource=pipelines.sluice.dev",
        )
        kubectl(
            *("-n", namespace, "create", "rolebinding", account, f"--role={account}"),
            f"--serviceaccount={namespace}:{account}",
        )
        # RBAC reaches the authorizer through an informer: wait, or a review could say no.
        subject = f"system:serviceaccount:{namespace}:{account}"
        wait_for(
            lambda: (
                kubectl(
                    *("auth", "can-i", verbs[0], "pipelines.sluice.dev", "-n", namespace),
                    f"--as={subject}",
                    check=False,
                ).stdout.strip()
                == "yes"
            ),
            timeout=20,
            what=f"RBAC for {subject}",
        )
    return kubectl("-n", namespace, "create", "token", account, "--duration=1h").stdout.strip()


def stopped_with_storage(kubectl: Kubectl, namespace: str, name: str) -> None:
    """Ran once (storage InUse), then stopped: what /clear is for."""
    run_and_wait(kubectl, namespace, name)
    patch(kubectl, namespace, name, {"spec": {"desiredState": "Stopped"}})
    wait_jsonpath(kubectl, namespace, name, ".status.deploymentStatus", "Stopped")


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"message", "error_code", "details"}, body
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and isinstance(body["details"], dict)
    return body


@pytest.fixture
def api(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def writer(kubectl: Kubectl, namespace: str) -> str:
    return token_for(kubectl, namespace, "writer", ["get", "list", "patch"])


# ---- /clear: 202, 202 (no-op), 400, 404 ---------------------------------------------------


def test_clear_lifecycle_and_status_codes(
    kubectl: Kubectl, namespace: str, live_operator: Operator, api: ApiServer, writer: str
) -> None:
    stopped_with_storage(kubectl, namespace, "orders")
    before = get(kubectl, namespace, "orders")

    accepted = api.request("POST", "/v0/pipelines/orders/clear", writer)
    assert accepted.status_code == 202, accepted.text
    # Recorded as actionClearRequest: git's clearRequest, if any, is left as it is.
    storage = get(kubectl, namespace, "orders")["spec"]["storage"]
    request = storage["actionClearRequest"]
    assert request.startswith("api-")
    assert request != before["spec"]["storage"].get("actionClearRequest")
    assert storage.get("clearRequest") == before["spec"]["storage"].get("clearRequest")
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    done = get(kubectl, namespace, "orders")["status"]["storage"]
    assert done["lastActionClearRequest"] == request
    info = api.request("GET", "/v0/pipelines/orders?selector=status", writer).json()
    assert info["storage_status"] == "Cleared"

    # Already Cleared: 202, and nothing is written.
    version = get(kubectl, namespace, "orders")["metadata"]["resourceVersion"]
    again = api.request("POST", "/v0/pipelines/orders/clear", writer)
    assert again.status_code == 202, again.text
    time.sleep(0.5)
    assert get(kubectl, namespace, "orders")["metadata"]["resourceVersion"] == version

    # Running: 400, Feldera's error, nothing changes.
    run_and_wait(kubectl, namespace, "live")
    version = get(kubectl, namespace, "live")["metadata"]["resourceVersion"]
    refused = api.request("POST", "/v0/pipelines/live/clear", writer)
    body = assert_error(refused, 400, "StorageStatusImmutableUnlessStopped")
    assert body["message"] == (
        "Cannot transition storage status from 'in_use' to 'clearing' with resources status "
        "'provisioned'. Storage status cannot be changed unless the pipeline is stopped."
    )
    assert body["details"] == {
        "resources_status": "Provisioned",
        "current_status": "InUse",
        "new_status": "Clearing",
        "deployment_status": "Running",
        "deployment_desired_status": "Running",
    }
    assert get(kubectl, namespace, "live")["metadata"]["resourceVersion"] == version

    # Missing: exactly the seed's example body, with the name substituted.
    missing = api.request("POST", "/v0/pipelines/non-existent-pipeline/clear", writer)
    assert_error(missing, 404, "UnknownPipelineName")
    assert missing.json() == {
        "message": "Unknown pipeline name 'non-existent-pipeline'",
        "error_code": "UnknownPipelineName",
        "details": {"pipeline_name": "non-existent-pipeline"},
    }


def test_clear_pending_reads_as_clearing_without_an_operator(
    kubectl: Kubectl, namespace: str, live_operator: Operator, api: ApiServer, writer: str
) -> None:
    stopped_with_storage(kubectl, namespace, "orders")
    live_operator.stop()  # nobody acts on the request: GET must still say Clearing
    assert api.request("POST", "/v0/pipelines/orders/clear", writer).status_code == 202
    info = api.request("GET", "/v0/pipelines/orders?selector=status", writer).json()
    assert info["storage_status"] == "Clearing"
    # A second clear while Clearing is accepted and writes nothing (Feldera: 202).
    version = get(kubectl, namespace, "orders")["metadata"]["resourceVersion"]
    assert api.request("POST", "/v0/pipelines/orders/clear", writer).status_code == 202
    assert get(kubectl, namespace, "orders")["metadata"]["resourceVersion"] == version
    # ... and /start is refused until storage is Cleared.
    assert_error(
        api.request("POST", "/v0/pipelines/orders/start", writer),
        400,
        "CannotStartWhileClearingStorage",
    )


def _requested_events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    """The pipeline's Events whose reason ends in Requested, as kubectl shows them."""
    listed = kubectl(
        *("-n", namespace, "get", "events", "-o", "json"),
        f"--field-selector=involvedObject.kind=Pipeline,involvedObject.name={name}",
    ).stdout
    items: list[dict[str, Any]] = json.loads(listed)["items"]
    return [e for e in items if e["reason"].endswith("Requested")]


def test_accepted_actions_are_recorded_as_events_naming_the_caller(
    kubectl: Kubectl, namespace: str, live_operator: Operator, api: ApiServer, writer: str
) -> None:
    """The API server's audit log names the API's own account; the Event names the caller."""
    stopped_with_storage(kubectl, namespace, "orders")
    caller = f"system:serviceaccount:{namespace}:writer"
    assert api.request("POST", "/v0/pipelines/orders/clear", writer).status_code == 202
    request = get(kubectl, namespace, "orders")["spec"]["storage"]["actionClearRequest"]
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "Cleared")
    # Accepted but nothing to do (already Cleared): nothing is recorded.
    assert api.request("POST", "/v0/pipelines/orders/clear", writer).status_code == 202
    assert api.request("POST", "/v0/pipelines/orders/start", writer).status_code == 202
    assert api.request("POST", "/v0/pipelines/orders/stop", writer).status_code == 202

    def three_recorded() -> list[dict[str, Any]] | None:
        recorded = _requested_events(kubectl, namespace, "orders")
        return recorded if len(recorded) >= 3 else None

    recorded = wait_for(three_recorded, what="three Requested events")
    # Events carry whole seconds: order by reason, not by time.
    by_reason = {e["reason"]: e for e in recorded}
    assert sorted(by_reason) == ["ClearRequested", "StartRequested", "StopRequested"]
    assert len(recorded) == 3
    for event in recorded:
        assert event["message"].startswith(f"{caller} asked to "), event["message"]
        assert event["source"]["component"] == "sluice-api"
    assert request in by_reason["ClearRequested"]["message"]


# ---- GET, list, start, stop ----------------------------------------------------------------


def test_get_list_start_stop(kubectl: Kubectl, namespace: str, api: ApiServer, writer: str) -> None:
    apply(kubectl, manifest("b-orders", namespace, "Stopped"))
    apply(kubectl, manifest("a-orders", namespace, "Stopped"))

    full = api.request("GET", "/v0/pipelines/a-orders", writer)
    assert full.status_code == 200
    info = full.json()
    assert info["name"] == "a-orders"
    assert info["deployment_desired_status"] == "Stopped"
    assert info["runtime_config"]["image"]
    assert info["runtime_config"]["resources"]["storage_mb_max"] == 1074  # 1Gi, in MB
    assert info["runtime_config"]["resources"]["namespace"] == namespace
    status = api.request("GET", "/v0/pipelines/a-orders?selector=status", writer).json()
    assert "runtime_config" not in status and status["storage_status"] == "Cleared"

    listed = api.request("GET", "/v0/pipelines?selector=status", writer).json()
    assert [p["name"] for p in listed] == ["a-orders", "b-orders"]

    assert api.request("POST", "/v0/pipelines/a-orders/start", writer).status_code == 202
    assert get(kubectl, namespace, "a-orders")["spec"]["desiredState"] == "Running"
    stop = api.request("POST", "/v0/pipelines/a-orders/stop?force=true", writer)
    assert stop.status_code == 202
    stopped = get(kubectl, namespace, "a-orders")
    assert stopped["spec"]["desiredState"] == "Stopped"
    # Forced: the operator gives the pod 1 s instead of its grace period (docs/concepts.md).
    assert stopped["metadata"]["annotations"]["sluice.dev/force-stop"] == "true"
    assert api.request("POST", "/v0/pipelines/a-orders/stop", writer).status_code == 202

    config = api.request("GET", "/v0/config", writer).json()
    assert config["namespace"] == namespace and config["edition"] == "Open source"


def test_a_failed_pod_is_the_deployment_error(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    live_operator: Operator,
    api: ApiServer,
    writer: str,
) -> None:
    run_and_wait(kubectl, namespace, "orders")
    failed_pod(api_client, namespace, get(kubectl, namespace, "orders"))
    wait_jsonpath(kubectl, namespace, "orders", ".status.deploymentStatus", "Failed")
    info = api.request("GET", "/v0/pipelines/orders?selector=status", writer).json()
    assert info["deployment_status"] == "Unavailable"
    error = info["deployment_error"]
    assert error["error_code"] == "PipelineFailed"
    assert "Pod failed-extra failed: The node was low on resource: memory." in error["message"]


# ---- 401 / 403 ---------------------------------------------------------------------------------


def test_missing_or_bad_token_is_401(api: ApiServer, namespace: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
    ):
        response = api.request("POST", "/v0/pipelines/orders/clear", headers=headers)
        assert_error(response, 401, "Unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(api.request("GET", "/v0/config"), 401, "Unauthorized")


def test_denied_service_accounts_get_403(kubectl: Kubectl, namespace: str, api: ApiServer) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    nobody = token_for(kubectl, namespace, "nobody", [])
    reader = token_for(kubectl, namespace, "reader", ["get", "list"])
    version = get(kubectl, namespace, "orders")["metadata"]["resourceVersion"]

    body = assert_error(api.request("GET", "/v0/pipelines/orders", nobody), 403, "Forbidden")
    assert body["details"]["user"] == f"system:serviceaccount:{namespace}:nobody"
    assert body["details"]["verb"] == "get"
    assert_error(api.request("GET", "/v0/pipelines", nobody), 403, "Forbidden")

    assert api.request("GET", "/v0/pipelines/orders", reader).status_code == 200
    assert api.request("GET", "/v0/pipelines", reader).status_code == 200
    for action in ("clear", "start", "stop"):
        body = assert_error(
            api.request("POST", f"/v0/pipelines/orders/{action}", reader), 403, "Forbidden"
        )
        assert body["details"]["verb"] == "patch"
    body = assert_error(api.request("DELETE", "/v0/pipelines/orders", reader), 403, "Forbidden")
    assert body["details"]["verb"] == "delete"
    assert get(kubectl, namespace, "orders")["metadata"]["resourceVersion"] == version
    # Authentication alone is enough for the configuration (the client reads it first).
    assert api.request("GET", "/v0/config", nobody).status_code == 200


# ---- every other error is JSON too --------------------------------------------------------------


def test_routing_and_validation_errors_are_json(api: ApiServer, writer: str) -> None:
    assert_error(api.request("GET", "/nope", writer), 404, "UnknownEndpoint")
    assert_error(api.request("GET", "/v0/pipelines/a/b/c", writer), 404, "UnknownEndpoint")
    wrong = api.request("DELETE", "/v0/pipelines/orders/clear", writer)
    assert_error(wrong, 405, "MethodNotAllowed")
    assert wrong.headers["Allow"] == "POST"
    assert_error(api.request("GET", "/v0/pipelines/orders/clear", writer), 405, "MethodNotAllowed")
    # A name no pipeline can have names no pipeline: 404, as Feldera answers.
    assert_error(
        api.request("POST", "/v0/pipelines/Not_A_Name/clear", writer), 404, "UnknownPipelineName"
    )
    assert_error(
        api.request("GET", f"/v0/pipelines/{'x' * 60}", writer), 404, "UnknownPipelineName"
    )
    # Unknown query parameters are ignored, as Feldera ignores them; bad values are not.
    assert api.request("GET", "/v0/pipelines?unknown=1&selector=status", writer).status_code == 200
    assert_error(
        api.request("GET", "/v0/pipelines/orders?selector=some", writer),
        400,
        "InvalidQueryParameter",
    )
    assert_error(
        api.request("POST", "/v0/pipelines/orders/stop?force=maybe", writer),
        400,
        "InvalidQueryParameter",
    )
    docs = api.request("GET", "/v0/api-docs/openapi.json")  # public
    assert docs.status_code == 200 and docs.json()["openapi"].startswith("3.")


def _raw_request(url: str, request: bytes) -> bytes:
    """Bytes no HTTP client library would send (e.g. a NUL in a header), and the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_large_tokens_are_served_and_no_token_is_ever_echoed_or_logged(
    api: ApiServer, namespace: str
) -> None:
    # Over aiohttp's default 8 KiB line limit (OIDC tokens with many groups reach it): the
    # token reaches Kubernetes' TokenReview, which says it is not valid.
    large = "eyJlarge." + "A" * 20_000
    assert_error(api.request("GET", "/v0/pipelines", large), 401, "Unauthorized")
    # Over 64 KiB: refused in the seed's shape, quoting nothing of the request.
    huge = "eyJhuge." + "B" * 70_000
    body = assert_error(
        api.request("GET", "/v0/pipelines", huge), 431, "RequestHeaderFieldsTooLarge"
    )
    assert body["details"] == {"limit_bytes": 65536}
    # Not HTTP at all (a NUL byte in the header): the same shape, nothing echoed.
    answer = _raw_request(
        api.url,
        b"GET /v0/pipelines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJnul\x00C\r\n\r\n",
    )
    head, _, raw_body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"400", answer
    assert json.loads(raw_body)["error_code"] == "InvalidHttpRequest"
    assert b"eyJ" not in answer
    log = api.log()
    assert "refused a request" in log
    for secret in ("eyJlarge", "eyJhuge", "eyJnul", "AAAAAAAA", "BBBBBBBB"):
        assert secret not in log, log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_unexpected_errors_are_500_in_the_same_shape(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, crd: None, tmp_path: Path
) -> None:
    """The API run with a ServiceAccount that may do nothing: its own calls fail (403 from
    Kubernetes), and the caller gets a 500 in the seed's shape, never a stack trace."""
    user = token_for(kubectl, namespace, "user", ["get"])
    powerless = token_for(kubectl, namespace, "powerless", [])
    path = cluster.token_kubeconfig("powerless", powerless, tmp_path / "powerless-kubeconfig")
    for extra in ((), ("--authentication", "none")):
        server = ApiServer(path, namespace, tmp_path / f"api{len(extra)}.log", *extra)
        try:
            response = server.request("GET", "/v0/pipelines/orders", user)
            body = assert_error(response, 500, "KubernetesApiError")
            assert body["details"]["status"] == 403
            assert "Traceback" not in response.text
        finally:
            server.stop()


# ---- HTTPS, and the no-auth guard ----------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice-api")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_a_given_certificate(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, crd: None, tmp_path: Path
) -> None:
    apply(kubectl, manifest("orders", namespace, "Stopped"))
    reader = token_for(kubectl, namespace, "reader", ["get"])
    server = ApiServer(kubeconfig, namespace, tmp_path / "api.log", tls=self_signed(tmp_path))
    try:
        assert server.url.startswith("https://")
        response = server.request("GET", "/v0/pipelines/orders?selector=status", reader)
        assert response.status_code == 200
        assert response.json()["name"] == "orders"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/healthz", timeout=5)  # not trusted by default
        plain = server.url.replace("https://", "http://")
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{plain}/healthz", timeout=5)
        # A renewed key pair (as cert-manager writes into the Secret) is served without a
        # restart: the files are watched.
        served = ssl.get_server_certificate(("127.0.0.1", server.port))
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        for path in self_signed(renewed):
            path.replace(tmp_path / path.name)
        wait_for(
            lambda: ssl.get_server_certificate(("127.0.0.1", server.port)) != served,
            timeout=30,
            what="the renewed certificate to be served",
        )
        assert ssl.get_server_certificate(("127.0.0.1", server.port)) == (
            (tmp_path / "tls.crt").read_text()
        )
        assert "TLS certificate" in server.log() and "reloaded" in server.log()
    finally:
        server.stop()


def test_no_authentication_is_refused_off_loopback(kubeconfig: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sluice", "api", "--bind", "0.0.0.0:0", "--authentication", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr
