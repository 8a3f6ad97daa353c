"""The network model: plain structure-of-arrays data, no solver inside.

Everything here is SI (Pa, m, m3/s or kg/s, K). Importers convert once at the edge; solvers take a
model and return results without touching it (as WNTR keeps ``WaterNetworkModel`` apart from its
simulators). Element order is the index every solver array is aligned to; string ids stay stable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

# Water pressure head: EPANET's metre of water, specific gravity 1.
PA_PER_M_WATER = 9806.65
STANDARD_GRAVITY = 9.80665


class NodeKind(IntEnum):
    JUNCTION = 0   # free pressure, may have a demand
    SOURCE = 1     # fixed pressure (gas gate station) or fixed head (water reservoir)
    CONSUMER = 2   # a junction whose demand is a customer's offtake
    TANK = 3       # water storage: fixed head within a period, level integrated between periods


class LinkKind(IntEnum):
    PIPE = 0
    PUMP = 1
    PRV = 2               # pressure reducing valve / gas regulator: holds downstream pressure
    PSV = 3               # pressure sustaining valve: holds upstream pressure
    PBV = 4               # pressure breaker valve: fixed pressure drop
    FCV = 5               # flow control valve
    TCV = 6               # throttle control valve (loss coefficient)
    GPV = 7               # general purpose valve (headloss curve)
    VALVE = 8             # isolation valve: open or closed, lossless (minor loss allowed)
    SHORT_PIPE = 9        # lossless connection (GasLib shortPipe)
    COMPRESSOR_RATIO = 10   # raises pressure by a fixed ratio p_out / p_in = setting
    COMPRESSOR_OUTLET = 11  # holds outlet pressure at setting (Pa, absolute) while it can
    RESISTOR = 12         # fixed drag: dp = setting * rho-scaled q|q| (GasLib resistor)


class LinkStatus(IntEnum):
    CLOSED = 0
    OPEN = 1
    ACTIVE = 2   # valves/regulators controlling to their setting


class Medium(IntEnum):
    WATER = 0
    NATURAL_GAS = 1


WATER_KINDS = (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV, LinkKind.FCV, LinkKind.TCV, LinkKind.GPV)
VALVE_KINDS = WATER_KINDS + (LinkKind.VALVE,)


@dataclass
class Compressibility:
    """Z(p) for the gas law. ``linear``: Z = offset + slope_per_pa * p_abs (pandapipes);
    ``constant``: Z = z; ``papay``: Papay's correlation from pseudo-critical properties."""

    model: str = "linear"
    z: float = 1.0
    offset: float = 1.0
    slope_per_pa: float = -2.2e-08
    pseudocritical_pressure_pa: float = 4.6e6
    pseudocritical_temperature_k: float = 193.08


@dataclass
class GasProperties:
    """The gas and how its pipes are modelled; the defaults are an H-gas at 10 °C."""

    normal_density_kg_m3: float = 0.7316810659969047
    temperature_k: float = 283.15
    dynamic_viscosity_pa_s: float = 1.0697246667293022e-05
    normal_pressure_pa: float = 101325.0
    normal_temperature_k: float = 273.15
    compressibility: Compressibility = field(default_factory=Compressibility)
    friction: str = "colebrook"      # colebrook | nikuradse | swamee-jain | weymouth | panhandle-a | panhandle-b
    gravity_m_s2: float = 9.81
    calorific_value_j_m3: float = 3.6454e7   # gross, at normal conditions
    molar_mass_kg_kmol: float = 16.62
    pipe_efficiency: float = 1.0     # Weymouth / Panhandle efficiency factor


@dataclass
class WaterProperties:
    """EPANET's hydraulic options that shape the physics, in SI."""

    headloss: str = "H-W"                     # H-W | D-W | C-M
    kinematic_viscosity_m2_s: float = 1.1e-5 * 0.09290304   # EPANET's VISCOS (1.1e-5 ft2/s)
    specific_gravity: float = 1.0
    emitter_exponent: float = 0.5
    demand_multiplier: float = 1.0
    trials: int = 200
    accuracy: float = 1e-3


