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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from localkube.pki import NodePki, user_kubeconfig

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


# --- configuration ----------------------------------------------------------------------------


def prepare(paths: NodePaths, bin_dir: Path) -> None:
    """The node's directories and the files the holder binds (the host's sysctl values, so
    that nothing the kubelet reads looks different)."""
    for sub in ("log", "kubelet", "pod-logs", "containerd", "volume-plugins", "sysctl", "cni"):
        (paths.dir / sub).mkdir(parents=True, exist_ok=True)
    (paths.cni_dir / "net.d").mkdir(exist_ok=True)
    # Where the CSI node plugin's socket goes (the registrar tells the kubelet this path).
    (paths.dir / "kubelet" / "plugins" / CSI_DRIVER).mkdir(parents=True, exist_ok=True)
    for sysctl in KUBELET_SYSCTLS:
        host = Path("/proc/sys") / sysctl
        (paths.sysctl_dir / sysctl.replace("/", ".")).write_text(host.read_text())
    paths.containerd_config.write_text(containerd_config(paths, bin_dir, 0))


def containerd_config(paths: NodePaths, bin_dir: Path, stream_port: int) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    socket = str(paths.containerd_socket)
    return "\n".join(
        [
            "version = 2",
            f'root = "{paths.dir}/containerd/root"',
            f'state = "{paths.dir}/containerd/state"',
            # Plugins that would create host paths (/opt/containerd) or probe for storage
            # this machine does not have.
            "disabled_plugins = ["
            + ", ".join(
                f'"{p}"'
                for p in (
                    "io.containerd.internal.v1.opt",
                    "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp",
                )
            )
            + "]",
            "[grpc]",
            f'  address = "{socket}"',
            "[ttrpc]",
            f'  address = "{socket}.ttrpc"',
            "[debug]",
            '  address = ""',
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            f"[{cri}]",
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            # exec/logs/port-forward streams: the kubelet proxies them to this address.
            '  stream_server_address = "127.0.0.1"',
            f'  stream_server_port = "{stream_port}"',
            # Processes here lack CAP_SYS_RESOURCE: lowering oom_score_adj below the
            # parent's fails, and without this every sandbox fails in runc ("can't get
            # final child's PID from pipe: EOF").
            "  restrict_oom_score_adj = true",
            "  enable_selinux = false",
            "  disable_apparmor = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{bin_dir / "cni"}"',
            f'  conf_dir = "{paths.cni_dir / "net.d"}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_config(paths: NodePaths) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "sluice-pod-net",
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_RANGE}]],
                        "dataDir": str(paths.cni_dir / "ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(paths: NodePaths, pki: NodePki, ca_cert: Path, port: int) -> str:
    """The KubeletConfiguration (kubelet.config.k8s.io/v1beta1)."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Since 1.35 the kubelet refuses cgroup v1 unless told; this machine has v1.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(paths.state_dir),
        "cgroupsPerQOS": True,
        "failSwapOn": False,
        # No KUBE-* chains on the machine: the node has no Services to route.
        "makeIPTablesUtilChains": False,
        "oomScoreAdj": 0,  # lowering it is not allowed here (see restrict_oom_score_adj)
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "tlsCertFile": str(pki.serving_cert),
        "tlsPrivateKeyFile": str(pki.serving_key),
        # Only the API server (and other holders of a CA-signed certificate that RBAC
        # allows) may talk to the kubelet; anonymous requests are refused.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.dir / "pod-logs"),
        # Imported images can never be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Evict only when the machine is really out of room (it is shared).
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        # No DNS in the local cluster; an address, so that pods get no MissingClusterDNS
        # warning events (nothing answers there; nothing here looks names up).
        "resolvConf": "",
        "clusterDNS": ["10.96.0.10"],
        "clusterDomain": "cluster.local",
        "serializeImagePulls": False,
        "registerNode": True,
        # Status every few seconds: pods and the node turn Ready without a long wait.
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_configs(
    paths: NodePaths,
    bin_dir: Path,
    pki: NodePki,
    ca_cert: Path,
    api_port: int,
    kubelet_port: int,
    stream_port: int,
) -> None:
    paths.containerd_config.write_text(containerd_config(paths, bin_dir, stream_port))
    (paths.cni_dir / "net.d" / f"10-{CNI_NETWORK}.conflist").write_text(cni_config(paths))
    paths.kubelet_config.write_text(kubelet_config(paths, pki, ca_cert, kubelet_port))
    paths.kubelet_kubeconfig.write_text(
        user_kubeconfig(f"https://127.0.0.1:{api_port}", ca_cert, pki.client_cert, pki.client_key)
    )


def daemon_env() -> dict[str, str]:
    """containerd finds runc and its shim, the kubelet mount(8), on PATH (Debian installs
    runc in /usr/sbin, which a user's PATH may lack)."""
    return {"PATH": f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"}


def containerd_command(paths: NodePaths) -> list[str]:
    return ["containerd", "--config", str(paths.containerd_config)]


def kubelet_command(kubelet: Path, paths: NodePaths) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in REAL_NODE_LABELS.items())
    return [
        str(kubelet),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubelet_kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.cert_dir}",
        # A flag, not a config field: by default the kubelet creates its flexvolume dir in
        # /usr/libexec on the host.
        f"--volume-plugin-dir={paths.dir / 'volume-plugins'}",
        # No --node-ip: the kubelet refuses a loopback one. The API server reaches it by
        # this name (its Hostname address), which resolves to 127.0.0.1.
        f"--hostname-override={REAL_NODE_NAME}",
        f"--node-labels={labels}",
        "--v=1",
    ]


def csi_node_commands(
    bin_dir: Path, paths: NodePaths, csi_state_dir: Path
) -> dict[str, list[str]] | None:
    """csi-local's Node service and the registrar that tells the kubelet about it
    (upstream's node-driver-registrar, or the project's csi-local-registrar with the same
    flags); None until one is built into the bin dir."""
    registrars = [bin_dir / name for name in ("node-driver-registrar", "csi-local-registrar")]
    registrar = next((path for path in registrars if path.exists()), None)
    if registrar is None:
        return None
    socket = str(paths.csi_socket)
    return {
        "csi-local-node": [
            str(bin_dir / "csi-local"),
            f"--endpoint=unix://{socket}",
            f"--state-dir={csi_state_dir}",
            f"--node-id={REAL_NODE_NAME}",
        ],
        "node-driver-registrar": [
            str(registrar),
            f"--csi-address={socket}",
            f"--kubelet-registration-path={socket}",
            f"--plugin-registration-path={paths.kubelet_root / 'plugins_registry'}",
        ],
    }


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
