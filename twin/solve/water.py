"""EPANET 2.2-compatible hydraulics for one period: Todini-Pilati's gradient method (GGA) with
EPANET's status logic, in SI.

The steps mirror EPANET's hydraul.c / hydsolver.c / hydstatus.c so that the same network reaches
the same valve, pump and check-valve statuses (and so the same heads): the same initial flows, the
same periodic status checks (CHECKFREQ, MAXCHECK), the same convergence test and the same
tolerances. The whole trial loop (head loss laws, matrix coefficients, a sparse Cholesky
factorization whose fill-reducing order and symbolic analysis are computed once per set of free
nodes, the flow update, the convergence test and the valve/link status checks) is one numba kernel
in ``kernels/water.py``; this module prepares the arrays, applies the period's demands and
controls, and handles the rare junction pressure controls between calls to the kernel.

The solver state (``WaterState``) holds EPANET's internal link statuses (with XHEAD, TEMPCLOSED,
XFCV, XPRESSURE), settings, flows and tank volumes, so the extended-period driver
(``water_eps.py``) can carry them from one period to the next exactly as EPANET does.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from pipetwin.kernels import water as K
from pipetwin.twin.model import PA_PER_M_WATER, LinkKind, LinkStatus, NetworkModel, NodeKind
from pipetwin.twin.solve.result import SolveResult

try:  # CHOLMOD's AMD orders the matrix when scikit-sparse is installed
    from sksparse.cholmod import analyze as _cholmod_analyze  # type: ignore
except Exception:  # pragma: no cover - depends on the machine
    _cholmod_analyze = None

ROUNDOFF_FACTOR = 8.0   # accept a relative flow change this many times its round-off floor
CHECKFREQ = 2       # EPANET: status checks on pumps/CVs/tank links every 2 trials ...
MAXCHECK = 10       # ... up to trial 10
SECONDS_PER_DAY = 86400

_LTYPE = {LinkKind.PIPE: K.LT_PIPE, LinkKind.PUMP: K.LT_PUMP, LinkKind.PRV: K.LT_PRV,
          LinkKind.PSV: K.LT_PSV, LinkKind.PBV: K.LT_PBV, LinkKind.FCV: K.LT_FCV,
          LinkKind.TCV: K.LT_TCV, LinkKind.GPV: K.LT_GPV, LinkKind.VALVE: K.LT_OPEN,
          LinkKind.SHORT_PIPE: K.LT_OPEN}
_PRESSURE_VALVES = (K.LT_PRV, K.LT_PSV, K.LT_PBV)


# ---------------------------------------------------------------------------------------------
# The network, prepared once: arrays the kernels read
# ---------------------------------------------------------------------------------------------
@dataclass
class WaterNetwork:
    """Static arrays of a water model in the solver's terms (EPANET's, in SI)."""

    model: NetworkModel
    n_nodes: int
    elevation: np.ndarray
    fixed: np.ndarray            # bool: reservoir or tank
    is_tank: np.ndarray          # bool per node
    ltype: np.ndarray            # int8 K.LT_*
    n1: np.ndarray
    n2: np.ndarray
    law: int
    hexp: float
    r: np.ndarray                # pipe resistance (SI)
    km: np.ndarray               # minor loss coefficient, m per (m3/s)^2
    rel_rough: np.ndarray        # D-W roughness / diameter
    visc_d: np.ndarray           # D-W viscosity * diameter
    diameter: np.ndarray
    pump_type: np.ndarray
    pump_h0: np.ndarray
    pump_r: np.ndarray
    pump_n: np.ndarray
    pump_q0: np.ndarray
    pump_hmax: np.ndarray
    is_const_hp: np.ndarray
    curve_id: np.ndarray
    curve_ptr: np.ndarray
    curve_x: np.ndarray
    curve_y: np.ndarray
    valve_links: np.ndarray      # PRV/PSV/FCV in link order
    emitter_ke: np.ndarray
    qexp: float
    # tanks (index t over model.tanks)
    tank_node: np.ndarray
    tank_area: np.ndarray        # 0 never (reservoirs are not in model.tanks)
    tank_hmin: np.ndarray
    tank_hmax: np.ndarray
    tank_vmin: np.ndarray
    tank_vmax: np.ndarray
    tank_v0: np.ndarray
    tank_h0: np.ndarray
    tank_of_node: np.ndarray     # -1 for non-tanks
    status_links: np.ndarray     # links linkstatus() can change: CVs, pumps, FCVs, tank links
    cache: dict = field(default_factory=dict)


def _fit_power_curve(x, y):
    """EPANET's powercurve(): h = a + b q^c through a shutoff head and two points. Returns
    (H0, R, N) in EPANET's head-loss sign (H0 = -a, R = -b) or None if the fit is invalid."""
    if len(x) == 1:
        q1, h1 = x[0], y[0]
        h0, q2, h2 = 1.33334 * h1, 2.0 * q1, 0.0
    else:
        h0, q1, h1, q2, h2 = y[0], x[1], y[1], x[2], y[2]
    tiny = 1e-6
    if h0 < tiny or h0 - h1 < tiny or h1 - h2 < tiny or q1 < tiny * K.CFS_SI or q2 - q1 < tiny * K.CFS_SI:
        return None
    c = np.log((h0 - h2) / (h0 - h1)) / np.log(q2 / q1)
    if c <= 0.0 or c > 20.0:
        return None
    b = -(h0 - h1) / q1 ** c
    if b >= 0.0:
        return None
    return -h0, -b, c, q1, h0