@dataclass
class Times:
    """Extended-period settings, seconds."""

    duration_s: int = 0
    hydraulic_step_s: int = 3600
    pattern_step_s: int = 3600
    pattern_start_s: int = 0
    report_step_s: int = 3600
    report_start_s: int = 0
    start_clocktime_s: int = 0


@dataclass
class Nodes:
    """One row per node. ``fixed_head_m`` is the water head of a reservoir (or a tank's initial
    head); ``fixed_pressure_pa`` the absolute pressure of a gas source. Unused entries are NaN."""

    ids: np.ndarray                 # str (object array)
    kind: np.ndarray                # int8, NodeKind
    x: np.ndarray                   # float64, map coordinates (CRS in NetworkModel.crs)
    y: np.ndarray
    elevation_m: np.ndarray
    fixed_pressure_pa: np.ndarray   # gas sources, absolute Pa
    fixed_head_m: np.ndarray        # water reservoirs / tanks, m
    head_pattern: np.ndarray        # int32 index into patterns for a reservoir's head, -1 none
    emitter_coeff: np.ndarray       # water: m3/s per m**emitter_exponent of pressure head; 0 none

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Demands:
    """Demand categories: a node may have several (EPANET [DEMANDS]). Positive = withdrawal;
    a negative base demand is an injection. kg/s for gas, m3/s for water."""

    node: np.ndarray      # int32 node index
    base: np.ndarray      # float64
    pattern: np.ndarray   # int32 pattern index, -1 = the model's default pattern (or none)

    def __len__(self) -> int:
        return len(self.node)


@dataclass
class Links:
    """One row per link; flow is positive from ``from_node`` to ``to_node``.

    ``roughness`` is read by the headloss law in force: Hazen-Williams C, Darcy-Weisbach and gas
    absolute roughness in metres, Manning n. ``setting`` is the control value of a non-pipe link in
    SI: PRV/PSV/regulator pressure (Pa, gauge for water, absolute for gas), PBV pressure drop (Pa),
    FCV flow (m3/s), TCV loss coefficient, pump relative speed, compressor ratio or outlet pressure."""

    ids: np.ndarray
    kind: np.ndarray          # int8, LinkKind
    from_node: np.ndarray     # int32
    to_node: np.ndarray       # int32
    length_m: np.ndarray
    diameter_m: np.ndarray
    roughness: np.ndarray
    minor_loss: np.ndarray    # dimensionless K (head loss K v^2/2g)
    status: np.ndarray        # int8, LinkStatus: the initial / fixed status
    setting: np.ndarray       # float64, NaN where none
    check_valve: np.ndarray   # bool: pipe that only passes flow from->to
    curve: np.ndarray         # int32 index into curves (pump head curve, GPV curve), -1 none
    pump_power_w: np.ndarray  # constant-power pumps, NaN otherwise
    speed_pattern: np.ndarray  # int32 pump speed pattern, -1 none

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Tanks:
    """Water storage. Levels are above the tank's elevation (its node's ``elevation_m``)."""

    node: np.ndarray            # int32 node index
    init_level_m: np.ndarray
    min_level_m: np.ndarray
    max_level_m: np.ndarray
    diameter_m: np.ndarray
    min_volume_m3: np.ndarray
    volume_curve: np.ndarray    # int32, -1 for cylindrical
    overflow: np.ndarray        # bool

    def __len__(self) -> int:
        return len(self.node)


@dataclass
class Curve:
    id: str
    kind: str          # PUMP | EFFICIENCY | VOLUME | HEADLOSS | GENERIC
    x: np.ndarray      # SI: flow m3/s (pump, headloss), level m (volume)
    y: np.ndarray      # SI: head m, volume m3, efficiency %


