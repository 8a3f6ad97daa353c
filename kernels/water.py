"""Numba kernels of the EPANET 2.2 gradient (Todini-Pilati GGA) water solver, in SI units.

EPANET works in feet and cfs. Every constant below is EPANET's own, converted once to SI so the
solver takes the same steps as EPANET (hydcoeffs.c, hydsolver.c) in a unit system scaled by
0.3048 m/ft and 0.3048**3 m3/s per cfs. A head-loss gradient (ft/cfs) scales by ``GRAD_SI``, a
conductance (cfs/ft) by ``1 / GRAD_SI``, a flow by ``CFS_SI`` and a head by ``FT``.

Link type codes (``LT_*``) and EPANET's internal status codes (``ST_*``) are module constants;
status comparisons such as ``status <= ST_CLOSED`` mean the same as in EPANET.
"""

import math

import numpy as np
from numba import njit

from pipetwin.kernels.cholesky import (  # noqa: F401  (re-exported: the water solver uses K.*)
    scatter_links,
    _ereach, _sym_upper_residual, chol_numeric, chol_row_patterns, chol_solve, chol_symbolic,
    gga_matrix_pattern)
from pipetwin.kernels.graph import component_labels

# -- units -----------------------------------------------------------------------------------
FT = 0.3048                      # m per ft
CFS_SI = FT ** 3                 # m3/s per cfs
GRAD_SI = FT / CFS_SI            # (m per m3/s) per (ft per cfs)

# -- EPANET constants, SI --------------------------------------------------------------------
CBIG_GRAD = 1.0e8 * GRAD_SI      # CBIG used as a head-loss gradient (closed link: P = 1/CBIG)
CBIG_COND = 1.0e8 / GRAD_SI      # CBIG used as a conductance (Aii += CBIG, PBV's P = CBIG)
CSMALL_GRAD = 1.0e-6 * GRAD_SI   # CSMALL as a gradient (open valve without minor loss)
CSMALL_KE = 1.0e-6               # CSMALL floor on the emitter coefficient (ft/cfs^Qexp; scaled per call)
RQTOL_SI = 1.0e-7 * GRAD_SI      # RQtol: smallest head-loss gradient before linearising
HTOL_SI = 0.0005 * FT            # Htol, head tolerance of the status checks
QTOL_SI = 1.0e-4 * CFS_SI        # Qtol, flow tolerance of the status checks
QZERO_SI = 1.0e-6 * CFS_SI       # QZERO, the "zero" flow of a closed link
TINY_FLOW_SI = 1.0e-6 * CFS_SI   # TINY used as a flow (GPV)
TINY_GRAD_SI = 1.0e-6 * GRAD_SI  # TINY used as a slope (GPV)
G_EPANET_SI = 32.2 * FT          # EPANET's g, 32.2 ft/s2, in m/s2
MINOR_LOSS_SI = 0.02517 / FT     # EPANET's Km = 0.02517 K / d^4 (ft, cfs), SI: K * this / d^4
CONST_HP_SI = 8.814 * FT * CFS_SI / 745.7   # head gain (m) x flow (m3/s) per watt, EPANET's 8.814

# Darcy-Weisbach friction factor constants (hydcoeffs.c), dimensionless
A1 = 3.14159265358979323850e+03   # 1000*PI
A2 = 1.57079632679489661930e+03   # 500*PI
A8 = 4.61841319859066668690e+00   # 5.74*(PI/4)^.9
A9 = -8.68588963806503655300e-01  # -2/ln(10)
AB = 3.28895476345399058690e-03   # 5.74/(4000^.9)
AC = -5.14214965799093883760e-03  # AA*AB

# -- link type and status codes --------------------------------------------------------------
LT_PIPE = 0
LT_CVPIPE = 1
LT_PUMP = 2
LT_PRV = 3
LT_PSV = 4
LT_PBV = 5
LT_FCV = 6
LT_TCV = 7
LT_GPV = 8
LT_OPEN = 9        # isolation valve / short pipe: a valve without a setting

ST_XHEAD = 0       # pump closed: head above shutoff
ST_TEMPCLOSED = 1  # closed for a full/empty tank
ST_CLOSED = 2
ST_OPEN = 3
ST_ACTIVE = 4
ST_XFLOW = 5
ST_XFCV = 6        # FCV open: cannot deliver its setting
ST_XPRESSURE = 7   # PRV/PSV open: cannot hold its setting

