"""How each sensor answers a leak at each node: the twin's Jacobian d(sensor value)/d(leak flow).

A leak is an extra withdrawal at one node. Linearised about a solved state, the network is a
weighted graph Laplacian over the free nodes: L dU = -e_k, with U the potential the solver works
in (gas: squared absolute pressure; water: head) and each link's weight its conductance dq/dU at
the solved flow. Fixed nodes (sources, reservoirs, tanks, nodes pinned by an active regulator)
do not move. One sparse factorization and one solve per observed node (L is symmetric, so the
row of L^-1 for a sensor node is that sensor's answer to a leak anywhere) give the whole table:
a few dozen solves instead of one per candidate node.

Signatures are per unit leak flow (kg/s for gas, m3/s for water): pressure rows in Pa, flow rows
in the flow unit. They are the exact derivative of the steady state (with the gas density and
the friction factor held at their solved values, as the solver's own Newton step holds them).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from pipetwin.twin.model import PA_PER_M_WATER, LinkKind, LinkStatus, NetworkModel, NodeKind

PRESSURE = 0
FLOW = 1
# conductance of a lossless link (open isolation valve, short pipe, open regulator) relative to
# the median pipe's: stiff enough to tie its ends, soft enough to keep the matrix well conditioned
LOSSLESS_RATIO = 1e4
# smallest flow used for a pipe's slope (m3/s or kg/s): a pipe at rest still has a finite conductance
MIN_FLOW = 1e-7


def _gas_conductance(model: NetworkModel, p_pa: np.ndarray, m: np.ndarray, cache: dict) -> np.ndarray:
    """dm/dpi per link (pi = p^2) at the solved state, from the solver's own pipe law."""
    from pipetwin.twin.solve.gas import GasSolver

    if "gas_solver" not in cache:
        cache["gas_solver"] = GasSolver(model)
    solver = cache["gas_solver"]
    _, dphi, _, _ = solver._pipe_phi(np.where(np.abs(m) < MIN_FLOW, MIN_FLOW, m), p_pa)
    g = np.zeros(model.n_links)
    g[solver.pipe_idx] = 1.0 / np.maximum(dphi, 1e-300)
    return g


def _water_conductance(model: NetworkModel, head_m: np.ndarray, q: np.ndarray, cache: dict) -> np.ndarray:
    """dq/dh per link at the solved flows: Hazen-Williams or Darcy-Weisbach pipes with minor
    losses, pumps on their fitted curves."""
    from pipetwin.kernels import water as K
    from pipetwin.twin.solve.water import prepare

    if "water_net" not in cache:
        cache["water_net"] = prepare(model)
    net = cache["water_net"]
    aq = np.maximum(np.abs(q), MIN_FLOW)
    pipe = (net.ltype == K.LT_PIPE) | (net.ltype == K.LT_CVPIPE)
    dhdq = np.full(model.n_links, np.nan)
    if net.law == K.LAW_HW:
        dhdq[pipe] = net.hexp * net.r[pipe] * aq[pipe] ** (net.hexp - 1.0) + 2.0 * net.km[pipe] * aq[pipe]
    else:   # Darcy-Weisbach / Chezy-Manning: close to quadratic at the solved point
        dh = np.abs(head_m[net.n1] - head_m[net.n2])
        dhdq[pipe] = np.maximum(2.0 * dh[pipe] / aq[pipe], 2.0 * net.km[pipe] * aq[pipe] + 1e-9)
    pump = (net.ltype == K.LT_PUMP) & (net.pump_type == K.PUMP_POWER)
    dhdq[pump] = net.pump_r[pump] * net.pump_n[pump] * aq[pump] ** (net.pump_n[pump] - 1.0)
    g = np.where(np.isfinite(dhdq) & (dhdq > 0), 1.0 / np.where(dhdq > 0, dhdq, 1.0), 0.0)
    return g


