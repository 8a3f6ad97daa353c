"""Numeric Cholesky factorization: the compiled supernodal one against CHOLMOD and the compiled
up-looking one, side by side in one process, and the whole cold grid10k gas solve by backend.

    python benchmarks/supernodal.py [--shared ../shared] [--repeats 30] [--pairs 9] [--baseline DIR]

Matrices: the grid10k and Schutterwald Newton matrices (the conductances of the gas solver's
last factorization; Schutterwald is nearly a tree, with little fill), and 100 x 100 and
316 x 316 grid Laplacians with conductances spread over 6 decades (one node held). Each variant factorizes the same matrix numerically, the symbolic analysis done before;
the variants alternate call by call and the medians are printed as key=value lines, with the
ratios to CHOLMOD's simplicial factorization (the solver's CHOLMOD mode below 50k rows).

The symbolic pass on grid10k is timed step by step (the order, the permuted pattern, the column
counts, the supernodal structure). With ``--baseline DIR``, a checkout of an older commit (e.g.
``git worktree add /tmp/old HEAD~3``), its linear-algebra modules (kernels/cholesky.py,
supernodal.py, assembly.py and twin/solve/linalg.py) are loaded beside the current ones, compiled
fresh, and the two compared call by call: a ``LaplacianSystem`` construction, a triangular solve,
the fused linear step, and the whole cold grid10k gas solve (the current gas solver with either
``LaplacianSystem``), with the largest relative pressure difference.
"""

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipetwin.kernels.assembly import _fill, laplacian_step_supernodal
from pipetwin.kernels.cholesky import chol_analysis, chol_numeric, link_pattern, lower_pattern
from pipetwin.kernels.supernodal import supernodal_numeric, supernodal_solve, supernodal_symbolic_lower
from pipetwin.twin.solve import linalg
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


def bench_symbolic(n, i, j, repeats: int) -> None:
    """The compiled symbolic pass of grid10k step by step, and a whole construction."""
    import scipy.sparse as sp

    system = LaplacianSystem(n, i, j, backend="supernodal")
    parent, post, lp, lcp, lci, lpos = chol_analysis(n, system.cp, system.ci)
    calls = {"construct": lambda: LaplacianSystem(n, i, j, backend="supernodal"),
             "amd_pattern": lambda: lower_pattern(n, i, j)}
    if HAVE_CHOLMOD:
        from sksparse.cholmod import analyze

        ip, ix = lower_pattern(n, i, j)
        m = sp.csc_matrix((np.ones(len(ix)), ix, ip), shape=(n, n))
        calls["amd_cholmod_analyze"] = lambda: analyze(m, mode="simplicial", ordering_method="amd").P()
    calls["permuted_pattern"] = lambda: link_pattern(n, i, j, system.perm)
    calls["etree_counts"] = lambda: chol_analysis(n, system.cp, system.ci)
    calls["supernodal_symbolic"] = lambda: supernodal_symbolic_lower(system.cp, system.ci, lcp, lci, lpos, parent,
                                                                     lp)
    med = time_alternating(calls, repeats)
    print("case=grid10k_symbolic " + " ".join(f"{k}_ms={v * 1e3:.3f}" for k, v in med.items())
          + f" repeats={repeats}")


def load_baseline(folder: Path):
    """The linear-algebra modules of an older checkout as a package of their own (``baseline_<id>``),
    imports rewritten to stay inside it, compiled fresh (no numba cache: a temporary folder)."""
    pkg = f"baseline_{abs(hash(str(folder))) % 10**8}"
    root = Path(tempfile.mkdtemp(prefix="pipetwin_baseline_"))
    (root / pkg).mkdir()
    (root / pkg / "__init__.py").write_text("")
    for src in ("kernels/cholesky.py", "kernels/supernodal.py", "kernels/assembly.py", "twin/solve/linalg.py"):
        text = (folder / src).read_text().replace("pipetwin.kernels.", f"{pkg}.").replace("cache=True", "cache=False")
        (root / pkg / Path(src).name).write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{pkg}.linalg"), importlib.import_module(f"{pkg}.supernodal")


