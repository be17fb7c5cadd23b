"""Volume usage for storage autoscaling (spec.storage.autoscaling), as the kubelet measures
it: every --volume-usage-seconds, the Summary API of each node that runs an autoscaled
pipeline's pod, read through the API server's node proxy
(GET /api/v1/nodes/<node>/proxy/stats/summary; RBAC: get on nodes/proxy). Its pods[].volume[]
entries name their claim (pvcRef) with usedBytes and capacityBytes, which a CSI driver
reports by NodeGetVolumeStats. Only nodes running such pods are read, one request per node.

The readings are kept here for the reconciler (Kube.observe hands them to the pure core); a
pipeline over its threshold, or just back under it, is put on the work queue.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from sluice.api import v1alpha1 as api
from sluice.cache import Cache
from sluice.core.autoscale import VolumeUsage, over_threshold
from sluice.transient import REPORTED, api_server_message, transient_reason

log = logging.getLogger("sluice.usage")

Key = tuple[str, str]  # (namespace, name)
# The API server refused or could not be reached, or the kubelet answered no JSON.
UNREADABLE: tuple[type[Exception], ...] = (*REPORTED, ValueError)


def summary_volumes(summary: dict[str, Any]) -> dict[Key, VolumeUsage]:
    """(namespace, claim) -> usage, from a kubelet's /stats/summary."""
    out: dict[Key, VolumeUsage] = {}
    for pod in summary.get("pods") or []:
        for volume in pod.get("volume") or []:
            ref = volume.get("pvcRef") or {}
            used, capacity = volume.get("usedBytes"), volume.get("capacityBytes")
            if ref.get("name") and isinstance(used, int) and isinstance(capacity, int):
                key = (ref.get("namespace", ""), ref["name"])
                out[key] = VolumeUsage(used, capacity, volume.get("time"))
    return out


class VolumeUsageStore:
    """The last readings, shared by the poller's thread and the reconcilers'."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readings: dict[Key, VolumeUsage] = {}

    def replace(self, readings: dict[Key, VolumeUsage]) -> None:
        with self._lock:
            self._readings = dict(readings)

    def for_claims(self, namespace: str, claims: Iterable[str]) -> dict[str, VolumeUsage]:
        with self._lock:
            found = ((c, self._readings.get((namespace, c))) for c in claims)
            return {c: usage for c, usage in found if usage is not None}


def autoscaling_of(pipeline: dict[str, Any]) -> api.StorageAutoscaling | None:
    raw = ((pipeline.get("spec") or {}).get("storage") or {}).get("autoscaling")
    if raw is None:
        return None
    try:
        return api.StorageAutoscaling.model_validate(raw)
    except ValidationError:
        return None  # the CRD admits no such object; an old one is left alone


class VolumeUsagePoller:
    def __init__(
        self,
        api_client: client.ApiClient,
        cache: Cache,
        store: VolumeUsageStore,
        enqueue: Callable[[Key], None],
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.cache = cache
        self.store = store
        self.enqueue = enqueue
        self._over: set[Key] = set()
        self._failing: dict[str, str] = {}  # node -> the error last said, to say it once

    def _autoscaled(self) -> dict[Key, tuple[api.StorageAutoscaling, list[str], set[str]]]:
        """Each autoscaled pipeline: its settings, its claims' names, its pods' nodes."""
        out = {}
        for pipeline in self.cache.stores["pipelines"].items():
            settings = autoscaling_of(pipeline)
            if settings is None:
                continue
            meta = pipeline["metadata"]
            key = (meta["namespace"], meta["name"])
            claims = [
                c["metadata"]["name"]
                for c in self.cache.stores["persistentvolumeclaims"].for_pipeline(*key)
            ]
            nodes = {
                str(p["spec"]["nodeName"])
                for p in self.cache.stores["pods"].for_pipeline(*key)
                if (p.get("spec") or {}).get("nodeName")
            }
            out[key] = (settings, claims, nodes)
        return out

    def _read_node(self, node: str) -> dict[Key, VolumeUsage]:
        try:
            # Not preloaded: the client would turn the JSON into a Python repr of it.
            response: Any = self.core.connect_get_node_proxy_with_path(
                node, "stats/summary", _preload_content=False
            )
            readings = summary_volumes(json.loads(response.data))
        except UNREADABLE as error:
            # The API server's own words, e.g. that nodes/proxy is forbidden to the operator.
            if isinstance(error, ApiException):
                reason = api_server_message(error)
            else:
                reason = transient_reason(error)
            if self._failing.get(node) != reason:
                log.warning(
                    "cannot read volume usage from node %s (its kubelet's /stats/summary "
                    "through the API server; RBAC: get on nodes/proxy): %s; autoscaling waits",
                    node,
                    reason,
                )
            self._failing[node] = reason
            return {}
        if self._failing.pop(node, None) is not None:
            log.info("volume usage from node %s read again", node)
        return readings

    def poll(self) -> None:
        """One round: read the nodes, keep the readings, wake who needs it."""
        autoscaled = self._autoscaled()
        readings: dict[Key, VolumeUsage] = {}
        for node in sorted(set().union(*(nodes for _, _, nodes in autoscaled.values()))):
            readings.update(self._read_node(node))
        self.store.replace(readings)
        over: set[Key] = set()
        for key, (settings, claims, _) in autoscaled.items():
            measured = [readings[(key[0], c)] for c in claims if (key[0], c) in readings]
            if any(over_threshold(settings, usage) for usage in measured):
                over.add(key)
        for key in sorted(over | (self._over - over)):
            self.enqueue(key)
        self._over = over
