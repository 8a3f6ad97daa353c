"""EPANET ``.inp`` files: read one into a :class:`NetworkModel` (SI) and write one back.

The reader follows EPANET 2.2's own input rules (``input2.c``/``input3.c``) so that a file EPANET
accepts reads the same here, and a file EPANET rejects raises :class:`NetworkFileError` naming the
line and the fault. It works in two passes: first the text is split into sections of tokenised
rows; then the sections are interpreted in dependency order (options before anything that needs
units, patterns and curves before the elements that name them), whatever their order in the file.

Units are converted to SI once, here. Flows use exact SI factors (as WNTR does); pressures use
EPANET's own ``PSIperFT = 0.4333`` and specific gravity, so a pressure setting becomes the head EPANET
would use internally, stored in pascals at ``PA_PER_M_WATER`` per metre of that head (a solver
gets EPANET's head back by dividing by ``PA_PER_M_WATER``).

The writer writes SI files (``Units LPS``, metres, millimetres) with round-trip precision, so
EPANET (and WNTR) can read any model this package builds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from ..model import (
    PA_PER_M_WATER,
    Control,
    Curve,
    LinkKind,
    LinkStatus,
    Medium,
    NetworkFileError,
    NetworkModel,
    NodeKind,
    Times,
    WaterProperties,
    make_demands,
    make_links,
    make_nodes,
    make_tanks,
)

__all__ = ["read_inp", "write_inp"]

# -- EPANET constants (src/types.h) -----------------------------------------------------------
FT = 0.3048                    # m per ft (EPANET's MperFT)
INCH = 0.0254
PSI_PER_FT = 0.4333            # EPANET's PSIperFT: psi per ft of water
KPA_PER_PSI = 6.895            # EPANET's KPAperPSI
W_PER_HP = 745.7               # EPANET's KWperHP = 0.7457
VISCOS_FT2_S = 1.1e-5          # EPANET's VISCOS: water at 20 C, ft2/s
GALLON = 0.003785411784        # US gallon, m3
IMP_GALLON = 0.00454609
ACRE_FOOT = 43560.0 * FT ** 3

# Flow unit -> m3/s (exact SI, as WNTR). CMS is EPANET 2.3's; accepted when read.
FLOW_UNITS = {
    "CFS": FT ** 3,
    "GPM": GALLON / 60.0,
    "MGD": 1e6 * GALLON / 86400.0,
    "IMGD": 1e6 * IMP_GALLON / 86400.0,
    "AFD": ACRE_FOOT / 86400.0,
    "LPS": 1e-3,
    "LPM": 1e-3 / 60.0,
    "MLD": 1e3 / 86400.0,
    "CMH": 1.0 / 3600.0,
    "CMD": 1.0 / 86400.0,
    "CMS": 1.0,
}
US_FLOW_UNITS = {"CFS", "GPM", "MGD", "IMGD", "AFD"}

SECTIONS = (
    "[TITLE]", "[JUNCTIONS]", "[RESERVOIRS]", "[TANKS]", "[PIPES]", "[PUMPS]", "[VALVES]",
    "[DEMANDS]", "[PATTERNS]", "[CURVES]", "[CONTROLS]", "[STATUS]", "[EMITTERS]", "[OPTIONS]",
    "[TIMES]", "[COORDINATES]", "[VERTICES]",
    # accepted and ignored: water quality, energy, reporting, map decorations, rules
    "[QUALITY]", "[REACTIONS]", "[SOURCES]", "[MIXING]", "[ENERGY]", "[REPORT]", "[TAGS]",
    "[LABELS]", "[BACKDROP]", "[RULES]", "[END]",
)
VALVE_TYPES = {"PRV": LinkKind.PRV, "PSV": LinkKind.PSV, "PBV": LinkKind.PBV,
               "FCV": LinkKind.FCV, "TCV": LinkKind.TCV, "GPV": LinkKind.GPV}
CURVE_KINDS = ("PUMP", "EFFICIENCY", "VOLUME", "HEADLOSS")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TOKEN = re.compile(r'"[^"]*"|\S+')


# -- small helpers ------------------------------------------------------------------------------
def _to_float(text: str) -> float | None:
    """EPANET's getfloat: the whole token must be a finite decimal number (no nan/inf/hex)."""
    if not _NUMBER.match(text):
        return None
    v = float(text)
    return v if math.isfinite(v) else None


def _match(word: str, keyword: str) -> bool:
    """EPANET's ``match``: ``word`` begins with ``keyword`` (case-insensitive). EPANET's keyword
    table holds abbreviations (``DURA``, ``HYDR``), so ``Duration`` and ``DURATION`` both match."""
    return word.upper().startswith(keyword)


def _hours(text: str, units: str = "") -> float | None:
    """EPANET's ``hour()``: ``h``, ``h:mm``, ``h:mm:ss`` or decimal with SEC/MIN/HOURS/DAYS, or a
    clock time with AM/PM (12 am is midnight). None when the text is not a time."""
    parts = text.split(":")
    if len(parts) > 3:
        return None
    values = [_to_float(p) for p in parts]
    if any(v is None or v < 0 for v in values):
        return None
    u = units.upper()
    if len(values) == 1 and u:
        for key, scale in (("SEC", 1 / 3600), ("MIN", 1 / 60), ("HOU", 1.0), ("DAY", 24.0)):
            if u.startswith(key):
                return values[0] * scale
    h = values[0] + sum(v / 60.0 ** k for k, v in enumerate(values[1:], start=1))
    if not u:
        return h
    if u.startswith("AM") or u.startswith("PM"):
        if h >= 13.0:
            return None
        if u.startswith("AM"):
            return h - 12.0 if h >= 12.0 else h
        return h if h >= 12.0 else h + 12.0
    return None


@dataclass(frozen=True)
class Units:
    """Factors from a file's units to SI. ``pressure_head_m`` is metres of head (of the fluid, as
    EPANET computes it with the specific gravity) per unit of pressure in the file."""

    flow: str
    q: float
    length: float
    diameter: float
    dw_roughness: float
    pressure_head_m: float
    power_w: float
    volume: float

    @property
    def us(self) -> bool:
        return self.flow in US_FLOW_UNITS


def units_for(flow: str, pressure: str = "", specific_gravity: float = 1.0) -> Units:
    """The conversion factors EPANET's ``initunits`` sets for a flow unit and pressure unit."""
    flow = flow.upper()
    us = flow in US_FLOW_UNITS
    if us:
        ft_head_per_unit = 1.0 / (PSI_PER_FT * specific_gravity)
    elif pressure.upper().startswith("KPA"):
        ft_head_per_unit = 1.0 / (KPA_PER_PSI * PSI_PER_FT * specific_gravity)
    elif pressure.upper().startswith("PSI"):
        ft_head_per_unit = 1.0 / (PSI_PER_FT * specific_gravity)
    else:  # metres of water
        ft_head_per_unit = 1.0 / (FT * specific_gravity)
    return Units(flow=flow, q=FLOW_UNITS[flow], length=FT if us else 1.0,
                 diameter=INCH if us else 1e-3, dw_roughness=1e-3 * FT if us else 1e-3,
                 pressure_head_m=ft_head_per_unit * FT, power_w=W_PER_HP if us else 1e3,
                 volume=FT ** 3 if us else 1.0)


