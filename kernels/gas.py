"""Gas pipe physics for the steady-state Newton solver: friction factors, compressibility, and the
per-pipe terms of the squared-pressure pipe law.

The pipe law (isothermal, as pandapipes states it) multiplied by (p1 + p2):

    p1^2 - p2^2 = C Z_m (lambda L / D + zeta) m|m| - rho_m g (h1 - h2) (p1 + p2)
    C = p_n T / (T_n rho_n A^2)

is linear in pi = p^2 except for the friction factor, Z_m and rho_m. The solver treats Z_m and
rho_m as known from the last iterate (they move slowly), so its matrix stays symmetric; the fixed
point is still the exact solution. Flows are signed (m|m|) and the conductance is floored near
zero flow, so Newton never meets an infinite derivative.
"""

import math

import numpy as np

from numba import njit, prange

# friction law codes
COLEBROOK = 0
NIKURADSE = 1
SWAMEE_JAIN = 2
WEYMOUTH = 3
PANHANDLE_A = 4
PANHANDLE_B = 5
FRICTION_CODES = {"colebrook": COLEBROOK, "nikuradse": NIKURADSE, "swamee-jain": SWAMEE_JAIN,
                  "weymouth": WEYMOUTH, "panhandle-a": PANHANDLE_A, "panhandle-b": PANHANDLE_B}

# compressibility model codes
Z_CONSTANT = 0
Z_LINEAR = 1
Z_PAPAY = 2

LN10 = math.log(10.0)
TWO_OVER_LN10 = 2.0 / LN10
RE_FLOOR = 1e-3


# Halley's steps stop once a step is below this share of x: the error left is then below
# 0.13 |dx|^3 / x^2 (see ``colebrook_x``), 1e-15 of x for ``colebrook``'s 2e-5. The solver's pipe law
# stops at 1e-3 (1.3e-10 of x, lambda to 3e-10: 4e-7 Pa of grid10k's largest drop, against a 1e-3 Pa
# tolerance), which spares a second logarithm whenever its cached start is within ~1e-3.
X_TOL_EXACT = 2e-5
X_TOL_SOLVER = 1e-3
# far from the answer (the solver's first Newton steps) lambda need not be exact: one Halley step
# from a start within a few per cent (error below 0.13 (3e-2)^3 = 3.5e-6 of x) spares the second
# logarithm; every later call refines the cached x again (grid10k: 1.3 ms of the first five calls' 7.6)
X_TOL_LOOSE = 3e-2


@njit(cache=True, inline="always")
def colebrook_x(a, b, x, tol):
    """Colebrook-White in x = 1/sqrt(lambda): the root of g(x) = x + 2 log10(a x + b) (a = 2.51 / Re,
    b = k / (3.71 D)) by Halley's method from ``x`` (> 0), until a step falls below ``tol`` |x|.
    Returns (lambda, Re dlambda/dRe, x). One division and one logarithm per step, one division
    after: with t = ln10 (a x + b) and s = t + 2a, g' = s / t, g'' = -2 ln10 a^2 / t^2."""
    if not (x > 0.0) or x > 1e6:
        x = 1.0
    for _ in range(60):
        arg = a * x + b
        g = x + TWO_OVER_LN10 * math.log(arg)     # log, not log10: libm's log is ~30% faster
        t = LN10 * arg
        s = t + 2.0 * a
        # Halley: dx = 2 g g' / (2 g'^2 - g g'') = g s t / (s^2 + ln10 a^2 g); far from the root (the
        # correction would more than double Newton's) Newton's g / g' = g t / s
        den = s * s + LN10 * a * a * g
        dx = g * s * t / den if den > 0.5 * s * s else g * t / s
        xn = x - dx
        if xn <= 0.0:
            xn = 0.5 * x
        # the error left after a Halley step dx is about |dx|^3 / x^2 (|g''/g'| <= ln10 u^2 < 1/x^2,
        # a x < arg): measured over Re 1e-3..1e8 and k/D 0..0.05 it is at most 0.13 |dx|^3 / x^2, so
        # after a step of 2e-5 |x| it is below 1.1e-15 |x| (5 ulp) without one more log to confirm it
        if abs(xn - x) <= tol * abs(xn):
            x = xn
            break
        x = xn
    # lambda = 1 / x^2 and, implicitly from g(x, Re) = 0, Re dlambda/dRe = -4 a lambda / s at the
    # final x: both from one division
    s = LN10 * (a * x + b) + 2.0 * a
    q = 1.0 / (x * x * s)
    return q * s, -4.0 * a * q, x


