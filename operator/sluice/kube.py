"""The one module that talks to Kubernetes: observe a pipeline, apply actions, write status.

Objects travel as plain JSON dicts (as the API server sends them), so the pure core
never sees client classes. Every write that could clobber a concurrent change carries
a precondition (resourceVersion or UID).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sluice import metrics
from sluice.api import v1alpha1 as api
from sluice.cache import SNAPSHOTS, Cache
from sluice.core import compute, manifests, resize, snapshots, volumes
from sluice.core import decide as d
from sluice.core.labels import (
    FORCE_STOP,
    PIPELINE_LABEL,
    PIPELINE_UID_LABEL,
    SNAPSHOT_API_GROUP,
    SNAPSHOT_API_VERSION,
)
from sluice.core.observed import Observed
from sluice.transient import TRANSIENT
from sluice.usage import VolumeUsageStore

REPORTING_COMPONENT = "sluice-operator"


# (connect, read) seconds: a request on a dead or frozen connection fails and is retried with
# backoff, instead of holding a worker for as long as the connection stays open.
REQUEST_TIMEOUT = (5.0, 30.0)


class TimeoutApiClient(client.ApiClient):
    """The client, with REQUEST_TIMEOUT for every call that sets none (the default is none)."""

    def call_api(  # type: ignore[no-untyped-def]
        self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None
    ):
        timeout = _request_timeout or REQUEST_TIMEOUT
        try:
            response = super().call_api(method, url, header_params, body, post_params, timeout)
        except Exception:
            metrics.KUBE_REQUESTS.labels(method, "error").inc()
            raise
        metrics.KUBE_REQUESTS.labels(method, str(response.status)).inc()
        return response


def load_config() -> client.ApiClient:
    """In a pod, the ServiceAccount; elsewhere, $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return TimeoutApiClient()


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _missing(error: ApiException) -> bool:
    return bool(error.status == 404)


