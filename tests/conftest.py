"""Shared fixtures. ``networks_dir`` is the read-only benchmark folder beside the repository."""

from pathlib import Path

import pytest

from tests.paths import network_file


@pytest.fixture(scope="session")
def networks_dir() -> Path:
    return network_file("")
