"""kopf wiring, kept thin: watch events become work-queue keys; workers reconcile them.

Pipelines and the objects they own (StatefulSets, pods, claims) are watched; an
event on any of them enqueues its pipeline. kopf is used for event-driven handlers
only (no kopf progress annotations), so a settled pipeline causes no API writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from sluice import metrics
from sluice.api import v1alpha1 as api
from sluice.controller import Controller, StaleObservation
from sluice.core.labels import PIPELINE_LABEL
from sluice.kube import Kube, load_config
from sluice.transient import REPORTED, RetryForever, transient_reason
from sluice.workqueue import WorkQueue

log = logging.getLogger("sluice.handlers")
WORKERS = 4


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # Events come from the controller, one per transition
    settings.watching.server_timeout = 300
    # A watch that stays open but delivers nothing is dropped and resumed after this long
    # (the API server sends a bookmark about every minute; kopf's default, stated here).
    settings.watching.inactivity_timeout = 70
    settings.networking.error_backoffs = RetryForever()  # an outage never stops the operator
    memo.queue = WorkQueue()
    memo.controller = Controller(Kube(load_config()))
    memo.workers = [asyncio.create_task(_work(memo.queue, memo.controller)) for _ in range(WORKERS)]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("workers", []):
        task.cancel()
    # Stopping for any reason (e.g. kopf's own SIGTERM handler): set the stop flag we were
    # started with, or kopf waits 5 s for the task that watches it before it returns.
    stopping = memo.get("stopping")
    if stopping is not None:
        stopping.set()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def pipeline_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    memo.queue.add((namespace, name))


@kopf.on.event("apps/v1", "statefulsets", labels={PIPELINE_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "pods", labels={PIPELINE_LABEL: kopf.PRESENT})
@kopf.on.event("v1", "persistentvolumeclaims", labels={PIPELINE_LABEL: kopf.PRESENT})
def owned_object_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    memo.queue.add((namespace, labels[PIPELINE_LABEL]))


async def _work(queue: WorkQueue, controller: Controller) -> None:
    while True:
        key = await queue.get()
        try:
            recheck = await asyncio.to_thread(controller.reconcile, *key)
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
            if recheck:
                queue.retry_later(key)  # waiting on a volume's deletion: look again, backing off
            else:
                queue.succeeded(key)
        finally:
            queue.done(key)