@njit(cache=True)
def colebrook(re, rel_rough, guess):
    """Darcy friction factor from Colebrook-White, 1/sqrt(l) = -2 log10(2.51/(Re sqrt(l)) + k/(3.71 D)),
    to machine precision, from ``guess`` (a previous lambda) when positive, else from Swamee-Jain
    (no default arguments: numba's cache mishandles them). Returns (lambda, dlambda/dRe)."""
    if re <= 0.0:
        return 0.0, 0.0
    if re < RE_FLOOR:
        # Colebrook's lambda grows like (2.51/Re)^2 as Re -> 0, so lambda m|m| would jump at zero
        # flow; below Re 1e-3 continue it as a 1/Re law (continuous, finite slope). pandapipes
        # itself drops to Nikuradse below Re 1e-8.
        lam1, _ = colebrook(RE_FLOOR, rel_rough, 0.0)
        lam = lam1 * RE_FLOOR / re
        return lam, -lam / re
    lam, re_dlam, _ = colebrook_x(2.51 / re, rel_rough / 3.71, _colebrook_start(re, rel_rough, guess),
                                  X_TOL_EXACT)
    return lam, re_dlam / re


@njit(cache=True, inline="always")
def _colebrook_start(re, rel_rough, guess):
    """x = 1/sqrt(lambda) to start Halley from: the guess's, else Swamee-Jain's."""
    if guess > 0.0:
        return 1.0 / math.sqrt(guess)
    return 2.0 * abs(math.log10(rel_rough / 3.7 + 5.74 / re ** 0.9))


@njit(cache=True)
def turbulent_factor(law, re, d_m, k_m, guess):
    """Darcy friction factor of the chosen law and d(lambda)/dRe, at any Reynolds number."""
    lam = 0.0
    dlam = 0.0
    if law == COLEBROOK:
        lam, dlam = colebrook(re, k_m / d_m, guess)
    elif law == NIKURADSE:
        lam = 1.0 / (2.0 * math.log10(d_m / k_m) + 1.14) ** 2
    elif law == SWAMEE_JAIN:
        if re > 0.0:
            t = k_m / (3.7 * d_m) + 5.74 / re ** 0.9
            lg = math.log10(t)
            lam = 0.25 / (lg * lg)
            dt = -0.9 * 5.74 / re ** 1.9
            dlam = -0.5 / (lg * lg * lg) * dt / (t * LN10)
    elif law == WEYMOUTH:
        lam = 0.0094064 / d_m ** (1.0 / 3.0)      # 0.032 / D_in^(1/3), Darcy
    elif law == PANHANDLE_A:
        if re > 0.0:
            lam = 0.0768 * re ** -0.1461
            dlam = -0.1461 * lam / re
    elif law == PANHANDLE_B:
        if re > 0.0:
            lam = 0.00359 * re ** -0.03922
            dlam = -0.03922 * lam / re
    return lam, dlam


RE_LAMINAR = 2000.0
RE_TURBULENT = 4000.0


