"""A work queue of pipeline keys, in the manner of client-go's workqueue.

A key is processed by one worker at a time; a key added while it is being
processed is processed once more afterwards; failures come back with
exponential backoff. Nothing is polled: keys arrive from watch events.
"""

from __future__ import annotations

import asyncio

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._later: dict[Key, asyncio.TimerHandle] = {}  # add_after's: one per key
        self._base_delay, self._max_delay = base_delay, max_delay

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def succeeded(self, key: Key) -> None:
        self._failures.pop(key, None)

    def retry_later(self, key: Key, max_delay: float | None = None) -> float:
        """Schedule the key again after its backoff (at most `max_delay`, else the queue's
        maximum); returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        cap = self._max_delay if max_delay is None else min(max_delay, self._max_delay)
        delay = float(min(self._base_delay * 2.0 ** min(failures, 30), cap))
        asyncio.get_running_loop().call_later(delay, self.add, key)
        return delay

    def add_after(self, key: Key, delay: float) -> None:
        """Add the key after `delay` seconds, unless it is already due to be added sooner
        this way (one pending timer per key, the earliest, as client-go's delaying queue)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._later.get(key)
        if pending is not None and not pending.cancelled() and pending.when() <= when:
            return
        if pending is not None:
            pending.cancel()
        self._later[key] = loop.call_at(when, self._add_later, key)

    def _add_later(self, key: Key) -> None:
        self._later.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued)
