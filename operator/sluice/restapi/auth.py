"""Who is calling, and may they: Kubernetes decides (TokenReview, SubjectAccessReview).

Review results are cached for a short TTL keyed by a hash of the token, like
kube-apiserver's webhook token cache: a burst of requests with one token costs one
review, and a revoked token or role binding takes effect within the TTL. Concurrent
misses for one key share a single in-flight review.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from kubernetes import client

from sluice.api import v1alpha1 as api
from sluice.restapi.decide import ApiError

DEFAULT_TTL = 10.0
MAX_ENTRIES = 10_000  # bounded: a flood of garbage tokens must not grow memory forever

V = TypeVar("V")


@dataclass(frozen=True)
class User:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class Reviewer(Protocol):
    """The two questions asked of Kubernetes (blocking; run in a thread)."""

    def review_token(self, token: str) -> User | None: ...

    def allowed(self, user: User, verb: str, namespace: str, name: str | None) -> bool: ...


class KubeReviewer:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.authn = client.AuthenticationV1Api(api_client)
        self.authz = client.AuthorizationV1Api(api_client)

    def review_token(self, token: str) -> User | None:
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        review: Any = self.authn.create_token_review(body)
        status = review.status
        if not status or not status.authenticated or not status.user:
            return None
        info = status.user
        extra = tuple(sorted((k, tuple(v)) for k, v in (info.extra or {}).items()))
        return User(info.username or "", info.uid or "", tuple(info.groups or ()), extra)

    def allowed(self, user: User, verb: str, namespace: str, name: str | None) -> bool:
        attributes: dict[str, Any] = {
            "namespace": namespace,
            "verb": verb,
            "group": api.GROUP,
            "resource": api.PLURAL,
        }
        if name:
            attributes["name"] = name
        body: Any = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.username,
                "uid": user.uid or None,
                "groups": list(user.groups),
                "extra": {k: list(v) for k, v in user.extra} or None,
                "resourceAttributes": attributes,
            },
        }
        review: Any = self.authz.create_subject_access_review(body)
        return bool(review.status and review.status.allowed)


@dataclass
class _Entry(Generic[V]):
    expires: float
    value: asyncio.Future[V]


@dataclass
class TtlCache(Generic[V]):
    """Results (and in-flight computations) for `ttl` seconds; failures are not kept."""

    ttl: float = DEFAULT_TTL
    clock: Callable[[], float] = time.monotonic
    max_entries: int = MAX_ENTRIES
    _entries: dict[Any, _Entry[V]] = field(default_factory=dict)

    async def get(self, key: Any, compute: Callable[[], Awaitable[V]]) -> V:
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            if len(self._entries) >= self.max_entries:
                self._evict(now)
            future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            entry = _Entry(now + self.ttl, future)
            self._entries[key] = entry
            try:
                future.set_result(await compute())
            except BaseException as error:
                self._entries.pop(key, None)
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)
                    future.exception()  # retrieved here, so asyncio does not log it as lost
                raise
        return await asyncio.shield(entry.value)

    def _evict(self, now: float) -> None:
        live = {k: e for k, e in self._entries.items() if e.expires > now}
        if len(live) >= self.max_entries:
            live = {}  # all live: start over rather than track recency
        self._entries = live

    def __len__(self) -> int:
        return len(self._entries)


def _hash(token: str) -> str:
    # The cache never holds a token itself, only its digest.
    return hashlib.sha256(token.encode()).hexdigest()


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, {})


class Authorizer:
    """Bearer token -> User (401), then User x verb -> allowed (403), both cached."""

    def __init__(self, reviewer: Reviewer, namespace: str, ttl: float = DEFAULT_TTL) -> None:
        self.reviewer = reviewer
        self.namespace = namespace
        self.users: TtlCache[User | None] = TtlCache(ttl)
        self.decisions: TtlCache[bool] = TtlCache(ttl)

    async def authenticate(self, header: str | None) -> tuple[User, str]:
        if not header:
            raise unauthorized("Unauthorized: no credential provided (Authorization: Bearer)")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Unauthorized: expected 'Authorization: Bearer <token>'")
        digest = _hash(token)
        user = await self.users.get(
            digest, lambda: asyncio.to_thread(self.reviewer.review_token, token)
        )
        if user is None:
            raise unauthorized("Unauthorized: the token is invalid or expired")
        return user, digest

    async def authorize(self, user: User, digest: str, verb: str, name: str | None) -> None:
        allowed = await self.decisions.get(
            (digest, verb, name),
            lambda: asyncio.to_thread(self.reviewer.allowed, user, verb, self.namespace, name),
        )
        if not allowed:
            target = f"pipelines.{api.GROUP} '{name}'" if name else f"pipelines.{api.GROUP}"
            raise ApiError(
                403,
                "Forbidden",
                f"User '{user.username}' cannot {verb} {target} in namespace '{self.namespace}'",
                {
                    "user": user.username,
                    "verb": verb,
                    "group": api.GROUP,
                    "resource": api.PLURAL,
                    "namespace": self.namespace,
                    "name": name,
                },
            )


class NoAuthorizer(Authorizer):
    """`--authentication none`: everyone is allowed everything (local measurement only)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    async def authenticate(self, header: str | None) -> tuple[User, str]:
        return User("system:anonymous"), ""

    async def authorize(self, user: User, digest: str, verb: str, name: str | None) -> None:
        return None
