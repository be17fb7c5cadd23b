"""The launcher's promises (issue 2): stopping leaves no process behind and frees the
ports, and a crashed previous run is cleaned up by the next start; `down` removes the hostPath
volume directories its own run provisioned, and nothing else (issue 11), and the CSI
driver's state (issue 18); the CSI components restart one by one. The real node (issue 23)
leaves the machine as it was: no process, cgroup, mount, network link, iptables rule or
changed sysctl after `down`, though a pod ran on it with a volume; nor a loop device or a
mount of csi-local's (issue 26: each of its volumes is a filesystem on a loop device).

Uses its own state directory, so the session's cluster is not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from localkube import cgroups, node
from localkube.cluster import (
    COMPONENTS,
    CSI_CLASS,
    LocalCluster,
    csi_loop_devices,
    port_in_use,
    running_pids,
)
from localkube.fixtures import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has released everything, so it counts as gone.
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}").exists() else ""
    return "State:\tZ" not in status


def _state(state_dir: Path) -> dict[str, dict[str, int]]:
    state: dict[str, dict[str, int]] = json.loads((state_dir / "state.json").read_text())
    return state


def _provision_volumes(local: LocalCluster, count: int) -> list[Path]:
    """Claims the controller-manager provisions hostPath volumes for; their directories."""
    api: Any = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    with contextlib.closing(api):
        core = client.CoreV1Api(api)
        wait_for(lambda: core.read_namespaced_service_account("default", "default"))
        for i in range(count):
            body: Any = {
                "metadata": {"name": f"data-{i}"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Mi"}},
                },
            }
            core.create_namespaced_persistent_volume_claim("default", body)

        def paths() -> list[Path] | None:
            volumes: Any = core.list_persistent_volume().items
            found = [Path(v.spec.host_path.path) for v in volumes if v.spec.host_path]
            return found if len(found) == count and all(p.exists() for p in found) else None

        return wait_for(paths, timeout=60, what="volumes provisioned")


def _provision_csi_volume(local: LocalCluster, name: str) -> Path:
    """A claim on csi-local, Bound by the upstream csi-provisioner; the driver's directory."""
    api: Any = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    with contextlib.closing(api):
        core = client.CoreV1Api(api)
        body: Any = {
            "metadata": {"name": name},
            "spec": {
                "storageClassName": CSI_CLASS,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        }
        core.create_namespaced_persistent_volume_claim("default", body)

        def bound() -> Path | None:
            pvc: Any = core.read_namespaced_persistent_volume_claim(name, "default")
            if pvc.status.phase != "Bound":
                return None
            pv: Any = core.read_persistent_volume(pvc.spec.volume_name)
            return local.csi_volume_dir(pv.spec.csi.volume_handle)

        return wait_for(bound, timeout=60, what=f"claim {name} Bound on {CSI_CLASS}")


def _real_node_ready(local: LocalCluster) -> bool:
    api: Any = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    with contextlib.closing(api):
        found: Any = client.CoreV1Api(api).read_node(node.REAL_NODE_NAME)
        heartbeat = max(c.last_heartbeat_time for c in found.status.conditions)
        ready = any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)
        return ready and heartbeat.timestamp() > time.time() - 10


def test_a_crashed_run_is_cleaned_up_and_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = LocalCluster(state_dir)
    first.up()
    crashed = _state(state_dir)
    assert set(COMPONENTS) <= set(crashed["pids"])
    assert all(_alive(pid) for pid in crashed["pids"].values())

    # A crash: the apiserver dies with SIGKILL and the launcher that started it is gone.
    os.kill(crashed["pids"]["kube-apiserver"], signal.SIGKILL)
    wait_for(lambda: not _alive(crashed["pids"]["kube-apiserver"]), what="apiserver killed")
    second = LocalCluster(state_dir)
    assert not second.is_running()

    second.up()
    fresh = _state(state_dir)
    assert second.is_running()
    assert not any(_alive(pid) for pid in crashed["pids"].values()), crashed
    assert all(_alive(pid) for pid in fresh["pids"].values())

    ours = _provision_volumes(second, 3)
    # The CSI components restart one by one like the others, and serve again.
    csi_volumes = [_provision_csi_volume(second, "csi-0")]
    for name in ("csi-local", "csi-provisioner"):
        second.restart(name)
    csi_volumes.append(_provision_csi_volume(second, "csi-1"))
    # So do the real node's daemons; the node is Ready again after.
    for name in ("containerd", "kubelet"):
        second.restart(name)
    wait_for(lambda: _real_node_ready(second), timeout=60, what="the real node Ready again")
    assert all(p.is_dir() for p in csi_volumes), csi_volumes
    # Another cluster's volume (the provisioner's directory is shared machine-wide).
    theirs = Path(f"/tmp/hostpath_pv/{uuid.uuid4()}")
    theirs.mkdir(parents=True)
    try:
        second.down()
        assert [p for p in ours if p.exists()] == []
        assert not second.csi_dir.exists(), "down removes the CSI driver's state"
        assert csi_loop_devices(second.csi_dir) == [], "down detaches the volumes' loop devices"
        assert theirs.exists()
    finally:
        shutil.rmtree(theirs, ignore_errors=True)
    assert not any(_alive(pid) for pid in fresh["pids"].values()), fresh
    assert list(running_pids(state_dir)) == []
    assert not any(port_in_use(port) for port in fresh["ports"].values()), fresh["ports"]
    assert not (state_dir / "state.json").exists()


# What the kubelet would rewrite host-wide, and what a bridge CNI plugin would turn on.
SYSCTLS = (*node.KUBELET_SYSCTLS, "net/ipv4/ip_forward")
# Where containerd, the CRI, CNI and the kubelet put things by default.
HOST_PATHS = (
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/cni",
    "/opt/containerd",
)


