"""The documentation site builds strictly (as `make docs` does): a broken link, a missing
anchor, a page left out of the nav or any other warning fails. The Pipeline API reference
is generated from the CRD while it builds, and every alert's runbook anchor exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "sluice.dev_pipelines.yaml"
ALERTS = REPO / "deploy/helm/sluice/files/alerts.yaml"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    warnings = [line for line in log.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]
    assert not warnings, log
    return out


def _schema_paths(schema: dict[str, object], path: str) -> list[str]:
    found = [path]
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            found += _schema_paths(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(items.get("properties"), dict):
        for name, sub in items["properties"].items():
            found += _schema_paths(sub, f"{path}[].{name}")
    return found


def test_reference_has_every_field_of_the_crd(site: Path) -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    page = (site / "reference/pipeline/index.html").read_text()
    for top in ("spec", "status"):
        for path in _schema_paths(schema[top], top):
            assert f"<code>{path}</code>" in page, f"{path} missing from the API reference"
    # A validation rule's message, as the API server answers it.
    assert "needs desiredState: Stopped" in page


def test_reference_page_is_not_checked_in() -> None:
    assert not (REPO / "docs/reference/pipeline.md").exists()


def test_every_alert_has_its_runbook_anchor(site: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert names
    page = (site / "runbooks/index.html").read_text()
    for name in names:
        assert f'id="{name.lower()}"' in page, f"no runbook section for {name}"


def test_diagrams_are_mermaid(site: Path) -> None:
    page = (site / "concepts/index.html").read_text()
    assert page.count('class="mermaid"') >= 2
    assert "stateDiagram" in page
    assert "sequenceDiagram" in page


def test_readme_links_lead_somewhere() -> None:
    """README is read on its own (on GitHub, in a checkout): its links into docs/ and the
    repository must exist, anchors included."""
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) > 10
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.exists(), f"README links to missing {path}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {
                re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings
            }
            assert anchor in slugs, f"README links to {link}: no such heading"
