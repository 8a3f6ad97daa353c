"""Gas Newton on meshed grids: warm re-solves after large demand changes, and pipes whose answer
sits on Colebrook's steep zero-flow segment (pandapipes' law at every Re)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings

from pipetwin.bench.synthetic import city, lattice
from pipetwin.kernels import gas as gk
from pipetwin.twin.model import Medium, NetworkModel, NodeKind, make_demands, make_links, make_nodes, make_tanks
from pipetwin.twin.solve.gas import GasOptions, GasSolver, solve_gas

from .test_gas import random_networks


def _same(a, b):
    # both converged (1e-3 Pa between iterates, the pipe law to 1e-6 of the largest drop): the same
    # answer to what those tolerances leave: a lattice's nearly stagnant pipes are so conductive
    # that 1e-4 Pa moves their flow by ~1e-6 kg/s (a sixtieth of a house's draw)
    assert np.max(np.abs(a.node_pressure_pa - b.node_pressure_pa)) < 1e-3
    assert (np.abs(a.link_flow - b.link_flow) <= 1e-3 * np.abs(b.link_flow) + 2e-6).all()
    # nodes balance to 1e-6 of the throughput (a chord step's answer) or to rounding (an exact one)
    throughput = float(np.sum(np.abs(b.node_demand[b.node_demand > 0])))
    assert a.residual <= 1e-6 * throughput and b.residual <= 1e-6 * throughput


@pytest.mark.parametrize("make", [lambda: city(15, 4, seed=1), lambda: lattice(60)], ids=["city", "lattice"])
def test_warm_start_after_a_large_demand_change_converges_to_the_cold_answer(make):
    # before: the first steps reused the old factorization whatever the change; on these grids the
    # chord steps diverged until a conductance underflowed (city: LinAlgError) or the iterate went
    # NaN and was reported converged (lattice)
    model = make()
    d = model.base_demand()
    solver = GasSolver(model)
    base = solver.solve(d)
    calls = []
    solve = solver.solve

    def counted(*args, **kwargs):   # the cold-start retry calls solve again
        calls.append(1)
        return solve(*args, **kwargs)

    solver.solve = counted
    for factor in (0.3, 3.0, 0.5, 1.01):
        calls.clear()
        warm = solver.solve(d * factor, warm_start=base)
        cold = GasSolver(model).solve(d * factor)
        assert warm.converged and cold.converged, factor
        assert len(calls) == 1 and not warm.extra.get("restarted_cold", False), factor
        assert np.isfinite(warm.node_pressure_pa).all()
        assert warm.iterations <= 15, factor
        _same(warm, cold)


def test_warm_start_after_a_small_change_keeps_the_factorization():
    model = city(15, 4, seed=1)
    solver = GasSolver(model)
    base = solver.solve()
    rng = np.random.default_rng(3)
    demand = model.node_demand() * (1.0 + 0.01 * rng.choice([-1.0, 1.0], model.n_nodes))
    warm = solver.solve(demand, warm_start=base)
    assert warm.converged
    assert warm.extra["factorizations"] <= 1
    _same(warm, GasSolver(model).solve(demand))


def test_a_small_leak_on_a_city_grid_converges_in_a_few_steps():
    # before: pipe slot 345 circled around zero flow (+5e-8 / -2e-8 kg/s) for 100 iterations at a
    # law residual of 1.3e-5 Pa, while the laminar switch converged in 6
    model = city(15, 4, seed=0)
    d = model.base_demand()
    d[106] += 0.001
    r = GasSolver(model).solve(d)
    assert r.converged, r.message
    assert r.iterations <= 8
    lam = GasSolver(model, GasOptions(laminar_switch=True)).solve(d)
    assert lam.converged and lam.iterations <= 8


def test_small_leaks_anywhere_converge_cold_and_warm():
    model = city(10, 4, seed=0)
    d = model.base_demand()
    solver = GasSolver(model)
    base = solver.solve(d)
    rng = np.random.default_rng(0)
    for node in rng.choice(np.flatnonzero(solver.free), 12, replace=False):
        for q in (0.0003, 0.003):
            leak = d.copy()
            leak[node] += q
            cold = solver.solve(leak)
            warm = solver.solve(leak, warm_start=base)
            assert cold.converged and cold.iterations <= 10, (node, q)
            assert warm.converged and warm.iterations <= 10, (node, q)


def test_stagnant_loop_of_parallel_pipes_converges_with_pure_colebrook():
    """No demand anywhere, smooth parallel pipes in a loop (hypothesis found it): the flows circled
    at ~1e-9 kg/s for 100 iterations, settled to zero and thrown across it again by the plateau's
    near-zero derivative. A pipe settled once and crossing zero again takes its secant slope."""
    nodes = make_nodes([f"n{i}" for i in range(4)], [NodeKind.SOURCE] + [NodeKind.JUNCTION] * 3,
                       elevation_m=[0.0] * 4, fixed_pressure_pa=[4e5] + [math.nan] * 3)
    links = make_links([f"p{k}" for k in range(7)], [0] * 7, [0, 0, 1, 0, 2, 2, 3], [1, 2, 3, 3, 3, 3, 2],
                       length_m=[10.0] * 6 + [27.0], diameter_m=[0.125] * 7, roughness=[0.0] * 7)
    model = NetworkModel("loop", Medium.NATURAL_GAS, nodes, links, make_demands([1, 2, 3], [0.0] * 3), make_tanks())
    r = solve_gas(model)
    assert r.converged and r.iterations <= 30, r.message
    assert np.abs(r.link_flow).max() < 1e-12 and np.ptp(r.node_pressure_pa) < 1e-3


def _parallel_stagnant_pipes() -> NetworkModel:
    """Two parallel smooth pipes of different diameters feeding a house that draws 1.2e-7 kg/s
    (Re ~0.1), beside eight dead-end pipes (hypothesis found it in CI)."""
    n = 11
    nodes = make_nodes([f"n{i}" for i in range(n)], [NodeKind.SOURCE] + [NodeKind.JUNCTION] * (n - 1),
                       elevation_m=[0.25] + [0.0] * (n - 1), fixed_pressure_pa=[4e5] + [math.nan] * (n - 1))
    links = make_links([f"p{k}" for k in range(11)], [0] * 11, [0] * 11, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 7],
                       length_m=[10.0] * 11, diameter_m=[0.25] * 6 + [0.125, 0.25, 0.25, 0.25, 0.062],
                       roughness=[0.0] * 11)
    demand = [0.0] * 10
    demand[6] = 1.192e-7
    return NetworkModel("parallel", Medium.NATURAL_GAS, nodes, links, make_demands(list(range(1, n)), demand),
                        make_tanks())


def test_stagnant_parallel_pipes_fall_back_to_the_laminar_switch():
    """Pure Colebrook's plateau (lambda m^2 nearly flat below Re ~3) leaves a circulation of ~5e-7
    kg/s between the two parallel pipes, its law residual (~1e-5 Pa) above the 1e-11 x p tolerance:
    Newton stalls. The solver then solves with the laminar switch, and says so."""
    r = solve_gas(_parallel_stagnant_pipes())
    assert r.converged and r.extra["laminar_fallback"] and "laminar switch" in r.message
    assert r.link_flow[[6, 10]].sum() == pytest.approx(1.192e-7, abs=1e-10)
    assert (r.link_flow[[6, 10]] > 0).all()                 # no circulation left
    plain = GasSolver(_parallel_stagnant_pipes())._solve()
    assert not plain.converged                              # what the fallback is for


def test_stagnant_parallel_pipes_converge_with_the_laminar_switch():
    r = solve_gas(_parallel_stagnant_pipes(), options=GasOptions(laminar_switch=True))
    assert r.converged and r.link_flow[[6, 10]].sum() == pytest.approx(1.192e-7, abs=1e-10)


@settings(max_examples=40, deadline=None)
@given(random_networks())
def test_random_networks_converge_with_pure_colebrook(model):
    # stagnant loops: flows whose answer is on Colebrook's steep segment below Re 1e-3; a stagnant
    # circulation that stalls falls back to the laminar switch (and says so), never a stall
    r = solve_gas(model)
    assert r.converged, r.message
    assert r.residual < 1e-8
    assert r.iterations <= 30 or r.extra.get("laminar_fallback")


def test_settle_reversals_puts_a_pipe_that_circles_zero_at_zero():
    re_unit = np.array([1e-6, 1e-6])
    pipes = np.array([0, 1], np.int64)
    flipped = np.zeros(2, np.bool_)
    settled = np.zeros(2, np.bool_)
    m_old = np.array([2e-6, 1e-3])       # Re 2 (flat stretch) and Re 1000
    m_new = np.array([-1e-6, -1e-3])
    assert gk.settle_reversals(pipes, m_old, m_new.copy(), re_unit, gk.RE_FLOOR, 3.0, flipped, settled) == 0
    assert flipped.tolist() == [True, False]   # the Re-1000 reversal is a real one
    m_next = np.array([2e-6, 1e-3])
    assert gk.settle_reversals(pipes, m_new, m_next, re_unit, gk.RE_FLOOR, 3.0, flipped, settled) == 1
    assert m_next.tolist() == [0.0, 1e-3]
    assert settled.tolist() == [True, False]
    # inside the steep segment (below Re 1e-3) a sign change is rounding, not a cycle
    flipped[:] = True
    tiny = np.array([-1e-10, 1e-3])
    assert gk.settle_reversals(pipes, np.array([1e-10, 1e-3]), tiny, re_unit, gk.RE_FLOOR, 3.0, flipped,
                               settled) == 0


def test_max_relative_change():
    assert gk.max_relative_change(np.array([1.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0])) == pytest.approx(0.5)
    assert gk.max_relative_change(np.array([np.nan]), np.array([1.0])) == 1.0


@pytest.mark.parametrize("budget", [0, 1000])
def test_newton_steps_by_conjugate_gradients_give_the_factorized_answer(networks_dir, monkeypatch, budget):
    # near the answer only a few conductances still move (pipes near zero flow), and CG from the
    # last factorization takes the step; whether it may (budget) must not change the answer
    from pipetwin.twin.io.tabular import read_tabular
    from pipetwin.twin.solve.linalg import LaplacianSystem

    model = read_tabular(networks_dir / "grid10k")
    exact = GasSolver(model).solve()
    monkeypatch.setattr(LaplacianSystem, "pcg_budget", lambda self: budget)
    r = GasSolver(model).solve()
    assert r.converged and r.iterations == exact.iterations
    if budget:
        assert r.extra["cg_iterations"] > 0 and r.extra["factorizations"] < r.iterations
    else:
        assert r.extra["cg_iterations"] == 0 and r.extra["factorizations"] == r.iterations
    assert np.max(np.abs(r.node_pressure_pa - exact.node_pressure_pa)) < 1e-6
    assert np.max(np.abs(r.link_flow - exact.link_flow)) < 1e-9
    assert r.residual <= 1e-9 * float(np.sum(model.base_demand()[model.base_demand() > 0]))