@dataclass(frozen=True)
class Machine:
    """What the real node could leave behind on the host."""

    mounts: frozenset[str]
    links: frozenset[str]
    iptables: tuple[str, ...]
    sysctls: tuple[tuple[str, str], ...]
    cgroups: frozenset[str]
    paths: frozenset[str]
    loops: frozenset[str]


def _machine() -> Machine:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    rules: tuple[str, ...] = ()
    if shutil.which("iptables-save"):
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        # Counters and the dump's timestamps change by themselves.
        rules = tuple(line for line in saved.splitlines() if line[:1] not in ("#", ":"))
    return Machine(
        mounts=frozenset(Path("/proc/self/mounts").read_text().splitlines()),
        links=frozenset(line.split(":")[1].strip() for line in links.stdout.splitlines()),
        iptables=rules,
        sysctls=tuple((s, (Path("/proc/sys") / s).read_text().strip()) for s in SYSCTLS),
        cgroups=frozenset(
            str(p) for h in cgroups.cgroup_hierarchies() for p in h.iterdir() if p.is_dir()
        ),
        paths=frozenset(p for p in HOST_PATHS if Path(p).exists()),
        loops=frozenset(
            f"{b.parent.parent.name} {b.read_text().strip()}"
            for b in Path("/sys/block").glob("loop*/loop/backing_file")
            if b.exists()
        ),
    )


def _run_a_pod_with_a_claim(local: LocalCluster) -> set[int]:
    """A probe pod on the real node with a hostPath claim and a csi-local one; the node's
    processes then."""
    api: Any = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(local.kubeconfig), persist_config=False
    )
    with contextlib.closing(api):
        core = client.CoreV1Api(api)
        wait_for(lambda: core.read_namespaced_service_account("default", "default"))
        claim: Any = {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        }
        core.create_namespaced_persistent_volume_claim("default", claim)
        csi_claim: Any = {
            "metadata": {"name": "csi-data"},
            "spec": {**claim["spec"], "storageClassName": CSI_CLASS},
        }
        core.create_namespaced_persistent_volume_claim("default", csi_claim)
        pod: Any = {
            "metadata": {"name": "probe"},
            "spec": {
                "containers": [
                    {
                        "name": "probe",
                        "image": "localhost/sluice/probe:0.1.0",
                        "args": ["write", "/data/hello", "hello"],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "csi-data", "mountPath": "/csi"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "csi-data", "persistentVolumeClaim": {"claimName": "csi-data"}},
                ],
            },
        }
        core.create_namespaced_pod("default", pod)

        def running() -> bool:
            status: Any = core.read_namespaced_pod("probe", "default").status
            return bool(status.container_statuses and status.container_statuses[0].ready)

        wait_for(running, timeout=90, what="pod probe Ready on the real node")
    holder = local.node_namespace_pid()
    namespace = node.mount_namespace(holder)
    assert namespace and namespace != node.mount_namespace(os.getpid())
    in_cgroups = cgroups.cgroup_pids(cgroups.cgroup_root(local.state_dir))
    pids = node.namespace_pids(namespace) | in_cgroups
    # Containers, shims and the pod's mounts are there, inside the namespace only.
    inside = subprocess.run(
        node.in_namespace(holder, ["cat", "/proc/self/mounts"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "overlay" in inside and "kube-api-access" in inside, inside
    # The csi-local volume: its loop device, mounted on the host (the controller) and in the
    # node (staged and published).
    (device,) = csi_loop_devices(local.csi_dir)
    assert device in inside, inside
    assert device in Path("/proc/self/mounts").read_text()
    return pids


def test_down_leaves_the_machine_as_it_was(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    before = _machine()
    local = LocalCluster(state_dir)
    local.up()
    try:
        root = cgroups.cgroup_root(state_dir)
        assert all((h / root.lstrip("/")).is_dir() for h in cgroups.cgroup_hierarchies())
        node_pids = _run_a_pod_with_a_claim(local)
        assert len(node_pids) >= 5, node_pids  # holder, containerd, kubelet, shims, containers
        # The kubelet set its sysctls, on the node's own files only.
        assert (local.node_paths.sysctl_dir / "vm.overcommit_memory").read_text().strip() == "1"
    finally:
        local.down()
    after = _machine()
    assert not [p for p in node_pids if _alive(p)], "the node's processes outlived down"
    assert list(running_pids(state_dir)) == []
    # Another local cluster running meanwhile mounts its csi-local volumes on the host.
    theirs = [m for m in after.mounts if "/csi/volumes/vol-" in m and str(tmp_path) not in m]
    assert sorted(after.mounts - before.mounts - set(theirs)) == []
    assert csi_loop_devices(local.csi_dir) == []
    # Another engineer's cluster may attach loop devices meanwhile: only ours count.
    assert [loop for loop in after.loops - before.loops if str(tmp_path) in loop] == []
    assert after.links == before.links
    assert after.iptables == before.iptables
    assert after.sysctls == before.sysctls
    # Another local cluster started meanwhile (`make test` runs two side by side) has a
    # cgroup root of its own: only ours and anything not a cluster's count.
    clusters_cgroups = {c for c in after.cgroups if Path(c).name.startswith("localkube-")}
    ours = cgroups.cgroup_root(state_dir).lstrip("/")
    assert sorted(c for c in after.cgroups - before.cgroups if c not in clusters_cgroups) == []
    assert [c for c in after.cgroups if Path(c).name == ours] == []
    assert after.paths == before.paths
