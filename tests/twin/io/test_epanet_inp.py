"""EPANET .inp reader/writer: against WNTR on the benchmark networks, round trips, unit
conversions, and corrupted files that must fail with a NetworkFileError naming the file."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.paths import network_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetwin.twin.io.epanet_inp import read_inp, write_inp
from pipetwin.twin.model import (
    PA_PER_M_WATER,
    LinkKind,
    LinkStatus,
    NetworkFileError,
    NetworkModel,
    NodeKind,
)

NAMES = ["Net1", "Net3", "Net6", "L-TOWN", "BWSN_Network_2"]
FT, INCH, GPM = 0.3048, 0.0254, 0.003785411784 / 60.0
PSI_M = FT / 0.4333                # metres of water per psi, EPANET's PSIperFT


def _net(name: str) -> Path:
    return network_file(f"{name}.inp")


def _wntr_model(path: Path):
    wntr = pytest.importorskip("wntr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wntr.network.WaterNetworkModel(str(path))


_CACHE: dict[str, tuple[NetworkModel, object]] = {}


def _loaded(name: str):
    """Our model and WNTR's of one benchmark file, read once per test session."""
    if name not in _CACHE:
        path = _net(name)
        _CACHE[name] = (read_inp(path), _wntr_model(path))
    return _CACHE[name]


def close(a, b, rtol=1e-9, atol=1e-9):
    return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol)


# -- element-by-element comparison with WNTR ----------------------------------------------------
def compare_with_wntr(m: NetworkModel, wn) -> None:
    """Every quantity WNTR also reads, each with its own tolerance. Flows use exact SI factors
    here and WNTR's rounded ones (rtol 1e-8); pump power uses EPANET's 745.7 W/hp (rtol 1e-6)."""
    nodes, links = m.nodes, m.links
    ni, li, pi = m.node_index(), m.link_index(), m.pattern_index()
    kinds = np.asarray(nodes.kind)
    lkinds = np.asarray(links.kind)
    assert (kinds == NodeKind.JUNCTION).sum() == wn.num_junctions
    assert (kinds == NodeKind.SOURCE).sum() == wn.num_reservoirs
    assert (kinds == NodeKind.TANK).sum() == wn.num_tanks
    assert (lkinds == LinkKind.PIPE).sum() == wn.num_pipes
    assert (lkinds == LinkKind.PUMP).sum() == wn.num_pumps
    assert np.isin(lkinds, [k.value for k in (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV, LinkKind.FCV,
                                               LinkKind.TCV, LinkKind.GPV)]).sum() == wn.num_valves
    default = wn.options.hydraulic.pattern if wn.options.hydraulic.pattern in wn.pattern_name_list else None
    ours_default = m.patterns[m.default_pattern][0] if m.default_pattern >= 0 else None
    assert ours_default == default

    base = m.base_demand()
    by_node: dict[int, list[str | None]] = {}
    for j in range(len(m.demands)):
        p = int(m.demands.pattern[j])
        by_node.setdefault(int(m.demands.node[j]), []).append(m.patterns[p][0] if p >= 0 else ours_default)
    for name in wn.junction_name_list:
        j, i = wn.get_node(name), ni[name]
        assert close(nodes.elevation_m[i], j.elevation), name
        dl = j.demand_timeseries_list
        assert close(base[i], sum(d.base_value for d in dl), rtol=1e-8, atol=1e-12), name
        assert sorted(by_node[i], key=str) == sorted(
            [d.pattern_name if d.pattern_name else default for d in dl], key=str), name
        assert close(nodes.x[i], j.coordinates[0]) and close(nodes.y[i], j.coordinates[1])
    for name in wn.reservoir_name_list:
        r, i = wn.get_node(name), ni[name]
        assert close(nodes.fixed_head_m[i], r.base_head), name
        hp = int(nodes.head_pattern[i])
        assert (m.patterns[hp][0] if hp >= 0 else None) == r.head_pattern_name
    tank_row = {int(n): k for k, n in enumerate(m.tanks.node)}
    for name in wn.tank_name_list:
        t, i = wn.get_node(name), ni[name]
        k = tank_row[i]
        assert close(nodes.elevation_m[i], t.elevation)
        assert close(m.tanks.init_level_m[k], t.init_level)
        assert close(m.tanks.min_level_m[k], t.min_level)
        assert close(m.tanks.max_level_m[k], t.max_level)
        assert close(m.tanks.diameter_m[k], t.diameter)
        assert close(m.tanks.min_volume_m3[k], t.min_vol)
        assert close(nodes.fixed_head_m[i], t.elevation + t.init_level)
        assert bool(m.tanks.overflow[k]) == bool(t.overflow)
    for name in wn.pipe_name_list:
        p, j = wn.get_link(name), li[name]
        assert close(links.length_m[j], p.length) and close(links.diameter_m[j], p.diameter), name
        assert close(links.roughness[j], p.roughness) and close(links.minor_loss[j], p.minor_loss), name
        assert bool(links.check_valve[j]) == bool(p.check_valve), name
        assert (links.status[j] == LinkStatus.CLOSED) == (p.initial_status.name == "Closed"), name
        assert nodes.ids[links.from_node[j]] == p.start_node_name
        assert nodes.ids[links.to_node[j]] == p.end_node_name
    for name in wn.pump_name_list:
        p, j = wn.get_link(name), li[name]
        if p.pump_type == "HEAD":
            c = m.curves[links.curve[j]]
            assert c.id == p.pump_curve_name and c.kind == "PUMP"
            pts = np.array(p.get_pump_curve().points)
            np.testing.assert_allclose(c.x, pts[:, 0], rtol=1e-8, atol=1e-12)
            np.testing.assert_allclose(c.y, pts[:, 1], rtol=1e-9, atol=1e-9)
        else:
            assert close(links.pump_power_w[j], p.power, rtol=1e-6)
        assert close(links.setting[j], p.speed_timeseries.base_value)
        sp = int(links.speed_pattern[j])
        assert (m.patterns[sp][0] if sp >= 0 else None) == p.speed_pattern_name
        assert (links.status[j] == LinkStatus.CLOSED) == (p.initial_status.name == "Closed"), name
    for name in wn.valve_name_list:
        v, j = wn.get_link(name), li[name]
        kind = LinkKind(links.kind[j])
        assert kind.name == v.valve_type
        assert close(links.diameter_m[j], v.diameter) and close(links.minor_loss[j], v.minor_loss)
        assert LinkStatus(links.status[j]).name.lower() == v.initial_status.name.lower(), name
        setting = links.setting[j]
        if kind in (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV):
            setting = setting / PA_PER_M_WATER          # WNTR keeps pressure as metres of water
        assert close(setting, v.initial_setting, rtol=1e-8, atol=1e-12), name
    assert [p for p, _ in m.patterns] == list(wn.pattern_name_list)
    for pid, values in m.patterns:
        np.testing.assert_allclose(values, wn.get_pattern(pid).multipliers, rtol=1e-12)
    t, wt = m.times, wn.options.time
    assert (t.duration_s, t.hydraulic_step_s, t.pattern_step_s, t.pattern_start_s, t.report_step_s,
            t.report_start_s, t.start_clocktime_s) == (
        wt.duration, wt.hydraulic_timestep, wt.pattern_timestep, wt.pattern_start, wt.report_timestep,
        wt.report_start, wt.start_clocktime)
    h = wn.options.hydraulic
    w = m.water
    assert w.headloss == h.headloss and w.trials == h.trials
    assert close(w.accuracy, h.accuracy) and close(w.specific_gravity, h.specific_gravity)
    assert close(w.demand_multiplier, h.demand_multiplier) and close(w.emitter_exponent, h.emitter_exponent)
    assert close(w.kinematic_viscosity_m2_s, h.viscosity * 1.1e-5 * FT**2, rtol=1e-12)
    compare_controls(m, wn)


