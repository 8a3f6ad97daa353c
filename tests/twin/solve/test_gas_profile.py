"""The per-phase profile of a cold gas solve (pipetwin.bench.solver_profile): its rows add up, and
the solver is left as it was (the timers are swapped in and out)."""

from pipetwin.bench import solver_profile
from pipetwin.kernels import gas as gk
from pipetwin.twin.solve import gas, linalg


def test_profile_phases_add_up_and_leave_the_solver_untouched(networks_dir, capsys):
    before = (gk.pipe_law, linalg.laplacian_step, linalg._cholmod_analyze if linalg.HAVE_CHOLMOD else None,
              gas.GasSolver.__init__, linalg.LaplacianSystem.__init__)
    solver_profile.profile_case(networks_dir / "schutterwald", repeats=2)
    after = (gk.pipe_law, linalg.laplacian_step, linalg._cholmod_analyze if linalg.HAVE_CHOLMOD else None,
             gas.GasSolver.__init__, linalg.LaplacianSystem.__init__)
    assert before == after
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        kv = dict(item.split("=", 1) for item in line.split())
        if "phase" in kv:
            rows[kv["phase"]] = kv
    for phase in ("construct", "symbolic_analysis", "friction_jacobian", "numeric_factorization",
                  "triangular_solve", "python_other", "total_timed"):
        assert phase in rows, phase
    assert int(rows["friction_jacobian"]["calls"]) >= 2
    assert int(rows["numeric_factorization"]["calls"]) >= 1
    # medians of parts need not add up to the median total, but each part is within it
    assert all(float(r["ms"]) <= float(rows["total_timed"]["ms"]) + 1e-9 for r in rows.values())
