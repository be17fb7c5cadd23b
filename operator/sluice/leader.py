"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Only the leader runs the operator (watches and reconciles); a standby waits, serving its
liveness endpoint, and starts from a fresh list when it takes over. Timings default to
controller-runtime's: a lease of 15 s, a renew deadline of 10 s, a retry period of 2 s.

A leader that has not renewed for the renew deadline exits the process at once, as
controller-runtime does: the lease stays valid for others for the whole lease duration
after its last renewal, so it has stopped writing before anyone else may start. A graceful
stop (SIGTERM/SIGINT) releases the Lease (holder cleared), so a standby takes over on its
next retry instead of after the lease expires.

`kubernetes.leaderelection` was not used: it is synchronous (threads and time.sleep), has
no release on stop, and its callbacks run the leader's work in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from sluice import metrics

log = logging.getLogger("sluice.leader")

DEFAULT_ID = "sluice-operator"


@dataclass(frozen=True)
class Timings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def identity() -> str:
    """Unique per process, readable per pod: `<hostname>_<uuid>` like client-go's users."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _micro_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """One Lease, read and written with resourceVersion preconditions (409 on a race)."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, name: str, holder: str, t: Timings
    ) -> None:
        self.api: Any = client.CoordinationV1Api(api_client)  # takes and gives plain JSON
        self.namespace, self.name, self.holder, self.timings = namespace, name, holder, t
        # The record as last seen, and when *we* saw it change (clocks are not compared).
        self._seen: dict[str, Any] | None = None
        self._seen_at = 0.0

    def _timeout(self) -> tuple[float, float]:
        """(connect, read) per request: an attempt (read + write) fits in half the deadline."""
        return (self.timings.retry_period, self.timings.renew_deadline / 4)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self._timeout()
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the Lease afterwards."""
        now = time.time()
        spec = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": int(self.timings.lease_duration),
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        lease = self._read()
        if lease is None:
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            try:
                self.api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout()
                )
            except ApiException as error:
                if error.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        old = lease.get("spec") or {}
        if old != (self._seen or {}).get("spec"):
            self._seen, self._seen_at = lease, time.monotonic()
        holder = old.get("holderIdentity") or ""
        duration = float(old.get("leaseDurationSeconds") or self.timings.lease_duration)
        if holder and holder != self.holder and time.monotonic() < self._seen_at + duration:
            return False  # held by another, and not expired as far as we have seen
        if holder == self.holder:
            spec["acquireTime"] = old.get("acquireTime") or spec["acquireTime"]
            spec["leaseTransitions"] = old.get("leaseTransitions") or 0
        else:
            spec["leaseTransitions"] = (old.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout()
            )
        except ApiException as error:
            if error.status == 409:
                return False  # changed since we read it: someone else renewed or took it
            raise
        return True

    def release(self) -> None:
        """Clear the holder if it is still us, so a standby acquires on its next retry."""
        lease = self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return
        now = _micro_time(time.time())
        lease["spec"].update({"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": now})
        self.api.replace_namespaced_lease(
            self.name, self.namespace, lease, _request_timeout=self._timeout()
        )


TRANSIENT = (ApiException, HTTPError, OSError)


class Elector:
    def __init__(self, lock: LeaseLock, exit_process: Callable[[int], None] = os._exit) -> None:
        self.lock = lock
        self.timings = lock.timings
        self._exit = exit_process

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self.lock.try_acquire_or_renew), timeout
            )
        except (TimeoutError, *TRANSIENT) as error:
            log.warning("lease %s: attempt failed: %s", self._where, _brief(error))
            return False

    @property
    def _where(self) -> str:
        return f"{self.lock.namespace}/{self.lock.name}"

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until we lead (True) or stop is set (False)."""
        log.info("standing by for lease %s as %s", self._where, self.lock.holder)
        while not stop.is_set():
            if await self._attempt(self.timings.renew_deadline / 2):
                log.info("became leader (lease %s, %s)", self._where, self.lock.holder)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.timings.retry_period)
        return False

    def keep_renewing(self, stop: threading.Event) -> None:
        """Renew every retry period until `stop`; exit the process once the renew deadline
        passes. Runs in threads of its own, so a busy event loop cannot delay a renewal, and
        a watchdog bounds the exit even while a request hangs."""
        renewed = [time.monotonic()]

        def renew() -> None:
            while not stop.wait(self.timings.retry_period):
                sent = time.monotonic()
                try:
                    if self.lock.try_acquire_or_renew():
                        renewed[0] = sent  # the lease counts from when the request was sent
                except TRANSIENT as error:
                    log.warning("lease %s: renewal failed: %s", self._where, _brief(error))

        renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        renewer.start()
        while not stop.wait(0.25):
            if time.monotonic() >= renewed[0] + self.timings.renew_deadline:
                log.error(
                    "leadership lost: lease %s not renewed for %.0fs; exiting so that no "
                    "write follows",
                    self._where,
                    self.timings.renew_deadline,
                )
                metrics.LEADER.set(0)
                self._exit(1)
                return
        renewer.join(self.timings.renew_deadline)  # no renewal may race the release

    async def release(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.lock.release), 5)
            log.info("released lease %s", self._where)
        except (TimeoutError, *TRANSIENT) as error:
            log.warning("could not release lease %s: %s", self._where, _brief(error))


def _brief(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def _serve_liveness(endpoint: str) -> web.AppRunner | None:
    """A standby's liveness probe: the process is alive and waiting, which is healthy."""
    if not endpoint:
        return None
    url = urlparse(endpoint)
    app = web.Application()

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app.router.add_get(url.path or "/", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()
    return runner


async def run_when_leader(
    elector: Elector, liveness: str, operate: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Stand by until elected, then run `operate(stop)` (the operator) until it returns.
    `stop` is set by SIGTERM/SIGINT: operate must watch it until it installs its own signal
    handlers (kopf does, as its stop_flag), so a signal right after election is not lost."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # replaced by kopf's once it has started
    metrics.LEADER.set(0)
    standby = await _serve_liveness(liveness)
    try:
        elected = await elector.acquire(stop)
    finally:
        if standby is not None:
            await standby.cleanup()  # the operator serves the same endpoint from now on
    if not elected:
        log.info("stopped while standing by")
        return
    metrics.LEADER.set(1)
    stop_renewing = threading.Event()
    watchdog = threading.Thread(
        target=elector.keep_renewing, args=(stop_renewing,), name="lease-watchdog", daemon=True
    )
    watchdog.start()
    try:
        await operate(stop)
    finally:
        stop_renewing.set()
        await asyncio.to_thread(watchdog.join)
        metrics.LEADER.set(0)
        await elector.release()
