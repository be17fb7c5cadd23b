"""csi-sanity (kubernetes-csi/csi-test, pinned in tests/csi/go.mod) against csi-local.

csi-local runs as two processes on one state directory, as in the local cluster: the
controller instance (no --node-id: identity and controller services; it makes each volume
a filesystem of its own on a loop device and mounts it on the volume's directory) and the
node instance (--node-id: the node service too, which mounts the volume's device at stage
and bind-mounts it at publish). Each runs in a private mount namespace of its own
(``unshare --mount --propagation private``; csi-sanity in the node's): no mount they make
reaches the host's mount table, even when a test fails midway, and all of them go with the
namespace; the loop devices (autoclear) detach with their last mount.

Two runs of the upstream suite:
- the controller instance alone, Node Service skipped: what the controller instance of
  the local cluster answers stays as it was;
- the whole suite, node calls to the node instance and controller calls to the
  controller instance. Skipped: "GroupController" (no group snapshots: the driver does
  not offer the service and csi-sanity skips those itself; the skip keeps the count
  honest).
Tests the driver does not offer a capability for (ListVolumes, GetCapacity,
ControllerPublish, Modify) skip themselves; the counts of passed tests are asserted, and
the expansion tests (controller and node) among them. Volumes are 64 MiB, grown to 128 MiB.

csi-call (tests/csi/csicall) makes single calls for the tests below: a publish really
bind-mounts (and an unpublish leaves no mount), and csi-local-registrar answers the
kubelet's plugin registration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from localkube.cluster import ClusterError, LocalCluster

NODE_ID = "sanity-node"
MIB = 1 << 20
MOUNT_CAPABILITY = {"mount": {}, "accessMode": {"mode": "SINGLE_NODE_WRITER"}}


@dataclass
class Driver:
    endpoint: str
    state: Path
    pid: int

    def mount_points(self) -> set[str]:
        """Mount points in the driver's mount namespace."""
        return _mount_points(Path(f"/proc/{self.pid}/mountinfo"))

    def inside(self, path: Path) -> Path:
        """path as the driver's mount namespace sees it (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")


def _loop_devices(under: Path) -> set[str]:
    """Loop devices whose backing file is under a directory."""
    found = set()
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().startswith(f"{under}/"):
                found.add(backing.parent.parent.name)
        except FileNotFoundError:
            continue  # detached meanwhile
    return found


def _host_mounts(under: Path) -> set[str]:
    """The host's mount points under a directory (other mounts come and go: a local cluster
    running meanwhile mounts its csi-local volumes on the host)."""
    return {m for m in _mount_points(Path("/proc/self/mountinfo")) if m.startswith(f"{under}/")}


def _mount_points(mountinfo: Path) -> set[str]:
    # Field 5 is the mount point (octal escapes for spaces etc.: none in our paths).
    return {line.split()[4] for line in mountinfo.read_text().splitlines()}


def _start(tmp_path: Path, name: str, state: Path, node: bool) -> Iterator[Driver]:
    socket = tmp_path / f"{name}.sock"
    log = tmp_path / f"{name}.log"
    command = [
        str(LocalCluster().binary("csi-local")),
        f"--endpoint=unix://{socket}",
        f"--state-dir={state}",
    ]
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed: csi-local mounts"
    # unshare execs csi-local in the new namespace: the pid is the driver's.
    command = [unshare, "--mount", "--propagation", "private", "--", *command]
    if node:
        command.append(f"--node-id={NODE_ID}")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"{name} did not serve:\n{log.read_text()}")
            time.sleep(0.05)
        yield Driver(endpoint=f"unix://{socket}", state=state, pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Driver]:
    """The controller instance, serving on a fresh state directory. Its mounts go with
    its namespace, and the loop devices with them."""
    state = tmp_path / "csi-local"
    yield from _start(tmp_path, "csi-local", state, node=False)
    deadline = time.monotonic() + 10
    while _loop_devices(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _loop_devices(state), f"loop devices left attached: {_loop_devices(state)}"


@pytest.fixture
def node(tmp_path: Path, controller: Driver) -> Iterator[Driver]:
    """The node instance on the controller's state directory, in a mount namespace of its
    own."""
    yield from _start(tmp_path, "csi-local-node", controller.state, node=True)


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text()[-4000:]}" for log in sorted(tmp_path.glob("*.log"))
    )


def _sanity(tmp_path: Path, args: list[str], prefix: list[str]) -> list[str]:
    """Runs csi-sanity; returns the names of the tests that passed."""
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            *prefix,
            str(LocalCluster().binary("csi-sanity")),
            f"--csi.mountdir={tmp_path / 'mount'}",
            f"--csi.stagingdir={tmp_path / 'staging'}",
            f"--ginkgo.junit-report={report}",
            "--ginkgo.no-color",
            f"--csi.testvolumesize={64 * MIB}",
            f"--csi.testvolumeexpandsize={128 * MIB}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    failures = "\n".join(line for line in output.splitlines() if "[FAIL]" in line)
    assert proc.returncode == 0, (
        f"csi-sanity failed:\n{failures}\n{output[-8000:]}\n{_logs(tmp_path)}"
    )
    cases = ET.parse(report).getroot().iter("testcase")
    return [c.get("name", "") for c in cases if c.get("status") == "passed"]


def test_csi_sanity_controller_and_identity_pass(controller: Driver, tmp_path: Path) -> None:
    passed = _sanity(
        tmp_path,
        [f"--csi.endpoint={controller.endpoint}", "--ginkgo.skip=Node Service|GroupController"],
        prefix=[],
    )
    # The controller's volume, snapshot and expansion tests ran, not only identity (40 pass
    # today).
    assert len(passed) >= 40, f"only {len(passed)} csi-sanity tests passed: {passed}"
    expand = [name for name in passed if "ExpandVolume [Controller Server]" in name]
    assert len(expand) == 3, f"ControllerExpandVolume tests passed: {expand}"
    for described in ("CreateVolume", "DeleteVolume", "CreateSnapshot", "ListSnapshots"):
        assert any(described in name for name in passed), f"no {described} test passed"
    assert not any("Node Service" in name for name in passed)
    # Without --node-id there is no node service.
    answer = _call(controller, "csi.v1.Node/NodeGetInfo", {}, ok=False)
    assert answer.startswith("Unimplemented"), answer


def test_csi_sanity_all_pass_with_the_node_service(
    controller: Driver, node: Driver, tmp_path: Path
) -> None:
    passed = _sanity(
        tmp_path,
        [
            f"--csi.endpoint={node.endpoint}",
            f"--csi.controllerendpoint={controller.endpoint}",
            "--ginkgo.skip=GroupController",
        ],
        # In the node instance's mount namespace: csi-sanity makes and removes the
        # staging and target directories where the driver mounts.
        prefix=["nsenter", f"--target={node.pid}", "--mount", "--"],
    )
    node_tests = [name for name in passed if "Node Service" in name]
    # Stage, publish, stats, expand, unpublish and unstage ran (23 Node Service tests pass).
    assert len(node_tests) >= 23, f"only {len(node_tests)} Node Service tests passed: {passed}"
    for described in ("NodeUnpublishVolume should remove target path", "NodeGetVolumeStats"):
        assert any(described in name for name in node_tests), f"no {described} test passed"
    node_expand = [name for name in node_tests if "NodeExpandVolume" in name]
    assert len(node_expand) == 4, f"NodeExpandVolume tests passed: {node_expand}"
    stats = [name for name in node_tests if "NodeGetVolumeStats" in name]
    assert len(stats) == 4, f"NodeGetVolumeStats tests passed: {stats}"
    assert len(passed) >= 40 + 23, f"only {len(passed)} csi-sanity tests passed"
    # csi-sanity cleaned up after itself, and nothing ever reached the host.
    leftover = {m for m in node.mount_points() if m.startswith(str(tmp_path))}
    assert not leftover, f"mounts left in the node's namespace: {leftover}"
    assert not _host_mounts(tmp_path)


def _call(driver: Driver, method: str, request: dict[str, Any], ok: bool = True) -> Any:
    """One CSI call through csi-call: the answer (ok) or the error's "Code: message"."""
    proc = subprocess.run(
        [
            str(LocalCluster().binary("csi-call")),
            f"--endpoint={driver.endpoint}",
            method,
            json.dumps(request),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert proc.returncode == 0, f"{method} {request}: {proc.stderr}"
        return json.loads(proc.stdout)
    assert proc.returncode == 1, f"{method} {request} did not fail: {proc.stdout}{proc.stderr}"
    return proc.stderr.strip()


def test_publish_mounts_the_volume_and_unpublish_leaves_no_mount(
    controller: Driver, node: Driver, tmp_path: Path
) -> None:
    created = _call(
        controller,
        "csi.v1.Controller/CreateVolume",
        {"name": "bind-mount-test", "volumeCapabilities": [MOUNT_CAPABILITY]},
    )
    volume_id = created["volume"]["volumeId"]
    # The controller instance's mount of the volume, in its namespace.
    volume_dir = controller.inside(controller.state / "volumes" / volume_id)
    staging = tmp_path / "kubelet" / "globalmount"
    pods = tmp_path / "kubelet" / "pods"
    staging.mkdir(parents=True)
    pods.mkdir()
    target, read_only = pods / "rw", pods / "ro"
    volume = {"volumeId": volume_id, "volumeCapability": MOUNT_CAPABILITY}

    _call(node, "csi.v1.Node/NodeStageVolume", {**volume, "stagingTargetPath": str(staging)})
    publish = {**volume, "stagingTargetPath": str(staging), "targetPath": str(target)}
    _call(node, "csi.v1.Node/NodePublishVolume", publish)
    assert {str(staging), str(target)} <= node.mount_points()

    # A file written through the target path is in the volume's directory, as the
    # controller instance sees it (its own mount of the same filesystem).
    node.inside(target / "checkpoint").write_text("step 42\n")
    assert (volume_dir / "checkpoint").read_text() == "step 42\n"
    # ... and the bind mounts stay in the node's namespace.
    assert not _host_mounts(tmp_path)
    assert not (target / "checkpoint").exists()

    stats = _call(
        node, "csi.v1.Node/NodeGetVolumeStats", {"volumeId": volume_id, "volumePath": str(target)}
    )
    usage = {u["unit"]: u for u in stats["usage"]}
    # The volume's own filesystem (64 MiB when no size is asked, less its log), not the
    # state directory's.
    assert 48 * MIB < int(usage["BYTES"]["total"]) <= 64 * MIB, stats
    assert int(usage["INODES"]["used"]) > 0, stats

    # The same publish again is fine; the same target read-only is another publication.
    _call(node, "csi.v1.Node/NodePublishVolume", publish)
    error = _call(node, "csi.v1.Node/NodePublishVolume", {**publish, "readonly": True}, ok=False)
    assert error.startswith("AlreadyExists"), error
    _call(
        node,
        "csi.v1.Node/NodePublishVolume",
        {**publish, "targetPath": str(read_only), "readonly": True},
    )
    with pytest.raises(OSError, match="Read-only file system"):
        node.inside(read_only / "other").write_text("no")

    # Unpublish: no mount left, the target directory gone, the data kept; twice is fine.
    for path in (target, read_only):
        for _ in range(2):
            _call(
                node,
                "csi.v1.Node/NodeUnpublishVolume",
                {"volumeId": volume_id, "targetPath": str(path)},
            )
        assert str(path) not in node.mount_points()
        assert not node.inside(path).exists()
    assert (volume_dir / "checkpoint").read_text() == "step 42\n"

    unstage = {"volumeId": volume_id, "stagingTargetPath": str(staging)}
    _call(node, "csi.v1.Node/NodeUnstageVolume", unstage)
    _call(node, "csi.v1.Node/NodeUnstageVolume", unstage)
    assert str(staging) not in node.mount_points()
    assert not any(m.startswith(str(tmp_path)) for m in node.mount_points())

    # Errors by the spec's codes.
    gone = {"volumeId": "vol-none", "volumePath": str(staging)}
    assert _call(node, "csi.v1.Node/NodeGetVolumeStats", gone, ok=False).startswith("NotFound")
    stats_unstaged = {"volumeId": volume_id, "volumePath": str(staging)}
    error = _call(node, "csi.v1.Node/NodeGetVolumeStats", stats_unstaged, ok=False)
    assert error.startswith("NotFound"), error
    error = _call(node, "csi.v1.Node/NodePublishVolume", publish, ok=False)
    assert error.startswith("FailedPrecondition"), error  # not staged
    no_staging = {k: v for k, v in publish.items() if k != "stagingTargetPath"}
    error = _call(node, "csi.v1.Node/NodePublishVolume", no_staging, ok=False)
    assert error.startswith("FailedPrecondition"), error
    error = _call(node, "csi.v1.Node/NodeStageVolume", {"volumeId": volume_id}, ok=False)
    assert error.startswith("InvalidArgument"), error

    # A volume deleted while still staged: unstage still undoes the mount, then says
    # NotFound.
    _call(node, "csi.v1.Node/NodeStageVolume", {**volume, "stagingTargetPath": str(staging)})
    _call(controller, "csi.v1.Controller/DeleteVolume", {"volumeId": volume_id})
    assert not volume_dir.exists()
    _call(node, "csi.v1.Node/NodeUnstageVolume", unstage)
    assert str(staging) not in node.mount_points()
    error = _call(node, "csi.v1.Node/NodeUnstageVolume", unstage, ok=False)
    assert error.startswith("NotFound"), error


@pytest.fixture
def registry() -> Iterator[Path]:
    """A plugin registration directory with a short path: a unix socket's path has at
    most 107 bytes, and pytest's tmp_path with a socket name in it is longer."""
    path = Path(tempfile.mkdtemp(prefix="csi-reg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_registrar_registers_the_node_socket_with_the_kubelet(
    node: Driver, registry: Path, tmp_path: Path
) -> None:
    """csi-local-registrar (in place of upstream's node-driver-registrar): it answers the
    kubelet's plugin registration with the driver's name and the kubelet's path to the
    node socket, and leaves with its socket when the kubelet refuses it or it is stopped."""
    kubelet_path = "/var/lib/kubelet/plugins/csi-local.sluice.dev/csi.sock"
    socket = registry / "csi-local.sluice.dev-reg.sock"
    registration = Driver(endpoint=f"unix://{socket}", state=node.state, pid=0)
    log = tmp_path / "registrar.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(LocalCluster().binary("csi-local-registrar")),
                    f"--csi-address={node.endpoint.removeprefix('unix://')}",
                    f"--kubelet-registration-path={kubelet_path}",
                    f"--plugin-registration-path={registry}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the registrar did not serve"
            time.sleep(0.05)
        return proc

    proc = start()
    try:
        info = _call(registration, "pluginregistration.Registration/GetInfo", {})
        assert info == {
            "type": "CSIPlugin",
            "name": "csi-local.sluice.dev",
            "endpoint": kubelet_path,
            "supportedVersions": ["1.0.0"],
        }
        notify = "pluginregistration.Registration/NotifyRegistrationStatus"
        _call(registration, notify, {"pluginRegistered": True})
        assert proc.poll() is None
        _call(registration, notify, {"pluginRegistered": False, "error": "refused"})
        assert proc.wait(timeout=30) == 1
        assert not socket.exists()
    finally:
        proc.kill()
        proc.wait()

    proc = start()
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert not socket.exists()


def _usage(driver: Driver, volume_id: str, path: Path) -> dict[str, dict[str, int]]:
    stats = _call(
        driver, "csi.v1.Node/NodeGetVolumeStats", {"volumeId": volume_id, "volumePath": str(path)}
    )
    return {u["unit"]: {k: int(v) for k, v in u.items() if k != "unit"} for u in stats["usage"]}


def test_a_volume_is_a_filesystem_of_its_size_and_grows_while_mounted(
    controller: Driver, node: Driver, tmp_path: Path
) -> None:
    """Writing past a volume's size fails with ENOSPC; NodeGetVolumeStats is the volume's
    own; ControllerExpandVolume grows the device and NodeExpandVolume the mounted
    filesystem, the data kept; no shrinking; fail-expand/<id> makes the expansion fail."""
    created = _call(
        controller,
        "csi.v1.Controller/CreateVolume",
        {
            "name": "expand-test",
            "capacityRange": {"requiredBytes": str(64 * MIB)},
            "volumeCapabilities": [MOUNT_CAPABILITY],
        },
    )
    volume_id = created["volume"]["volumeId"]
    assert int(created["volume"]["capacityBytes"]) == 64 * MIB
    staging, target = tmp_path / "staging", tmp_path / "target"
    staging.mkdir()
    volume = {"volumeId": volume_id, "volumeCapability": MOUNT_CAPABILITY}
    _call(node, "csi.v1.Node/NodeStageVolume", {**volume, "stagingTargetPath": str(staging)})
    _call(
        node,
        "csi.v1.Node/NodePublishVolume",
        {**volume, "stagingTargetPath": str(staging), "targetPath": str(target)},
    )

    before = _usage(node, volume_id, target)
    assert 48 * MIB < before["BYTES"]["total"] <= 64 * MIB, before
    node.inside(target / "kept").write_bytes(b"k" * MIB)
    fill = node.inside(target / "fill")
    with pytest.raises(OSError, match="No space left on device"), fill.open("wb") as out:
        for _ in range(80):
            out.write(b"\0" * MIB)
            out.flush()
    full = _usage(node, volume_id, target)
    assert full["BYTES"]["available"] < MIB, full
    assert full["BYTES"]["used"] > 48 * MIB, full
    fill.unlink()

    # No shrinking; a limit below the size is a shrink too.
    expand = "csi.v1.Controller/ControllerExpandVolume"
    for asked in ({"requiredBytes": str(32 * MIB)}, {"limitBytes": str(32 * MIB)}):
        error = _call(controller, expand, {"volumeId": volume_id, "capacityRange": asked}, False)
        assert error.startswith("OutOfRange") and "do not shrink" in error, error
    error = _call(controller, expand, {"volumeId": "vol-none", "capacityRange": asked}, False)
    assert error.startswith("NotFound"), error

    # The fault file: the expansion fails with its message until it is removed.
    grow = {"volumeId": volume_id, "capacityRange": {"requiredBytes": str(128 * MIB)}}
    fault = controller.state / "fail-expand" / volume_id
    fault.write_text("disk array busy\n")
    error = _call(controller, expand, grow, ok=False)
    assert error == "Internal: disk array busy", error
    fault.unlink()

    grown = _call(controller, expand, grow)
    assert int(grown["capacityBytes"]) == 128 * MIB and grown["nodeExpansionRequired"], grown
    # The device grew; the filesystem on it not yet.
    assert _usage(node, volume_id, target)["BYTES"]["total"] == before["BYTES"]["total"]
    answer = _call(
        node,
        "csi.v1.Node/NodeExpandVolume",
        {**grow, "volumePath": str(target), "stagingTargetPath": str(staging)},
    )
    after = _usage(node, volume_id, target)
    assert 112 * MIB < after["BYTES"]["total"] <= 128 * MIB, after
    assert int(answer["capacityBytes"]) == after["BYTES"]["total"], answer
    # Online: still mounted, the data kept, and the new room usable.
    assert node.inside(target / "kept").read_bytes() == b"k" * MIB
    node.inside(target / "more").write_bytes(b"m" * 80 * MIB)
    # Again is fine (idempotent); the controller's view is the same filesystem.
    assert int(_call(controller, expand, grow)["capacityBytes"]) == 128 * MIB
    _call(node, "csi.v1.Node/NodeExpandVolume", {**grow, "volumePath": str(target)})
    assert (controller.inside(controller.state / "volumes" / volume_id) / "kept").exists()
    error = _call(
        node, "csi.v1.Node/NodeExpandVolume", {**grow, "volumePath": str(tmp_path)}, ok=False
    )
    assert error.startswith("NotFound"), error

    # A snapshot of the grown volume restores into a volume of its size, with its data.
    snap = _call(
        controller,
        "csi.v1.Controller/CreateSnapshot",
        {"name": "expand-snap", "sourceVolumeId": volume_id},
    )["snapshot"]
    assert int(snap["sizeBytes"]) == 128 * MIB
    restored = _call(
        controller,
        "csi.v1.Controller/CreateVolume",
        {
            "name": "expand-restored",
            "capacityRange": {"requiredBytes": str(128 * MIB)},
            "volumeCapabilities": [MOUNT_CAPABILITY],
            "volumeContentSource": {"snapshot": {"snapshotId": snap["snapshotId"]}},
        },
    )["volume"]
    restored_dir = controller.inside(controller.state / "volumes" / restored["volumeId"])
    assert (restored_dir / "kept").read_bytes() == b"k" * MIB
    assert (restored_dir / "more").stat().st_size == 80 * MIB

    # Delete: nothing left, not even the loop devices, once the node has unstaged.
    _call(
        node, "csi.v1.Node/NodeUnpublishVolume", {"volumeId": volume_id, "targetPath": str(target)}
    )
    _call(
        node,
        "csi.v1.Node/NodeUnstageVolume",
        {"volumeId": volume_id, "stagingTargetPath": str(staging)},
    )
    for vid in (volume_id, restored["volumeId"]):
        _call(controller, "csi.v1.Controller/DeleteVolume", {"volumeId": vid})
    _call(controller, "csi.v1.Controller/DeleteSnapshot", {"snapshotId": snap["snapshotId"]})
    assert sorted(p.name for p in (controller.state / "volumes").iterdir()) == []
    assert not _loop_devices(controller.state)
    assert not any(m.startswith(str(tmp_path)) for m in node.mount_points())
    assert not any(m.startswith(str(tmp_path)) for m in controller.mount_points())
