"""kopf wiring, kept thin: kopf runs the process (start-up, clean-up, signals, liveness);
the watch-fed cache (cache.py) turns watch events into work-queue keys; workers reconcile
them from the cache.

Pipelines and the objects they own (StatefulSets, Services, pods, claims) are watched; an
event on any of them enqueues its pipeline. PersistentVolumes are watched too; an event on
one enqueues the pipeline whose clear waits for it. No kopf progress annotations are written, so a
settled pipeline causes no API writes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client

from sluice import metrics
from sluice.cache import Cache, Scope
from sluice.controller import Controller, StaleObservation
from sluice.core.decide import VOLUME_RECHECK_MAX_DELAY
from sluice.events import EventRecorder
from sluice.kube import Kube, load_config
from sluice.ratelimit import RateLimitedApiClient, TokenBucket
from sluice.transient import REPORTED, RetryForever, transient_reason
from sluice.usage import VolumeUsagePoller, VolumeUsageStore
from sluice.workqueue import WorkQueue

log = logging.getLogger("sluice.handlers")


@dataclass
class RunOptions:
    """`sluice run`'s flags, set by cli.py before kopf starts."""

    namespaces: tuple[str, ...] = ()  # none: all namespaces
    workers: int = 16
    kube_api_qps: float = 100.0
    kube_api_burst: int = 200
    # With PVs watched, a clear waiting for a volume is woken by its events; this look is
    # only a safety net (and notices the deletion deadline of core/volumes.py passing).
    volume_recheck_seconds: float = 30.0
    # Storage autoscaling: how often the kubelets' volume usage is read (usage.py).
    volume_usage_seconds: float = 60.0


OPTIONS = RunOptions()


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # Events come from the controller, one per transition
    # No kopf resource handlers: nothing for kopf to discover, so no watch of CRDs (nor of
    # namespaces with -n). Its one discovery scan at start-up remains.
    settings.scanning.disabled = True
    settings.networking.error_backoffs = RetryForever()  # an outage never stops the operator
    loop = asyncio.get_running_loop()
    memo.queue = queue = WorkQueue()
    load_config()  # sets the default configuration both clients copy
    scope = Scope(OPTIONS.namespaces)
    # Watches hold their connections for minutes: their own client and pool, not limited
    # (a watch is one request); everything else shares the token bucket.
    watching = client.Configuration.get_default_copy()
    # One per informer: each kind per watched namespace, and the PersistentVolumes.
    watching.connection_pool_maxsize = len(Cache.KINDS) * len(scope.watched_namespaces()) + 1

    def enqueue(key: tuple[str, str]) -> None:  # called from the informer threads
        loop.call_soon_threadsafe(queue.add, key)

    memo.cache = cache = Cache(client.ApiClient(watching), scope, on_change=enqueue)
    requests = client.Configuration.get_default_copy()
    requests.connection_pool_maxsize = OPTIONS.workers + 2
    bucket = TokenBucket(OPTIONS.kube_api_qps, OPTIONS.kube_api_burst)
    limited = RateLimitedApiClient(bucket, requests)
    usage = VolumeUsageStore()
    kube = Kube(limited, cache, usage)
    memo.events = EventRecorder(kube.emit_event)
    memo.controller = Controller(kube, memo.events)
    memo.executor = ThreadPoolExecutor(OPTIONS.workers, thread_name_prefix="reconcile")
    cache.start()
    memo.workers = [
        asyncio.create_task(_work(queue, memo.controller, cache, memo.executor))
        for _ in range(OPTIONS.workers)
    ]
    memo.workers.append(asyncio.create_task(_say_if_volumes_unwatched(cache)))
    poller = VolumeUsagePoller(limited, cache, usage, enqueue)
    memo.workers.append(asyncio.create_task(_poll_volume_usage(poller, cache, memo.executor)))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("workers", []):
        task.cancel()
    if "cache" in memo:
        memo.cache.stop()
    if "events" in memo:
        await asyncio.to_thread(memo.events.flush)
    # Stopping for any reason (e.g. kopf's own SIGTERM handler): set the stop flag we were
    # started with, or kopf waits 5 s for the task that watches it before it returns.
    stopping = memo.get("stopping")
    if stopping is not None:
        stopping.set()


async def _say_if_volumes_unwatched(cache: Cache) -> None:
    """One line at start-up when the operator may not list and watch PersistentVolumes."""
    while not cache.synced:
        await asyncio.sleep(0.05)
    if not cache.watches_volumes:
        log.warning(
            "PersistentVolumes cannot be watched (list/watch on persistentvolumes is not "
            "granted): a clear reads its volumes by name (get) and looks again every %.0fs "
            "at most while a provisioner deletes them, instead of following their events",
            VOLUME_RECHECK_MAX_DELAY,
        )


async def _poll_volume_usage(
    poller: VolumeUsagePoller, cache: Cache, executor: ThreadPoolExecutor
) -> None:
    """Storage autoscaling's readings, every --volume-usage-seconds (usage.py)."""
    loop = asyncio.get_running_loop()
    while not cache.synced:
        await asyncio.sleep(0.05)
    while True:
        try:
            await loop.run_in_executor(executor, poller.poll)
        except Exception:  # never stop polling: the next round may succeed
            log.exception("reading volume usage failed")
        await asyncio.sleep(OPTIONS.volume_usage_seconds)


async def _work(
    queue: WorkQueue, controller: Controller, cache: Cache, executor: ThreadPoolExecutor
) -> None:
    loop = asyncio.get_running_loop()
    while not cache.synced:  # never decide from a half-filled cache (see cache.py)
        await asyncio.sleep(0.05)
    while True:
        key = await queue.get()
        try:
            outcome = await loop.run_in_executor(executor, controller.reconcile, *key)
        except StaleObservation:
            queue.add(key)  # observe again right away
        except REPORTED as error:
            # The API server refused, or could not be reached: one line, no traceback.
            metrics.RECONCILE_ERRORS.inc()
            delay = queue.retry_later(key)
            log.warning(
                "reconcile %s/%s failed: %s; retrying in %.1fs",
                *key,
                transient_reason(error),
                delay,
                extra={"namespace": key[0], "pipeline": key[1]},
            )
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            delay = queue.retry_later(key)
            log.exception(
                "reconcile %s/%s failed; retrying in %.1fs",
                *key,
                delay,
                extra={"namespace": key[0], "pipeline": key[1]},
            )
        else:
            if outcome.wrote_status:
                queue.add(key)  # status written and already in the cache: next step now
            if outcome.recheck and cache.watches_volumes and not outcome.recheck_unwatched:
                # Waiting on a volume's deletion: its watch event wakes this key; a slow
                # look anyway, for what no event brings (the deletion's deadline passing).
                queue.succeeded(key)
                queue.add_after(key, OPTIONS.volume_recheck_seconds)
            elif outcome.recheck:
                # PVs are not watched here, or it waits on what no watch reports (a user's
                # VolumeSnapshot): look again, backing off (capped).
                queue.retry_later(key, max_delay=outcome.recheck_max_delay)
            else:
                queue.succeeded(key)
            if outcome.requeue_after is not None:
                # The next snapshot's expiry. A work-queue timer, not kopf.timer/daemon:
                # those stop with their object, and a deleted Pipeline's snapshots must
                # still expire on time (rule 18).
                queue.add_after(key, outcome.requeue_after)
        finally:
            queue.done(key)
