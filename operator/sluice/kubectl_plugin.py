"""`kubectl sluice`: clear storage, undo a clear and show pipelines from the command line.

    kubectl sluice clear NAME [--stop] [--wait] [--timeout 5m]
    kubectl sluice status [NAME] [-A] [-o json|yaml|wide]
    kubectl sluice snapshots NAME [-o json|yaml]
    kubectl sluice restore NAME --from SNAPSHOT [--start]

`snapshots` lists the VolumeSnapshots taken before clears (spec.storage.snapshotBeforeClear),
also those of a deleted Pipeline of that name, which are kept until they expire.
`restore` sets spec.storage.restoreFrom: the next claim is restored from the snapshot. It is
accepted only while storage is Cleared; the restore happens when the pipeline (re)starts.

kubectl's flags work anywhere on the line, as with kubectl itself:
    -n/--namespace NS, --context NAME, --kubeconfig PATH, and -A/--all-namespaces for status.
Without -n the namespace is the kubeconfig context's, else "default".

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

import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sluice.api import v1alpha1 as api
from sluice.core.labels import (
    PIPELINE_LABEL,
    PIPELINE_UID_LABEL,
    SNAPSHOT_API_GROUP,
    SNAPSHOT_API_VERSION,
    SNAPSHOT_EXPIRES_AT,
    SNAPSHOT_OF_CLAIM,
)
from sluice.transient import api_server_message

REFUSED, TIMED_OUT = 1, 2
SNAPSHOTS = "volumesnapshots"


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 5m)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace kubectl would use: the chosen (or current) context's, else "default"."""
    try:
        contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        chosen = next(c for c in contexts if c["name"] == context) if context else current
        return str(chosen["context"].get("namespace") or "default")
    except (config.ConfigException, StopIteration, KeyError, TypeError):
        return "default"


class Pipelines:
    """Pipelines in one namespace, or in all (namespace None), through one kubeconfig context."""

    def __init__(self, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, persist_config=False
        )
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    @property
    def _ns(self) -> str:
        assert self.namespace is not None, "one namespace is needed here"
        return self.namespace

    def get(self, name: str) -> dict[str, Any]:
        obj: Any = self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, self._ns, api.PLURAL, name
        )
        return dict(obj)

    def snapshots(self, pipeline: str) -> list[dict[str, Any]]:
        """The VolumeSnapshots labelled with the pipeline's name: also those of a deleted
        Pipeline of that name (its status is gone, the snapshots stay until they expire)."""
        listed: Any = self.custom.list_namespaced_custom_object(
            SNAPSHOT_API_GROUP,
            SNAPSHOT_API_VERSION,
            self._ns,
            SNAPSHOTS,
            label_selector=f"{PIPELINE_LABEL}={pipeline}",
        )
        return list(listed["items"])

    def snapshot(self, name: str) -> dict[str, Any]:
        obj: Any = self.custom.get_namespaced_custom_object(
            SNAPSHOT_API_GROUP, SNAPSHOT_API_VERSION, self._ns, SNAPSHOTS, name
        )
        return dict(obj)

    def list(self) -> list[dict[str, Any]]:
        listed: Any = (
            self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
            if self.namespace is None
            else self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.PLURAL
            )
        )
        return list(listed["items"])

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: Any = self.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, self._ns, api.PLURAL, name, body
        )
        return dict(obj)


def _pipelines(args: argparse.Namespace) -> Pipelines:
    all_namespaces = getattr(args, "all_namespaces", False)
    namespace = (
        None
        if all_namespaces
        else (args.namespace or _context_namespace(args.kubeconfig, args.context))
    )
    return Pipelines(namespace, args.kubeconfig, args.context)


def clear(args: argparse.Namespace, out: TextIO) -> int:
    pipelines = _pipelines(args)
    request = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # actionClearRequest: a request made on the live object, never git's clearRequest (which
    # a GitOps tool's selfHeal would put back over this one; docs/gitops.md).
    spec: dict[str, Any] = {"storage": {"actionClearRequest": request}}
    if args.stop:
        spec["desiredState"] = "Stopped"
    try:
        pipelines.patch(args.name, {"spec": spec})
    except ApiException as error:
        print(f"error: {api_server_message(error)}", file=sys.stderr)
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
    if storage.get("lastActionClearRequest") == request and storage.get("status") == "Cleared":
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
WIDE_COLUMNS = ("CLAIMS", "RETAINED", "READY")


