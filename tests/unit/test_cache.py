"""The cache's store: what a watch event or our own write's answer may change."""

from __future__ import annotations

from typing import Any

from sluice.cache import Scope, Store, trim
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


def test_pods_keep_metadata_and_status_only() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"phase": "Running"}}
    assert trim("pods", pod) == {"metadata": {"name": "p"}, "status": {"phase": "Running"}}


def test_scope() -> None:
    assert Scope().watched_namespaces() == [None]
    assert Scope(("a", "b")).watched_namespaces() == ["a", "b"]
    globbed = Scope(("team-*",))
    assert globbed.watched_namespaces() == [None]
    assert globbed.contains("team-x") and not globbed.contains("other")
