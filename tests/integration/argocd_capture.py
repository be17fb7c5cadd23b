"""Argo CD's Lua sandbox emulated with a real Lua 5.1, and the capture of real Pipelines.

`ArgoLua` runs health.lua, discovery.lua and action.lua the way Argo CD's
util/lua does: Lua 5.1 semantics (gopher-lua), only the base, package and table
libraries plus a safe `os` with `date` and `time` (no string, math, io), the
object as the global `obj` (maps as tables, lists as 1-based tables), and the
returned table converted back like gopher-json does (an empty table is `[]`,
which Argo CD's cleanReturnedObj turns back into `{}` where the input had a map).

`drive_states` puts real pipelines into every state the health check knows,
with the real operator, and returns the live objects; `write_testdata`
regenerates deploy/argocd/.../testdata, health_test.yaml, action_test.yaml and
argocd-cm-patch.yaml from them (SLUICE_CAPTURE_ARGOCD=1, see test_argocd.py).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import yaml
from kubernetes import client
from localkube.cluster import REPO
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    apply,
    claim_policy,
    condition,
    failed_pod,
    get,
    hold,
    manifest,
    patch,
    pipeline_claim,
    release,
    stop_and_clear,
    wait_condition,
    wait_jsonpath,
)

ARGOCD = REPO / "deploy/argocd"
CUSTOM = ARGOCD / "resource_customizations/sluice.dev/Pipeline"
ACTIONS = CUSTOM / "actions"
CM_PATCH = ARGOCD / "argocd-cm-patch.yaml"
ACTION_NAMES = ("clear-storage", "start", "stop")
HEALTH_CODES = {"Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing"}

# The clock of the action tests: os.date() in action.lua sees this instant.
FROZEN_TIME = 1795860000
FROZEN_STAMP = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FROZEN_TIME))


_SANDBOX = """
function(frozen)
  local date, time = os.date, os.time
  local safe = {
    date = function(format, t) return date(format, t or frozen) end,
    time = function(t)
      if t == nil then return frozen or time() end
      return time(t)
    end,
  }
  -- gopher-lua without its string library has no string methods either.
  getmetatable("").__index = nil
  string, math, io, debug, coroutine = nil, nil, nil, nil, nil
  for _, name in ipairs({"string", "math", "io", "debug", "coroutine"}) do
    package.loaded[name] = nil
  end
  os = safe
  package.loaded.os = safe
