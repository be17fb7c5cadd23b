"""pytest plugin: the live Argo CD (tests/argocd/launcher.py) and a local git repository.

`argocd` (session scope) starts Argo CD against the test cluster once; `gitops` gives a
test a git repository served by file:// and helpers to drive an Application over it and
to read Argo CD's own verdicts.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from localkube.cluster import LocalCluster

from argocd.launcher import NAMESPACE, ArgoCD

App = dict[str, Any]


@pytest.fixture(scope="session")
def argocd(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    running = ArgoCD(cluster.bin_dir, cluster.kubeconfig, tmp_path_factory.mktemp("argocd"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


class GitRepo:
    """A git repository on disk; Argo CD reads it by file:// (go-git runs git-upload-pack)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self._git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def _git(self, *args: str) -> str:
        return subprocess.run(
            [
                *("git", "-C", str(self.path), "-c", "user.name=test"),
                *("-c", "user.email=test@sluice.dev", "-c", "commit.gpgsign=false", *args),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def commit(self, message: str, files: dict[str, Any]) -> str:
        """Write (a dict: as YAML) or remove (None) files, commit, return the commit's sha."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(yaml.safe_dump(content, sort_keys=False))
        self._git("add", "-A")
        self._git("commit", "-q", "--allow-empty", "-m", message)
        return self._git("rev-parse", "HEAD")


@dataclass
class GitOps:
    """One Application over one git repository, for one test namespace."""

    argocd: ArgoCD
    repo: GitRepo
    namespace: str
    app: str

    def create_app(self, self_heal: bool, allow_empty: bool = False) -> None:
        """Automated sync with prune; `allow_empty` lets it prune the last resource."""
        automated = {"prune": True, "selfHeal": self_heal, "allowEmpty": allow_empty}
        application = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": self.app, "namespace": NAMESPACE},
            "spec": {
                "project": "default",
                "source": {
                    "repoURL": self.repo.url,
                    "targetRevision": "main",
                    "path": "manifests",
                },
                "destination": {
                    "server": "https://kubernetes.default.svc",
                    "namespace": self.namespace,
                },
                "syncPolicy": {"automated": automated},
            },
        }
        self.argocd.kubectl("apply", "-f", "-", input=json.dumps(application))

    def refresh(self) -> None:
        """What a user's webhook or "Refresh (hard)" does: re-read git now."""
        self.argocd.kubectl(
            *("-n", NAMESPACE, "annotate", "application", self.app),
            *("argocd.argoproj.io/refresh=hard", "--overwrite"),
        )

    def commit(self, message: str, files: dict[str, Any]) -> str:
        sha = self.repo.commit(message, files)
        self.refresh()
        return sha

    def get(self) -> App:
        out = self.argocd.kubectl("-n", NAMESPACE, "get", "application", self.app, "-o", "json")
        app: App = json.loads(out.stdout)
        return app

    def wait(self, what: str, predicate: Callable[[App], bool], timeout: float = 180) -> App:
        """Poll the Application until Argo CD's status satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        app: App = {}
        while True:
            try:
                app = self.get()
                if predicate(app):
                    return app
            except (KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; Application status:\n"
                    + json.dumps(summary(app), indent=1)
                    + "\ncontroller log:\n"
                    + self.argocd.tail("application-controller", 15)
                )
            time.sleep(0.5)

    def action(self, action: str, resource: str) -> subprocess.CompletedProcess[str]:
        """A resource action as a user runs it: `argocd app actions run`."""
        return self.argocd.cli(
            *("app", "actions", "run", f"{NAMESPACE}/{self.app}", action),
            *("--kind", "Pipeline", "--resource-name", resource, "--namespace", self.namespace),
        )


def summary(app: App) -> dict[str, Any]:
    """What Argo CD's UI shows at a glance: sync, health, each resource, the last operation."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    return {
        "sync": status.get("sync", {}).get("status"),
        "revision": status.get("sync", {}).get("revision"),
        "health": status.get("health"),
        "resources": [
            {k: r.get(k) for k in ("kind", "name", "status", "health")}
            for r in status.get("resources") or []
        ],
        "operation": {
            "phase": op.get("phase"),
            "message": op.get("message"),
            "revision": (op.get("syncResult") or {}).get("revision"),
        },
        "conditions": status.get("conditions"),
    }


@pytest.fixture
def gitops(argocd: ArgoCD, namespace: str, tmp_path: Path) -> Iterator[GitOps]:
    ops = GitOps(argocd, GitRepo(tmp_path / "git"), namespace, app=namespace[-40:].strip("-"))
    try:
        yield ops
    finally:
        # Without Argo CD's resources finalizer, deleting the Application leaves the
        # Pipelines to the namespace's deletion (and the operator's finalizer).
        argocd.kubectl("-n", NAMESPACE, "delete", "application", ops.app, "--ignore-not-found")
