"""`make bench`: clears side by side with kube-controller-manager (KCM) in the same cluster,
on the real node (the engine pipeline as real pods) and on kwok.

Sluice: one request sets `desiredState: Stopped` and a new `clearRequest` on a running
pipeline; timed until `Cleared` (which Sluice writes only once the claim's Delete volume is
gone). KCM, the anchor: a one-replica StatefulSet with its headless Service, a
volumeClaimTemplate and `persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete}` is
deleted (the Service stays, as Sluice's does when stopped); timed until its PVC and the PV
bound to it are gone. Both are the same chain (compute goes, then the claim, then the
provisioner deletes the volume) and both are timed from watches; when the claims were gone
is printed too. One clear (median of RUNS, interleaved), then MANY at once
(one client, MANY requests). Also the API requests one clear costs, by verb, from the API
server's `apiserver_request_total` (all clients, so KCM's and kwok's share is in both).

Prints figures; asserts nothing about timing (shared, noisy machines). The CI smoke test
(tests/integration/test_bench_smoke.py) runs the same functions with tiny sizes.
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from integration.pipelines import IMAGE, pod_security
from kubernetes import client
from localkube.fixtures import Kubectl, namespace_for_test
from sluice.api import v1alpha1 as api
from sluice.core.labels import PIPELINE_LABEL
from sluice_fixtures import Operator

from bench.watching import (
    Requests,
    by_verb,
    cpu_by_command,
    others,
    ours,
    reads_and_writes,
    watch_until,
)

RUNS = int(os.environ.get("SLUICE_BENCH_RUNS", "5"))
MANY = int(os.environ.get("SLUICE_BENCH_MANY", "100"))
TIMEOUT = 900.0


def pipeline(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        # On the default class (hostPath, root's directories) as root, like KCM's pods.
        "spec": {
            "desiredState": "Running",
            "image": IMAGE,
            "storage": {"size": "1Gi"},
            **pod_security(None),
        },
    }


def statefulset(name: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "serviceName": service_name(name),
            "selector": {"matchLabels": labels},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "volumeMounts": [{"name": "data", "mountPath": "/storage"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def service_name(statefulset: str) -> str:
    """Not the StatefulSet's own name: Sluice's side, in the same namespace, keeps a Service
    of the pipeline's name."""
    return f"sts-{statefulset}"


def governing_service(name: str, namespace: str) -> dict[str, Any]:
    """The StatefulSet's headless Service, as Kubernetes documents a StatefulSet (its
    serviceName names it; "you are responsible for creating this Service"). Sluice makes one
    per pipeline and keeps it while stopped, so both sides have the same objects, and the
    endpoint controllers follow both sides' pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": namespace},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
        },
    }


STAGES = (
    "pod deleting",
    "pod exited",
    "pod gone",
    "claim deleting",
    "claim gone",
    "volume released",
    "volume gone",
)

# Consecutive stages whose per-workload gaps are printed.
GAPS = (
    ("pod deleting", "pod exited"),
    ("pod exited", "pod gone"),
    ("pod gone", "claim gone"),
    ("claim gone", "volume gone"),
)


class Timeline:
    """When each workload's pod, claim and volume reached each stage (first seen on the
    watches, perf_counter()): where the time of many clears at once goes."""

    def __init__(self, workload_label: str, volume_owners: dict[str, str]) -> None:
        self.workload_label = workload_label
        self.volume_owners = volume_owners  # PV name -> workload
        self.seen: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()

    def _mark(self, workload: str | None, stage: str, at: float) -> None:
        if workload is None:
            return
        with self.lock:
            self.seen.setdefault(workload, {}).setdefault(stage, at)

    def on_event(self, kind: str) -> Callable[[str, dict[str, Any], float], None]:
        def record(type_: str, obj: dict[str, Any], at: float) -> None:
            meta = obj["metadata"]
            if kind == "volume":
                workload = self.volume_owners.get(meta["name"])
                if (obj.get("status") or {}).get("phase") == "Released":
                    self._mark(workload, "volume released", at)
            else:
                workload = (meta.get("labels") or {}).get(self.workload_label)
                if meta.get("deletionTimestamp"):
                    self._mark(workload, f"{kind} deleting", at)
                if kind == "pod" and _exited(obj):
                    self._mark(workload, "pod exited", at)
            if type_ == "DELETED":
                self._mark(workload, f"{kind} gone", at)

        return record

    def relative(self, start: float) -> dict[str, list[float]]:
        """Per stage, the seconds after `start` at which each workload reached it."""
        with self.lock:
            return {
                stage: sorted(t[stage] - start for t in self.seen.values() if stage in t)
                for stage in STAGES
            }

    def gaps(self, first: str, then: str) -> list[float]:
        """Per workload, seconds from one stage to another (negative: `then` came first)."""
        with self.lock:
            both = [t for t in self.seen.values() if first in t and then in t]
        return sorted(t[then] - t[first] for t in both)


def _exited(pod: dict[str, Any]) -> bool:
    """The kubelet reports every container of the pod terminated."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("terminated" in (s.get("state") or {}) for s in statuses)