def bench_baseline(model, n, i, j, w, folder: Path, repeats: int, pairs: int) -> None:
    """Current against ``folder``'s linear algebra, call by call: construction, solve, fused step
    and the cold gas solve."""
    from pipetwin.twin.solve import gas

    old_linalg, old_sn = load_baseline(folder)
    old = old_linalg.LaplacianSystem(n, i, j, backend="supernodal")
    new = LaplacianSystem(n, i, j, backend="supernodal")
    zeros = np.zeros(n)
    rhs = np.random.default_rng(0).normal(size=n)
    old.solve(w, zeros, rhs)
    new.solve(w, zeros, rhs)
    x0 = new.solve(w, zeros, rhs) * (1.0 + 1e-6)

    def step(mod, s, refactor):
        out = np.empty(n)
        mod.laplacian_step_supernodal(w, zeros, s.pinv, s.perm, s.pos_a, s.pos_b, s.pos_ab, s.cdiag, s.cp, s.ci,
                                      s.cx, s.sup, s.rsp, s.ri, s.rel, s.lxp, s.aptr, s.aidx, s.aoff, s.cptr,
                                      s.child, s.upd_off, s.lx, s.front, s.stack, rhs, x0, refactor, out)
        return out

    calls = {"construct_old": lambda: old_linalg.LaplacianSystem(n, i, j),
             "construct_new": lambda: LaplacianSystem(n, i, j),
             "solve_old": lambda: old_sn.supernodal_solve(old.sup, old.rsp, old.ri, old.lxp, old.lx, rhs.copy()),
             "solve_new": lambda: supernodal_solve(new.sup, new.rsp, new.ri, new.lxp, new.lx, rhs.copy()),
             "step_old": lambda: step(old_linalg, old, False), "step_new": lambda: step(linalg, new, False),
             "step_refactor_old": lambda: step(old_linalg, old, True),
             "step_refactor_new": lambda: step(linalg, new, True)}
    med = time_alternating(calls, repeats)
    for what in ("construct", "solve", "step", "step_refactor"):
        o, nw = med[f"{what}_old"], med[f"{what}_new"]
        print(f"case=grid10k_vs_baseline what={what} old_ms={o * 1e3:.3f} new_ms={nw * 1e3:.3f} "
              f"ratio_new_to_old={nw / o:.3f} repeats={repeats}")
    dx = float(np.max(np.abs(step(linalg, new, True) - step(old_linalg, old, True))) / np.max(np.abs(x0)))
    print(f"case=grid10k_vs_baseline what=step_result max_rel_dx={dx:.1e}")

    def cold(cls):
        saved = gas.LaplacianSystem
        gas.LaplacianSystem = cls
        try:
            return gas.GasSolver(model).solve()
        finally:
            gas.LaplacianSystem = saved

    results = {"old": cold(old_linalg.LaplacianSystem), "new": cold(LaplacianSystem)}
    med = time_alternating({"old": lambda: cold(old_linalg.LaplacianSystem), "new": lambda: cold(LaplacianSystem)},
                           pairs)
    p0 = results["old"].node_pressure_pa
    dp = float(np.max(np.abs(results["new"].node_pressure_pa - p0) / np.abs(p0)))
    print(f"case=grid10k_gas_solve_vs_baseline old_ms={med['old'] * 1e3:.1f} new_ms={med['new'] * 1e3:.1f} "
          f"ratio_new_to_old={med['new'] / med['old']:.3f} iterations_old={results['old'].iterations} "
          f"iterations_new={results['new'].iterations} max_rel_dp={dp:.1e} pairs={pairs}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--baseline", default=None, help="a checkout of an older commit to compare against")
    parser.add_argument("--only-baseline", action="store_true", help="skip the factorization comparisons")
    args = parser.parse_args(argv)
    networks = Path(args.shared) / "benchmarks" / "networks"
    model = None
    for name in ("grid10k", "schutterwald"):
        if not (networks / name).exists():
            print(f"case={name}_newton skipped=no_data folder={networks / name}")
            continue
        m, n, i, j, w = newton_links(networks / name)
        if name == "grid10k":
            model, grid = m, (n, i, j, w)
            bench_symbolic(n, i, j, args.repeats)
            if args.baseline:
                bench_baseline(model, *grid, Path(args.baseline), args.repeats, args.pairs)
        if not args.only_baseline:
            bench_factorizations(f"{name}_newton", n, i, j, w, args.repeats)
    if args.only_baseline:
        return 0
    bench_factorizations("grid100x100_6decades", *grid_links(100, 0, 6.0), args.repeats)
    bench_factorizations("grid316x316_6decades", *grid_links(316, 1, 6.0), max(3, args.repeats // 6))
    if model is not None:
        bench_gas_solve(model, args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