end
"""


class LuaError(Exception):
    pass


class ArgoLua:
    """One fresh Lua state per run, as Argo CD's VM.runLua makes."""

    def __init__(self, frozen_time: int | None = None) -> None:
        self.frozen_time = frozen_time

    def run(self, script: str, obj: dict[str, Any]) -> Any:
        lua = lua51.LuaRuntime(unpack_returned_tuples=False)
        lua.eval(_SANDBOX)(self.frozen_time)
        lua.globals().obj = _to_lua(lua, obj)
        try:
            result = lua.execute(script)
        except lua51.LuaError as error:
            raise LuaError(str(error)) from error
        if lua51.lua_type(result) != "table":
            raise LuaError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
        return _from_lua(result)

    def health(self, obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
        """Like ExecuteHealthLua: {status, message}; an unknown status becomes Unknown."""
        result = self.run(script or (CUSTOM / "health.lua").read_text(), obj)
        if not isinstance(result, dict) or result.get("status") not in HEALTH_CODES:
            return {"status": "Unknown", "message": "Lua returned an invalid health status"}
        return {"status": str(result["status"]), "message": str(result.get("message", ""))}

    def discover(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """Like ExecuteResourceActionDiscovery, as a list sorted by name."""
        result = self.run((ACTIONS / "discovery.lua").read_text(), obj)
        if result == []:
            return []
        assert isinstance(result, dict), result
        out = []
        for name, value in result.items():
            action: dict[str, Any] = {"name": name, "disabled": False}
            if isinstance(value, dict):
                action.update(value)
                action["disabled"] = value.get("disabled") is True
            out.append(action)
        return sorted(out, key=lambda a: str(a["name"]))

    def act(self, action: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Like ExecuteResourceAction for an old-style (patch) action returning obj."""
        result = self.run((ACTIONS / action / "action.lua").read_text(), obj)
        assert isinstance(result, dict), result
        return clean_returned(result, obj)


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    return value


def _from_lua(value: Any) -> Any:
    """Like gopher-json's encoder: 1..n keys make a list, string keys a map, empty is []."""
    if lua51.lua_type(value) == "table":
        items = list(value.items())
        if not items:
            return []
        keys = [k for k, _ in items]
        if all(isinstance(k, str) for k in keys):
            return {k: _from_lua(v) for k, v in items}
        numbers = sorted(k for k in keys if isinstance(k, int | float))
        if len(numbers) == len(keys) and numbers == list(range(1, len(keys) + 1)):
            return [_from_lua(value[i]) for i in numbers]
        raise LuaError(f"cannot encode a table with keys {keys!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes):
        return value.decode()
    return value


def clean_returned(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Argo CD's cleanReturnedObj: an empty list where the input had a map is a map again."""
    for key, old_value in old.items():
        if key not in new:
            continue
        new_value = new[key]
        if isinstance(new_value, dict) and isinstance(old_value, dict):
            new[key] = clean_returned(new_value, old_value)
        elif isinstance(new_value, list):
            if isinstance(old_value, dict) and not new_value:
                new[key] = old_value
            elif isinstance(old_value, list):
                new[key] = _clean_returned_list(new_value, old_value)
    return new


def _clean_returned_list(new: list[Any], old: list[Any]) -> list[Any]:
    for i, new_value in enumerate(new):
        old_value = old[i] if i < len(old) else None
        if isinstance(new_value, dict) and isinstance(old_value, dict):
            new[i] = clean_returned(new_value, old_value)
        elif isinstance(new_value, list) and isinstance(old_value, list):
            new[i] = _clean_returned_list(new_value, old_value)
    return new


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch from old to new (what Argo CD sends for an action's result)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_patch(old[key], value)
    return out


# ---- the states, as expected independently of the Lua ---------------------------------


@dataclass(frozen=True)
class Case:
    status: str
    fragment: str  # a phrase the health message must contain


CASES: dict[str, Case] = {
    "no_status": Case("Progressing", "Waiting for the Sluice operator"),
    "generation_behind": Case("Progressing", "Waiting for the operator to act on generation"),
    "provisioning": Case("Progressing", "Provisioning"),
    "running": Case("Healthy", "Running as desired; storage InUse"),
    "stopping": Case("Progressing", "Stopping"),
    "stopped": Case("Suspended", "Stopped as desired; storage InUse"),
    "waiting_for_stop": Case("Progressing", "Clear requested (r1); waiting for the pipeline"),
    "clearing": Case("Progressing", "Clearing storage (r1)"),
    "start_while_clearing": Case("Progressing", "cannot start while its storage is being cleared"),
    "cleared": Case("Suspended", "Stopped as desired; storage Cleared"),
    "failed": Case("Degraded", "Deployment status is Failed. Pod failed-extra failed: "),
    "clear_failed": Case("Degraded", "StorageClearFailed"),
    "reconcile_failed": Case("Degraded", "ReconcileFailed"),
}


def _disc(clear: bool, stop: bool, start: bool) -> list[dict[str, Any]]:
    """Expected discovery result; the arguments say which actions are enabled."""
    return [
        {
            "name": "clear-storage",
            "disabled": not clear,
            "displayName": "Stop and clear storage",
            "iconClass": "fa fa-fw fa-eraser",
        },
        {
            "name": "start",
            "disabled": not start,
            "displayName": "Start",
            "iconClass": "fa fa-fw fa-play",
        },
        {
            "name": "stop",
            "disabled": not stop,
            "displayName": "Stop",
            "iconClass": "fa fa-fw fa-stop",
        },
    ]


DISCOVERY: dict[str, list[dict[str, Any]]] = {
    "running": _disc(clear=True, stop=True, start=False),
    "provisioning": _disc(clear=True, stop=True, start=False),
    "stopped": _disc(clear=True, stop=False, start=True),
    "cleared": _disc(clear=False, stop=False, start=True),
    "waiting_for_stop": _disc(clear=False, stop=False, start=True),
    "clearing": _disc(clear=False, stop=False, start=True),
    "start_while_clearing": _disc(clear=False, stop=True, start=False),
    "no_status": _disc(clear=True, stop=True, start=False),
}


def _spec_change(**changes: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        for key, value in changes.items():
            if key in ("clearRequest", "actionClearRequest"):
                out["spec"]["storage"][key] = value
            else:
                out["spec"][key] = value
        return out

    return change


# (action, input case, expected output file, how the output differs from the input)
ACTION_TESTS: list[tuple[str, str, str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    (
        "clear-storage",
        "running",
        "running_clear_storage",
        _spec_change(desiredState="Stopped", actionClearRequest=FROZEN_STAMP),
    ),
    (
        "clear-storage",
        "stopped",
        "stopped_clear_storage",
        _spec_change(desiredState="Stopped", actionClearRequest=FROZEN_STAMP),
    ),
    ("stop", "running", "running_stop", _spec_change(desiredState="Stopped")),
    ("start", "stopped", "stopped_start", _spec_change(desiredState="Running")),
    ("start", "cleared", "cleared_start", _spec_change(desiredState="Running")),
]


# ---- driving real pipelines ------------------------------------------------------------


def _condition_reason(obj: dict[str, Any], type_: str) -> str | None:
    reason = condition(obj, type_).get("reason")
    return None if reason is None else str(reason)


def _ready(obj: dict[str, Any]) -> bool:
    """Settled: the step that finishes a clear still reports WaitingForStop; the next one
    (brought by its own status write) settles the conditions."""
    return bool(condition(obj, "Ready").get("status") == "True")


def _deny_policy(name: str, namespace: str) -> str:
    """PVC creation of `reconcile-failed` and PVC deletion of `clear-failed` are denied."""
    expression = (
        "request.operation == 'DELETE'"
        " ? oldObject.metadata.labels['sluice.dev/pipeline'] != 'clear-failed'"
        " : object.metadata.labels['sluice.dev/pipeline'] != 'reconcile-failed'"
    )
    return claim_policy(
        name, namespace, ["CREATE", "DELETE"], expression, ["clear-failed", "reconcile-failed"]
    )


def _creates_denied(api: client.ApiClient, namespace: str) -> bool:
    body = {
        "metadata": {"name": "probe", "labels": {"sluice.dev/pipeline": "reconcile-failed"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    }
    try:
        client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
            namespace, body, dry_run="All"
        )
    except client.ApiException as error:
        return "blocked by test policy" in str(error.body)
    return False


@contextmanager
def _cleanup(
    kubectl: Kubectl, api: client.ApiClient, namespace: str, policy: str
) -> Iterator[None]:
    try:
        yield
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", policy, "--ignore-not-found")
        kubectl("delete", "validatingadmissionpolicy", policy, "--ignore-not-found")
        for pod in ("stopping-0", "waiting-0"):
            release(api, "pod", namespace, pod)
        for claim in client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items:
            release(api, "persistent_volume_claim", namespace, claim.metadata.name)


def drive_states(
    kubectl: Kubectl, api: client.ApiClient, namespace: str, operator: Operator
) -> dict[str, dict[str, Any]]:
    """Every case of CASES, as the live object the real operator produced."""
    ns = namespace
    live: dict[str, dict[str, Any]] = {}

    def capture(case: str, pipeline: str, ready: Callable[[dict[str, Any]], bool]) -> None:
        def check() -> dict[str, Any] | None:
            obj = get(kubectl, ns, pipeline)
            return obj if ready(obj) else None

        live[case] = wait_for(check, timeout=60, what=f"{ns}/{pipeline} to be {case}")

    def status(obj: dict[str, Any], *path: str) -> Any:
        value: Any = obj.get("status") or {}
        for key in path:
            value = (value or {}).get(key)
        return value

    policy = f"deny-pvc-{ns}"[:63]
    with _cleanup(kubectl, api, ns, policy):
        kubectl("apply", "-f", "-", input=_deny_policy(policy, ns))
        wait_for(lambda: _creates_denied(api, ns), what="the deny policy to apply")

        running = ["running", "stopping", "clearing", "waiting", "failed", "clear-failed"]
        for name in [*running, "reconcile-failed"]:
            apply(kubectl, manifest(name, ns))
        slow = yaml.safe_load(manifest("provisioning", ns))
        slow["spec"]["resources"] = {"requests": {"cpu": 1000}}  # no node has that much
        apply(kubectl, yaml.safe_dump(slow))

        capture(
            "reconcile_failed",
            "reconcile-failed",
            lambda o: status(o, "error", "error_code") == "ReconcileFailed",
        )
        core = client.CoreV1Api(api)
        wait_for(lambda: core.read_namespaced_pod("provisioning-0", ns), what="provisioning-0")
        capture(
            "provisioning",
            "provisioning",
            lambda o: (
                status(o, "deploymentStatus") == "Provisioning"
                and status(o, "storage", "status") == "InUse"
            ),
        )
        for name in running:
            wait_condition(kubectl, ns, name, "Ready")
            wait_jsonpath(kubectl, ns, name, ".status.storage.status", "InUse")
        capture("running", "running", lambda o: status(o, "deploymentStatus") == "Running")

        hold(api, "pod", ns, "stopping-0")
        hold(api, "pod", ns, "waiting-0")
        hold(api, "persistent_volume_claim", ns, pipeline_claim(api, ns, "clearing"))
        patch(kubectl, ns, "stopping", {"spec": {"desiredState": "Stopped"}})
        for name in ("waiting", "clearing", "clear-failed"):
            stop_and_clear(kubectl, ns, name)
        failed_pod(api, ns, get(kubectl, ns, "failed"))

        capture("stopping", "stopping", lambda o: status(o, "deploymentStatus") == "Stopping")
        capture(
            "waiting_for_stop",
            "waiting",
            lambda o: (
                _condition_reason(o, "StorageCleared") == "WaitingForStop"
                and status(o, "deploymentStatus") == "Stopping"
            ),
        )
        claim = pipeline_claim(api, ns, "clearing")
        wait_for(
            lambda: (
                core.read_namespaced_persistent_volume_claim(claim, ns).metadata.deletion_timestamp
            ),
            what="the claim's deletion to be sent",
        )
        capture("clearing", "clearing", lambda o: status(o, "storage", "status") == "Clearing")
        capture(
            "clear_failed",
            "clear-failed",
            lambda o: status(o, "error", "error_code") == "StorageClearFailed",
        )
        capture("failed", "failed", lambda o: status(o, "deploymentStatus") == "Failed")

        patch(kubectl, ns, "clearing", {"spec": {"desiredState": "Running"}})
        capture(
            "start_while_clearing",
            "clearing",
            lambda o: status(o, "error", "error_code") == "CannotStartWhileClearingStorage",
        )

        release(api, "pod", ns, "stopping-0")
        release(api, "pod", ns, "waiting-0")
        capture(
            "stopped",
            "stopping",
            lambda o: status(o, "deploymentStatus") == "Stopped" and _ready(o),
        )
        capture(
            "cleared",
            "waiting",
            lambda o: (
                status(o, "storage", "status") == "Cleared"
                and status(o, "deploymentStatus") == "Stopped"
                and _ready(o)
            ),
        )

        # With the operator down: a new object, and a spec change it has not seen.
        operator.stop()
        try:
            apply(kubectl, manifest("fresh", ns))
            live["no_status"] = get(kubectl, ns, "fresh")
            patch(kubectl, ns, "running", {"spec": {"image": "registry.example/orders:2"}})
            live["generation_behind"] = get(kubectl, ns, "running")
        finally:
            operator.start()
    assert set(live) == set(CASES)
    return live


# ---- testdata --------------------------------------------------------------------------


def normalize(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Volatile metadata stripped; the test namespace and UIDs replaced by stable values."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    uid = str(meta.get("uid", ""))
    for key in ("managedFields", "uid", "resourceVersion", "creationTimestamp"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    text = json.dumps(out)
    text = text.replace(namespace, "default")
    if uid:
        text = text.replace(uid, "00000000-0000-0000-0000-000000000000")
    result: dict[str, Any] = json.loads(text)
    return result


def shape(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object that must not differ between the testdata and a live run."""
    status = obj.get("status")
    spec = obj.get("spec") or {}
    out: dict[str, Any] = {
        "desiredState": spec.get("desiredState"),
        "clearRequest": (spec.get("storage") or {}).get("clearRequest"),
        "generationBehind": status is not None
        and status.get("observedGeneration") != obj["metadata"].get("generation"),
        "deleting": "deletionTimestamp" in obj["metadata"],
    }
    if status is None:
        return out
    storage = status.get("storage") or {}
    out.update(
        statusKeys=sorted(status),
        # capacity comes with the claim's binding: there or not yet while Provisioning.
        storageKeys=sorted(k for k in storage if k != "capacity"),
        deploymentStatus=status.get("deploymentStatus"),
        storageStatus=storage.get("status"),
        claims=len(storage.get("claims") or []),
        lastClearRequest=storage.get("lastClearRequest"),
        clearingRequest=storage.get("clearingRequest"),
        error=(status.get("error") or {}).get("error_code"),
        conditions=sorted(
            (c["type"], c["status"], c["reason"]) for c in status.get("conditions") or []
        ),
    )
    return out


class _Literal(str):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_Dumper.add_representer(_Literal, _literal)


def dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, width=100)


def render_cm_patch() -> str:
    """deploy/argocd/argocd-cm-patch.yaml, from the Lua files."""
    actions = {
        "discovery.lua": _Literal((ACTIONS / "discovery.lua").read_text()),
        "definitions": [
            {"name": name, "action.lua": _Literal((ACTIONS / name / "action.lua").read_text())}
            for name in ACTION_NAMES
        ],
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "labels": {
                "app.kubernetes.io/name": "argocd-cm",
                "app.kubernetes.io/part-of": "argocd",
            },
        },
        "data": {
            "resource.customizations.health.sluice.dev_Pipeline": _Literal(
                (CUSTOM / "health.lua").read_text()
            ),
            "resource.customizations.actions.sluice.dev_Pipeline": _Literal(dump(actions)),
        },
    }
    header = (
        "# Generated from resource_customizations/sluice.dev/Pipeline by\n"
        "# SLUICE_CAPTURE_ARGOCD=1 pytest tests/integration/test_argocd.py -k capture\n"
        "# Install: kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml\n"
    )
    return header + dump(cm)


def write_testdata(live: dict[str, dict[str, Any]], namespace: str, lua: ArgoLua) -> None:
    objects = {case: normalize(obj, namespace) for case, obj in live.items()}
    for directory in (CUSTOM / "testdata", ACTIONS / "testdata"):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yaml"):
            old.unlink()
    tests = []
    for case in CASES:
        path = Path("testdata") / f"{case}.yaml"
        (CUSTOM / path).write_text(dump(objects[case]))
        tests.append({"healthStatus": lua.health(objects[case]), "inputPath": str(path)})
    (CUSTOM / "health_test.yaml").write_text(dump({"tests": tests}))

    inputs = sorted(set(DISCOVERY) | {case for _, case, _, _ in ACTION_TESTS})
    for case in inputs:
        (ACTIONS / "testdata" / f"{case}.yaml").write_text(dump(objects[case]))
    discovery = [
        {"inputPath": f"testdata/{case}.yaml", "result": result}
        for case, result in DISCOVERY.items()
    ]
    action_tests = []
    for action, case, output, change in ACTION_TESTS:
        (ACTIONS / "testdata" / f"{output}.yaml").write_text(dump(change(objects[case])))
        action_tests.append(
            {
                "action": action,
                "inputPath": f"testdata/{case}.yaml",
                "expectedOutputPath": f"testdata/{output}.yaml",
            }
        )
    (ACTIONS / "action_test.yaml").write_text(
        dump({"discoveryTests": discovery, "actionTests": action_tests})
    )
    CM_PATCH.write_text(render_cm_patch())