@dataclass
class Timing:
    seconds: float  # until the storage is gone (the claims and their volumes)
    pods_gone: float  # until the last pod is gone
    claims_gone: float  # until the last claim is gone
    volumes_gone: float  # until the last PV bound to those claims is gone
    requests: Counter[tuple[str, str]]
    timeline: Timeline | None = None
    start: float = 0.0
    cpu: dict[str, float] | None = None  # CPU seconds by command while clearing
    # The API server's time in requests while clearing, by (verb, resource): where its
    # CPU goes, from its own latency sums.
    request_seconds: dict[tuple[str, str], float] | None = None


class Side:
    """One side of the comparison: create N workloads, wait until running, clear them all
    with one request each, wait until their storage is gone."""

    label = ""
    workload_label = ""  # the label naming a pod's or a claim's workload

    def __init__(self, api_client: client.ApiClient, kubectl: Kubectl, namespace: str) -> None:
        self.api_client, self.kubectl, self.namespace = api_client, kubectl, namespace
        self.volumes: set[str] = set()  # the PVs bound to the workloads' claims
        self.timeline: Timeline | None = None

    def create(self, names: list[str]) -> None:
        raise NotImplementedError

    def wait_running(self, names: list[str]) -> None:
        raise NotImplementedError

    def clear(self, name: str, request: str) -> None:
        raise NotImplementedError

    def wait_cleared(self, names: list[str], request: str) -> float:
        raise NotImplementedError

    def timed(self, names: list[str], request: str) -> Timing:
        self.create(names)
        self.wait_running(names)
        owners = self._bound_volumes(names)
        self.volumes = set(owners)
        self.timeline = Timeline(self.workload_label, owners)
        time.sleep(1.0)  # the start's trailing writes land before counting
        requests = Requests(self.kubectl)
        cpu_before = cpu_by_command()
        core = client.CoreV1Api(self.api_client)
        gone: dict[str, float] = {}
        watchers = [
            threading.Thread(target=self._wait_gone, args=(names, list_, what, gone))
            for list_, what in (
                (core.list_namespaced_pod, "pod"),
                (core.list_namespaced_persistent_volume_claim, "claim"),
            )
        ]
        watchers.append(
            threading.Thread(
                target=lambda: gone.update(
                    volume=self.wait_volumes_gone(self.timeline.on_event("volume"))
                )
            )
        )
        for watcher in watchers:
            watcher.start()
        start = time.perf_counter()
        for name in names:
            self.clear(name, request)
        elapsed = self.wait_cleared(names, request) - start
        for watcher in watchers:
            watcher.join()
        cpu_after = cpu_by_command()
        cpu = {c: used - cpu_before.get(c, 0.0) for c, used in cpu_after.items()}
        time.sleep(1.0)  # trailing writes (Events) land before counting
        seconds = requests.seconds()
        nan = float("nan")
        return Timing(
            elapsed,
            gone.get("pod", nan) - start,
            gone.get("claim", nan) - start,
            gone.get("volume", nan) - start,
            requests.delta(),
            self.timeline,
            start,
            {c: used for c, used in cpu.items() if used > 0},
            seconds,
        )

    def _of_workload(self, names: list[str]) -> Callable[[dict[str, Any]], bool]:
        wanted = set(names)
        return lambda obj: (obj["metadata"].get("labels") or {}).get(self.workload_label) in wanted

    def _wait_gone(
        self, names: list[str], list_: Callable[..., Any], what: str, gone: dict[str, float]
    ) -> None:
        """When the last pod (compute is stopped; the controller-manager's garbage collector
        deletes them, on both sides) or the last claim is gone."""
        listing = functools.partial(list_, self.namespace)
        on_event = self.timeline.on_event(what) if self.timeline else None
        gone[what] = watch_until(
            listing, self._of_workload(names), lambda n: n == 0, TIMEOUT, f"{what}s gone", on_event
        )

    def _bound_volumes(self, names: list[str]) -> dict[str, str]:
        """The PVs bound to the workloads' claims, each with its workload."""
        core = client.CoreV1Api(self.api_client)
        claims = core.list_namespaced_persistent_volume_claim(self.namespace).to_dict()["items"]
        of_workload = self._of_workload(names)
        return {
            c["spec"]["volume_name"]: c["metadata"]["labels"][self.workload_label]
            for c in claims
            if of_workload(c) and c["spec"]["volume_name"]
        }

    def wait_volumes_gone(self, on_event: Callable[[str, Any, float], None] | None = None) -> float:
        """When the last PV bound to the workloads' claims is gone."""
        listing = client.CoreV1Api(self.api_client).list_persistent_volume
        wanted = set(self.volumes)
        return watch_until(
            listing,
            lambda obj: obj["metadata"]["name"] in wanted,
            lambda n: n == 0,
            TIMEOUT,
            "volumes gone",
            on_event,
        )