PUMP_NOCURVE = 0
PUMP_POWER = 1     # h = h0 - r q^n from a 1- or 3-point curve
PUMP_CUSTOM = 2    # multi-point curve by linear segments
PUMP_CONST_HP = 3

LAW_HW = 0
LAW_DW = 1
LAW_CM = 2


# -- resistance ------------------------------------------------------------------------------
@njit(cache=True)
def pipe_resistance(law, length_m, diameter_m, roughness):
    """EPANET's resistance coefficient R (resistcoeff), evaluated in feet with EPANET's own
    constants and converted to SI, so hloss_m = R * q_m3s**n is exactly EPANET's law.
    For D-W, R excludes the friction factor (EPANET multiplies it in per iteration)."""
    L = length_m / FT
    d = diameter_m / FT
    if law == LAW_HW:
        r = 4.727 * L / roughness ** 1.852 / d ** 4.871
        return r * FT / CFS_SI ** 1.852
    if law == LAW_DW:
        area = math.pi * d * d / 4.0
        r = L / 2.0 / 32.2 / d / (area * area)
        return r * FT / CFS_SI ** 2
    area = math.pi * d * d
    r = (4.0 * roughness / (1.49 * area)) ** 2 * (d / 4.0) ** -1.333 * L
    return r * FT / CFS_SI ** 2


@njit(cache=True)
def sgn(x):
    """EPANET's SGN: +1 at zero."""
    return -1.0 if x < 0.0 else 1.0


# -- per-link head loss laws: return (hloss, hgrad) ------------------------------------------
@njit(cache=True)
def power_law_headloss(flow, r, km, hexp, rqtol):
    """H-W / C-M pipe (pipecoeff): hloss = r|q|^n + km q^2, linear below gradient RQtol so the
    GGA's 1/gradient stays finite at q = 0."""
    q = abs(flow)
    hgrad = hexp * r * q ** (hexp - 1.0) if q > 0.0 else 0.0
    if hgrad < rqtol:
        hgrad = rqtol / hexp
        hloss = hgrad * q
    else:
        hloss = hgrad * q / hexp
    if km > 0.0:
        hloss += km * q * q
        hgrad += 2.0 * km * q
    return hloss * sgn(flow), hgrad


@njit(cache=True)
def friction_factor(q, e, s):
    """D-W friction factor and df/dq (frictionFactor): Swamee-Jain for Re >= 4000, Dunlop's
    cubic between 2000 and 4000. q = |flow|, e = roughness/diameter, s = viscosity*diameter."""
    w = q / s
    if w >= A1:
        y1 = A8 / w ** 0.9
        y2 = e / 3.7 + y1
        y3 = A9 * math.log(y2)
        f = 1.0 / (y3 * y3)
        dfdq = 1.8 * f * y1 * A9 / y2 / y3 / q
        return f, dfdq
    y2 = e / 3.7 + AB
    y3 = A9 * math.log(y2)
    fa = 1.0 / (y3 * y3)
    fb = (2.0 + AC / (y2 * y3)) * fa
    r = w / A2
    x1 = 7.0 * fa - fb
    x2 = 0.128 - 17.0 * fa + 2.5 * fb
    x3 = -0.128 + 13.0 * fa - (fb + fb)
    x4 = 0.032 - 3.0 * fa + 0.5 * fb
    f = x1 + r * (x2 + r * (x3 + r * x4))
    dfdq = (x2 + r * (2.0 * x3 + r * 3.0 * x4)) / s / A2
    return f, dfdq


@njit(cache=True)
def darcy_headloss(flow, r, km, e, s):
    """D-W pipe (DWpipecoeff): Hagen-Poiseuille below Re 2000 (linear, so finite slope at 0),
    else the friction factor above with its derivative in the gradient."""
    q = abs(flow)
    if q <= A2 * s:
        rl = 16.0 * math.pi * s * r
        return flow * (rl + km * q), rl + 2.0 * km * q
    f, dfdq = friction_factor(q, e, s)
    r1 = f * r + km
    return r1 * q * flow, 2.0 * r1 * q + dfdq * r * q * q


@njit(cache=True)
def valve_headloss(flow, km, rqtol):
    """Open valve (valvecoeff): minor loss km q|q| linearised below RQtol; without a minor loss
    a tiny linear resistance CSMALL."""
    if km > 0.0:
        q = abs(flow)
        hgrad = 2.0 * km * q
        if hgrad < rqtol:
            hgrad = rqtol / 2.0
            return flow * hgrad, hgrad
        return flow * hgrad / 2.0, hgrad
    return flow * CSMALL_GRAD, CSMALL_GRAD


