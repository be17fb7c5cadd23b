"""Start a real local Kubernetes control plane as processes on loopback.

The binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, kubelet, kwok) are built from upstream Go modules by ``build.sh``.

Two nodes. ``localhost`` is real (``node.py``): a kubelet with containerd and runc in a
mount namespace of its own, running pods from images the build made and ``up`` imports
(``<bin dir>/images/*.oci.tar``; no registry is reachable). ``kwok-node-0`` is kwok's:
pods are scheduled, become Running and Ready, and are really deleted, without containers,
so hundreds of them cost nothing.

Scheduling: real pods land on the real node, because the kwok node is tainted
(``KWOK_TAINT``, NoSchedule). A namespace whose pods belong on kwok (scale and soak tests)
carries ``KWOK_NAMESPACE_ANNOTATIONS``: the API server's PodTolerationRestriction and
PodNodeSelector admission plugins give each of its pods the toleration and a node selector
``type=kwok``. So the choice is made per namespace, by the test; neither the pods nor the
operator that creates them (nothing in ``operator/``) know which node is real.

Beside them runs a CSI stack (``tests/csi/build.sh``): the project's driver
csi-local (identity and controller services; each volume is a filesystem of its own, an
image file under ``<state_dir>/csi`` on a loop device, mounted on the host at
``<state_dir>/csi/volumes/<id>``) with the upstream csi-provisioner, csi-resizer,
snapshot-controller and csi-snapshotter, behind StorageClass (``allowVolumeExpansion``) and
VolumeSnapshotClass ``csi-local``; and, inside the real node's mount namespace, csi-local's
node service (``csi-local-node``: mounts a volume's device at stage, grows it online)
registered with the kubelet by ``node-driver-registrar`` (csi-local-registrar), so real pods
mount csi-local volumes. ``down`` unmounts the volumes and detaches their loop devices.

Every ``up`` creates fresh certificates, picks free ports and wipes etcd. The
pids and ports are recorded in ``<state_dir>/state.json`` so ``down`` (or the
next ``up``) can stop a cluster started by another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from localkube import cgroups, node, node_config
from localkube.node import REAL_NODE_NAME, NodePaths
from localkube.pki import (
    KUBELET_CLIENT_USER,
    SERVICE_CIDR,
    admin_kubeconfig,
    write_node_pki,
    write_pki,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO / ".cache/localkube/run"
DEFAULT_BIN_DIR = REPO / ".cache/localkube/bin"

POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAME = "kwok-node-0"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Real pods land on the real node: the kwok node carries this taint. A namespace whose pods
# belong on kwok (hundreds of pods: scale, soak) says so with KWOK_NAMESPACE_ANNOTATIONS.
KWOK_TAINT = {"key": "localkube.sluice.dev/kwok", "value": "true", "effect": "NoSchedule"}
# Read by the API server's PodTolerationRestriction and PodNodeSelector admission plugins:
# every pod created in such a namespace tolerates the taint and is bound to the kwok node,
# with nothing in the pod (nor in the operator that creates it) knowing.
KWOK_NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": KWOK_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
    ),
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
}
STORAGE_CLASS = "standard"
# The CSI stack: driver name (csi-local's GetPluginInfo), its StorageClass and VolumeSnapshotClass.
CSI_DRIVER = "csi-local.sluice.dev"
CSI_CLASS = "csi-local"
CSI_SNAPSHOT_CRDS_FILE = "csi-snapshot-crds.yaml"
# A unix socket's path is limited to 107 bytes.
_MAX_SOCKET_PATH = 100
# Where the controller-manager's hostPath provisioner creates volumes (hard-coded upstream).
HOSTPATH_PV = re.compile(r"^/tmp/hostpath_pv/[0-9a-f-]{36}$")

CSI_COMPONENTS = (
    "csi-local",
    "csi-provisioner",
    "csi-resizer",
    "snapshot-controller",
    "csi-snapshotter",
)
# Order of start; each is a binary in the bin dir.
CONTROL_COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    *CSI_COMPONENTS,
)
# Every process `up` starts (the real node's CSI plugin too, once it is built).
COMPONENTS = (*CONTROL_COMPONENTS, *node.NODE_COMPONENTS)
# The real node (node.NODE_COMPONENTS and its CSI plugin) stops first, on its own terms
# (node.stop); then the rest in these stages.
STOP_ORDER = (
    ("kwok", "kube-scheduler", "kube-controller-manager", *CSI_COMPONENTS),
    ("kube-apiserver",),
    ("etcd",),
)
# How soon the sidecars retry a failed CSI call at most (upstream default 5 min): a test
# that makes DeleteVolume fail and then lets it succeed sees the success within seconds.
CSI_RETRY_INTERVAL_MAX = "5s"

# kwok ships no stages in the kwok binary itself (it exits with "no stages
# found"); kwokctl passes its defaults, and build.sh copies the same upstream
# files from the pinned kwok module into the bin dir as this file.
KWOK_STAGES_FILE = "kwok-stages.yaml"


class ClusterError(RuntimeError):
    """The local control plane could not be started or stopped."""


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).resolve() if value else default


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so distinct), chosen below
    the kernel's ephemeral range: a port picked from that range can be taken by any outgoing
    connection's local end before the component binds it (seen with the kubelet's port while
    another cluster ran)."""
    low = 20000
    high = max(low + 1000, _ephemeral_low())
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", random.randrange(low, high)))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_in_use(port: int) -> bool:
    """True while something listens on 127.0.0.1:port (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal pid's process group if it leads one (we start each in its own), else pid."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --- the cluster ----------------------------------------------------------------------------


class LocalCluster:
    """A real Kubernetes control plane (etcd, apiserver, controller-manager,
    scheduler) plus kwok faking one node, all on 127.0.0.1."""

    def __init__(
        self,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        *,
        timeout: float = 90.0,
        extra_args: dict[str, list[str]] | None = None,
    ) -> None:
        """`extra_args`: more flags for a component, e.g. a lower
        {"kube-apiserver": ["--max-requests-inflight=5"]} for an overload test."""
        self.state_dir = (
            Path(state_dir).resolve()
            if state_dir is not None
            else _env_path("LOCALKUBE_STATE_DIR", DEFAULT_STATE_DIR)
        )
        self.bin_dir = (
            Path(bin_dir).resolve()
            if bin_dir is not None
            else _env_path("LOCALKUBE_BIN_DIR", DEFAULT_BIN_DIR)
        )
        self.timeout = timeout
        self.extra_args = extra_args or {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self._node_namespace: str | None = None
        self._node_address = "127.0.0.1"

    # -- paths ---------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def csi_dir(self) -> Path:
        """csi-local's state: volumes/<volume-id>/ are the volumes' data (each a mount of
        its own filesystem); a file fail-delete/<volume-id> (fail-snapshot/<volume-id>,
        fail-expand/<volume-id>) makes DeleteVolume (CreateSnapshot, ControllerExpandVolume)
        of that volume fail with the file's content as the error."""
        return self.state_dir / "csi"

    @property
    def csi_socket(self) -> Path:
        path = self.state_dir / "csi.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        return Path(f"/tmp/localkube-csi-{digest}.sock")

    @property
    def node_paths(self) -> NodePaths:
        """The real node's files (configs, containerd's root, the kubelet's root)."""
        return NodePaths(self.state_dir)

    def node_namespace_pid(self) -> int:
        """The process holding the real node's mount namespace: `nsenter -t PID -m` runs a
        command where the node's containers, mounts and sockets are."""
        return self._procs["node"].pid

    def csi_volume_dir(self, volume_handle: str) -> Path:
        """Where csi-local keeps a volume's data (a PV's spec.csi.volumeHandle)."""
        return self.csi_dir / "volumes" / volume_handle

    @property
    def apiserver_port(self) -> int:
        return int(self._read_state().get("ports", {}).get("apiserver", 0))

    @property
    def kubelet_port(self) -> int:
        """The real node's kubelet API (HTTPS on kubelet_address; no anonymous requests)."""
        return int(self._read_state().get("ports", {}).get("kubelet", 0))

    @property
    def kubelet_address(self) -> str:
        """Where the real node's kubelet listens: the machine's address (node.node_address)."""
        return str(self._read_state().get("node_address", "127.0.0.1"))

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if name == "etcd" and not path.exists():
            path = self.bin_dir / "server"  # go install names etcd "server"
        if not path.exists():
            raise ClusterError(f"{path} is missing: build the binaries with `make kube-bins`")
        return path

    def token_kubeconfig(self, user: str, token: str, path: Path) -> Path:
        """A kubeconfig at path for this cluster (its server and CA) that authenticates
        with a bearer token, e.g. a ServiceAccount's from `kubectl create token`."""
        admin: dict[str, Any] = yaml.safe_load(self.kubeconfig.read_text())
        (cluster,) = admin["clusters"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self) -> None:
        state = {
            "state_dir": str(self.state_dir),
            "pids": {name: proc.pid for name, proc in self._procs.items()},
            "ports": self._ports,
            "kubeconfig": str(self.kubeconfig),
            # The real node's mount namespace, so that a later `down` finds its processes.
            "node_namespace": self._node_namespace,
            "node_address": self._node_address,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _owned(self, pid: int) -> bool:
        """True if pid is alive and its command line references this state dir, or it works
        in it (the launcher starts every process there; some have no path of ours to name)."""
        if not _alive(pid):
            return False
        if f"{self.state_dir}/" in _cmdline(pid):
            return True
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")) == self.state_dir
        except OSError:
            return False

    def _recorded_pids(self) -> dict[str, int]:
        pids = self._read_state().get("pids", {})
        if not isinstance(pids, dict):
            return {}
        return {str(k): int(v) for k, v in pids.items()}

    # -- health --------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def _get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port or self.apiserver_port, context=self._ssl_context(), timeout=5
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _containerd_serving(self) -> bool:
        return self.node_paths.containerd_socket_on_host.exists()

    def _apiserver_ready(self, port: int | None = None) -> bool:
        try:
            status, body = self._get("/readyz", port)
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        return status == 200 and body.strip() == b"ok"

    def is_running(self) -> bool:
        """All recorded processes are alive and ours, and the apiserver is ready."""
        pids = self._recorded_pids()
        if not set(COMPONENTS) <= set(pids) or not self.kubeconfig.exists():
            return False
        if not all(self._owned(pid) for pid in pids.values()):
            return False
        return self._apiserver_ready()

    # -- up / down -----------------------------------------------------------------------------

    def up(self) -> None:
        """Start the cluster and wait until it is ready; no-op if already running."""
        if self.is_running():
            return
        self._cleanup_previous()
        try:
            self._start()
        except BaseException:
            self._stop(self._procs_pids())
            raise

    def down(self) -> None:
        """Stop every process of this cluster and wait until its ports are free."""
        pids = self._recorded_pids()
        pids.update(self._procs_pids())
        self._stop(pids)

    def _procs_pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    def _cleanup_previous(self) -> None:
        self._stop(self._recorded_pids())

    def _strays(self) -> list[tuple[str, int]]:
        """Live processes running one of our binaries with this state dir on their
        command line (e.g. left behind when state.json was lost)."""
        found = []
        for pid in running_pids(self.state_dir):
            try:
                exe = Path(os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)"))
            except OSError:
                continue
            if exe.parent == self.bin_dir or exe.name == "containerd":
                # etcd installs as "server"; the node's holder is the pause binary.
                name = {"server": "etcd", "pause": "node"}.get(exe.name, exe.name)
                found.append((name, pid))
        return found

    # -- faults: one component at a time (tests that do this use a cluster of their own) --------

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace: float = 30.0) -> None:
        """Stop one component (SIGKILL: a crash; SIGTERM: a clean stop) and wait for it.
        The real node's are "containerd" and "kubelet" (its containers keep running, as on a
        real node whose kubelet or runtime restarts)."""
        proc = self._procs[name]
        if proc.poll() is None:
            if sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing."""
        self._procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._procs[name].send_signal(signal.SIGCONT)

    def start_component(self, name: str) -> None:
        """Start a stopped component again with its own flags and ports; wait until it
        serves (etcd, kube-apiserver, csi-local)."""
        assert self._procs[name].poll() is not None, f"{name} is running"
        if name == "node":
            # A new holder would be a new namespace, without the mounts containerd and the
            # kubelet work in: kill and restart those instead (or the whole cluster).
            raise ClusterError("the node's namespace holder cannot restart alone")
        args, env = self._commands[name]
        if name == "csi-local":
            self.csi_socket.unlink(missing_ok=True)  # a killed driver leaves it behind
        if name == "containerd":
            self.node_paths.containerd_socket_on_host.unlink(missing_ok=True)
        self._spawn(name, args, env, append=True)
        deadline = time.monotonic() + self.timeout
        if name == "etcd":
            port = self._ports["etcd"]
            self._wait("etcd /health", name, lambda: _etcd_healthy(port), deadline)
        elif name == "kube-apiserver":
            self._wait("kube-apiserver /readyz", name, self._apiserver_ready, deadline)
        elif name == "csi-local":
            self._wait("csi-local's socket", name, self.csi_socket.exists, deadline)
        elif name == "containerd":
            self._wait("containerd's socket", name, self._containerd_serving, deadline)

    def restart(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self.start_component(name)

    # -- provisioned volumes -------------------------------------------------------------------

    def _provisioned_paths(self) -> list[Path]:
        """hostPath directories the controller-manager provisioned for this cluster's volumes
        (`/tmp/hostpath_pv/<uuid>`, shared by every local cluster on the machine)."""
        if not self._apiserver_ready():
            return []
        api = _Api(self)
        try:
            paths = api.provisioned_host_paths()
        except Exception:
            return []
        finally:
            api.close()
        return [Path(p) for p in paths if HOSTPATH_PV.match(p)]

    def _stop(self, pids: dict[str, int]) -> None:
        provisioned = self._provisioned_paths()
        ports = [int(p) for p in self._read_state().get("ports", {}).values()]
        ports += list(self._ports.values())
        # Only processes whose command line references this state dir are ours.
        owned = [(name, pid) for name, pid in pids.items() if self._owned(pid)]
        owned += [(name, pid) for name, pid in self._strays() if pid not in dict(owned).values()]
        node_names = (*node.NODE_COMPONENTS, *node.CSI_NODE_COMPONENTS)
        node_pids = {name: pid for name, pid in owned if name in node_names}
        node_error: Exception | None = None
        try:
            node.stop(
                self.state_dir,
                node_pids,
                self._read_state().get("node_namespace") or self._node_namespace,
                alive=node_pids.values(),
            )
        except Exception as err:  # the control plane still stops; the error is raised after
            node_error = err
        # Clients first, then the apiserver, then etcd: an apiserver whose etcd is
        # gone takes ~10 s to shut down.
        for stage in STOP_ORDER:
            group = [pid for name, pid in owned if name in stage]
            for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                for pid in group:
                    _signal(pid, sig)
                deadline = time.monotonic() + grace
                while any(_alive(pid) for pid in group) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    self._reap()
        self._reap()
        alive = [f"{name} (pid {pid})" for name, pid in owned if _alive(pid)]
        if alive:
            raise ClusterError(f"could not stop {', '.join(alive)}")
        if node_error is not None:
            raise ClusterError(f"stopping the real node: {node_error}") from node_error
        deadline = time.monotonic() + 10
        while any(port_in_use(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._procs.clear()
        self._ports = {}
        self._node_namespace = None
        self.state_file.unlink(missing_ok=True)
        # Volumes still provisioned when the cluster stops: no controller deletes them now.
        for path in provisioned:
            shutil.rmtree(path, ignore_errors=True)
        release_csi_volumes(self.csi_dir)
        shutil.rmtree(self.csi_dir, ignore_errors=True)
        self.csi_socket.unlink(missing_ok=True)

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, append: bool = False
    ) -> None:
        self._commands[name] = (args, env)
        args = [*args, *self.extra_args.get(name, [])]
        log = self.log_file(name).open("ab" if append else "wb")
        try:
            self._procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        finally:
            log.close()
        self._write_state()

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                raise ClusterError(
                    f"{name} exited with code {code}; tail of {self.log_file(name)}:\n"
                    + _tail(self.log_file(name))
                )

    def _wait(self, what: str, log: str, predicate: Callable[[], bool], deadline: float) -> None:
        while True:
            self._check_alive()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {self.timeout:.0f}s waiting for {what}; "
                    f"tail of {self.log_file(log)}:\n{_tail(self.log_file(log))}"
                )
            time.sleep(0.1)

    def _start(self) -> None:
        deadline = time.monotonic() + self.timeout
        sd = self.state_dir
        binaries = {name: self.binary(name) for name in (*CONTROL_COMPONENTS, "kubelet", "pause")}
        env_path = node_config.daemon_env()["PATH"]
        missing = [t for t in node.RUNTIME_TOOLS if shutil.which(t, path=env_path) is None]
        if missing:
            raise ClusterError(f"{', '.join(missing)} missing: `make node-runtime` installs them")
        if any(sd.is_relative_to(hidden) for hidden in (Path("/run"), Path("/var/lib"))):
            # The node's namespace mounts tmpfs over both: its daemons would not see it.
            raise ClusterError(f"{sd}: a state dir may not be under /run or /var/lib")
        sd.mkdir(parents=True, exist_ok=True)
        release_csi_volumes(self.csi_dir)
        for sub in ("etcd", "logs", "pki", "kwok", "csi", "node"):
            shutil.rmtree(sd / sub, ignore_errors=True)
        self.csi_socket.unlink(missing_ok=True)
        self.log_dir.mkdir()
        self.state_file.unlink(missing_ok=True)
        self.kubeconfig.unlink(missing_ok=True)

        etcd_port, peer_port, api_port, kwok_port, kubelet_port, stream_port = free_ports(6)
        self._ports = {"etcd": etcd_port, "etcd-peer": peer_port, "apiserver": api_port}
        self._ports["kwok"] = kwok_port
        self._ports["kubelet"] = kubelet_port
        self._ports["containerd-stream"] = stream_port

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=localkube",
                f"--data-dir={sd}/etcd",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=localkube={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        # The node's namespace, containerd and certificates while etcd starts.
        paths = self.node_paths
        node_config.prepare(paths, self.bin_dir)
        cgroups.create_cgroups(cgroups.cgroup_root(sd))
        self._spawn("node", node.holder_command(paths, binaries["pause"]))
        pki = write_pki(self.pki_dir)
        address = self._node_address = node.node_address()
        node_pki = write_node_pki(pki, paths.cert_dir, REAL_NODE_NAME, address)
        node_config.write_configs(
            paths,
            self.bin_dir,
            node_pki,
            pki.ca_cert,
            api_port,
            kubelet_port,
            stream_port,
            address,
        )
        self.kubeconfig.write_text(admin_kubeconfig(pki, api_port))
        self.kubeconfig.chmod(0o600)
        shutil.copyfile(self.binary(KWOK_STAGES_FILE), sd / "kwok.yaml")
        holder = self._procs["node"].pid
        self._wait(
            "the node's mount namespace",
            "node",
            lambda: node.holder_ready(holder, binaries["pause"]),
            deadline,
        )
        self._node_namespace = node.mount_namespace(holder)
        self._spawn(
            "containerd",
            node.in_namespace(holder, node_config.containerd_command(paths), sd),
            env=node_config.daemon_env(),
        )

        self._wait("etcd /health", "etcd", lambda: _etcd_healthy(etcd_port), deadline)
        self._spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # Endpoints may not hold loopback IPs: leave kubernetes.default without them.
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                f"--cert-dir={sd}/pki",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                # logs/exec/port-forward: the API server is a client of the kubelet's, with a
                # certificate of its own, and checks the kubelet's against the cluster CA.
                f"--kubelet-client-certificate={pki.kubelet_client_cert}",
                f"--kubelet-client-key={pki.kubelet_client_key}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                # The real node's InternalIP, where its kubelet listens (node.node_address);
                # its name (localhost) where the machine has no other address.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                # Namespaces whose pods belong on the kwok node (KWOK_NAMESPACE_ANNOTATIONS).
                "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        self._wait(
            "kube-apiserver /readyz",
            "kube-apiserver",
            lambda: self._apiserver_ready(api_port),
            deadline,
        )

        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kubelet",
            node.in_namespace(
                holder, node_config.kubelet_command(binaries["kubelet"], paths, address), sd
            ),
            env=node_config.daemon_env(),
        )
        api = _Api(self)
        try:
            # Early, so the CRDs are established by the time snapshot-controller lists them.
            api.create_snapshot_crds(self.binary(CSI_SNAPSHOT_CRDS_FILE))
            api.allow_apiserver_on_kubelet()
        finally:
            api.close()
        socket_path = str(self.csi_socket)
        self._spawn(
            "csi-local",
            [
                str(binaries["csi-local"]),
                f"--endpoint=unix://{socket_path}",
                f"--state-dir={self.csi_dir}",
            ],
            # mount(8), losetup and mkfs.xfs (Debian's are in /usr/sbin).
            env=node_config.daemon_env(),
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--controllers=*",
                "--enable-hostpath-provisioner",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binaries["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(binaries["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={sd}/kwok.yaml",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
            # kwok also loads $KWOK_WORKDIR/kwok.yaml (default ~/.kwok): keep it ours.
            env={"KWOK_WORKDIR": f"{sd}/kwok"},
        )
        self._wait("csi-local's socket", "csi-local", self.csi_socket.exists, deadline)
        retry = f"--retry-interval-max={CSI_RETRY_INTERVAL_MAX}"
        self._spawn(
            "csi-provisioner",
            [
                str(binaries["csi-provisioner"]),
                f"--csi-address={socket_path}",
                f"--kubeconfig={kubeconfig}",
                "--leader-election=false",
                # Parameters name the PVC and PV (csi.storage.k8s.io/pvc/name, ...).
                "--extra-create-metadata",
                retry,
            ],
            # csi-provisioner prefers $KUBECONFIG to its flag: make both this cluster's.
            env={"KUBECONFIG": kubeconfig},
        )
        self._spawn(
            "csi-resizer",
            [
                str(binaries["csi-resizer"]),
                f"--csi-address={socket_path}",
                f"--kubeconfig={kubeconfig}",
                "--leader-election=false",
                retry,
            ],
            env={"KUBECONFIG": kubeconfig},
        )
        self._spawn(
            "snapshot-controller",
            [
                str(binaries["snapshot-controller"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-election=false",
                retry,
            ],
            env={"KUBECONFIG": kubeconfig},
        )
        self._spawn(
            "csi-snapshotter",
            [
                str(binaries["csi-snapshotter"]),
                f"--csi-address={socket_path}",
                f"--kubeconfig={kubeconfig}",
                "--leader-election=false",
                "--extra-create-metadata",
                retry,
            ],
            env={"KUBECONFIG": kubeconfig},
        )

        self._wait("containerd's socket", "containerd", self._containerd_serving, deadline)
        images = node.import_images(holder, paths, node.image_archives(self.bin_dir))
        csi_node = node_config.csi_node_commands(self.bin_dir, paths, self.csi_dir)
        for name, args in (csi_node or {}).items():
            self._spawn(name, node.in_namespace(holder, args, sd), env=node_config.daemon_env())

        api = _Api(self)
        try:
            api.create_defaults()
            self._wait(
                "VolumeSnapshotClass csi-local",
                "snapshot-controller",
                api.create_snapshot_class,
                deadline,
            )
            self._wait("node to be Ready", "kwok", api.node_ready, deadline)
            self._wait(
                "node to be untainted", "kube-controller-manager", api.node_untainted, deadline
            )
            self._wait("the real node to be Ready", "kubelet", api.real_node_ready, deadline)
            self._wait(
                "the real node to be untainted",
                "kube-controller-manager",
                api.real_node_untainted,
                deadline,
            )
            self._wait(
                "ServiceAccount default/default",
                "kube-controller-manager",
                api.default_service_account,
                deadline,
            )
            images.wait(deadline - time.monotonic())
        except node.NodeError as err:
            raise ClusterError(str(err)) from err
        finally:
            api.close()


def _etcd_healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    try:
        return resp.status == 200 and json.loads(body).get("health") == "true"
    except ValueError:
        return False


class _Api:
    """The few API calls `up` makes, with the kubernetes client."""

    def __init__(self, cluster: LocalCluster) -> None:
        from kubernetes import client

        self._client = client
        conf = client.Configuration()
        conf.host = f"https://127.0.0.1:{cluster.apiserver_port}"
        conf.ssl_ca_cert = str(cluster.pki_dir / "ca.crt")
        conf.cert_file = str(cluster.pki_dir / "admin.crt")
        conf.key_file = str(cluster.pki_dir / "admin.key")
        self.api_client: Any = client.ApiClient(conf)
        self.core = client.CoreV1Api(self.api_client)
        self.storage = client.StorageV1Api(self.api_client)
        self.extensions = client.ApiextensionsV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def create_snapshot_crds(self, path: Path) -> None:
        """VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass (upstream's)."""
        for crd in yaml.safe_load_all(path.read_text()):
            if crd:
                self._create(self.extensions.create_custom_resource_definition, crd)

    def _create(self, create: Callable[..., Any], body: Any) -> None:
        try:
            create(body)
        except self._client.ApiException as err:
            if err.status != 409:
                raise

    def allow_apiserver_on_kubelet(self) -> None:
        """The API server's kubelet client may use the kubelet's API (logs, exec, ...): the
        kubelet asks the API server (webhook authorization), RBAC answers."""
        body = {
            "metadata": {"name": "localkube:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": KUBELET_CLIENT_USER,
                }
            ],
        }
        self._create(self.rbac.create_cluster_role_binding, body)

    def create_snapshot_class(self) -> bool:
        """The VolumeSnapshotClass; False while its CRD is not served yet."""
        body = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {
                "name": CSI_CLASS,
                "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
            },
            "driver": CSI_DRIVER,
            "deletionPolicy": "Delete",
        }
        try:
            self._create(
                lambda b: self.custom.create_cluster_custom_object(
                    "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", b
                ),
                body,
            )
        except self._client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def create_defaults(self) -> None:
        client = self._client
        storage_class = client.V1StorageClass(
            metadata=client.V1ObjectMeta(
                name=STORAGE_CLASS,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner="kubernetes.io/host-path",
            reclaim_policy="Delete",
            volume_binding_mode="Immediate",
        )
        # Claims grow: csi-resizer calls ControllerExpandVolume, the kubelet then
        # NodeExpandVolume, while the volume stays mounted.
        csi_class = client.V1StorageClass(
            metadata=client.V1ObjectMeta(name=CSI_CLASS),
            provisioner=CSI_DRIVER,
            reclaim_policy="Delete",
            volume_binding_mode="Immediate",
            allow_volume_expansion=True,
        )
        # attachRequired false: csi-local has no ControllerPublish, the kubelet stages and
        # publishes (bind mounts) through the node service without a VolumeAttachment.
        # fsGroupPolicy File: the kubelet gives each volume a pod's fsGroup (chown and
        # setgid, group-writable), as block-device drivers do; the default
        # (ReadWriteOnceWithFSType) would skip csi-local's volumes, which have no fsType, and
        # leave them writable for root only.
        csi_driver = client.V1CSIDriver(
            metadata=client.V1ObjectMeta(name=CSI_DRIVER),
            spec=client.V1CSIDriverSpec(
                attach_required=False, pod_info_on_mount=False, fs_group_policy="File"
            ),
        )
        resources = {"cpu": "32", "memory": "256Gi", "pods": "250"}
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=NODE_NAME,
                annotations={NODE_ANNOTATION: "fake"},
                labels={
                    "type": "kwok",
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            ),
            spec=client.V1NodeSpec(taints=[client.V1Taint(**KWOK_TAINT)]),
            status=client.V1NodeStatus(capacity=resources, allocatable=resources),
        )
        for create, body in (
            (self.storage.create_storage_class, storage_class),
            (self.storage.create_storage_class, csi_class),
            (self.storage.create_csi_driver, csi_driver),
            (self.core.create_node, node),
        ):
            self._create(create, body)

    def _node(self, name: str = NODE_NAME) -> Any:
        return self.core.read_node(name)

    def node_ready(self, name: str = NODE_NAME) -> bool:
        conditions = self._node(name).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def real_node_ready(self) -> bool:
        try:
            return self.node_ready(REAL_NODE_NAME)
        except self._client.ApiException as err:
            if err.status == 404:
                return False  # not registered yet
            raise

    def real_node_untainted(self) -> bool:
        """The controller-manager has lifted node.kubernetes.io/not-ready: pods schedule."""
        return not self._node(REAL_NODE_NAME).spec.taints

    def provisioned_host_paths(self) -> list[str]:
        volumes: Any = self.core.list_persistent_volume().items
        return [v.spec.host_path.path for v in volumes if v.spec and v.spec.host_path]

    def node_untainted(self) -> bool:
        """Only our own taint is left on the kwok node (not-ready is lifted)."""
        taints = self._node().spec.taints or []
        return [t.key for t in taints] == [KWOK_TAINT["key"]]

    def default_service_account(self) -> bool:
        try:
            self.core.read_namespaced_service_account("default", "default")
        except self._client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True


