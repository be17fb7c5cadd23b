"""The walk-through of README.md and the Quickstart (docs/quickstart.md), run as a user runs
them: every shell block, taken from the Markdown (never copied), in order, with bash,
against the session's cluster with the operator running. So the documented commands cannot
rot.

Markers, an HTML comment right before a block: `<!-- not run: why -->` skips it (starting
the cluster, exporting KUBECONFIG: the fixtures do both); `<!-- expect-error: text -->` says
the block fails with that text (a refusal the page shows). Lines starting with `#` are the
output a user sees (comments to bash). Each page runs in a fresh namespace: KUBECONFIG is a
copy whose context names it, and README's `namespace: default` becomes it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from localkube.cluster import REPO, LocalCluster
from localkube.fixtures import Kubectl

from .conftest import Operator

FENCE = re.compile(r"^```(?:sh|bash)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(not run|expect-error)\s*:?\s*(.*?)\s*-->\s*\Z", re.S)
BLOCK_TIMEOUT = 600  # seconds; each block bounds its own waits with --timeout


@dataclass(frozen=True)
class Block:
    where: str  # file:line, for the report
    script: str
    skip: str | None  # why it is not run
    expect_error: str | None  # the text the failing block prints


def shell_blocks(page: Path, section: str | None = None) -> list[Block]:
    """The page's sh/bash blocks in order, or only those under the `## section` heading."""
    text = page.read_text()
    start, end = 0, len(text)
    if section is not None:
        heading = re.search(rf"^## {re.escape(section)}\n", text, re.M)
        assert heading, f"{page.name} has no section {section!r}"
        start = heading.end()
        following = re.search(r"^## ", text[start:], re.M)
        end = start + following.start() if following else len(text)
    blocks = []
    for match in FENCE.finditer(text, start, end):
        before = text[max(start, match.start() - 300) : match.start()]
        marker = MARKER.search(before)
        kind, note = (marker[1], marker[2]) if marker else (None, None)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(
            Block(
                where=f"{page.relative_to(REPO)}:{line}",
                script=match[1],
                skip=note if kind == "not run" else None,
                expect_error=note if kind == "expect-error" else None,
            )
        )
    return blocks


def test_blocks_are_found() -> None:
    readme = shell_blocks(REPO / "README.md", "Five minutes with kubectl")
    assert readme[0].skip and "KUBECONFIG" in readme[0].script
    assert any("kubectl apply -f - <<'EOF'" in b.script for b in readme)
    assert any("restoreFrom" in b.script for b in readme)
    quickstart = shell_blocks(REPO / "docs/quickstart.md")
    assert [b.script for b in quickstart if b.skip] == [
        "make run\n",
        "export KUBECONFIG=$(make -s kubeconfig) PATH=$PWD/.cache/localkube/bin:$PATH\n",
    ]
    assert any(b.expect_error for b in quickstart)


@pytest.fixture
def user_env(cluster: LocalCluster, namespace: str, tmp_path: Path) -> dict[str, str]:
    """What `export KUBECONFIG=... PATH=...` gives a user, with the test's namespace as the
    context's (a copy: the session's kubeconfig stays as it is)."""
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(cluster.kubeconfig, kubeconfig)
    subprocess.run(
        [
            *(str(cluster.bin_dir / "kubectl"), "config", "set-context", "--current"),
            *(f"--namespace={namespace}", f"--kubeconfig={kubeconfig}"),
        ],
        check=True,
        capture_output=True,
    )
    # kubectl and the cluster's tools, then the venv's (kubectl-sluice).
    path = os.pathsep.join([str(cluster.bin_dir), str(Path(sys.executable).parent)])
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{path}:{os.environ['PATH']}"}


def run_blocks(blocks: list[Block], env: dict[str, str], namespace: str) -> None:
    ran = 0
    for block in blocks:
        if block.skip is not None:
            continue
        script = block.script.replace("namespace: default", f"namespace: {namespace}")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        output = proc.stdout + proc.stderr
        report = f"{block.where} exited {proc.returncode}:\n{script}\n--- output ---\n{output}"
        if block.expect_error is None:
            assert proc.returncode == 0, report
        else:
            assert proc.returncode != 0, f"expected a failure: {report}"
            assert block.expect_error in output, f"expected {block.expect_error!r}: {report}"
        ran += 1
    assert ran >= 3


def test_readme_walkthrough(
    kubectl: Kubectl, namespace: str, user_env: dict[str, str], live_operator: Operator
) -> None:
    blocks = shell_blocks(REPO / "README.md", "Five minutes with kubectl")
    run_blocks(blocks, user_env, namespace)
    # The last block deleted the pipeline: its claims went with it, its snapshot stayed.
    assert not kubectl("-n", namespace, "get", "pipelines", "-o", "name").stdout.strip()
    snapshots = kubectl("-n", namespace, "get", "volumesnapshots", "-o", "name").stdout
    assert "orders-clear-" in snapshots


def test_quickstart(
    kubectl: Kubectl, namespace: str, user_env: dict[str, str], live_operator: Operator
) -> None:
    run_blocks(shell_blocks(REPO / "docs/quickstart.md"), user_env, namespace)
    assert not kubectl("-n", namespace, "get", "pipelines", "-o", "name").stdout.strip()
    # Detach kept the claim after the pipeline was gone.
    claims = kubectl("-n", namespace, "get", "pvc", "-l", "sluice.dev/detached", "-o", "name")
    assert claims.stdout.strip()
