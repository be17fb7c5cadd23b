"""The review cache and the 401/403 answers, with an in-process reviewer (no cluster)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from sluice.restapi.auth import Authorizer, TtlCache, User
from sluice.restapi.decide import ApiError

T = TypeVar("T")


class FakeReviewer:
    def __init__(self) -> None:
        self.token_reviews = 0
        self.access_reviews = 0
        self.lock = threading.Lock()

    def review_token(self, token: str) -> User | None:
        with self.lock:
            self.token_reviews += 1
        return User("system:serviceaccount:ns:reader") if token == "good" else None

    def allowed(self, user: User, verb: str, namespace: str, name: str | None) -> bool:
        with self.lock:
            self.access_reviews += 1
        return verb in ("get", "list")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_missing_malformed_and_bad_tokens_are_401() -> None:
    authorizer = Authorizer(FakeReviewer(), "ns")
    for header in (None, "", "Basic abc", "Bearer ", "Bearer bad"):
        with pytest.raises(ApiError) as raised:
            run(authorizer.authenticate(header))
        assert raised.value.status == 401
        assert raised.value.error_code == "Unauthorized"


def test_denied_verb_is_403_with_the_details() -> None:
    authorizer = Authorizer(FakeReviewer(), "ns")

    async def check() -> None:
        user, digest = await authorizer.authenticate("Bearer good")
        await authorizer.authorize(user, digest, "get", "orders")
        with pytest.raises(ApiError) as raised:
            await authorizer.authorize(user, digest, "patch", "orders")
        assert raised.value.status == 403
        assert raised.value.details["verb"] == "patch"
        assert raised.value.details["namespace"] == "ns"

    run(check())


def test_reviews_are_cached_and_concurrent_misses_share_one_review() -> None:
    reviewer = FakeReviewer()
    authorizer = Authorizer(reviewer, "ns")

    async def burst() -> None:
        users = await asyncio.gather(*(authorizer.authenticate("Bearer good") for _ in range(50)))
        user, digest = users[0]
        await asyncio.gather(*(authorizer.authorize(user, digest, "get", "a") for _ in range(50)))

    run(burst())
    assert (reviewer.token_reviews, reviewer.access_reviews) == (1, 1)


def test_entries_expire_after_the_ttl() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(ttl=10, clock=lambda: now[0])
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    async def scenario() -> list[int]:
        first = await cache.get("k", compute)
        now[0] = 9.9
        second = await cache.get("k", compute)
        now[0] = 10.0
        third = await cache.get("k", compute)
        return [first, second, third]

    assert run(scenario()) == [1, 1, 2]


def test_failures_are_not_cached_and_size_is_bounded() -> None:
    cache: TtlCache[int] = TtlCache(ttl=10, max_entries=3)

    async def boom() -> int:
        raise RuntimeError("API server down")

    async def one() -> int:
        return 1

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await cache.get("k", boom)
        assert len(cache) == 0
        for key in range(10):
            await cache.get(key, one)
        assert len(cache) <= 3

    run(scenario())