@njit(cache=True)
def friction_factor(law, re, d_m, k_m, laminar_switch, guess):
    """Darcy friction factor and its derivative with respect to Re for the chosen law.

    ``laminar_switch``: Hagen-Poiseuille 64/Re below Re 2000, the law above 4000, and a linear
    blend between (continuous, as EPANET bridges the same gap). pandapipes' reference runs use
    Colebrook at every Re (switch off)."""
    if not laminar_switch or re >= RE_TURBULENT:
        return turbulent_factor(law, re, d_m, k_m, guess)
    if re <= 0.0:
        return 0.0, 0.0
    if re <= RE_LAMINAR:
        lam = 64.0 / re
        return lam, -lam / re
    lam_t, _ = turbulent_factor(law, RE_TURBULENT, d_m, k_m, guess)
    lam_l = 64.0 / RE_LAMINAR
    w = (re - RE_LAMINAR) / (RE_TURBULENT - RE_LAMINAR)
    return lam_l + w * (lam_t - lam_l), (lam_t - lam_l) / (RE_TURBULENT - RE_LAMINAR)


@njit(cache=True)
def compressibility(model, p_pa, z_const, offset, slope_per_pa, ppc_pa, tpc_k, t_k):
    """Z(p) and dZ/dp. Linear as pandapipes uses; Papay's correlation for transmission pressures."""
    if model == Z_CONSTANT:
        return z_const, 0.0
    if model == Z_LINEAR:
        return offset + slope_per_pa * p_pa, slope_per_pa
    pr = p_pa / ppc_pa
    tr = t_k / tpc_k
    a = 3.52 * math.exp(-2.260 * tr)
    b = 0.274 * math.exp(-1.878 * tr)
    return 1.0 - a * pr + b * pr * pr, (-a + 2.0 * b * pr) / ppc_pa


@njit(cache=True)
def mean_pressure(p1, p2):
    """Mean pressure of a gas pipe, 2/3 (p1^3 - p2^3) / (p1^2 - p2^2)."""
    if abs(p1 - p2) <= 1e-12 * (p1 + p2):
        return 0.5 * (p1 + p2)
    # (p1^3 - p2^3) / (p1^2 - p2^2) = (p1^2 + p1 p2 + p2^2) / (p1 + p2), no cancellation
    return 2.0 / 3.0 * (p1 * p1 + p1 * p2 + p2 * p2) / (p1 + p2)


@njit(cache=True, inline="always")
def pipe_term(m, p1, p2, dz_m, d, l_m, k_m, zeta, law, laminar_switch, efficiency, eta, rho_n, p_n, t_n, t_k, g,
              z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi, x_guess, x_tol):
    """One pipe's (phi, dphi/dm, Colebrook's x = 1/sqrt(lambda) for the next call's start): see
    ``pipe_terms``."""
    inv_d = 1.0 / d
    area = 0.25 * math.pi * d * d
    inv_area = (4.0 / math.pi) * inv_d * inv_d
    re_per_kg_s = (4.0 / (math.pi * eta)) * inv_d     # Re per unit |m|: D / (eta A)
    l_d = l_m * inv_d
    ma = abs(m)
    re = ma * re_per_kg_s
    x_out = x_guess
    lin = 0.0
    lam = 0.0
    re_dlam = 0.0       # Re dlambda/dRe: d(lambda)/d|m| |m|, no division by Re
    if laminar_switch and re <= RE_LAMINAR:
        # Hagen-Poiseuille: lambda m|m| = 64 (eta A / D) m, linear, no division by Re
        lin = 64.0 * eta * area * inv_d
    elif law == COLEBROOK and re < RE_FLOOR and not laminar_switch:
        # linear continuation of Colebrook near zero flow (see ``colebrook``): lambda m|m|
        # = lambda(Re_floor) Re_floor (eta A / D) m, computed without dividing by Re
        lam1, _ = colebrook(RE_FLOOR, k_m * inv_d, 0.0)
        lin = lam1 * RE_FLOOR * eta * area * inv_d
    elif law == COLEBROOK and (not laminar_switch or re >= RE_TURBULENT):
        start = x_guess if x_guess > 0.0 else _colebrook_start(re, k_m * inv_d, 0.0)
        lam, re_dlam, x_out = colebrook_x(2.51 / re, k_m * inv_d * (1.0 / 3.71), start, x_tol)
    else:
        lam, dlam_dre = friction_factor(law, re, d, k_m, laminar_switch, 0.0)
        re_dlam = dlam_dre * re
    inv_eff2 = 1.0 / (efficiency * efficiency)
    pm = mean_pressure(p1, p2)
    z_m, _ = compressibility(z_model, pm, z_const, z_offset, z_slope, ppc, tpc, t_k)
    c = (p_n * t_k / (t_n * rho_n)) * z_m * inv_area * inv_area
    f = lam * inv_eff2 * l_d + zeta
    lin_l = lin * inv_eff2 * l_d
    phi = c * (f * m * ma + lin_l * m)
    der = c * (2.0 * f * ma + re_dlam * inv_eff2 * l_d * ma + lin_l)
    if dz_m != 0.0:
        z1, _ = compressibility(z_model, p1, z_const, z_offset, z_slope, ppc, tpc, t_k)
        z2, _ = compressibility(z_model, p2, z_const, z_offset, z_slope, ppc, tpc, t_k)
        # mean of the end densities, rho_n T_n p / (p_n T Z)
        rho_m = 0.5 * rho_n * t_n / (p_n * t_k) * (p1 * z2 + p2 * z1) / (z1 * z2)
        phi -= rho_m * g * dz_m * (p1 + p2)
    if der < min_dphi:
        der = min_dphi
    return phi, der, x_out


