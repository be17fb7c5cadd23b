"""GitOps with a live Argo CD (tests/argocd): what a user sees, in Argo CD's own verdicts.

Each test drives an Application (automated sync with prune, selfHeal on or off) over a git
repository by file://, commits as a user would (then a hard refresh, as a webhook would),
runs resource actions with the real `argocd` CLI, and waits on the Application's status:
`.status.sync.status`, `.status.health.status`, the Pipeline's entry in `.status.resources`
and `.status.operationState.phase`. Contract rule 22: whatever Argo CD does on its own never
clears storage a second time, never leaves its sync failing, never loses a clear.
"""

from __future__ import annotations

from typing import Any

import pytest
from argocd.fixtures import App, GitOps
from argocd.launcher import ArgoCD
from kubernetes import client
from localkube.cluster import CSI_CLASS, LocalCluster
from localkube.fixtures import Kubectl, wait_for

from .conftest import Operator
from .pipelines import (
    IMAGE,
    claims,
    events,
    get,
    kubectl_sluice,
    pod_security,
    read_claim,
)

pytestmark = pytest.mark.cluster

FILE = "manifests/orders.yaml"


def pipeline(
    namespace: str,
    desired: str = "Running",
    clear_request: str | None = None,
    storage_class: str | None = None,
) -> dict[str, Any]:
    """The Pipeline as a user keeps it in git."""
    storage: dict[str, Any] = {"size": "1Gi"}
    if storage_class:
        storage["storageClassName"] = storage_class
    if clear_request:
        storage["clearRequest"] = clear_request
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {
            "desiredState": desired,
            "image": IMAGE,
            "storage": storage,
            **pod_security(storage_class),
        },
    }


# ---- Argo CD's verdicts -------------------------------------------------------------------


def sync(app: App) -> str:
    return str(app["status"]["sync"]["status"])


def health(app: App) -> str:
    return str(app["status"]["health"]["status"])


def resource(app: App, name: str = "orders") -> dict[str, Any]:
    """The Pipeline's entry in .status.resources (its sync status and health)."""
    (entry,) = [
        r
        for r in app["status"].get("resources", [])
        if r["kind"] == "Pipeline" and r["name"] == name
    ]
    return dict(entry)


def operation(app: App) -> str | None:
    op = app["status"].get("operationState")
    return None if op is None else str(op["phase"])


def started(app: App) -> str:
    """When the last sync operation started ("" before the first)."""
    return str((app["status"].get("operationState") or {}).get("startedAt") or "")


def healed(before: str) -> Any:
    """A sync operation newer than `before` (selfHeal's) has Succeeded."""
    return lambda app: started(app) > before and operation(app) == "Succeeded"


def settled(app: App, sha: str, want: str) -> bool:
    """Synced to `sha`, the last sync Succeeded, and the app and the Pipeline are `want`."""
    return (
        sync(app) == "Synced"
        and app["status"]["sync"]["revision"] == sha
        and operation(app) == "Succeeded"
        and health(app) == want
        and resource(app)["health"]["status"] == want
    )


def fresh(gitops: GitOps) -> App:
    """Argo CD's verdict after a hard refresh it has completed (not a cached one)."""
    before = gitops.get()["status"].get("reconciledAt")
    gitops.refresh()
    return gitops.wait(
        "a completed refresh",
        lambda app: (
            app["status"].get("reconciledAt") != before
            and "argocd.argoproj.io/refresh" not in (app["metadata"].get("annotations") or {})
        ),
    )


def cleared_events(api: client.ApiClient, namespace: str) -> int:
    return sum(1 for e in events(api, namespace, "orders") if e.reason == "StorageCleared")


def claim_names(api: client.ApiClient, namespace: str) -> list[str]:
    return sorted(str(c.metadata.name) for c in claims(api, namespace))


def no_failed_sync(app: App) -> None:
    """What "never leaves its sync failing" looks like in Argo CD."""
    assert operation(app) == "Succeeded", app["status"].get("operationState")
    kinds = {c["type"] for c in app["status"].get("conditions") or []}
    assert not kinds & {"SyncError", "ComparisonError"}, app["status"]["conditions"]