def _retained(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes whose data outlived a clear by policy (status.storage.retainedVolumes)."""
    storage = (obj.get("status") or {}).get("storage") or {}
    return list(storage.get("retainedVolumes") or [])


def _last_clears(storage: dict[str, Any]) -> str:
    """The handled requests of both kinds: clearRequest's (git's, an apply's) and
    actionClearRequest's (`kubectl sluice clear`, the REST API, Argo CD's action)."""
    git, action = storage.get("lastClearRequest"), storage.get("lastActionClearRequest")
    shown = [str(git)] if git else []
    if action:
        shown.append(f"{action} (action)")
    return ", ".join(shown) or "-"


def _row(obj: dict[str, Any], wide: bool) -> tuple[str, ...]:
    st = obj.get("status") or {}
    storage = st.get("storage") or {}
    row: tuple[str, ...] = (
        obj["metadata"]["name"],
        obj["spec"].get("desiredState", ""),
        st.get("deploymentStatus", "-"),
        storage.get("status", "-"),
        _last_clears(storage),
        (st.get("error") or {}).get("error_code") or "-",
    )
    if wide:
        ready: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        retained = [v.get("persistentVolume", "?") for v in _retained(obj)]
        row += (
            ",".join(storage.get("claims") or []) or "-",
            ",".join(retained) or "-",
            f"{ready.get('status', '-')}/{ready.get('reason', '-')}" if ready else "-",
        )
    return row


def table(items: list[dict[str, Any]], all_namespaces: bool, wide: bool) -> list[str]:
    header: tuple[str, ...] = COLUMNS + (WIDE_COLUMNS if wide else ())
    items = sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    rows = [_row(obj, wide) for obj in items]
    if all_namespaces:
        header = ("NAMESPACE", *header)
        rows = [(obj["metadata"]["namespace"], *row) for obj, row in zip(items, rows, strict=True)]
    rows.insert(0, header)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def retained_lines(obj: dict[str, Any]) -> list[str]:
    """Where a single pipeline's data remains after a clear, one line per volume."""
    return [
        f"Retained: PersistentVolume {v.get('persistentVolume')} (was claim {v.get('claim')}, "
        f"reclaimPolicy {v.get('reclaimPolicy')}, storageClass {v.get('storageClassName') or '-'})"
        for v in _retained(obj)
    ]


def _storage(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("storage") or {})


def snapshot_lines(obj: dict[str, Any]) -> list[str]:
    """A single pipeline's kept snapshots (status.storage.snapshots) and what its claim was
    restored from, one line each: what `kubectl sluice restore` can take."""
    storage = _storage(obj)
    lines = []
    if storage.get("restoredFrom"):
        lines.append(f"Restored from: VolumeSnapshot {storage['restoredFrom']}")
    for s in storage.get("snapshots") or []:
        ready = "ready" if s.get("readyToUse") else "not ready"
        size = f", restore size {s['restoreSize']}" if s.get("restoreSize") else ""
        lines.append(
            f"Snapshot: {s.get('name')} of claim {s.get('claim')} ({ready}{size}, "
            f"taken {s.get('takenAt') or '-'}, expires {s.get('expiresAt') or '-'})"
        )
    if storage.get("snapshots") and storage.get("status") == "Cleared":
        name = obj["metadata"]["name"]
        lines.append(f"Restore one: kubectl sluice restore {name} --from SNAPSHOT")
    return lines


def status(args: argparse.Namespace, out: TextIO) -> int:
    all_namespaces = bool(args.all_namespaces)
    if all_namespaces and args.name:
        print("error: a pipeline name cannot be given with --all-namespaces", file=sys.stderr)
        return REFUSED
    pipelines = _pipelines(args)
    try:
        items = [pipelines.get(args.name)] if args.name else pipelines.list()
    except ApiException as error:
        print(f"error: {api_server_message(error)}", file=sys.stderr)
        return REFUSED
    output = args.output or ""
    if output in ("json", "yaml"):
        # As kubectl prints: the object for one name, else a v1 List.
        document: dict[str, Any] = (
            items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        )
        if output == "json":
            print(json.dumps(document, indent=4), file=out)
        else:
            print(yaml.safe_dump(document, sort_keys=False).rstrip("\n"), file=out)
        return 0
    lines = table(items, all_namespaces, wide=output == "wide")
    if args.name:
        lines += retained_lines(items[0])
        lines += snapshot_lines(items[0])
    print("\n".join(lines), file=out)
    return 0


SNAPSHOT_COLUMNS = ("NAME", "CLAIM", "READY", "RESTORE-SIZE", "TAKEN", "EXPIRES")