def prepare(model: NetworkModel) -> WaterNetwork:
    """Translate a water model into the solver's arrays (EPANET's link types, resistances, pump
    curve fits, tank volumes). Pure: the model is only read."""
    if model.is_gas:
        raise ValueError("solve_water needs a water model")
    nodes, links, w = model.nodes, model.links, model.water
    n, m = model.n_nodes, model.n_links
    kind = nodes.kind.astype(np.int64)
    fixed = (kind == NodeKind.SOURCE) | (kind == NodeKind.TANK)
    ltype = np.empty(m, np.int8)
    for k in range(m):
        lk = LinkKind(int(links.kind[k]))
        if lk not in _LTYPE:
            raise ValueError(f"link {links.ids[k]!r}: {lk.name} is not a water link")
        ltype[k] = _LTYPE[lk]
    ltype[(ltype == K.LT_PIPE) & links.check_valve.astype(bool)] = K.LT_CVPIPE
    law = {"H-W": K.LAW_HW, "D-W": K.LAW_DW, "C-M": K.LAW_CM}[w.headloss.upper()]
    hexp = 1.852 if law == K.LAW_HW else 2.0
    d = links.diameter_m.astype(float)
    is_pipe = (ltype == K.LT_PIPE) | (ltype == K.LT_CVPIPE)
    r = np.zeros(m)
    for k in np.flatnonzero(is_pipe):
        r[k] = K.pipe_resistance(law, float(links.length_m[k]), float(d[k]), float(links.roughness[k]))
    km = np.zeros(m)
    has_d = d > 0
    km[has_d] = K.MINOR_LOSS_SI * links.minor_loss[has_d] / d[has_d] ** 4
    rel_rough = np.where(has_d, links.roughness / np.where(has_d, d, 1.0), 0.0)
    visc_d = w.kinematic_viscosity_m2_s * d

    # curves packed flat for the kernels
    curve_ptr = np.zeros(len(model.curves) + 1, np.int64)
    for i, c in enumerate(model.curves):
        curve_ptr[i + 1] = curve_ptr[i] + len(c.x)
    curve_x = np.concatenate([c.x for c in model.curves] + [np.zeros(0)]).astype(float)
    curve_y = np.concatenate([c.y for c in model.curves] + [np.zeros(0)]).astype(float)

    pump_type = np.zeros(m, np.int8)
    pump_h0, pump_r, pump_n = np.zeros(m), np.zeros(m), np.ones(m)
    pump_q0, pump_hmax = np.zeros(m), np.zeros(m)
    for k in np.flatnonzero(ltype == K.LT_PUMP):
        c = int(links.curve[k])
        if np.isfinite(links.pump_power_w[k]) and links.pump_power_w[k] > 0:
            pump_type[k] = K.PUMP_CONST_HP
            pump_h0[k], pump_r[k], pump_n[k] = 0.0, -K.CONST_HP_SI * links.pump_power_w[k], -1.0
            pump_hmax[k], pump_q0[k] = np.inf, K.CFS_SI
        elif c >= 0:
            x, y = model.curves[c].x, model.curves[c].y
            fit = None
            if len(x) == 1 or (len(x) == 3 and x[0] == 0.0):
                fit = _fit_power_curve(x, y)
                if fit is None:
                    raise ValueError(f"pump {links.ids[k]!r}: invalid pump curve (EPANET error 227)")
            if fit is not None:
                pump_type[k] = K.PUMP_POWER
                pump_h0[k], pump_r[k], pump_n[k], pump_q0[k], pump_hmax[k] = fit
            else:
                if np.any(np.diff(y) >= 0):
                    raise ValueError(f"pump {links.ids[k]!r}: pump curve heads must decrease (EPANET error 227)")
                pump_type[k] = K.PUMP_CUSTOM
                pump_q0[k] = (x[0] + x[-1]) / 2.0
                pump_hmax[k] = y[0]
        else:
            pump_type[k] = K.PUMP_NOCURVE

    emitter_ke = np.zeros(n)
    qexp = 1.0 / w.emitter_exponent
    e = nodes.emitter_coeff > 0
    emitter_ke[e] = nodes.emitter_coeff[e] ** (-qexp)

    t = model.tanks
    nt = len(t)
    tank_node = t.node.astype(np.int64)
    el_t = nodes.elevation_m[tank_node] if nt else np.zeros(0)
    area = np.pi * t.diameter_m ** 2 / 4.0
    vmin = np.where(t.min_volume_m3 > 0, t.min_volume_m3, area * t.min_level_m)
    v0 = vmin + area * (t.init_level_m - t.min_level_m)
    vmax = vmin + area * (t.max_level_m - t.min_level_m)
    for j in range(nt):
        c = int(t.volume_curve[j])
        if c >= 0:
            cx, cy = model.curves[c].x, model.curves[c].y
            vmin[j] = np.interp(t.min_level_m[j], cx, cy)
            v0[j] = np.interp(t.init_level_m[j], cx, cy)
            vmax[j] = np.interp(t.max_level_m[j], cx, cy)
            area[j] = (cy[-1] - cy[0]) / (cx[-1] - cx[0])
    tank_of_node = np.full(n, -1, np.int64)
    tank_of_node[tank_node] = np.arange(nt)
    is_tank = tank_of_node >= 0
    n1, n2 = links.from_node.astype(np.int64), links.to_node.astype(np.int64)
    status_links = np.flatnonzero(np.isin(ltype, (K.LT_CVPIPE, K.LT_PUMP, K.LT_FCV))
                                  | fixed[n1] | fixed[n2]).astype(np.int64)

    return WaterNetwork(
        model=model, n_nodes=n, elevation=nodes.elevation_m.astype(float), fixed=fixed,
        is_tank=is_tank, ltype=ltype, n1=links.from_node.astype(np.int64),
        n2=links.to_node.astype(np.int64), law=law, hexp=hexp, r=r, km=km, rel_rough=rel_rough,
        visc_d=visc_d, diameter=d, pump_type=pump_type, pump_h0=pump_h0, pump_r=pump_r,
        pump_n=pump_n, pump_q0=pump_q0, pump_hmax=pump_hmax,
        is_const_hp=pump_type == K.PUMP_CONST_HP, curve_id=links.curve.astype(np.int64),
        curve_ptr=curve_ptr, curve_x=curve_x, curve_y=curve_y,
        valve_links=np.flatnonzero(np.isin(ltype, (K.LT_PRV, K.LT_PSV, K.LT_FCV))).astype(np.int64),
        emitter_ke=emitter_ke, qexp=qexp, tank_node=tank_node, tank_area=area,
        tank_hmin=el_t + t.min_level_m, tank_hmax=el_t + t.max_level_m, tank_vmin=vmin,
        tank_vmax=vmax, tank_v0=v0, tank_h0=el_t + t.init_level_m, tank_of_node=tank_of_node,
        status_links=status_links)


