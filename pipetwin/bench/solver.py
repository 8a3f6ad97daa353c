"""Solver speed against the reference tools, side by side in one process (machines here are noisy):
EPANET 2.2's toolkit (through wntr's in-process bindings) for water, pandapipes for gas. Runs
alternate between the two, after a warm-up (numba compiled, caches filled), and the median of
several runs is reported as ``key=value`` lines:

    case=<name> nodes=<n> pipetwin_ms=<x> reference=<tool> reference_ms=<y> ratio=<y/x>

EPANET's time is ENinitH(10) + ENrunH, a cold solve from re-initialized flows (its file reading and
ENopenH happen once, outside the timing);
pipetwin's is ``solve_water`` on a network prepared once, the same division of work. Gas solves
are timed cold on both sides: pandapipes' ``pipeflow`` against a fresh ``GasSolver`` + solve.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pipetwin.twin.io.epanet_inp import read_inp
from pipetwin.twin.io.tabular import read_tabular
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.water import prepare, solve_water


def default_shared() -> Path:
    return Path(__file__).resolve().parents[2] / ".." / "shared"


def _median_alternating(f_ours, f_ref, repeats: int, budget_s: float = 0.0) -> tuple[float, float]:
    """Medians (ms) of ``repeats`` alternating pairs, or of as many as fit in ``budget_s`` (at most
    25): cases that take milliseconds get more pairs, so one busy moment moves their median less."""
    f_ours()
    t = time.perf_counter()
    f_ref()
    pair_s = time.perf_counter() - t
    repeats = max(repeats, min(25, int(budget_s / max(pair_s, 1e-6))))
    ours, ref = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        f_ours()
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        f_ref()
        ref.append(time.perf_counter() - t)
    return statistics.median(ours) * 1e3, statistics.median(ref) * 1e3


def _line(case: str, nodes: int, ours_ms: float, ref: str, ref_ms: float, **extra) -> None:
    more = "".join(f" {k}={v}" for k, v in extra.items())
    print(f"case={case} nodes={nodes} pipetwin_ms={ours_ms:.2f} reference={ref} reference_ms={ref_ms:.2f} "
          f"ratio={ref_ms / ours_ms:.2f}{more}", flush=True)


def bench_water(inp: Path, repeats: int) -> None:
    from wntr.epanet.toolkit import ENepanet

    model = read_inp(inp)
    net = prepare(model)
    with tempfile.TemporaryDirectory() as tmp:
        en = ENepanet(version=2.2)
        en.ENopen(str(inp), os.path.join(tmp, "r.rpt"), os.path.join(tmp, "r.bin"))
        en.ENopenH()

        def epanet():
            en.ENinitH(10)      # 10: re-initialize flows (a cold solve, as ours), no hydraulics file
            en.ENrunH()

        result = solve_water(model, prepared=net)
        ours, ref = _median_alternating(lambda: solve_water(model, prepared=net), epanet, repeats, budget_s=2.0)
        # the same answer: EPANET's heads (EN_HEAD, feet in US units) against ours, by node id
        to_m = 0.3048 if en.ENgetflowunits() <= 4 else 1.0
        heads = {en.ENgetnodeid(i): en.ENgetnodevalue(i, 10) * to_m for i in range(1, model.n_nodes + 1)}
        en.ENcloseH()
        en.ENclose()
    # nodes that closed links cut off from every source have no physical head in EPANET (they hang
    # on closed links' tiny conductances); pipetwin reports them unsupplied, so compare the rest
    ref_h = np.array([heads[i] for i in model.nodes.ids])
    ok = ~result.unsupplied
    dh = float(np.max(np.abs(ref_h - result.node_head_m)[ok]))
    _line(inp.stem, model.n_nodes, ours, "epanet-2.2", ref, iterations=result.iterations,
          max_head_diff_m=f"{dh:.2e}", unsupplied=int((~ok).sum()))


def _pandapipes_net(folder: Path):
    import pandapipes as pp

    meta = json.loads((folder / "network.json").read_text())
    model = read_tabular(folder)
    nodes = model.nodes
    net = pp.create_empty_network(fluid=meta["fluid"])
    h = nodes.elevation_m
    p_amb = 101325.0 * (1.0 - 0.0065 * h / 288.15) ** 5.255
    t = model.gas.temperature_k
    j = pp.create_junctions(net, len(nodes), pn_bar=1.0, tfluid_k=t, height_m=h, name=list(nodes.ids))
    src = np.flatnonzero(nodes.kind == 1)
    for s in src:
        pp.create_ext_grid(net, junction=j[s], p_bar=(nodes.fixed_pressure_pa[s] - p_amb[s]) / 1e5, t_k=t)
    d = model.base_demand()
    sinks = np.flatnonzero(d > 0)
    pp.create_sinks(net, j[sinks], mdot_kg_per_s=d[sinks])
    inj = np.flatnonzero(d < 0)
    if len(inj):
        pp.create_sources(net, j[inj], mdot_kg_per_s=-d[inj])
    links = model.links
    pp.create_pipes_from_parameters(net, j[links.from_node], j[links.to_node], length_km=links.length_m / 1e3,
                                    inner_diameter_mm=links.diameter_m * 1e3, k_mm=links.roughness * 1e3,
                                    name=list(links.ids))
    options = meta.get("reference_options", {})
    return model, net, options, p_amb


def bench_gas(folder: Path, repeats: int) -> None:
    import pandapipes as pp

    model, net, options, p_amb = _pandapipes_net(folder)

    def reference():
        pp.pipeflow(net, **options)

    result = GasSolver(model).solve()
    ours, ref = _median_alternating(lambda: GasSolver(model).solve(), reference, repeats, budget_s=2.0)
    p_ref = net.res_junction.p_bar.to_numpy() * 1e5 + p_amb
    rel = float(np.max(np.abs(p_ref - result.node_pressure_pa) / p_ref))
    _line(folder.name, model.n_nodes, ours, "pandapipes", ref, iterations=result.iterations,
          max_rel_pressure_diff=f"{rel:.1e}")


def bench_scale(repeats: int, quick: bool) -> None:
    """The 100,000-node targets: a cold solve under 1 s, and a warm re-solve after a 1% change to
    every demand at most 0.3 x the cold time (reference: pipetwin's own cold solve)."""
    from pipetwin.bench.synthetic import city, lattice

    makers = [("city", lambda: city(88))] if not quick else [("city", lambda: city(30))]
    if not quick:
        makers.append(("lattice", lambda: lattice(316)))
    rng = np.random.default_rng(7)
    for name, make in makers:
        model = make()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        GasSolver(model).solve()
        solver = GasSolver(model)
        base = solver.solve()
        # cold and warm alternate, so a busy moment on a shared machine hits both alike
        cold, warm = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            GasSolver(model).solve()
            cold.append(time.perf_counter() - t)
            demand = model.node_demand() * (1.0 + 0.01 * rng.choice([-1.0, 1.0], model.n_nodes))
            t = time.perf_counter()
            w = solver.solve(demand, warm_start=base)
            warm.append(time.perf_counter() - t)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cold_ms, warm_ms = statistics.median(cold) * 1e3, statistics.median(warm) * 1e3
        print(f"case={name}_cold nodes={model.n_nodes} pipes={model.n_links} pipetwin_ms={cold_ms:.1f} "
              f"iterations={base.iterations} converged={str(base.converged).lower()} "
              f"peak_rss_mb={rss / 1024:.0f} rss_growth_mb={(rss - rss0) / 1024:.0f} "
              f"backend={base.extra['linear_backend']}", flush=True)
        print(f"case={name}_warm_1pct nodes={model.n_nodes} pipetwin_ms={warm_ms:.1f} reference=pipetwin_cold "
              f"reference_ms={cold_ms:.1f} ratio={cold_ms / warm_ms:.2f} warm_over_cold={warm_ms / cold_ms:.2f} "
              f"iterations={w.iterations} factorizations={w.extra['factorizations']}", flush=True)


def main(quick: bool = False, shared: str | None = None) -> int:
    root = Path(shared) if shared else default_shared()
    networks = root / "benchmarks" / "networks"
    if not networks.is_dir():
        print(f"error=shared benchmarks not found at {networks}")
        return 1
    repeats = 3 if quick else 7
    for name in ("L-TOWN.inp", "BWSN_Network_2.inp"):
        bench_water(networks / name, repeats)
    for name in ("schutterwald", "grid10k"):
        # as many alternating pairs as the water cases: with three, one busy moment on a shared
        # machine moved the median by a third
        bench_gas(networks / name, repeats)
    bench_scale(5, quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
