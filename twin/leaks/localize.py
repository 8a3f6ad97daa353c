"""Where is the leak: the residual shift the twin cannot explain, compared with the signature a
leak would leave at each candidate node.

For a candidate k with signature s_k (sensor answer per unit leak flow) and a shift z measured
with independent noise sigma, the best leak size is the weighted least-squares fit
q_k = max(0, s_k' W z / s_k' W s_k) (a leak only withdraws), and its misfit chi2_k =
|W^1/2 (z - q_k s_k)|^2. Ranking by chi2 is ranking by likelihood; with a uniform prior over the
candidates, exp(-chi2_k / 2) normalised is each node's posterior probability, which is the score
a crew can read ("the top five hold 80 %").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipetwin.twin.model import NetworkModel


@dataclass
class Ranking:
    nodes: np.ndarray        # node indices, best first
    score: np.ndarray        # posterior probability of each, same order (sums to 1 over all candidates)
    flow: np.ndarray         # fitted leak flow at each (SI)
    chi2: np.ndarray         # misfit at each


def fit_candidates(shift: np.ndarray, sigma: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leak size (>= 0) and misfit of every candidate column of ``sig`` (sensors x candidates)
    against ``shift`` (per sensor, NaN: not used) with noise ``sigma``."""
    use = np.isfinite(shift) & np.isfinite(sigma) & (sigma > 0)
    w = 1.0 / sigma[use] ** 2
    z = shift[use]
    s = sig[use]
    sws = (s * s * w[:, None]).sum(0)
    swz = (s * (w * z)[:, None]).sum(0)
    q = np.where(sws > 0, np.maximum(swz, 0.0) / np.where(sws > 0, sws, 1.0), 0.0)
    chi2 = float((w * z * z).sum()) - 2.0 * q * swz + q * q * sws
    return q, chi2


def rank_candidates(shift: np.ndarray, sigma: np.ndarray, sig: np.ndarray, candidates: np.ndarray,
                    temperature: float = 1.0) -> Ranking:
    """Candidates ordered by misfit, with posterior scores. ``temperature`` > 1 flattens the scores
    when the noise is known to be correlated (fewer independent sensors than rows)."""
    candidates = np.asarray(candidates, np.int64)
    q, chi2 = fit_candidates(shift, sigma, sig[:, candidates])
    order = np.argsort(chi2, kind="stable")
    logp = -0.5 * (chi2 - chi2[order[0]]) / temperature
    p = np.exp(logp)
    p /= p.sum()
    return Ranking(candidates[order], p[order], q[order], chi2[order])


def search_area(model: NetworkModel, ranking: Ranking, mass: float = 0.9, max_nodes: int = 50) -> dict:
    """The smallest set of top candidates holding ``mass`` of the score (at most ``max_nodes``),
    and the pipes among them: what a crew walks. Length in metres."""
    cum = np.cumsum(ranking.score)
    n = int(min(np.searchsorted(cum, mass) + 1, max_nodes, len(ranking.nodes)))
    inside = np.zeros(model.n_nodes, bool)
    inside[ranking.nodes[:n]] = True
    links = model.links
    pipes = np.flatnonzero(inside[links.from_node] | inside[links.to_node])
    return {"nodes": [str(model.nodes.ids[k]) for k in ranking.nodes[:n]],
            "pipes": [str(links.ids[k]) for k in pipes],
            "length_m": float(np.nansum(links.length_m[pipes])),
            "mass": float(cum[n - 1])}