def tank_volume(net: WaterNetwork, j: int, head: float) -> float:
    """EPANET's tankvolume: volume of tank j at a water head."""
    c = int(net.model.tanks.volume_curve[j])
    if c < 0:
        return net.tank_vmin[j] + (head - net.tank_hmin[j]) * net.tank_area[j]
    cv = net.model.curves[c]
    return float(np.interp(head - net.elevation[net.tank_node[j]], cv.x, cv.y))


def tank_grade(net: WaterNetwork, j: int, volume: float) -> float:
    """EPANET's tankgrade: water head of tank j holding a volume."""
    c = int(net.model.tanks.volume_curve[j])
    if c < 0:
        return net.tank_hmin[j] + (volume - net.tank_vmin[j]) / net.tank_area[j]
    cv = net.model.curves[c]
    return float(net.elevation[net.tank_node[j]] + np.interp(volume, cv.y, cv.x))


# ---------------------------------------------------------------------------------------------
# Solver state: EPANET's hydraulic variables
# ---------------------------------------------------------------------------------------------
@dataclass
class WaterState:
    status: np.ndarray        # int8 K.ST_*
    setting: np.ndarray       # float, NaN = EPANET's MISSING; PRV/PSV/PBV as heads (m)
    flow: np.ndarray
    emitter_flow: np.ndarray
    head: np.ndarray
    demand: np.ndarray        # junction demand (m3/s); for fixed nodes their net inflow
    tank_volume: np.ndarray
    time_s: float = 0.0


def _model_setting(net: WaterNetwork, k: int, value: float) -> float:
    """A model setting (SI) in EPANET's internal meaning: pressures become heads."""
    if net.ltype[k] in _PRESSURE_VALVES:
        return value / PA_PER_M_WATER
    return value


def initial_status(net: WaterNetwork, status=None, setting=None):
    """EPANET's Link.Status / LinkSetting from the model (or overrides): a valve ACTIVE uses its
    setting, a valve OPEN or CLOSED is fixed so (setting MISSING); pumps carry their speed."""
    links = net.model.links
    status = np.asarray(links.status if status is None else status).astype(np.int64)
    setting = np.asarray(links.setting if setting is None else setting, float)
    pump, valve, pressure_valve, control_valve, _ = _type_masks(net)
    st = np.where(status == LinkStatus.CLOSED, K.ST_CLOSED, K.ST_OPEN).astype(np.int8)
    sv = np.full(len(net.ltype), np.nan)
    finite = np.isfinite(setting)
    speed = np.where(finite, setting, 1.0)
    sv[pump] = speed[pump]
    st[pump & (speed == 0.0)] = K.ST_CLOSED
    act = valve & (status == LinkStatus.ACTIVE) & finite
    sv[act] = np.where(pressure_valve[act], setting[act] / PA_PER_M_WATER, setting[act])
    st[act] = np.where(control_valve[act], K.ST_ACTIVE, K.ST_OPEN)
    return st, sv


def _type_masks(net: WaterNetwork):
    """Per-link masks by type, once per network: pumps, valves with a setting, pressure valves
    (PRV/PSV/PBV), control valves (PRV/PSV/FCV) and throttling valves (PBV/TCV)."""
    masks = net.cache.get("type_masks")
    if masks is None:
        t = net.ltype
        masks = net.cache["type_masks"] = (
            t == K.LT_PUMP, np.isin(t, (K.LT_PRV, K.LT_PSV, K.LT_PBV, K.LT_FCV, K.LT_TCV)),
            np.isin(t, _PRESSURE_VALVES), np.isin(t, (K.LT_PRV, K.LT_PSV, K.LT_FCV)),
            np.isin(t, (K.LT_PBV, K.LT_TCV)))
    return masks


def initial_flow(net: WaterNetwork, k: int, status: int, setting: float) -> float:
    """EPANET's initlinkflow: QZERO if closed, design flow x speed for a pump, else 1 ft/s."""
    if status == K.ST_CLOSED:
        return K.QZERO_SI
    if net.ltype[k] == K.LT_PUMP:
        return setting * net.pump_q0[k]
    return np.pi * net.diameter[k] ** 2 / 4.0 * K.FT


def initial_state(net: WaterNetwork, status=None, setting=None) -> WaterState:
    """EPANET's inithyd: tanks at their initial level, statuses and flows initialised."""
    st, sv = initial_status(net, status, setting)
    flow = np.where(net.ltype == K.LT_PUMP, sv * net.pump_q0, np.pi * net.diameter ** 2 / 4.0 * K.FT)
    flow[st <= K.ST_CLOSED] = K.QZERO_SI
    head = np.where(net.fixed, net.model.nodes.fixed_head_m, net.elevation).astype(float)
    head[net.tank_node] = net.tank_h0
    emitter_flow = np.where(net.emitter_ke > 0, K.CFS_SI, 0.0)
    return WaterState(status=st, setting=sv, flow=flow, emitter_flow=emitter_flow, head=head,
                      demand=np.zeros(net.n_nodes), tank_volume=net.tank_v0.copy())


# ---------------------------------------------------------------------------------------------
# Per-period inputs: demands, reservoir heads, pump speed patterns, simple controls
# ---------------------------------------------------------------------------------------------
def apply_demands(net: WaterNetwork, state: WaterState, time_s: float, demand=None) -> None:
    """EPANET's demands(): junction demands, reservoir head patterns and pump speed patterns at
    ``time_s``."""
    model = net.model
    d = model.node_demand(time_s) if demand is None else np.asarray(demand, float)
    state.demand = np.where(net.fixed, state.demand, d)   # fixed nodes keep their last net inflow
    nodes, links = model.nodes, model.links
    if "patterned" not in net.cache:
        net.cache["patterned"] = (
            np.flatnonzero((nodes.kind == NodeKind.SOURCE) & (nodes.head_pattern >= 0)),
            np.flatnonzero((net.ltype == K.LT_PUMP) & (links.speed_pattern >= 0)))
    sources, pumps = net.cache["patterned"]
    for i in sources:
        state.head[i] = nodes.fixed_head_m[i] * model.pattern_multiplier(int(nodes.head_pattern[i]), time_s)
    for k in pumps:
        set_link_setting(net, state, k, model.pattern_multiplier(int(links.speed_pattern[k]), time_s))


