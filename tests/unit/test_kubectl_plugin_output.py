"""`kubectl sluice status` output shapes and flag parsing, without a cluster."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sluice import kubectl_plugin as plugin


def _pipeline(name: str, namespace: str = "team-a", **storage: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"desiredState": "Stopped"},
        "status": {
            "deploymentStatus": "Stopped",
            "storage": {"status": "Cleared", "lastClearRequest": "r1", **storage},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Stopped"}],
        },
    }


RETAINED = [
    {
        "persistentVolume": "pvc-1234",
        "claim": "orders-storage-abcde",
        "reclaimPolicy": "Retain",
        "storageClassName": "keep",
    }
]


def test_wide_shows_claims_retained_volumes_and_ready() -> None:
    lines = plugin.table([_pipeline("orders", retainedVolumes=RETAINED)], False, wide=True)
    assert lines[0].split() == [*plugin.COLUMNS, *plugin.WIDE_COLUMNS]
    row = ["orders", "Stopped", "Stopped", "Cleared", "r1", "-", "-", "pvc-1234", "True/Stopped"]
    assert lines[1].split() == row


def test_last_clear_shows_both_kinds_of_request() -> None:
    """`kubectl sluice clear` (and the REST API, Argo CD's action) record their requests as
    actionClearRequest: LAST-CLEAR shows them beside git's clearRequest."""
    both = _pipeline("orders", lastActionClearRequest="2026-12-06T10:00:00.000000Z")
    action_only = _pipeline("orders", lastClearRequest=None, lastActionClearRequest="t1")
    last_clear = plugin.COLUMNS.index("LAST-CLEAR")
    assert plugin.table([both], False, wide=False)[1].split()[last_clear:-1] == [
        "r1,",
        "2026-12-06T10:00:00.000000Z",
        "(action)",
    ]
    assert plugin.table([action_only], False, wide=False)[1].split()[last_clear:-1] == [
        "t1",
        "(action)",
    ]


def test_all_namespaces_adds_a_namespace_column_sorted_by_namespace_then_name() -> None:
    items = [_pipeline("b", "ns2"), _pipeline("a", "ns2"), _pipeline("z", "ns1")]
    lines = plugin.table(items, True, wide=False)
    assert lines[0].split()[0] == "NAMESPACE"
    assert [line.split()[:2] for line in lines[1:]] == [["ns1", "z"], ["ns2", "a"], ["ns2", "b"]]


def test_a_single_pipeline_names_where_its_data_remains() -> None:
    assert plugin.retained_lines(_pipeline("orders", retainedVolumes=RETAINED)) == [
        "Retained: PersistentVolume pvc-1234 (was claim orders-storage-abcde, "
        "reclaimPolicy Retain, storageClass keep)"
    ]
    assert plugin.retained_lines(_pipeline("orders")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "-n", "x", "--context", "c", "--kubeconfig", "k"],
        ["-n", "x", "--context=c", "status", "--kubeconfig=k"],
        ["--kubeconfig", "k", "-n", "x", "--context", "c", "status"],
    ],
)
def test_kubectl_flags_parse_the_same_anywhere(argv: list[str]) -> None:
    args = plugin.parse(argv)
    assert (args.namespace, args.context, args.kubeconfig) == ("x", "c", "k")


def test_all_namespaces_is_refused_for_clear() -> None:
    with pytest.raises(SystemExit):
        plugin.parse(["-A", "clear", "orders"])


# ---- snapshots and restore (rule 18) -------------------------------------------------------

KEPT = [
    {
        "name": "orders-clear-bcdfg",
        "claim": "orders-storage-bcdfg",
        "takenAt": "2026-11-29T07:16:10Z",
        "expiresAt": "2026-12-02T07:16:10Z",
        "readyToUse": True,
        "restoreSize": "1Gi",
        "clearRequest": "r1",
    }
]


