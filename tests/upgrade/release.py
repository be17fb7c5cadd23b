"""The previous release line of Sluice, pinned: the upgrade test and the CRD compatibility
check take its code and its CRD from git at this commit (the last commit of 0.1.x)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PREVIOUS_VERSION = "0.1.0"
PREVIOUS_COMMIT = "5cbabfd9112dc9b6e8091ce6abee87f8c84f342e"
CRD_PATH = "crds/sluice.dev_pipelines.yaml"


def _git(*args: str) -> bytes:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], check=True, capture_output=True
        ).stdout
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"git {' '.join(args)} failed: {e.stderr.decode().strip()}. The upgrade checks need "
            f"the previous release's commit {PREVIOUS_COMMIT} ({PREVIOUS_VERSION}) in this "
            "clone's history: clone without --depth (or `git fetch --unshallow`)."
        ) from e


def previous_crd() -> dict[str, object]:
    """The CustomResourceDefinition that the previous release installed."""
    crd: dict[str, object] = yaml.safe_load(_git("show", f"{PREVIOUS_COMMIT}:{CRD_PATH}"))
    return crd


def extract_previous(dest: Path) -> Path:
    """The previous release's operator and CRD under `dest` (operator/, crds/, deploy/);
    `dest / "operator"` goes first on PYTHONPATH to run that release's operator."""
    archive = _git("archive", "--format=tar", PREVIOUS_COMMIT, "operator", "crds", "deploy")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest
