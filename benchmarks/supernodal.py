"""Numeric Cholesky factorization: the compiled supernodal one against CHOLMOD and the compiled
up-looking one, side by side in one process, and the whole cold grid10k gas solve by backend.

    python benchmarks/supernodal.py [--shared ../shared] [--repeats 30] [--pairs 9]

Matrices: the grid10k and Schutterwald Newton matrices (the conductances of the gas solver's
last factorization; Schutterwald is nearly a tree, with little fill), and 100 x 100 and
316 x 316 grid Laplacians with conductances spread over 6 decades (one node held). Each variant factorizes the same matrix numerically, the symbolic analysis done before;
the variants alternate call by call and the medians are printed as key=value lines, with the
ratios to CHOLMOD's simplicial factorization (the solver's CHOLMOD mode below 50k rows).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from pipetwin.kernels.assembly import _fill
from pipetwin.kernels.cholesky import chol_numeric
from pipetwin.kernels.supernodal import supernodal_numeric
from pipetwin.twin.solve.linalg import HAVE_CHOLMOD, LaplacianSystem


def grid_links(nx: int, seed: int, decades: float):
    """Links of an nx x nx lattice, node 0 held (row -1), conductances 10^U(0, decades)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(nx * nx).reshape(nx, nx) - 1
    i = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    j = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return nx * nx - 1, i, j, 10.0 ** rng.uniform(0, decades, len(i))


def newton_links(folder: Path):
    """A gas model's free-node links and the conductances of the solver's last factorization (its
    Newton matrix near the answer)."""
    from pipetwin.twin.io.tabular import read_tabular
    from pipetwin.twin.solve.gas import GasOptions, GasSolver

    model = read_tabular(folder)
    solver = GasSolver(model, GasOptions(backend="supernodal"))
    solver.solve()
    (pinned, w), = solver._factored_w.items()
    system, _ = solver._systems[pinned]
    return model, system.n, system._link_i, system._link_j, w


def factorizations(n, i, j, w):
    """name -> a function doing one numeric factorization of the same matrix, and nnz(L) of each."""
    zeros = np.zeros(n)
    calls, nnz = {}, {}
    if HAVE_CHOLMOD:
        from sksparse.cholmod import analyze

        ref = LaplacianSystem(n, i, j, backend="cholmod")
        ref.assemble(w, zeros)
        m = ref.matrix()
        for mode in ("simplicial", "supernodal"):
            f = analyze(m, mode=mode)
            f.cholesky_inplace(m)
            calls[f"cholmod_{mode}"] = (lambda f=f: f.cholesky_inplace(m))
            nnz[f"cholmod_{mode}"] = int(f.L().nnz) if mode == "simplicial" else -1
    up = LaplacianSystem(n, i, j, backend="numba")
    _fill(w, zeros, up.pinv, up.pos_a, up.pos_b, up.pos_ab, up.cdiag, up.cx)
    calls["numba_uplooking"] = lambda: chol_numeric(n, up.cp, up.ci, up.cx, up.rp, up.rj, up.lp, up.li, up.lx,
                                                    up.dinv, up.work, up.cw)
    nnz["numba_uplooking"] = int(up.lp[-1])
    sn = LaplacianSystem(n, i, j, backend="supernodal")
    _fill(w, zeros, sn.pinv, sn.pos_a, sn.pos_b, sn.pos_ab, sn.cdiag, sn.cx)
    calls["supernodal"] = lambda: supernodal_numeric(sn.cx, sn.sup, sn.rsp, sn.rel, sn.lxp, sn.aptr, sn.aidx, sn.aoff,
                                                     sn.cptr, sn.child, sn.upd_off, sn.lx, sn.front, sn.stack)
    nnz["supernodal"] = int(sn.lp[-1])
    for name, call in calls.items():
        ok = call()
        assert ok is None or ok, name
    counts = np.diff(sn.lp).astype(np.float64)
    info = {"n": n, "supernodes": len(sn.sup) - 1, "largest_front": int(np.diff(sn.rsp).max(initial=0)),
            "l_storage": int(sn.lxp[-1]), "flops_m": round(float(counts @ counts) / 1e6, 2)}
    return calls, nnz, info


def time_alternating(calls: dict, repeats: int) -> dict:
    """Median seconds of each call, the calls alternating so that load on the machine hits all alike."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def bench_factorizations(case: str, n, i, j, w, repeats: int) -> None:
    calls, nnz, info = factorizations(n, i, j, w)
    print(f"case={case} " + " ".join(f"{k}={v}" for k, v in info.items()))
    med = time_alternating(calls, repeats)
    for name, sec in med.items():
        print(f"case={case} variant={name} factor_ms={sec * 1e3:.2f} nnz_l={nnz[name]} repeats={repeats}")
    if "cholmod_simplicial" in med:
        base = med["cholmod_simplicial"]
        print(f"case={case} " + " ".join(f"ratio_{name}_to_cholmod_simplicial={sec / base:.3f}"
                                         for name, sec in med.items() if name != "cholmod_simplicial"))


def bench_gas_solve(model, pairs: int) -> None:
    """Cold solves of the whole gas model, backends alternating."""
    from pipetwin.twin.solve.gas import GasOptions, GasSolver

    backends = ["cholmod", "supernodal"] if HAVE_CHOLMOD else ["numba", "supernodal"]
    results = {}
    for b in backends:                       # compile and warm the caches once
        results[b] = GasSolver(model, GasOptions(backend=b)).solve()
    calls = {b: (lambda b=b: GasSolver(model, GasOptions(backend=b)).solve()) for b in backends}
    med = time_alternating(calls, pairs)
    p0 = results[backends[0]].node_pressure_pa
    for b in backends:
        r = results[b]
        dp = float(np.max(np.abs(r.node_pressure_pa - p0) / np.abs(p0)))
        print(f"case=grid10k_gas_solve backend={b} solve_ms={med[b] * 1e3:.1f} iterations={r.iterations} "
              f"cg_iterations={r.extra.get('cg_iterations', 0)} max_rel_dp_vs_{backends[0]}={dp:.1e} pairs={pairs}")
    print(f"case=grid10k_gas_solve ratio_supernodal_to_{backends[0]}={med['supernodal'] / med[backends[0]]:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=9)
    args = parser.parse_args(argv)
    networks = Path(args.shared) / "benchmarks" / "networks"
    model = None
    for name in ("grid10k", "schutterwald"):
        if not (networks / name).exists():
            print(f"case={name}_newton skipped=no_data folder={networks / name}")
            continue
        m, n, i, j, w = newton_links(networks / name)
        model = m if name == "grid10k" else model
        bench_factorizations(f"{name}_newton", n, i, j, w, args.repeats)
    bench_factorizations("grid100x100_6decades", *grid_links(100, 0, 6.0), args.repeats)
    bench_factorizations("grid316x316_6decades", *grid_links(316, 1, 6.0), max(3, args.repeats // 6))
    if model is not None:
        bench_gas_solve(model, args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