def test_a_single_pipeline_lists_its_snapshots_and_how_to_restore_one() -> None:
    assert plugin.snapshot_lines(_pipeline("orders", snapshots=KEPT)) == [
        "Snapshot: orders-clear-bcdfg of claim orders-storage-bcdfg (ready, restore size 1Gi, "
        "taken 2026-11-29T07:16:10Z, expires 2026-12-02T07:16:10Z)",
        "Restore one: kubectl sluice restore orders --from SNAPSHOT",
    ]
    assert plugin.snapshot_lines(_pipeline("orders")) == []


def test_a_restored_pipeline_says_from_what_and_offers_no_restore_while_in_use() -> None:
    obj = _pipeline("orders", snapshots=KEPT, restoredFrom="orders-clear-bcdfg")
    obj["status"]["storage"]["status"] = "InUse"
    lines = plugin.snapshot_lines(obj)
    assert lines[0] == "Restored from: VolumeSnapshot orders-clear-bcdfg"
    assert not any(line.startswith("Restore one") for line in lines)


def _volume_snapshot(
    name: str, created: str, ready: bool, error: str | None = None, deleting: bool = False
) -> dict[str, Any]:
    status: dict[str, Any] = {"readyToUse": ready}
    if ready:
        status["restoreSize"] = "1Gi"
    if error:
        status["error"] = {"message": error, "time": created}
    meta: dict[str, Any] = {
        "name": name,
        "creationTimestamp": created,
        "labels": {"sluice.dev/pipeline": "orders", "sluice.dev/pipeline-uid": "u1"},
        "annotations": {
            "sluice.dev/claim": name.replace("-clear-", "-storage-"),
            "sluice.dev/expires-at": "2026-12-02T07:16:10Z",
        },
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T07:16:11Z"
    return {"metadata": meta, "spec": {"source": {}}, "status": status}


def test_snapshot_table_is_oldest_first_with_the_snapshot_controllers_errors() -> None:
    lines = plugin.snapshot_table(
        [
            _volume_snapshot("orders-clear-zzzzz", "2026-11-30T00:00:00Z", False, "no space"),
            _volume_snapshot("orders-clear-bcdfg", "2026-11-29T00:00:00Z", True),
            _volume_snapshot("orders-clear-ddddd", "2026-11-28T00:00:00Z", True, deleting=True),
        ]
    )
    assert lines[0].split() == list(plugin.SNAPSHOT_COLUMNS)
    took, expires = (
        ("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z"),
        ("2026-12-02T07:16:10Z"),
    )
    assert [line.split() for line in lines[1:4]] == [
        ["orders-clear-ddddd", "orders-storage-ddddd", "true", "1Gi", took[0], "deleting"],
        ["orders-clear-bcdfg", "orders-storage-bcdfg", "true", "1Gi", took[1], expires],
        ["orders-clear-zzzzz", "orders-storage-zzzzz", "false", "-", took[2], expires],
    ]
    assert lines[4:] == ["Error: orders-clear-zzzzz: no space"]


def test_restore_needs_from_and_acts_on_one_namespace() -> None:
    args = plugin.parse(["restore", "orders", "--from", "orders-clear-bcdfg", "-n", "x"])
    assert (args.name, args.snapshot, args.start, args.namespace) == (
        "orders",
        "orders-clear-bcdfg",
        False,
        "x",
    )
    with pytest.raises(SystemExit):
        plugin.parse(["restore", "orders"])
    with pytest.raises(SystemExit):
        plugin.parse(["-A", "restore", "orders", "--from", "s"])
    with pytest.raises(SystemExit):
        plugin.parse(["-A", "snapshots", "orders"])


class FakePipelines:
    """The plugin's client, with the API server's answers given by the test."""

    namespace = "team-a"

    def __init__(
        self,
        obj: dict[str, Any] | None,
        snapshots: dict[str, dict[str, Any]],
        refuse: ApiException | None = None,
    ) -> None:
        self.obj, self.found, self.refuse = obj, snapshots, refuse
        self.patches: list[dict[str, Any]] = []

    def get(self, name: str) -> dict[str, Any]:
        if self.obj is None:
            raise ApiException(status=404, reason="Not Found")
        return self.obj

    def snapshots(self, pipeline: str) -> list[dict[str, Any]]:
        return list(self.found.values())

    def snapshot(self, name: str) -> dict[str, Any]:
        if name not in self.found:
            raise ApiException(status=404, reason="Not Found")
        return self.found[name]

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        self.patches.append(body)
        assert self.obj is not None
        return {**self.obj, "spec": {**self.obj["spec"], **body["spec"]}}


def _run(monkeypatch: pytest.MonkeyPatch, fake: FakePipelines, argv: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(plugin, "_pipelines", lambda args: fake)
    out = io.StringIO()
    args = plugin.parse(argv)
    return plugin.HANDLERS[args.command](args, out), out.getvalue()


READY = {"orders-clear-bcdfg": _volume_snapshot("orders-clear-bcdfg", "2026-11-29T00:00:00Z", True)}


def test_restore_sets_restore_from_only_and_says_a_stopped_pipeline_restores_on_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePipelines(_pipeline("orders"), READY)
    code, out = _run(monkeypatch, fake, ["restore", "orders", "--from", "orders-clear-bcdfg"])
    assert code == 0
    assert fake.patches == [{"spec": {"storage": {"restoreFrom": "orders-clear-bcdfg"}}}]
    assert "spec.storage.restoreFrom set to orders-clear-bcdfg" in out
    assert "The pipeline is Stopped" in out and "--start" in out

    fake = FakePipelines(_pipeline("orders"), READY)
    argv = ["restore", "orders", "--from", "orders-clear-bcdfg", "--start"]
    code, out = _run(monkeypatch, fake, argv)
    assert code == 0
    assert fake.patches == [
        {"spec": {"storage": {"restoreFrom": "orders-clear-bcdfg"}, "desiredState": "Running"}}
    ]
    assert "restored from orders-clear-bcdfg as the pipeline starts" in out


def test_restore_from_a_missing_snapshot_is_refused_before_any_patch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePipelines(_pipeline("orders"), READY)
    code, _ = _run(monkeypatch, fake, ["restore", "orders", "--from", "typo"])
    assert code == plugin.REFUSED
    assert fake.patches == []
    err = capsys.readouterr().err
    assert "VolumeSnapshot typo not found in namespace team-a" in err
    assert "kubectl sluice snapshots orders" in err


def test_restore_while_in_use_prints_the_api_servers_refusal_and_how_to_clear(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = "spec.storage.restoreFrom can only be set while storage is Cleared"
    in_use = _pipeline("orders")
    in_use["status"]["storage"]["status"] = "InUse"
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps({"message": f'Pipeline.sluice.dev "orders" is invalid: {refusal}'})
    fake = FakePipelines(in_use, READY, refuse=error)
    code, _ = _run(monkeypatch, fake, ["restore", "orders", "--from", "orders-clear-bcdfg"])
    assert code == plugin.REFUSED
    err = capsys.readouterr().err
    assert refusal in err
    assert "kubectl sluice clear orders --stop --wait" in err


def test_restoring_the_same_snapshot_again_explains_once_per_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = _pipeline("orders", lastRestoreFrom="orders-clear-bcdfg")
    obj["spec"]["storage"] = {"restoreFrom": "orders-clear-bcdfg"}
    fake = FakePipelines(obj, READY)
    code, _ = _run(monkeypatch, fake, ["restore", "orders", "--from", "orders-clear-bcdfg"])
    assert code == plugin.REFUSED
    assert fake.patches == []
    assert "already restored from orders-clear-bcdfg" in capsys.readouterr().err


def test_snapshots_of_a_deleted_pipeline_are_listed_and_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(monkeypatch, FakePipelines(None, READY), ["snapshots", "orders"])
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[0] == "orders-clear-bcdfg"
    assert "Pipeline orders does not exist in namespace team-a" in out
    assert "kept until they expire" in out

    code, out = _run(monkeypatch, FakePipelines(None, {}), ["snapshots", "orders"])
    assert (code, out) == (plugin.REFUSED, "")
    assert "no Pipeline orders and no snapshots" in capsys.readouterr().err
