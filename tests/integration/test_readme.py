"""README's first Pipeline, as written there (its YAML is taken from the Markdown, not
copied), runs on the local cluster's real node."""

from __future__ import annotations

import re
from typing import Any

import yaml
from localkube.cluster import REPO
from localkube.fixtures import Kubectl

from .conftest import Operator
from .pipelines import apply, wait_condition, wait_jsonpath


def readme_pipeline() -> dict[str, Any]:
    """The first `kubectl apply -f - <<'EOF' ... EOF` document of README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"kubectl apply -f - <<'EOF'\n(.*?)\nEOF\n", text, re.DOTALL)
    assert match, "README has no `kubectl apply -f - <<'EOF'` block"
    doc: dict[str, Any] = yaml.safe_load(match[1])
    return doc


def test_readmes_first_pipeline_runs(
    kubectl: Kubectl, namespace: str, live_operator: Operator
) -> None:
    pipeline = readme_pipeline()
    assert pipeline["kind"] == "Pipeline"
    pipeline["metadata"]["namespace"] = namespace
    apply(kubectl, yaml.safe_dump(pipeline))
    wait_condition(kubectl, namespace, "orders", "Running", timeout=120)
    wait_jsonpath(kubectl, namespace, "orders", ".status.storage.status", "InUse")
    status = kubectl("-n", namespace, "exec", "orders-0", "--", "engine-pipeline", "status")
    assert '"storage_dir":"/storage/data"' in status.stdout.replace(" ", ""), status.stdout
