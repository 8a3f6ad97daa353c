"""Where is the leak: the residual shift the twin cannot explain, compared with the signature a
leak would leave at each candidate node.

For a candidate k with signature s_k (sensor answer per unit leak flow) and a shift z measured
with noise of covariance W^-1, the best leak size is the weighted least-squares fit
q_k = max(0, s_k' W z / s_k' W s_k) (a leak only withdraws), and its misfit chi2_k =
|W^1/2 (z - q_k s_k)|^2. Ranking by chi2 is ranking by likelihood; with a uniform prior over the
candidates, exp(-chi2_k / 2) normalised is each node's posterior probability, which is the score
a crew can read ("the top five hold 80 %"). Neighbouring nodes often explain the residuals almost
equally well; the node to send a crew to first is then the one nearest to all of them along the
pipes, weighted by their scores (``most_central``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from pipetwin.twin.model import NetworkModel


@dataclass
class Ranking:
    nodes: np.ndarray        # node indices, best first
    score: np.ndarray        # posterior probability of each, same order (sums to 1 over all candidates)
    flow: np.ndarray         # fitted leak flow at each (SI)
    chi2: np.ndarray         # misfit at each


def shrunk_correlation(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the standardised rows ``x`` (samples x sensors), shrunk towards the
    identity by Ledoit and Wolf's optimal weight (2004): with fewer samples than sensors the raw
    matrix is singular, and shrinking is the least-squares best estimate of the true one."""
    x = np.where(np.isfinite(x), x, 0.0)
    x = x - x.mean(0)
    n, p = x.shape
    sd = np.sqrt((x ** 2).mean(0))
    x = x / np.where(sd > 0, sd, 1.0)
    s = x.T @ x / n
    mu = np.trace(s) / p
    delta = float(((s - mu * np.eye(p)) ** 2).sum()) / p
    beta = sum(float(((np.outer(r, r) - s) ** 2).sum()) for r in x) / (n * n * p)
    lam = 1.0 if delta <= 0 else min(beta, delta) / delta
    return lam * mu * np.eye(p) + (1.0 - lam) * s


def fit_candidates(shift: np.ndarray, sigma: np.ndarray, sig: np.ndarray,
                   corr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leak size (>= 0) and misfit of every candidate column of ``sig`` (sensors x candidates)
    against ``shift`` (per sensor, NaN: not used) with noise ``sigma`` and, if given, the noise's
    correlation ``corr`` between sensors (the shift and signatures are whitened by it first)."""
    use = np.isfinite(shift) & np.isfinite(sigma) & (sigma > 0)
    z = shift[use] / sigma[use]
    s = sig[use] / sigma[use][:, None]
    if corr is not None:
        chol = np.linalg.cholesky(corr[np.ix_(use, use)])
        z = np.linalg.solve(chol, z)
        s = np.linalg.solve(chol, s)
    w = np.ones(len(z))
    sws = (s * s * w[:, None]).sum(0)
    swz = (s * (w * z)[:, None]).sum(0)
    q = np.where(sws > 0, np.maximum(swz, 0.0) / np.where(sws > 0, sws, 1.0), 0.0)
    chi2 = float((w * z * z).sum()) - 2.0 * q * swz + q * q * sws
    return q, chi2


def rank_candidates(shift: np.ndarray, sigma: np.ndarray, sig: np.ndarray, candidates: np.ndarray,
                    corr: np.ndarray | None = None, temperature: float | None = None) -> Ranking:
    """Candidates ordered by misfit, with posterior scores (``corr``: see ``fit_candidates``).
    ``temperature`` scales the noise variance; by default it is the best fit's reduced chi-square
    when that is above 1 (the noise model was too optimistic by that much: Birge's ratio)."""
    candidates = np.asarray(candidates, np.int64)
    q, chi2 = fit_candidates(shift, sigma, sig[:, candidates], corr)
    dof = max(int((np.isfinite(shift) & np.isfinite(sigma) & (sigma > 0)).sum()) - 1, 1)
    return ranking_from_fit(candidates, q, chi2, dof, temperature)


def ranking_from_fit(nodes: np.ndarray, flow: np.ndarray, chi2: np.ndarray, dof: int,
                     temperature: float | None = None) -> Ranking:
    """Order candidates by misfit and turn misfits into posterior scores (see ``rank_candidates``)."""
    order = np.argsort(chi2, kind="stable")
    if temperature is None:
        temperature = max(1.0, float(chi2[order[0]]) / max(dof, 1))
    p = np.exp(-0.5 * (chi2 - chi2[order[0]]) / temperature)
    p /= p.sum()
    return Ranking(np.asarray(nodes)[order], p[order], np.asarray(flow)[order], np.asarray(chi2)[order])


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


def pipe_distances(model: NetworkModel, sources: np.ndarray) -> np.ndarray:
    """Shortest distance along the pipes (m) from each of ``sources`` to every node; pumps and
    valves count zero, as a crew walking the mains sees them."""
    links = model.links
    length = np.where(np.isfinite(links.length_m) & (links.length_m > 0), links.length_m, 0.0)
    # csgraph drops explicit zeros: a millimetre stands for a zero-length link
    w = np.maximum(length, 1e-3)
    n = model.n_nodes
    graph = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([links.from_node, links.to_node]),
                                                    np.concatenate([links.to_node, links.from_node]))),
                          shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False, indices=np.asarray(sources, np.int64))


def most_central(model: NetworkModel, ranking: Ranking, mass: float = 0.99, max_nodes: int = 300) -> Ranking:
    """The ranking with its best site first: the candidate with the least expected pipe distance to
    the leak under the scores (the posterior's median on the network), which is where a crew
    should start when several neighbouring nodes explain the residuals almost equally well. The
    others follow in score order."""
    cum = np.cumsum(ranking.score)
    m = int(min(np.searchsorted(cum, mass) + 1, max_nodes, len(ranking.nodes)))
    if m <= 1:
        return ranking
    top = ranking.nodes[:m]
    d = pipe_distances(model, top)[:, top]
    p = ranking.score[:m] / ranking.score[:m].sum()
    best = int(np.argmin(d @ p))
    order = np.r_[best, np.delete(np.arange(len(ranking.nodes)), best)]
    return Ranking(ranking.nodes[order], ranking.score[order], ranking.flow[order], ranking.chi2[order])
