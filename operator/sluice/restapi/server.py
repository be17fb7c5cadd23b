"""`sluice api`'s process: listen (HTTP or HTTPS), serve the app, stop cleanly on SIGINT/SIGTERM.

Request headers up to 64 KiB are accepted (aiohttp's default is 8 KiB per line; OIDC tokens
with many group claims are longer). A request aiohttp cannot parse (a larger header, a NUL
byte) is answered in the seed's error shape, and neither the answer nor the log quotes any
of the request's bytes: aiohttp's own answer and traceback would echo the start of the
offending line, a bearer token included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from sluice.restapi.app import create_app, json_response
from sluice.restapi.auth import Authorizer, KubeReviewer, NoAuthorizer
from sluice.restapi.decide import ApiError
from sluice.restapi.store import PipelineStore, connect

LOG = logging.getLogger("sluice.restapi")
MAX_HEADER_BYTES = 64 * 1024
TLS_RELOAD_SECONDS = 5.0  # how often the key pair files are checked for a renewal


class SafeRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse without echoing it."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong)
        error = (
            ApiError(
                431,
                "RequestHeaderFieldsTooLarge",
                f"A request line or header is longer than {MAX_HEADER_BYTES} bytes.",
                {"limit_bytes": MAX_HEADER_BYTES},
            )
            if too_large
            else ApiError(400, "InvalidHttpRequest", "The request is not valid HTTP.", {})
        )
        # The exception's text quotes the offending bytes: log only its kind.
        LOG.warning(
            "refused a request from %s: %s (%s)",
            request.remote,
            error.error_code,
            type(exc).__name__,
        )
        response = json_response(error.body(), error.status)
        response.force_close()
        return response


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--bind must be HOST:PORT, got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    bind: str,
    namespace: str | None,
    kubeconfig: str | None,
    authentication: str,
    tls_cert: str | None,
    tls_key: str | None,
    cache_ttl: float,
    access_log: bool,
    cached: bool = True,
) -> int:
    host, port = parse_bind(bind)
    if authentication == "none" and not is_loopback(host):
        LOG.error("--authentication none is only allowed on a loopback address, not %s", host)
        return 2
    if (tls_cert is None) != (tls_key is None):
        LOG.error("--tls-cert and --tls-key go together")
        return 2
    api_client, default_namespace = connect(kubeconfig)
    served = namespace or default_namespace
    authorizer: Authorizer
    if authentication == "none":
        LOG.warning(
            "!!! --authentication none: EVERY request is allowed, without any token; for local "
            "measurement only (bound to %s) !!!",
            host,
        )
        authorizer = NoAuthorizer(served)
    else:
        authorizer = Authorizer(KubeReviewer(api_client), served, ttl=cache_ttl)
    certificate = Certificate(tls_cert, tls_key) if tls_cert and tls_key else None
    ssl_context = certificate.context if certificate else None
    store = PipelineStore(api_client, served, cached)
    store.start()
    app = create_app(store, authorizer, served)
    scheme = "https" if ssl_context else "http"
    LOG.info(
        "serving pipelines of namespace %r on %s://%s:%d (authentication: %s)",
        served,
        scheme,
        host,
        port,
        authentication,
    )
    asyncio.run(_run(app, host, port, certificate, access_log))
    return 0


class Certificate:
    """The TLS context, and its key pair loaded again whenever the files change: a
    Secret's mounted files are replaced when cert-manager (or anyone) renews them, and
    new connections get the new certificate without a restart."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.loaded = self._stamp()
        self.context.load_cert_chain(cert, key)

    def _stamp(self) -> tuple[float, float]:
        return (os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(TLS_RELOAD_SECONDS)
            try:
                stamp = self._stamp()
                if stamp != self.loaded:
                    self.context.load_cert_chain(self.cert, self.key)
                    self.loaded = stamp
                    LOG.info("TLS certificate %s reloaded", self.cert)
            except (OSError, ssl.SSLError) as error:  # mid-update: keep the old pair
                LOG.warning("TLS certificate %s not reloaded: %s", self.cert, error)


async def _run(
    app: web.Application, host: str, port: int, certificate: Certificate | None, access: bool
) -> None:
    ssl_context = certificate.context if certificate else None
    loop = asyncio.get_running_loop()
    # Kubernetes calls block; more threads than asyncio's default keep requests flowing.
    loop.set_default_executor(ThreadPoolExecutor(32, "kube"))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    server = runner.server
    assert server is not None
    listener = await loop.create_server(
        lambda: SafeRequestHandler(
            server,
            loop=loop,
            access_log=LOG if access else None,  # type: ignore[arg-type]
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        ),
        host,
        port,
        ssl=ssl_context,
        reuse_address=True,
    )
    reload = asyncio.create_task(certificate.watch()) if certificate else None
    try:
        await stop.wait()
    finally:
        if reload:
            reload.cancel()
        listener.close()
        await listener.wait_closed()
        await runner.shutdown()
        await runner.cleanup()