def csi_loop_devices(csi_dir: Path) -> list[str]:
    """Loop devices (/dev/loopN) whose backing file is under csi_dir: csi-local's volumes."""
    under = f"{Path(csi_dir).resolve()}/"
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        try:
            path = backing.read_text().strip().removesuffix(" (deleted)")
        except FileNotFoundError:
            continue  # detached meanwhile
        if path.startswith(under):
            found.append(f"/dev/{backing.parent.parent.name}")
    return found


def release_csi_volumes(csi_dir: Path) -> None:
    """Undo what csi-local left attached when its cluster stops: its mounts of the volumes
    on the host, then their loop devices. Those detach by themselves with their last mount
    (autoclear, the node's go with its namespace); any still attached after a grace period
    are detached here."""
    volumes = f"{Path(csi_dir).resolve()}/volumes/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in reversed(points):
        if point.startswith(volumes):
            subprocess.run(["umount", point], capture_output=True, env=node_config.daemon_env())
    deadline = time.monotonic() + 5
    while csi_loop_devices(csi_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    for device in csi_loop_devices(csi_dir):
        subprocess.run(["losetup", "-d", device], capture_output=True, env=node_config.daemon_env())


def running_pids(state_dir: Path) -> Iterator[int]:
    """Pids of live processes whose command line references state_dir."""
    marker = f"{Path(state_dir).resolve()}/"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)) and marker in _cmdline(int(entry.name)):
            yield int(entry.name)
