"""The CRD in crds/ is generated from the models and must not drift from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sluice.api import crd, policy

REPO = Path(__file__).resolve().parents[2]


def test_crds_folder_matches_the_models() -> None:
    committed = (REPO / "crds" / crd.CRD_FILE).read_text()
    assert committed == crd.render(), "crds/ is stale: run `make crds`"
    for folder in ("crds", "deploy/crd", "deploy/helm/sluice/crds"):
        written = (REPO / folder / policy.POLICY_FILE).read_text()
        assert written == policy.render(), f"{folder}/ is stale: run `make crds`"


def _walk(schema: dict[str, Any], path: str = "") -> list[str]:
    exempt = path == ".metadata"  # the API server forbids anything but type here
    missing = [] if "description" in schema or exempt else [path or "<root>"]
    for name, prop in (schema.get("properties") or {}).items():
        missing += _walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        missing += _walk(schema["items"], f"{path}[]")
    return missing


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    schema = yaml.safe_load(crd.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
