"""The local cluster's real node: containerd and a kubelet that run pods on this machine.

The node runs in a private mount namespace, held open by a static pause process (``node``)
that `unshare --mount --propagation private` starts after it has mounted:

- tmpfs over ``/run`` and ``/var/lib``: what containerd, runc and the CRI put there by default
  (network namespaces, shims' sockets, runc's state) stays private and dies with the
  namespace; no container mount ever reaches the host's mount table;
- ``<state>/node`` at ``/run/localkube-node`` (``IN_NS``): the kubelet's root and every
  socket get short paths (a unix socket's path is limited to 107 bytes, a pytest tmp_path
  is long) while the files stay under the state directory;
- ``<state>/node/log`` over ``/var/log``;
- a file of the cluster's own over each sysctl the kubelet rewrites host-wide
  (``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops``, and the three
  others it sets), so the host's values never change.

containerd (``restrict_oom_score_adj``: nothing here may lower ``oom_score_adj``; cgroupfs;
the local pause image as sandbox; the stream server on 127.0.0.1) and the kubelet are then
started inside it with ``nsenter -t <holder> -m``. Pods get their address from the project's
own CNI plugin (``tests/cni``), inside their own network namespace only. The kubelet's
``cgroupRoot`` is the cluster's own, created in every cgroup hierarchy before start and
removed by ``stop``, after every process in it has been killed.

Everything is per state directory (paths, sockets, cgroupRoot, ports), so several clusters
run side by side. Nothing here needs systemd.

This module: where the node lives (paths, the namespace) and how it stops; what its daemons
are told is in ``node_config.py``, its cgroups in ``cgroups.py``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from localkube.cgroups import cgroup_pids, cgroup_root, remove_cgroups

# The real node's name: it resolves to 127.0.0.1 everywhere (no /etc/hosts entry to add),
# and each cluster has its own API server, so clusters side by side may share it.
REAL_NODE_NAME = "localhost"
REAL_NODE_LABELS = {"type": "real"}
# Where the node's directory appears inside its mount namespace.
IN_NS = Path("/run/localkube-node")
# The node's sandbox image (tests/images), imported with the other archives in <bin>/images.
PAUSE_IMAGE = "localhost/sluice/pause:0.1.0"
# Pods' addresses: only inside each pod's own network namespace, so no clash with anything.
POD_RANGE = "10.245.0.0/16"
CNI_NETWORK = "sluice-pod-net"
# Every sysctl the kubelet sets host-wide at start (its setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# The node's processes, in start order (the CSI node plugin's two come last, when built).
NODE_COMPONENTS = ("node", "containerd", "kubelet")
CSI_NODE_COMPONENTS = ("csi-local-node", "node-driver-registrar")
CSI_DRIVER = "csi-local.sluice.dev"
# What the node needs from the machine (Debian's containerd and runc; util-linux; xfsprogs,
# for csi-local's volumes: each an XFS filesystem on a loop device, grown online).
RUNTIME_TOOLS = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "unshare",
    "nsenter",
    "mount",
    "losetup",
    "mkfs.xfs",
    "xfs_growfs",
)
CGROUP_FS = "/sys/fs/cgroup"


class NodeError(RuntimeError):
    """The real node could not be set up or torn down."""


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its files: `dir` on the host, `IN_NS` for the same inside."""

    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / "node"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd.toml"

    @property
    def containerd_socket(self) -> Path:
        """Inside the namespace (ctr and the kubelet use this path)."""
        return IN_NS / "containerd.sock"

    @property
    def containerd_socket_on_host(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def kubelet_config(self) -> Path:
        return self.dir / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.dir / "kubelet.kubeconfig"

    @property
    def cert_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def kubelet_root(self) -> Path:
        """The kubelet's --root-dir, inside the namespace (`<state>/node/kubelet` outside)."""
        return IN_NS / "kubelet"

    @property
    def cni_dir(self) -> Path:
        return self.dir / "cni"

    @property
    def sysctl_dir(self) -> Path:
        return self.dir / "sysctl"

    @property
    def csi_socket(self) -> Path:
        """The CSI node plugin's socket, under the kubelet's plugins dir (inside)."""
        return self.kubelet_root / "plugins" / CSI_DRIVER / "csi.sock"


# --- the mount namespace ----------------------------------------------------------------------


def mount_namespace(pid: int) -> str | None:
    """The mount namespace of pid, e.g. `mnt:[4026532281]`; None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def namespace_pids(namespace: str) -> set[int]:
    """Every process in that mount namespace (the node's daemons and containerd's shims)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and mount_namespace(int(entry.name)) == namespace:
            found.add(int(entry.name))
    return found


def cwd_pids(directory: Path) -> set[int]:
    """Processes working under directory: containerd's shims work in their bundle (under
    containerd's state dir), which finds them even once the namespace's holder is gone."""
    marker = f"{directory.resolve()}/"
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"{os.readlink(f'/proc/{entry.name}/cwd')}/".startswith(marker):
                    found.add(int(entry.name))
    return found


def holder_command(paths: NodePaths, pause: Path) -> list[str]:
    """The namespace's holder: sets the mounts up, then becomes the pause binary, which
    sleeps until signalled (its argument names the state dir, so the launcher knows it)."""
    q = shlex.quote
    lines = [
        "set -eu",
        "mount -t tmpfs -o mode=0755 localkube-run /run",
        "mount -t tmpfs -o mode=0755 localkube-var-lib /var/lib",
        f"mkdir -p {q(str(IN_NS))}",
        f"mount --bind {q(str(paths.dir))} {q(str(IN_NS))}",
        f"mount --bind {q(str(paths.dir / 'log'))} /var/log",
    ]
    for sysctl in KUBELET_SYSCTLS:
        file = paths.sysctl_dir / sysctl.replace("/", ".")
        lines.append(f"mount --bind {q(str(file))} /proc/sys/{sysctl}")
    lines.append(f"exec {q(str(pause))} {q(str(paths.dir))}")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines)]