@njit(cache=True)
def emitter_headloss(flow, ke, qexp, rqtol):
    """Emitter as a pipe to a reservoir at the node's elevation: hloss = ke |q|^qexp, linear below
    RQtol (emitterheadloss, EPANET 2.2: no backflow barrier)."""
    ke = max(CSMALL_KE * FT / CFS_SI ** qexp, ke)
    q = flow
    aq = abs(q)
    if aq > 0.0:
        hgrad = qexp * ke * aq ** (qexp - 1.0)
    elif qexp > 1.0:
        hgrad = 0.0
    elif qexp == 1.0:
        hgrad = ke
    else:
        hgrad = np.inf
    if hgrad < rqtol:
        hgrad = rqtol / qexp
        return hgrad * q, hgrad
    return hgrad * q / qexp, hgrad


@njit(cache=True)
def curve_segment(cx, cy, q):
    """Intercept and slope of the linear segment of a curve bracketing q (curvecoeff)."""
    npts = cx.shape[0]
    k2 = 0
    while k2 < npts and cx[k2] < q:
        k2 += 1
    if k2 == 0:
        k2 += 1
    elif k2 == npts:
        k2 -= 1
    k1 = k2 - 1
    r = (cy[k2] - cy[k1]) / (cx[k2] - cx[k1])
    h0 = cy[k1] - r * cx[k1]
    return h0, r


@njit(cache=True)
def pump_headloss(flow, ptype, h0, r, n, setting, cx, cy, rqtol):
    """Pump head loss (negative: a gain) and gradient (pumpcoeff). Power curves h0 - r q^n are
    scaled by speed (h0 s^2, r s^(2-n)); custom curves use the segment at q/speed. Returns
    a flag 0 normal, 1 treat as closed, 2 treat as an open valve."""
    if ptype == PUMP_NOCURVE:
        return 0.0, 0.0, 2
    q = abs(flow)
    if ptype == PUMP_CUSTOM:
        c0, c1 = curve_segment(cx, cy, q / setting)
        hgrad = -c1 * setting
        return -c0 * setting * setting + hgrad * flow, hgrad, 0
    hh0 = setting * setting * h0
    if abs(n - 1.0) < 1.0e-6:
        n = 1.0
    rr = r * setting ** (2.0 - n)
    if ptype == PUMP_CONST_HP:
        hgrad = -rr / q / q if q > 0.0 else np.inf
        if hgrad > CBIG_GRAD:
            return 0.0, 0.0, 1
        if hgrad < CSMALL_GRAD:
            return 0.0, 0.0, 2
        return rr / flow, hgrad, 0
    if n != 1.0:
        hgrad = n * rr * q ** (n - 1.0) if q > 0.0 else 0.0
        if hgrad < rqtol:
            hgrad = rqtol
            return hh0 + hgrad * flow, hgrad, 0
        return hh0 + hgrad * flow / n, hgrad, 0
    return hh0 + rr * flow, rr, 0