def set_link_setting(net: WaterNetwork, state: WaterState, k: int, value: float) -> None:
    """EPANET's setlinksetting: a pump speed opens/closes the pump, an FCV becomes active, a
    fixed valve with a new setting opens."""
    t = net.ltype[k]
    if t == K.LT_PUMP:
        state.setting[k] = value
        if value > 0 and state.status[k] <= K.ST_CLOSED:
            if net.is_const_hp[k]:
                state.flow[k] = net.pump_q0[k]
            state.status[k] = K.ST_OPEN
        if value == 0 and state.status[k] > K.ST_CLOSED:
            state.status[k] = K.ST_CLOSED
    elif t == K.LT_FCV:
        state.setting[k] = value
        state.status[k] = K.ST_ACTIVE
    else:
        if np.isnan(state.setting[k]) and state.status[k] <= K.ST_CLOSED:
            state.status[k] = K.ST_OPEN
        state.setting[k] = value


@dataclass
class _Ctl:
    """A simple control in EPANET's terms: status / setting (MISSING = NaN) and grade."""

    link: int
    status: int
    setting: float
    kind: str          # time | clocktime | above | below
    node: int
    grade: float
    time_s: float


def epanet_controls(net: WaterNetwork) -> list[_Ctl]:
    """Simple controls with EPANET's Status/Setting pair: OPEN/CLOSED set a pump's speed to 1/0 and
    make a valve's setting MISSING; a number is a pump speed or a valve setting (ACTIVE)."""
    out = []
    for c in net.model.controls:
        k = int(c.link)
        t = net.ltype[k]
        if c.setting is not None and np.isfinite(c.setting):
            v = _model_setting(net, k, float(c.setting))
            if t == K.LT_PUMP:
                st = K.ST_CLOSED if v == 0 else K.ST_OPEN
            elif t in (K.LT_PIPE, K.LT_CVPIPE):
                st, v = (K.ST_CLOSED if v == 0 else K.ST_OPEN), np.nan
            else:
                st = K.ST_ACTIVE
        else:
            s = int(c.status) if c.status is not None else int(LinkStatus.OPEN)
            st = {int(LinkStatus.CLOSED): K.ST_CLOSED, int(LinkStatus.OPEN): K.ST_OPEN,
                  int(LinkStatus.ACTIVE): K.ST_ACTIVE}[s]
            v = np.nan
            if t == K.LT_PUMP:
                v = 0.0 if st == K.ST_CLOSED else 1.0
        node = int(c.node)
        grade = np.nan
        if c.trigger in ("above", "below") and node >= 0:
            if net.fixed[node]:
                grade = net.elevation[node] + float(c.threshold)
            else:
                grade = net.elevation[node] + float(c.threshold) / PA_PER_M_WATER
        out.append(_Ctl(k, st, v, c.trigger, node, grade, float(c.time_s)))
    return out


def _same(a: float, b: float) -> bool:
    """Setting equality with MISSING (NaN) equal to itself, as EPANET's MISSING constant is."""
    return (np.isnan(a) and np.isnan(b)) or a == b


def apply_controls(net: WaterNetwork, state: WaterState, controls: list[_Ctl], time_s: float,
                   clock_start_s: float) -> int:
    """EPANET's controls(): time, clock-time and tank-level controls at the start of a period.
    Junction pressure controls act inside the solve (pswitch)."""
    changes = 0
    for c in controls:
        k = c.link
        reset = False
        if c.kind in ("above", "below") and c.node >= 0 and net.is_tank[c.node]:
            j = int(net.tank_of_node[c.node])
            v1 = tank_volume(net, j, state.head[c.node])
            v2 = tank_volume(net, j, c.grade)
            vplus = abs(state.demand[c.node])
            if c.kind == "below" and v1 <= v2 + vplus:
                reset = True
            if c.kind == "above" and v1 >= v2 - vplus:
                reset = True
        elif c.kind in ("above", "below") and c.node >= 0 and net.fixed[c.node]:
            h = state.head[c.node]        # a reservoir: compare heads
            reset = (c.kind == "below" and h <= c.grade) or (c.kind == "above" and h >= c.grade)
        if c.kind == "time" and c.time_s == time_s:
            reset = True
        if c.kind == "clocktime" and (time_s + clock_start_s) % SECONDS_PER_DAY == c.time_s:
            reset = True
        if not reset:
            continue
        s1 = K.ST_CLOSED if state.status[k] <= K.ST_CLOSED else K.ST_OPEN
        s2 = c.status
        k1 = state.setting[k]
        k2 = k1
        if net.ltype[k] not in (K.LT_PIPE, K.LT_CVPIPE):
            k2 = c.setting
        if net.ltype[k] == K.LT_PUMP and s1 == K.ST_CLOSED and s2 == K.ST_OPEN and net.is_const_hp[k]:
            state.flow[k] = net.pump_q0[k]
        if s1 != s2 or not _same(k1, k2):
            state.status[k] = s2
            state.setting[k] = k2
            changes += 1
    return changes


# ---------------------------------------------------------------------------------------------
# Status checks (hydstatus.c, hydsolver.c)
# ---------------------------------------------------------------------------------------------
def _cv_status(s: int, dh: float, q: float) -> int:
    """cvstatus: a check valve closes on reverse head or reverse flow."""
    if abs(dh) > K.HTOL_SI:
        if dh < -K.HTOL_SI or q < -K.QTOL_SI:
            return K.ST_CLOSED
        return K.ST_OPEN
    if q < -K.QTOL_SI:
        return K.ST_CLOSED
    return s