class Sluice(Side):
    label = "Sluice"
    workload_label = PIPELINE_LABEL

    def _list(self) -> Callable[..., Any]:
        custom = client.CustomObjectsApi(self.api_client)
        return functools.partial(
            custom.list_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace, api.PLURAL
        )

    def create(self, names: list[str]) -> None:
        docs = [pipeline(name, self.namespace) for name in names]
        self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs), timeout=600)

    def wait_running(self, names: list[str]) -> None:
        wanted = set(names)

        def running(obj: dict[str, Any]) -> bool:
            status = obj.get("status") or {}
            return obj["metadata"]["name"] in wanted and status.get("deploymentStatus") == "Running"

        watch_until(self._list(), running, lambda n: n >= len(names), TIMEOUT, "running")

    def clear(self, name: str, request: str) -> None:
        client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            self.namespace,
            api.PLURAL,
            name,
            {"spec": {"desiredState": "Stopped", "storage": {"clearRequest": request}}},
        )

    def wait_cleared(self, names: list[str], request: str) -> float:
        wanted = set(names)

        def cleared(obj: dict[str, Any]) -> bool:
            storage = (obj.get("status") or {}).get("storage") or {}
            return (
                obj["metadata"]["name"] in wanted
                and storage.get("status") == "Cleared"
                and storage.get("lastClearRequest") == request
            )

        return watch_until(self._list(), cleared, lambda n: n >= len(names), TIMEOUT, "Cleared")


class ControllerManager(Side):
    label = "KCM"
    workload_label = "app"

    def create(self, names: list[str]) -> None:
        docs = [
            doc
            for name in names
            for doc in (governing_service(name, self.namespace), statefulset(name, self.namespace))
        ]
        self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs), timeout=600)

    def wait_running(self, names: list[str]) -> None:
        wanted = set(names)
        apps = client.AppsV1Api(self.api_client)

        def ready(obj: dict[str, Any]) -> bool:
            ready_replicas = (obj.get("status") or {}).get("readyReplicas")
            return obj["metadata"]["name"] in wanted and ready_replicas == 1

        listing = functools.partial(apps.list_namespaced_stateful_set, self.namespace)
        watch_until(listing, ready, lambda n: n >= len(names), TIMEOUT, "ready")

    def clear(self, name: str, request: str) -> None:
        client.AppsV1Api(self.api_client).delete_namespaced_stateful_set(
            name, self.namespace, propagation_policy="Background"
        )

    def wait_cleared(self, names: list[str], request: str) -> float:
        # The claims go before their volumes (the provisioner deletes a PV once its claim is
        # gone), so the volumes' end is the end; the claims' own is timed beside (`timed`).
        return self.wait_volumes_gone()


def one_clear(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str, runs: int
) -> dict[str, list[Timing]]:
    sides = [
        Sluice(api_client, kubectl, namespace),
        ControllerManager(api_client, kubectl, namespace),
    ]
    results: dict[str, list[Timing]] = {s.label: [] for s in sides}
    for i in range(runs):  # interleaved: both see the same machine load
        for side in sides:
            results[side.label].append(side.timed([f"one-{i}"], f"r{i}"))
    return results


def many_at_once(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str, many: int
) -> dict[str, Timing]:
    names = [f"many-{i:03d}" for i in range(many)]
    sides = (
        Sluice(api_client, kubectl, namespace),
        ControllerManager(api_client, kubectl, namespace),
    )
    return {side.label: side.timed(names, "all") for side in sides}