def in_namespace(holder: int, args: list[str], workdir: Path | None = None) -> list[str]:
    """args run inside the node's mount namespace (nsenter execs, so the pid is args').
    Entering a mount namespace moves to its root: `workdir` (the state dir, for the node's
    daemons) is where the launcher knows its processes by, as it starts all of them there."""
    wd = [f"--wd={workdir}"] if workdir else []
    return ["nsenter", "-t", str(holder), "-m", *wd, "--", *args]


def holder_ready(holder: int, pause: Path) -> bool:
    """The holder has finished its mounts: it is the pause binary now."""
    try:
        return Path(os.readlink(f"/proc/{holder}/exe")) == pause
    except OSError:
        return False


def image_archives(bin_dir: Path) -> list[Path]:
    """Every image the build step made (tests/images/build.sh)."""
    return sorted((bin_dir / "images").glob("*.oci.tar"))


@dataclass
class ImageImport:
    """`ctr images import` of every archive, running while `up` waits for other things."""

    procs: list[tuple[list[str], subprocess.Popen[bytes]]]

    def wait(self, timeout: float) -> None:
        for cmd, proc in self.procs:
            try:
                _, err = proc.communicate(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise NodeError(f"{' '.join(cmd)} took longer than {timeout:.0f}s") from None
            if proc.returncode != 0:
                raise NodeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.decode()}")


def import_images(holder: int, paths: NodePaths, archives: Iterable[Path]) -> ImageImport:
    """Into containerd's k8s.io namespace (the CRI's), from inside the node's namespace
    (the unpacked layers are mounted there); all at once."""
    procs = []
    for archive in archives:
        cmd = in_namespace(
            holder,
            [
                "ctr",
                f"--address={paths.containerd_socket}",
                "--namespace=k8s.io",
                "images",
                "import",
                str(archive),
            ],
        )
        procs.append(
            (cmd, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        )
    return ImageImport(procs)


def stop(
    state_dir: Path,
    pids: dict[str, int],
    namespace: str | None,
    alive: Iterable[int] = (),
    grace: float = 5.0,
) -> None:
    """Stop the node and leave nothing: the kubelet and the CSI node plugin first (so that
    nothing restarts a container), then every container (the node's cgroups), containerd,
    every other process of the namespace (shims) and its holder; then the cgroups go. The
    namespace's mounts go with its last process. `pids` are the node's recorded processes
    that are ours (alive and naming the state dir); `namespace` is the one recorded at start,
    trusted only while one of them is still in it (a dead namespace's id may be reused)."""
    paths = NodePaths(state_dir)
    root = cgroup_root(state_dir)
    if namespace is None and "node" in pids:
        namespace = mount_namespace(pids["node"])  # state.json lost: the holder knows it
    live_namespace = namespace if any(mount_namespace(p) == namespace for p in alive) else None

    def kill(group: set[int], sig: signal.Signals, wait: float) -> None:
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_running(p) for p in group):
            time.sleep(0.02)

    clients = {pids[n] for n in ("kubelet", *CSI_NODE_COMPONENTS) if n in pids}
    kill(clients, signal.SIGTERM, grace)
    kill(clients, signal.SIGKILL, grace)
    deadline = time.monotonic() + grace
    while (left := cgroup_pids(root)) and time.monotonic() < deadline:
        kill(left, signal.SIGKILL, 0.5)
    if "containerd" in pids:
        kill({pids["containerd"]}, signal.SIGTERM, grace)
    rest = {p for n, p in pids.items() if n in NODE_COMPONENTS}
    rest |= namespace_pids(live_namespace) if live_namespace else set()
    rest |= cwd_pids(paths.dir / "containerd" / "state")
    rest.discard(os.getpid())
    kill(rest, signal.SIGKILL, grace)
    stuck = [p for p in rest if _running(p)]
    left_cgroups = remove_cgroups(root, time.monotonic() + grace)
    if stuck or left_cgroups:
        raise NodeError(f"the node left processes {stuck} and cgroups {left_cgroups}")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def node_address() -> str:
    """The address the kubelet serves on and the node reports as its InternalIP: the
    machine's own (the source address of its default route). Not 127.0.0.1: the API server
    refuses to proxy to a loopback address ("address not allowed"), and the node proxy
    (/api/v1/nodes/<node>/proxy/stats/summary) is how the operator reads volume usage. A
    machine with no route out keeps loopback (everything but that proxy still works)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # UDP, a documentation address: nothing is sent
            address = str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
    return address if not address.startswith("127.") and address != "0.0.0.0" else "127.0.0.1"