# -- the GGA steps over all links ------------------------------------------------------------
@njit(cache=True)
def link_coeffs(ltype, status, setting, flow, law, r, km, rel_rough, visc_d, hexp, rqtol,
                pump_type, pump_h0, pump_r, pump_n, curve_id, curve_ptr, curve_x, curve_y,
                diameter, P, Y):
    """P = 1/head-loss gradient and Y = head loss/gradient of every link (headlosscoeffs).
    ``setting`` is NaN where EPANET's LinkSetting is MISSING (fixed open/closed valve)."""
    for k in range(ltype.shape[0]):
        t = ltype[k]
        q = flow[k]
        if t == LT_PIPE or t == LT_CVPIPE:
            if status[k] <= ST_CLOSED:
                P[k] = 1.0 / CBIG_GRAD
                Y[k] = q
                continue
            if law == LAW_DW:
                hl, hg = darcy_headloss(q, r[k], km[k], rel_rough[k], visc_d[k])
            else:
                hl, hg = power_law_headloss(q, r[k], km[k], hexp, rqtol)
            P[k] = 1.0 / hg
            Y[k] = hl / hg
        elif t == LT_PUMP:
            s = setting[k]
            if status[k] <= ST_CLOSED or s == 0.0:
                P[k] = 1.0 / CBIG_GRAD
                Y[k] = q
                continue
            c = curve_id[k]
            lo = curve_ptr[c] if c >= 0 else 0
            hi = curve_ptr[c + 1] if c >= 0 else 0
            hl, hg, flag = pump_headloss(q, pump_type[k], pump_h0[k], pump_r[k], pump_n[k], s,
                                         curve_x[lo:hi], curve_y[lo:hi], rqtol)
            if flag == 1:
                P[k] = 1.0 / CBIG_GRAD
                Y[k] = q
            elif flag == 2:
                P[k] = 1.0 / CSMALL_GRAD
                Y[k] = q
            else:
                P[k] = 1.0 / hg
                Y[k] = hl / hg
        elif t == LT_PBV:
            s = setting[k]
            if np.isnan(s) or s == 0.0 or km[k] * q * q > s:
                _valve_py(k, status, q, km[k], rqtol, P, Y)
            else:
                P[k] = CBIG_COND
                Y[k] = s * CBIG_COND
        elif t == LT_TCV:
            s = setting[k]
            kk = km[k]
            if not np.isnan(s):
                d = diameter[k]
                kk = MINOR_LOSS_SI * s / (d * d * d * d)
            _valve_py(k, status, q, kk, rqtol, P, Y)
        elif t == LT_GPV:
            if status[k] == ST_CLOSED:
                _valve_py(k, status, q, km[k], rqtol, P, Y)
            else:
                c = curve_id[k]
                lo = curve_ptr[c]
                hi = curve_ptr[c + 1]
                aq = max(abs(q), TINY_FLOW_SI)
                h0, rs = curve_segment(curve_x[lo:hi], curve_y[lo:hi], aq)
                rs = max(rs, TINY_GRAD_SI)
                P[k] = 1.0 / rs
                Y[k] = (h0 / rs + aq) * sgn(q)
        elif t == LT_PRV or t == LT_PSV or t == LT_FCV:
            if np.isnan(setting[k]):
                _valve_py(k, status, q, km[k], rqtol, P, Y)
            else:
                P[k] = 0.0
        else:
            _valve_py(k, status, q, km[k], rqtol, P, Y)


@njit(cache=True)
def _valve_py(k, status, flow, km, rqtol, P, Y):
    """valvecoeff into P[k], Y[k]: closed -> 1/CBIG, else the open-valve law."""
    if status[k] <= ST_CLOSED:
        P[k] = 1.0 / CBIG_GRAD
        Y[k] = flow
        return
    hl, hg = valve_headloss(flow, km, rqtol)
    P[k] = 1.0 / hg
    Y[k] = hl / hg


