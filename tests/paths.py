"""Where the read-only benchmark data sits: ``../shared`` beside the repository (CI puts it there).
A test that needs a file from it skips, saying so, when it is absent."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
NETWORKS = SHARED / "benchmarks" / "networks"


def network_file(relative: str) -> Path:
    """A file or folder under shared/benchmarks/networks, or a skip naming what is missing."""
    path = NETWORKS / relative
    if not path.exists():
        pytest.skip(f"benchmark data {path} not found (the shared folder sits beside the repository)")
    return path
