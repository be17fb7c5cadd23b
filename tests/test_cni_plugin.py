"""sluice-pod-net (tests/cni), the real node's CNI plugin, by the CNI spec's commands: ADD gives
the pod's network namespace an address (and touches nothing outside it), CHECK confirms it,
DEL releases it and may be repeated, VERSION answers. Runs the built plugin in a network
namespace of the test's own (a process started by `unshare --net`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localkube.cluster import DEFAULT_BIN_DIR

CNI_DIR = Path(os.environ.get("LOCALKUBE_BIN_DIR", DEFAULT_BIN_DIR)) / "cni"
PLUGIN = CNI_DIR / "sluice-pod-net"

pytestmark = pytest.mark.skipif(
    not PLUGIN.exists() or shutil.which("unshare") is None,
    reason="needs tests/cni/build.sh's plugins and unshare",
)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace held by a sleeping process; gone with it."""
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])
    path = f"/proc/{holder.pid}/ns/net"
    try:
        while os.readlink(path) == os.readlink("/proc/self/ns/net"):
            pass  # unshare has not switched yet
        yield path
    finally:
        holder.kill()
        holder.wait()


def _config(data_dir: Path, prev: dict[str, Any] | None = None) -> bytes:
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "test-net",
        "type": "sluice-pod-net",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.250.0.0/24"}]],
            "dataDir": str(data_dir),
        },
    }
    if prev is not None:
        config["prevResult"] = prev
    return json.dumps(config).encode()


def _run(command: str, netns: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "test-container",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_DIR),
        "PATH": os.environ.get("PATH", ""),
    }
    return subprocess.run([str(PLUGIN)], input=stdin, env=env, capture_output=True, timeout=30)


def _links(netns: str | None = None) -> str:
    cmd = ["ip", "-o", "addr"]
    if netns:
        cmd = ["nsenter", f"--net={netns}", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_add_check_del_version(netns: str, tmp_path: Path) -> None:
    host_before = {line.split()[1] for line in _links().splitlines()}
    added = _run("ADD", netns, _config(tmp_path))
    assert added.returncode == 0, added.stderr + added.stdout
    result = json.loads(added.stdout)
    (ip,) = result["ips"]
    assert ip["address"].startswith("10.250.0.") and ip["interface"] == 0
    assert result["interfaces"] == [
        {"name": "eth0", "mac": result["interfaces"][0]["mac"], "sandbox": netns}
    ]
    inside = _links(netns)
    assert ip["address"] in inside and "eth0" in inside, inside
    # Both ends of the pair are in the pod's namespace; the host has no new link.
    assert {line.split()[1] for line in _links().splitlines()} == host_before

    checked = _run("CHECK", netns, _config(tmp_path, prev=result))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    for _ in range(2):  # DEL releases the address, and may be repeated (CNI spec)
        deleted = _run("DEL", netns, _config(tmp_path))
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert ip["address"].split("/")[0] not in _links(netns)
    reserved = [p.name for p in (tmp_path / "test-net").iterdir() if p.name[0].isdigit()]
    assert reserved == [], "the address is still reserved"

    version = _run("VERSION", netns, b'{"cniVersion": "1.0.0"}')
    assert "1.0.0" in json.loads(version.stdout)["supportedVersions"]


def test_check_fails_when_the_address_is_gone(netns: str, tmp_path: Path) -> None:
    result = json.loads(_run("ADD", netns, _config(tmp_path)).stdout)
    address = result["ips"][0]["address"]
    subprocess.run(
        ["nsenter", f"--net={netns}", "--", "ip", "addr", "del", address, "dev", "eth0"],
        check=True,
    )
    checked = _run("CHECK", netns, _config(tmp_path, prev=result))
    assert checked.returncode != 0
    assert "lacks address" in checked.stdout.decode() + checked.stderr.decode()
