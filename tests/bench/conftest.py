"""Benches measure Sluice at scale: their pods go to the kwok node (hundreds of pods,
no containers), unless a bench asks for the real node itself."""

from collections.abc import Iterator

import pytest
from kubernetes import client
from localkube.fixtures import namespace_for_test


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from namespace_for_test(api_client, request, on_kwok=True)
