"""What the engine pipeline (tests/pipeline) says about itself, read from its pod.

Two sources: its stdout (`kubectl logs`), one JSON object a line with an "event"
("started", "checkpoint", "stopping", "stopped", "sigterm_ignored", "error"), and its
`GET /status`, read with `engine-pipeline status` through `kubectl exec`: pods on the local
node are not reachable from the host.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Protocol

# Where the image puts the program (its entrypoint).
BINARY = "/usr/local/bin/engine-pipeline"

Event = dict[str, Any]


class Kubectl(Protocol):
    """Like localkube.fixtures.Kubectl (the `kubectl` fixture)."""

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def parse_events(text: str) -> list[Event]:
    """The pipeline's reports in `text`, in order; lines that are not its JSON are skipped."""
    events: list[Event] = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "event" in value:
            events.append(value)
    return events


def events(kubectl: Kubectl, pod: str, namespace: str, *, previous: bool = False) -> list[Event]:
    """The reports in the pod's log; `previous` for the container's last run before a restart."""
    args = ["logs", pod, "-n", namespace] + (["--previous"] if previous else [])
    return parse_events(kubectl(*args).stdout)


def of_kind(reports: list[Event], event: str) -> list[Event]:
    return [r for r in reports if r["event"] == event]


def status(kubectl: Kubectl, pod: str, namespace: str, port: int = 8080) -> dict[str, Any]:
    """The pipeline's `/status`: resumed_from, steps, checkpoints_taken, last_checkpoint,
    total, expected_total, storage_dir."""
    out = kubectl("exec", pod, "-n", namespace, "--", BINARY, "status", "--port", str(port))
    value: dict[str, Any] = json.loads(out.stdout)
    return value
