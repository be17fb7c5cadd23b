"""Integration tests use the fixtures of tests/sluice_fixtures.py (see tests/conftest.py)."""

from sluice_fixtures import Operator

__all__ = ["Operator"]