def valve_status(net: WaterNetwork, state: WaterState) -> bool:
    """valvestatus: PRV/PSV switch between ACTIVE, OPEN and CLOSED around their setting."""
    change = False
    htol, qtol = K.HTOL_SI, K.QTOL_SI
    H, Q = state.head, state.flow
    for k in net.valve_links:
        t = net.ltype[k]
        if t == K.LT_FCV or np.isnan(state.setting[k]):
            continue
        a, b = net.n1[k], net.n2[k]
        s = int(state.status[k])
        h1, h2, q = H[a], H[b], Q[k]
        hml = net.km[k] * q * q
        new = s
        if t == K.LT_PRV:
            hset = net.elevation[b] + state.setting[k]
            if s == K.ST_ACTIVE:
                new = K.ST_CLOSED if q < -qtol else (K.ST_OPEN if h1 - hml < hset - htol else K.ST_ACTIVE)
            elif s == K.ST_OPEN:
                new = K.ST_CLOSED if q < -qtol else (K.ST_ACTIVE if h2 >= hset + htol else K.ST_OPEN)
            elif s == K.ST_CLOSED:
                if h1 >= hset + htol and h2 < hset - htol:
                    new = K.ST_ACTIVE
                elif h1 < hset - htol and h1 > h2 + htol:
                    new = K.ST_OPEN
            elif s == K.ST_XPRESSURE and q < -qtol:
                new = K.ST_CLOSED
        else:
            hset = net.elevation[a] + state.setting[k]
            if s == K.ST_ACTIVE:
                new = K.ST_CLOSED if q < -qtol else (K.ST_OPEN if h2 + hml > hset + htol else K.ST_ACTIVE)
            elif s == K.ST_OPEN:
                new = K.ST_CLOSED if q < -qtol else (K.ST_ACTIVE if h1 < hset - htol else K.ST_OPEN)
            elif s == K.ST_CLOSED:
                if h2 > hset + htol and h1 > h2 + htol:
                    new = K.ST_OPEN
                elif h1 >= hset + htol and h1 > h2 + htol:
                    new = K.ST_ACTIVE
            elif s == K.ST_XPRESSURE and q < -qtol:
                new = K.ST_CLOSED
        if new != s:
            state.status[k] = new
            change = True
    return change


def _tank_link_status(net: WaterNetwork, state: WaterState, k: int, overflow: np.ndarray) -> None:
    """tanklinkstatus: close a link that would fill a full tank or drain an empty one."""
    if state.status[k] <= K.ST_CLOSED:
        return
    a, b = int(net.n1[k]), int(net.n2[k])
    H = state.head
    if net.fixed[a] and net.fixed[b]:
        _tank2_link_status(net, state, k, a, b)
        return
    q = state.flow[k]
    if net.fixed[a]:
        tn, other = a, b
    else:
        tn, other, q = b, a, -q
    j = int(net.tank_of_node[tn])
    if j < 0:
        return                                  # reservoir
    h = H[tn] - H[other]
    t = net.ltype[k]
    if H[tn] >= net.tank_hmax[j] - K.HTOL_SI and not overflow[j]:
        if t == K.LT_PUMP:
            if net.n2[k] == tn:
                state.status[k] = K.ST_TEMPCLOSED
        elif _cv_status(K.ST_OPEN, h, q) == K.ST_CLOSED:
            state.status[k] = K.ST_TEMPCLOSED
    if H[tn] <= net.tank_hmin[j] + K.HTOL_SI:
        if t == K.LT_PUMP:
            if net.n1[k] == tn:
                state.status[k] = K.ST_TEMPCLOSED
        elif _cv_status(K.ST_CLOSED, h, q) == K.ST_OPEN:
            state.status[k] = K.ST_TEMPCLOSED


def _tank2_link_status(net: WaterNetwork, state: WaterState, k: int, a: int, b: int) -> None:
    """tank2linkstatus: a link between two fixed-head nodes closes if one tank is full and
    receives flow, or empty and gives flow."""
    h1, h2 = state.head[a], state.head[b]
    j1, j2 = int(net.tank_of_node[a]), int(net.tank_of_node[b])
    close = False
    if j1 >= 0:
        if h1 >= net.tank_hmax[j1] - K.HTOL_SI and h2 >= h1:
            close = True
        elif h1 <= net.tank_hmin[j1] + K.HTOL_SI and h1 >= h2:
            close = True
    if j2 >= 0 and not close:
        if h2 >= net.tank_hmax[j2] - K.HTOL_SI and h1 >= h2:
            close = True
        elif h2 <= net.tank_hmin[j2] + K.HTOL_SI and h2 >= h1:
            close = True
    if close:
        state.status[k] = K.ST_TEMPCLOSED


def link_status(net: WaterNetwork, state: WaterState) -> bool:
    """linkstatus: re-open temporarily closed links, then check CVs, pumps (XHEAD above the
    speed-scaled shutoff head), FCVs and links into full/empty tanks."""
    change = False
    H = state.head
    overflow = net.model.tanks.overflow
    for k in net.status_links:
        t = net.ltype[k]
        a, b = net.n1[k], net.n2[k]
        dh = H[a] - H[b]
        s = int(state.status[k])
        if s == K.ST_XHEAD or s == K.ST_TEMPCLOSED:
            state.status[k] = K.ST_OPEN
        if t == K.LT_CVPIPE:
            state.status[k] = _cv_status(int(state.status[k]), dh, state.flow[k])
        if t == K.LT_PUMP and state.status[k] >= K.ST_OPEN and state.setting[k] > 0.0:
            hmax = net.pump_hmax[k] * state.setting[k] ** 2
            if -dh > hmax + K.HTOL_SI:
                state.status[k] = K.ST_XHEAD
        if t == K.LT_FCV and not np.isnan(state.setting[k]):
            if H[a] - H[b] < -K.HTOL_SI or state.flow[k] < -K.QTOL_SI:
                state.status[k] = K.ST_XFCV
            elif s == K.ST_XFCV and state.flow[k] >= state.setting[k]:
                state.status[k] = K.ST_ACTIVE
            else:
                state.status[k] = s
        if net.fixed[a] or net.fixed[b]:
            _tank_link_status(net, state, k, overflow)
        if state.status[k] != s:
            change = True
    return change