def compare_controls(m: NetworkModel, wn) -> None:
    """Same count and order; each control's link, trigger time or threshold, and action."""
    assert len(m.controls) == len(wn.control_name_list)
    for k, c in enumerate(m.controls):
        wc = wn.get_control(f"control {k + 1}")
        cond, act = wc._condition, wc._then_actions[0]
        assert act._target_obj.name == m.links.ids[c.link]
        if c.trigger in ("time", "clocktime"):
            assert close(c.time_s, cond._threshold)
        else:
            node = m.nodes.ids[c.node]
            assert cond._source_obj.name == node
            threshold = c.threshold
            if m.nodes.kind[c.node] == NodeKind.JUNCTION:
                threshold /= PA_PER_M_WATER
            assert close(threshold, cond._threshold, rtol=1e-9)
            assert ("lt" in str(cond._relation)) == (c.trigger == "below")
        if c.status is not None and act._attribute == "status":
            assert int(act._value) == int(c.status)
        elif c.status == LinkStatus.CLOSED:          # a pump given speed 0
            assert act._attribute == "base_speed" and act._value == 0.0
        elif c.setting is not None:
            kind = LinkKind(m.links.kind[c.link])
            pressure = kind in (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV)
            value = c.setting / PA_PER_M_WATER if pressure else c.setting
            assert close(value, act._value, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_matches_wntr(name):
    m, wn = _loaded(name)
    compare_with_wntr(m, wn)


def test_benchmark_specifics():
    """A few values checked by hand from the files, independent of WNTR."""
    m, _ = _loaded("Net1")
    li, ni = m.link_index(), m.node_index()
    assert m.name == "EPANET Example Network 1"
    assert close(m.nodes.elevation_m[ni["10"]], 710 * FT)
    assert close(m.base_demand()[ni["11"]], 150 * GPM, rtol=1e-12)
    assert close(m.links.diameter_m[li["10"]], 18 * INCH)
    assert m.links.kind[li["9"]] == LinkKind.PUMP and m.curves[m.links.curve[li["9"]]].kind == "PUMP"
    assert m.nodes.kind[ni["9"]] == NodeKind.SOURCE and close(m.nodes.fixed_head_m[ni["9"]], 800 * FT)
    assert m.times.duration_s == 86400 and m.times.pattern_step_s == 7200
    c0 = m.controls[0]
    assert (c0.trigger, c0.status, m.nodes.ids[c0.node]) == ("below", LinkStatus.OPEN, "2")
    assert close(c0.threshold, 110 * FT)
    assert m.patterns[m.default_pattern][0] == "1"
    m, _ = _loaded("Net3")
    li = m.link_index()
    assert m.links.status[li["10"]] == LinkStatus.CLOSED     # [STATUS] 10 Closed
    assert m.links.status[li["330"]] == LinkStatus.CLOSED    # pipe status column
    assert m.controls[0].trigger == "time" and m.controls[0].time_s == 3600
    m, _ = _loaded("L-TOWN")
    ni, li = m.node_index(), m.link_index()
    n1 = m.demands.node == ni["n1"]
    assert n1.sum() == 3 and close(m.demands.base[n1].sum(), 0.660240 / 3600)   # [DEMANDS] replaced
    assert close(m.links.setting[li["PRV-1"]], 40.0 * PA_PER_M_WATER)
    assert m.links.status[li["PRV-1"]] == LinkStatus.ACTIVE
    assert m.default_pattern == -1                           # "Pattern 1" names no pattern
    assert m.times.hydraulic_step_s == 300


# -- round trips -------------------------------------------------------------------------------
def assert_models_equal(a: NetworkModel, b: NetworkModel, rtol: float = 1e-9) -> None:
    for table in ("nodes", "links", "demands", "tanks"):
        ta, tb = getattr(a, table), getattr(b, table)
        for col, va in vars(ta).items():
            va, vb = np.asarray(va), np.asarray(getattr(tb, col))
            assert va.shape == vb.shape, f"{table}.{col}"
            if va.dtype.kind == "f":
                np.testing.assert_allclose(va, vb, rtol=rtol, atol=1e-12, equal_nan=True,
                                           err_msg=f"{table}.{col}")
            else:
                assert (va == vb).all(), f"{table}.{col}"
    assert [p for p, _ in a.patterns] == [p for p, _ in b.patterns]
    for (_, va), (_, vb) in zip(a.patterns, b.patterns):
        np.testing.assert_allclose(va, vb, rtol=rtol)
    assert a.default_pattern == b.default_pattern
    assert [(c.id, c.kind) for c in a.curves] == [(c.id, c.kind) for c in b.curves]
    for ca, cb in zip(a.curves, b.curves):
        np.testing.assert_allclose(ca.x, cb.x, rtol=rtol, atol=1e-15)
        np.testing.assert_allclose(ca.y, cb.y, rtol=rtol, atol=1e-15)
    assert len(a.controls) == len(b.controls)
    for ca, cb in zip(a.controls, b.controls):
        assert (ca.link, ca.status, ca.trigger, ca.node) == (cb.link, cb.status, cb.trigger, cb.node)
        for f in ("setting", "threshold", "time_s"):
            x, y = getattr(ca, f), getattr(cb, f)
            assert (x is None) == (y is None)
            if x is not None:
                assert (math.isnan(x) and math.isnan(y)) or close(x, y, rtol), f
    assert vars(a.times) == vars(b.times)
    for f, x in vars(a.water).items():
        y = getattr(b.water, f)
        assert x == y if isinstance(x, str) else close(x, y, rtol, 0), f
    assert a.vertices.keys() == b.vertices.keys()
    for k in a.vertices:
        np.testing.assert_allclose(a.vertices[k], b.vertices[k], rtol=rtol)
    assert a.name == b.name


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_wntr_reads_written_file(name, tmp_path):
    m, _ = _loaded(name)
    out = tmp_path / f"{name}.inp"
    write_inp(m, out)
    again = read_inp(out)
    assert_models_equal(m, again)
    compare_with_wntr(again, _wntr_model(out))      # EPANET's reader (through WNTR) agrees
    write_inp(again, tmp_path / "twice.inp")          # and the written file is a fixed point
    assert_models_equal(again, read_inp(tmp_path / "twice.inp"), rtol=1e-12)


def _epanet_heads(path: Path, steps: int = 4) -> dict[str, np.ndarray]:
    """Node heads (m) over the first hydraulic steps, solved by EPANET 2.2 itself (the toolkit
    library WNTR ships) reading ``path`` with EPANET's own parser."""
    toolkit = pytest.importorskip("wntr.epanet.toolkit")
    en = toolkit.ENepanet()
    en.ENopen(str(path), str(path.with_suffix(".rpt")), "")
    try:
        scale = FT if en.ENgetflowunits() < 5 else 1.0      # codes 0-4 are US flow units
        en.ENopenH()
        en.ENinitH(0)
        n = en.ENgetcount(0)
        rows = []
        for _ in range(steps):
            en.ENrunH()
            rows.append([en.ENgetnodevalue(i, 10) * scale for i in range(1, n + 1)])
            if en.ENnextH() <= 0:
                break
        ids = [en.ENgetnodeid(i) for i in range(1, n + 1)]
        en.ENcloseH()
    finally:
        en.ENclose()
    return dict(zip(ids, np.array(rows).T))


def _assert_epanet_agrees(original: Path, written: Path, atol: float) -> None:
    a, b = _epanet_heads(original), _epanet_heads(written)
    assert a.keys() == b.keys()
    for nid in a:
        np.testing.assert_allclose(b[nid], a[nid], atol=atol, err_msg=nid)


@pytest.mark.parametrize("name", ["Net1", "Net3", "L-TOWN", "Net6"])
def test_epanet_solves_written_file_like_the_original(name, tmp_path):
    """EPANET reads our SI file and computes the heads it computes from the original (to its
    convergence accuracy and its own rounded unit constants)."""
    m, _ = _loaded(name)
    write_inp(m, tmp_path / "w.inp")
    _assert_epanet_agrees(_net(name), tmp_path / "w.inp", atol=0.02)


def test_round_trip_in_cmh_and_gpm(tmp_path):
    m, _ = _loaded("Net3")
    for units in ("CMH", "GPM"):
        write_inp(m, tmp_path / f"{units}.inp", flow_units=units)
        assert_models_equal(m, read_inp(tmp_path / f"{units}.inp"))


# -- unit conversions ---------------------------------------------------------------------------
def _write(tmp_path: Path, text: str, name: str = "net.inp") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


US_NET = """[TITLE]
US units test
[JUNCTIONS]
 J1  100  100        ; elev ft, demand gpm
 J2  90   0    PAT
 J3  80
[RESERVOIRS]
 R1  300  PAT
[TANKS]
 T1  200  10  2  20  40  100  *  YES
 T2  200  10  2  20  0   0    VC
[PIPES]
 P1  J1  J2  1000  12  0.5  0.2  Open
 P2  J2  J3  500   8   0.5  CV
 P3  J3  T1  500   8   0.5  0  Closed
 P4  J3  T2  500   8   0.5
[PUMPS]
 PU1 R1 J1 HEAD C1 SPEED 1.2 PATTERN PAT
 PU2 R1 J1 POWER 10
[VALVES]
 V1  J1 J3 6 PRV 50 0.3
 V2  J2 J3 6 FCV 100
 V3  J2 J1 6 PBV 5
 V4  J3 J2 6 GPV C2
 V5  J1 J2 6 TCV 2.5
[DEMANDS]
 J3  10  PAT
 J3  20
[EMITTERS]
 J2  2
[STATUS]
 V5  Open
 PU2 0.8
[PATTERNS]
 PAT 1 2 3
[CURVES]
;PUMP: pump curve
 C1  0     200
 C1  1000  150
 C1  2000  50
 C2  0     0
 C2  500   10
;VOLUME:
 VC  0  0
 VC  20 1000
[CONTROLS]
 LINK PU1 CLOSED IF NODE T1 ABOVE 15
 LINK PU1 OPEN IF NODE J1 BELOW 40
 LINK V1 45 AT TIME 6 HOURS
 LINK V2 200 AT CLOCKTIME 6 PM
 LINK PU2 0 AT CLOCKTIME 6:30 AM
 LINK P1 CLOSED AT TIME 1:30
[OPTIONS]
 Units GPM
 Headloss D-W
 Viscosity 2
 Specific Gravity 1.0
 Demand Multiplier 1.5
 Emitter Exponent 0.5
 Quality None
[TIMES]
 Duration 6 HOURS
 Hydraulic Timestep 0:30
 Pattern Timestep 90 min
 Report Start 1:00:30
 Start ClockTime 12 pm
[COORDINATES]
 J1 1 2
[VERTICES]
 P1 0.5 1
 P1 0.7 1.5
[END]
this text after [END] is ignored
"""


def test_us_units(tmp_path):
    m = read_inp(_write(tmp_path, US_NET))
    ni, li, ci = m.node_index(), m.link_index(), m.curve_index()
    n, L, w = m.nodes, m.links, m.water
    psi_pa = PSI_M * PA_PER_M_WATER
    assert close(n.elevation_m[ni["J1"]], 100 * FT)
    assert close(m.base_demand()[ni["J1"]], 100 * GPM, rtol=1e-12)
    assert close(m.base_demand()[ni["J3"]], 30 * GPM, rtol=1e-12)        # [DEMANDS] replaced J3's
    assert close(n.fixed_head_m[ni["R1"]], 300 * FT) and n.head_pattern[ni["R1"]] == 0
    assert close(L.length_m[li["P1"]], 1000 * FT) and close(L.diameter_m[li["P1"]], 12 * INCH)
    assert close(L.roughness[li["P1"]], 0.5e-3 * FT)                      # millifeet, D-W
    assert close(L.minor_loss[li["P1"]], 0.2)
    assert L.check_valve[li["P2"]] and L.status[li["P2"]] == LinkStatus.OPEN
    assert L.status[li["P3"]] == LinkStatus.CLOSED
    assert close(L.setting[li["V1"]], 50 * psi_pa) and close(L.minor_loss[li["V1"]], 0.3)
    assert close(L.setting[li["V2"]], 100 * GPM, rtol=1e-12)
    assert close(L.setting[li["V3"]], 5 * psi_pa)
    assert L.curve[li["V4"]] == ci["C2"] and m.curves[ci["C2"]].kind == "HEADLOSS"
    assert close(m.curves[ci["C2"]].x[1], 500 * GPM, rtol=1e-12) and close(m.curves[ci["C2"]].y[1], 10 * FT)
    assert L.status[li["V5"]] == LinkStatus.OPEN and close(L.setting[li["V5"]], 2.5)
    assert L.status[li["V1"]] == LinkStatus.ACTIVE
    c1 = m.curves[ci["C1"]]
    assert c1.kind == "PUMP" and close(c1.x[2], 2000 * GPM, rtol=1e-12) and close(c1.y[0], 200 * FT)
    assert close(L.setting[li["PU1"]], 1.2) and L.speed_pattern[li["PU1"]] == 0
    assert close(L.pump_power_w[li["PU2"]], 7457.0)                      # EPANET's 0.7457 kW/hp
    assert close(L.setting[li["PU2"]], 0.8) and L.status[li["PU2"]] == LinkStatus.OPEN
    vc = m.curves[ci["VC"]]
    assert vc.kind == "VOLUME" and close(vc.x[1], 20 * FT) and close(vc.y[1], 1000 * FT**3)
    t = m.tanks
    k1, k2 = list(t.node).index(ni["T1"]), list(t.node).index(ni["T2"])
    assert close(t.init_level_m[k1], 10 * FT) and close(t.diameter_m[k1], 40 * FT)
    assert close(t.min_volume_m3[k1], 100 * FT**3) and t.overflow[k1] and not t.overflow[k2]
    assert t.volume_curve[k2] == ci["VC"] and t.volume_curve[k1] == -1
    assert close(n.fixed_head_m[ni["T1"]], 210 * FT)
    # emitter: 2 gpm/psi^0.5 -> m3/s per m^0.5 of pressure head
    assert close(n.emitter_coeff[ni["J2"]], 2 * GPM / PSI_M**0.5)
    c = m.controls
    assert (c[0].trigger, c[0].status, c[0].setting) == ("above", LinkStatus.CLOSED, None)
    assert close(c[0].threshold, 15 * FT)                                 # tank: level, m
    assert c[1].trigger == "below" and close(c[1].threshold, 40 * psi_pa)  # junction: Pa gauge
    assert c[2].trigger == "time" and c[2].time_s == 6 * 3600 and close(c[2].setting, 45 * psi_pa)
    assert c[3].trigger == "clocktime" and c[3].time_s == 18 * 3600 and close(c[3].setting, 200 * GPM, 1e-12)
    assert c[4].time_s == 6.5 * 3600 and c[4].status == LinkStatus.CLOSED and c[4].setting is None
    assert c[5].time_s == 5400 and c[5].status == LinkStatus.CLOSED
    assert w.headloss == "D-W" and close(w.demand_multiplier, 1.5)
    assert close(w.kinematic_viscosity_m2_s, 2 * 1.1e-5 * FT**2)
    tm = m.times
    assert (tm.duration_s, tm.hydraulic_step_s, tm.pattern_step_s, tm.report_start_s,
            tm.start_clocktime_s) == (21600, 1800, 5400, 3630, 43200)
    assert (n.x[ni["J1"]], n.y[ni["J1"]]) == (1.0, 2.0) and math.isnan(n.x[ni["J2"]])
    np.testing.assert_allclose(m.vertices["P1"], [[0.5, 1], [0.7, 1.5]])
    assert m.default_pattern == -1                                        # no pattern "1"
    # and it survives a round trip through an SI file, and WNTR reads that file
    write_inp(m, tmp_path / "si.inp")
    assert_models_equal(m, read_inp(tmp_path / "si.inp"))
    wn = _wntr_model(tmp_path / "si.inp")
    assert wn.num_valves == 5 and wn.num_pumps == 2 and len(wn.control_name_list) == 6
    # EPANET solves both files alike: every conversion above is the one EPANET makes
    _assert_epanet_agrees(tmp_path / "net.inp", tmp_path / "si.inp", atol=1e-3)


SI_NET = """[JUNCTIONS]
 J1  10  2
 J2  12  0
[RESERVOIRS]
 R1  50
[PIPES]
 P1  R1  J1  100  300  0.1
 P2  J1  J2  100  250  0.1  0.5
[VALVES]
 V1  J1 J2 200 PRV 30
 V2  J2 J1 200 FCV 10
[PUMPS]
 PU R1 J2 POWER 7.5
[EMITTERS]
 J2  0.5
[CONTROLS]
 LINK V1 25 IF NODE J2 ABOVE 20
[OPTIONS]
 UNITS {units}
 HEADLOSS D-W
 Pattern 1
[TIMES]
 DURATION 24
"""


@pytest.mark.parametrize("units, q", [("LPS", 1e-3), ("CMH", 1 / 3600), ("LPM", 1e-3 / 60),
                                      ("MLD", 1 / 86.4), ("CMD", 1 / 86400)])
def test_si_units(tmp_path, units, q):
    m = read_inp(_write(tmp_path, SI_NET.format(units=units)))
    ni, li = m.node_index(), m.link_index()
    L = m.links
    assert close(m.base_demand()[ni["J1"]], 2 * q)
    assert close(L.length_m[li["P1"]], 100) and close(L.diameter_m[li["P1"]], 0.3)
    assert close(L.roughness[li["P1"]], 1e-4)                              # mm -> m
    assert close(L.setting[li["V1"]], 30 * PA_PER_M_WATER)
    assert close(L.setting[li["V2"]], 10 * q)
    assert close(L.pump_power_w[li["PU"]], 7500.0)
    assert close(m.nodes.emitter_coeff[ni["J2"]], 0.5 * q)                 # per m^0.5, SG 1
    assert close(m.controls[0].threshold, 20 * PA_PER_M_WATER)
    assert close(m.controls[0].setting, 25 * PA_PER_M_WATER)
    assert m.times.duration_s == 86400 and m.default_pattern == -1
    assert np.isnan(L.setting[li["P1"]]) and L.setting[li["PU"]] == 1.0


def test_specific_gravity_and_kpa(tmp_path):
    """EPANET turns a pressure into head with the specific gravity; kPa via 6.895 kPa/psi."""
    text = SI_NET.format(units="LPS") + "[OPTIONS]\n Specific Gravity 0.8\n Pressure KPA\n"
    m = read_inp(_write(tmp_path, text))
    head_per_kpa = FT / (6.895 * 0.4333 * 0.8)
    assert close(m.links.setting[m.link_index()["V1"]], 30 * head_per_kpa * PA_PER_M_WATER)
    write_inp(m, tmp_path / "out.inp")
    assert_models_equal(m, read_inp(tmp_path / "out.inp"))


def test_keywords_case_and_comments(tmp_path):
    text = "; leading comment\n" + SI_NET.format(units="lps").lower().replace("j1", "J1") \
        .replace("j2", "J2") + "[coordinates] ; comment\n"
    text += "[OPTIONS]\n Something Unknown 42\n"          # unknown options are ignored
    m = read_inp(_write(tmp_path, text))
    assert m.n_nodes == 3 and m.water.headloss == "D-W"


# -- errors ---------------------------------------------------------------------------------------
BAD = [
    ("[JUNCTIONS]\n J1 10\n[PIPES]\n P1 J1 J9 1 1 1\n", 4, "unknown node 'J9'"),
    ("[JUNCTIONS]\n J1 ten\n", 2, "elevation 'ten' is not a number"),
    ("[JUNCTIONS]\n J1\n", 2, "too few fields"),
    ("[JUNCTION]\n J1 1\n", 1, "unknown section"),
    ("[RESERVOIRS]\n R 1\n[PIPES]\n P R R 1 1 1\n", 4, "to itself"),
    ("[RESERVOIRS]\n R 1\n[JUNCTIONS]\n J 1\n[PUMPS]\n P R J HEAD C\n", 6, "unknown curve 'C'"),
    ("[RESERVOIRS]\n R 1 PX\n", 2, "unknown pattern 'PX'"),
    ("[RESERVOIRS]\n R 1\n[JUNCTIONS]\n R 1\n", 4, "duplicate node id 'R'"),
    ("[RESERVOIRS]\n R 1\n[JUNCTIONS]\n J 1\n[PIPES]\n P R J 10 -3 100\n", 6, "diameter must be positive"),
    ("[RESERVOIRS]\n R 1\n[JUNCTIONS]\n J 1\n[PIPES]\n P R J 10 3 100\n P R J 10 3 100\n", 7,
     "duplicate link id 'P'"),
    ("[OPTIONS]\n Units XYZ\n[RESERVOIRS]\n R 1\n", 2, "unknown flow units"),
    ("[TIMES]\n Duration soon\n[RESERVOIRS]\n R 1\n", 2, "not a valid time"),
    ("[JUNCTIONS]\n J 1\n", None, "no reservoir or tank"),
    ("", None, "defines no nodes"),
    ("J1 10\n[JUNCTIONS]\n", 1, "before the first"),
    ("[RESERVOIRS]\n R 1\n[CONTROLS]\n LINK X OPEN AT TIME 1\n", 4, "unknown link 'X'"),
    ("[RESERVOIRS]\n R 1\n[TANKS]\n T 1 5 6 7 10\n", 4, "minimum <= initial <= maximum"),
    ("[CURVES]\n C 1 1\n C 0 2\n[RESERVOIRS]\n R 1\n", 3, "x values must increase"),
]


@pytest.mark.parametrize("text, line, problem", BAD)
def test_errors_name_file_line_and_problem(tmp_path, text, line, problem):
    path = _write(tmp_path, text)
    with pytest.raises(NetworkFileError) as err:
        read_inp(path)
    e = err.value
    assert e.path == str(path) and str(path) in str(e)
    assert e.where == line
    assert problem in e.problem


def test_missing_file_is_a_network_file_error(tmp_path):
    with pytest.raises(NetworkFileError):
        read_inp(tmp_path / "nope.inp")


# -- property tests: corrupted files always fail cleanly --------------------------------------------
SMALL = """[TITLE]
Small net for corruption tests
[JUNCTIONS]
 JA 10
 JB 12
 JC 11
 JD 9
[RESERVOIRS]
 RA 50
[TANKS]
 TA 20 3 1 6 12
[PIPES]
 PA JA JB 1000 300 130
 PB JB JC 800 250 130
 PC JC TA 500 200 130
 PD JC JD 400 150 120
[PUMPS]
 PUA RA JA HEAD CA
[VALVES]
 VA JD JB 200 PRV 30
[DEMANDS]
 JB 0.5
[STATUS]
 VA OPEN
[EMITTERS]
 JD 0.1
[PATTERNS]
 PATA 1.0 1.2 0.8
[CURVES]
 CA 50 40
[CONTROLS]
 LINK PUA CLOSED IF NODE TA ABOVE 5.5
 LINK PB CLOSED AT TIME 2
[OPTIONS]
 Units LPS
 Headloss H-W
 Trials 40
 Pattern PATA
[TIMES]
 Duration 24:00
[COORDINATES]
 JA 0 0
 RA 1 1
[END]
"""
LINES = SMALL.split("\n")


def _section_of_lines() -> list[str]:
    out, sec = [], ""
    for line in LINES:
        if line.startswith("["):
            sec = line
        out.append(sec)
    return out


SECTION_OF = _section_of_lines()
DATA = [i for i, line in enumerate(LINES) if line.strip() and not line.startswith("[")
        and SECTION_OF[i] != "[TITLE]"]
# rows whose every field is required: dropping any one must fail
STRICT = [i for i in DATA if SECTION_OF[i] not in ("[PATTERNS]", "[DEMANDS]")] + \
    [i for i in DATA if LINES[i].strip() == "JB 0.5"]
NODE_ROWS = [i for i in DATA if SECTION_OF[i] in ("[JUNCTIONS]", "[RESERVOIRS]", "[TANKS]")]
ELEMENT_ROWS = NODE_ROWS + [i for i in DATA if SECTION_OF[i] in ("[PIPES]", "[PUMPS]", "[VALVES]")]
NUMERIC = [(i, k) for i in DATA for k, tok in enumerate(LINES[i].split())
           if tok.replace(".", "", 1).isdigit()]
GARBAGE_SECTIONS = sorted({SECTION_OF[i] for i in DATA} - {"[OPTIONS]"})
_TMP = Path(tempfile.mkdtemp(prefix="epanet_inp_test_"))
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_text(text: str | bytes) -> Path:
    path = _TMP / "corrupt.inp"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _assert_fails(text: str | bytes) -> NetworkFileError:
    path = _read_text(text)
    with pytest.raises(NetworkFileError) as err:
        read_inp(path)
    assert str(path) in str(err.value) and err.value.path == str(path)
    return err.value


def _fails_cleanly_or_reads(text: str | bytes) -> None:
    path = _read_text(text)
    try:
        m = read_inp(path)
    except NetworkFileError as e:
        assert str(path) in str(e)
    else:
        assert isinstance(m, NetworkModel)


def test_small_file_is_valid():
    m = read_inp(_read_text(SMALL))
    assert m.n_nodes == 6 and m.n_links == 6 and len(m.controls) == 2
    assert m.links.status[m.link_index()["VA"]] == LinkStatus.OPEN


@PROPS
@given(st.sampled_from(STRICT), st.data())
def test_dropping_a_field_fails(i, data):
    toks = LINES[i].split()
    k = data.draw(st.integers(0, len(toks) - 1))
    lines = list(LINES)
    lines[i] = " " + " ".join(toks[:k] + toks[k + 1:])
    e = _assert_fails("\n".join(lines))
    assert e.where == i + 1


@PROPS
@given(st.sampled_from(NUMERIC), st.text("abcdefghxyzQW_-", min_size=1, max_size=6))
def test_replacing_a_number_by_text_fails(pos, word):
    i, k = pos
    toks = LINES[i].split()
    toks[k] = word
    lines = list(LINES)
    lines[i] = " " + " ".join(toks)
    e = _assert_fails("\n".join(lines))
    assert e.where == i + 1


@PROPS
@given(st.sampled_from(NODE_ROWS))
def test_deleting_a_named_node_fails(i):
    _assert_fails("\n".join(LINES[:i] + LINES[i + 1:]))


@PROPS
@given(st.sampled_from(ELEMENT_ROWS), st.data())
def test_duplicate_id_fails(i, data):
    same = [j for j in ELEMENT_ROWS if SECTION_OF[j] == SECTION_OF[i]]
    where = data.draw(st.sampled_from(same))
    lines = LINES[:where + 1] + [LINES[i]] + LINES[where + 1:]
    e = _assert_fails("\n".join(lines))
    assert "duplicate" in e.problem


_GARBAGE_TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=';"['),
                         min_size=1, max_size=8).map(lambda s: "~" + s)