@njit(cache=True, parallel=True)
def pipe_terms(m, p1, p2, dz_m, d_m, l_m, k_m, zeta, law, laminar_switch, efficiency,
               eta, rho_n, p_n, t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc,
               min_dphi, x_cache, x_tol, phi, dphi):
    """For every pipe: phi(m) = p1^2 - p2^2 as the pipe law gives it at flow m (with Z_m and rho_m
    from the current pressures), and dphi/dm (floored at ``min_dphi`` so zero flow stays finite).

    dz_m = h_from - h_to. Writes into ``phi`` and ``dphi``; ``x_cache`` holds each pipe's last
    Colebrook x = 1/sqrt(lambda) (0 = none) and is updated, so Halley's iteration starts close;
    it stops after a step below ``x_tol`` of x (``X_TOL_SOLVER``; ``X_TOL_LOOSE`` far from the
    answer). Pipes are independent: both cores share them (``pipe_terms_serial`` is the same on one thread)."""
    for k in prange(m.shape[0]):
        phi[k], dphi[k], x_cache[k] = pipe_term(
            m[k], p1[k], p2[k], dz_m[k], d_m[k], l_m[k], k_m[k], zeta[k], law, laminar_switch, efficiency, eta,
            rho_n, p_n, t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi[k], x_cache[k], x_tol)


@njit(cache=True)
def pipe_terms_serial(m, p1, p2, dz_m, d_m, l_m, k_m, zeta, law, laminar_switch, efficiency,
                      eta, rho_n, p_n, t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc,
                      min_dphi, x_cache, x_tol, phi, dphi):
    """``pipe_terms`` on the calling thread: below ``PARALLEL_PIPES`` pipes waking the second
    core costs more than it saves, and on a loaded machine (a twin beside its flow) far more
    (Schutterwald's 2,559 pipes: 31 ms threaded vs 4.7 ms serial per solve, measured)."""
    for k in range(m.shape[0]):
        phi[k], dphi[k], x_cache[k] = pipe_term(
            m[k], p1[k], p2[k], dz_m[k], d_m[k], l_m[k], k_m[k], zeta[k], law, laminar_switch, efficiency, eta,
            rho_n, p_n, t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi[k], x_cache[k], x_tol)


PARALLEL_PIPES = 50_000


