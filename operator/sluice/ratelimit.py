"""Client-side rate limiting of API requests, as client-go's token bucket (QPS + burst).

Every request through a `RateLimitedApiClient` takes a token first; tokens refill at
`qps` per second up to `burst`. qps <= 0 disables the limit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client

from sluice.kube import TimeoutApiClient


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        if self.qps <= 0:
            return 0.0
        with self._lock:  # reserve now, sleep outside the lock: callers queue fairly
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


class RateLimitedApiClient(TimeoutApiClient):
    """The operator's client: a token first, then the request with its timeouts (kube.py)."""

    def __init__(self, bucket: TokenBucket, configuration: client.Configuration | None = None):
        super().__init__(configuration)
        self.bucket = bucket

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        self.bucket.acquire()
        return super().call_api(*args, **kwargs)  # type: ignore[no-untyped-call]
