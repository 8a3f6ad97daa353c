"""Output files of studies and reports served by the wall: only names a page allows, and only
from inside its configured folder (no path tricks out of it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def allowed_file(root: str | Path, rel: str, allowed: Callable[[str], bool]) -> Path | None:
    root = Path(root).resolve()
    path = (root / rel).resolve()
    if not allowed(path.name) or not path.is_file() or root not in path.parents:
        return None
    return path


def serve_folder(app, rule: str, endpoint: str, root: Callable[[], str | Path | None],
                 allowed: Callable[[str], bool]) -> None:
    """``rule`` (with a ``<path:rel>`` part) serves the allowed files under ``root()``, else 404."""
    from flask import abort, send_file

    def serve(rel: str):
        folder = root()
        path = allowed_file(folder, rel, allowed) if folder else None
        if path is None:
            abort(404)
        return send_file(path)

    app.server.add_url_rule(rule, endpoint, serve)