@njit(cache=True)
def assemble_system(ltype, status, setting_head, km, flow, n1, n2, row, excluded_link, head,
                    elevation, demand, emitter_ke, emitter_flow, qexp, rqtol, valve_links,
                    P, Y, w, diag, rhs, xflow):
    """The linearised node equations (matrixcoeffs): conductances ``w`` for the Laplacian, extra
    diagonal and right-hand side per free row, and the node flow excess ``xflow``.

    ``row[i]`` is node i's matrix row, -1 for a fixed-head (or excluded) node. ``setting_head``
    holds PRV/PSV settings as heads (m) and FCV settings as flows; NaN when the valve is fixed.
    ``valve_links`` lists PRV/PSV/FCV links in EPANET's valve order (the order matters: an FCV
    changes the flow excess a later PRV reads)."""
    w[:] = 0.0
    diag[:] = 0.0
    rhs[:] = 0.0
    xflow[:] = 0.0
    # linkcoeffs
    for k in range(ltype.shape[0]):
        if P[k] == 0.0 or excluded_link[k]:
            continue
        a = n1[k]
        b = n2[k]
        xflow[a] -= flow[k]
        xflow[b] += flow[k]
        w[k] = P[k]
        ra = row[a]
        rb = row[b]
        if ra >= 0:
            rhs[ra] += Y[k]
        elif rb >= 0:
            rhs[rb] += P[k] * head[a]
        if rb >= 0:
            rhs[rb] -= Y[k]
        elif ra >= 0:
            rhs[ra] += P[k] * head[b]
    # emittercoeffs
    for i in range(row.shape[0]):
        ri = row[i]
        if ri < 0 or emitter_ke[i] == 0.0:
            continue
        hl, hg = emitter_headloss(emitter_flow[i], emitter_ke[i], qexp, rqtol)
        diag[ri] += 1.0 / hg
        rhs[ri] += (hl + elevation[i]) / hg
        xflow[i] -= emitter_flow[i]
    # nodecoeffs
    for i in range(row.shape[0]):
        ri = row[i]
        if ri < 0:
            continue
        xflow[i] -= demand[i]
        rhs[ri] += xflow[i]
    # valvecoeffs
    for m in range(valve_links.shape[0]):
        k = valve_links[m]
        if np.isnan(setting_head[k]) or excluded_link[k]:
            continue
        a = n1[k]
        b = n2[k]
        i = row[a]
        j = row[b]
        t = ltype[k]
        if t == LT_PRV and status[k] == ST_ACTIVE:
            hset = elevation[b] + setting_head[k]
            P[k] = 0.0
            Y[k] = flow[k] + xflow[b]
            if j >= 0:
                rhs[j] += hset * CBIG_COND
                diag[j] += CBIG_COND
            if xflow[b] < 0.0 and i >= 0:
                rhs[i] += xflow[b]
        elif t == LT_PSV and status[k] == ST_ACTIVE:
            hset = elevation[a] + setting_head[k]
            P[k] = 0.0
            Y[k] = flow[k] - xflow[a]
            if i >= 0:
                rhs[i] += hset * CBIG_COND
                diag[i] += CBIG_COND
            if xflow[a] > 0.0 and j >= 0:
                rhs[j] += xflow[a]
            w[k] = 1.0 / CBIG_GRAD          # preserve connectivity
        elif t == LT_FCV and status[k] == ST_ACTIVE:
            q = setting_head[k]
            xflow[a] -= q
            xflow[b] += q
            Y[k] = flow[k] - q
            if i >= 0:
                rhs[i] -= q
            if j >= 0:
                rhs[j] += q
            P[k] = 1.0 / CBIG_GRAD
            w[k] = P[k]
            _fixed_end_rhs(k, a, b, i, j, P, head, rhs)
        else:
            _valve_py(k, status, flow[k], km[k], rqtol, P, Y)
            w[k] = P[k]
            d = Y[k] - flow[k]
            if i >= 0:
                rhs[i] += d
            if j >= 0:
                rhs[j] -= d
            _fixed_end_rhs(k, a, b, i, j, P, head, rhs)


@njit(cache=True)
def _fixed_end_rhs(k, a, b, i, j, P, head, rhs):
    """A valve with one fixed-head end: move P * H_fixed to the free end's right-hand side."""
    if i < 0 and j >= 0:
        rhs[j] += P[k] * head[a]
    elif j < 0 and i >= 0:
        rhs[i] += P[k] * head[b]


@njit(cache=True)
def update_flows(ltype, status, P, Y, n1, n2, row, excluded_link, head, elevation,
                 is_const_hp, emitter_ke, emitter_flow, qexp, rqtol, flow, fixed_inflow, hacc_si):
    """New link and emitter flows from the new heads (newflows): dq = Y - P dh. Returns the
    convergence error sum|dq| / sum|q| and the round-off floor of that error: a link of
    conductance P between heads of size |H| cannot have its flow known better than about
    eps * P * |H| (CBIG penalties, CSMALL open valves, RQtol-linear pipes make P huge).
    ``fixed_inflow`` gets the net inflow of every fixed-head node."""
    qsum = 0.0
    dqsum = 0.0
    noise = 0.0
    for i in range(row.shape[0]):
        if row[i] < 0:
            fixed_inflow[i] = 0.0
    for k in range(ltype.shape[0]):
        if excluded_link[k]:
            flow[k] = 0.0
            continue
        a = n1[k]
        b = n2[k]
        dq = Y[k] - P[k] * (head[a] - head[b])
        noise = max(noise, P[k] * (abs(head[a]) + abs(head[b])))
        if is_const_hp[k] and dq > flow[k]:
            dq = flow[k] / 2.0
        flow[k] -= dq
        qsum += abs(flow[k])
        dqsum += abs(dq)
        if status[k] > ST_CLOSED:
            if row[a] < 0:
                fixed_inflow[a] -= flow[k]
            if row[b] < 0:
                fixed_inflow[b] += flow[k]
    for i in range(row.shape[0]):
        if row[i] < 0 or emitter_ke[i] == 0.0:
            continue
        hl, hg = emitter_headloss(emitter_flow[i], emitter_ke[i], qexp, rqtol)
        dq = (hl - (head[i] - elevation[i])) / hg
        emitter_flow[i] -= dq
        qsum += abs(emitter_flow[i])
        dqsum += abs(dq)
    noise *= 2.220446049250313e-16
    if qsum > hacc_si:
        return dqsum / qsum, noise / qsum
    return dqsum, noise


