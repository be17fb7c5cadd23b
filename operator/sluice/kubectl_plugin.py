"""`kubectl sluice`: clear storage and show pipelines from the command line.

    kubectl sluice clear NAME [--stop] [--wait] [--timeout 5m] [-n NAMESPACE]
    kubectl sluice status [NAME] [-n NAMESPACE]

Installed as the console script `kubectl-sluice`, which kubectl finds on PATH.
Exit codes: 0 done, 1 refused (the API server's message is printed), 2 timed out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sluice.api import v1alpha1 as api

REFUSED, TIMED_OUT = 1, 2


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 5m)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        return str(context["context"].get("namespace") or "default")
    except (config.ConfigException, KeyError, TypeError):
        return "default"


class Pipelines:
    def __init__(self, namespace: str) -> None:
        config.load_kube_config()  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi()
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any]:
        obj: Any = self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name
        )
        return dict(obj)

    def list(self) -> list[dict[str, Any]]:
        listed: Any = self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL
        )
        return list(listed["items"])

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: Any = self.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name, body
        )
        return dict(obj)


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{error.status} {error.reason}"


def clear(args: argparse.Namespace, out: TextIO) -> int:
    pipelines = Pipelines(_namespace(args.namespace))
    request = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec: dict[str, Any] = {"storage": {"clearRequest": request}}
    if args.stop:
        spec["desiredState"] = "Stopped"
    try:
        pipelines.patch(args.name, {"spec": spec})
    except ApiException as error:
        print(f"error: {_api_message(error)}", file=sys.stderr)
        if error.status == 422 and not args.stop:
            print("hint: add --stop to stop the pipeline and clear in one step", file=sys.stderr)
        return REFUSED
    print(f"pipeline {args.name}: clear requested ({request})", file=out)
    if not args.wait:
        return 0
    return _wait_cleared(pipelines, args.name, request, args.timeout, out)


def _phase(obj: dict[str, Any], request: str) -> str:
    status = obj.get("status") or {}
    storage = status.get("storage") or {}
    if storage.get("lastClearRequest") == request and storage.get("status") == "Cleared":
        return "Cleared"
    if storage.get("status") == "Clearing":
        return "Clearing"
    if status.get("deploymentStatus") not in (None, "Stopped"):
        return "Stopping"
    return "Waiting"


def _wait_cleared(
    pipelines: Pipelines, name: str, request: str, timeout: float, out: TextIO
) -> int:
    started = time.monotonic()
    phase = ""
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    deadline = started + timeout
    while time.monotonic() < deadline:
        for event in stream.stream(  # type: ignore[no-untyped-call]
            pipelines.custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            pipelines.namespace,
            api.PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(deadline - time.monotonic())),
        ):
            phase = _phase(event["object"], request)
            elapsed = time.monotonic() - started
            out.write(f"\r{name}: {phase:<9} {elapsed:6.1f}s")
            out.flush()
            if phase == "Cleared":
                out.write("\n")
                return 0
            if time.monotonic() >= deadline:
                break
    out.write("\n")
    print(
        f"error: timed out after {timeout:.0f}s waiting for {name} to be Cleared "
        f"(last seen: {phase or 'nothing'})",
        file=sys.stderr,
    )
    return TIMED_OUT


COLUMNS = ("NAME", "DESIRED", "DEPLOYMENT", "STORAGE", "LAST-CLEAR", "ERROR")


def status(args: argparse.Namespace, out: TextIO) -> int:
    pipelines = Pipelines(_namespace(args.namespace))
    try:
        items = [pipelines.get(args.name)] if args.name else pipelines.list()
    except ApiException as error:
        print(f"error: {_api_message(error)}", file=sys.stderr)
        return REFUSED
    rows = [COLUMNS]
    for obj in sorted(items, key=lambda o: o["metadata"]["name"]):
        st = obj.get("status") or {}
        storage = st.get("storage") or {}
        rows.append(
            (
                obj["metadata"]["name"],
                obj["spec"].get("desiredState", ""),
                st.get("deploymentStatus", "-"),
                storage.get("status", "-"),
                storage.get("lastClearRequest") or "-",
                (st.get("error") or {}).get("error_code") or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print(
            "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl sluice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("clear", help="request a storage clear")
    c.add_argument("name")
    c.add_argument("--stop", action="store_true", help="stop the pipeline in the same step")
    c.add_argument("--wait", action="store_true", help="wait until storage is Cleared")
    c.add_argument("--timeout", type=_duration, default=300.0, help="with --wait (default 5m)")
    s = commands.add_parser("status", help="show pipelines as a table")
    s.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    handler = clear if args.command == "clear" else status
    return handler(args, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