@dataclass
class _Row:
    line: int
    tokens: list[str]
    text: str        # the raw line, for [TITLE]
    comment: str     # text after ';' (curve type hints)


@dataclass
class _RawCurve:
    id: str
    line: int
    kind: str = "GENERIC"            # from a ';PUMP:' style comment, then from use
    used_as: str = ""                # kind from use, which wins over the comment
    points: list[tuple[float, float, int]] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------
def read_inp(path: str | Path) -> NetworkModel:
    """Read an EPANET input file into a water :class:`NetworkModel` in SI units.

    Any fault in the file raises :class:`NetworkFileError` naming the file, the line and what is
    wrong; so does an unreadable file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NetworkFileError(str(path), None, f"cannot read the file ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")   # EPANET GUI files are often Windows-1252
    reader = _InpReader(str(path))
    try:
        return reader.read(text)
    except NetworkFileError:
        raise
    except (ArithmeticError, LookupError, ValueError, TypeError, AttributeError) as exc:
        # A safety net: a fault this reader did not anticipate still names the file and line.
        raise NetworkFileError(str(path), reader.line or None,
                               f"cannot interpret the line ({type(exc).__name__}: {exc})") from exc


class _InpReader:
    """Holds the growing tables while the sections are interpreted; one method per section."""

    def __init__(self, path: str):
        self.path = path
        self.line = 0
        self.sections: dict[str, list[_Row]] = {s: [] for s in SECTIONS}
        # nodes
        self.node_ix: dict[str, int] = {}
        self.node_line: list[int] = []
        self.node_kind: list[int] = []
        self.elev: list[float] = []
        self.fixed_head: list[float] = []
        self.head_pattern: list[int] = []
        self.emitter: list[float] = []
        self.x: list[float] = []
        self.y: list[float] = []
        # links
        self.link_ix: dict[str, int] = {}
        self.link_line: list[int] = []
        self.lk: dict[str, list] = {k: [] for k in (
            "kind", "from_node", "to_node", "length_m", "diameter_m", "roughness", "minor_loss",
            "status", "setting", "check_valve", "curve", "pump_power_w", "speed_pattern")}
        # demands: per junction the rows from [JUNCTIONS], replaced by [DEMANDS] rows if any
        self.demands: dict[int, list[tuple[float, int]]] = {}
        self.demand_replaced: set[int] = set()
        self.tanks: dict[str, list] = {k: [] for k in (
            "node", "init_level_m", "min_level_m", "max_level_m", "diameter_m", "min_volume_m3",
            "volume_curve", "overflow")}
        self.patterns: list[tuple[str, list[float]]] = []
        self.pattern_ix: dict[str, int] = {}
        self.curves: list[_RawCurve] = []
        self.curve_ix: dict[str, int] = {}
        self.controls: list[Control] = []
        self.vertices: dict[str, list[tuple[float, float]]] = {}
        self.water = WaterProperties()
        self.times = Times()
        self.units = units_for("GPM")
        self.default_pattern_id = "1"     # EPANET's default when OPTIONS names none
        self.flow_units = "GPM"
        self.pressure_units = ""
        self.viscosity = 1.0
        self.curve_hint = ""
        self.title: list[str] = []

    # -- errors and fields ----------------------------------------------------------------------
    def fail(self, line: int | None, problem: str) -> NoReturn:
        raise NetworkFileError(self.path, line, problem)

    def need(self, row: _Row, n: int, what: str) -> None:
        if len(row.tokens) < n:
            self.fail(row.line, f"too few fields for {what}: {len(row.tokens)} given, {n} needed")

    def num(self, row: _Row, k: int, what: str, minimum: float | None = None,
            positive: bool = False) -> float:
        if k >= len(row.tokens):
            self.fail(row.line, f"missing {what}")
        v = _to_float(row.tokens[k])
        if v is None:
            self.fail(row.line, f"{what} {row.tokens[k]!r} is not a number")
        if positive and v <= 0:
            self.fail(row.line, f"{what} must be positive, got {row.tokens[k]}")
        if minimum is not None and v < minimum:
            self.fail(row.line, f"{what} must be at least {minimum:g}, got {row.tokens[k]}")
        return v

    def duplicate(self, row: _Row, what: str, eid: str, other: int) -> NoReturn:
        """Sections are read out of file order, so name the later of the two lines."""
        first, second = sorted((row.line, other))
        self.fail(second, f"duplicate {what} id {eid!r} (first defined on line {first})")

    def node_of(self, row: _Row, k: int) -> int:
        nid = row.tokens[k]
        if nid not in self.node_ix:
            self.fail(row.line, f"unknown node {nid!r}")
        return self.node_ix[nid]

    def link_of(self, row: _Row, k: int) -> int:
        lid = row.tokens[k]
        if lid not in self.link_ix:
            self.fail(row.line, f"unknown link {lid!r}")
        return self.link_ix[lid]

    def pattern_of(self, row: _Row, k: int) -> int:
        pid = row.tokens[k]
        if pid not in self.pattern_ix:
            self.fail(row.line, f"unknown pattern {pid!r}")
        return self.pattern_ix[pid]

    def curve_of(self, row: _Row, k: int, kind: str) -> int:
        """Look up a curve and record its use: the use decides the curve's kind (and its units)."""
        cid = row.tokens[k]
        if cid not in self.curve_ix:
            self.fail(row.line, f"unknown curve {cid!r}")
        c = self.curves[self.curve_ix[cid]]
        if c.used_as and c.used_as != kind:
            self.fail(row.line, f"curve {cid!r} is used as both a {c.used_as} and a {kind} curve")
        c.used_as = kind
        return self.curve_ix[cid]

    # -- pass 1: split into sections -----------------------------------------------------------
    def split(self, text: str) -> None:
        """Tokenise every line into its section; comments after ';' are kept apart."""
        section = None
        for n, raw in enumerate(text.split("\n"), start=1):
            self.line = n
            line = raw.rstrip("\r")
            body, _, comment = line.partition(";")
            tokens = [t[1:-1] if len(t) > 1 and t[0] == '"' and t[-1] == '"' else t
                      for t in _TOKEN.findall(body)]
            if tokens and tokens[0].startswith("["):
                name = tokens[0].upper()
                if name not in self.sections:
                    self.fail(n, f"unknown section {tokens[0]!r}")
                section = name
                if section == "[END]":
                    break
                continue
            if section is None:
                if tokens:
                    self.fail(n, "data before the first [SECTION] header")
                continue
            if tokens or section in ("[TITLE]", "[CURVES]"):
                self.sections[section].append(_Row(n, tokens, line, comment))

    # -- pass 2: interpret ---------------------------------------------------------------------
    def read(self, text: str) -> NetworkModel:
        """Options first (they fix the units), then patterns and curves, then the elements that
        name them, then what refers to elements: EPANET's own dependency order."""
        self.split(text)
        self.run("[OPTIONS]", self.read_option)
        self.units = units_for(self.flow_units, self.pressure_units, self.water.specific_gravity)
        for section, handler in (
            ("[TIMES]", self.read_time), ("[PATTERNS]", self.read_pattern),
            ("[CURVES]", self.read_curve), ("[JUNCTIONS]", self.read_junction),
            ("[RESERVOIRS]", self.read_reservoir), ("[TANKS]", self.read_tank),
            ("[PIPES]", self.read_pipe), ("[PUMPS]", self.read_pump), ("[VALVES]", self.read_valve),
            ("[DEMANDS]", self.read_demand), ("[EMITTERS]", self.read_emitter),
            ("[STATUS]", self.read_status), ("[CONTROLS]", self.read_control),
            ("[COORDINATES]", self.read_coordinate), ("[VERTICES]", self.read_vertex),
        ):
            self.run(section, handler)
        self.line = 0
        self.title = [r.text.strip() for r in self.sections["[TITLE]"] if r.text.strip()]
        return self.build()

    def run(self, section: str, handler) -> None:
        for row in self.sections[section]:
            self.line = row.line       # for the safety net in read_inp
            handler(row)

    # [OPTIONS] -------------------------------------------------------------------------------
    def read_option(self, row: _Row) -> None:
        """Options shape the physics and the units; unknown ones are ignored, as harmless."""
        t = row.tokens
        key = t[0].upper()
        if len(t) < 2:
            if key.startswith(("VERIFY",)):
                return
            self.fail(row.line, f"option {t[0]!r} has no value")
        w = self.water
        if key == "UNITS":
            flow = t[1].upper()
            if flow not in FLOW_UNITS:
                self.fail(row.line, f"unknown flow units {t[1]!r}")
            self.flow_units = flow
        elif key == "PRESSURE":
            if not t[1].upper().startswith(("PSI", "KPA", "MET")):
                self.fail(row.line, f"unknown pressure units {t[1]!r}")
            self.pressure_units = t[1].upper()
        elif key == "HEADLOSS":
            hl = t[1].upper()
            if hl not in ("H-W", "D-W", "C-M"):
                self.fail(row.line, f"unknown headloss formula {t[1]!r}")
            w.headloss = hl
        elif key == "SPECIFIC":          # Specific Gravity v
            w.specific_gravity = self.num(row, len(t) - 1, "specific gravity", positive=True)
        elif key == "VISCOSITY":
            self.viscosity = self.num(row, 1, "viscosity", positive=True)
        elif key == "TRIALS":
            w.trials = int(self.num(row, 1, "trials", minimum=1))
        elif key == "ACCURACY":
            w.accuracy = self.num(row, 1, "accuracy", positive=True)
        elif key == "PATTERN":
            self.default_pattern_id = t[1]
        elif key == "DEMAND" and _match(t[1], "MULT"):
            w.demand_multiplier = self.num(row, 2, "demand multiplier", minimum=0.0)
        elif key == "EMITTER" and _match(t[1], "EXP"):
            w.emitter_exponent = self.num(row, 2, "emitter exponent", positive=True)
        # anything else (QUALITY, UNBALANCED, DIFFUSIVITY, TOLERANCE, CHECKFREQ, DEMAND MODEL,
        # MINIMUM/REQUIRED PRESSURE, ...) does not change this model: accepted and ignored.

    # [TIMES] ---------------------------------------------------------------------------------
    def read_time(self, row: _Row) -> None:
        """Durations and steps in seconds; EPANET rounds hours to the nearest second."""
        t = row.tokens
        if _match(t[0], "STAT"):
            return
        if len(t) < 2:
            self.fail(row.line, f"time option {t[0]!r} has no value")
        h = _hours(t[-1])
        if h is None and len(t) >= 3:
            h = _hours(t[-2], t[-1])
        if h is None:
            self.fail(row.line, f"{' '.join(t[1:])!r} is not a valid time")
        s = int(3600.0 * h + 0.5)
        key, second = t[0], (t[1] if len(t) > 2 else "")
        tm = self.times
        if _match(key, "DURA"):
            tm.duration_s = s
        elif _match(key, "HYDR"):
            tm.hydraulic_step_s = s
        elif _match(key, "QUAL") or _match(key, "RULE") or _match(key, "MINI"):
            pass
        elif _match(key, "PATT"):
            if _match(second, "TIME"):
                tm.pattern_step_s = s
            elif _match(second, "STAR"):
                tm.pattern_start_s = s
            else:
                self.fail(row.line, f"unknown time option {' '.join(t[:2])!r}")
        elif _match(key, "REPO"):
            if _match(second, "TIME"):
                tm.report_step_s = s
            elif _match(second, "STAR"):
                tm.report_start_s = s
            else:
                self.fail(row.line, f"unknown time option {' '.join(t[:2])!r}")
        elif _match(key, "STAR"):
            tm.start_clocktime_s = s % 86400
        else:
            self.fail(row.line, f"unknown time option {t[0]!r}")

    # [PATTERNS] --------------------------------------------------------------------------------
    def read_pattern(self, row: _Row) -> None:
        """Rows with the same id extend one pattern of multipliers."""
        self.need(row, 2, "a pattern (id and at least one multiplier)")
        pid = row.tokens[0]
        values = [self.num(row, k, f"multiplier {k}") for k in range(1, len(row.tokens))]
        if pid not in self.pattern_ix:
            self.pattern_ix[pid] = len(self.patterns)
            self.patterns.append((pid, []))
        self.patterns[self.pattern_ix[pid]][1].extend(values)

    # [CURVES] ----------------------------------------------------------------------------------
    def read_curve(self, row: _Row) -> None:
        """Points of x-y curves. A comment line like ';PUMP: ...' names the kind of the next new
        curve (the EPANET GUI writes these); how the curve is used decides in the end."""
        if not row.tokens:
            hint = row.comment.strip().split(":", 1)
            if len(hint) == 2 and hint[0].strip().upper() in CURVE_KINDS:
                self.curve_hint = hint[0].strip().upper()
            return
        self.need(row, 3, "a curve point (id, x, y)")
        cid = row.tokens[0]
        x, y = self.num(row, 1, "x value"), self.num(row, 2, "y value")
        if cid not in self.curve_ix:
            self.curve_ix[cid] = len(self.curves)
            self.curves.append(_RawCurve(cid, row.line, kind=self.curve_hint or "GENERIC"))
            self.curve_hint = ""
        c = self.curves[self.curve_ix[cid]]
        if c.points and x <= c.points[-1][0]:
            self.fail(row.line, f"curve {cid!r}: x values must increase ({x:g} after {c.points[-1][0]:g})")
        c.points.append((x, y, row.line))

    # [JUNCTIONS] / [RESERVOIRS] / [TANKS] ------------------------------------------------------
    def add_node(self, row: _Row, kind: NodeKind, elevation: float, head: float = math.nan,
                 pattern: int = -1) -> int:
        nid = row.tokens[0]
        if nid in self.node_ix:
            self.duplicate(row, "node", nid, self.node_line[self.node_ix[nid]])
        i = len(self.node_kind)
        self.node_ix[nid] = i
        self.node_line.append(row.line)
        self.node_kind.append(int(kind))
        self.elev.append(elevation)
        self.fixed_head.append(head)
        self.head_pattern.append(pattern)
        self.emitter.append(0.0)
        self.x.append(math.nan)
        self.y.append(math.nan)
        return i

    def read_junction(self, row: _Row) -> None:
        """id, elevation [, base demand [, demand pattern]]."""
        self.need(row, 2, "a junction (id, elevation)")
        u = self.units
        elev = self.num(row, 1, "elevation") * u.length
        demand = self.num(row, 2, "base demand") * u.q if len(row.tokens) > 2 else 0.0
        pattern = self.pattern_of(row, 3) if len(row.tokens) > 3 else -1
        i = self.add_node(row, NodeKind.JUNCTION, elev)
        self.demands[i] = [(demand, pattern)]

    def read_reservoir(self, row: _Row) -> None:
        """id, head [, head pattern]. The node's elevation is its head, as in EPANET."""
        self.need(row, 2, "a reservoir (id, head)")
        head = self.num(row, 1, "head") * self.units.length
        pattern = self.pattern_of(row, 2) if len(row.tokens) > 2 else -1
        self.add_node(row, NodeKind.SOURCE, head, head, pattern)

    def read_tank(self, row: _Row) -> None:
        """id, elevation, init/min/max level, diameter [, min volume [, volume curve [, overflow]]]."""
        self.need(row, 6, "a tank (id, elevation, init/min/max level, diameter)")
        u = self.units
        elev = self.num(row, 1, "elevation") * u.length
        init = self.num(row, 2, "initial level", minimum=0.0) * u.length
        lo = self.num(row, 3, "minimum level", minimum=0.0) * u.length
        hi = self.num(row, 4, "maximum level", minimum=0.0) * u.length
        diam = self.num(row, 5, "diameter", minimum=0.0) * u.length
        minvol = self.num(row, 6, "minimum volume", minimum=0.0) * u.volume if len(row.tokens) > 6 else 0.0
        curve = -1
        if len(row.tokens) > 7 and row.tokens[7] != "*":
            curve = self.curve_of(row, 7, "VOLUME")
        overflow = False
        if len(row.tokens) > 8:
            flag = row.tokens[8].upper()
            if flag not in ("YES", "NO", "TRUE", "FALSE"):
                self.fail(row.line, f"tank overflow must be YES or NO, got {row.tokens[8]!r}")
            overflow = flag in ("YES", "TRUE")
        if not lo <= init <= hi:
            self.fail(row.line, "tank levels must satisfy minimum <= initial <= maximum")
        if diam <= 0 and curve < 0:
            self.fail(row.line, "a tank without a volume curve needs a positive diameter")
        i = self.add_node(row, NodeKind.TANK, elev, elev + init)
        for key, v in (("node", i), ("init_level_m", init), ("min_level_m", lo), ("max_level_m", hi),
                       ("diameter_m", diam), ("min_volume_m3", minvol), ("volume_curve", curve),
                       ("overflow", overflow)):
            self.tanks[key].append(v)

    # [PIPES] / [PUMPS] / [VALVES] ----------------------------------------------------------------
    def add_link(self, row: _Row, kind: LinkKind, **cols) -> int:
        lid = row.tokens[0]
        if lid in self.link_ix:
            self.duplicate(row, "link", lid, self.link_line[self.link_ix[lid]])
        a, b = self.node_of(row, 1), self.node_of(row, 2)
        if a == b:
            self.fail(row.line, f"link {lid!r} connects node {row.tokens[1]!r} to itself")
        i = len(self.lk["kind"])
        self.link_ix[lid] = i
        self.link_line.append(row.line)
        defaults = dict(length_m=0.0, diameter_m=0.0, roughness=0.0, minor_loss=0.0,
                        status=int(LinkStatus.OPEN), setting=math.nan, check_valve=False, curve=-1,
                        pump_power_w=math.nan, speed_pattern=-1)
        defaults.update(cols)
        self.lk["kind"].append(int(kind))
        self.lk["from_node"].append(a)
        self.lk["to_node"].append(b)
        for key, v in defaults.items():
            self.lk[key].append(v)
        return i

    def read_pipe(self, row: _Row) -> None:
        """id, node1, node2, length, diameter, roughness [, minor loss] [, OPEN|CLOSED|CV].
        With seven fields the seventh may be the status (EPANET allows it)."""
        self.need(row, 6, "a pipe (id, node1, node2, length, diameter, roughness)")
        u, t = self.units, row.tokens
        length = self.num(row, 3, "length", positive=True) * u.length
        diam = self.num(row, 4, "diameter", positive=True) * u.diameter
        rough = self.num(row, 5, "roughness", positive=True)
        if self.water.headloss == "D-W":
            rough *= u.dw_roughness
        minor, status_tok = 0.0, ""
        if len(t) == 7 and _to_float(t[6]) is None:
            status_tok = t[6]
        elif len(t) >= 7:
            minor = self.num(row, 6, "minor loss coefficient", minimum=0.0)
            status_tok = t[7] if len(t) > 7 else ""
        status, cv = LinkStatus.OPEN, False
        if status_tok:
            s = status_tok.upper()
            if s == "CV":
                cv = True
            elif s in ("CLOSED", "CLOSE"):
                status = LinkStatus.CLOSED
            elif s != "OPEN":
                self.fail(row.line, f"pipe status must be OPEN, CLOSED or CV, got {status_tok!r}")
        self.add_link(row, LinkKind.PIPE, length_m=length, diameter_m=diam, roughness=rough,
                      minor_loss=minor, status=int(status), check_valve=cv)

    def read_pump(self, row: _Row) -> None:
        """id, node1, node2, then keyword-value pairs: HEAD curve, POWER p, SPEED s, PATTERN id."""
        self.need(row, 5, "a pump (id, node1, node2, HEAD curve or POWER value)")
        t = row.tokens
        if (len(t) - 3) % 2:
            self.fail(row.line, f"pump keyword {t[-1]!r} has no value")
        curve, power, speed, pattern = -1, math.nan, 1.0, -1
        for k in range(3, len(t), 2):
            key = t[k].upper()
            if key == "HEAD":
                curve = self.curve_of(row, k + 1, "PUMP")
            elif key == "POWER":
                power = self.num(row, k + 1, "pump power", positive=True) * self.units.power_w
            elif key == "SPEED":
                speed = self.num(row, k + 1, "pump speed", minimum=0.0)
            elif key == "PATTERN":
                pattern = self.pattern_of(row, k + 1)
            else:
                self.fail(row.line, f"unknown pump keyword {t[k]!r} (HEAD, POWER, SPEED or PATTERN)")
        if curve < 0 and math.isnan(power):
            self.fail(row.line, "a pump needs a HEAD curve or a POWER rating")
        self.add_link(row, LinkKind.PUMP, curve=curve, pump_power_w=power, setting=speed,
                      speed_pattern=pattern)

    def valve_setting(self, row: _Row, kind: LinkKind, k: int) -> float:
        """A valve's setting in SI: pressure (Pa) for PRV/PSV/PBV, flow for FCV, K for TCV."""
        v = self.num(row, k, "valve setting")
        if kind in (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV):
            return v * self.units.pressure_head_m * PA_PER_M_WATER
        if kind == LinkKind.FCV:
            return v * self.units.q
        return v

    def read_valve(self, row: _Row) -> None:
        """id, node1, node2, diameter, type, setting [, minor loss]. A GPV's setting is the id of
        its headloss curve. Valves start ACTIVE (controlling) unless [STATUS] fixes them."""
        self.need(row, 6, "a valve (id, node1, node2, diameter, type, setting)")
        t = row.tokens
        kind = VALVE_TYPES.get(t[4].upper())
        if kind is None:
            self.fail(row.line, f"unknown valve type {t[4]!r}")
        diam = self.num(row, 3, "diameter", positive=True) * self.units.diameter
        curve, setting = -1, math.nan
        if kind == LinkKind.GPV:
            curve = self.curve_of(row, 5, "HEADLOSS")
        else:
            setting = self.valve_setting(row, kind, 5)
        minor = self.num(row, 6, "minor loss coefficient", minimum=0.0) if len(t) > 6 else 0.0
        self.add_link(row, kind, diameter_m=diam, minor_loss=minor, setting=setting, curve=curve,
                      status=int(LinkStatus.ACTIVE))

    # [DEMANDS] / [EMITTERS] ------------------------------------------------------------------------
    def junction_of(self, row: _Row, what: str) -> int:
        i = self.node_of(row, 0)
        if self.node_kind[i] != NodeKind.JUNCTION:
            self.fail(row.line, f"{what} on {row.tokens[0]!r}, which is not a junction")
        return i

    def read_demand(self, row: _Row) -> None:
        """junction, base demand [, pattern]. The first [DEMANDS] row of a junction replaces the
        demand given in [JUNCTIONS] (EPANET's rule); further rows add categories."""
        self.need(row, 2, "a demand (junction, base demand)")
        i = self.junction_of(row, "demand")
        base = self.num(row, 1, "base demand") * self.units.q
        pattern = self.pattern_of(row, 2) if len(row.tokens) > 2 else -1
        if i not in self.demand_replaced:
            self.demand_replaced.add(i)
            self.demands[i] = []
        self.demands[i].append((base, pattern))

    def read_emitter(self, row: _Row) -> None:
        """junction, coefficient: flow = C * pressure**exponent, converted to m3/s per m**exp."""
        self.need(row, 2, "an emitter (junction, coefficient)")
        i = self.junction_of(row, "emitter")
        c = self.num(row, 1, "emitter coefficient", minimum=0.0)
        u = self.units
        self.emitter[i] = c * u.q / u.pressure_head_m ** self.water.emitter_exponent

    # [STATUS] ----------------------------------------------------------------------------------
    def read_status(self, row: _Row) -> None:
        """link, OPEN|CLOSED|ACTIVE|setting: the initial status (EPANET's ``changestatus``).
        A valve listed OPEN or CLOSED is fixed so; a number is a valve setting or a pump speed."""
        self.need(row, 2, "a status (link, OPEN/CLOSED/setting)")
        if len(row.tokens) > 2:
            self.fail(row.line, "too many fields in a status line (link ranges are not supported)")
        j = self.link_of(row, 0)
        kind = self.lk["kind"][j]
        word = row.tokens[1].upper()
        status = {"OPEN": LinkStatus.OPEN, "CLOSED": LinkStatus.CLOSED,
                  "ACTIVE": LinkStatus.ACTIVE}.get(word)
        if kind == LinkKind.PIPE:
            if self.lk["check_valve"][j]:
                self.fail(row.line, f"cannot set the status of check valve pipe {row.tokens[0]!r}")
            if status is None or status == LinkStatus.ACTIVE:
                self.fail(row.line, f"a pipe's status must be OPEN or CLOSED, got {row.tokens[1]!r}")
            self.lk["status"][j] = int(status)
        elif kind == LinkKind.PUMP:
            if status is None:
                speed = self.num(row, 1, "pump speed", minimum=0.0)
                self.lk["setting"][j] = speed
                status = LinkStatus.CLOSED if speed == 0.0 else LinkStatus.OPEN
            elif status == LinkStatus.OPEN:
                self.lk["setting"][j] = 1.0
            elif status == LinkStatus.ACTIVE:
                self.fail(row.line, "a pump's status must be OPEN, CLOSED or a speed")
            self.lk["status"][j] = int(status)
        else:
            if status is None:
                if kind == LinkKind.GPV:
                    self.fail(row.line, "a GPV's setting is a curve, not a number")
                self.lk["setting"][j] = self.valve_setting(row, LinkKind(kind), 1)
                status = LinkStatus.ACTIVE
            self.lk["status"][j] = int(status)

    # [CONTROLS] --------------------------------------------------------------------------------
    def read_control(self, row: _Row) -> None:
        """LINK id OPEN|CLOSED|setting  AT TIME t | AT CLOCKTIME t [AM|PM] | IF NODE id ABOVE|BELOW v.
        As in EPANET, the first word (LINK, Pump, Pipe, ...) and the word before the node id are
        not read: wntr writes ``Pump 10 OPEN AT TIME 1``, and EPANET accepts it."""
        t = row.tokens
        self.need(row, 6, "a control (LINK id value AT TIME t, or ... IF NODE id ABOVE/BELOW v)")
        j = self.link_of(row, 1)
        kind = LinkKind(self.lk["kind"][j])
        status, setting = self.control_action(row, kind)
        cond = t[3].upper()
        if cond == "AT":
            when = t[4].upper()
            if when not in ("TIME", "CLOCKTIME") or len(t) > 7:
                self.fail(row.line, "expected AT TIME t or AT CLOCKTIME t [AM/PM]")
            h = _hours(t[5], t[6] if len(t) > 6 else "")
            if h is None:
                self.fail(row.line, f"{' '.join(t[5:])!r} is not a valid time")
            s = float(int(3600.0 * h + 0.5))
            if when == "TIME":
                self.controls.append(Control(j, status, setting, "time", time_s=s))
            else:
                self.controls.append(Control(j, status, setting, "clocktime", time_s=s % 86400))
        elif cond == "IF":
            if len(t) != 8 or t[6].upper() not in ("ABOVE", "BELOW"):
                self.fail(row.line, "expected IF NODE id ABOVE|BELOW value")
            i = self.node_of(row, 5)
            v = self.num(row, 7, "control threshold")
            if self.node_kind[i] == NodeKind.JUNCTION:
                threshold = v * self.units.pressure_head_m * PA_PER_M_WATER   # gauge pressure
            else:
                threshold = v * self.units.length                          # level above elevation
            self.controls.append(Control(j, status, setting, t[6].lower(), node=i, threshold=threshold))
        else:
            self.fail(row.line, f"expected AT or IF after the control's value, got {t[3]!r}")

    def control_action(self, row: _Row, kind: LinkKind) -> tuple[int | None, float | None]:
        """OPEN/CLOSED, or a setting in SI. A pump or pipe given a number is opened (speed) or
        closed by it when the number is 0, as EPANET does."""
        word = row.tokens[2].upper()
        if word in ("OPEN", "CLOSED"):
            return int(LinkStatus[word]), None
        if kind == LinkKind.GPV:
            self.fail(row.line, "a GPV control must be OPEN or CLOSED")
        v = self.num(row, 2, "control setting")
        if kind in (LinkKind.PUMP, LinkKind.PIPE):
            if v < 0:
                self.fail(row.line, f"a pump or pipe control setting must not be negative, got {v:g}")
            if v == 0.0:
                return int(LinkStatus.CLOSED), None
            if kind == LinkKind.PIPE:
                return int(LinkStatus.OPEN), None
            return None, v
        return None, self.valve_setting(row, kind, 2)

    # [COORDINATES] / [VERTICES] ----------------------------------------------------------------
    def read_coordinate(self, row: _Row) -> None:
        self.need(row, 3, "a coordinate (node, x, y)")
        i = self.node_of(row, 0)
        self.x[i], self.y[i] = self.num(row, 1, "x coordinate"), self.num(row, 2, "y coordinate")

    def read_vertex(self, row: _Row) -> None:
        self.need(row, 3, "a vertex (link, x, y)")
        self.link_of(row, 0)
        xy = (self.num(row, 1, "x coordinate"), self.num(row, 2, "y coordinate"))
        self.vertices.setdefault(row.tokens[0], []).append(xy)

    # -- build the model -------------------------------------------------------------------------
    def finish_curves(self) -> list[Curve]:
        """Each curve's kind is its use (else its comment); its points go to SI by that kind."""
        u, out = self.units, []
        for c in self.curves:
            kind = c.used_as or c.kind
            x = np.array([p[0] for p in c.points], float)
            y = np.array([p[1] for p in c.points], float)
            if kind in ("PUMP", "HEADLOSS"):
                x, y = x * u.q, y * u.length
            elif kind == "EFFICIENCY":
                x = x * u.q
            elif kind == "VOLUME":
                x, y = x * u.length, y * u.volume
            out.append(Curve(c.id, kind, x, y))
        return out

    def build(self) -> NetworkModel:
        if not self.node_kind:
            self.fail(None, "the file defines no nodes ([JUNCTIONS], [RESERVOIRS], [TANKS])")
        if not any(k in (NodeKind.SOURCE, NodeKind.TANK) for k in self.node_kind):
            self.fail(None, "the network has no reservoir or tank to fix its heads")
        self.water.kinematic_viscosity_m2_s = self.kinematic_viscosity()
        nodes = make_nodes(list(self.node_ix), self.node_kind, x=self.x, y=self.y,
                           elevation_m=self.elev, fixed_head_m=self.fixed_head,
                           head_pattern=self.head_pattern, emitter_coeff=self.emitter)
        lk = self.lk
        links = make_links(list(self.link_ix), lk["kind"], lk["from_node"], lk["to_node"],
                           length_m=lk["length_m"], diameter_m=lk["diameter_m"],
                           roughness=lk["roughness"], minor_loss=lk["minor_loss"], status=lk["status"],
                           setting=lk["setting"], check_valve=lk["check_valve"], curve=lk["curve"],
                           pump_power_w=lk["pump_power_w"], speed_pattern=lk["speed_pattern"])
        rows = [(i, b, p) for i in sorted(self.demands) for b, p in self.demands[i]]
        demands = make_demands([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        tk = self.tanks
        tanks = make_tanks(tk["node"], tk["init_level_m"], tk["min_level_m"], tk["max_level_m"],
                           tk["diameter_m"], tk["min_volume_m3"], tk["volume_curve"], tk["overflow"])
        return NetworkModel(
            name=self.title[0] if self.title else Path(self.path).stem,
            medium=Medium.WATER, nodes=nodes, links=links, demands=demands, tanks=tanks,
            water=self.water, times=self.times,
            patterns=[(pid, np.array(v, float)) for pid, v in self.patterns],
            default_pattern=self.pattern_ix.get(self.default_pattern_id, -1),
            curves=self.finish_curves(), controls=self.controls,
            vertices={k: np.array(v, float).reshape(-1, 2) for k, v in self.vertices.items()},
            source_file=self.path)

    def kinematic_viscosity(self) -> float:
        """EPANET: a value above 1e-3 is relative to water at 20 C; a smaller one is absolute."""
        v = self.viscosity
        if v > 1e-3:
            return v * VISCOS_FT2_S * FT ** 2
        return v * (FT ** 2 if self.units.us else 1.0)


# -- writing ---------------------------------------------------------------------------------------
def _f(v: float) -> str:
    """Shortest text that reads back to the same float: round trips are exact."""
    v = float(v)
    return "0" if v == 0 else repr(v)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


_ID_BAD = re.compile(r'[\s;"]')


def write_inp(model: NetworkModel, path: str | Path, flow_units: str = "LPS") -> None:
    """Write ``model`` as an EPANET 2.2 input file in ``flow_units`` (SI ``LPS`` by default, so
    lengths are metres and diameters millimetres). Numbers are written to full precision, so
    ``read_inp(write_inp(m))`` gives ``m`` back to rounding."""
    _InpWriter(model, str(path), flow_units).write()


class _InpWriter:
    """Turns the SI model back into file units, one method per section."""

    def __init__(self, model: NetworkModel, path: str, flow_units: str):
        if model.medium != Medium.WATER:
            raise NetworkFileError(path, None, "only water networks can be written as EPANET files")
        flow = flow_units.upper()
        if flow not in FLOW_UNITS or flow == "CMS":   # CMS is EPANET 2.3 only: WNTR 1.5 rejects it
            raise NetworkFileError(path, None, f"flow units {flow_units!r} cannot be written")
        self.m, self.path = model, path
        self.u = units_for(flow, "", model.water.specific_gravity)
        self.out: list[str] = []
        self.node_ids = [self.check_id(i) for i in model.nodes.ids]
        self.link_ids = [self.check_id(i) for i in model.links.ids]
        self.pattern_ids = [self.check_id(p) for p, _ in model.patterns]
        self.curve_ids = [self.check_id(c.id) for c in model.curves]

    def check_id(self, eid) -> str:
        eid = str(eid)
        if not eid or _ID_BAD.search(eid) or eid.startswith("["):
            raise NetworkFileError(self.path, f"element {eid!r}",
                                   "an EPANET id must be non-empty, without spaces, ';' or '\"'")
        return eid

    def section(self, name: str, header: str = "") -> None:
        self.out.append("")
        self.out.append(name)
        if header:
            self.out.append(";" + header)

    def row(self, *fields) -> None:
        self.out.append(" " + "\t".join(str(f) for f in fields))

    def pattern_id(self, k: int) -> str:
        return self.pattern_ids[k] if k >= 0 else ""

    def pressure(self, pa: float) -> float:
        return pa / PA_PER_M_WATER / self.u.pressure_head_m

    def write(self) -> None:
        for part in (self.title, self.junctions, self.reservoirs, self.tanks, self.pipes,
                     self.pumps, self.valves, self.demands, self.status, self.patterns,
                     self.curves, self.emitters, self.controls, self.times, self.options,
                     self.coordinates, self.vertices):
            part()
        self.out += ["", "[END]", ""]
        Path(self.path).write_text("\n".join(self.out), encoding="utf-8")

    def title(self) -> None:
        self.out.append("[TITLE]")
        name = " ".join(str(self.m.name).split()).lstrip("[")
        if name:
            self.out.append(name)

    def node_rows(self, kind: NodeKind):
        n = self.m.nodes
        return [i for i in range(len(n)) if NodeKind(n.kind[i]) == kind
                or (kind == NodeKind.JUNCTION and n.kind[i] == NodeKind.CONSUMER)]

    def junctions(self) -> None:
        """A junction with a single demand keeps it here; several go to [DEMANDS]."""
        m, u = self.m, self.u
        self.by_node: dict[int, list[int]] = {}
        for j in range(len(m.demands)):
            self.by_node.setdefault(int(m.demands.node[j]), []).append(j)
        self.section("[JUNCTIONS]", "ID\tElev\tDemand\tPattern")
        for i in self.node_rows(NodeKind.JUNCTION):
            rows = self.by_node.get(i, [])
            fields = [self.node_ids[i], _f(m.nodes.elevation_m[i] / u.length)]
            if len(rows) == 1:
                j = rows[0]
                fields += [_f(m.demands.base[j] / u.q), self.pattern_id(int(m.demands.pattern[j]))]
            self.row(*fields)

    def reservoirs(self) -> None:
        n = self.m.nodes
        self.section("[RESERVOIRS]", "ID\tHead\tPattern")
        for i in self.node_rows(NodeKind.SOURCE):
            head = n.fixed_head_m[i] if np.isfinite(n.fixed_head_m[i]) else n.elevation_m[i]
            self.row(self.node_ids[i], _f(head / self.u.length), self.pattern_id(int(n.head_pattern[i])))

    def tanks(self) -> None:
        t, n, u = self.m.tanks, self.m.nodes, self.u
        self.section("[TANKS]", "ID\tElevation\tInitLevel\tMinLevel\tMaxLevel\tDiameter\tMinVol"
                                "\tVolCurve\tOverflow")
        for k in range(len(t)):
            i = int(t.node[k])
            fields = [self.node_ids[i], _f(n.elevation_m[i] / u.length), _f(t.init_level_m[k] / u.length),
                      _f(t.min_level_m[k] / u.length), _f(t.max_level_m[k] / u.length),
                      _f(t.diameter_m[k] / u.length), _f(t.min_volume_m3[k] / u.volume)]
            if t.volume_curve[k] >= 0 or t.overflow[k]:
                fields += [self.curve_ids[t.volume_curve[k]] if t.volume_curve[k] >= 0 else "*",
                           "YES" if t.overflow[k] else "NO"]
            self.row(*fields)

    def link_rows(self, kinds) -> list[int]:
        return [j for j in range(len(self.m.links)) if LinkKind(self.m.links.kind[j]) in kinds]

    def pipes(self) -> None:
        L, u = self.m.links, self.u
        unsupported = [self.link_ids[j] for j in range(len(L)) if LinkKind(L.kind[j]) not in
                       (LinkKind.PIPE, LinkKind.PUMP) + tuple(VALVE_TYPES.values())]
        if unsupported:
            raise NetworkFileError(self.path, f"link {unsupported[0]!r}", "this link kind has no EPANET form")
        rough_scale = u.dw_roughness if self.m.water.headloss == "D-W" else 1.0
        self.section("[PIPES]", "ID\tNode1\tNode2\tLength\tDiameter\tRoughness\tMinorLoss\tStatus")
        for j in self.link_rows((LinkKind.PIPE,)):
            status = "CV" if L.check_valve[j] else ("Closed" if L.status[j] == LinkStatus.CLOSED else "Open")
            self.row(self.link_ids[j], self.node_ids[L.from_node[j]], self.node_ids[L.to_node[j]],
                     _f(L.length_m[j] / u.length), _f(L.diameter_m[j] / u.diameter),
                     _f(L.roughness[j] / rough_scale), _f(L.minor_loss[j]), status)

    def pumps(self) -> None:
        L = self.m.links
        self.section("[PUMPS]", "ID\tNode1\tNode2\tParameters")
        for j in self.link_rows((LinkKind.PUMP,)):
            fields = [self.link_ids[j], self.node_ids[L.from_node[j]], self.node_ids[L.to_node[j]]]
            if L.curve[j] >= 0:
                fields += ["HEAD", self.curve_ids[L.curve[j]]]
            else:
                fields += ["POWER", _f(L.pump_power_w[j] / self.u.power_w)]
            speed = L.setting[j]
            if np.isfinite(speed) and speed != 1.0:
                fields += ["SPEED", _f(speed)]
            if L.speed_pattern[j] >= 0:
                fields += ["PATTERN", self.pattern_ids[L.speed_pattern[j]]]
            self.row(*fields)

    def valve_setting(self, kind: LinkKind, value: float) -> str:
        if not np.isfinite(value):
            return "0"
        if kind in (LinkKind.PRV, LinkKind.PSV, LinkKind.PBV):
            return _f(self.pressure(value))
        if kind == LinkKind.FCV:
            return _f(value / self.u.q)
        return _f(value)

    def valves(self) -> None:
        L = self.m.links
        self.section("[VALVES]", "ID\tNode1\tNode2\tDiameter\tType\tSetting\tMinorLoss")
        for j in self.link_rows(tuple(VALVE_TYPES.values())):
            kind = LinkKind(L.kind[j])
            setting = (self.curve_ids[L.curve[j]] if kind == LinkKind.GPV
                       else self.valve_setting(kind, L.setting[j]))
            self.row(self.link_ids[j], self.node_ids[L.from_node[j]], self.node_ids[L.to_node[j]],
                     _f(L.diameter_m[j] / self.u.diameter), kind.name, setting, _f(L.minor_loss[j]))

    def demands(self) -> None:
        d = self.m.demands
        self.section("[DEMANDS]", "Junction\tDemand\tPattern")
        for i in sorted(self.by_node):
            rows = self.by_node[i]
            if len(rows) > 1 or NodeKind(self.m.nodes.kind[i]) not in (NodeKind.JUNCTION, NodeKind.CONSUMER):
                for j in rows:
                    self.row(self.node_ids[i], _f(d.base[j] / self.u.q), self.pattern_id(int(d.pattern[j])))

    def status(self) -> None:
        """Closed pumps, and valves fixed OPEN or CLOSED (pipes carry theirs in [PIPES])."""
        L = self.m.links
        self.section("[STATUS]", "ID\tStatus/Setting")
        for j in range(len(L)):
            kind, st = LinkKind(L.kind[j]), LinkStatus(L.status[j])
            if kind == LinkKind.PUMP and st == LinkStatus.CLOSED:
                self.row(self.link_ids[j], "Closed")
            elif kind in VALVE_TYPES.values() and st != LinkStatus.ACTIVE:
                self.row(self.link_ids[j], st.name.capitalize())

    def patterns(self) -> None:
        self.section("[PATTERNS]", "ID\tMultipliers")
        for pid, (_, values) in zip(self.pattern_ids, self.m.patterns):
            for k in range(0, max(len(values), 1), 6):
                self.row(pid, *[_f(v) for v in values[k:k + 6]] or ["1"])

    def curves(self) -> None:
        u = self.u
        self.section("[CURVES]", "ID\tX-Value\tY-Value")
        scale = {"PUMP": (u.q, u.length), "HEADLOSS": (u.q, u.length), "EFFICIENCY": (u.q, 1.0),
                 "VOLUME": (u.length, u.volume)}
        for cid, c in zip(self.curve_ids, self.m.curves):
            sx, sy = scale.get(c.kind, (1.0, 1.0))
            if c.kind in scale:
                self.out.append(f";{c.kind}: {cid}")
            for x, y in zip(c.x, c.y):
                self.row(cid, _f(x / sx), _f(y / sy))

    def emitters(self) -> None:
        n, u = self.m.nodes, self.u
        self.section("[EMITTERS]", "Junction\tCoefficient")
        for i in range(len(n)):
            if n.emitter_coeff[i] > 0:
                c = n.emitter_coeff[i] * u.pressure_head_m ** self.m.water.emitter_exponent / u.q
                self.row(self.node_ids[i], _f(c))

    def controls(self) -> None:
        self.section("[CONTROLS]")
        L, n = self.m.links, self.m.nodes
        for c in self.m.controls:
            kind = LinkKind(L.kind[c.link])
            if c.setting is not None and c.status is None:
                value = _f(c.setting) if kind == LinkKind.PUMP else self.valve_setting(kind, c.setting)
            elif c.status in (LinkStatus.OPEN, LinkStatus.CLOSED):
                value = LinkStatus(c.status).name
            else:
                raise NetworkFileError(self.path, f"control on link {self.link_ids[c.link]!r}",
                                       "a control needs OPEN, CLOSED or a setting")
            head = f"LINK {self.link_ids[c.link]} {value}"
            if c.trigger == "time":
                self.out.append(f"{head} AT TIME {_clock(c.time_s)}")
            elif c.trigger == "clocktime":
                self.out.append(f"{head} AT CLOCKTIME {_clock(c.time_s)}")
            else:
                if NodeKind(n.kind[c.node]) in (NodeKind.JUNCTION, NodeKind.CONSUMER):
                    v = self.pressure(c.threshold)
                else:
                    v = c.threshold / self.u.length
                self.out.append(f"{head} IF NODE {self.node_ids[c.node]} {c.trigger.upper()} {_f(v)}")

    def times(self) -> None:
        t = self.m.times
        self.section("[TIMES]")
        for key, v in (("Duration", t.duration_s), ("Hydraulic Timestep", t.hydraulic_step_s),
                       ("Pattern Timestep", t.pattern_step_s), ("Pattern Start", t.pattern_start_s),
                       ("Report Timestep", t.report_step_s), ("Report Start", t.report_start_s),
                       ("Start ClockTime", t.start_clocktime_s)):
            self.row(key, _clock(v))

    def options(self) -> None:
        """SI units; the default pattern is named explicitly (EPANET would otherwise take one
        called '1'), and named as a missing id when the model has none."""
        w, m = self.m.water, self.m
        self.section("[OPTIONS]")
        self.row("Units", self.u.flow)
        self.row("Headloss", w.headloss)
        self.row("Specific Gravity", _f(w.specific_gravity))
        self.row("Viscosity", _f(w.kinematic_viscosity_m2_s / (VISCOS_FT2_S * FT ** 2)))
        self.row("Trials", int(w.trials))
        self.row("Accuracy", _f(w.accuracy))
        if m.default_pattern >= 0:
            self.row("Pattern", self.pattern_ids[m.default_pattern])
        elif "1" in self.pattern_ids:
            missing = "_none_"
            while missing in self.pattern_ids:
                missing += "_"
            self.row("Pattern", missing)
        self.row("Demand Multiplier", _f(w.demand_multiplier))
        self.row("Emitter Exponent", _f(w.emitter_exponent))

    def coordinates(self) -> None:
        n = self.m.nodes
        self.section("[COORDINATES]", "Node\tX-Coord\tY-Coord")
        for i in range(len(n)):
            if np.isfinite(n.x[i]) and np.isfinite(n.y[i]):
                self.row(self.node_ids[i], _f(n.x[i]), _f(n.y[i]))

    def vertices(self) -> None:
        self.section("[VERTICES]", "Link\tX-Coord\tY-Coord")
        for lid, pts in self.m.vertices.items():
            for x, y in np.asarray(pts, float).reshape(-1, 2):
                self.row(self.check_id(lid), _f(x), _f(y))