# -- status checks (hydstatus.c) -----------------------------------------------------------------
@njit(cache=True)
def cv_status(s, dh, q):
    """cvstatus: a check valve closes on reverse head or reverse flow."""
    if abs(dh) > HTOL_SI:
        if dh < -HTOL_SI or q < -QTOL_SI:
            return ST_CLOSED
        return ST_OPEN
    if q < -QTOL_SI:
        return ST_CLOSED
    return s


@njit(cache=True)
def valve_status(ltype, n1, n2, km, elevation, valve_links, status, setting, head, flow):
    """valvestatus: PRV/PSV switch between ACTIVE, OPEN and CLOSED around their setting."""
    change = False
    htol = HTOL_SI
    qtol = QTOL_SI
    for m in range(valve_links.shape[0]):
        k = valve_links[m]
        t = ltype[k]
        if t == LT_FCV or np.isnan(setting[k]):
            continue
        a = n1[k]
        b = n2[k]
        s = status[k]
        h1 = head[a]
        h2 = head[b]
        q = flow[k]
        hml = km[k] * q * q
        new = s
        if t == LT_PRV:
            hset = elevation[b] + setting[k]
            if s == ST_ACTIVE:
                if q < -qtol:
                    new = ST_CLOSED
                elif h1 - hml < hset - htol:
                    new = ST_OPEN
                else:
                    new = ST_ACTIVE
            elif s == ST_OPEN:
                if q < -qtol:
                    new = ST_CLOSED
                elif h2 >= hset + htol:
                    new = ST_ACTIVE
                else:
                    new = ST_OPEN
            elif s == ST_CLOSED:
                if h1 >= hset + htol and h2 < hset - htol:
                    new = ST_ACTIVE
                elif h1 < hset - htol and h1 > h2 + htol:
                    new = ST_OPEN
            elif s == ST_XPRESSURE and q < -qtol:
                new = ST_CLOSED
        else:
            hset = elevation[a] + setting[k]
            if s == ST_ACTIVE:
                if q < -qtol:
                    new = ST_CLOSED
                elif h2 + hml > hset + htol:
                    new = ST_OPEN
                else:
                    new = ST_ACTIVE
            elif s == ST_OPEN:
                if q < -qtol:
                    new = ST_CLOSED
                elif h1 < hset - htol:
                    new = ST_ACTIVE
                else:
                    new = ST_OPEN
            elif s == ST_CLOSED:
                if h2 > hset + htol and h1 > h2 + htol:
                    new = ST_OPEN
                elif h1 >= hset + htol and h1 > h2 + htol:
                    new = ST_ACTIVE
            elif s == ST_XPRESSURE and q < -qtol:
                new = ST_CLOSED
        if new != s:
            status[k] = new
            change = True
    return change


@njit(cache=True)
def _tank2_link_status(k, a, b, tank_of_node, tank_hmax, tank_hmin, status, head):
    """tank2linkstatus: a link between two fixed-head nodes closes if one tank is full and
    receives flow, or empty and gives flow."""
    h1 = head[a]
    h2 = head[b]
    j1 = tank_of_node[a]
    j2 = tank_of_node[b]
    close = False
    if j1 >= 0:
        if h1 >= tank_hmax[j1] - HTOL_SI and h2 >= h1:
            close = True
        elif h1 <= tank_hmin[j1] + HTOL_SI and h1 >= h2:
            close = True
    if j2 >= 0 and not close:
        if h2 >= tank_hmax[j2] - HTOL_SI and h1 >= h2:
            close = True
        elif h2 <= tank_hmin[j2] + HTOL_SI and h2 >= h1:
            close = True
    if close:
        status[k] = ST_TEMPCLOSED


