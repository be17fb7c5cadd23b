"""The upgrade test's own local cluster (it installs the previous release's CRD, which the
session cluster's other tests must never see), and the previous release's code from git."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from localkube.cluster import LocalCluster
from localkube.fixtures import TEST_STATE_DIR, for_this_worker

from upgrade.release import extract_previous

UPGRADE_STATE_DIR = for_this_worker(TEST_STATE_DIR.parent / "upgrade")


@pytest.fixture(scope="module")
def upgrade_cluster() -> Iterator[LocalCluster]:
    local = LocalCluster(state_dir=UPGRADE_STATE_DIR)
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's operator/, crds/ and deploy/ (git archive of the pinned commit)."""
    return extract_previous(tmp_path_factory.mktemp("previous-release"))
