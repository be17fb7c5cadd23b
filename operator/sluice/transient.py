"""Errors that say "the API server could not be reached or was overloaded", not "a bug":
they are logged as one line and retried with backoff; anything else keeps its traceback."""

from __future__ import annotations

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
