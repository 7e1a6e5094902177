"""Test configuration: the suite's own services (tests/support/environment.py) and fixtures."""

from __future__ import annotations

import pytest

from tests.support.environment import use_test_environment

pytest_plugins = ["tests.support.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # Before any test or fixture reads a setting; nothing in erp reads one at import.
    use_test_environment()