@dataclass
class Control:
    """A simple control (EPANET [CONTROLS]): set a link's status or setting when a clock time is
    reached, or when a node's level/pressure crosses a threshold."""

    link: int
    status: int | None          # LinkStatus or None when a setting is given
    setting: float | None       # SI, as Links.setting
    trigger: str                # "time" (elapsed) | "clocktime" | "above" | "below"
    node: int = -1
    threshold: float = float("nan")   # head above node elevation in m for tanks; pressure Pa otherwise
    time_s: float = float("nan")


@dataclass
class NetworkModel:
    """A pipe network: nodes, links, their demands and the medium's constants.

    Build one with an importer (``twin.io``) or ``empty`` plus ``add_*`` helpers in tests. Solvers
    read it; what-if edits return a changed copy (``copy()``) so the live twin is never touched.
    """

    name: str
    medium: Medium
    nodes: Nodes
    links: Links
    demands: Demands
    tanks: Tanks
    gas: GasProperties = field(default_factory=GasProperties)
    water: WaterProperties = field(default_factory=WaterProperties)
    times: Times = field(default_factory=Times)
    patterns: list[tuple[str, np.ndarray]] = field(default_factory=list)
    default_pattern: int = -1
    curves: list[Curve] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    vertices: dict[str, np.ndarray] = field(default_factory=dict)   # link id -> (k, 2) interior points
    crs: str = ""
    source_file: str = ""

    # -- lookups -----------------------------------------------------------------------------
    def node_index(self) -> dict[str, int]:
        return {nid: i for i, nid in enumerate(self.nodes.ids)}

    def link_index(self) -> dict[str, int]:
        return {lid: i for i, lid in enumerate(self.links.ids)}

    def pattern_index(self) -> dict[str, int]:
        return {pid: i for i, (pid, _) in enumerate(self.patterns)}

    def curve_index(self) -> dict[str, int]:
        return {c.id: i for i, c in enumerate(self.curves)}

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_links(self) -> int:
        return len(self.links)

    @property
    def is_gas(self) -> bool:
        return self.medium == Medium.NATURAL_GAS

    # -- demands -----------------------------------------------------------------------------
    def pattern_multiplier(self, pattern: int, time_s: float) -> float:
        """Multiplier of ``pattern`` at elapsed ``time_s`` (EPANET: patterns wrap around)."""
        if pattern < 0:
            return 1.0
        values = self.patterns[pattern][1]
        if len(values) == 0:
            return 1.0
        step = max(self.times.pattern_step_s, 1)
        k = int((time_s + self.times.pattern_start_s) // step) % len(values)
        return float(values[k])

    def node_demand(self, time_s: float = 0.0) -> np.ndarray:
        """Total demand per node at ``time_s`` (SI; patterns and the demand multiplier applied)."""
        d = self.demands
        pattern = np.where(d.pattern >= 0, d.pattern, self.default_pattern)
        used = np.unique(pattern)
        factor = np.array([self.pattern_multiplier(int(p), time_s) for p in used])
        mult = factor[np.searchsorted(used, pattern)] if len(used) else np.ones(0)
        scale = self.water.demand_multiplier if self.medium == Medium.WATER else 1.0
        return np.bincount(d.node, weights=d.base * mult * scale, minlength=self.n_nodes)

    def base_demand(self) -> np.ndarray:
        """Sum of base demands per node, no pattern."""
        return np.bincount(self.demands.node, weights=self.demands.base, minlength=self.n_nodes)

    # -- change by copy ----------------------------------------------------------------------
    def copy(self) -> "NetworkModel":
        return copy.deepcopy(self)

    def summary(self) -> dict[str, int | str]:
        kinds = np.bincount(self.links.kind.astype(np.int64), minlength=len(LinkKind))
        nkinds = np.bincount(self.nodes.kind.astype(np.int64), minlength=len(NodeKind))
        out: dict[str, int | str] = {"name": self.name, "medium": self.medium.name.lower(),
                                     "nodes": self.n_nodes, "links": self.n_links}
        for k in NodeKind:
            if nkinds[k]:
                out[k.name.lower() + "s"] = int(nkinds[k])
        for k in LinkKind:
            if kinds[k]:
                out[k.name.lower() + "s"] = int(kinds[k])
        return out


def make_nodes(ids, kind, x=None, y=None, elevation_m=None, fixed_pressure_pa=None,
               fixed_head_m=None, head_pattern=None, emitter_coeff=None) -> Nodes:
    """Build a Nodes table, filling optional columns with their neutral values."""
    n = len(ids)

    def col(v, fill, dtype=np.float64):
        return np.full(n, fill, dtype=dtype) if v is None else np.asarray(v, dtype=dtype).copy()

    return Nodes(ids=np.asarray(list(ids), dtype=object), kind=col(kind, 0, np.int8), x=col(x, 0.0),
                 y=col(y, 0.0), elevation_m=col(elevation_m, 0.0),
                 fixed_pressure_pa=col(fixed_pressure_pa, np.nan), fixed_head_m=col(fixed_head_m, np.nan),
                 head_pattern=col(head_pattern, -1, np.int32), emitter_coeff=col(emitter_coeff, 0.0))


def make_links(ids, kind, from_node, to_node, length_m=None, diameter_m=None, roughness=None,
               minor_loss=None, status=None, setting=None, check_valve=None, curve=None,
               pump_power_w=None, speed_pattern=None) -> Links:
    """Build a Links table, filling optional columns with their neutral values."""
    n = len(ids)

    def col(v, fill, dtype=np.float64):
        return np.full(n, fill, dtype=dtype) if v is None else np.asarray(v, dtype=dtype).copy()

    return Links(ids=np.asarray(list(ids), dtype=object), kind=col(kind, 0, np.int8),
                 from_node=col(from_node, 0, np.int32), to_node=col(to_node, 0, np.int32),
                 length_m=col(length_m, 0.0), diameter_m=col(diameter_m, 0.0), roughness=col(roughness, 0.0),
                 minor_loss=col(minor_loss, 0.0), status=col(status, LinkStatus.OPEN, np.int8),
                 setting=col(setting, np.nan), check_valve=col(check_valve, False, bool),
                 curve=col(curve, -1, np.int32), pump_power_w=col(pump_power_w, np.nan),
                 speed_pattern=col(speed_pattern, -1, np.int32))


def make_demands(node=(), base=(), pattern=None) -> Demands:
    n = len(node)
    return Demands(node=np.asarray(node, dtype=np.int32), base=np.asarray(base, dtype=np.float64),
                   pattern=np.full(n, -1, np.int32) if pattern is None else np.asarray(pattern, np.int32))


def make_tanks(node=(), init_level_m=(), min_level_m=(), max_level_m=(), diameter_m=(),
               min_volume_m3=None, volume_curve=None, overflow=None) -> Tanks:
    n = len(node)
    return Tanks(node=np.asarray(node, np.int32), init_level_m=np.asarray(init_level_m, float),
                 min_level_m=np.asarray(min_level_m, float), max_level_m=np.asarray(max_level_m, float),
                 diameter_m=np.asarray(diameter_m, float),
                 min_volume_m3=np.zeros(n) if min_volume_m3 is None else np.asarray(min_volume_m3, float),
                 volume_curve=np.full(n, -1, np.int32) if volume_curve is None else np.asarray(volume_curve, np.int32),
                 overflow=np.zeros(n, bool) if overflow is None else np.asarray(overflow, bool))


class NetworkFileError(ValueError):
    """A network file that cannot be read: names the file, the line or element, and the fault."""

    def __init__(self, path: str, where: str | int | None, problem: str):
        self.path, self.where, self.problem = str(path), where, problem
        loc = f"{path}"
        if isinstance(where, int):
            loc += f", line {where}"
        elif where:
            loc += f", {where}"
        super().__init__(f"{loc}: {problem}")
