"""Events are recorded off the reconcile path, as client-go's EventRecorder does: the state
they describe is already in status, so the next step of a clear need not wait for them.
Best effort: a failure is logged, never retried (a namespace being deleted refuses new
Events with 403). A clear's own Events (plan.Event.once) are posted at once instead
(post_now), before the status write they describe: exactly once, also across a crash."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from sluice.core import decide as d
from sluice.core.observed import Observed

log = logging.getLogger("sluice.controller")

Post = Callable[[Observed, d.Event], None]


class EventRecorder:
    def __init__(self, post: Post) -> None:
        self._post = post
        self._queue: queue.Queue[tuple[Observed, d.Event]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def record(self, observed: Observed, event: d.Event) -> None:
        self._queue.put((observed, event))

    def post_now(self, observed: Observed, event: d.Event) -> None:
        """Post on the caller's thread, before the status write the Event describes, under
        its own name (plan.Event.once). A crash between the two retries the step, which
        gets 409 AlreadyExists: posted already. Queued and posted after the write instead,
        a crash in between would lose it, as the next leader sees the transition done."""
        try:
            self._post(observed, event)
        except ApiException as error:
            if error.status != 409:  # still best effort: status says it all the same
                _unrecorded(observed, event, error)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded Event has been posted (or has failed), at most
        `timeout` seconds; True when none is left."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            observed, event = self._queue.get()
            try:
                self._post(observed, event)
            except ApiException as error:
                _unrecorded(observed, event, error)
            except Exception:
                log.exception("could not record Event %s", event.reason)
            finally:
                self._queue.task_done()


def _unrecorded(observed: Observed, event: d.Event, error: ApiException) -> None:
    log.warning(
        "could not record Event %s on %s/%s: %s %s",
        event.reason,
        observed.namespace,
        observed.name,
        error.status,
        error.reason,
        extra={"namespace": observed.namespace, "pipeline": observed.name},
    )
