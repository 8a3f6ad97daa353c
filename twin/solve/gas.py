"""Isothermal steady-state gas network solver.

Global gradient (Todini-Pilati) Newton in squared pressure: each link obeys
``pi_from - pi_to = phi(m)`` with pi = p^2 (absolute Pa), each free node balances its mass flows.
Eliminating link flows leaves a symmetric positive definite system over free-node pi, factorized
by ``LaplacianSystem``. Regulators and compressors switch between active / open / closed the way
EPANET's valves do; parts of the network cut off from every source are found by a graph pass first
and reported as unsupplied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from pipetwin.kernels import gas as gk
from pipetwin.kernels.graph import adjacency, bfs_forest, component_labels, tree_flows
from pipetwin.twin.model import LinkKind, LinkStatus, NetworkModel, NodeKind
from pipetwin.twin.solve.linalg import LaplacianSystem
from pipetwin.twin.solve.result import SolveResult

LOSSLESS = (LinkKind.SHORT_PIPE, LinkKind.VALVE)
# the statuses and kinds every solve compares against, as plain ints: each attribute access on an
# IntEnum class costs ~2 us in Python 3.11 (two dozen per solve: 2% of Schutterwald's)
CLOSED, OPEN, ACTIVE = int(LinkStatus.CLOSED), int(LinkStatus.OPEN), int(LinkStatus.ACTIVE)
SOURCE, PIPE, RESISTOR = int(NodeKind.SOURCE), int(LinkKind.PIPE), int(LinkKind.RESISTOR)
# The starting velocity on meshed networks: measured on grid10k and a 12k-node city grid, 0.1-0.3 m/s
# takes one or two Newton steps fewer than EPANET's 1 ft/s-like 1 m/s (7 vs 8, 6 vs 8).
START_VELOCITY_M_S = 0.2
# a warm re-solve keeps the last factorization (a chord step) while no conductance has moved more
# than this share from the factorized ones (the chord step then still contracts); more, it refactors
CHORD_MAX_CHANGE = 0.3
# otherwise, conjugate gradients preconditioned by the last factorization take the step when they
# should need fewer iterations than cost a factorization: about PCG_BASE + sqrt(conductances moved
# by more than PCG_CHANGE from the factorized ones) (grid10k, from the factorization 1-3 steps
# back: 4, 48, 824, 4763 moved -> 7, 16, 27-31, 70-73 iterations to 1e-10), to the residual share
# PCG_RTOL of the step's own start (it shrinks with the Newton residual): on grid10k the flows then
# balance to 4e-11 kg/s (2e-11 of the throughput) and match the factorized path's to 1e-9 kg/s, the
# reference's to the same 0.54 of the test's tolerance as with 1e-8 or 1e-10 (20 iterations, not 27 or 33).
# 1e-4 (14 iterations): balance 7e-11 kg/s; over 10 demand patterns of grid10k 183 -> 127 CG iterations,
# same steps, the flows as close to a solve converged 1000x tighter (worst 0.55 of the test's tolerance
# either way); 1e-3 (102) lets the balance slip to 1.5e-9 kg/s, near the 1e-9 of the throughput asked
PCG_CHANGE = 0.1
PCG_BASE = 10
PCG_RTOL = 1e-4
# the pipe law's friction factors are computed loosely (``kernels.gas.X_TOL_LOOSE``) while the last
# law residual exceeded this many times its tolerance (grid10k: the first five of eight calls)
LOOSE_FRICTION_ABOVE = 1e4
# Colebrook's flat low-flow stretch (see ``kernels.gas.settle_reversals``) ends near Re 3
RE_PLATEAU = 3.0
CONTROLLED = (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET, LinkKind.COMPRESSOR_RATIO)
Z_CODES = {"constant": gk.Z_CONSTANT, "linear": gk.Z_LINEAR, "papay": gk.Z_PAPAY}


@dataclass
class GasOptions:
    friction: str | None = None        # None: the model's own (model.gas.friction)
    laminar_switch: bool = False       # 64/Re below Re 2320 when larger than the turbulent law
    max_iter: int = 100
    tol_pressure_pa: float = 1e-3      # max |dp| between iterations (or 1e-10 of p_source); pandapipes: 0.01 Pa
    tol_law_pa: float = 1e-3           # max |pipe law residual| / (p1 + p2), Pa (pandapipes: 0.1 Pa)
    status_tol_pa: float = 1e-2        # hysteresis of regulator / compressor switching
    lossless_ratio: float = 1e4        # conductance of lossless links relative to the median pipe
    closed_ratio: float = 1e-10        # conductance of closed links relative to the median pipe
    backend: str = "auto"


def _kind_in(kind: np.ndarray, kinds) -> np.ndarray:
    """``np.isin(kind, kinds)`` by a lookup table (a tenth of its time on a few thousand links)."""
    table = np.zeros(max(int(kind.max(initial=0)), *(int(k) for k in kinds)) + 1, bool)
    table[[int(k) for k in kinds]] = True
    return table[kind]


def _components(model: NetworkModel, usable: np.ndarray, labels: bool = False):
    """Nodes that share a connected component (over usable links) with a source (and, with
    ``labels``, each node's component label)."""
    n = model.n_nodes
    label = component_labels(n, model.links.from_node.astype(np.int64), model.links.to_node.astype(np.int64),
                             np.ascontiguousarray(usable, dtype=np.bool_))
    fed = np.zeros(n, bool)
    fed[label[model.nodes.kind == SOURCE]] = True
    return (fed[label], label) if labels else fed[label]


class GasSolver:
    """Holds what depends on topology only (index maps, the factorization's symbolic analysis),
    so a twin that re-solves every tick pays for it once. ``solve`` is a pure function of its
    arguments and the model given at construction."""

    def __init__(self, model: NetworkModel, options: GasOptions | None = None):
        if not model.is_gas:
            raise ValueError(f"{model.name}: solve_gas needs a natural-gas model")
        self.model = model
        self.options = options or GasOptions()
        links, nodes = model.links, model.nodes
        self.kind = links.kind.astype(np.int64)
        self.fr = links.from_node.astype(np.int64)
        self.to = links.to_node.astype(np.int64)
        self.static_closed = links.status == CLOSED
        self.supplied, self._labels = _components(model, ~self.static_closed, labels=True)
        fixed = (nodes.kind == SOURCE) & self.supplied
        bad = fixed & ~(nodes.fixed_pressure_pa > 0)
        if bad.any():
            raise ValueError(f"source {nodes.ids[np.argmax(bad)]!r} has no positive fixed pressure")
        self.fixed = fixed
        self.free = self.supplied & ~fixed
        self.active_link = ~self.static_closed & self.supplied[links.from_node] & self.supplied[links.to_node]
        self._systems: dict[tuple, tuple[LaplacianSystem, np.ndarray]] = {}
        self._conductance_scale: float | None = None
        self._factored_w: dict[tuple, np.ndarray] = {}   # conductances of each system's last factorization
        # independent loops of the supplied network (links - nodes + components)
        # (a component's label is its root node)
        supplied_nodes = np.flatnonzero(self.supplied)
        self.loops = int(self.active_link.sum()) - len(supplied_nodes) + int(
            np.count_nonzero(self._labels[supplied_nodes] == supplied_nodes))
        # (nearly) a tree: a breadth-first forest from the sources gives the starting flows, and
        # eliminating its nodes deepest first is a fill-free order (no ordering pass needed)
        self.tree_like = self.loops <= 0.02 * max(int(self.active_link.sum()), 1)
        self._bfs = self._forest() if self.tree_like else None
        self.system, _ = self._system_for(())
        self.is_pipe = (self.kind == PIPE) | (self.kind == RESISTOR)
        self.pipe_idx = np.flatnonzero(self.is_pipe & self.active_link)
        self._x_cache = np.zeros(len(self.pipe_idx))   # last Colebrook 1/sqrt(lambda) (Halley start)
        self.ctrl_idx = np.flatnonzero(_kind_in(self.kind, CONTROLLED) & self.active_link)
        g = model.gas
        friction = self.options.friction or g.friction
        if friction not in gk.FRICTION_CODES:
            raise ValueError(f"unknown friction law {friction!r}; one of {sorted(gk.FRICTION_CODES)}")
        self.law = gk.FRICTION_CODES[friction]
        # floor of dphi/dm as a share of the laminar slope: pure Colebrook is nearly flat in m at
        # low Re (lambda m^2 ~ constant), so its floor must sit low to keep Newton quadratic there;
        # laws whose slope only vanishes at m = 0 are best damped by the full laminar slope
        self.floor_factor = 1e-3 if (self.law == gk.COLEBROOK and not self.options.laminar_switch) else 1.0
        c = g.compressibility
        if c.model not in Z_CODES:
            raise ValueError(f"unknown compressibility model {c.model!r}")
        self.zargs = (Z_CODES[c.model], c.z, c.offset, c.slope_per_pa, c.pseudocritical_pressure_pa,
                      c.pseudocritical_temperature_k)
        self._pipe_constants()
        # Colebrook at every Re has a step at zero flow that Newton can circle around (kernel doc)
        self.plateau = self.law == gk.COLEBROOK and not self.options.laminar_switch
        self._laminar: GasSolver | None = None    # the fallback for a solve that stalls (see solve)
        self.re_unit = np.ascontiguousarray(g.dynamic_viscosity_pa_s * 0.25 * np.pi * self.pipe_d)  # flow at Re 1
        # each link's mode in a Newton step; controlled links are set from their status each step
        self.base_mode = np.full(model.n_links, gk.MODE_NONE, np.int64)
        self.lossless_kind = _kind_in(self.kind, LOSSLESS)
        self.base_mode[self.lossless_kind & self.active_link] = gk.MODE_OPEN
        self.base_mode[self.pipe_idx] = gk.MODE_PIPE
        self.pipe_slot = np.full(model.n_links, -1, np.int64)
        self.pipe_slot[self.pipe_idx] = np.arange(len(self.pipe_idx))

    def _pipe_constants(self) -> None:
        """Per-pipe arrays the pipe law reads every step, gathered once."""
        model, g, idx = self.model, self.model.gas, self.pipe_idx
        links, nodes = model.links, model.nodes
        dz = nodes.elevation_m[links.from_node[idx]] - nodes.elevation_m[links.to_node[idx]]
        self.pipe_dz = np.ascontiguousarray(dz, dtype=np.float64)
        self.pipe_d = np.ascontiguousarray(links.diameter_m[idx], dtype=np.float64)
        self.pipe_l = np.ascontiguousarray(links.length_m[idx], dtype=np.float64)
        self.pipe_k = np.ascontiguousarray(links.roughness[idx], dtype=np.float64)
        self.pipe_zeta = np.ascontiguousarray(links.minor_loss[idx], dtype=np.float64)
        d = self.pipe_d
        area = 0.25 * np.pi * d * d
        z_m = 1.0
        # floor of dphi/dm: the laminar (Hagen-Poiseuille) slope, the smallest physical one
        c0 = g.normal_pressure_pa * g.temperature_k * z_m / (
            g.normal_temperature_k * g.normal_density_kg_m3 * area ** 2)
        floor = c0 * 64.0 * g.dynamic_viscosity_pa_s * area * self.pipe_l / (d * d)
        self.pipe_floor = np.maximum(floor * self.floor_factor, 1e-300)

    def _system_for(self, pinned: tuple) -> tuple[LaplacianSystem, np.ndarray]:
        """The linear system over free nodes less the ``pinned`` ones (held by active regulators
        or compressors), and its row map. One symbolic analysis per distinct pinned set."""
        if pinned not in self._systems:
            free = self.free.copy()
            free[list(pinned)] = False
            row = np.full(self.model.n_nodes, -1, np.int64)
            row[free] = np.arange(int(free.sum()))
            fr = self.model.links.from_node.astype(np.int64)
            to = self.model.links.to_node.astype(np.int64)
            link_i = np.where(self.active_link, row[fr], -1)
            link_j = np.where(self.active_link, row[to], -1)
            order = None
            if self._bfs is not None:
                deepest_first = row[self._bfs[0][::-1]]
                order = deepest_first[deepest_first >= 0]
            self._systems[pinned] = (LaplacianSystem(int(free.sum()), link_i, link_j, self.options.backend,
                                                     order=order), row)
        return self._systems[pinned]

    # -- physics helpers ------------------------------------------------------------------------
    def _pipe_phi(self, m, p, x_tol: float = gk.X_TOL_SOLVER):
        """phi and dphi/dm of the pipes in ``pipe_idx`` at link flows ``m`` and node pressures ``p``,
        and (law residual, largest pipe drop) in Pa; friction factors to ``x_tol`` (kernel doc)."""
        g = self.model.gas
        phi = np.empty(len(self.pipe_idx))
        dphi = np.empty(len(self.pipe_idx))
        law_res, dp_scale = gk.pipe_law(
            np.ascontiguousarray(m, dtype=np.float64), np.ascontiguousarray(p, dtype=np.float64), self.fr, self.to,
            self.pipe_idx, self.pipe_dz, self.pipe_d, self.pipe_l, self.pipe_k, self.pipe_zeta, self.law,
            self.options.laminar_switch, g.pipe_efficiency, g.dynamic_viscosity_pa_s, g.normal_density_kg_m3,
            g.normal_pressure_pa, g.normal_temperature_k, g.temperature_k, g.gravity_m_s2, *self.zargs,
            self.pipe_floor, self._x_cache, x_tol, phi, dphi)
        return phi, dphi, law_res, dp_scale

    def _forest(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Breadth-first spanning forest from the sources over usable links: (order, pred, pred_link)."""
        n = self.model.n_nodes
        indptr, other, lid = adjacency(n, self.fr, self.to, np.flatnonzero(self.active_link).astype(np.int64))
        return bfs_forest(indptr, other, lid, np.flatnonzero(self.fixed), n)

    def _balanced_start(self, demand: np.ndarray) -> np.ndarray:
        """Starting flows that already balance every node: subtree demands along a breadth-first
        spanning forest grown from the sources (each source's share decided by the search); links
        off the tree carry a small flow so that their first conductance is a physical one, not the
        zero-flow floor."""
        model = self.model
        fr = model.links.from_node
        order, pred, pred_link = self._bfs if self._bfs is not None else self._forest()
        m = np.zeros(model.n_links)
        d = np.where(self.fixed | ~self.supplied, 0.0, demand)
        tree_flows(order, pred_link, pred, d, fr.astype(np.int64), m)
        on_tree = np.zeros(model.n_links, bool)
        on_tree[pred_link[pred_link >= 0]] = True
        off_tree = ~on_tree & self.active_link
        if off_tree.any():
            scale = float(np.median(np.abs(m[on_tree]))) if on_tree.any() else 1e-3
            m[off_tree] = 0.01 * max(scale, 1e-9)
        return m

    def density(self, p: np.ndarray) -> np.ndarray:
        g = self.model.gas
        out = np.empty(len(p))
        gk.real_density(np.ascontiguousarray(p, dtype=np.float64), g.normal_density_kg_m3, g.normal_pressure_pa,
                        g.normal_temperature_k, g.temperature_k, *self.zargs, out)
        return out

    def line_pack_kg(self, node_pressure_pa: np.ndarray) -> float:
        """Gas held in the pipes: what a dispatcher can draw on before pressures fall. Each pipe's
        mean pressure is the isothermal profile's (2/3 (p1^3 - p2^3) / (p1^2 - p2^2)), not the
        arithmetic mean, which overstates it on long, steep pipes."""
        idx = self.pipe_idx
        if len(idx) == 0:
            return 0.0
        p1 = node_pressure_pa[self.model.links.from_node[idx]]
        p2 = node_pressure_pa[self.model.links.to_node[idx]]
        s2 = p1 * p1 - p2 * p2
        close = np.abs(s2) < 1e-9 * np.maximum(p1 * p1, 1.0)
        mean = np.where(close, 0.5 * (p1 + p2),
                        (2.0 / 3.0) * (p1 ** 3 - p2 ** 3) / np.where(close, 1.0, s2))
        volume = 0.25 * np.pi * self.pipe_d ** 2 * self.pipe_l
        return float((self.density(np.ascontiguousarray(mean)) * volume).sum())

    # -- the solve --------------------------------------------------------------------------------
    def solve(self, demand: np.ndarray | None = None, *, warm_start: SolveResult | None = None,
              source_pressure_pa: np.ndarray | None = None, setting: np.ndarray | None = None) -> SolveResult:
        """Steady state for ``demand``. Pure Colebrook (pandapipes' law, the default) is applied far
        below its validity in stagnant pipes, where lambda m^2 is nearly flat (Re ~1e-3 to 3): a
        circulation between stagnant parallel pipes can then stall Newton. A twin must not stall, so
        such a solve is done again with the laminar switch (64/Re below Re 2300, the physics there),
        and the result says so (``extra["laminar_fallback"]``)."""
        r = self._solve(demand, warm_start=warm_start, source_pressure_pa=source_pressure_pa, setting=setting)
        if r.converged or not self.plateau or r.message != "iteration limit reached":
            return r
        if self._laminar is None:
            self._laminar = GasSolver(self.model, replace(self.options, laminar_switch=True))
        lam = self._laminar.solve(demand, source_pressure_pa=source_pressure_pa, setting=setting)
        if lam.converged:
            lam.message = "converged with the laminar switch (pure Colebrook stalled on stagnant pipes)"
            lam.iterations += r.iterations
            lam.elapsed_s += r.elapsed_s
        lam.extra["laminar_fallback"] = True
        return lam

    def _solve(self, demand: np.ndarray | None = None, *, warm_start: SolveResult | None = None,
               source_pressure_pa: np.ndarray | None = None, setting: np.ndarray | None = None) -> SolveResult:
        t0 = time.perf_counter()
        model, opt = self.model, self.options
        links, nodes = model.links, model.nodes
        n, nl = model.n_nodes, model.n_links
        demand = model.node_demand() if demand is None else np.asarray(demand, float)
        setting = links.setting if setting is None else np.asarray(setting, float)
        fr, to = links.from_node.astype(np.int64), links.to_node.astype(np.int64)
        p_fix = nodes.fixed_pressure_pa if source_pressure_pa is None else np.asarray(source_pressure_pa, float)
        p_ref = float(np.max(p_fix[self.fixed])) if self.fixed.any() else 101325.0

        # starting point
        p = np.where(self.fixed, p_fix, p_ref)
        status = links.status.copy()
        status[self.ctrl_idx] = np.where(status[self.ctrl_idx] == CLOSED, CLOSED, ACTIVE)
        if warm_start is not None:
            p = np.where(self.free, warm_start.node_pressure_pa, p)
            m = warm_start.link_flow.copy()
            status[self.ctrl_idx] = warm_start.link_status[self.ctrl_idx]
        elif self.tree_like:
            m = self._balanced_start(demand)     # (nearly) a tree: subtree demands are (nearly) exact
        else:
            # meshed: EPANET's classic start (one velocity in every pipe) spreads flow over the loops
            rho = float(self.density(np.array([p_ref]))[0])
            area = 0.25 * np.pi * links.diameter_m ** 2
            m = np.where(self.is_pipe, rho * area * START_VELOCITY_M_S, 1e-3)
        m = np.where(self.active_link, m, 0.0)
        pi_fix = np.where(self.fixed, p_fix * p_fix, 0.0)


        converged = False
        message = "iteration limit reached"
        it = 0
        dp_max = np.inf
        target = np.zeros(nl)
        law_res = np.inf
        last_law = np.inf
        refactors = 0
        settled = 0
        refactored = True
        flipped = np.zeros(len(self.pipe_idx), np.bool_)
        ever_settled = np.zeros(len(self.pipe_idx), np.bool_)
        # a chord step balances the nodes only as well as the old matrix fits: its flows must
        # balance to 1e-6 of the throughput (as the pipe law holds to 1e-6 of the largest drop)
        # before they are an answer; exact steps balance to rounding
        tol_mass = max(1e-6 * float(np.sum(np.abs(demand[self.free]))), 1e-12)
        n_vacuum = 0
        tol_p = max(opt.tol_pressure_pa, 1e-10 * p_ref)
        tol_law_cap = max(opt.tol_law_pa, 1e-10 * p_ref)
        ctrl = self.ctrl_idx
        mode = self.base_mode.copy()
        P, Y, a = np.empty(nl), np.empty(nl), np.empty(nl)
        rhs = np.empty(n)
        m_new = np.empty(nl)
        p_new = np.empty(n)
        demand = np.ascontiguousarray(demand, dtype=np.float64)
        self._cg_iterations = 0
        for it in range(1, opt.max_iter + 1):
            # how far the current iterate is from the pipe law, in Pa (friction factors loosely
            # while the last residual was far above the tolerance; never converged on those)
            x_tol = gk.X_TOL_LOOSE if law_res > LOOSE_FRICTION_ABOVE * tol_law_cap else gk.X_TOL_SOLVER
            phi, dphi, law_res, dp_scale = self._pipe_phi(m, p, x_tol)
            if ever_settled.any():
                # a pipe put at zero once that crosses zero again: its secant slope, not the
                # plateau's near-zero derivative (an all but infinite conductance that throws the
                # flow across zero again, forever, in a stagnant loop)
                mk = m[self.pipe_idx]
                sec = ever_settled & flipped & (mk != 0.0)
                dphi[sec] = np.maximum(dphi[sec], phi[sec] / mk[sec])
            # the law must hold to 1e-6 of the largest pipe drop (networks whose drops are all tiny
            # need it), never looser than tol_law_pa
            tol_law = min(tol_law_cap, max(1e-6 * dp_scale, 1e-11 * p_ref))
            if it > 1 and dp_max <= tol_p and law_res <= tol_law and not settled and x_tol == gk.X_TOL_SOLVER and (
                    refactored or self._balanced(m, demand, tol_mass)):
                if not self._update_status(status, m, p, target):
                    converged = True
                    message = "converged"
                    it -= 1
                    break
            elif it > 1 and dp_max < 1.0:
                self._update_status(status, m, p, target)
            if self._conductance_scale is None:
                # lossless and closed links get conductances scaled to the median pipe (once per solver;
                # a network of pipes alone has none to scale: 0.2 ms spared on grid10k)
                needed = len(dphi) and (len(ctrl) or bool((self.lossless_kind & self.active_link).any()))
                self._conductance_scale = float(np.median(1.0 / dphi)) if needed else 1.0
            g_lossless = opt.lossless_ratio * self._conductance_scale
            g_closed = opt.closed_ratio * self._conductance_scale
            # active regulators/compressors: zero conductance, downstream node pinned to its target,
            # last flow drawn from the upstream node (a = m - Y = m)
            active = ctrl[status[ctrl] == ACTIVE]
            if len(ctrl):
                mode[ctrl] = np.select([status[ctrl] == LinkStatus.OPEN, status[ctrl] == LinkStatus.CLOSED],
                                       [gk.MODE_OPEN, gk.MODE_CLOSED], gk.MODE_NONE)
                target[ctrl] = np.where(self.kind[ctrl] == LinkKind.COMPRESSOR_RATIO, setting[ctrl] * p[fr[ctrl]],
                                        setting[ctrl])
            gk.gga_coefficients(mode, self.pipe_slot, m, phi, dphi, g_lossless, g_closed, P, Y, a)
            pinned = tuple(np.unique(to[active]).tolist()) if len(active) else ()
            system, row = self._system_for(pinned)
            pi_new = pi_fix.copy()
            pi_new[to[active]] = target[active] ** 2
            gk.gga_rhs(fr, to, a, P, pi_new, demand, rhs)
            rows = row >= 0
            # a warm re-solve keeps the last factorization (a chord step) while the conductances stay
            # close to the factorized ones and the pipe-law residual falls (from step 2: the first
            # step's residual is the old solution's, already tiny); a cold solve refactors every time
            chord = (warm_start is not None and pinned in self._factored_w and (it <= 2 or law_res < last_law)
                     and gk.max_relative_change(P, self._factored_w[pinned]) <= CHORD_MAX_CHANGE)
            pcg = 0
            if not chord and pinned in self._factored_w:
                budget = system.pcg_budget()
                need = PCG_BASE + np.sqrt(gk.count_changed(P, self._factored_w[pinned], PCG_CHANGE))
                pcg = budget if need <= budget else 0
            try:
                pi_new[rows], refactored = self._linear_step(system, pinned, P, rhs[rows], (p * p)[rows], chord, pcg)
            except np.linalg.LinAlgError:
                if warm_start is None:
                    raise
                # last resort (not met on the test networks): a warm start the new state's Newton
                # path cannot recover from is solved again from a cold start
                cold = self.solve(demand, source_pressure_pa=source_pressure_pa, setting=setting)
                cold.extra["restarted_cold"] = True
                return cold
            refactors += refactored
            last_law = law_res
            gk.gga_flows(fr, to, a, P, pi_new, self.active_link, m_new)
            if len(active):
                # flow of a pinned regulator: what its downstream node needs from it
                others = m_new.copy()
                others[active] = 0.0
                need = np.bincount(fr, others, minlength=n) - np.bincount(to, others, minlength=n) + demand
                share = np.bincount(to[active], minlength=n)
                m_new[active] = need[to[active]] / share[to[active]]
            settled = gk.settle_reversals(self.pipe_idx, m, m_new, self.re_unit, gk.RE_FLOOR, RE_PLATEAU,
                                          flipped, ever_settled) if self.plateau else 0
            dp_max, n_vacuum = gk.gga_pressures(pi_new, self.supplied, self.free, p, p_new)
            m, m_new = m_new, m
            p, p_new = p_new, p

        if not converged and n_vacuum:
            vacuum = self.free & (pi_new < 1.0)
            worst = model.nodes.ids[np.argmin(np.where(vacuum, pi_new, np.inf))]
            message = (f"pressure fell below zero at {int(vacuum.sum())} node(s), e.g. {worst}: "
                       "the network cannot deliver this demand")
        # results
        closed_now = np.zeros(nl, bool)
        closed_now[self.ctrl_idx] = status[self.ctrl_idx] == CLOSED
        closed_now |= self.static_closed
        m = np.where(closed_now, 0.0, m)
        supplied = _components(model, ~closed_now) if closed_now[self.ctrl_idx].any() else self.supplied
        outflow = np.bincount(fr, m, minlength=n) - np.bincount(to, m, minlength=n)
        balance = outflow + demand
        residual = float(np.max(np.abs(balance[self.free & supplied]))) if (self.free & supplied).any() else 0.0
        node_demand = np.where(self.fixed, -outflow, demand)
        node_demand = np.where(supplied, node_demand, 0.0)
        p = np.where(supplied, p, 0.0)
        rho_node = np.where(supplied, self.density(np.maximum(p, 1.0)), 0.0)
        area = 0.25 * np.pi * links.diameter_m ** 2
        rho_link = 0.5 * (rho_node[fr] + rho_node[to])
        velocity = np.where(self.is_pipe & (rho_link > 0) & (area > 0), m / np.maximum(rho_link * area, 1e-300), 0.0)
        if converged and supplied is self.supplied:
            # the convergence check evaluated the law at this very iterate, over these pipes
            max_pipe_res = float(law_res) if len(self.pipe_idx) else 0.0
        else:
            if not converged:   # the loop's last residual belongs to the previous iterate
                phi, _, _, _ = self._pipe_phi(m, p)
            law = np.abs(p[fr[self.pipe_idx]] ** 2 - p[to[self.pipe_idx]] ** 2 - phi) / np.maximum(
                p[fr[self.pipe_idx]] + p[to[self.pipe_idx]], 1.0)
            ok = supplied[fr[self.pipe_idx]]
            max_pipe_res = float(np.max(law[ok])) if ok.any() else 0.0
        lossless_now = self.lossless_kind & self.active_link & ~closed_now
        lossless_now[self.ctrl_idx] = status[self.ctrl_idx] == OPEN
        lossless_dp = float(np.max(np.abs(p[fr] - p[to])[lossless_now])) if lossless_now.any() else 0.0
        final_status = status.copy()
        final_status[closed_now] = CLOSED
        return SolveResult(converged=converged, iterations=it, residual=residual, message=message,
                           node_pressure_pa=p, node_head_m=np.full(n, np.nan), link_flow=m,
                           link_velocity_m_s=velocity, link_status=final_status, unsupplied=~supplied,
                           node_demand=node_demand, elapsed_s=time.perf_counter() - t0,
                           extra={"max_pipe_residual_pa": max_pipe_res, "factorizations": refactors,
                                  "max_lossless_dp_pa": lossless_dp, "law_residual_pa": law_res,
                                  "last_max_dp_pa": float(dp_max), "linear_backend": self.system.backend,
                                  "cg_iterations": self._cg_iterations})

    def _balanced(self, m: np.ndarray, demand: np.ndarray, tol_kg_s: float) -> bool:
        n = self.model.n_nodes
        net = np.bincount(self.fr, m, minlength=n) - np.bincount(self.to, m, minlength=n) + demand
        return bool(np.max(np.abs(net[self.free]), initial=0.0) <= tol_kg_s)

    def _linear_step(self, system: LaplacianSystem, pinned: tuple, w: np.ndarray, rhs: np.ndarray, x0: np.ndarray,
                     chord: bool, pcg: int = 0) -> tuple[np.ndarray, bool]:
        """The Newton step's squared pressures (and whether it refactored); a chord step whose
        answer is not finite, or conjugate gradients (up to ``pcg`` iterations with the last
        factorization) that do not converge, are redone with a fresh factorization. Raises
        LinAlgError when the fresh one fails too."""
        zeros = np.zeros(system.n)
        if pcg:
            x, used = system.solve_pcg(w, zeros, rhs, x0, PCG_RTOL, pcg)
            self._cg_iterations += used
            if x is not None and np.isfinite(x).all():
                return x, False
        if chord:
            try:
                x = system.solve(w, zeros, rhs, x0=x0, refactor=False)
                if np.isfinite(x).all():
                    return x, False
            except np.linalg.LinAlgError:
                pass
        self._factored_w.pop(pinned, None)
        x = system.solve(w, zeros, rhs, x0=x0, refactor=True)
        if not np.isfinite(x).all():
            raise np.linalg.LinAlgError("the Newton step is not finite")
        self._factored_w[pinned] = w.copy()
        return x, True

    def _update_status(self, status, m, p, target) -> bool:
        """EPANET-style switching of regulators (PRV) and compressors; True if any changed."""
        tol = self.options.status_tol_pa
        links = self.model.links
        changed = False
        for k in self.ctrl_idx:
            pi_, pj = p[links.from_node[k]], p[links.to_node[k]]
            s, q, old = target[k], m[k], status[k]
            new = old
            qtol = 1e-9 * max(abs(q), 1.0)
            if self.kind[k] == LinkKind.PRV:
                if old == LinkStatus.ACTIVE:
                    new = LinkStatus.CLOSED if q < -qtol else LinkStatus.OPEN if pi_ < s - tol else old
                elif old == LinkStatus.OPEN:
                    new = LinkStatus.CLOSED if q < -qtol else LinkStatus.ACTIVE if pj > s + tol else old
                else:
                    if pi_ >= s + tol and pj < s - tol:
                        new = LinkStatus.ACTIVE
                    elif pi_ < s - tol and pi_ > pj + tol:
                        new = LinkStatus.OPEN
            else:  # compressors: raise the outlet to the target, never pass reverse flow
                if old == LinkStatus.ACTIVE:
                    new = LinkStatus.CLOSED if q < -qtol else (
                        LinkStatus.OPEN if (self.kind[k] == LinkKind.COMPRESSOR_OUTLET and pi_ > s + tol) else old)
                elif old == LinkStatus.OPEN:
                    new = LinkStatus.CLOSED if q < -qtol else LinkStatus.ACTIVE if pj < s - tol else old
                else:
                    if pj < s - tol and pi_ > 0:
                        new = LinkStatus.ACTIVE
            if new != old:
                status[k] = new
                changed = True
        return changed


def solve_gas(model: NetworkModel, demand: np.ndarray | None = None, *, warm_start: SolveResult | None = None,
              options: GasOptions | None = None) -> SolveResult:
    """Solve ``model`` once (see ``GasSolver`` to re-solve the same topology cheaply)."""
    return GasSolver(model, options).solve(demand, warm_start=warm_start)