def start_app(
    gitops: GitOps, self_heal: bool, allow_empty: bool = False, **spec: Any
) -> tuple[str, App]:
    # The README keeps the folder in git once the Pipeline's file is removed (Argo CD reads
    # only *.yaml, *.yml and *.json there).
    files = {FILE: pipeline(gitops.namespace, **spec), "manifests/README.md": "Pipelines"}
    sha = gitops.repo.commit("orders", files)
    gitops.create_app(self_heal=self_heal, allow_empty=allow_empty)
    want = "Healthy" if spec.get("desired", "Running") == "Running" else "Suspended"
    return sha, gitops.wait(f"Synced and {want}", lambda app: settled(app, sha, want))


# ---- the launcher ---------------------------------------------------------------------------


def test_nothing_argo_cd_runs_listens_beyond_loopback(argocd: ArgoCD) -> None:
    """redis, repo-server and argocd-server on 127.0.0.1; the application-controller, whose
    metrics listener binds 0.0.0.0, has no listener in this network namespace at all."""
    found = argocd.listeners()
    assert {name for name, _ in found} == {"redis-server", "argocd-repo-ser", "argocd-server"}
    assert all(address.startswith("127.0.0.1:") for _, address in found), found
    ports = {int(address.rsplit(":", 1)[1]) for _, address in found}
    assert argocd.controller_metrics_port not in ports
    assert {argocd.redis_port, argocd.repo_port, argocd.server_port} <= ports


# ---- git alone ----------------------------------------------------------------------------


def test_git_sync_then_stop_and_clear_then_start_on_fresh_storage(
    gitops: GitOps, api_client: client.ApiClient, kubectl: Kubectl, live_operator: Operator
) -> None:
    ns = gitops.namespace
    _, app = start_app(gitops, self_heal=True)
    assert resource(app)["status"] == "Synced"
    assert resource(app)["health"]["message"].startswith("Running as desired; storage InUse")
    (first,) = claim_names(api_client, ns)

    sha = gitops.commit("stop and clear", {FILE: pipeline(ns, "Stopped", clear_request="c1")})
    app = gitops.wait("Synced and Suspended", lambda a: settled(a, sha, "Suspended"))
    assert app["status"]["health"]["status"] == "Suspended"
    assert "storage Cleared (no claims)" in resource(app)["health"]["message"]
    obj = get(kubectl, ns, "orders")
    assert obj["status"]["storage"]["status"] == "Cleared"
    assert obj["status"]["storage"]["lastClearRequest"] == "c1"
    assert read_claim(api_client, ns, first) is None

    # The request stays in git; starting again is one more commit.
    sha = gitops.commit("start", {FILE: pipeline(ns, "Running", clear_request="c1")})
    app = gitops.wait("Synced and Healthy", lambda a: settled(a, sha, "Healthy"))
    (second,) = claim_names(api_client, ns)
    assert second != first
    # Re-syncing the same commit clears nothing again.
    no_failed_sync(fresh(gitops))
    assert cleared_events(api_client, ns) == 1


# ---- resource actions through the argocd CLI -----------------------------------------------