@PROPS
@given(st.sampled_from(GARBAGE_SECTIONS), st.lists(_GARBAGE_TOKEN, min_size=1, max_size=9), st.data())
def test_garbage_line_fails(section, tokens, data):
    rows = [i for i in DATA if SECTION_OF[i] == section]
    at = data.draw(st.sampled_from(rows))
    lines = LINES[:at] + [" " + " ".join(tokens)] + LINES[at:]
    e = _assert_fails("\n".join(lines))
    assert e.where == at + 1


@PROPS
@given(_GARBAGE_TOKEN, st.integers(0, LINES.index("[END]")))   # after [END] is ignored
def test_garbage_section_header_fails(name, at):
    _assert_fails("\n".join(LINES[:at] + ["[" + name + "]"] + LINES[at:]))


@PROPS
@given(st.integers(0, len(SMALL)))
def test_truncated_file_reads_or_fails_cleanly(n):
    _fails_cleanly_or_reads(SMALL[:n])


@PROPS
@given(st.binary(max_size=400))
def test_random_bytes_fail(blob):
    _assert_fails(blob)


@PROPS
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=5))
def test_random_byte_edits_read_or_fail_cleanly(edits):
    raw = bytearray(SMALL.encode())
    for pos, b in edits:
        raw[pos] = b
    _fails_cleanly_or_reads(bytes(raw))


def test_control_first_word_is_free_as_in_epanet(tmp_path):
    """EPANET reads a control's link id, action and condition, not its first word: wntr writes
    'Pump 10 OPEN AT TIME 1' and 'IF TANK 2 ABOVE ...'; both must read."""
    text = (_net("Net1").read_text().replace("[CONTROLS]", "[CONTROLS]\n Pump 9 OPEN AT TIME 1\n"
                                                         " Pipe 10 CLOSED IF Tank 2 ABOVE 145\n"))
    path = tmp_path / "controls.inp"
    path.write_text(text)
    model = read_inp(path)
    base = read_inp(_net("Net1"))
    assert len(model.controls) == len(base.controls) + 2
    links = model.link_index()
    assert any(c.link == links["9"] and c.trigger == "time" and c.time_s == 3600 for c in model.controls)
    assert any(c.link == links["10"] and c.trigger == "above" and c.node == model.node_index()["2"]
               for c in model.controls)
