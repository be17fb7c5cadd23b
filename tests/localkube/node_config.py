"""What the real node's daemons are told: containerd's config, the CNI network, the
kubelet's KubeletConfiguration and kubeconfig, their command lines, and the CSI node
plugin's (see node.py for where they run)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from localkube.cgroups import cgroup_root
from localkube.node import (
    CNI_NETWORK,
    CSI_DRIVER,
    KUBELET_SYSCTLS,
    PAUSE_IMAGE,
    POD_RANGE,
    REAL_NODE_LABELS,
    REAL_NODE_NAME,
    NodePaths,
)
from localkube.pki import NodePki, user_kubeconfig


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


def kubelet_config(paths: NodePaths, pki: NodePki, ca_cert: Path, port: int, address: str) -> str:
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
        "address": address,  # node.node_address(): the node proxy needs a non-loopback one
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
        # Its flexvolume dir: by default the kubelet creates /usr/libexec/kubernetes/...
        "volumePluginDir": str(paths.dir / "volume-plugins"),
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
        # Volumes' usage (Summary API, kubelet_volume_stats_*) every few seconds, not every
        # minute: tests see a volume fill up or grow without a long wait.
        "volumeStatsAggPeriod": "5s",
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
    address: str,
) -> None:
    paths.containerd_config.write_text(containerd_config(paths, bin_dir, stream_port))
    (paths.cni_dir / "net.d" / f"10-{CNI_NETWORK}.conflist").write_text(cni_config(paths))
    paths.kubelet_config.write_text(kubelet_config(paths, pki, ca_cert, kubelet_port, address))
    paths.kubelet_kubeconfig.write_text(
        user_kubeconfig(f"https://127.0.0.1:{api_port}", ca_cert, pki.client_cert, pki.client_key)
    )


def daemon_env() -> dict[str, str]:
    """containerd finds runc and its shim, the kubelet mount(8), on PATH (Debian installs
    runc in /usr/sbin, which a user's PATH may lack)."""
    return {"PATH": f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"}


def containerd_command(paths: NodePaths) -> list[str]:
    return ["containerd", "--config", str(paths.containerd_config)]


def kubelet_command(kubelet: Path, paths: NodePaths, address: str) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in REAL_NODE_LABELS.items())
    return [
        str(kubelet),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubelet_kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.cert_dir}",
        f"--hostname-override={REAL_NODE_NAME}",
        # Its InternalIP, where it listens: the API server reaches it there. (The kubelet
        # refuses a loopback --node-ip: on a machine without a route out, none is given and
        # the API server falls back to the node's name, which resolves to 127.0.0.1.)
        *([f"--node-ip={address}"] if not address.startswith("127.") else []),
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
