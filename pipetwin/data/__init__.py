"""Bundled example networks (see README.md here)."""
from pathlib import Path

DATA_DIR = Path(__file__).parent


def example(name: str) -> Path:
    """Path of a bundled network: ``net1``, ``net3`` or ``schutterwald``."""
    paths = {"net1": DATA_DIR / "Net1.inp", "net3": DATA_DIR / "Net3.inp", "schutterwald": DATA_DIR / "schutterwald"}
    try:
        return paths[name.lower()]
    except KeyError:
        raise ValueError(f"unknown example network {name!r}; known: {sorted(paths)}") from None
