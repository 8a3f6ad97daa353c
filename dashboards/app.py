"""The monitoring wall as one Dash app: the shell (title, navigation, the poll) and the pages.

Pages are listed in ``PAGES`` (path, title, module); a study page (what-if, carbon) joins the
navigation by adding one line. Everything is served from the package (``serve_locally``): no CDN,
and no map tiles unless configured (dashboards/tiles.py), so the wall runs in a control room
without internet.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dash import Dash, Input, Output, dcc, html

from pipetwin.dashboards.context import WallContext
from pipetwin.dashboards.store import WallStore
from pipetwin.dashboards.tiles import Tiles

PAGES = [
    ("/", "Wall", "pipetwin.dashboards.wall"),
    ("/alerts", "Alerts", "pipetwin.dashboards.console"),
    ("/quality", "Data quality", "pipetwin.dashboards.quality"),
    ("/asset", "Drill-down", "pipetwin.dashboards.drilldown"),
    ("/studies", "What-if", "pipetwin.dashboards.studies"),
    ("/carbon", "Carbon", "pipetwin.dashboards.carbon_page"),
    ("/isolation", "Isolation", "pipetwin.dashboards.isolation_page"),
]
NAV = ("/", "/alerts", "/quality", "/studies", "/carbon")     # drill-down and isolation: reached from the map
WITH_SEARCH = ("/alerts", "/asset", "/studies", "/carbon", "/isolation")   # pages whose layout reads the query


def create_app(redis_url: str, network: str, historian: str | None = None, poll_ms: int = 500,
               studies_dir: str | None = None, reports_dir: str | None = None, network_file: str | None = None,
               tiles: Tiles | None = None) -> Dash:
    ctx = WallContext(WallStore(redis_url, network), historian=historian, poll_ms=poll_ms, studies_dir=studies_dir,
                      reports_dir=reports_dir, network_file=network_file, tiles=tiles)
    ctx.check_tiles()
    app = Dash(__name__, title=f"pipetwin · {network}", serve_locally=True, suppress_callback_exceptions=True,
               assets_folder=str(Path(__file__).parent / "assets"), update_title=None)
    modules = {path: importlib.import_module(module) for path, _, module in PAGES}
    app.layout = html.Div([
        dcc.Location(id="url", refresh="callback-nav"),
        html.Div(className="top", children=[
            html.H1(f"pipetwin · {network}"),
            html.Div(id="nav", className="nav"),
        ]),
        html.Div(id="page", className="page"),
        dcc.Interval(id="tick", interval=poll_ms),
    ])

    @app.callback(Output("page", "children"), Output("nav", "children"), Input("url", "pathname"),
                  Input("url", "search"))
    def route(path, search):
        path = path or "/"
        module = modules.get(path)
        nav = [dcc.Link(title, href=p, className="active" if p == path else "") for p, title, _ in PAGES if p in NAV]
        if module is None:
            return html.H2(f"no page at {path}"), nav
        page = module.layout(ctx, search) if path in WITH_SEARCH else module.layout(ctx)
        return page, nav

    for module in modules.values():
        module.register(app, ctx)
    app.wall_context = ctx
    return app
