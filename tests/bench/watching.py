"""Timing helpers for benchmarks: wait on a watch (not by polling) until enough objects of a
list satisfy a predicate, so that Sluice and kube-controller-manager are timed alike."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integration.metrics import WRITE_VERBS, requests_by_verb
from kubernetes import watch
from localkube.fixtures import Kubectl

Obj = dict[str, Any]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def watch_until(
    list_call: Callable[..., Any],
    matches: Callable[[Obj], bool],
    done: Callable[[int], bool],
    timeout: float,
    what: str,
) -> float:
    """perf_counter() at the first moment `done(number of objects that match)` holds."""
    deadline = time.monotonic() + timeout
    listed = json.loads(list_call(_preload_content=False).data)
    matching = {o["metadata"]["name"] for o in listed["items"] if matches(o)}
    version = listed["metadata"]["resourceVersion"]
    while not done(len(matching)):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        stream = watch.Watch().stream(
            list_call, resource_version=version, timeout_seconds=max(1, int(left))
        )
        for event in stream:
            obj = event["raw_object"]
            version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"]["name"]
            if event["type"] != "DELETED" and matches(obj):
                matching.add(name)
            else:
                matching.discard(name)
            if done(len(matching)):
                break
    return time.perf_counter()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def wait_quiet(read: Callable[[], float], quiet: float = 1.0, timeout: float = 120) -> None:
    """Until `read()` (a counter: CPU seconds, requests) stays the same for `quiet` seconds:
    the work it counts is over, however long it took."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout}s: {last}")
        time.sleep(quiet / 5)
        now = read()
        if now != last:
            last, since = now, time.monotonic()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


RESOURCES = {
    "pipelines",
    "statefulsets",
    "services",
    "pods",
    "persistentvolumeclaims",
    "persistentvolumes",
    "events",
}


class Requests:
    """The API server's request counters between two instants, for our resources."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.before = requests_by_verb(kubectl)

    def delta(self) -> Counter[tuple[str, str]]:
        after = requests_by_verb(self.kubectl)
        return Counter(
            {
                key: after[key] - self.before[key]
                for key in after
                if key[1].split("/")[0] in RESOURCES and after[key] != self.before[key]
            }
        )


def reads_and_writes(counts: Counter[tuple[str, str]]) -> tuple[int, int]:
    writes = sum(n for (verb, _), n in counts.items() if verb in WRITE_VERBS)
    reads = sum(n for (verb, _), n in counts.items() if verb in {"GET", "LIST"})
    return reads, writes


def by_verb(counts: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{verb} {resource}: {n}" for (verb, resource), n in sorted(counts.items()))
