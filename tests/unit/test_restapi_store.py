"""The REST API reads from its watch-fed cache once the first LIST is in, and live at once
while the API server refuses that LIST (missing RBAC, the CRD not installed yet): the
refusal then answers the request, instead of every request first waiting for a sync that
cannot come."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client
from sluice.restapi import store as store_module
from sluice.restapi.store import PipelineStore


def _store() -> PipelineStore:
    return PipelineStore(client.ApiClient(), "analytics")  # never started: no request made


def test_reads_go_live_at_once_while_the_list_is_refused() -> None:
    store = _store()
    store.informer.refused.set()
    # A sync that comes later is not waited for: this read is live (False).
    later = threading.Timer(0.5, store.informer.synced.set)
    later.start()
    try:
        assert store._cached() is False
    finally:
        later.cancel()


def test_reads_come_from_the_cache_once_it_is_synced() -> None:
    store = _store()
    store.informer.refused.set()  # refused once, then allowed: the LIST went through
    store.informer.synced.set()
    assert store._cached() is True


def test_without_a_sync_or_a_refusal_it_waits_then_reads_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "SYNC_TIMEOUT", 0.2)
    assert _store()._cached() is False
