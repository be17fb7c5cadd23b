"""The launcher's promises (issue 2): stopping leaves no process behind and frees the
ports, and a crashed previous run is cleaned up by the next start; `down` removes the hostPath
volume directories its own run provisioned, and nothing else (issue 11), and the CSI
driver's state (issue 18); the CSI components restart one by one.

Uses its own state directory, so the session's cluster is not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config
from localkube.cluster import COMPONENTS, CSI_CLASS, LocalCluster, port_in_use, running_pids
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


def test_a_crashed_run_is_cleaned_up_and_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = LocalCluster(state_dir)
    first.up()
    crashed = _state(state_dir)
    assert set(crashed["pids"]) == set(COMPONENTS)
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
    assert all(p.is_dir() for p in csi_volumes), csi_volumes
    # Another cluster's volume (the provisioner's directory is shared machine-wide).
    theirs = Path(f"/tmp/hostpath_pv/{uuid.uuid4()}")
    theirs.mkdir(parents=True)
    try:
        second.down()
        assert [p for p in ours if p.exists()] == []
        assert not second.csi_dir.exists(), "down removes the CSI driver's state"
        assert theirs.exists()
    finally:
        shutil.rmtree(theirs, ignore_errors=True)
    assert not any(_alive(pid) for pid in fresh["pids"].values()), fresh
    assert list(running_pids(state_dir)) == []
    assert not any(port_in_use(port) for port in fresh["ports"].values()), fresh["ports"]
    assert not (state_dir / "state.json").exists()
