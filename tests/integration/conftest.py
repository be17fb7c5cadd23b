"""Integration tests use the fixtures of tests/sluice_fixtures.py (see tests/conftest.py).

Their `namespace` (localkube.fixtures) runs pods on the real node: pipelines there run the
engine pipeline's image (pipelines.IMAGE) as real pods with real volumes.
"""

from sluice_fixtures import Operator

__all__ = ["Operator"]
