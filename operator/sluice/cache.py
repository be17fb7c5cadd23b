"""A watch-fed cache of what the operator observes, in the manner of client-go's informers.

One LIST+WATCH per kind (pipelines; and the StatefulSets, Services, pods and PVCs labelled
`sluice.dev/pipeline`) keeps a store current; `observe()` builds the same `Observed` that a
fresh read would, with no API request. Each event also names the pipeline it concerns, so
the work queue is fed from here. PersistentVolumes carry no label of ours: one cluster-wide
informer keeps them all, trimmed to what `core/volumes.py` reads, and an index from PV name
to the pipelines whose clear recorded it (`status.storage.clearingVolumes`) routes each PV
event to the clear waiting for it. The controller waits for `synced` (every first LIST
complete) before the first reconcile: a reconcile on a half-filled store would see no claim
and create a second one, or see no claim while clearing and write Cleared.

Why own informers rather than kopf's watching (kopf 1.45.2, read in its source): kopf does
say when a list is complete (its watch yields a LISTED bookmark, and `@kopf.index` indices
are filled before resource handlers run), so that is not the reason. These are:
- the answer to each of the operator's own writes goes into the store at once (`remember`),
  so the next step follows without waiting for the watch's echo; kopf's indices are fed by
  events only;
- a re-list replaces the store and reports what went (`Store.replace`), so an object
  deleted while no watch ran is noticed; kopf's re-list yields the listed objects only;
- a watch ERROR other than 410 is retried with backoff; kopf raises it (WatchingError);
- start-up: with 200 / 1,000 pipelines present, kopf (default settings) filled an
  `@kopf.index` of them in 1.7 s / 29.7 s, these informers in 0.6 s / 0.7 s
  (tests/bench/bench_kopf_start.py, a loaded 2-core machine): kopf's cost grows faster
  than the number of objects, these stay near one LIST.

Stored objects are trimmed to what decisions read (no managedFields, no last-applied
annotation, no pod spec; of a PV, a dozen fields), so memory grows with the number of
objects, not their history. An event older than what is stored is ignored.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sluice import metrics
from sluice.api import v1alpha1 as api
from sluice.core.labels import (
    PIPELINE_LABEL,
    PIPELINE_UID_LABEL,
    SNAPSHOT_API_GROUP,
    SNAPSHOT_API_VERSION,
)
from sluice.core.observed import Observed

log = logging.getLogger("sluice.cache")

Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]
OnChange = Callable[[Key], None]
Indexer = Callable[[Obj], Iterable[str]]  # an object's values in one index

PAGE_SIZE = 500
TOMBSTONE_SECONDS = 300.0  # how long a deletion outranks a late answer to our own write
WATCH_SECONDS = 300  # the API server ends each watch after this; it is resumed from its RV
# A watch that stays open but delivers nothing (not even the bookmark the API server sends
# about every minute) is dropped after this long and resumed from its resourceVersion.
WATCH_INACTIVITY_SECONDS = 70
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CLUSTER_SCOPED = frozenset({"persistentvolumes"})
CLEARING_VOLUME = "clearingVolume"
SNAPSHOTS = "volumesnapshots"


def _resource_version(obj: Obj) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; etcd's are integers, anything else is never "older"
        return 0


def _slim_metadata(meta: Obj) -> Obj:
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return meta


def _pick(obj: Obj | None, fields: Iterable[str]) -> Obj:
    return {f: obj[f] for f in fields if obj and f in obj}


def _trim_volume(pv: Obj) -> Obj:
    """What `core/volumes.py` reads of a PersistentVolume (`record` and `judge`), and what
    the store needs (name, resourceVersion): the PVs of the whole cluster are kept, most of
    them not Sluice's, so nothing else."""
    spec = pv.get("spec") or {}
    kept: Obj = {
        "metadata": _pick(pv.get("metadata"), ("name", "resourceVersion", "deletionTimestamp")),
        "spec": _pick(spec, ("persistentVolumeReclaimPolicy", "storageClassName")),
        "status": _pick(
            pv.get("status"), ("phase", "message", "reason", "lastPhaseTransitionTime")
        ),
    }
    if spec.get("claimRef"):
        kept["spec"]["claimRef"] = _pick(spec["claimRef"], ("name", "namespace"))
    return kept