@njit(cache=True)
def _tank_link_status(k, ltype, n1, n2, fixed, tank_of_node, tank_hmax, tank_hmin, overflow,
                      status, head, flow):
    """tanklinkstatus: close a link that would fill a full tank or drain an empty one."""
    if status[k] <= ST_CLOSED:
        return
    a = n1[k]
    b = n2[k]
    if fixed[a] and fixed[b]:
        _tank2_link_status(k, a, b, tank_of_node, tank_hmax, tank_hmin, status, head)
        return
    q = flow[k]
    if fixed[a]:
        tn = a
        other = b
    else:
        tn = b
        other = a
        q = -q
    j = tank_of_node[tn]
    if j < 0:
        return                                  # reservoir
    h = head[tn] - head[other]
    t = ltype[k]
    if head[tn] >= tank_hmax[j] - HTOL_SI and not overflow[j]:
        if t == LT_PUMP:
            if n2[k] == tn:
                status[k] = ST_TEMPCLOSED
        elif cv_status(ST_OPEN, h, q) == ST_CLOSED:
            status[k] = ST_TEMPCLOSED
    if head[tn] <= tank_hmin[j] + HTOL_SI:
        if t == LT_PUMP:
            if n1[k] == tn:
                status[k] = ST_TEMPCLOSED
        elif cv_status(ST_CLOSED, h, q) == ST_OPEN:
            status[k] = ST_TEMPCLOSED


@njit(cache=True)
def link_status(ltype, n1, n2, status_links, fixed, tank_of_node, tank_hmax, tank_hmin,
                overflow, pump_hmax, status, setting, head, flow):
    """linkstatus: re-open temporarily closed links, then check CVs, pumps (XHEAD above the
    speed-scaled shutoff head), FCVs and links into full/empty tanks."""
    change = False
    for m in range(status_links.shape[0]):
        k = status_links[m]
        t = ltype[k]
        a = n1[k]
        b = n2[k]
        dh = head[a] - head[b]
        s = status[k]
        if s == ST_XHEAD or s == ST_TEMPCLOSED:
            status[k] = ST_OPEN
        if t == LT_CVPIPE:
            status[k] = cv_status(status[k], dh, flow[k])
        if t == LT_PUMP and status[k] >= ST_OPEN and setting[k] > 0.0:
            hmax = pump_hmax[k] * setting[k] ** 2
            if -dh > hmax + HTOL_SI:
                status[k] = ST_XHEAD
        if t == LT_FCV and not np.isnan(setting[k]):
            if head[a] - head[b] < -HTOL_SI or flow[k] < -QTOL_SI:
                status[k] = ST_XFCV
            elif s == ST_XFCV and flow[k] >= setting[k]:
                status[k] = ST_ACTIVE
            else:
                status[k] = s
        if fixed[a] or fixed[b]:
            _tank_link_status(k, ltype, n1, n2, fixed, tank_of_node, tank_hmax, tank_hmin,
                              overflow, status, head, flow)
        if status[k] != s:
            change = True
    return change


@njit(cache=True)
def bad_valve(ltype, valve_links, status):
    """badvalve: an active PRV/PSV/FCV may make the equations inconsistent; open it instead."""
    for m in range(valve_links.shape[0]):
        k = valve_links[m]
        if status[k] == ST_ACTIVE:
            status[k] = ST_XFCV if ltype[k] == LT_FCV else ST_XPRESSURE
            return True
    return False


# -- the GGA trial loop (hydsolve) ---------------------------------------------------------------
GGA_DONE = 0           # converged with no status change, or out of trials
GGA_PSWITCH = 1        # converged: the caller runs the pressure controls (pswitch), then resumes
GGA_SINGULAR = 2       # the matrix is not positive definite and no valve can be opened
GGA_NONFINITE = 3      # the linear solve returned non-finite heads