def link_states(model: NetworkModel, p_pa: np.ndarray, q: np.ndarray,
                link_status: np.ndarray | None) -> np.ndarray:
    """LinkStatus per link. Without solved statuses (a twin state carries only pressures and
    flows), control valves are read off the state: no flow is closed, a downstream pressure at
    the setting (within 1 cm of water or 50 Pa) is active, anything else open."""
    if link_status is not None:
        return np.asarray(link_status).astype(np.int8)
    links = model.links
    status = links.status.astype(np.int8).copy()
    tol = 0.01 * PA_PER_M_WATER if not model.is_gas else 50.0
    for k in np.flatnonzero(np.isin(links.kind, (LinkKind.PRV, LinkKind.PSV))):
        end = links.to_node[k] if links.kind[k] == LinkKind.PRV else links.from_node[k]
        if abs(q[k]) < MIN_FLOW:
            status[k] = LinkStatus.CLOSED
        elif abs(p_pa[end] - links.setting[k]) < tol:
            status[k] = LinkStatus.ACTIVE
        else:
            status[k] = LinkStatus.OPEN
    for k in np.flatnonzero(links.kind == LinkKind.PUMP):
        status[k] = LinkStatus.OPEN if abs(q[k]) > MIN_FLOW else LinkStatus.CLOSED
    return status


