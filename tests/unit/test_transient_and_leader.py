"""One-line reasons for transient errors, and the leader's renew deadline (no cluster)."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException
from sluice.leader import Elector, Timings
from sluice.transient import REPORTED, transient_reason
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError


def test_transient_errors_read_as_one_short_line() -> None:
    refused = NewConnectionError(
        None,  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    assert transient_reason(MaxRetryError(None, "/api", refused)) == (  # type: ignore[arg-type]
        "NewConnectionError: [Errno 111] Connection refused"
    )
    timeout = ReadTimeoutError(None, "/x", "Read timed out.")  # type: ignore[arg-type]
    assert "Read timed out" in transient_reason(timeout)
    assert transient_reason(ApiException(status=429, reason="Too Many Requests")) == (
        "429 Too Many Requests"
    )
    assert isinstance(timeout, REPORTED) and not isinstance(ValueError(), REPORTED)


class UnreachableLock:
    """A lock whose API server stopped answering after the lease was acquired."""

    def __init__(self, timings: Timings) -> None:
        self.timings, self.namespace, self.name, self.holder = timings, "ns", "lease", "me"
        self.attempts = 0

    def try_acquire_or_renew(self) -> bool:
        self.attempts += 1
        raise ConnectionRefusedError(111, "Connection refused")


def test_a_leader_that_cannot_renew_exits_once_the_deadline_passes() -> None:
    timings = Timings(lease_duration=10.0, renew_deadline=1.0, retry_period=0.1)
    lock: Any = UnreachableLock(timings)
    exits: list[tuple[int, float]] = []
    started = time.monotonic()
    elector = Elector(lock, exit_process=lambda code: exits.append((code, time.monotonic())))
    stop = threading.Event()
    elector.keep_renewing(stop)  # returns once it has called exit
    stop.set()  # ends the renewing thread (a real exit would have)
    ((code, at),) = exits
    assert code == 1
    # Not before the deadline; before the lease lets anyone else in (generous: noisy host).
    assert timings.renew_deadline <= at - started < timings.lease_duration
    assert lock.attempts >= 3