def pressure_switch(net: WaterNetwork, state: WaterState, controls: list[_Ctl]) -> bool:
    """pswitch: junction pressure controls, applied once the solution has converged."""
    change = False
    for c in controls:
        n = c.node
        if n < 0 or net.fixed[n] or c.kind not in ("above", "below"):
            continue
        h = state.head[n]
        reset = (c.kind == "below" and h <= c.grade + K.HTOL_SI) or \
                (c.kind == "above" and h >= c.grade - K.HTOL_SI)
        if not reset:
            continue
        k = c.link
        t = net.ltype[k]
        s = int(state.status[k])
        ch = False
        if t == K.LT_PIPE and s != c.status:
            ch = True
        if t == K.LT_PUMP and not _same(state.setting[k], c.setting):
            ch = True
        if t >= K.LT_PRV:
            if not _same(state.setting[k], c.setting):
                ch = True
            elif np.isnan(state.setting[k]) and s != c.status:
                ch = True
        if ch:
            state.status[k] = c.status
            if t not in (K.LT_PIPE, K.LT_CVPIPE):
                state.setting[k] = c.setting
            change = True
    return change


# ---------------------------------------------------------------------------------------------
# Connectivity: nodes that no reservoir or tank can reach
# ---------------------------------------------------------------------------------------------
def _fixed_closed(net: WaterNetwork, state: WaterState) -> np.ndarray:
    """Links closed for the whole period (no status check can reopen them)."""
    st, t = state.status, net.ltype
    closed = st <= K.ST_CLOSED
    dynamic = (t == K.LT_CVPIPE) | (((t == K.LT_PRV) | (t == K.LT_PSV) | (t == K.LT_FCV))
                                    & ~np.isnan(state.setting))
    dynamic |= (st == K.ST_XHEAD) | (st == K.ST_TEMPCLOSED)
    pump_off = (t == K.LT_PUMP) & (state.setting == 0.0)
    return (closed & ~dynamic) | pump_off


def cut_off_nodes(net: WaterNetwork, open_links: np.ndarray) -> np.ndarray:
    """Nodes in a connected component (over ``open_links``) without a reservoir or tank."""
    return K.cut_off(net.n1, net.n2, np.ascontiguousarray(open_links, dtype=np.bool_), net.fixed)


def _fill_reducing_order(n: int, li: np.ndarray, lj: np.ndarray) -> np.ndarray:
    """A fill-reducing order of the free rows (new -> old): CHOLMOD's AMD when scikit-sparse is
    installed (EPANET uses minimum degree too), else reverse Cuthill-McKee."""
    both = (li >= 0) & (lj >= 0) & (li != lj)
    diag = np.arange(n)
    rows = np.concatenate([diag, li[both], lj[both]])
    cols = np.concatenate([diag, lj[both], li[both]])
    vals = np.concatenate([np.full(n, 4.0), np.full(2 * int(both.sum()), -1e-3)])
    pattern = sp.csc_matrix((vals, (rows, cols)), shape=(n, n))
    pattern.sum_duplicates()
    pattern.sort_indices()
    if _cholmod_analyze is not None:
        try:
            return np.asarray(_cholmod_analyze(pattern, mode="simplicial", ordering_method="amd").P(),
                              np.int64)
        except Exception:  # pragma: no cover - CHOLMOD without AMD
            pass
    return np.asarray(reverse_cuthill_mckee(pattern, symmetric_mode=True), np.int64)


class _GGASystem:
    """The matrix of one set of free rows: the fill-reducing order, the symbolic factorization
    and the work arrays of the compiled trial loop, built once per excluded set and reused."""

    def __init__(self, net: WaterNetwork, excluded: np.ndarray):
        free = ~net.fixed & ~excluded
        n = int(free.sum())
        self.n = n
        row = np.full(net.n_nodes, -1, np.int64)
        row[free] = np.arange(n)
        self.row = row
        self.excluded_link = excluded[net.n1] | excluded[net.n2]
        li = np.where(self.excluded_link, -1, row[net.n1])
        lj = np.where(self.excluded_link, -1, row[net.n2])
        perm = _fill_reducing_order(n, li, lj) if n else np.zeros(0, np.int64)
        pinv = np.empty(n, np.int64)
        pinv[perm] = np.arange(n)
        self.node_of_pos = np.flatnonzero(free)[perm].astype(np.int64)
        (self.cp, self.ci, self.cdiag, self.pos_a, self.pos_b,
         self.pos_ab) = K.gga_matrix_pattern(net.n1, net.n2, row, self.excluded_link, pinv, n)
        self.parent = np.empty(n, np.int64)
        self.lp = np.empty(n + 1, np.int64)
        self.sw = np.empty(max(n, 1), np.int64)
        self.mark = np.zeros(n, np.bool_)
        nnz_l = K.chol_symbolic(n, self.cp, self.ci, self.parent, self.lp)
        self.rp, self.rj = K.chol_row_patterns(n, self.cp, self.ci, self.parent, self.lp, self.sw, self.mark)
        self.dinv = np.empty(n)
        self.cx = np.zeros(len(self.ci))
        self.li = np.empty(nnz_l, np.int64)
        self.lx = np.empty(nnz_l)
        self.cw = np.empty(n, np.int64)
        self.xw, self.bw, self.rw = np.empty(n), np.empty(n), np.empty(n)
        m = len(net.ltype)
        self.P, self.Y, self.w = np.zeros(m), np.zeros(m), np.zeros(m)
        self.diag, self.rhs = np.zeros(n), np.zeros(n)
        self.xflow = np.zeros(net.n_nodes)
        self.fixed_inflow = np.zeros(net.n_nodes)
        self.out = np.zeros(4)


def _system(net: WaterNetwork, excluded: np.ndarray) -> _GGASystem:
    """The GGA system for the free nodes, cached per excluded set."""
    key = ("gga", excluded.tobytes())
    system = net.cache.get(key)
    if system is None:
        system = net.cache[key] = _GGASystem(net, excluded)
    return system