def linearize(model: NetworkModel, node_pressure_pa: np.ndarray, link_flow: np.ndarray,
              link_status: np.ndarray | None = None, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Link conductances dq/dU and the mask of fixed nodes (potential held) at a solved state.
    ``cache``: a dict kept by the caller across calls on the same model (the prepared solver)."""
    cache = {} if cache is None else cache
    p = np.asarray(node_pressure_pa, float)
    q = np.asarray(link_flow, float)
    links, nodes = model.links, model.nodes
    status = link_states(model, p, q, link_status)
    if model.is_gas:
        g = _gas_conductance(model, np.maximum(p, 1.0), q, cache)
    else:
        head = p / PA_PER_M_WATER + nodes.elevation_m
        g = _water_conductance(model, head, q, cache)
    pipes = g > 0
    scale = float(np.median(g[pipes])) if pipes.any() else 1.0
    lossless = np.isin(links.kind, (LinkKind.VALVE, LinkKind.SHORT_PIPE, LinkKind.PRV, LinkKind.PSV,
                                    LinkKind.PBV, LinkKind.TCV, LinkKind.GPV, LinkKind.FCV))
    g = np.where(lossless & (status == LinkStatus.OPEN), LOSSLESS_RATIO * scale, g)
    g = np.where(status == LinkStatus.CLOSED, 0.0, g)
    fixed = np.isin(nodes.kind, (NodeKind.SOURCE, NodeKind.TANK)).copy()
    active = status == LinkStatus.ACTIVE
    ctrl = active & np.isin(links.kind, (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET, LinkKind.COMPRESSOR_RATIO))
    fixed[links.to_node[ctrl]] = True        # downstream pressure held by the regulator
    fixed[links.from_node[active & (links.kind == LinkKind.PSV)]] = True
    g = np.where(active, 0.0, g)             # an active control valve passes what its setting needs
    return g, fixed


def signatures(model: NetworkModel, node_pressure_pa: np.ndarray, link_flow: np.ndarray,
               kind: np.ndarray, element: np.ndarray, link_status: np.ndarray | None = None,
               cache: dict | None = None) -> np.ndarray:
    """Sensitivity of each sensor (rows: ``kind`` PRESSURE at node ``element`` or FLOW in link
    ``element``) to one unit of leak flow at each node (columns, model order). Nodes that cannot
    leak into the linear system (fixed, or cut off) have zero columns, except nodes held by an
    active regulator, whose leak the regulator passes on upstream.

    An active regulator (PRV) holds its downstream node, and draws from its upstream node
    whatever the held node passes on: its flow change f is a demand on the upstream side. With
    several regulators, f solves the small system f = f0 + M f (one regulator feeding another)."""
    kind = np.asarray(kind)
    element = np.asarray(element, np.int64)
    g, fixed = linearize(model, node_pressure_pa, link_flow, link_status, cache)
    links = model.links
    fr = links.from_node.astype(np.int64)
    to = links.to_node.astype(np.int64)
    n = model.n_nodes
    status = link_states(model, np.asarray(node_pressure_pa, float), np.asarray(link_flow, float), link_status)
    regs = np.flatnonzero((status == LinkStatus.ACTIVE)
                          & np.isin(links.kind, (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET, LinkKind.COMPRESSOR_RATIO)))
    use = g > 0
    # nodes reachable from a fixed node through conducting links: the rest cannot be linearised
    adj = sp.coo_matrix((np.ones(int(use.sum())), (fr[use], to[use])), shape=(n, n))
    _, label = sp.csgraph.connected_components(adj, directed=False)
    fed = np.zeros(label.max() + 1, bool)
    fed[label[fixed]] = True
    free = ~fixed & fed[label]
    row = np.full(n, -1, np.int64)
    row[free] = np.arange(int(free.sum()))
    nf = int(free.sum())
    i, j = row[fr], row[to]
    diag = np.bincount(i[(i >= 0) & use], g[(i >= 0) & use], minlength=nf) + \
        np.bincount(j[(j >= 0) & use], g[(j >= 0) & use], minlength=nf)
    both = (i >= 0) & (j >= 0) & use
    lap = sp.csc_matrix((np.concatenate([diag, -g[both], -g[both]]),
                         (np.concatenate([np.arange(nf), i[both], j[both]]),
                          np.concatenate([np.arange(nf), j[both], i[both]]))), shape=(nf, nf))
    lu = splu(lap)
    # per regulator: the held node's conducting links (link, neighbour) and the upstream node
    held = [(to[k], fr[k]) for k in regs]
    nbrs = []
    for jk, _ in held:
        ls = np.flatnonzero(use & ((fr == jk) | (to == jk)))
        nbrs.append((ls, np.where(fr[ls] == jk, to[ls], fr[ls])))
    # the nodes whose row of L^-1 is needed
    want = [element[kind == PRESSURE], fr[element[kind == FLOW]], to[element[kind == FLOW]],
            np.array([u for _, u in held], np.int64)] + [nb for _, nb in nbrs]
    obs = np.unique(np.concatenate(want)) if want else np.zeros(0, np.int64)
    obs = obs[free[obs]]
    rhs = np.zeros((nf, len(obs)))
    rhs[row[obs], np.arange(len(obs))] = 1.0
    inv = lu.solve(rhs) if len(obs) else np.zeros((nf, 0))
    col = {int(o): c for c, o in enumerate(obs)}

    def z(node: int) -> np.ndarray:
        """(L^-1)[node, x] over all nodes x (zero for nodes outside the system)."""
        out = np.zeros(n)
        c = col.get(int(node))
        if c is not None:
            out[free] = inv[:, c]
        return out

    rows_z = {int(o): z(o) for o in obs}
    zero = np.zeros(n)
    # regulator flows: f0 (leak below the held node) and M (regulator k' feeding the upstream side)
    nreg = len(regs)
    f0 = np.zeros((nreg, n))
    mm = np.zeros((nreg, nreg))
    for a, ((jk, _), (ls, nb)) in enumerate(zip(held, nbrs)):
        f0[a, jk] = 1.0
        for link, other in zip(ls, nb):
            f0[a] += g[link] * rows_z.get(int(other), zero)
            for b, (_, ub) in enumerate(held):
                mm[a, b] += g[link] * rows_z.get(int(other), zero)[ub]
    f = np.linalg.solve(np.eye(nreg) - mm, f0) if nreg else f0

    def dpot(node: int) -> np.ndarray:
        """d potential at ``node`` / d leak at each node."""
        out = -rows_z.get(int(node), zero)
        for b, (_, ub) in enumerate(held):
            out = out - f[b] * rows_z.get(int(node), zero)[ub]
        return out

    reg_of = {int(k): b for b, k in enumerate(regs)}
    p = np.asarray(node_pressure_pa, float)
    out = np.zeros((len(kind), n))
    for s, (k, e) in enumerate(zip(kind, element)):
        if k == PRESSURE:
            d = dpot(e)
            out[s] = d / (2.0 * max(p[e], 1.0)) if model.is_gas else d * PA_PER_M_WATER
        elif int(e) in reg_of:
            out[s] = f[reg_of[int(e)]]
        else:
            out[s] = g[e] * (dpot(fr[e]) - dpot(to[e]))
    return out