@njit(cache=True)
def real_density(p, rho_n, p_n, t_n, t_k, z_model, z_const, z_offset, z_slope, ppc, tpc, out):
    """Gas density at pressure p (absolute) and temperature t_k."""
    for i in range(p.shape[0]):
        z, _ = compressibility(z_model, p[i], z_const, z_offset, z_slope, ppc, tpc, t_k)
        out[i] = rho_n * t_n * p[i] / (p_n * t_k * z)




@njit(cache=True)
def pipe_law(m, p, fr, to, pipes, dz_m, d_m, l_m, k_m, zeta, law, laminar_switch, efficiency, eta, rho_n,
             p_n, t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi, x_cache, x_tol, phi, dphi):
    """``pipe_terms`` for the links ``pipes`` at node pressures ``p`` and link flows ``m``, plus how
    far the iterate is from the pipe law: returns (max |p1^2 - p2^2 - phi| / (p1 + p2), max |p1 - p2|)
    in Pa. One call per Newton step, so the solver gathers nothing in Python."""
    npipe = pipes.shape[0]
    mp = np.empty(npipe)
    p1 = np.empty(npipe)
    p2 = np.empty(npipe)
    for t in range(npipe):
        k = pipes[t]
        mp[t] = m[k]
        p1[t] = p[fr[k]]
        p2[t] = p[to[k]]
    if npipe >= PARALLEL_PIPES:
        pipe_terms(mp, p1, p2, dz_m, d_m, l_m, k_m, zeta, law, laminar_switch, efficiency, eta, rho_n, p_n, t_n,
                   t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi, x_cache, x_tol, phi, dphi)
    else:
        pipe_terms_serial(mp, p1, p2, dz_m, d_m, l_m, k_m, zeta, law, laminar_switch, efficiency, eta, rho_n, p_n,
                          t_n, t_k, g, z_model, z_const, z_offset, z_slope, ppc, tpc, min_dphi, x_cache, x_tol, phi, dphi)
    law_res = 0.0
    dp_scale = 0.0
    for t in range(npipe):
        a = p1[t]
        b = p2[t]
        r = abs(a * a - b * b - phi[t]) / max(a + b, 1.0)
        if r > law_res:
            law_res = r
        if abs(a - b) > dp_scale:
            dp_scale = abs(a - b)
    return law_res, dp_scale


# link modes of one Newton step (``gga_coefficients``)
MODE_PIPE = 0       # pipe law: P = 1 / phi', Y = phi / phi'
MODE_OPEN = 1       # lossless link (open valve, short pipe, open regulator): a large conductance
MODE_CLOSED = 2     # closed regulator or compressor: a tiny conductance
MODE_NONE = 3       # no conductance: an active regulator/compressor (its outlet pinned) or an unused link


@njit(cache=True)
def gga_coefficients(mode, pipe_slot, m, phi, dphi, g_open, g_closed, P, Y, a):
    """Each link's conductance P, Y = P phi and a = m - Y (the GGA's linearised link law
    m_new = a + P (pi_from - pi_to)). ``pipe_slot[k]`` is link k's index into phi/dphi."""
    for k in range(m.shape[0]):
        md = mode[k]
        if md == MODE_PIPE:
            t = pipe_slot[k]
            P[k] = 1.0 / dphi[t]
            Y[k] = phi[t] / dphi[t]
        elif md == MODE_OPEN:
            P[k] = g_open
            Y[k] = m[k]          # phi = m / g, Y = P phi = m
        elif md == MODE_CLOSED:
            P[k] = g_closed
            Y[k] = m[k]
        else:
            P[k] = 0.0
            Y[k] = 0.0
        a[k] = m[k] - Y[k]


@njit(cache=True)
def gga_rhs(fr, to, a, P, pi_known, demand, rhs):
    """Right-hand side of the node balances over all nodes: -demand minus the net outflow of the
    known parts (a, and P times the squared pressure of fixed or pinned neighbours)."""
    for i in range(demand.shape[0]):
        rhs[i] = -demand[i]
    for k in range(fr.shape[0]):
        i = fr[k]
        j = to[k]
        rhs[i] -= a[k] - P[k] * pi_known[j]
        rhs[j] += a[k] + P[k] * pi_known[i]