# ---------------------------------------------------------------------------------------------
# The GGA iterations (hydsolve)
# ---------------------------------------------------------------------------------------------
@dataclass
class SolveInfo:
    converged: bool
    iterations: int
    relerr: float
    message: str
    unsupplied: np.ndarray


def hydsolve(net: WaterNetwork, state: WaterState, controls: list[_Ctl], *, accuracy: float,
             max_trials: int, extra_trials: int = 0) -> SolveInfo:
    """Solve one period in place (EPANET's hydsolve), with cut-off nodes left out of the matrix.
    After convergence, nodes with demand that closed links cut off during the solve are left
    out too and the period is solved again (EPANET would drive their heads far negative)."""
    excluded = cut_off_nodes(net, ~_fixed_closed(net, state))
    info = _hydsolve_once(net, state, controls, excluded, accuracy, max_trials, extra_trials)
    for _ in range(2):
        open_now = state.status > K.ST_CLOSED
        cut = cut_off_nodes(net, open_now)
        newly = cut & ~excluded & ((state.demand != 0) | (net.emitter_ke > 0))
        if not newly.any():
            break
        excluded = excluded | cut
        info = _hydsolve_once(net, state, controls, excluded, accuracy, max_trials, extra_trials)
    info.unsupplied = excluded
    return info


def _hydsolve_once(net, state, controls, excluded, accuracy, max_trials, extra_trials) -> SolveInfo:
    g = _system(net, excluded)
    demand = np.where(excluded, 0.0, state.demand)
    state.head[excluded] = net.elevation[excluded]
    state.emitter_flow[excluded] = 0.0
    # the status arrays are rewritten in place by the kernels: make sure they have their dtypes
    for name, dt in (("status", np.int8), ("setting", np.float64), ("flow", np.float64),
                     ("emitter_flow", np.float64), ("head", np.float64)):
        a = getattr(state, name)
        if a.dtype != dt or not a.flags.c_contiguous:
            setattr(state, name, np.ascontiguousarray(a, dtype=dt))
    overflow = net.cache.get("overflow")
    if overflow is None:
        overflow = net.cache["overflow"] = np.ascontiguousarray(net.model.tanks.overflow, dtype=np.bool_)
    pcontrols = [c for c in controls if c.node >= 0 and not net.fixed[c.node] and c.kind in ("above", "below")]
    hacc_si = accuracy * K.CFS_SI
    maxtrials = max_trials + max(extra_trials, 0)
    out = g.out
    out[:] = (np.inf, 0.0, accuracy, 0.0)
    it, nextcheck, message = 1, CHECKFREQ, ""
    while True:
        code, it, nextcheck = K.gga_trials(
            net.ltype, net.n1, net.n2, net.law, net.r, net.km, net.rel_rough, net.visc_d, net.hexp,
            K.RQTOL_SI, net.pump_type, net.pump_h0, net.pump_r, net.pump_n, net.curve_id,
            net.curve_ptr, net.curve_x, net.curve_y, net.diameter, net.elevation, net.is_const_hp,
            net.emitter_ke, net.qexp, net.valve_links, net.status_links, net.fixed,
            net.tank_of_node, net.tank_hmax, net.tank_hmin, overflow, net.pump_hmax,
            g.row, g.excluded_link, g.node_of_pos, g.cp, g.ci, g.cdiag, g.pos_a, g.pos_b,
            g.pos_ab, g.rp, g.rj, g.lp,
            state.status, state.setting, state.flow, state.emitter_flow, state.head, demand,
            g.fixed_inflow, g.P, g.Y, g.w, g.diag, g.rhs, g.xflow, g.cx, g.li, g.lx, g.dinv, g.xw,
            g.bw, g.rw, g.cw,
            float(accuracy), int(max_trials), int(maxtrials), float(hacc_si), ROUNDOFF_FACTOR,
            CHECKFREQ, MAXCHECK, bool(pcontrols), int(it), int(nextcheck), out)
        if code == K.GGA_PSWITCH:       # converged: junction pressure controls (pswitch)
            stat_change = pressure_switch(net, state, pcontrols) or bool(out[3])
            if not stat_change:
                break
            nextcheck = it + CHECKFREQ
            it += 1
            continue
        if code == K.GGA_SINGULAR:
            message = "linear solve failed: the matrix is not positive definite"
        elif code == K.GGA_NONFINITE:
            message = "linear solve returned non-finite heads"
        break
    relerr, floor, target = float(out[0]), float(out[1]), float(out[2])
    it = min(it, maxtrials)
    state.demand = np.where(net.fixed, g.fixed_inflow, demand)
    converged = bool(relerr <= target) and not message
    if not message:
        if converged and relerr > accuracy:
            message = (f"converged to the round-off floor: relative flow change {relerr:.2g} "
                       f"(accuracy {accuracy:.2g}, floor {floor:.2g})")
        elif converged:
            message = "converged"
        else:
            message = f"not converged after {it} trials (relative error {relerr:.3g})"
    return SolveInfo(converged, it, relerr, message, excluded)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
def public_status(net: WaterNetwork, status: np.ndarray, setting: np.ndarray) -> np.ndarray:
    """EPANET's internal statuses as LinkStatus: closed (incl. XHEAD, TEMPCLOSED), active (also
    an open PBV/TCV working to its setting, as EPANET reports it), else open."""
    out = np.full(len(status), int(LinkStatus.OPEN), np.int8)
    out[status == K.ST_ACTIVE] = int(LinkStatus.ACTIVE)
    throttling = _type_masks(net)[4] & ~np.isnan(setting)
    out[throttling] = int(LinkStatus.ACTIVE)
    out[status <= K.ST_CLOSED] = int(LinkStatus.CLOSED)
    return out


def make_result(net: WaterNetwork, state: WaterState, info: SolveInfo, elapsed: float) -> SolveResult:
    """A SolveResult from the solver state: gauge pressures, closed links at zero flow."""
    H = state.head.copy()
    unsup = info.unsupplied.copy()
    H[unsup] = net.elevation[unsup]
    pressure = (H - net.elevation) * PA_PER_M_WATER
    flow = np.where(state.status <= K.ST_CLOSED, 0.0, state.flow)
    flow[unsup[net.n1] | unsup[net.n2]] = 0.0
    area = np.pi * net.diameter ** 2 / 4.0
    velocity = np.where((area > 0) & (net.ltype != K.LT_PUMP), np.abs(flow) / np.where(area > 0, area, 1.0), 0.0)
    node_demand = state.demand.copy()
    node_demand[~net.fixed] += state.emitter_flow[~net.fixed]
    node_demand[unsup] = 0.0
    # mass balance residual at free nodes
    bal = np.bincount(net.n2, weights=flow, minlength=net.n_nodes) - \
        np.bincount(net.n1, weights=flow, minlength=net.n_nodes) - node_demand
    free = ~net.fixed & ~unsup
    residual = float(np.max(np.abs(bal[free]))) if free.any() else 0.0
    return SolveResult(
        converged=info.converged, iterations=info.iterations, residual=residual,
        message=info.message, node_pressure_pa=pressure, node_head_m=H, link_flow=flow,
        link_velocity_m_s=velocity, link_status=public_status(net, state.status, state.setting), unsupplied=unsup,
        node_demand=node_demand, elapsed_s=elapsed, time_s=float(state.time_s),
        extra={"relative_error": info.relerr, "epanet_status": state.status.copy(),
               "link_setting": state.setting.copy(), "emitter_flow": state.emitter_flow.copy(),
               "link_flow_raw": state.flow.copy()})


def solve_options(model: NetworkModel, options: dict | None) -> dict:
    """Accuracy and trial limits: the model's EPANET options unless overridden."""
    o = dict(options or {})
    o.setdefault("accuracy", model.water.accuracy)
    o.setdefault("trials", model.water.trials)
    o.setdefault("extra_trials", 0)
    o.setdefault("controls", True)
    return o


def solve_water(model: NetworkModel, time_s: float = 0.0, *, demand=None, fixed_head=None,
                tank_head=None, warm_start: SolveResult | None = None, status=None, options=None,
                prepared: WaterNetwork | None = None) -> SolveResult:
    """Solve one hydraulic period of a water network as EPANET 2.2 does at ``time_s``.

    ``demand``: node demands (m3/s) instead of the model's patterned ones. ``fixed_head``: heads
    per node for reservoirs/tanks (NaN keeps the model's). ``tank_head``: head per tank (order of
    ``model.tanks``). ``status``: LinkStatus per link instead of the model's initial status.
    ``warm_start``: a previous result whose flows (and internal statuses) start the iterations.
    ``options``: ``accuracy``, ``trials``, ``extra_trials``, ``controls`` (apply simple controls
    due at ``time_s``, default True), ``link_setting`` (settings per link, SI).
    ``prepared``: ``prepare(model)`` done once, for a twin that re-solves the same network (it
    keeps the factorization's symbolic analysis too). The model is not changed."""
    t0 = _time.perf_counter()
    o = solve_options(model, options)
    net = prepared if prepared is not None else prepare(model)
    state = initial_state(net, status, o.get("link_setting"))
    state.time_s = float(time_s)
    if warm_start is not None:
        _warm(net, state, warm_start, keep_status=status is None)
    if tank_head is not None:
        th = np.asarray(tank_head, float)
        state.head[net.tank_node] = th
        for j in range(len(th)):
            state.tank_volume[j] = tank_volume(net, j, th[j])
    if fixed_head is not None:
        fh = np.asarray(fixed_head, float)
        use = net.fixed & np.isfinite(fh)
        state.head[use] = fh[use]
    apply_demands(net, state, time_s, demand)
    if fixed_head is not None:     # an explicit head wins over a reservoir head pattern
        state.head[use] = fh[use]
    controls = _cached_controls(net) if o["controls"] else []
    if controls:
        apply_controls(net, state, controls, time_s, model.times.start_clocktime_s)
    info = hydsolve(net, state, controls, accuracy=o["accuracy"], max_trials=o["trials"],
                    extra_trials=o["extra_trials"])
    return make_result(net, state, info, _time.perf_counter() - t0)


def _cached_controls(net: WaterNetwork) -> list[_Ctl]:
    """epanet_controls once per prepared network (the model's controls list is re-read if it
    is replaced or grows)."""
    key = (id(net.model.controls), len(net.model.controls))
    hit = net.cache.get("controls")
    if hit is None or hit[0] != key:
        hit = net.cache["controls"] = (key, epanet_controls(net))
    return hit[1]


def _warm(net: WaterNetwork, state: WaterState, prev: SolveResult, keep_status: bool) -> None:
    """Start from a previous solution: its raw flows, and its internal statuses when known."""
    q = np.asarray(prev.extra.get("link_flow_raw", prev.link_flow), float)
    if len(q) != len(state.flow):
        return
    use = (state.status > K.ST_CLOSED) & (np.abs(q) > K.QZERO_SI)
    state.flow[use] = q[use]
    if keep_status and "epanet_status" in prev.extra:
        state.status[:] = prev.extra["epanet_status"]
        state.setting[:] = prev.extra["link_setting"]
    if "emitter_flow" in prev.extra:
        state.emitter_flow[:] = prev.extra["emitter_flow"]


class WaterSolver:
    """The water solver behind the same small interface as ``GasSolver``
    (``solve(demand, warm_start=None)``), so state estimation and the flow treat both media alike.
    The network is prepared once (link types, curve fits, the factorization's pattern)."""

    def __init__(self, model: NetworkModel, options: dict | None = None):
        self.model = model
        self.net = prepare(model)
        self.options = options

    def solve(self, demand: np.ndarray | None = None, *, warm_start: SolveResult | None = None,
              time_s: float = 0.0) -> SolveResult:
        return solve_water(self.model, time_s, demand=demand, warm_start=warm_start, options=self.options,
                           prepared=self.net)
