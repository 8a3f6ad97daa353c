"""Shared fixtures. ``shared`` is the read-only benchmark folder beside the repository."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
NETWORKS = SHARED / "benchmarks" / "networks"


@pytest.fixture(scope="session")
def networks_dir() -> Path:
    if not NETWORKS.is_dir():
        pytest.skip(f"benchmark networks not found at {NETWORKS} (the shared folder sits beside the repo)")
    return NETWORKS