def report_one(results: dict[str, list[Timing]]) -> None:
    sluice = [t.seconds for t in results["Sluice"]]
    kcm = [t.seconds for t in results["KCM"]]
    print(f"\none clear, side by side ({len(sluice)} runs each, interleaved; seconds)")
    for label, times in (("Sluice", sluice), ("KCM", kcm)):
        pods = statistics.median(t.pods_gone for t in results[label])
        claims = statistics.median(t.claims_gone for t in results[label])
        volumes = statistics.median(t.volumes_gone for t in results[label])
        print(
            f"  {label:<7} median {statistics.median(times):.3f}"
            f"  (min {min(times):.3f}, max {max(times):.3f}; medians: pods gone after "
            f"{pods:.3f}, claims {claims:.3f}, volumes {volumes:.3f}): "
            + ", ".join(f"{t:.3f}" for t in times)
        )
        print(
            "    each run, pods/claims/volumes gone: "
            + ", ".join(
                f"{t.pods_gone:.3f}/{t.claims_gone:.3f}/{t.volumes_gone:.3f}"
                for t in results[label]
            )
        )
    ratio = statistics.median(sluice) / statistics.median(kcm)
    print(f"  ratio Sluice/KCM of medians: {ratio:.2f}")
    for label in ("Sluice", "KCM"):
        counts = ours(results[label][len(results[label]) // 2].requests)
        reads, writes = reads_and_writes(counts)
        print(
            f"  API requests during one {label} clear (all clients): {reads} reads, {writes} writes"
        )
        print(f"    {by_verb(counts)}")


def _median_max(times: list[float]) -> str:
    """`first/median/p90/last` of sorted times."""
    if not times:
        return "-"
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    return f"{times[0]:.1f}/{statistics.median(times):.1f}/{p90:.1f}/{times[-1]:.1f}"


def report_many(results: dict[str, Timing], many: int) -> None:
    sluice, kcm = results["Sluice"], results["KCM"]
    print(f"\n{many} clears at once (one client, {many} requests; until all volumes are gone)")
    print(
        f"  Sluice {sluice.seconds:.2f} s (pods gone after {sluice.pods_gone:.2f} s, claims "
        f"{sluice.claims_gone:.2f} s, volumes {sluice.volumes_gone:.2f} s), KCM "
        f"{kcm.seconds:.2f} s (pods gone after {kcm.pods_gone:.2f} s, claims "
        f"{kcm.claims_gone:.2f} s, volumes {kcm.volumes_gone:.2f} s), "
        f"ratio {sluice.seconds / kcm.seconds:.2f}"
    )
    print("  when each workload reached each stage (s after the requests; first/median/p90/last):")
    for label, timing in results.items():
        if timing.timeline is None:
            continue
        stages = timing.timeline.relative(timing.start)
        print(
            f"    {label:<7}"
            + ", ".join(f"{stage} {_median_max(times)}" for stage, times in stages.items())
        )
        gaps = ", ".join(
            f"{first} -> {then} {_median_max(timing.timeline.gaps(first, then))}"
            for first, then in GAPS
        )
        print(f"    {'':<7}gaps per workload: {gaps}")
    print("  CPU seconds used while clearing, by command (the top 8):")
    for label, timing in results.items():
        top = sorted((timing.cpu or {}).items(), key=lambda item: -item[1])[:8]
        print(f"    {label:<7}" + ", ".join(f"{command} {seconds:.1f}" for command, seconds in top))
    print("  the API server's time in requests while clearing (sum of latencies; the top 8):")
    for label, timing in results.items():
        spent = timing.request_seconds or {}
        costly = sorted(spent.items(), key=lambda item: -item[1])[:8]
        print(
            f"    {label:<7}total {sum(spent.values()):.1f} s: "
            + ", ".join(f"{verb} {resource} {s:.1f}" for (verb, resource), s in costly)
        )
    for label, timing in results.items():
        counts = ours(timing.requests)
        reads, writes = reads_and_writes(counts)
        print(f"  {label}: {reads} reads, {writes} writes (all clients): {by_verb(counts)}")
        print(f"    other resources, all verbs: {others(timing.requests)}")


@pytest.fixture(params=["real", "kwok"])
def node_namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """Both sides on the real node (the engine pipeline's pods take their SIGTERM and exit),
    then both on kwok (pods go at once): where the time goes differs."""
    yield from namespace_for_test(api_client, request, on_kwok=request.param == "kwok")


def test_clears_side_by_side_with_the_controller_manager(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    node_namespace: str,
    live_operator: Operator,
    request: pytest.FixtureRequest,
) -> None:
    node = request.node.callspec.params["node_namespace"]
    print(f"\n=== on the {node} node ===")
    report_one(one_clear(api_client, kubectl, node_namespace, RUNS))
    report_many(many_at_once(api_client, kubectl, node_namespace, MANY), MANY)
