"""Timing helpers for benchmarks: wait on a watch (not by polling) until enough objects of a
list satisfy a predicate, so that Sluice and kube-controller-manager are timed alike."""

from __future__ import annotations

import json
import os
import re
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
    on_event: Callable[[str, Obj, float], None] | None = None,
) -> float:
    """perf_counter() at the first moment `done(number of objects that match)` holds.
    `on_event(type, object, perf_counter())` sees every watch event on the way (timelines)."""
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
            if on_event is not None:
                on_event(event["type"], obj, time.perf_counter())
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


def cpu_by_command() -> dict[str, float]:
    """CPU seconds used so far by every running process, summed by command name (the
    process's comm): taken before and after a phase, where the machine's CPU went."""
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        head, tail = text.rsplit(")", 1)
        fields = tail.split()
        command = head.split("(", 1)[1]
        if command.startswith("python"):  # which Python: the operator, or this client
            command = _python_program(stat.parent / "cmdline")
        used[command] = used.get(command, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return used


def _python_program(cmdline: Path) -> str:
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:
        return "python"
    words = [a.decode(errors="replace") for a in argv]
    if any("pytest" in w for w in words):
        return "pytest (this benchmark)"
    if "sluice" in words or any(w.endswith("/sluice") for w in words):
        return "sluice operator"
    return "python"


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


_DURATION_SUM = re.compile(
    r"^apiserver_request_duration_seconds_sum\{(?P<labels>[^}]*)\} (?P<value>\S+)$"
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def request_seconds(kubectl: Kubectl) -> dict[tuple[str, str], float]:
    """The API server's time spent in requests so far (the sum of their latencies), keyed
    (verb, resource[/subresource]); watches and other long-running requests left out."""
    seconds: dict[tuple[str, str], float] = {}
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        match = _DURATION_SUM.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource, verb = labels.get("resource", ""), labels.get("verb", "")
        if not resource or verb in {"WATCH", "CONNECT"}:
            continue
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        seconds[(verb, resource)] = seconds.get((verb, resource), 0.0) + float(match["value"])
    return seconds


class Requests:
    """The API server's request counters between two instants, for our resources."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.before = requests_by_verb(kubectl)
        self.seconds_before = request_seconds(kubectl)

    def seconds(self) -> dict[tuple[str, str], float]:
        """Time the API server spent in each kind of request since (all resources)."""
        after = request_seconds(self.kubectl)
        spent = {key: s - self.seconds_before.get(key, 0.0) for key, s in after.items()}
        return {key: s for key, s in spent.items() if s > 0}

    def delta(self) -> Counter[tuple[str, str]]:
        """Requests since, for the resources a clear touches (RESOURCES); the others (the
        endpoint controllers', leases, ...) summed by resource under the verb "*"."""
        after = requests_by_verb(self.kubectl)
        counts: Counter[tuple[str, str]] = Counter()
        for key in after:
            n = after[key] - self.before[key]
            if n <= 0 or key[1] == "":
                continue
            if key[1].split("/")[0] in RESOURCES:
                counts[key] += n
            else:
                counts[("*", key[1])] += n
        return counts


def ours(counts: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Without the other resources' sums (see Requests.delta)."""
    return Counter({key: n for key, n in counts.items() if key[0] != "*"})


def others(counts: Counter[tuple[str, str]], top: int = 6) -> str:
    """The other resources with the most requests: `endpointslices 412, leases 40`."""
    rest = Counter({key[1]: n for key, n in counts.items() if key[0] == "*"})
    return ", ".join(f"{resource} {n}" for resource, n in rest.most_common(top))


def reads_and_writes(counts: Counter[tuple[str, str]]) -> tuple[int, int]:
    writes = sum(n for (verb, _), n in counts.items() if verb in WRITE_VERBS)
    reads = sum(n for (verb, _), n in counts.items() if verb in {"GET", "LIST"})
    return reads, writes


def by_verb(counts: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{verb} {resource}: {n}" for (verb, resource), n in sorted(counts.items()))
