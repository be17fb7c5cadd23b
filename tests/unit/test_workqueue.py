"""The work queue's backoff: exponential per key, capped by the queue or by the caller."""

from __future__ import annotations

import asyncio

from sluice.workqueue import WorkQueue


def test_backoff_doubles_up_to_the_queues_maximum_or_a_callers_cap() -> None:
    async def delays() -> tuple[list[float], list[float]]:
        queue = WorkQueue(base_delay=0.5, max_delay=60.0)
        full = [queue.retry_later(("ns", "a")) for _ in range(9)]
        capped = [queue.retry_later(("ns", "b"), max_delay=2.0) for _ in range(5)]
        return full, capped

    full, capped = asyncio.run(delays())
    assert full == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert capped == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_add_after_keeps_one_timer_per_key_the_earliest() -> None:
    async def added() -> tuple[list[tuple[str, str]], int]:
        queue = WorkQueue()
        queue.add_after(("ns", "a"), 0.05)
        queue.add_after(("ns", "a"), 30.0)  # later: the pending sooner one stands
        queue.add_after(("ns", "b"), 30.0)
        queue.add_after(("ns", "b"), 0.05)  # sooner: replaces the later one
        # Both arrive on their sooner timers (far before 30 s), and no timer is left behind.
        keys = [await asyncio.wait_for(queue.get(), timeout=10) for _ in range(2)]
        return keys, len(queue._later)

    keys, timers_left = asyncio.run(added())
    assert sorted(keys) == [("ns", "a"), ("ns", "b")]
    assert timers_left == 0
