"""The API server's request counters, read from its /metrics endpoint."""

from __future__ import annotations

import re
from collections import Counter

from localkube.fixtures import Kubectl

WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
OWNED_RESOURCES = {"pipelines", "statefulsets", "persistentvolumeclaims", "services"}
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def write_requests(kubectl: Kubectl) -> Counter[str]:
    """Write requests so far, keyed "VERB resource[/subresource]"."""
    counts: Counter[str] = Counter()
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels['verb']} {resource}"] += int(float(match["value"]))
    return counts


def writes(kubectl: Kubectl, resources: set[str]) -> int:
    return sum(
        n for key, n in write_requests(kubectl).items() if key.split()[1].split("/")[0] in resources
    )


def requests_by_verb(kubectl: Kubectl) -> Counter[tuple[str, str]]:
    """All requests so far, keyed (verb, resource[/subresource]); GET is one object by
    name, LIST a collection, WATCH a watch."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if not resource:
            continue
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels.get("verb", ""), resource)] += int(float(match["value"]))
    return counts