@pytest.mark.parametrize("self_heal", [True, False], ids=["selfHeal", "noSelfHeal"])
def test_clear_storage_action(
    gitops: GitOps,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    live_operator: Operator,
    self_heal: bool,
) -> None:
    """Git carries an older clearRequest (a clear once committed), as after a git clear."""
    ns = gitops.namespace
    sha, app = start_app(gitops, self_heal, clear_request="c1")
    (first,) = claim_names(api_client, ns)

    before = started(app)
    gitops.action("clear-storage", "orders")

    def cleared_once() -> bool:
        return cleared_events(api_client, ns) == 1 and read_claim(api_client, ns, first) is None

    wait_for(cleared_once, timeout=120, what="the action's clear")
    if self_heal:
        # selfHeal puts git's desiredState (Running) back: the clear the action asked for
        # completes first, then the pipeline starts on fresh storage, and the app is Synced.
        gitops.wait("selfHeal's sync to succeed", healed(before))
        app = gitops.wait("Synced and Healthy", lambda a: settled(a, sha, "Healthy"))
        (second,) = claim_names(api_client, ns)
        assert second != first
    else:
        # Without selfHeal the action's stop stays: Suspended, and OutOfSync on desiredState
        # until someone syncs (or commits it).
        app = gitops.wait(
            "OutOfSync and Suspended",
            lambda a: sync(a) == "OutOfSync" and health(a) == "Suspended",
        )
        assert resource(app)["status"] == "OutOfSync"
        assert "storage Cleared (no claims)" in resource(app)["health"]["message"]
        gitops.argocd.cli("app", "sync", f"argocd/{gitops.app}", "--timeout", "120")
        app = gitops.wait("Synced and Healthy", lambda a: settled(a, sha, "Healthy"))
    no_failed_sync(fresh(gitops))
    assert cleared_events(api_client, ns) == 1
    assert get(kubectl, ns, "orders")["status"]["storage"]["status"] == "InUse"

    # Later commits still sync (the Application is not jammed), and clear nothing.
    sha = gitops.commit("stop", {FILE: pipeline(ns, "Stopped", clear_request="c1")})
    app = gitops.wait("Synced and Suspended", lambda a: settled(a, sha, "Suspended"))
    assert "storage InUse" in resource(app)["health"]["message"]
    assert cleared_events(api_client, ns) == 1


def test_kubectl_sluice_clear_under_self_heal_clears_once_and_the_sync_keeps_succeeding(
    gitops: GitOps,
    api_client: client.ApiClient,
    cluster: LocalCluster,
    kubectl: Kubectl,
    live_operator: Operator,
) -> None:
    """`kubectl sluice clear --stop` on a pipeline whose git carries a handled clearRequest,
    with selfHeal on: the plugin's request is an actionClearRequest, so selfHeal, putting
    git's clearRequest and `Running` back, neither overwrites it (refused while Running: a
    failing sync) nor turns git's old value into a second clear."""
    ns = gitops.namespace
    sha, app = start_app(gitops, self_heal=True, clear_request="c1")
    (first,) = claim_names(api_client, ns)

    before = started(app)
    done = kubectl_sluice(cluster, "clear", "orders", "--stop", f"--namespace={ns}")
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: cleared_events(api_client, ns) == 1 and read_claim(api_client, ns, first) is None,
        timeout=120,
        what="the plugin's clear",
    )
    gitops.wait("selfHeal's sync to succeed", healed(before))
    app = gitops.wait("Synced and Healthy", lambda a: settled(a, sha, "Healthy"))
    (second,) = claim_names(api_client, ns)
    assert second != first
    no_failed_sync(fresh(gitops))
    assert cleared_events(api_client, ns) == 1
    storage = get(kubectl, ns, "orders")["spec"]["storage"]
    assert storage["clearRequest"] == "c1"  # git's, untouched


@pytest.mark.parametrize("self_heal", [True, False], ids=["selfHeal", "noSelfHeal"])
def test_stop_and_start_actions(
    gitops: GitOps, kubectl: Kubectl, live_operator: Operator, self_heal: bool
) -> None:
    ns = gitops.namespace
    sha, app = start_app(gitops, self_heal)

    before = started(app)
    gitops.action("stop", "orders")
    if self_heal:
        # Git says Running: selfHeal undoes the stop (Argo CD's rule; docs/gitops.md: commit it, or
        # ignore /spec/desiredState with RespectIgnoreDifferences).
        gitops.wait("selfHeal's sync to succeed", healed(before))
        app = gitops.wait("Synced and Healthy again", lambda a: settled(a, sha, "Healthy"))
    else:
        app = gitops.wait(
            "OutOfSync and Suspended", lambda a: sync(a) == "OutOfSync" and health(a) == "Suspended"
        )
        assert "Stopped as desired; storage InUse" in resource(app)["health"]["message"]
        gitops.action("start", "orders")
        app = gitops.wait("Synced and Healthy", lambda a: settled(a, sha, "Healthy"))
    no_failed_sync(fresh(gitops))

    sha = gitops.commit("stop", {FILE: pipeline(ns, "Stopped")})
    app = gitops.wait("Synced and Suspended", lambda a: settled(a, sha, "Suspended"))
    before = started(app)
    gitops.action("start", "orders")
    if self_heal:
        gitops.wait("selfHeal's sync to succeed", healed(before))
        app = gitops.wait("Synced and Suspended again", lambda a: settled(a, sha, "Suspended"))
    else:
        app = gitops.wait(
            "OutOfSync and Healthy", lambda a: sync(a) == "OutOfSync" and health(a) == "Healthy"
        )
    no_failed_sync(fresh(gitops))
    assert get(kubectl, ns, "orders")["status"]["storage"]["status"] == "InUse"


