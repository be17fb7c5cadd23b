"""A clear's Events are recorded exactly once, also when the operator dies between posting
one and writing the status it describes (contract rules 6 and 14): they are posted before
that status write, under a name of their own, so the retried step finds them (409)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sluice import controller as c
from sluice.core.observed import Observed
from sluice.events import EventRecorder

from .test_alarm_metrics import KEY, FakeKube
from .test_decide import claim, pipeline, settled_status

CLEARS = {"event StorageClearing", "event StorageCleared", "status Clearing", "status Cleared"}


def reconcile(kube: FakeKube) -> None:
    """One step with the operator's own recorder, posting to the fake API server; returns
    once the queued Events are posted too."""
    recorder = EventRecorder(kube.emit_event)
    try:
        c.Controller(kube, recorder).reconcile(*KEY)  # type: ignore[arg-type]
    finally:
        assert recorder.flush()


def test_each_event_of_a_clear_is_posted_before_the_status_that_records_it() -> None:
    kube = FakeKube(pipeline("Stopped", "r1", status=settled_status()), [claim()])
    for _ in range(3):  # Clearing; the claim deleted; Cleared
        reconcile(kube)
    assert [entry for entry in kube.log if entry in CLEARS] == [
        "event StorageClearing",
        "status Clearing",
        "event StorageCleared",
        "status Cleared",
    ]


def test_a_step_retried_after_dying_before_its_status_write_posts_no_second_event() -> None:
    kube = FakeKube(pipeline("Stopped", "r1", status=settled_status("Clearing")), [])
    kube.obj["status"]["storage"]["clearingRequest"] = "r1"  # type: ignore[index]

    class DiesBeforeWriting(FakeKube):
        def write_status(self, observed: Observed, status: dict[str, Any]) -> None:
            raise ApiException(status=503, reason="the operator died here")

    dying = DiesBeforeWriting(kube.obj, [])
    dying.event_names = kube.event_names  # the same API server
    with pytest.raises(ApiException):
        reconcile(dying)
    assert "event StorageCleared" in dying.log

    reconcile(kube)  # the next leader: its StorageCleared is a 409, posted already
    assert "event StorageCleared" not in kube.log
    assert kube.log.count("status Cleared") == 1
    assert kube.obj is not None and kube.obj["status"]["storage"]["lastClearRequest"] == "r1"
