"""The per-pipeline gauges the alerts read (metrics.PipelineAlarms), set by the controller
from what it observed and wrote; read back through prometheus_client's own exposition."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sluice import controller as c
from sluice import metrics
from sluice.core import decide as d
from sluice.core import snapshots
from sluice.core.labels import SNAPSHOT_EXPIRES_AT
from sluice.core.manifests import event_name
from sluice.core.observed import Observed

from .test_decide import claim, pipeline, settled_status

KEY = ("analytics", "orders")
SINCE = "2026-11-28T10:00:00Z"
SINCE_UNIX = 1795860000.0  # SINCE as Unix seconds


class FakeKube:
    """Holds one pipeline (and its claims, snapshots); status writes land in it."""

    def __init__(self, obj: dict[str, Any] | None, claims: list[dict[str, Any]]) -> None:
        self.obj = obj
        self.claims = claims
        self.snapshots: list[dict[str, Any]] = []
        self.fail_deletes = False
        self.log: list[str] = []  # what was written, in order: "event X", "status Y"
        self.event_names: set[str] = set()

    def observe(self, namespace: str, name: str) -> Observed | None:
        if self.obj is None:
            return None
        return Observed(
            copy.deepcopy(self.obj),
            claims=copy.deepcopy(self.claims),
            snapshots=copy.deepcopy(self.snapshots),
        )

    def apply(self, observed: Observed, action: d.Action) -> None:
        if isinstance(action, d.DeleteClaim):
            if self.fail_deletes:
                raise ApiException(status=403, reason="Forbidden")
            self.claims = [x for x in self.claims if x["metadata"]["name"] != action.name]

    def write_status(self, observed: Observed, status: dict[str, Any]) -> None:
        assert self.obj is not None
        self.obj["status"] = c._drop_none(status)
        self.log.append(f"status {status['storage']['status']}")

    def emit_event(self, observed: Observed, event: d.Event) -> None:
        """As the API server does: a second Event of a name (plan.Event.once) is a 409."""
        if event.once:
            name = event_name(observed.pipeline["metadata"], event.reason, event.once)
            if name in self.event_names:
                raise ApiException(status=409, reason="AlreadyExists")
            self.event_names.add(name)
        self.log.append(f"event {event.reason}")

    def pipeline_snapshots(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.snapshots)

    def delete_snapshot(self, delete: snapshots.DeleteSnapshot) -> None:
        pass


class NoEvents:
    def record(self, observed: Observed, event: d.Event) -> None:
        pass

    def post_now(self, observed: Observed, event: d.Event) -> None:
        pass


def exported() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The three families as /metrics serves them: name -> {sorted labels: value}."""
    text = generate_latest(REGISTRY).decode()
    names = {
        "sluice_clearing_since_timestamp_seconds",
        "sluice_pipeline_error",
        "sluice_snapshot_oldest_expiry_timestamp_seconds",
    }
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {n: {} for n in names}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def labels(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": KEY[0], "pipeline": KEY[1], **extra}.items()))


@pytest.fixture(autouse=True)
def fresh_alarms() -> None:
    for key in list(metrics.ALARMS._clearing) + list(metrics.ALARMS._snapshots):
        metrics.ALARMS.forget(key)
        metrics.ALARMS.record_snapshots(key, None)


def test_clearing_since_is_exported_while_clearing_and_removed_once_cleared() -> None:
    kube = FakeKube(pipeline("Stopped", "r1", status=settled_status()), [claim()])
    control = c.Controller(kube, NoEvents())  # type: ignore[arg-type]
    assert exported()["sluice_clearing_since_timestamp_seconds"] == {}

    control.reconcile(*KEY)  # writes Clearing (clearingSince = now), deletes nothing yet
    assert kube.obj is not None and kube.obj["status"]["storage"]["status"] == "Clearing"
    since = kube.obj["status"]["storage"]["clearingSince"]
    assert exported()["sluice_clearing_since_timestamp_seconds"] == {
        labels(): metrics.timestamp(since)
    }

    control.reconcile(*KEY)  # deletes the claim; still Clearing, same start
    control.reconcile(*KEY)  # no claim left: Cleared
    assert kube.obj["status"]["storage"]["status"] == "Cleared"
    assert exported()["sluice_clearing_since_timestamp_seconds"] == {}


def test_a_failing_clear_exports_its_error_code_until_the_error_goes() -> None:
    status = settled_status("Clearing", clearingRequest="r1", clearingSince=SINCE)
    kube = FakeKube(pipeline("Stopped", "r1", status=status), [claim()])
    kube.fail_deletes = True
    control = c.Controller(kube, NoEvents())  # type: ignore[arg-type]

    with pytest.raises(ApiException):
        control.reconcile(*KEY)
    now = exported()
    assert now["sluice_clearing_since_timestamp_seconds"] == {labels(): SINCE_UNIX}
    assert now["sluice_pipeline_error"] == {labels(error_code="StorageClearFailed"): 1.0}

    kube.fail_deletes = False
    control.reconcile(*KEY)
    assert exported()["sluice_pipeline_error"] == {}
    assert exported()["sluice_clearing_since_timestamp_seconds"] == {labels(): SINCE_UNIX}


def test_a_new_leader_exports_what_is_persisted_before_its_first_step_succeeds() -> None:
    """A process that never wrote the status (it took over) still exports it: the gauges
    follow the observed status first, then what is written."""
    status = settled_status(
        "Clearing",
        clearingRequest="r1",
        clearingSince=SINCE,
        claims=["orders-storage-abcde"],
    )
    status["error"] = {"message": "m", "error_code": "StorageClearFailed"}
    kube = FakeKube(pipeline("Stopped", "r1", status=status), [claim()])
    kube.fail_deletes = True

    class Broken(FakeKube):
        def write_status(self, observed: Observed, status: dict[str, Any]) -> None:
            raise ApiException(status=500, reason="down")

    broken = Broken(kube.obj, kube.claims)
    broken.fail_deletes = True
    with pytest.raises(ApiException):
        c.Controller(broken, NoEvents()).reconcile(*KEY)  # type: ignore[arg-type]
    now = exported()
    assert now["sluice_clearing_since_timestamp_seconds"] == {labels(): SINCE_UNIX}
    assert now["sluice_pipeline_error"] == {labels(error_code="StorageClearFailed"): 1.0}


def test_a_deleted_pipeline_leaves_no_pipeline_series() -> None:
    status = settled_status("Clearing", clearingRequest="r1", clearingSince=SINCE)
    kube = FakeKube(pipeline("Stopped", "r1", status=status), [claim()])
    control = c.Controller(kube, NoEvents())  # type: ignore[arg-type]
    control.reconcile(*KEY)
    assert exported()["sluice_clearing_since_timestamp_seconds"]
    kube.obj = None
    control.reconcile(*KEY)
    now = exported()
    assert now["sluice_clearing_since_timestamp_seconds"] == {}
    assert now["sluice_pipeline_error"] == {}


def snapshot(name: str, expires_at: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": KEY[0],
        "uid": f"uid-{name}",
        "creationTimestamp": "2026-11-20T10:00:00Z",
        "labels": {"sluice.dev/pipeline": KEY[1]},
        "annotations": {SNAPSHOT_EXPIRES_AT: expires_at},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T09:00:00Z"
    return {"metadata": meta, "status": {"readyToUse": True}}


def test_the_oldest_snapshot_expiry_follows_the_snapshots_also_of_a_deleted_pipeline() -> None:
    kube = FakeKube(pipeline("Stopped", status=settled_status("Cleared")), [])
    kube.snapshots = [
        snapshot("orders-clear-b", "2099-01-02T00:00:00Z"),
        # Expired, its deletion sent but not done (a stuck finalizer): still counts.
        snapshot("orders-clear-a", SINCE, deleting=True),
        {"metadata": {"name": "users-own", "labels": {"sluice.dev/pipeline": KEY[1]}}},
    ]
    control = c.Controller(kube, NoEvents())  # type: ignore[arg-type]
    control.reconcile(*KEY)
    expiry = "sluice_snapshot_oldest_expiry_timestamp_seconds"
    assert exported()[expiry] == {labels(): SINCE_UNIX}

    kube.obj = None  # the Pipeline is deleted; its snapshots outlive it (rule 18)
    control.reconcile(*KEY)
    assert exported()[expiry] == {labels(): SINCE_UNIX}

    kube.snapshots = []
    control.reconcile(*KEY)
    assert exported()[expiry] == {}


def test_timestamps_are_unix_seconds_in_utc() -> None:
    assert metrics.timestamp(SINCE) == SINCE_UNIX
    assert metrics.timestamp("2026-11-28T11:00:00+01:00") == SINCE_UNIX
    assert metrics.timestamp("2026-11-28T10:00:00") == SINCE_UNIX