def _snapshot_row(snapshot: dict[str, Any]) -> tuple[str, ...]:
    meta = snapshot["metadata"]
    annotations = meta.get("annotations") or {}
    source = (snapshot.get("spec") or {}).get("source") or {}
    st = snapshot.get("status") or {}
    return (
        meta["name"],
        annotations.get(SNAPSHOT_OF_CLAIM) or source.get("persistentVolumeClaimName") or "-",
        "true" if st.get("readyToUse") else "false",
        str(st.get("restoreSize") or "-"),
        meta.get("creationTimestamp") or "-",
        # Being deleted: expired (or deleted by hand); it cannot be restored any more.
        "deleting" if meta.get("deletionTimestamp") else annotations.get(SNAPSHOT_EXPIRES_AT, "-"),
    )


def snapshot_table(snapshots: list[dict[str, Any]]) -> list[str]:
    """The snapshots as a table, oldest first, then a line per snapshot controller error."""
    ordered = sorted(
        snapshots,
        key=lambda s: (s["metadata"].get("creationTimestamp") or "", s["metadata"]["name"]),
    )
    rows = [SNAPSHOT_COLUMNS, *(_snapshot_row(s) for s in ordered)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SNAPSHOT_COLUMNS))]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for s in ordered:
        st = s.get("status") or {}
        message = (st.get("error") or {}).get("message")
        if message and not st.get("readyToUse"):
            lines.append(f"Error: {s['metadata']['name']}: {message}")
    return lines


def _of_earlier_pipeline(snapshots: list[dict[str, Any]], pipeline: dict[str, Any] | None) -> int:
    """How many were taken of a Pipeline object that is gone (another UID, or none now)."""
    uid = (pipeline or {}).get("metadata", {}).get("uid")
    return sum(
        1
        for s in snapshots
        if ((s["metadata"].get("labels") or {}).get(PIPELINE_UID_LABEL) or None) != uid
    )


def list_snapshots(args: argparse.Namespace, out: TextIO) -> int:
    pipelines = _pipelines(args)
    try:
        pipeline: dict[str, Any] | None = pipelines.get(args.name)
    except ApiException as error:
        if error.status != 404:
            print(f"error: {api_server_message(error)}", file=sys.stderr)
            return REFUSED
        pipeline = None  # deleted: its snapshots are found by their label
    try:
        found = pipelines.snapshots(args.name)
    except ApiException as error:
        if error.status == 404:
            print(
                "error: the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io/"
                f"{SNAPSHOT_API_VERSION}): there are no snapshots to list",
                file=sys.stderr,
            )
        else:
            print(f"error: listing VolumeSnapshots: {api_server_message(error)}", file=sys.stderr)
        return REFUSED
    output = args.output or ""
    if output in ("json", "yaml"):
        document = {"apiVersion": "v1", "kind": "List", "items": found}
        if output == "json":
            print(json.dumps(document, indent=4), file=out)
        else:
            print(yaml.safe_dump(document, sort_keys=False).rstrip("\n"), file=out)
        return 0
    where = f"in namespace {pipelines.namespace}"
    if not found and pipeline is None:
        print(f"error: no Pipeline {args.name} and no snapshots of one {where}", file=sys.stderr)
        return REFUSED
    if not found:
        # As kubectl says it: on stderr, and not an error.
        print(f"No snapshots of pipeline {args.name} {where}.", file=sys.stderr)
        return 0
    print("\n".join(snapshot_table(found)), file=out)
    if pipeline is None:
        print(
            f"Pipeline {args.name} does not exist {where}: these snapshots of a deleted "
            "Pipeline of that name are kept until they expire. To restore one, create the "
            f"Pipeline with spec.storage.restoreFrom: SNAPSHOT.",
            file=out,
        )
    elif earlier := _of_earlier_pipeline(found, pipeline):
        print(f"{earlier} of them were taken of an earlier Pipeline named {args.name}.", file=out)
    return 0