@njit(cache=True)
def gga_flows(fr, to, a, P, pi, link_on, m_new):
    """New link flows from the new squared pressures; zero on unused links."""
    for k in range(fr.shape[0]):
        m_new[k] = a[k] + P[k] * (pi[fr[k]] - pi[to[k]]) if link_on[k] else 0.0


@njit(cache=True)
def gga_pressures(pi, supplied, free, p_old, p_new):
    """p = sqrt(pi) (floored at 1 Pa, 0 where unsupplied). Returns (max |p_new - p_old| over the
    supplied nodes, the number of free nodes whose pi fell below 1 Pa^2)."""
    dp_max = 0.0
    vacuum = 0
    for i in range(pi.shape[0]):
        if supplied[i]:
            p_new[i] = math.sqrt(max(pi[i], 1.0))
            d = abs(p_new[i] - p_old[i])
            if d > dp_max:
                dp_max = d
        else:
            p_new[i] = 0.0
        if free[i] and pi[i] < 1.0:
            vacuum += 1
    return dp_max, vacuum


@njit(cache=True)
def settle_reversals(pipes, m_old, m_new, re_unit, re_edge, re_plateau, flipped_before, ever_settled):
    """Colebrook at every Re (pandapipes' law) makes lambda m|m| nearly a step at zero flow: flat
    (about 6.3 (eta A / D)^2 per unit length, whatever the flow) up to Re ~ 3, then steep through
    the linear segment below ``re_edge``. When a pipe's answer lies on that steep segment, a Newton
    step taken on the flat side jumps over it to the other flat side and back, forever. A pipe that
    reverses on two steps running, both times within ``re_plateau``, is put at zero flow: there the
    linearisation is the steep segment's own, and the next step lands on its answer.

    ``re_unit[t]`` is the flow of pipe slot t at Re 1; ``flipped_before`` (per slot) is read and
    updated; ``ever_settled[t]`` is set for each pipe put at zero. Returns how many were."""
    settled = 0
    for t in range(pipes.shape[0]):
        k = pipes[t]
        a = m_old[k]
        b = m_new[k]
        lim = re_plateau * re_unit[t]
        flip = a * b < 0.0 and abs(a) < lim and abs(b) < lim and max(abs(a), abs(b)) > re_edge * re_unit[t]
        if flip and flipped_before[t]:
            m_new[k] = 0.0
            ever_settled[t] = True
            settled += 1
            flip = False
        flipped_before[t] = flip
    return settled


@njit(cache=True, inline="always")
def _relative_change(a, b):
    """|a - b| / max(|a|, |b|), 0 where both are 0, 1 (or more) where either is not finite."""
    s = max(abs(a), abs(b))
    if s == 0.0:
        return 0.0
    r = abs(a - b) / s
    return r if r == r else 1.0


@njit(cache=True)
def max_relative_change(w, w_ref):
    """max |w - w_ref| / max(|w|, |w_ref|): how far conductances moved from a factorized set. When
    it is below 1 the old matrix is within that share of the new one in every direction (both
    are sums of the same non-negative rank-one terms), so a step with the old factorization still
    contracts. Non-finite values count as 1."""
    worst = 0.0
    for k in range(w.shape[0]):
        worst = max(worst, min(_relative_change(w[k], w_ref[k]), 1.0))
    return worst


@njit(cache=True)
def count_changed(w, w_ref, rel):
    """How many conductances moved by more than ``rel`` (|w - w_ref| / max(|w|, |w_ref|)) from a
    factorized set: with few of them, the old factorization preconditions the new matrix into
    the identity but for that many eigenvalues. Non-finite values count as moved."""
    count = 0
    for k in range(w.shape[0]):
        if not _relative_change(w[k], w_ref[k]) <= rel:
            count += 1
    return count
