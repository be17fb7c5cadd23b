"""`kubectl sluice status` output shapes and flag parsing, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
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
