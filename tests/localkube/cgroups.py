"""The real node's cgroups: a cgroupRoot of the cluster's own (named after its state dir),
created in every hierarchy before the kubelet starts and removed, with whatever still runs
in it, when the node stops. On cgroup v1 each controller is a hierarchy of its own, and the
kubelet and runc create a pod's cgroups in each."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def cgroup_root(state_dir: Path) -> str:
    """The kubelet's cgroupRoot: one of this cluster's own, named after its state dir."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"/localkube-{digest}"


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, the named systemd one and the
    cgroup2 one of a hybrid setup): the kubelet and runc create cgroups in each."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def create_cgroups(root: str) -> None:
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        # A new v1 cpuset starts with no CPUs and no memory nodes: give it its parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def _cgroup_dirs(root: str) -> Iterator[Path]:
    """Every cgroup of this node, deepest first."""
    for hierarchy in cgroup_hierarchies():
        # os.walk, bottom-up, ignores cgroups that vanish while it walks (the kubelet
        # removes a pod's as it goes).
        for directory, _, _ in os.walk(hierarchy / root.lstrip("/"), topdown=False):
            yield Path(directory)


def cgroup_pids(root: str) -> set[int]:
    pids: set[int] = set()
    for path in _cgroup_dirs(root):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (path / "cgroup.procs").read_text().split())
    return pids


def remove_cgroups(root: str, deadline: float) -> list[Path]:
    """Kill what is left in the node's cgroups and remove them; the ones that could not be
    removed by `deadline`."""
    while True:
        for pid in cgroup_pids(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        left = []
        for path in _cgroup_dirs(root):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(path)  # busy for a moment while its last processes exit
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
