"""A live Argo CD against a given kubeconfig, as processes: the GitOps tests' client.

Started here: redis, argocd-repo-server, argocd-application-controller and argocd-server
(the `argocd` CLI needs a server for `app actions run`; its `--core` mode looks for a
repo-server pod). Each listens on 127.0.0.1 only; the application-controller, whose metrics
listener binds 0.0.0.0 whatever its flags say, runs in a network namespace of its own
(tests/argocd/netns.py). The binaries come from tests/tools/build-argocd.sh.

In the cluster: Argo CD's CRDs (server-side apply: the Application CRD is too big for
client-side apply), namespace argocd, argocd-secret, AppProject default, and argocd-cm
patched exactly as docs/gitops.md tells users (deploy/argocd/argocd-cm-patch.yaml). `stop()` ends
every process and removes all of it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CM_PATCH = REPO / "deploy/argocd/argocd-cm-patch.yaml"
NAMESPACE = "argocd"
# How often the controller re-reads git and re-compares on its own; tests hard-refresh after
# each commit, so this only bounds how long a missed refresh can hide.
APP_RESYNC_SECONDS = 20


class ArgoCDError(RuntimeError):
    pass


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ArgoCD:
    """One Argo CD: `start()`, then `cli(...)`; `stop()` leaves nothing behind."""

    def __init__(self, bin_dir: Path, kubeconfig: Path, state_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (
            self.redis_port,
            self.repo_port,
            self.repo_metrics_port,
            self.server_port,
            self.server_metrics_port,
            self.controller_metrics_port,
        ) = _free_ports(6)

    # ---- processes ----------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def tail(self, name: str, lines: int = 40) -> str:
        path = self._log(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with self._log(name).open("wb") as log:
            self.procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
                # Its own process group: stop() signals the group, so nothing outlives it.
                start_new_session=True,
            )

    def _wait(self, what: str, name: str, ready: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for proc_name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ArgoCDError(
                        f"{proc_name} exited with {proc.returncode}:\n{self.tail(proc_name)}"
                    )
            if time.monotonic() > deadline:
                raise ArgoCDError(f"timed out waiting for {what}:\n{self.tail(name)}")
            time.sleep(0.2)

    def _env(self) -> dict[str, str]:
        """What every Argo CD process shares: the cluster, and folders of its own."""
        home = self.state_dir / "home"
        dirs = {
            "TMPDIR": home / "tmp",
            "ARGOCD_TLS_DATA_PATH": home / "tls",
            "ARGOCD_SSH_DATA_PATH": home / "ssh",
            "ARGOCD_GNUPGHOME": home / "gnupg",
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        (home / "ssh" / "ssh_known_hosts").touch()
        return {
            **{key: str(path) for key, path in dirs.items()},
            "HOME": str(home),
            "KUBECONFIG": str(self.kubeconfig),
            # Maps https://kubernetes.default.svc (the in-cluster destination) to KUBECONFIG.
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_ASK_PASS_SOCK": str(home / "askpass.sock"),
            # git-verify-wrapper.sh: the repo-server runs it on every manifest generation.
            "PATH": f"{self.bin_dir / 'argocd-files/bin'}:{os.environ['PATH']}",
        }

    def _apiserver_port(self) -> int:
        config = yaml.safe_load(self.kubeconfig.read_text())
        server: str = config["clusters"][0]["cluster"]["server"]
        host_port = server.split("://", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost"):
            raise ArgoCDError(f"the API server must be on loopback, not {server}")
        return int(port)

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._install()
            self._start_processes()
        except BaseException:
            self.stop()
            raise

    def _start_processes(self) -> None:
        env = self._env()
        redis = shutil.which("redis-server")
        if redis is None:
            raise ArgoCDError("redis-server is not installed (the Makefile installs it)")
        self._spawn(
            "redis",
            [
                *(redis, "--bind", "127.0.0.1", "--port", str(self.redis_port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.state_dir)),
            ],
        )
        self._wait("redis", "redis", lambda: _port_open(self.redis_port))
        redis_addr = f"127.0.0.1:{self.redis_port}"
        repo_addr = f"127.0.0.1:{self.repo_port}"
        bin_ = self.bin_dir
        self._spawn(
            "repo-server",
            [
                str(bin_ / "argocd-repo-server"),
                *("--address", "127.0.0.1", "--port", str(self.repo_port)),
                *("--metrics-address", "127.0.0.1"),
                *("--metrics-port", str(self.repo_metrics_port)),
                *("--disable-tls", "--client-ca-path", ""),
                *("--redis", redis_addr, "--loglevel", "info"),
            ],
            env,
        )
        self._spawn(
            "application-controller",
            [
                *(sys.executable, str(Path(__file__).with_name("netns.py"))),
                # The ports it dials: the API server, redis and the repo-server.
                *("--forward", f"{self._apiserver_port()},{self.redis_port},{self.repo_port}"),
                "--",
                str(bin_ / "argocd-application-controller"),
                *("--namespace", NAMESPACE, "--kubeconfig", str(self.kubeconfig)),
                *("--repo-server", repo_addr, "--repo-server-plaintext"),
                *("--redis", redis_addr),
                *("--metrics-port", str(self.controller_metrics_port)),
                *("--app-resync", str(APP_RESYNC_SECONDS)),
                # Each resource's health in .status.resources (off by default since v3.0).
                "--persist-resource-health",
                *("--loglevel", "info"),
            ],
            env,
        )
        self._spawn(
            "server",
            [
                str(bin_ / "argocd-server"),
                *("--insecure", "--disable-auth", "--namespace", NAMESPACE),
                *("--kubeconfig", str(self.kubeconfig)),
                *("--address", "127.0.0.1", "--port", str(self.server_port)),
                *("--metrics-address", "127.0.0.1"),
                *("--metrics-port", str(self.server_metrics_port)),
                *("--repo-server", repo_addr, "--repo-server-plaintext"),
                *("--redis", redis_addr, "--dex-server", ""),
                *("--staticassets", str(self.state_dir / "static")),
            ],
            env,
        )
        self._wait("repo-server", "repo-server", lambda: _port_open(self.repo_port))
        self._wait("argocd-server", "server", self._server_ready)

    def _server_ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.server_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Every process (its whole group), then what start() put in the cluster."""
        for _name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()
        self._uninstall()

    def listeners(self) -> list[tuple[str, str]]:
        """(process, local address) of every TCP listener in this (the host's) network
        namespace that belongs to a process started here or to one of its children."""
        groups = {proc.pid for proc in self.procs.values()}
        ours = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in groups:  # the process group: start_new_session made one each
                ours.add(int(stat.parent.name))
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
        found = []
        for line in out.stdout.splitlines():
            columns = line.split()
            for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
                if int(pid) in ours:
                    found.append((name, columns[3]))
        return found

    # ---- the cluster side ---------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ArgoCDError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def _crd_files(self) -> list[Path]:
        return sorted((self.bin_dir / "argocd-files/crds").glob("*-crd.yaml"))

    def _install(self) -> None:
        for crd in self._crd_files():
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        # Right after creation a CRD has no conditions yet, which `kubectl wait` takes for
        # an error rather than for "not yet": ask again until it says Established.
        deadline = time.monotonic() + 60
        while self.kubectl(
            "wait", "--for=condition=Established", "--timeout=10s",
            "crd/applications.argoproj.io", "crd/appprojects.argoproj.io", check=False,
        ).returncode:  # fmt: skip
            if time.monotonic() > deadline:
                raise ArgoCDError("Argo CD's CRDs were not Established within 60s")
            time.sleep(0.2)
        self.kubectl("create", "namespace", NAMESPACE)
        labels = {"app.kubernetes.io/part-of": "argocd"}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", "namespace": NAMESPACE, "labels": labels},
            "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
        }
        # argocd-cm as a fresh install has it, then docs/gitops.md's command, verbatim.
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": labels},
        }
        project = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        }
        for obj in (secret, cm, project):
            self.kubectl("create", "-f", "-", input=json.dumps(obj))
        self.kubectl(
            "-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--patch-file", str(CM_PATCH)
        )

    def _uninstall(self) -> None:
        # Applications first (their CRD's deletion would take them anyway), then the rest.
        self.kubectl(
            "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", check=False
        )
        for crd in self._crd_files():
            self.kubectl("delete", "-f", str(crd), "--ignore-not-found", check=False)

    # ---- the user's side ----------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The `argocd` CLI against this argocd-server (plain HTTP on loopback, no auth)."""
        cmd = [
            str(self.bin_dir / "argocd"),
            *("--server", f"127.0.0.1:{self.server_port}", "--plaintext"),
            *("--auth-token", "none", "--config", str(self.state_dir / "cli-config")),
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ArgoCDError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc
