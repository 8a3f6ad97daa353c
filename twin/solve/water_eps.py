"""EPANET 2.2's extended-period hydraulics (hydraul.c: runhyd / nexthyd / timestep).

Each period is a single-period GGA solve (``water.hydsolve``) with tank heads held fixed; between
periods the tank levels are integrated with the period's net inflows. The time step is the
hydraulic step shortened to the next pattern step, the next reporting time, the moment a tank
fills or empties (tanktimestep) and the moment a simple control fires (controltimestep), exactly
as EPANET does, so statuses and tank levels follow EPANET's step by step. Link statuses (including
EPANET's temporary ones) and flows carry over from one period to the next.
"""

from __future__ import annotations

import time as _time

import numpy as np

from pipetwin.kernels import water as K
from pipetwin.twin.model import NetworkModel
from pipetwin.twin.solve.result import SolveResult
from pipetwin.twin.solve.water import (
    SECONDS_PER_DAY, WaterNetwork, WaterState, apply_controls, apply_demands, epanet_controls,
    hydsolve, initial_state, make_result, prepare, solve_options, tank_grade, tank_volume)


def _round(x: float) -> int:
    """EPANET's ROUND: half away from zero, to a whole second."""
    return int(x + 0.5) if x >= 0 else int(x - 0.5)


def tank_timestep(net: WaterNetwork, state: WaterState, tstep: int) -> int:
    """tanktimestep: shorten the step to the time the first tank fills or empties."""
    for j in range(len(net.tank_node)):
        n = net.tank_node[j]
        h, q = state.head[n], state.demand[n]
        if abs(q) <= K.QZERO_SI:
            continue
        if q > 0.0 and h < net.tank_hmax[j]:
            v = net.tank_vmax[j] - state.tank_volume[j]
        elif q < 0.0 and h > net.tank_hmin[j]:
            v = net.tank_vmin[j] - state.tank_volume[j]
        else:
            continue
        t = _round(v / q)
        if 0 < t < tstep:
            tstep = t
    return tstep


def control_timestep(net: WaterNetwork, state: WaterState, controls, tstep: int, htime: int,
                     clock_start: int) -> int:
    """controltimestep: shorten the step to the next time a simple control would change a link:
    a tank reaching a control level, an elapsed time or a clock time."""
    for c in controls:
        t = 0
        if c.kind in ("above", "below") and c.node >= 0:
            if not net.fixed[c.node]:
                continue
            j = int(net.tank_of_node[c.node])
            h, q = state.head[c.node], state.demand[c.node]
            if abs(q) <= K.QZERO_SI or j < 0:
                continue
            if (h < c.grade and c.kind == "above" and q > 0.0) or \
               (h > c.grade and c.kind == "below" and q < 0.0):
                v = tank_volume(net, j, c.grade) - state.tank_volume[j]
                t = _round(v / q)
        if c.kind == "time" and c.time_s > htime:
            t = int(c.time_s - htime)
        if c.kind == "clocktime":
            t1 = (htime + clock_start) % SECONDS_PER_DAY
            t2 = int(c.time_s)
            t = t2 - t1 if t2 >= t1 else SECONDS_PER_DAY - t1 + t2
        if 0 < t < tstep:
            k = c.link
            changes_setting = net.ltype[k] not in (K.LT_PIPE, K.LT_CVPIPE) and \
                not _same_setting(state.setting[k], c.setting)
            if changes_setting or state.status[k] != c.status:
                tstep = t
    return tstep


def _same_setting(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def tank_levels(net: WaterNetwork, state: WaterState, tstep: int) -> None:
    """tanklevels: integrate each tank's volume over the step, snapping to full/empty when the
    next second would pass it, and set its head from the new volume."""
    overflow = net.model.tanks.overflow
    for j in range(len(net.tank_node)):
        n = net.tank_node[j]
        q = state.demand[n]
        state.tank_volume[j] += q * tstep
        if state.tank_volume[j] + q >= net.tank_vmax[j] and not overflow[j]:
            state.tank_volume[j] = net.tank_vmax[j]
        elif state.tank_volume[j] - q <= net.tank_vmin[j]:
            state.tank_volume[j] = net.tank_vmin[j]
        state.head[n] = tank_grade(net, j, state.tank_volume[j])


def time_step(net: WaterNetwork, state: WaterState, controls, htime: int, rtime: int) -> int:
    """EPANET's timestep(): the hydraulic step, shortened to the next pattern period, report time,
    tank full/empty and control action; then tank levels advance by it."""
    times = net.model.times
    tstep = int(times.hydraulic_step_s)
    pstep = max(int(times.pattern_step_s), 1)
    n = (htime + int(times.pattern_start_s)) // pstep + 1
    t = n * pstep - htime
    if 0 < t < tstep:
        tstep = t
    t = rtime - htime
    if 0 < t < tstep:
        tstep = t
    tstep = tank_timestep(net, state, tstep)
    tstep = control_timestep(net, state, controls, tstep, htime, int(times.start_clocktime_s))
    tank_levels(net, state, tstep)
    return tstep


def simulate_water(model: NetworkModel, duration_s: float | None = None, *, options=None,
                   all_steps: bool = False) -> list[SolveResult]:
    """Extended-period simulation as EPANET 2.2 runs it (ENsolveH). Returns one SolveResult per
    reporting time (``model.times.report_start_s`` + k ``report_step_s``, as EPANET and WNTR report)
    or, with ``all_steps``, per hydraulic time step. Tank levels are ``node_head_m - elevation`` of
    the tank nodes. The model is not changed."""
    o = solve_options(model, options)
    net = prepare(model)
    controls = epanet_controls(net)
    state: WaterState = initial_state(net)
    times = model.times
    dur = int(times.duration_s if duration_s is None else duration_s)
    rstep = max(int(times.report_step_s), 1)
    rstart = int(times.report_start_s)
    clock = int(times.start_clocktime_s)
    htime, rtime = 0, rstep
    out: list[SolveResult] = []
    while True:
        t0 = _time.perf_counter()
        state.time_s = float(htime)
        apply_demands(net, state, htime)
        apply_controls(net, state, controls, htime, clock)
        info = hydsolve(net, state, controls, accuracy=o["accuracy"], max_trials=o["trials"],
                        extra_trials=o["extra_trials"])
        if all_steps or (htime >= rstart and (htime - rstart) % rstep == 0):
            out.append(make_result(net, state, info, _time.perf_counter() - t0))
        if htime >= dur:
            break
        tstep = time_step(net, state, controls, htime, rtime)
        htime += tstep
        if htime >= rtime:
            rtime += rstep
    return out