# ---- a clear that fails, and pruning -------------------------------------------------------


def test_a_failed_clear_is_degraded_with_the_operators_message_until_it_completes(
    gitops: GitOps,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    cluster: LocalCluster,
    live_operator: Operator,
) -> None:
    ns = gitops.namespace
    start_app(gitops, self_heal=True, storage_class=CSI_CLASS)
    (claim,) = claim_names(api_client, ns)
    pv_name = read_claim(api_client, ns, claim).spec.volume_name
    pv = client.CoreV1Api(api_client).read_persistent_volume(pv_name)
    marker = cluster.csi_dir / "fail-delete" / pv.spec.csi.volume_handle
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("injected: disk is read-only")
    try:
        sha = gitops.commit(
            "stop and clear",
            {FILE: pipeline(ns, "Stopped", clear_request="c1", storage_class=CSI_CLASS)},
        )
        app = gitops.wait(
            "Degraded",
            lambda a: a["status"]["sync"]["revision"] == sha and health(a) == "Degraded",
        )
        message = resource(app)["health"]["message"]
        error = get(kubectl, ns, "orders")["status"]["error"]
        assert message.startswith(f"StorageClearFailed: {error['message']}"), message
        assert pv_name in message and "injected: disk is read-only" in message
        assert sync(app) == "Synced" and operation(app) == "Succeeded"
        # A start committed meanwhile waits for the clear (rule 8); the sync itself succeeds.
        sha = gitops.commit(
            "start", {FILE: pipeline(ns, "Running", clear_request="c1", storage_class=CSI_CLASS)}
        )
        app = gitops.wait(
            "Synced, still Degraded",
            lambda a: settled_sync(a, sha) and health(a) == "Degraded",
        )
    finally:
        marker.unlink(missing_ok=True)
    app = gitops.wait("Healthy", lambda a: settled(a, sha, "Healthy"), timeout=240)
    assert claim not in claim_names(api_client, ns)
    assert cleared_events(api_client, ns) == 1


def settled_sync(app: App, sha: str) -> bool:
    return (
        sync(app) == "Synced"
        and app["status"]["sync"]["revision"] == sha
        and operation(app) == "Succeeded"
    )


def test_removing_the_pipeline_from_git_prunes_it_and_clears_its_storage(
    gitops: GitOps, api_client: client.ApiClient, kubectl: Kubectl, live_operator: Operator
) -> None:
    """The Pipeline is the app's only resource: Argo CD's automated sync refuses to prune the
    last one ("auto-sync will wipe out all resources", a SyncError) unless allowEmpty."""
    ns = gitops.namespace
    start_app(gitops, self_heal=True, allow_empty=True)
    assert claim_names(api_client, ns)

    sha = gitops.commit("remove orders", {FILE: None})
    app = gitops.wait(
        "Synced with nothing left",
        lambda a: settled_sync(a, sha) and not a["status"].get("resources"),
    )
    assert health(app) == "Healthy"
    wait_for(
        lambda: kubectl("-n", ns, "get", "pipeline", "orders", check=False).returncode != 0,
        timeout=120,
        what="the pruned Pipeline to be gone",
    )
    assert claim_names(api_client, ns) == []
    assert cleared_events(api_client, ns) <= 1