class Kube:
    """With a `cache`, `observe` reads from it (no API request) and every write's response
    is put into it; without one, every observation is a fresh read."""

    def __init__(
        self,
        api_client: client.ApiClient,
        cache: Cache | None = None,
        usage: VolumeUsageStore | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.cache = cache
        self.usage = usage  # volume usage polled for autoscaling (usage.py)

    def _remember(self, kind: str, response: Any) -> None:
        if self.cache is not None:
            self.cache.remember(kind, response if isinstance(response, dict) else _json(response))

    # ---- reads ---------------------------------------------------------------------

    def get_pipeline(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False
                )
            )
        except ApiException as error:
            if _missing(error):
                return None
            raise

    def observe(self, namespace: str, name: str) -> Observed | None:
        if self.cache is not None:
            cached = self.cache.observe(namespace, name)
            if cached is None:
                return None
            cached = self._with_restore_source(cached)
            cached = self._with_statefulset_events(cached)
            if self.usage is not None and cached.spec.storage.autoscaling is not None:
                names = [c["metadata"]["name"] for c in cached.claims]
                usage = self.usage.for_claims(namespace, names)
                cached = dataclasses.replace(cached, volume_usage=usage)
            # PVs are looked at only while a clear may run, as the PV watch has them; read
            # by name only where the watch cannot vouch for one (see Cache.volumes).
            names = volumes.volume_names_to_observe(cached.pipeline, cached.claims)
            if not names:
                return cached
            watched, unknown = self.cache.volumes(names)
            found = {**watched, **self._volumes(unknown)}
            return dataclasses.replace(
                cached, volumes=found, volume_events=self._volume_events(found)
            )
        pipeline = self.get_pipeline(namespace, name)
        if pipeline is None:
            return None
        uid = pipeline["metadata"]["uid"]
        claims = self._list(
            self.core.list_namespaced_persistent_volume_claim,
            namespace,
            f"{PIPELINE_LABEL}={name}",
        )
        found = self._volumes(volumes.volume_names_to_observe(pipeline, claims))
        taken, snapshots_available = self._read_snapshots(namespace, name)
        observed = Observed(
            pipeline=pipeline,
            statefulset=self._get(self.apps.read_namespaced_stateful_set, name, namespace),
            service=self._get(self.core.read_namespaced_service, name, namespace),
            pods=self._list(
                self.core.list_namespaced_pod, namespace, f"{PIPELINE_UID_LABEL}={uid}"
            ),
            claims=claims,
            volumes=found,
            volume_events=self._volume_events(found),
            snapshots=taken,
            snapshots_available=snapshots_available,
        )
        return self._with_statefulset_events(self._with_restore_source(observed))

    def _with_statefulset_events(self, observed: Observed) -> Observed:
        """With the owned StatefulSet's FailedCreate Events, read (one list) only while its
        controller has no pod for it: a settled pipeline reads nothing."""
        sts = observed.owned_statefulset
        if sts is None or not compute.cannot_create_pod(sts, observed.owned_pods):
            return observed
        selector = (
            f"involvedObject.kind=StatefulSet,involvedObject.name={observed.name},"
            f"reason={compute.FAILED_CREATE}"
        )
        listed = _json(
            self.core.list_namespaced_event(
                observed.namespace, field_selector=selector, _preload_content=False
            )
        )
        uid = sts["metadata"].get("uid")
        found = [
            e
            for e in listed.get("items") or []
            if (e.get("involvedObject") or {}).get("uid") == uid
        ]
        return dataclasses.replace(observed, statefulset_events=found)

    def _with_restore_source(self, observed: Observed) -> Observed:
        """With the VolumeSnapshot spec.storage.restoreFrom names (GET; None if it does not
        exist), read only when a claim is about to be created from it: the operator watches
        no VolumeSnapshot a user made, and a settled pipeline reads nothing."""
        name = snapshots.restore_to_read(observed)
        if name is None:
            return observed
        try:
            found = _json(
                self.custom.get_namespaced_custom_object(
                    SNAPSHOT_API_GROUP,
                    SNAPSHOT_API_VERSION,
                    observed.namespace,
                    "volumesnapshots",
                    name,
                    _preload_content=False,
                )
            )
        except ApiException as error:
            if not _missing(error):  # 404 also when the snapshot CRDs are not installed
                raise
            return dataclasses.replace(observed, restore_source=None)
        return dataclasses.replace(observed, restore_source=found)

    # ---- snapshots (rule 18) -------------------------------------------------------

    def _read_snapshots(self, namespace: str, pipeline: str) -> tuple[list[dict[str, Any]], bool]:
        """The VolumeSnapshots labelled with the pipeline's name, and whether the API exists
        (404: the snapshot CRDs are not installed)."""
        try:
            listed = self.custom.list_namespaced_custom_object(
                SNAPSHOT_API_GROUP,
                SNAPSHOT_API_VERSION,
                namespace,
                SNAPSHOTS,
                label_selector=f"{PIPELINE_LABEL}={pipeline}",
                _preload_content=False,
            )
        except ApiException as error:
            if _missing(error):
                return [], False
            raise
        return list(_json(listed)["items"]), True

    def pipeline_snapshots(self, namespace: str, pipeline: str) -> list[dict[str, Any]]:
        """A gone Pipeline's snapshots (to expire them), from the cache when there is one."""
        if self.cache is not None:
            return self.cache.snapshots(namespace, pipeline)
        return self._read_snapshots(namespace, pipeline)[0]

    def _create_snapshot(self, observed: Observed, manifest: dict[str, Any]) -> None:
        try:
            created = self.custom.create_namespaced_custom_object(
                SNAPSHOT_API_GROUP,
                SNAPSHOT_API_VERSION,
                observed.namespace,
                SNAPSHOTS,
                manifest,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status != 409:
                raise
            # Fixed name: asked for before a crash. Ours or not, the next decision sees it
            # (by the UID in its labels) and waits, or says it is someone else's.
            return
        self._remember(SNAPSHOTS, created)

    def delete_snapshot(self, delete: snapshots.DeleteSnapshot) -> None:
        self._delete(
            SNAPSHOTS,
            lambda name, namespace, **kw: self.custom.delete_namespaced_custom_object(
                SNAPSHOT_API_GROUP, SNAPSHOT_API_VERSION, namespace, SNAPSHOTS, name, **kw
            ),
            delete.name,
            delete.namespace,
            delete.uid,
        )

    def emit_snapshot_event(self, snapshot: dict[str, Any], event: d.Event) -> None:
        """An Event on the VolumeSnapshot itself (its Pipeline is gone)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = snapshot["metadata"]
        body: Any = manifests.event(
            snapshot, event.type, event.reason, event.message, REPORTING_COMPONENT, now
        )
        body["involvedObject"].update(
            apiVersion=f"{SNAPSHOT_API_GROUP}/{SNAPSHOT_API_VERSION}", kind="VolumeSnapshot"
        )
        self.core.create_namespaced_event(meta["namespace"], body)

    def _volumes(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The named PersistentVolumes that exist (cluster-scoped; absent ones are gone)."""
        found = {}
        for pv_name in names:
            metrics.VOLUME_READS.inc()
            try:
                found[pv_name] = _json(
                    self.core.read_persistent_volume(pv_name, _preload_content=False)
                )
            except ApiException as error:
                if not _missing(error):
                    raise
        return found

    def _volume_events(self, found: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """The provisioner's VolumeFailedDelete Events about each volume it has left
        Released for a while (a CSI provisioner whose deletion fails says why only there).
        One list per such PV."""
        events = {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pv_name, pv in found.items():
            if not volumes.provisioner_to_ask(pv, now):
                continue
            selector = (
                "involvedObject.kind=PersistentVolume,"
                f"involvedObject.name={pv_name},reason={volumes.FAILED_DELETE_REASON}"
            )
            listed = self.core.list_namespaced_event(
                volumes.CLUSTER_EVENTS_NAMESPACE, field_selector=selector, _preload_content=False
            )
            events[pv_name] = list(_json(listed)["items"])
        return events

    @staticmethod
    def _get(read: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return _json(read(name, namespace, _preload_content=False))
        except ApiException as error:
            if _missing(error):
                return None
            raise

    @staticmethod
    def _list(list_: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _json(
            list_(namespace, label_selector=selector, _preload_content=False)
        )["items"]
        return items

    # ---- writes --------------------------------------------------------------------

    def apply(self, observed: Observed, action: d.Action) -> None:
        namespace = observed.namespace
        match action:
            case d.AddFinalizer(finalizer):
                self._patch_finalizers(observed, [*observed.finalizers, finalizer])
            case d.RemoveFinalizer(finalizer):
                self._patch_finalizers(observed, [f for f in observed.finalizers if f != finalizer])
            case d.Create(manifest):
                self._create(namespace, manifest)
            case d.UpdateContainer(statefulset, container):
                body = {"spec": {"template": {"spec": {"containers": [container]}}}}
                response = self.apps.patch_namespaced_stateful_set(
                    statefulset,
                    namespace,
                    body,
                    _content_type="application/strategic-merge-patch+json",
                    _preload_content=False,
                )
                self._remember("statefulsets", response)
            case d.DeleteStatefulSet(sts_name, uid):
                self._delete(
                    "statefulsets",
                    self.apps.delete_namespaced_stateful_set,
                    sts_name,
                    namespace,
                    uid,  # background: its pod was deleted first, by DeletePod, with our grace
                )
            case resize.ResizeClaim(claim, size):
                grown = self.core.patch_namespaced_persistent_volume_claim(
                    claim,
                    namespace,
                    {"spec": {"resources": {"requests": {"storage": size}}}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
                self._remember("persistentvolumeclaims", grown)
            case d.DeletePod(pod, uid, grace):
                self._delete(
                    "pods", self.core.delete_namespaced_pod, pod, namespace, uid, grace=grace
                )
            case d.RemoveForceStop():
                unmarked = self.custom.patch_namespaced_custom_object(
                    api.GROUP,
                    api.VERSION,
                    namespace,
                    api.PLURAL,
                    observed.name,
                    {"metadata": {"annotations": {FORCE_STOP: None}}},
                    _preload_content=False,
                )
                self._remember("pipelines", unmarked)
            case d.DeleteClaim(claim, uid):
                self._delete(
                    "persistentvolumeclaims",
                    self.core.delete_namespaced_persistent_volume_claim,
                    claim,
                    namespace,
                    uid,
                )
            case d.DetachClaim():
                detached = self.core.patch_namespaced_persistent_volume_claim(
                    action.name,
                    namespace,
                    {
                        "metadata": {
                            "uid": action.uid,
                            "resourceVersion": action.resource_version,
                            "ownerReferences": action.owner_references,
                            "labels": action.labels,
                            "annotations": action.annotations,
                        }
                    },
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
                self._remember("persistentvolumeclaims", detached)
            case snapshots.CreateSnapshot(manifest):
                self._create_snapshot(observed, manifest)
            case snapshots.DeleteSnapshot():
                self.delete_snapshot(action)
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _patch_finalizers(self, observed: Observed, finalizers: list[str]) -> None:
        body = {
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": observed.pipeline["metadata"]["resourceVersion"],
            }
        }
        response = self.custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            observed.namespace,
            api.PLURAL,
            observed.name,
            body,
            _preload_content=False,
        )
        self._remember("pipelines", response)

    def _create(self, namespace: str, manifest: dict[str, Any]) -> None:
        creators: dict[str, tuple[str, Any]] = {
            "PersistentVolumeClaim": (
                "persistentvolumeclaims",
                self.core.create_namespaced_persistent_volume_claim,
            ),
            "Service": ("services", self.core.create_namespaced_service),
            "StatefulSet": ("statefulsets", self.apps.create_namespaced_stateful_set),
        }
        kind, create = creators[manifest["kind"]]
        try:
            # Remembered at once: a claim has a generated name, and a reconcile that did not
            # see it yet would create a second one.
            self._remember(kind, create(namespace, manifest, _preload_content=False))
        except ApiException as error:
            if error.status != 409:  # already there: the next observation will see it
                raise

    def _delete(
        self,
        kind: str,
        delete: Any,
        name: str,
        namespace: str,
        uid: str,
        grace: int | None = None,
        propagation: str = "Background",
    ) -> None:
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid),
            propagation_policy=propagation,
            grace_period_seconds=grace,
        )
        try:
            answer = _json(delete(name, namespace, body=options, _preload_content=False))
            # Still there, marked for deletion (finalizers pending): remembered, so the next
            # reconcile waits instead of deleting again. Gone at once: the watch says so.
            if (answer.get("metadata") or {}).get("deletionTimestamp"):
                self._remember(kind, answer)
        except ApiException as error:
            if not _missing(error):
                raise

    def write_status(self, observed: Observed, status: dict[str, Any]) -> None:
        body = {
            "metadata": {"resourceVersion": observed.pipeline["metadata"]["resourceVersion"]},
            "status": status,
        }
        response = self.custom.patch_namespaced_custom_object_status(
            api.GROUP,
            api.VERSION,
            observed.namespace,
            api.PLURAL,
            observed.name,
            body,
            _preload_content=False,
        )
        self._remember("pipelines", response)

    def emit_event(self, observed: Observed, event: d.Event) -> None:
        """Post an Event on the pipeline. One with `once` is named by it: 409 AlreadyExists
        means a step before a crash posted it, and is raised for the caller to judge."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: Any = manifests.event(  # the client takes plain JSON too
            observed.pipeline,
            event.type,
            event.reason,
            event.message,
            REPORTING_COMPONENT,
            now,
            event.once,
        )
        # The transition it records will not come again: retry an overloaded or unreachable
        # API server a few times (client-go's recorder retries too).
        for delay in (*EVENT_RETRY_DELAYS, None):
            try:
                self.core.create_namespaced_event(observed.namespace, body)
                return
            except ApiException as error:
                if delay is None or not (error.status == 429 or error.status >= 500):
                    raise
                time.sleep(_retry_after(error) or delay)
            except TRANSIENT:
                if delay is None:
                    raise
                time.sleep(delay)


EVENT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


def _retry_after(error: ApiException) -> float | None:
    value = (error.headers or {}).get("Retry-After")
    try:
        return min(float(value), 10.0) if value else None
    except ValueError:
        return None
