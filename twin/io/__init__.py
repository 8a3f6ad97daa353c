"""Readers and writers of network files, one format per module; ``read_network`` picks by path."""

from __future__ import annotations

from pathlib import Path

from pipetwin.twin.model import NetworkFileError, NetworkModel


def read_network(path: str | Path, **options) -> NetworkModel:
    """Read an EPANET ``.inp``, a GasLib ``.net`` (``scenario=`` a ``.scn``), a GeoJSON file, or a
    tabular folder."""
    path = Path(path)
    if path.is_dir():
        from pipetwin.twin.io.tabular import read_tabular

        return read_tabular(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise NetworkFileError(path, None, "no such file or folder")
    if suffix == ".inp":
        from pipetwin.twin.io.epanet_inp import read_inp

        return read_inp(path)
    if suffix in (".net", ".xml"):
        from pipetwin.twin.io.gaslib import read_gaslib

        scenario = options.pop("scenario", None)
        return read_gaslib(path, scenario, **options)
    if path.name == "network.json":
        return read_network(path.parent)
    if suffix in (".geojson", ".json"):
        from pipetwin.twin.io.geojson import read_geojson

        return read_geojson(path, **options)
    raise NetworkFileError(path, None,
                           "unknown network format: expected .inp, .net, .geojson, or a tabular folder")