def trim(kind: str, obj: Obj) -> Obj:
    """Keep what `core/` reads of each kind."""
    if kind == "persistentvolumes":
        return _trim_volume(obj)
    kept = {"metadata": _slim_metadata(obj.get("metadata") or {})}
    if kind == "pods":
        kept["status"] = obj.get("status") or {}
        # Its node: autoscaling reads the volume usage there (usage.py).
        kept["spec"] = _pick(obj.get("spec"), ("nodeName",))
    elif kind == "services":
        pass  # only its existence matters
    elif kind == SNAPSHOTS:
        kept["spec"] = obj.get("spec") or {}
        kept["status"] = _pick(
            obj.get("status"),
            (
                "readyToUse",
                "restoreSize",
                "error",
                "boundVolumeSnapshotContentName",
                "creationTime",
            ),
        )
    else:
        for part in ("apiVersion", "kind", "spec", "status"):
            if part in obj:
                kept[part] = obj[part]
    return kept


class Store:
    """Objects of one kind by (namespace, name), indexed by the pipeline they belong to.

    Written by one informer thread (and by `remember` from workers), read by workers;
    objects are replaced, never mutated, so readers may keep what they got.
    """

    def __init__(self, kind: str, indexers: dict[str, Indexer] | None = None) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._objects: dict[Key, Obj] = {}
        self._by_pipeline: dict[Key, dict[str, Obj]] = {}
        # Further indices, as client-go's Indexers: index name -> value -> objects' keys.
        self._indexers = indexers or {}
        self._indices: dict[str, dict[str, set[Key]]] = {name: {} for name in self._indexers}
        # Deleted keys -> (deletion's resourceVersion, when): the answer to our own write
        # may reach the store after the watch reported the deletion; it must not revive it.
        self._tombstones: dict[Key, tuple[int, float]] = {}
        self._prune_at = 1000

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._objects.get((namespace, name))

    def deleted(self, namespace: str, name: str) -> bool:
        """Whether a deletion of this object was seen (recently: see TOMBSTONE_SECONDS) and
        nothing newer since."""
        return (namespace, name) in self._tombstones and (namespace, name) not in self._objects

    def keys_by_index(self, index: str, value: str) -> list[Key]:
        with self._lock:
            return sorted(self._indices[index].get(value, ()))

    def for_pipeline(self, namespace: str, pipeline: str) -> list[Obj]:
        with self._lock:
            return list(self._by_pipeline.get((namespace, pipeline), {}).values())

    def items(self, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            objs = list(self._objects.values())
        return [o for o in objs if namespace is None or o["metadata"]["namespace"] == namespace]

    def upsert(self, obj: Obj, *, only_newer: bool = True) -> bool:
        """Store `obj` unless what is stored is newer (our own write's response got here
        before the watch event); True when stored."""
        obj = trim(self.kind, obj)
        key = _key(obj)
        version = _resource_version(obj)
        with self._lock:
            old = self._objects.get(key)
            if only_newer and old is not None and _resource_version(old) > version:
                return False
            tombstone = self._tombstones.pop(key, None)
            if only_newer and tombstone is not None and tombstone[0] >= version:
                self._tombstones[key] = tombstone
                return False
            if old is not None:
                self._unindex(key, old)
            self._objects[key] = obj
            owner = pipeline_of(self.kind, obj)
            if owner is not None:
                self._by_pipeline.setdefault((key[0], owner), {})[key[1]] = obj
            for index, values_of in self._indexers.items():
                for value in values_of(obj):
                    self._indices[index].setdefault(value, set()).add(key)
        return True

    def delete(self, obj: Obj) -> None:
        key = _key(obj)
        now = time.monotonic()
        with self._lock:
            old = self._objects.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            self._tombstones[key] = (_resource_version(obj), now)
            if len(self._tombstones) > self._prune_at:  # amortized: the bound doubles
                horizon = now - TOMBSTONE_SECONDS
                self._tombstones = {k: t for k, t in self._tombstones.items() if t[1] > horizon}
                self._prune_at = max(1000, 2 * len(self._tombstones))

    def replace(self, objs: Iterable[Obj], in_scope: Callable[[str], bool]) -> list[Obj]:
        """A fresh LIST's content replaces the store's (within scope); returns what went."""
        fresh = {_key(o): o for o in objs}
        with self._lock:
            gone = [o for k, o in self._objects.items() if in_scope(k[0]) and k not in fresh]
        for obj in gone:
            self.delete(obj)
        for obj in fresh.values():
            self.upsert(obj, only_newer=False)
        return gone

    def _unindex(self, key: Key, old: Obj) -> None:
        for index, values_of in self._indexers.items():
            for value in values_of(old):
                keys = self._indices[index].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[index][value]
        owner = pipeline_of(self.kind, old)
        if owner is None:
            return
        siblings = self._by_pipeline.get((key[0], owner))
        if siblings is not None:
            siblings.pop(key[1], None)
            if not siblings:
                del self._by_pipeline[(key[0], owner)]


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def clearing_volumes(pipeline: Obj) -> list[str]:
    """The PVs a pipeline's clear in progress waits for (`status.storage.clearingVolumes`)."""
    storage = (pipeline.get("status") or {}).get("storage") or {}
    records = storage.get("clearingVolumes") or []
    return [str(r["persistentVolume"]) for r in records if r.get("persistentVolume")]


def pipeline_of(kind: str, obj: Obj) -> str | None:
    """The name of the pipeline an object's events concern."""
    if kind == "pipelines":
        return str(obj["metadata"]["name"])
    labels = obj["metadata"].get("labels") or {}
    owner = labels.get(PIPELINE_LABEL)
    return str(owner) if owner is not None else None


@dataclass(frozen=True)
class Scope:
    """Which namespaces the operator serves: all, or names and glob patterns (as `-n`)."""

    patterns: tuple[str, ...] = ()

    @property
    def clusterwide(self) -> bool:
        return not self.patterns or any(_is_glob(p) for p in self.patterns)

    def watched_namespaces(self) -> list[str | None]:
        """None: one cluster-wide watch (filtered by `contains` when patterns are given)."""
        return [None] if self.clusterwide else list(self.patterns)

    def contains(self, namespace: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(namespace, p) for p in self.patterns)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class Informer:
    """LIST, then WATCH from the list's resourceVersion; on 410 Gone, LIST again. Runs in
    its own daemon thread; `synced` is set after the first complete LIST.

    Each event goes to `on_change` once per pipeline `route` names for the object (default:
    the pipeline it is labelled with). An `optional` informer whose first LIST is forbidden
    says so once, counts as synced and stops (`forbidden` is set): the caller falls back."""

    def __init__(
        self,
        store: Store,
        list_call: Callable[..., Any],
        namespace: str | None,
        scope: Scope,
        selector: str | None,
        on_change: OnChange,
        route: Callable[[Obj], Iterable[Key]] | None = None,
        optional: bool = False,
    ) -> None:
        self.store, self.namespace, self.scope = store, namespace, scope
        self._list_call, self._selector, self._on_change = list_call, selector, on_change
        self._route = route or functools.partial(_labelled_pipeline, store.kind)
        self.optional = optional
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.forbidden = threading.Event()
        # Its LIST was refused (403, 404) and none has succeeded yet: waiting for it to sync
        # is waiting for somebody to change RBAC or install a CRD.
        self.refused = threading.Event()
        where = namespace or "all namespaces"
        self.name = f"{store.kind} in {where}"
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _in_scope(self, namespace: str) -> bool:
        if self.store.kind in CLUSTER_SCOPED:
            return True
        if self.namespace is not None:
            return namespace == self.namespace
        return self.scope.contains(namespace)

    def _call(self, **kwargs: Any) -> Any:
        if self._selector:
            kwargs["label_selector"] = self._selector
        return self._list_call(_preload_content=False, **kwargs)

    def _run(self) -> None:
        delay = 0.5
        resource_version: str | None = None
        while not self.stopped.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                    delay = 0.5
                resource_version = self._watch(resource_version)
            except ApiException as error:
                if error.status == 410:
                    resource_version = None  # too old: list again
                    continue
                # 403: not allowed; 404: the kind does not exist (a CRD not installed).
                if error.status in (403, 404) and self.optional and not self.synced.is_set():
                    log.debug(  # the caller says what it does instead
                        "cannot list and watch %s (%s %s)",
                        self.name,
                        error.status,
                        error.reason,
                    )
                    self.forbidden.set()
                    self.synced.set()
                    return
                if error.status in (403, 404) and not self.synced.is_set():
                    self.refused.set()
                log.warning(
                    "%s: %s %s; retrying in %.1fs", self.name, error.status, error.reason, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as error:  # connection reset, API server restarting, ...
                log.warning("%s: %s; retrying in %.1fs", self.name, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _list(self) -> str:
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = json.loads(
                self._call(limit=PAGE_SIZE, **({"_continue": token} if token else {})).data
            )
            # Trimmed page by page: a LIST of the cluster's PVs is never held whole.
            kind = self.store.kind
            items.extend(trim(kind, o) for o in page["items"] if self._in_scope(_key(o)[0]))
            del page["items"]
            token = page["metadata"].get("continue")
            if not token:
                break
        gone = self.store.replace(items, self._in_scope)
        for obj in (*items, *gone):
            self._notify(obj)
        self.synced.set()
        log.debug("%s: listed %d", self.name, len(items))
        return str(page["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> str:
        response = self._call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(10, WATCH_INACTIVITY_SECONDS),
        )
        try:
            for event in _events(response):
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    status = int(obj.get("code") or 500)
                    raise ApiException(status=status, reason=obj.get("message"))
                resource_version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK" or not self._in_scope(_key(obj)[0]):
                    continue
                if kind == "DELETED":
                    self.store.delete(obj)
                elif not self.store.upsert(obj):
                    continue  # older than our own write's response, already stored
                self._notify(obj)
                if self.stopped.is_set():
                    break
        finally:
            response.release_conn()
        return resource_version

    def _notify(self, obj: Obj) -> None:
        for key in self._route(obj):
            self._on_change(key)


def _labelled_pipeline(kind: str, obj: Obj) -> list[Key]:
    owner = pipeline_of(kind, obj)
    return [] if owner is None else [(_key(obj)[0], owner)]


def _events(response: Any) -> Iterator[Obj]:
    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
        if line:
            yield json.loads(line)


class Cache:
    """The operator's view: one store per kind, each kept by an informer per watched
    namespace (or one cluster-wide); PersistentVolumes by one cluster-wide informer."""

    KINDS = ("pipelines", "statefulsets", "services", "pods", "persistentvolumeclaims")

    def __init__(self, api_client: client.ApiClient, scope: Scope, on_change: OnChange) -> None:
        self.scope = scope
        self.stores = {kind: Store(kind) for kind in self.KINDS}
        self.stores["pipelines"] = Store("pipelines", {CLEARING_VOLUME: clearing_volumes})
        self.stores["persistentvolumes"] = Store("persistentvolumes")
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        calls: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
            "pipelines": (
                functools.partial(
                    custom.list_cluster_custom_object, api.GROUP, api.VERSION, api.PLURAL
                ),
                functools.partial(custom.list_namespaced_custom_object, api.GROUP, api.VERSION),
            ),
            "statefulsets": (
                apps.list_stateful_set_for_all_namespaces,
                apps.list_namespaced_stateful_set,
            ),
            "services": (core.list_service_for_all_namespaces, core.list_namespaced_service),
            "pods": (core.list_pod_for_all_namespaces, core.list_namespaced_pod),
            "persistentvolumeclaims": (
                core.list_persistent_volume_claim_for_all_namespaces,
                core.list_namespaced_persistent_volume_claim,
            ),
        }
        self.informers: list[Informer] = []
        for kind in self.KINDS:
            selector = None if kind == "pipelines" else PIPELINE_LABEL
            every, namespaced = calls[kind]
            for namespace in scope.watched_namespaces():
                if namespace is None:
                    call = every
                elif kind == "pipelines":
                    call = _plural_last(namespaced, namespace)
                else:
                    call = functools.partial(namespaced, namespace)
                informer = Informer(self.stores[kind], call, namespace, scope, selector, on_change)
                self.informers.append(informer)
        # PVs carry no label of ours (provisioners make them): all of them, trimmed hard; an
        # event wakes the pipelines whose clear waits for that PV. Optional: an install
        # that may only get PVs reads them by name instead (`volumes`).
        self.volume_informer = Informer(
            self.stores["persistentvolumes"],
            core.list_persistent_volume,
            None,
            scope,
            None,
            on_change,
            route=self._wake_for_volume,
            optional=True,
        )
        self.informers.append(self.volume_informer)
        self.snapshot_informers = self._snapshot_informers(custom, on_change)
        self.informers.extend(self.snapshot_informers)

    def _snapshot_informers(
        self, custom: client.CustomObjectsApi, on_change: OnChange
    ) -> list[Informer]:
        """VolumeSnapshots labelled with a pipeline's name (rule 18), namespaced as PVCs.
        Optional: a cluster without the snapshot CRDs still runs (`snapshots_available`)."""
        self.stores[SNAPSHOTS] = Store(SNAPSHOTS)
        informers = []
        for namespace in self.scope.watched_namespaces():
            if namespace is None:
                call = functools.partial(
                    custom.list_cluster_custom_object,
                    SNAPSHOT_API_GROUP,
                    SNAPSHOT_API_VERSION,
                    SNAPSHOTS,
                )
            else:
                call = functools.partial(
                    custom.list_namespaced_custom_object,
                    SNAPSHOT_API_GROUP,
                    SNAPSHOT_API_VERSION,
                    namespace,
                    SNAPSHOTS,
                )
            store = self.stores[SNAPSHOTS]
            informers.append(
                Informer(
                    store, call, namespace, self.scope, PIPELINE_LABEL, on_change, optional=True
                )
            )
        return informers

    @property
    def snapshots_available(self) -> bool:
        """The VolumeSnapshot API exists (and may be listed): its CRDs are installed."""
        return not any(i.forbidden.is_set() for i in self.snapshot_informers)

    def snapshots(self, namespace: str, pipeline: str) -> list[Obj]:
        """The VolumeSnapshots labelled with this pipeline's name (of any UID)."""
        return self.stores[SNAPSHOTS].for_pipeline(namespace, pipeline)

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_synced(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.synced.wait(left):
                return False
        return True

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    @property
    def watches_volumes(self) -> bool:
        """PVs are watched: a volume's deletion arrives as an event (once synced)."""
        return not self.volume_informer.forbidden.is_set()

    def remember(self, kind: str, obj: Obj) -> None:
        """The API server's answer to our own write: newer than anything stored."""
        if obj.get("kind") == "Status" or "metadata" not in obj:
            return  # a delete answered with a Status: the watch brings the rest
        self.stores[kind].upsert(obj)

    def observe(self, namespace: str, name: str) -> Observed | None:
        pipeline = self.stores["pipelines"].get(namespace, name)
        if pipeline is None:
            return None
        uid = pipeline["metadata"]["uid"]
        pods = self.stores["pods"].for_pipeline(namespace, name)
        return Observed(
            pipeline=pipeline,
            statefulset=self.stores["statefulsets"].get(namespace, name),
            service=self.stores["services"].get(namespace, name),
            pods=[
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(PIPELINE_UID_LABEL) == uid
            ],
            claims=self.stores["persistentvolumeclaims"].for_pipeline(namespace, name),
            snapshots=self.snapshots(namespace, name),
            snapshots_available=self.snapshots_available,
        )

    def volumes(self, names: Iterable[str]) -> tuple[dict[str, Obj], list[str]]:
        """The named PVs as watched, and the names the watch cannot vouch for: neither
        stored nor seen deleted (deleted before the operator started, or not listed yet;
        or PVs are not watched at all). Only a seen deletion counts as gone here."""
        store = self.stores["persistentvolumes"]
        found: dict[str, Obj] = {}
        unknown: list[str] = []
        for pv_name in names:
            pv = store.get("", pv_name) if self.watches_volumes else None
            if pv is not None:
                found[pv_name] = pv
            elif not (self.watches_volumes and store.deleted("", pv_name)):
                unknown.append(pv_name)
        return found, unknown

    def _wake_for_volume(self, pv: Obj) -> list[Key]:
        waiting = self.pipelines_waiting_for(pv)
        metrics.VOLUME_EVENTS.inc(len(waiting))
        return waiting

    def pipelines_waiting_for(self, pv: Obj) -> list[Key]:
        """The pipelines whose clear in progress recorded this PV."""
        return self.stores["pipelines"].keys_by_index(CLEARING_VOLUME, str(pv["metadata"]["name"]))


def _plural_last(list_namespaced: Callable[..., Any], namespace: str) -> Callable[..., Any]:
    """list_namespaced_custom_object(group, version, namespace, plural, ...)."""
    return functools.partial(list_namespaced, namespace, api.PLURAL)
