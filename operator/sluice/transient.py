"""Errors that say "the API server could not be reached or was overloaded", not "a bug":
they are logged as one line and retried with backoff; anything else keeps its traceback."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterator

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, MaxRetryError

# urllib3's errors (connection refused, reset, read timeout, protocol error) and the OS's.
TRANSIENT: tuple[type[Exception], ...] = (HTTPError, ConnectionError, TimeoutError)
# And what the API server answered (an error status): also one line.
REPORTED: tuple[type[Exception], ...] = (ApiException, *TRANSIENT)


def transient_reason(error: BaseException) -> str:
    """A short reason: `429 Too Many Requests`, `connection refused`, `read timed out`..."""
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    if isinstance(error, MaxRetryError) and error.reason is not None:
        error = error.reason
    text = str(error)
    # urllib3 prefixes the connection object's repr: keep what follows its last colon.
    if "Errno" in text:
        text = "[Errno" + text.rsplit("[Errno", 1)[1]
    elif ": " in text and text.startswith("<"):
        text = text.split(": ", 1)[1]
    return f"{type(error).__name__}: {text}".strip(": ")[:300]


def api_server_message(error: ApiException) -> str:
    """The API server's own explanation (the `message` of its Status body), e.g.
    `persistentvolumeclaims "x" is forbidden: exceeded quota: ...`; else status and reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{error.status} {error.reason}"


class RetryForever:
    """kopf's backoffs for failed API requests, without a last attempt: its default gives up
    after ~1 minute, and a watch that gives up stops the operator. Re-iterable (each request
    iterates it afresh), unsized (kopf then counts attempts without a total)."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1, 1, 2, 3, 5, 8, 13), itertools.repeat(21))


_KOPF_RETRY = re.compile(
    r"^Request attempt (#\d+)(?:/\d+)? failed; will retry: (\S+) (\S+) -> (\w+)"
)


class ConciseKopfRetries(logging.Filter):
    """kopf logs each retried request at ERROR with the whole exception repr; make it one
    short WARNING line, as the operator's own transient errors are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("kopf") and record.levelno == logging.ERROR:
            match = _KOPF_RETRY.match(record.getMessage())
            if match:
                attempt, method, url, error = match.groups()
                record.msg = "%s %s failed (%s, attempt %s); kopf retries with backoff"
                record.args = (method, url.split("?", 1)[0], error, attempt)
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
