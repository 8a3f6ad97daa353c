"""Synthetic gas distribution networks of any size, for scale benchmarks.

``city``: a street grid as city gas is laid: meshed mains along every street (stronger mains on
every tenth street), each street segment split into pipe sections with a house service connection
at every joint, gate stations at the corners. ``lattice``: a plain square lattice (every node has
four pipes), the hardest sparsity pattern for a factorization; grid10k in shared/ is one.
"""

from __future__ import annotations

import numpy as np

from pipetwin.twin.model import (GasProperties, LinkKind, Medium, NetworkModel, NodeKind, make_demands,
                                 make_links, make_nodes, make_tanks)

P_AMBIENT = 101325.0


def city(blocks: int = 88, sections: int = 4, seed: int = 0) -> NetworkModel:
    """About 13 x blocks^2 nodes (blocks=88: ~102,000 nodes, ~110,000 pipes). Streets 100 m apart,
    mains 0.1-0.15 m (0.25 m every tenth street), 10 m services of 25 mm, houses drawing a
    lognormal winter-peak demand around 6.6e-5 kg/s, gate stations at 1 bar gauge."""
    rng = np.random.default_rng(seed)
    b1 = blocks + 1
    ids: list[str] = []
    kinds: list[int] = []
    xs: list[float] = []
    ys: list[float] = []

    def node(name, kind, x, y):
        ids.append(name)
        kinds.append(kind)
        xs.append(x)
        ys.append(y)
        return len(ids) - 1

    corner = np.empty((b1, b1), np.int64)
    for i in range(b1):
        for j in range(b1):
            corner[i, j] = node(f"x{i}_{j}", NodeKind.JUNCTION, 100.0 * i, 100.0 * j)
    fr: list[int] = []
    to: list[int] = []
    length: list[float] = []
    diam: list[float] = []
    houses: list[int] = []
    step = 100.0 / sections

    def street(a, b, strong, name):
        ax, ay, bx, by = xs[a], ys[a], xs[b], ys[b]
        prev = a
        d_main = 0.25 if strong else float(rng.choice([0.1, 0.125, 0.15]))
        for s in range(1, sections):
            t = s / sections
            j = node(f"{name}_{s}", NodeKind.JUNCTION, ax + t * (bx - ax), ay + t * (by - ay))
            fr.append(prev)
            to.append(j)
            length.append(step)
            diam.append(d_main)
            h = node(f"{name}_{s}h", NodeKind.CONSUMER, xs[j] + 7.0 * (by - ay) / 100.0,
                     ys[j] + 7.0 * (bx - ax) / 100.0)
            fr.append(j)
            to.append(h)
            length.append(10.0)
            diam.append(0.025)
            houses.append(h)
            prev = j
        fr.append(prev)
        to.append(b)
        length.append(step)
        diam.append(d_main)

    for i in range(b1):
        for j in range(b1):
            if i < blocks:
                street(corner[i, j], corner[i + 1, j], j % 10 == 0, f"h{i}_{j}")
            if j < blocks:
                street(corner[i, j], corner[i, j + 1], i % 10 == 0, f"v{i}_{j}")
    n = len(ids)
    kind = np.array(kinds, np.int8)
    fixed = np.full(n, np.nan)
    for c in (corner[0, 0], corner[0, -1], corner[-1, 0], corner[-1, -1]):
        kind[c] = NodeKind.SOURCE
        fixed[c] = P_AMBIENT + 1e5
    elevation = 100.0 + 5.0 * np.sin(np.array(xs) / 700.0) * np.cos(np.array(ys) / 900.0)
    nodes = make_nodes(ids, kind, xs, ys, elevation, fixed_pressure_pa=fixed)
    m = len(fr)
    links = make_links([f"p{k}" for k in range(m)], np.full(m, LinkKind.PIPE), fr, to, length, diam,
                       np.full(m, 1e-4))
    demand = 6.6e-5 * rng.lognormal(0.0, 0.5, len(houses))
    return NetworkModel(f"city{n}", Medium.NATURAL_GAS, nodes, links, make_demands(houses, demand), make_tanks(),
                        gas=GasProperties())


def lattice(side: int = 316, seed: int = 0) -> NetworkModel:
    """side^2 nodes on a 50 m square lattice, 60% of them consumers (3e-4 kg/s lognormal), mains
    0.05-0.1 m with 0.2 m backbones every tenth row and column, one source at 1 bar gauge per
    100 x 100 tile (as grid10k, scaled up)."""
    rng = np.random.default_rng(seed)
    n = side * side
    i, j = np.divmod(np.arange(n), side)
    ids = [f"n{a}_{b}" for a, b in zip(i, j)]
    kind = np.where(rng.random(n) < 0.6, NodeKind.CONSUMER, NodeKind.JUNCTION).astype(np.int8)
    fixed = np.full(n, np.nan)
    for a in range(50, side, 100):
        for b in range(50, side, 100):
            s = a * side + b
            kind[s] = NodeKind.SOURCE
            fixed[s] = P_AMBIENT + 1e5
    idx = np.arange(n).reshape(side, side)
    fr = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    to = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    row_of = np.concatenate([np.repeat(np.arange(side), side - 1), np.repeat(np.arange(side - 1), side)])
    col_of = np.concatenate([np.tile(np.arange(side - 1), side), np.tile(np.arange(side), side - 1)])
    m = len(fr)
    backbone = (row_of % 10 == 0) | (col_of % 10 == 0)
    diam = np.where(backbone, 0.2, rng.choice([0.05, 0.065, 0.08, 0.1], m))
    nodes = make_nodes(ids, kind, j * 50.0, i * 50.0, 90.0 + 35.0 * rng.random(n), fixed_pressure_pa=fixed)
    links = make_links([f"p{k}" for k in range(m)], np.full(m, LinkKind.PIPE), fr, to,
                       50.0 + 15.0 * rng.random(m), diam, np.full(m, 1e-4))
    cons = np.flatnonzero(kind == NodeKind.CONSUMER)
    return NetworkModel(f"lattice{n}", Medium.NATURAL_GAS, nodes, links,
                        make_demands(cons, 3e-4 * rng.lognormal(0.0, 0.5, len(cons))), make_tanks(),
                        gas=GasProperties())
