"""`make bench`: what starting costs with N pipelines present, the operator's own informers
against kopf's watching (issue 17: why reconciles do not go through kopf's handlers).

For each size in SLUICE_BENCH_KOPF_PIPELINES (default "200,1000"), with that many stopped
pipelines in one namespace (no operator running): the time and CPU (the process's, imports
included) from after the imports until
- the operator's cache (cache.py, all its informers, in a fresh process) is synced;
- kopf 1.45.2 (a fresh process, `kopf.operator`, scanning off, standalone) has filled an
  `@kopf.index` of the pipelines and called its first resource handler (kopf runs resource
  handlers only once every index is filled), and
- the same kopf process has called an `@kopf.on.event` handler once per pipeline.
Prints figures; asserts nothing about them.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from integration.pipelines import document
from kubernetes import client
from localkube.fixtures import Kubectl
from sluice.api import v1alpha1 as api

SIZES = [int(n) for n in os.environ.get("SLUICE_BENCH_KOPF_PIPELINES", "200,1000").split(",")]

OWN = """
import json, os, resource, sys, time
from kubernetes import client, config
from sluice.cache import Cache, Scope
# The client's API modules are imported on first use (seconds on a loaded machine): before
# the clock starts, as kopf's imports are.
client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi
start = time.perf_counter()
config.load_kube_config()
cache = Cache(client.ApiClient(), Scope((sys.argv[1],)), on_change=lambda key: None)
cache.start()
cache.wait_synced()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"synced": time.perf_counter() - start,
                  "cpu": usage.ru_utime + usage.ru_stime,
                  "pipelines": len(cache.stores["pipelines"])}), flush=True)
os._exit(0)  # the informers' daemon threads are still in their watches
"""

KOPF = """
import asyncio, json, logging, resource, sys, time
import kopf
namespace, expected = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
seen, result = set(), {}
stop = asyncio.Event()

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

@kopf.on.startup()
async def configure(settings, **_):
    settings.scanning.disabled = True
    settings.posting.enabled = False

@kopf.index("sluice.dev", "v1alpha1", "pipelines")
async def by_name(name, **_):
    return {name: True}

@kopf.on.event("sluice.dev", "v1alpha1", "pipelines")
async def seen_event(name, by_name, **_):
    if not seen:
        result.update(indexed=time.perf_counter() - start, indexed_cpu=cpu(),
                      index_size=len(by_name))
    seen.add(name)
    if len(seen) == expected and not stop.is_set():
        result.update(all_events=time.perf_counter() - start, all_events_cpu=cpu())
        stop.set()

logging.basicConfig(level=logging.WARNING)
asyncio.run(kopf.operator(standalone=True, namespaces=[namespace], stop_flag=stop))
print(json.dumps(result))
"""


def _run(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _create(api_client: client.ApiClient, namespace: str, first: int, last: int) -> None:
    custom = client.CustomObjectsApi(api_client)
    create = functools.partial(
        custom.create_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL
    )
    documents = [document(f"p-{i:05d}", namespace, "Stopped") for i in range(first, last)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, documents))


def kopf_against_own_informers(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    sizes: list[int],
) -> None:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    print("\nstart-up with N pipelines present: own informers vs kopf (fresh processes)")
    created = 0
    for size in sorted(sizes):
        _create(api_client, namespace, created, size)
        created = size
        own = _run(OWN, namespace)
        kopf = _run(KOPF, namespace, str(size))
        print(
            f"  {size:>6}: own informers synced {own['synced']:.2f} s ({own['cpu']:.2f} s CPU); "
            f"kopf index filled {kopf['indexed']:.2f} s ({kopf['indexed_cpu']:.2f} s CPU), "
            f"an event handler called for each {kopf['all_events']:.2f} s "
            f"({kopf['all_events_cpu']:.2f} s CPU)"
        )
    kubectl("-n", namespace, "delete", "pipelines", "--all", "--wait=false", timeout=600)


def test_kopf_against_own_informers(
    crd: None, kubectl: Kubectl, api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    kopf_against_own_informers(kubectl, api_client, namespace, kubeconfig, SIZES)