def restore(args: argparse.Namespace, out: TextIO) -> int:
    """Set spec.storage.restoreFrom (and with --start, desiredState: Running). The API
    server refuses restoreFrom unless storage is Cleared: its message is printed."""
    pipelines = _pipelines(args)
    name, snapshot = args.name, args.snapshot
    try:
        obj = pipelines.get(name)
    except ApiException as error:
        print(f"error: {api_server_message(error)}", file=sys.stderr)
        return REFUSED
    storage_spec = (obj.get("spec") or {}).get("storage") or {}
    if storage_spec.get("restoreFrom") == snapshot and (
        _storage(obj).get("lastRestoreFrom") == snapshot
    ):
        # The operator restores each value once (a GitOps manifest may keep it set).
        print(
            f"error: pipeline {name} was already restored from {snapshot} "
            "(status.storage.lastRestoreFrom); a value of spec.storage.restoreFrom is "
            "restored once. To restore it again, remove spec.storage.restoreFrom, wait until "
            "status.storage.lastRestoreFrom is gone, then run this again.",
            file=sys.stderr,
        )
        return REFUSED
    try:
        found: dict[str, Any] | None = pipelines.snapshot(snapshot)
    except ApiException as error:
        if error.status == 404:
            print(
                f"error: VolumeSnapshot {snapshot} not found in namespace "
                f"{pipelines.namespace}; see kubectl sluice snapshots {name}",
                file=sys.stderr,
            )
            return REFUSED
        found = None  # e.g. not allowed to read VolumeSnapshots: the operator checks it
    body: dict[str, Any] = {"spec": {"storage": {"restoreFrom": snapshot}}}
    if args.start:
        body["spec"]["desiredState"] = "Running"
    try:
        patched = pipelines.patch(name, body)
    except ApiException as error:
        print(f"error: {api_server_message(error)}", file=sys.stderr)
        if error.status == 422 and _storage(obj).get("status") != "Cleared":
            print(
                f"hint: a restore replaces the next claim, so storage must be Cleared first: "
                f"kubectl sluice clear {name} --stop --wait (this deletes the current "
                "storage; with spec.storage.snapshotBeforeClear a snapshot of it is kept)",
                file=sys.stderr,
            )
        return REFUSED
    print(f"pipeline {name}: spec.storage.restoreFrom set to {snapshot}", file=out)
    if found is not None and not (found.get("status") or {}).get("readyToUse"):
        print(
            f"warning: VolumeSnapshot {snapshot} is not readyToUse yet; the claim is created "
            "once it is",
            file=sys.stderr,
        )
    if patched["spec"].get("desiredState") == "Running":
        print(
            f"The next claim is restored from {snapshot} as the pipeline starts; "
            f"follow it with kubectl sluice status {name}",
            file=out,
        )
    else:
        print(
            f"The pipeline is Stopped: the claim is restored from {snapshot} when it starts "
            f"(kubectl sluice restore {name} --from {snapshot} --start, or set "
            "spec.desiredState: Running)",
            file=out,
        )
    return 0


def _kubectl_flags(all_namespaces: bool) -> argparse.ArgumentParser:
    """kubectl's global flags, accepted before and after the subcommand. SUPPRESS keeps a
    subcommand's absent flag from overwriting one given before it (argparse's defaults)."""
    flags = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    flags.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    flags.add_argument("--context", help="the kubeconfig context to use")
    flags.add_argument("--kubeconfig", help="path to the kubeconfig file")
    if all_namespaces:
        flags.add_argument(
            "-A", "--all-namespaces", action="store_true", help="pipelines of every namespace"
        )
    return flags


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl sluice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_kubectl_flags(all_namespaces=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser(
        "clear", help="request a storage clear", parents=[_kubectl_flags(all_namespaces=False)]
    )
    c.add_argument("name")
    c.add_argument("--stop", action="store_true", help="stop the pipeline in the same step")
    c.add_argument("--wait", action="store_true", help="wait until storage is Cleared")
    c.add_argument("--timeout", type=_duration, default=300.0, help="with --wait (default 5m)")
    s = commands.add_parser(
        "status", help="show pipelines as a table", parents=[_kubectl_flags(all_namespaces=True)]
    )
    s.add_argument("name", nargs="?")
    s.add_argument("-o", "--output", choices=["json", "yaml", "wide"], help="output format")
    n = commands.add_parser(
        "snapshots",
        help="list a pipeline's snapshots (also of a deleted one)",
        parents=[_kubectl_flags(all_namespaces=False)],
    )
    n.add_argument("name")
    n.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")
    r = commands.add_parser(
        "restore",
        help="restore the next claim from a snapshot (storage must be Cleared)",
        parents=[_kubectl_flags(all_namespaces=False)],
    )
    r.add_argument("name")
    r.add_argument(
        "--from", dest="snapshot", required=True, metavar="SNAPSHOT", help="a VolumeSnapshot"
    )
    r.add_argument("--start", action="store_true", help="also set desiredState: Running")
    args = parser.parse_args(argv)
    for flag in ("namespace", "context", "kubeconfig"):
        setattr(args, flag, getattr(args, flag, None))
    args.all_namespaces = getattr(args, "all_namespaces", False)
    if args.all_namespaces and args.command != "status":
        parser.error(f"{args.command} acts on one pipeline: -A/--all-namespaces is for status")
    return args


HANDLERS = {"clear": clear, "status": status, "snapshots": list_snapshots, "restore": restore}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return HANDLERS[args.command](args, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
