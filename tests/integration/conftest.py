"""Integration tests use the fixtures of tests/sluice_fixtures.py (see tests/conftest.py)."""

from collections.abc import Iterator

import pytest
from kubernetes import client
from localkube.fixtures import namespace_for_test
from sluice_fixtures import Operator

__all__ = ["Operator"]


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose pods go to the kwok node, for now: the pipelines here run
    `registry.example/orders:1` (pipelines.IMAGE), which no node can pull, so on the real
    node their pods would never be Ready. Goes when the tests switch to the engine
    pipeline's image (issue 23, item 4); tests that need real pods ask for `real_namespace`."""
    yield from namespace_for_test(api_client, request, on_kwok=True)


@pytest.fixture
def real_namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose pods run on the real node."""
    yield from namespace_for_test(api_client, request)
