"""Edge fixtures live in tests/conftest.py (shared with the cloud tests)."""

from tests.conftest import RunAgent

__all__ = ["RunAgent"]
