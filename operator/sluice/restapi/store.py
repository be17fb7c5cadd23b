"""Pipeline resources in the served namespace: read, list, merge-patch (blocking calls;
the app runs them in threads). JSON dicts in and out, as in operator/sluice/kube.py.

Reads come from a watch-fed store (the operator's informer, sluice/cache.py), so a GET
costs no API server request; the answer to each patch goes into it at once, so a client
that clears and then polls reads its own write."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sluice.api import v1alpha1 as api
from sluice.cache import Informer, Scope, Store
from sluice.core import manifests

REPORTING_COMPONENT = "sluice-api"

SYNC_TIMEOUT = 30.0  # a read before the first LIST completes waits this long, then reads live
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Conflict(Exception):
    """The resourceVersion precondition failed: someone changed the pipeline meanwhile."""


class Rejected(Exception):
    """The API server refused the patch (422: CRD schema or CEL rule)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def connect(kubeconfig: str | None) -> tuple[client.ApiClient, str]:
    """An API client and the namespace to serve by default: in a pod, the ServiceAccount and
    its namespace; elsewhere the kubeconfig ($KUBECONFIG, ~/.kube/config or `kubeconfig`)
    and its current context's namespace, else "default"."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            namespace = IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
            return client.ApiClient(configuration), namespace
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    _, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    namespace = str(((current or {}).get("context") or {}).get("namespace") or "default")
    return client.ApiClient(configuration), namespace


def _json(response: Any) -> Any:
    return json.loads(response.data)


class PipelineStore:
    def __init__(self, api_client: client.ApiClient, namespace: str, cached: bool = True) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.cached = cached
        self.cache = Store("pipelines")
        self.informer = Informer(
            self.cache,
            functools.partial(
                self.custom.list_namespaced_custom_object,
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
            ),
            namespace,
            Scope((namespace,)),
            None,
            on_change=lambda key: None,
        )

    def start(self) -> None:
        """Start watching; until the first LIST is in, reads wait for it."""
        if self.cached:
            self.informer.start()

    def _cached(self) -> bool:
        """Read from the cache once its first LIST is in (waiting up to SYNC_TIMEOUT for it);
        live at once while the API server refuses that LIST (a 403 of missing RBAC, a 404 of
        a CRD not installed yet), so that its refusal answers now instead of after a wait."""
        if not self.cached:
            return False
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not self.informer.synced.is_set() and time.monotonic() < deadline:
            if self.informer.refused.is_set():
                return False
            self.informer.synced.wait(0.05)
        return self.informer.synced.is_set()

    def record_event(self, pipeline: dict[str, Any], reason: str, message: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: Any = manifests.event(  # the client takes plain JSON too
            pipeline, "Normal", reason, message, REPORTING_COMPONENT, now
        )
        self.core.create_namespaced_event(self.namespace, body)

    def get(self, name: str) -> dict[str, Any] | None:
        if self._cached():
            return self.cache.get(self.namespace, name)
        return self._read(name)

    def _refresh(self, name: str) -> None:
        obj = self._read(name)
        if obj is not None:
            self.cache.upsert(obj)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = _json(
                self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, self.namespace, api.PLURAL, name, _preload_content=False
                )
            )
            return obj
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self) -> list[dict[str, Any]]:
        if self._cached():
            return sorted(
                self.cache.items(self.namespace), key=lambda o: str(o["metadata"]["name"])
            )
        items: list[dict[str, Any]] = _json(
            self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.PLURAL, _preload_content=False
            )
        )["items"]
        return sorted(items, key=lambda o: str(o["metadata"]["name"]))

    def patch(self, name: str, body: dict[str, Any]) -> bool:
        """Merge-patch; False when the pipeline is gone."""
        try:
            response = self.custom.patch_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                self.namespace,
                api.PLURAL,
                name,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
            self.cache.upsert(_json(response))
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status == 409:
                self._refresh(name)  # the cache was behind: the retry decides on the latest
                raise Conflict(name) from error
            if error.status == 422:
                raise Rejected(_status_message(error)) from error
            raise

    def delete(self, name: str, uid: str, resource_version: str) -> bool:
        """Delete with preconditions (409 -> Conflict when it changed since it was read);
        False when it is already gone. The operator's finalizer then lets it go."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
        )
        try:
            self.custom.delete_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                self.namespace,
                api.PLURAL,
                name,
                body=options,
                _preload_content=False,
            )
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status == 409:
                raise Conflict(name) from error
            raise


def _status_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)
