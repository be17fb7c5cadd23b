"""The cache's store: what a watch event or our own write's answer may change."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sluice.cache import Cache, Key, Obj, Scope, Store, trim
from sluice.core.labels import PIPELINE_LABEL


def claim(name: str, rv: int, pipeline: str = "orders", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {PIPELINE_LABEL: pipeline},
            "managedFields": [{"manager": "kubectl"}],
            **meta,
        },
        "spec": {"resources": {}},
    }


def test_indexed_by_pipeline_and_trimmed() -> None:
    store = Store("persistentvolumeclaims")
    store.upsert(claim("a", 1))
    store.upsert(claim("b", 2, pipeline="other"))
    [found] = store.for_pipeline("ns", "orders")
    assert found["metadata"]["name"] == "a"
    assert "managedFields" not in found["metadata"]
    store.upsert(claim("a", 3, pipeline="other"))  # relabelled: moves in the index
    assert store.for_pipeline("ns", "orders") == []
    assert {c["metadata"]["name"] for c in store.for_pipeline("ns", "other")} == {"a", "b"}


def test_an_older_event_does_not_replace_our_own_newer_write() -> None:
    store = Store("persistentvolumeclaims")
    store.upsert(claim("a", 5, deletionTimestamp="now"))  # the answer to our delete
    assert not store.upsert(claim("a", 4))  # the watch catching up
    assert store.get("ns", "a")["metadata"]["deletionTimestamp"] == "now"  # type: ignore[index]
    assert store.upsert(claim("a", 5, deletionTimestamp="now"))  # the same version: fine


def test_a_late_answer_does_not_revive_a_deleted_object() -> None:
    store = Store("persistentvolumeclaims")
    store.upsert(claim("a", 1))
    store.delete(claim("a", 7))  # the watch: deleted at version 7
    assert not store.upsert(claim("a", 6, deletionTimestamp="now"))  # our delete's answer
    assert store.get("ns", "a") is None
    assert store.upsert(claim("a", 9))  # created again later: a newer version
    assert store.get("ns", "a") is not None


def test_a_relist_replaces_and_reports_what_went() -> None:
    store = Store("persistentvolumeclaims")
    store.upsert(claim("a", 1))
    store.upsert(claim("b", 2))
    gone = store.replace([claim("b", 3)], in_scope=lambda namespace: True)
    assert [g["metadata"]["name"] for g in gone] == ["a"]
    assert [c["metadata"]["name"] for c in store.for_pipeline("ns", "orders")] == ["b"]


def test_pods_keep_metadata_status_and_their_node_only() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [], "nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    assert trim("pods", pod) == {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }


def test_scope() -> None:
    assert Scope().watched_namespaces() == [None]
    assert Scope(("a", "b")).watched_namespaces() == ["a", "b"]
    globbed = Scope(("team-*",))
    assert globbed.watched_namespaces() == [None]
    assert globbed.contains("team-x") and not globbed.contains("other")


# ---- PersistentVolumes: one cluster-wide informer, routed by the clears waiting for them --


def volume(name: str, rv: int, phase: str = "Released", claim: str = "orders-storage-0") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "resourceVersion": str(rv),
            "uid": "u",
            "labels": {"topology": "x"},
            "annotations": {"pv.kubernetes.io/provisioned-by": "csi"},
            "finalizers": ["kubernetes.io/pv-protection"],
            "managedFields": [{"manager": "kcm"}],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/tmp/x"},
            "nodeAffinity": {"required": {}},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "claimRef": {"name": claim, "namespace": "ns", "uid": "c", "resourceVersion": "9"},
        },
        "status": {"phase": phase, "lastPhaseTransitionTime": "2026-01-01T00:00:00Z"},
    }


def clearing(name: str, rv: int, volumes: list[str]) -> Obj:
    records = [{"persistentVolume": v, "claim": f"{name}-storage-0"} for v in volumes]
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": str(rv)},
        "status": {"storage": {"status": "Clearing", "clearingVolumes": records}},
    }


class FakeResponse:
    """What the client returns with _preload_content=False: `.data` for a LIST, a stream of
    JSON lines for a WATCH."""

    def __init__(self, data: Obj | None = None, events: list[Obj] | None = None) -> None:
        self.data = json.dumps(data or {}).encode()
        self._lines = b"".join(json.dumps(e).encode() + b"\n" for e in events or [])

    def stream(self, **_: Any) -> list[bytes]:
        return [self._lines]

    def release_conn(self) -> None:
        pass


def test_a_volume_is_trimmed_to_what_the_volume_rules_read() -> None:
    kept = trim("persistentvolumes", volume("pv-1", 3))
    assert kept == {
        "metadata": {"name": "pv-1", "resourceVersion": "3"},
        "spec": {
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "claimRef": {"name": "orders-storage-0", "namespace": "ns"},
        },
        "status": {"phase": "Released", "lastPhaseTransitionTime": "2026-01-01T00:00:00Z"},
    }
    assert trim("persistentvolumes", kept) == kept  # a LIST's page is trimmed, then stored


def test_volume_events_wake_the_pipeline_whose_clear_waits_for_them() -> None:
    woken: list[Key] = []
    cache = Cache(client.ApiClient(), Scope(("ns",)), on_change=woken.append)
    cache.stores["pipelines"].upsert(clearing("orders", 1, ["pv-1"]))
    cache.stores["pipelines"].upsert(clearing("other", 1, []))
    watches = iter([[_event("MODIFIED", volume("pv-1", 5)), _event("MODIFIED", volume("pv-2", 6))]])
    informer = cache.volume_informer

    def list_volumes(**kwargs: Any) -> FakeResponse:
        if not kwargs.get("watch"):
            listed = [volume("pv-1", 3), volume("pv-2", 4)]
            return FakeResponse(data={"items": listed, "metadata": {"resourceVersion": "4"}})
        events = next(watches, None)
        if events is None:
            informer.stop()
            return FakeResponse(events=[])
        return FakeResponse(events=events)

    informer._list_call = list_volumes
    informer._run()  # LIST, one WATCH, then stopped
    assert informer.synced.is_set() and cache.watches_volumes
    assert woken == [("ns", "orders"), ("ns", "orders")]  # the LIST's pv-1, then its event
    assert cache.stores["persistentvolumes"].get("", "pv-1")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]

    # The clear ends: the index forgets it, and the PV's events wake nobody.
    cache.stores["pipelines"].upsert(clearing("orders", 2, []))
    assert cache.pipelines_waiting_for(volume("pv-1", 7)) == []
    # Two pipelines waiting for one PV name (a reused name): both are woken.
    cache.stores["pipelines"].upsert(clearing("orders", 3, ["pv-1"]))
    cache.stores["pipelines"].upsert(clearing("other", 3, ["pv-1"]))
    assert cache.pipelines_waiting_for(volume("pv-1", 7)) == [("ns", "orders"), ("ns", "other")]
    cache.stores["pipelines"].delete(clearing("other", 4, ["pv-1"]))
    assert cache.pipelines_waiting_for(volume("pv-1", 7)) == [("ns", "orders")]


def _event(kind: str, obj: Obj) -> Obj:
    return {"type": kind, "object": obj}


def test_only_a_seen_deletion_makes_a_volume_gone() -> None:
    cache = Cache(client.ApiClient(), Scope(), on_change=lambda key: None)
    store = cache.stores["persistentvolumes"]
    store.upsert(volume("present", 1))
    store.upsert(volume("deleted", 2))
    store.delete(volume("deleted", 3))
    found, unknown = cache.volumes(["present", "deleted", "never-seen"])
    assert list(found) == ["present"]
    # Never seen: deleted before the operator started, or not listed yet; the caller asks
    # the API server rather than call it gone.
    assert unknown == ["never-seen"]


def test_without_rights_on_volumes_the_cache_says_so_and_vouches_for_none() -> None:
    cache = Cache(client.ApiClient(), Scope(("ns",)), on_change=lambda key: None)

    def forbidden(**_: Any) -> FakeResponse:
        raise ApiException(status=403, reason="Forbidden")

    cache.volume_informer._list_call = forbidden
    cache.volume_informer._run()  # returns: an optional informer does not retry a 403
    assert cache.volume_informer.synced.is_set() and not cache.watches_volumes
    assert cache.volumes(["pv-1"]) == ({}, ["pv-1"])