@njit(cache=True)
def gga_trials(ltype, n1, n2, law, r, km, rel_rough, visc_d, hexp, rqtol, pump_type, pump_h0,
               pump_r, pump_n, curve_id, curve_ptr, curve_x, curve_y, diameter, elevation,
               is_const_hp, emitter_ke, qexp, valve_links, status_links, fixed, tank_of_node,
               tank_hmax, tank_hmin, overflow, pump_hmax,
               row, excluded_link, node_of_pos, cp, ci, cdiag, pos_a, pos_b, pos_ab,
               rp, rj, lp,
               status, setting, flow, emitter_flow, head, demand, fixed_inflow,
               P, Y, w, diag, rhs, xflow, cx, li, lx, dinv, xw, bw, rw, cw,
               accuracy, max_trials, maxtrials, hacc_si, roundoff, checkfreq, maxcheck,
               stop_at_convergence, it, nextcheck, out):
    """EPANET's hydsolve trials from trial ``it``: coefficients, matrix, factorization, solve
    (with one step of iterative refinement), new flows, valve and link status checks, entirely
    compiled. Returns (code, it, nextcheck); ``out`` gets relerr, floor, target and, with
    GGA_PSWITCH, whether the valve/link checks changed a status.

    ``node_of_pos[j]`` is the node of permuted matrix row j; ``cp``/``ci`` the matrix's upper triangle, ``cdiag`` the
    position of each permuted row's diagonal, ``pos_a``/``pos_b``/``pos_ab`` each link's entries."""
    n = node_of_pos.shape[0]
    relerr = out[0]
    floor = out[1]
    target = out[2]
    code = GGA_DONE
    while it <= maxtrials:
        link_coeffs(ltype, status, setting, flow, law, r, km, rel_rough, visc_d, hexp, rqtol,
                    pump_type, pump_h0, pump_r, pump_n, curve_id, curve_ptr, curve_x, curve_y,
                    diameter, P, Y)
        assemble_system(ltype, status, setting, km, flow, n1, n2, row, excluded_link, head,
                        elevation, demand, emitter_ke, emitter_flow, qexp, rqtol, valve_links,
                        P, Y, w, diag, rhs, xflow)
        if n > 0:
            scatter_links(w, pos_a, pos_b, pos_ab, cx)
            for j in range(n):
                ri = row[node_of_pos[j]]
                cx[cdiag[j]] += diag[ri]
                bw[j] = rhs[ri]
            if not chol_numeric(n, cp, ci, cx, rp, rj, lp, li, lx, dinv, xw, cw):
                if bad_valve(ltype, valve_links, status):
                    continue
                code = GGA_SINGULAR
                break
            for j in range(n):
                xw[j] = bw[j]
            chol_solve(n, lp, li, lx, dinv, xw)
            # one step of iterative refinement: CBIG penalties and 1/RQtol conductances make the
            # matrix ill-conditioned; the refinement keeps the round-off in the new flows (P dh;
            # dead ends, near-zero flows) below a 1e-8 accuracy target
            _sym_upper_residual(n, cp, ci, cx, bw, xw, rw)
            chol_solve(n, lp, li, lx, dinv, rw)
            finite = True
            for j in range(n):
                v = xw[j] + rw[j]
                if not np.isfinite(v):
                    finite = False
                head[node_of_pos[j]] = v
            if not finite:
                code = GGA_NONFINITE
                break
        relerr, floor = update_flows(ltype, status, P, Y, n1, n2, row, excluded_link, head,
                                     elevation, is_const_hp, emitter_ke, emitter_flow, qexp, rqtol,
                                     flow, fixed_inflow, hacc_si)
        valve_change = valve_status(ltype, n1, n2, km, elevation, valve_links, status, setting,
                                    head, flow)
        target = max(accuracy, roundoff * floor)
        if relerr <= target:
            if it > max_trials:
                break
            stat_change = valve_change
            if link_status(ltype, n1, n2, status_links, fixed, tank_of_node, tank_hmax,
                           tank_hmin, overflow, pump_hmax, status, setting, head, flow):
                stat_change = True
            if stop_at_convergence:
                out[3] = 1.0 if stat_change else 0.0
                code = GGA_PSWITCH
                break
            if not stat_change:
                break
            nextcheck = it + checkfreq
        elif it <= maxcheck and it == nextcheck:
            link_status(ltype, n1, n2, status_links, fixed, tank_of_node, tank_hmax, tank_hmin,
                        overflow, pump_hmax, status, setting, head, flow)
            nextcheck += checkfreq
        it += 1
    out[0] = relerr
    out[1] = floor
    out[2] = target
    return code, it, nextcheck


# -- connectivity ----------------------------------------------------------------------------------
@njit(cache=True)
def cut_off(n1, n2, use_link, fixed):
    """Nodes in a connected component (over links with ``use_link``) without a fixed-head node."""
    n = fixed.shape[0]
    root = component_labels(n, n1, n2, use_link)
    supplied = np.zeros(n, np.bool_)
    for i in range(n):
        if fixed[i]:
            supplied[root[i]] = True
    out = np.empty(n, np.bool_)
    for i in range(n):
        out[i] = not supplied[root[i]]
    return out
