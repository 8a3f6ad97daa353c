"""Leak detection and localization on the fitted no-leak twin.

Every tick adds the sensors' residuals (measured minus twin) to the current window (an hour by
default); a closed window gives two estimates of a leak's flow:

- the zone balance: what the meters at the network's inlets (sources, reservoirs, tanks) show
  beyond what the twin's demand needs, and
- the pressures: the residual shift along the signature of a leak spread like the demand
  (a leak anywhere lowers the pressures roughly the way extra demand does).

Both are taken against a baseline learnt over the first ``warmup_s`` of the stream (a whole day
by default, so that it spans the daily cycle of demand and noise): a constant
offset per sensor and one demand-scale error theta (the twin's demand model is right in shape but
a district's consumers can run a few per cent above or below it all day; that error scales with
the demand, a leak does not). Their noise is learnt there too; the balance's variance as a part
that does not scale with the demand (meters) plus the consumers' own randomness, which grows as
the sum of their squared demands, so the quiet night hours weigh most, as a night-minimum
analysis does.
Each estimate, standardised, feeds a one-sided CUSUM whose threshold gives the stated
``false_alarms_per_year`` over the two (Siegmund's approximation, Bonferroni over the pair).

When one fires, the leak's start is where that CUSUM last left zero; from then on each window
refines the location: the mean residual shift since the start is compared with every node's
signature (``twin.leaks.localize``) and the alert carries the top candidates, the search area,
the estimated flow and start time, and the evidence. A third CUSUM watches for the leak's end
(repaired): on the statistic that fired, from the level mu it has held since the start down to
zero (reference mu/2, same threshold); when it fires the alarm closes, its findings stop (the
flow's alert clears) and all CUSUMs restart from zero, so a later leak opens a new alarm.

What the residuals are taken against (docs/leaks.md): the twin that knows only the demand model,
never the leak. Offline (``pipetwin bench leaks``) the replay twin is that twin. In the live flow
the fitted twin moves its zone multipliers every tick to the gate flows and pressures, so it
absorbs a leak as extra demand; there the detector is given a ``prior`` (``PriorTwin``: base
demand x the daily load profile at that time of day) and takes every residual against it. The
demand model's own error is the baseline's theta and offsets, learnt before any alarm and frozen
after: the "multipliers frozen at their pre-alarm baseline", one shared scale instead of one per
zone, as on the bench. Same parameters as the bench; the live default windows are an hour and the
baseline a day, so the flow raises no leak alarm during its first day.
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.stats import chi2

from pipetwin.flows.contracts import Candidate, TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector
from pipetwin.flows.steps.twin import PriorTwin
from pipetwin.twin.leaks.cusum import cusum_step, cusum_threshold
from pipetwin.twin.leaks.localize import (Ranking, fit_candidates, most_central, rank_candidates, ranking_from_fit,
                                          search_area, shrunk_correlation)
from pipetwin.twin.leaks.nonlinear import LeakResponder
from pipetwin.twin.leaks.signature import FLOW, PRESSURE, signatures
from pipetwin.twin.model import NetworkModel, NodeKind

HOURS_PER_YEAR = 8766.0


def _variance_model(e2: np.ndarray, demand_sq: np.ndarray) -> tuple[float, float]:
    """var = a0 + a1 sum_i d_i^2 (a0, a1 >= 0) fitted to squared errors: meter noise and model
    error that do not scale with demand, plus each consumer's own randomness (independent
    consumers with a relative spread add up as the sum of their squared demands)."""
    x = np.column_stack([np.ones(len(e2)), demand_sq])
    best = None
    for cols in ([0, 1], [0], [1]):
        coef = np.zeros(2)
        coef[cols] = np.linalg.lstsq(x[:, cols], e2, rcond=None)[0]
        if (coef >= 0).all():
            sse = float(((x @ coef - e2) ** 2).sum())
            if best is None or sse < best[0]:
                best = (sse, coef)
    return (float(best[1][0]), float(best[1][1])) if best else (float(np.mean(e2)), 0.0)


class LeakDetector(TickDetector):
    """``kind``/``element``: per twin-state sensor (``TwinState.sensor_ids`` order), PRESSURE at a
    node index or FLOW in a link index (``TwinUpdater.kind`` / ``.element``).

    ``pressure_sigma_pa`` and ``flow_sigma_rel``: each sensor's own noise (one sample), the floor
    under the learnt noise; ``false_alarms_per_year``: the stated rate on a leak-free network, held
    with ``noise_confidence`` against the chance that the baseline underestimated the noise.
    Localization: ``correlated_noise`` whitens the residuals with the sensors' noise correlation
    learnt on the baseline; ``refine_top`` candidates are re-solved with their leak (at
    ``refine_windows`` states) when the linear fit is inconsistent with the noise;
    ``central_first`` puts the candidate nearest to the likely ones (along the pipes) first.
    ``prior``: the demand-model twin whose estimates replace the fitted ones (the live flow);
    None when the states already come from such a twin (the bench)."""

    def __init__(self, model: NetworkModel, kind: np.ndarray, element: np.ndarray, *, window_s: float = 3600.0,
                 warmup_s: float = 24 * 3600.0, false_alarms_per_year: float = 1.0, k: float = 0.5,
                 pressure_sigma_pa: float = 50.0, flow_sigma_rel: float = 0.005, noise_confidence: float = 0.99,
                 n_candidates: int = 10, max_windows: int = 96, refine_top: int = 15, refine_windows: int = 3,
                 correlated_noise: bool = True, central_first: bool = True, prior: PriorTwin | None = None):
        if len(kind) != len(element):
            raise ValueError(f"LeakDetector: {len(kind)} sensor kinds but {len(element)} elements")
        self.model = model
        self.prior = prior
        self.kind = np.asarray(kind, np.int8)
        self.element = np.asarray(element, np.int64)
        self.window_s, self.warmup_s = window_s, warmup_s
        self.false_alarms_per_year, self.k = false_alarms_per_year, k
        self.pressure_sigma_pa, self.flow_sigma_rel = pressure_sigma_pa, flow_sigma_rel
        self.n_candidates, self.max_windows = n_candidates, max_windows
        self.noise_confidence = noise_confidence
        self.refine_top, self.refine_windows = refine_top, refine_windows
        self.correlated_noise, self.central_first = correlated_noise, central_first
        self._responder = None
        # two CUSUMs, each with half the stated false-alarm rate; ARL0 in windows
        arl0 = 2.0 * HOURS_PER_YEAR * 3600.0 / window_s / max(false_alarms_per_year, 1e-9)
        self.h = cusum_threshold(k, arl0)
        fixed = np.isin(model.nodes.kind, (NodeKind.SOURCE, NodeKind.TANK))
        fr, to = model.links.from_node, model.links.to_node
        self.inlet_sign = np.zeros(len(self.kind))
        for s in np.flatnonzero(self.kind == FLOW):
            e = self.element[s]
            if fixed[fr[e]] != fixed[to[e]]:
                self.inlet_sign[s] = 1.0 if fixed[fr[e]] else -1.0
        self.is_p = self.kind == PRESSURE
        self._cache: dict = {}
        self.reset()

    @classmethod
    def for_points(cls, model: NetworkModel, points, **options) -> "LeakDetector":
        """The detector over a point table's pressure and flow points, in the order ``TwinUpdater``
        puts them in ``TwinState.sensor_ids``."""
        q = np.array(points.quantity)
        rows = np.flatnonzero((q == "pressure") | (q == "flow"))
        return cls(model, np.where(q[rows] == "pressure", PRESSURE, FLOW), points.element_index[rows], **options)

    def reset(self) -> None:
        """Forget everything learnt (a new baseline starts with the next tick)."""
        self.t0_ns: int | None = None
        self.acc = None                    # current window: sums, counts, ticks, mid state
        self.windows: list[dict] = []      # closed windows, oldest first
        self.base: dict | None = None      # learnt baseline
        self.s_bal = self.s_prs = 0.0
        self.zero_bal = self.zero_prs = None   # window index where each CUSUM last left zero
        self.alarm: dict | None = None
        self.s_clear = 0.0                 # CUSUM for the open alarm's leak having stopped

    # -- per tick ---------------------------------------------------------------------------------
    def learn_one(self, state: TwinState) -> None:
        if len(state.sensor_measured) != len(self.kind):
            raise ValueError(f"LeakDetector: the twin state of {state.network} has {len(state.sensor_measured)} "
                             f"sensors, the detector was built for {len(self.kind)}")
        if self.prior is not None:
            state = self.prior.state(state)
        if self.t0_ns is None:
            self.t0_ns = state.ts_ns
        w_ns = int(self.window_s * 1e9)
        index = (state.ts_ns - self.t0_ns) // w_ns
        if self.acc is not None and index != self.acc["index"]:
            self._close(self.acc)
            self.acc = None
        r = state.residual
        ok = np.isfinite(r)
        if self.acc is None:
            self.acc = {"index": int(index), "sum": np.zeros(len(r)), "n": np.zeros(len(r)), "ticks": 0,
                        "inflow": 0.0, "demand": np.zeros(len(state.node_demand)), "mid": None,
                        "end_ns": int(self.t0_ns + (index + 1) * w_ns)}
        a = self.acc
        a["sum"][ok] += r[ok]
        a["n"][ok] += 1
        a["ticks"] += 1
        a["inflow"] += float(np.nansum(self.inlet_sign * state.sensor_measured))
        a["demand"] += np.maximum(state.node_demand, 0)
        if a["mid"] is None and state.ts_ns >= a["end_ns"] - w_ns // 2:
            a["mid"] = (state.node_pressure_pa.copy(), state.link_flow.copy(), state.node_demand.copy())

    def _close(self, a: dict) -> None:
        if a["mid"] is None or a["ticks"] == 0:
            return
        p, q, d = a["mid"]
        sig = signatures(self.model, p, q, self.kind, self.element, cache=self._cache)
        mean = np.where(a["n"] > 0, a["sum"] / np.maximum(a["n"], 1), np.nan)
        demand = a["demand"] / a["ticks"]
        win = {"index": a["index"], "end_ns": a["end_ns"], "r": mean, "sig": sig, "j": sig @ np.maximum(d, 0),
               "demand": float(demand.sum()), "demand_sq": float((demand ** 2).sum()),
               "inflow": a["inflow"] / a["ticks"], "ticks": a["ticks"], "mid": a["mid"]}
        self.windows.append(win)
        if self.base is None:
            if (a["end_ns"] - self.t0_ns) >= self.warmup_s * 1e9 and len(self.windows) >= 4:
                self.base = self._baseline(self.windows)
            return
        self._test(win)
        if len(self.windows) > self.max_windows:
            self.windows = self.windows[-self.max_windows:]

    # -- baseline ---------------------------------------------------------------------------------
    def _sensor_floor(self, win: dict) -> np.ndarray:
        """Each sensor's own noise on a window mean."""
        flow_scale = abs(win["inflow"]) if win["inflow"] != 0 else 1.0
        one = np.where(self.is_p, self.pressure_sigma_pa, self.flow_sigma_rel * flow_scale)
        return one / np.sqrt(max(win["ticks"], 1))

    def _pressure_estimate(self, z: np.ndarray, win: dict, sigma: np.ndarray) -> float:
        """Leak flow along the demand-shaped signature, from the pressures alone."""
        u = win["j"] / max(win["demand"], 1e-300)
        use = self.is_p & np.isfinite(z) & (sigma > 0)
        w = 1.0 / sigma[use] ** 2
        den = float((u[use] ** 2 * w).sum())
        return float((u[use] * z[use] * w).sum() / den) if den > 0 else 0.0

    def _baseline(self, wins: list[dict]) -> dict:
        r = np.array([w["r"] for w in wins])
        j = np.array([w["j"] for w in wins])
        floor = np.array([self._sensor_floor(w) for w in wins]).mean(0)
        # theta: one demand-scale error shared by all sensors, with a free offset per sensor
        rc = r - np.nanmean(r, 0)
        jc = j - j.mean(0)
        w = 1.0 / floor ** 2
        ok = np.isfinite(rc)
        num = float(np.nansum(np.where(ok, rc * jc, 0.0) * w))
        den = float(np.sum(np.where(ok, jc * jc, 0.0) * w))
        theta = num / den if den > 0 else 0.0
        offset = np.nanmean(r - theta * j, 0)
        resid = r - offset - theta * j
        sigma = np.maximum(np.sqrt(np.nanmean(resid ** 2, 0)), floor)
        sigma = np.where(np.isfinite(sigma), sigma, floor)
        base = {"theta": theta, "offset": offset, "sigma": sigma, "corr": shrunk_correlation(resid / sigma)}
        # the two leak-flow estimates over the baseline: their noise
        bal = np.array([float(np.nansum(self.inlet_sign * z)) for z in resid])
        dem = np.array([w["demand_sq"] for w in wins])
        prs = np.array([self._pressure_estimate(z, w, sigma) for z, w in zip(resid, wins)])
        flow_floor = np.array([self.flow_sigma_rel * abs(w["inflow"]) / np.sqrt(max(w["ticks"], 1)) for w in wins])
        base["var_bal"] = _variance_model(np.maximum(bal ** 2, flow_floor ** 2), dem)
        base["sigma_prs"] = float(np.sqrt(np.mean(prs ** 2))) if self.is_p.any() else np.inf
        base["windows"] = len(wins)
        # a noise level learnt from n windows is itself uncertain: take its upper confidence bound,
        # so the stated false-alarm rate holds even for a baseline that happened to be quiet
        n = len(wins)
        base["inflate"] = float(np.sqrt((n - 1) / chi2.ppf(1.0 - self.noise_confidence, n - 1))) if n > 1 else 3.0
        return base

    # -- the test ---------------------------------------------------------------------------------
    def _test(self, win: dict) -> None:
        b = self.base
        z = win["r"] - b["offset"] - b["theta"] * win["j"]
        win["z"] = z
        q_bal = float(np.nansum(self.inlet_sign * z)) if (self.inlet_sign != 0).any() else np.nan
        a0, a1 = b["var_bal"]
        sd_bal = float(np.sqrt(a0 + a1 * win["demand_sq"])) * b["inflate"]
        q_prs = self._pressure_estimate(z, win, b["sigma"])
        z_bal = q_bal / sd_bal if np.isfinite(q_bal) and sd_bal > 0 else 0.0
        z_prs = q_prs / (b["sigma_prs"] * b["inflate"]) if np.isfinite(b["sigma_prs"]) and b["sigma_prs"] > 0 else 0.0
        win.update(q_bal=q_bal, sd_bal=sd_bal, q_prs=q_prs, z_bal=z_bal, z_prs=z_prs)
        if self.s_bal == 0.0:
            self.zero_bal = win["index"]
        if self.s_prs == 0.0:
            self.zero_prs = win["index"]
        self.s_bal = cusum_step(self.s_bal, z_bal, self.k)
        self.s_prs = cusum_step(self.s_prs, z_prs, self.k)
        win.update(s_bal=self.s_bal, s_prs=self.s_prs)
        if self.alarm is None:
            fired = [(s, z0) for s, z0 in ((self.s_bal, self.zero_bal), (self.s_prs, self.zero_prs)) if s > self.h]
            if fired:
                start_index = min(z0 for _, z0 in fired)
                self.alarm = {"opened_ns": win["end_ns"], "start_index": start_index, "first_index": start_index,
                              "start_ns": int(self.t0_ns + start_index * self.window_s * 1e9),
                              "by": "balance" if self.s_bal > self.h else "pressure"}
        if self.alarm is not None:
            self._localize()
            key = "z_bal" if self.alarm["by"] == "balance" else "z_prs"
            since = [w[key] for w in self.windows if "z" in w and w["index"] >= self.alarm["start_index"]]
            mu = max(float(np.mean(since)), 2.0 * self.k)
            self.s_clear = cusum_step(self.s_clear, mu - win[key], mu / 2.0)
            if self.s_clear > self.h:             # the leak is gone (repaired): close, watch afresh
                self.alarm = None
                self.s_bal = self.s_prs = self.s_clear = 0.0

    def _refine_start(self) -> None:
        """The start that best explains the tested windows as a step of unknown size: argmax over
        t of (sum of z since t)^2 / (windows since t), z of the CUSUM that fired, t searched from a
        day before that CUSUM's last zero (the classic estimate, which noise before the leak can
        pull early) to now."""
        al = self.alarm
        key = "z_bal" if al["by"] == "balance" else "z_prs"
        tested = [w for w in self.windows if "z" in w and w["index"] >= al["first_index"] - 24]
        z = np.array([w[key] for w in tested])
        tail = np.cumsum(z[::-1])[::-1]
        n = np.arange(len(z), 0, -1)
        glr = np.where(tail > 0, tail ** 2 / n, -np.inf)
        best = int(np.argmax(glr))
        al["start_index"] = tested[best]["index"]
        al["start_ns"] = int(self.t0_ns + al["start_index"] * self.window_s * 1e9)

    def _localize(self) -> None:
        al = self.alarm
        self._refine_start()
        since = [w for w in self.windows if w["index"] >= al["start_index"] and "z" in w]
        if not since:
            return
        z = np.nanmean(np.array([w["z"] for w in since]), 0)
        sig = np.mean(np.array([self._signature(w) for w in since]), 0)
        sigma = self.base["sigma"] / np.sqrt(len(since))
        cand = np.flatnonzero(np.abs(sig[self.is_p]).sum(0) > 0) if self.is_p.any() else \
            np.flatnonzero(np.abs(sig).sum(0) > 0)
        corr = self.base["corr"] if self.correlated_noise else None
        rank = rank_candidates(z, sigma, sig, cand, corr=corr)
        # the tangent is trusted while its best fit is consistent with the noise (chi2 within
        # 3 sigma of its degrees of freedom); beyond, the best few are re-solved with their leak
        dof = max(int((np.isfinite(z) & (sigma > 0)).sum()) - 1, 1)
        if self.refine_top > 0 and rank.chi2[0] > dof + 3.0 * np.sqrt(2.0 * dof):
            rank = self._refine(rank, z, sigma, corr, since)
        if self.central_first:
            rank = most_central(self.model, rank)
        al["ranking"] = rank
        al["area"] = search_area(self.model, rank)
        al["flow"] = float(np.mean([w["q_bal"] for w in since])) if np.isfinite(since[0]["q_bal"]) else \
            float(rank.flow[0])
        al["flow_fit"] = float(rank.flow[0])
        al["windows"] = len(since)

    def _signature(self, win: dict) -> np.ndarray:
        """The window's sensitivity signatures, recomputed from its mid state after a restore
        (snapshots leave them out: a megabyte per window on a city network)."""
        if "sig" not in win:
            p, q, _ = win["mid"]
            win["sig"] = signatures(self.model, p, q, self.kind, self.element, cache=self._cache)
        return win["sig"]

    def _refine(self, rank: Ranking, z: np.ndarray, sigma: np.ndarray, corr, since: list[dict]) -> Ranking:
        """Re-score the best ``refine_top`` candidates on the exact (re-solved) shifts of their
        fitted leak, at ``refine_windows`` states spread over the leak's windows."""
        m = min(self.refine_top, len(rank.nodes))
        top, q = rank.nodes[:m], np.maximum(rank.flow[:m], 1e-9)
        pick = np.unique(np.linspace(0, len(since) - 1, self.refine_windows).round().astype(int))
        if self._responder is None:
            self._responder = LeakResponder(self.model)
        shift = np.mean([self._responder.shifts(*since[i]["mid"], self.kind, self.element, top, q) for i in pick], 0)
        q_new, chi2_new = fit_candidates(z, sigma, shift / q, corr)
        chi2_all = rank.chi2.copy()
        flow_all = rank.flow.copy()
        chi2_all[:m], flow_all[:m] = chi2_new, q_new
        # a candidate outside the re-solved few keeps its linear misfit, but never ranks above them
        chi2_all[m:] = np.maximum(chi2_all[m:], chi2_new.max())
        dof = max(int((np.isfinite(z) & (sigma > 0)).sum()) - 1, 1)
        return ranking_from_fit(rank.nodes, flow_all, chi2_all, dof)

    def score_one(self, state: TwinState) -> list[Finding]:
        al = self.alarm
        if al is None or "ranking" not in al:
            return []
        rank = al["ranking"]
        nodes = self.model.nodes
        cands = [Candidate(str(nodes.ids[n]), float(s), float(nodes.x[n]), float(nodes.y[n]))
                 for n, s in zip(rank.nodes[:self.n_candidates], rank.score[:self.n_candidates])]
        last = self.windows[-1]
        evidence = {"model": "zone balance + pressure residual CUSUM, signature localization",
                    "estimated_flow": al["flow"], "flow_at_best_candidate": al["flow_fit"],
                    "start_ns": al["start_ns"], "detected_ns": al["opened_ns"], "fired_by": al["by"],
                    "cusum_balance": float(self.s_bal), "cusum_pressure": float(self.s_prs), "threshold": self.h,
                    "false_alarms_per_year": self.false_alarms_per_year,
                    "last_window_flow_balance": float(last.get("q_bal", np.nan)),
                    "last_window_flow_pressure": float(last.get("q_prs", np.nan)),
                    "windows_since_start": al["windows"], "search_area_length_m": al["area"]["length_m"],
                    "search_area_links": al["area"]["pipes"][:200], "search_area_score": al["area"]["mass"]}
        # as a control room reads it: gas in kg/h, water in L/s, the start as a UTC clock time
        flow, unit = (al["flow"] * 3600.0, "kg/h") if self.model.is_gas else (al["flow"] * 1000.0, "L/s")
        since = np.datetime64(int(al["start_ns"]), "ns").astype("datetime64[m]").astype(str).replace("T", " ")
        msg = (f"leak of about {flow:.3g} {unit} since {since} UTC, most likely near {cands[0].element} "
               f"(search area {al['area']['length_m']:.0f} m of pipe)")
        return [Finding("leak", state.network, "major", float(max(self.s_bal, self.s_prs) / self.h), msg,
                        evidence, cands)]

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        snap = {k: getattr(self, k) for k in ("t0_ns", "acc", "base", "s_bal", "s_prs", "zero_bal", "zero_prs",
                                              "alarm", "s_clear")}
        snap["windows"] = [{k: v for k, v in w.items() if k != "sig"} for w in self.windows]
        return copy.deepcopy(snap)

    def restore(self, snap: dict) -> None:
        for key, value in copy.deepcopy(snap).items():
            setattr(self, key, value)
