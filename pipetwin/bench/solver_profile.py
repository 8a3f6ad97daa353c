"""Where a cold gas solve spends its time, phase by phase: what to attack before guessing.

    python -m pipetwin.bench.solver_profile [--shared ../shared] [--repeats 11] [case ...]

Each solve runs with timers wrapped around the solver's compiled kernels and linear-algebra
calls (the functions are swapped in the modules that call them, then restored), so the solver
itself carries no instrumentation. Per phase, the median over the repeats of the time per solve is
printed as ``key=value`` lines; ``python_other`` is what the timers do not cover (Python glue,
array allocation, the result tables). The timers add a little overhead of their own (a few
microseconds per call), so the total is a bit above an untimed solve's, printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from pipetwin.bench.solver import default_shared
from pipetwin.twin.io.tabular import read_tabular

# phase -> (module, attribute) pairs whose calls count towards it
PHASES = {
    "friction_jacobian": [("pipetwin.kernels.gas", "pipe_law")],
    "coefficients_rhs": [("pipetwin.kernels.gas", "gga_coefficients"), ("pipetwin.kernels.gas", "gga_rhs")],
    "flows_pressures": [("pipetwin.kernels.gas", "gga_flows"), ("pipetwin.kernels.gas", "gga_pressures"),
                        ("pipetwin.kernels.gas", "settle_reversals")],
    "convergence_check": [("pipetwin.twin.solve.gas.GasSolver", "_balanced"),
                          ("pipetwin.twin.solve.gas.GasSolver", "_update_status")],
    "start_guess": [("pipetwin.twin.solve.gas.GasSolver", "_balanced_start")],
}


def _resolve(path: str):
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(path)


class Timers:
    """Exclusive time per phase: a timed call inside another (the symbolic analysis inside the
    solver's construction) counts only towards its own phase."""

    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._child = [0.0]

    def add(self, phase: str, dt_s: float) -> None:
        self.ms[phase] += dt_s * 1e3
        self.calls[phase] += 1
        self._child[-1] += dt_s

    def wrap(self, phase: str, f):
        def timed(*args, **kwargs):
            self._child.append(0.0)
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                inner = self._child.pop()
                self.ms[phase] += (dt - inner) * 1e3
                self.calls[phase] += 1
                self._child[-1] += dt
        return timed


@contextmanager
def _patched(timers: Timers):
    saved = []

    def patch(owner, name, phase):
        f = getattr(owner, name)
        saved.append((owner, name, f))
        setattr(owner, name, timers.wrap(phase, f))

    for phase, targets in PHASES.items():
        for owner, name in targets:
            patch(_resolve(owner), name, phase)
    from pipetwin.twin.solve import gas, linalg

    patch(gas.GasSolver, "__init__", "construct")
    patch(linalg.LaplacianSystem, "__init__", "symbolic_analysis")
    # the compiled linear steps, split into their parts (the same kernels, called one by one)
    from pipetwin.kernels import assembly as asm
    from pipetwin.kernels import cholesky as ch
    from pipetwin.kernels import supernodal as sn

    def timed_step(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, rhs, x0, refactor, out,
                   factor, solve) -> bool:
        t = time.perf_counter()
        asm._fill(w, diag_extra, pinv, pos_a, pos_b, pos_ab, cdiag, cx)
        t1 = time.perf_counter()
        ok = factor() if refactor else True
        t2 = time.perf_counter()
        if ok:
            xp, res = asm._permuted_residual(perm, cp, ci, cx, rhs, x0)
            solve(res)
            out[perm] = xp + res
        t3 = time.perf_counter()
        for phase, dt in (("assemble_matrix", t1 - t), ("numeric_factorization", t2 - t1),
                          ("triangular_solve", t3 - t2)):
            timers.add(phase, dt)
        return ok

    def laplacian_step(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, rp, rj, lp, li, lx,
                       dinv, work, cw, rhs, x0, refactor, out):
        n = perm.shape[0]
        return timed_step(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, rhs, x0, refactor, out,
                          lambda: ch.chol_numeric(n, cp, ci, cx, rp, rj, lp, li, lx, dinv, work, cw),
                          lambda res: ch.chol_solve(n, lp, li, lx, dinv, res))

    def laplacian_step_supernodal(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, sup, rsp, ri,
                                  rel, lxp, aptr, aidx, aoff, cptr, child, upd_off, lx, front, stack, rhs, x0,
                                  refactor, out):
        return timed_step(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, rhs, x0, refactor, out,
                          lambda: sn.supernodal_numeric(cx, sup, rsp, rel, lxp, aptr, aidx, aoff, cptr, child, upd_off,
                                                        lx, front, stack),
                          lambda res: sn.supernodal_solve(sup, rsp, ri, lxp, lx, res))

    for name, timed in (("laplacian_step", laplacian_step), ("laplacian_step_supernodal", laplacian_step_supernodal)):
        saved.append((linalg, name, getattr(linalg, name)))
        setattr(linalg, name, timed)
    # CHOLMOD: time its analysis, numeric factorization and solve apart
    if linalg.HAVE_CHOLMOD:
        analyze = linalg._cholmod_analyze

        class TimedFactor:
            def __init__(self, f):
                self.f = f

            def cholesky_inplace(self, m):
                return timers.wrap("numeric_factorization", self.f.cholesky_inplace)(m)

            def __call__(self, b):
                return timers.wrap("triangular_solve", self.f)(b)

            def __getattr__(self, name):
                return getattr(self.f, name)

        def timed_analyze(*a, **k):
            return TimedFactor(timers.wrap("symbolic_analysis", analyze)(*a, **k))

        saved.append((linalg, "_cholmod_analyze", analyze))
        linalg._cholmod_analyze = timed_analyze
    patch(linalg.LaplacianSystem, "assemble", "assemble_matrix")
    patch(linalg.LaplacianSystem, "matrix", "assemble_matrix")
    try:
        yield
    finally:
        for owner, name, f in reversed(saved):
            setattr(owner, name, f)


def profile_case(folder: Path, repeats: int) -> None:
    from pipetwin.twin.solve.gas import GasSolver

    model = read_tabular(folder)
    r = GasSolver(model).solve()          # compile, fill caches
    plain = []
    for _ in range(repeats):
        t = time.perf_counter()
        GasSolver(model).solve()
        plain.append((time.perf_counter() - t) * 1e3)
    rows: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, int] = {}
    for _ in range(repeats):
        timers = Timers()
        with _patched(timers):
            t = time.perf_counter()
            GasSolver(model).solve()
            total = (time.perf_counter() - t) * 1e3
        own = dict(timers.ms)
        own["python_other"] = total - sum(own.values())
        own["total_timed"] = total
        for k, v in own.items():
            rows[k].append(v)
        calls = dict(timers.calls)
    print(f"case={folder.name} nodes={model.n_nodes} links={model.n_links} iterations={r.iterations} "
          f"factorizations={r.extra['factorizations']} backend={r.extra['linear_backend']} "
          f"untimed_ms={statistics.median(plain):.2f} untimed_min_ms={min(plain):.2f}", flush=True)
    order = ["construct", "symbolic_analysis", "start_guess", "friction_jacobian", "coefficients_rhs",
             "assemble_matrix", "numeric_factorization", "triangular_solve", "flows_pressures", "convergence_check",
             "python_other", "total_timed"]
    for k in order:
        if k in rows:
            print(f"case={folder.name} phase={k} ms={statistics.median(rows[k]):.3f} min_ms={min(rows[k]):.3f} "
                  f"calls={calls.get(k, 1 if k in ('python_other', 'total_timed') else 0)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["schutterwald", "grid10k"])
    parser.add_argument("--shared", default=None)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    networks = (Path(args.shared) if args.shared else default_shared()) / "benchmarks" / "networks"
    for case in args.cases:
        profile_case(networks / case, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
