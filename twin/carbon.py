"""Methane and CO2 accounting: gas released to air and gas burnt by customers, turned into mass,
energy, CO2, CO2-equivalent and cost with a dated, versioned factor table.

The method (docs/carbon.md gives the sources):

- **Composition.** Natural gas is a mixture; its mole fractions give the molar mass
  M = sum x_i M_i, the density at any stated condition by the ideal gas law rho = p M / (R T)
  (at normal conditions, 0 degC and 101,325 Pa, real H-gas is 0.2-0.3 % denser; the ideal law is
  the stated convention here), the methane mass fraction w_CH4 = x_CH4 M_CH4 / M, and the
  calorific values per mole (ISO 6976, 25 degC combustion reference) summed by mole fraction.
- **Released gas.** A leak or vent is a gas mass (the twin's units, kg) or a volume at stated
  conditions; methane = gas mass x w_CH4, CO2e = methane x GWP100 (+ the CO2 the gas itself
  carries, at GWP 1).
- **Burnt gas.** Energy = volume x calorific value, i.e. gas mass x calorific value per kg;
  CO2 = net energy x emission factor. IPCC factors are per net (lower) calorific value, so CO2 uses
  the net energy; tariffs are quoted per kWh of gross (upper) calorific value, so cost uses the
  gross energy.

Every result carries the factor table's ``source``, ``version`` and ``date``.

>>> pure = GasComposition({"methane": 1.0}, name="methane")
>>> round(pure.normal_density_kg_m3(), 5), round(pure.methane_mass_fraction, 6)
(0.71576, 1.0)
>>> table = FactorTable(composition=pure)
>>> released = methane_released(table, volume_m3=1000.0)
>>> round(released["ch4_kg"], 2), round(released["co2e_kg"], 1)
(715.76, 21329.6)
>>> round(combustion_co2(table, energy_net_j=1e12)["co2_kg"])
56100
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

R_J_MOL_K = 8.314462618               # molar gas constant (CODATA 2018, exact)
NORMAL_PRESSURE_PA = 101325.0
NORMAL_TEMPERATURE_K = 273.15
J_PER_KWH = 3.6e6
J_PER_TJ = 1e12

# molar mass g/mol (IUPAC 2013 standard atomic weights, as tabulated in ISO 6976:2016), and the
# ideal molar heating values kJ/mol, gross and net, at the 25 degC combustion reference (ISO 6976)
COMPONENTS: dict[str, tuple[float, float, float, int]] = {
    #            M g/mol  gross    net      carbon atoms
    "methane":   (16.043, 891.56, 802.69, 1),
    "ethane":    (30.069, 1562.14, 1428.84, 2),
    "propane":   (44.096, 2221.10, 2043.37, 3),
    "n_butane":  (58.122, 2879.76, 2657.60, 4),
    "i_butane":  (58.122, 2870.58, 2648.42, 4),
    "n_pentane": (72.149, 3538.60, 3245.45, 5),
    "hydrogen":  (2.016, 286.15, 241.72, 0),
    "carbon_monoxide": (28.010, 282.98, 282.98, 1),
    "nitrogen":  (28.014, 0.0, 0.0, 0),
    "carbon_dioxide": (44.010, 0.0, 0.0, 1),
    "oxygen":    (31.999, 0.0, 0.0, 0),
    "helium":    (4.003, 0.0, 0.0, 0),
}
M_CO2_G_MOL = 44.010


@dataclass(frozen=True)
class GasComposition:
    """Mole fractions by component name (keys of ``COMPONENTS``); they must sum to 1."""

    mole_fractions: dict[str, float]
    name: str = "custom"
    source: str = ""

    def __post_init__(self):
        unknown = sorted(set(self.mole_fractions) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"gas composition {self.name!r}: unknown component(s) {unknown}; "
                             f"known: {sorted(COMPONENTS)}")
        if any(not x >= 0 for x in self.mole_fractions.values()):
            raise ValueError(f"gas composition {self.name!r}: mole fractions must be >= 0")
        total = sum(self.mole_fractions.values())
        if abs(total - 1.0) > 1e-4:
            raise ValueError(f"gas composition {self.name!r}: mole fractions sum to {total:.6f}, not 1")

    def _sum(self, column: int) -> float:
        return sum(x * COMPONENTS[c][column] for c, x in self.mole_fractions.items())

    @property
    def molar_mass_kg_mol(self) -> float:
        return self._sum(0) * 1e-3

    def density_kg_m3(self, pressure_pa: float, temperature_k: float) -> float:
        """Ideal-gas density at an absolute pressure and temperature."""
        return pressure_pa * self.molar_mass_kg_mol / (R_J_MOL_K * temperature_k)

    def normal_density_kg_m3(self, pressure_pa: float = NORMAL_PRESSURE_PA,
                             temperature_k: float = NORMAL_TEMPERATURE_K) -> float:
        return self.density_kg_m3(pressure_pa, temperature_k)

    @property
    def methane_mass_fraction(self) -> float:
        return self.mole_fractions.get("methane", 0.0) * COMPONENTS["methane"][0] * 1e-3 / self.molar_mass_kg_mol

    @property
    def co2_mass_fraction(self) -> float:
        return self.mole_fractions.get("carbon_dioxide", 0.0) * M_CO2_G_MOL * 1e-3 / self.molar_mass_kg_mol

    @property
    def gross_cv_j_kg(self) -> float:
        return self._sum(1) * 1e3 / self.molar_mass_kg_mol

    @property
    def net_cv_j_kg(self) -> float:
        return self._sum(2) * 1e3 / self.molar_mass_kg_mol

    @property
    def carbon_co2_kg_per_kg(self) -> float:
        """CO2 from burning 1 kg completely (carbon balance; a cross-check of the factor method)."""
        return self._sum(3) * M_CO2_G_MOL * 1e-3 / self.molar_mass_kg_mol


# A typical H-gas (group H of DVGW G 260 and EN 16726): Russian-type pipeline gas, 97 % methane.
H_GAS = GasComposition({"methane": 0.970, "ethane": 0.013, "propane": 0.003, "n_butane": 0.001,
                        "nitrogen": 0.010, "carbon_dioxide": 0.003}, name="typical H-gas",
                       source="illustrative Russian-type H-gas (group H, DVGW G 260 / EN 16726); replace with "
                              "the network's measured composition")


@dataclass(frozen=True)
class FactorTable:
    """Everything a figure depends on, dated and versioned so a report states what it used.
    ``net_cv_j_m3`` / ``gross_cv_j_m3`` (at normal conditions) override the composition's values
    when the utility's billing calorific value is known. ``tariffs``: price per kWh (gross) by
    customer class; ``default`` applies to classes without their own."""

    version: str = "2026.1"
    date: str = "2026-11-22"
    source: str = "pipetwin default factors: IPCC AR6 GWP100, IPCC 2006 stationary combustion, ISO 6976 values"
    gwp100_ch4: float = 29.8
    gwp_source: str = "IPCC AR6 WG I (2021), ch. 7, Table 7.15: fossil methane GWP-100 = 29.8 +/- 11"
    ef_kg_co2_per_tj: float = 56_100.0
    ef_source: str = ("2006 IPCC Guidelines for National GHG Inventories, vol. 2 (Energy), ch. 2, Table 2.2: "
                      "natural gas 56,100 kg CO2/TJ on a net calorific value basis")
    composition: GasComposition = H_GAS
    net_cv_j_m3: float | None = None
    gross_cv_j_m3: float | None = None
    normal_pressure_pa: float = NORMAL_PRESSURE_PA
    normal_temperature_k: float = NORMAL_TEMPERATURE_K
    tariffs: dict[str, float] = field(default_factory=dict)
    currency: str = "EUR"
    tariff_source: str = ""

    @property
    def normal_density_kg_m3(self) -> float:
        return self.composition.normal_density_kg_m3(self.normal_pressure_pa, self.normal_temperature_k)

    @property
    def net_cv_j_kg(self) -> float:
        return self.net_cv_j_m3 / self.normal_density_kg_m3 if self.net_cv_j_m3 else self.composition.net_cv_j_kg

    @property
    def gross_cv_j_kg(self) -> float:
        return self.gross_cv_j_m3 / self.normal_density_kg_m3 if self.gross_cv_j_m3 else \
            self.composition.gross_cv_j_kg

    def tariff(self, customer_class: str) -> float | None:
        return self.tariffs.get(customer_class, self.tariffs.get("default"))

    def describe(self) -> dict:
        """The table and the values derived from it, as stated in every report."""
        c = self.composition
        return {**asdict(self), "derived": {
            "molar_mass_kg_mol": c.molar_mass_kg_mol, "normal_density_kg_m3": self.normal_density_kg_m3,
            "methane_mass_fraction": c.methane_mass_fraction, "co2_mass_fraction": c.co2_mass_fraction,
            "net_cv_j_kg": self.net_cv_j_kg, "gross_cv_j_kg": self.gross_cv_j_kg,
            "net_cv_j_m3": self.net_cv_j_kg * self.normal_density_kg_m3,
            "gross_cv_j_m3": self.gross_cv_j_kg * self.normal_density_kg_m3,
            "ef_kg_co2_per_kg_gas": self.ef_kg_co2_per_tj * self.net_cv_j_kg / J_PER_TJ,
            "carbon_balance_kg_co2_per_kg_gas": c.carbon_co2_kg_per_kg}}

    def stamp(self) -> dict:
        return {"factors_version": self.version, "factors_date": self.date, "factors_source": self.source}


def factor_table_from_dict(data: dict) -> FactorTable:
    """A factor table from a plain mapping (a YAML file): unknown keys are refused by name."""
    data = dict(data)
    comp = data.pop("composition", None)
    allowed = set(FactorTable.__dataclass_fields__)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"factor table: unknown key(s) {unknown}; known: {sorted(allowed)}")
    for key in ("version", "date", "source"):
        if key not in data:
            raise ValueError(f"factor table: {key!r} is required (every report states it)")
    if comp is not None:
        if not isinstance(comp, dict) or "mole_fractions" not in comp:
            raise ValueError("factor table: composition needs mole_fractions (and optionally name, source)")
        data["composition"] = GasComposition({str(k): float(v) for k, v in comp["mole_fractions"].items()},
                                             name=str(comp.get("name", "custom")), source=str(comp.get("source", "")))
    if "tariffs" in data:
        data["tariffs"] = {str(k): float(v) for k, v in (data["tariffs"] or {}).items()}
    return FactorTable(**{k: str(v) if k in ("version", "date") else v for k, v in data.items()})


# -- the two calculations ----------------------------------------------------------------------------


def gas_mass_kg(table: FactorTable, *, mass_kg: float | None = None, volume_m3: float | None = None,
                pressure_pa: float | None = None, temperature_k: float | None = None) -> float:
    """Gas mass from a mass, or from a volume at stated conditions (default: normal conditions)."""
    if (mass_kg is None) == (volume_m3 is None):
        raise ValueError("give the gas as mass_kg or as volume_m3, not both")
    if mass_kg is not None:
        return float(mass_kg)
    p = table.normal_pressure_pa if pressure_pa is None else pressure_pa
    t = table.normal_temperature_k if temperature_k is None else temperature_k
    return float(volume_m3) * table.composition.density_kg_m3(p, t)


def methane_released(table: FactorTable, **gas) -> dict:
    """Methane and CO2e of gas released to air (a leak, a purge, a vent). ``gas``: as ``gas_mass_kg``."""
    m = gas_mass_kg(table, **gas)
    ch4 = m * table.composition.methane_mass_fraction
    co2 = m * table.composition.co2_mass_fraction
    return {"gas_kg": m, "ch4_kg": ch4, "co2_vented_kg": co2, "co2e_kg": ch4 * table.gwp100_ch4 + co2,
            "gwp100_ch4": table.gwp100_ch4, **table.stamp()}


def combustion_co2(table: FactorTable, *, energy_net_j: float | None = None, customer_class: str = "default",
                   **gas) -> dict:
    """Energy, CO2 and cost of gas delivered and burnt. Give the gas (as ``gas_mass_kg``) or its
    net energy directly."""
    if energy_net_j is None:
        m = gas_mass_kg(table, **gas)
        net, gross = m * table.net_cv_j_kg, m * table.gross_cv_j_kg
    else:
        net = float(energy_net_j)
        m = net / table.net_cv_j_kg
        gross = m * table.gross_cv_j_kg
    price = table.tariff(customer_class)
    return {"gas_kg": m, "volume_m3_normal": m / table.normal_density_kg_m3, "energy_net_j": net,
            "energy_gross_j": gross, "energy_gross_kwh": gross / J_PER_KWH, "energy_net_tj": net / J_PER_TJ,
            "co2_kg": net / J_PER_TJ * table.ef_kg_co2_per_tj,
            "cost": None if price is None else gross / J_PER_KWH * price, "currency": table.currency,
            **table.stamp()}
