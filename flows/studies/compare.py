"""Side-by-side tables of a study's variants (plain Arrow tables keyed by variant, zone, node).

Durations weigh each tick by ``tick_s`` (a tick's state stands for the interval it closes):
customer-hours = customers affected x tick_s / 3600, summed over ticks; gas lost = leak flow at
supplied nodes x tick_s. Methane released and CO2e come from the carbon module's factor table
(``twin.carbon.methane_released``: methane mass fraction of the composition, GWP100, and the CO2
the gas itself carries). docs/whatif.md lists every column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipetwin.flows.studies.variant import VariantResult
from pipetwin.twin.carbon import FactorTable, methane_released

TS = pa.timestamp("ns", tz="UTC")


@dataclass
class Context:
    """What the tables need besides the results."""

    node_ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    zones: np.ndarray
    customers: np.ndarray
    start_ns: int
    tick_s: float
    min_service_pa: float
    factors: FactorTable
    descriptions: dict[str, str]
    changes: dict[str, list[str]]

    @property
    def zone_names(self) -> list[str]:
        n_zones = int(self.zones.max()) + 1 if (self.zones >= 0).any() else 0
        return [f"zone {z}" for z in range(n_zones)] + ["network"]


def _ts(ctx: Context, t_s: np.ndarray) -> pa.Array:
    return pa.array(ctx.start_ns + np.round(np.asarray(t_s) * 1e9).astype(np.int64), TS)


def ticks_table(results: list[VariantResult], ctx: Context) -> pa.Table:
    """One row per variant and tick: network-wide figures."""
    parts = []
    for r in results:
        n = len(r.t_s)
        parts.append(pa.table({
            "variant": pa.array([r.name] * n, pa.string()), "ts": _ts(ctx, r.t_s), "t_s": r.t_s,
            "min_pressure_pa": r.min_pressure_pa[:, -1],
            "min_pressure_node": [ctx.node_ids[j] if j >= 0 else None for j in r.min_node[:, -1]],
            "customers_below_min": r.below_min[:, -1], "customers_unsupplied": r.unsupplied[:, -1],
            "line_pack_kg": r.line_pack_kg, "leak_kg_s": r.leak_kg_s, "undelivered_kg_s": r.undelivered_kg_s,
            "inflow_kg_s": r.inflow_kg_s, "converged": r.converged, "iterations": r.iterations}))
    return pa.concat_tables(parts)


def zone_ticks_table(results: list[VariantResult], ctx: Context) -> pa.Table:
    """One row per variant, tick and zone (the zone ``network`` is every customer)."""
    names = ctx.zone_names
    parts = []
    for r in results:
        n, cols = r.min_pressure_pa.shape
        parts.append(pa.table({
            "variant": pa.array([r.name] * (n * cols), pa.string()), "ts": _ts(ctx, np.repeat(r.t_s, cols)),
            "zone": pa.array(names * n, pa.string()), "min_pressure_pa": r.min_pressure_pa.ravel(),
            "min_pressure_node": [ctx.node_ids[j] if j >= 0 else None for j in r.min_node.ravel()],
            "customers_below_min": r.below_min.ravel(), "customers_unsupplied": r.unsupplied.ravel()}))
    return pa.concat_tables(parts)


def comparison_table(results: list[VariantResult], ctx: Context) -> pa.Table:
    """One row per variant and zone: the lowest pressure and when, customers affected and for how
    long, and the change of the lowest pressure against the baseline (the first result)."""
    names = ctx.zone_names
    hours = ctx.tick_s / 3600.0
    rows: dict[str, list] = {k: [] for k in (
        "variant", "zone", "customers", "min_pressure_pa", "min_pressure_ts", "min_pressure_node",
        "min_pressure_vs_baseline_pa", "customers_below_min", "customer_hours_below_min", "customers_unsupplied",
        "customer_hours_unsupplied", "max_customers_unsupplied")}
    base_min = None
    for r in results:
        mins = []
        for c, zone in enumerate(names):
            in_zone = ctx.customers & ((ctx.zones == c) if zone != "network" else True)
            col = r.min_pressure_pa[:, c]
            has = np.isfinite(col)
            i = int(np.argmin(np.where(has, col, np.inf))) if has.any() else -1
            mins.append(col[i] if i >= 0 else np.nan)
            rows["variant"].append(r.name)
            rows["zone"].append(zone)
            rows["customers"].append(int(in_zone.sum()))
            rows["min_pressure_pa"].append(float(col[i]) if i >= 0 else None)
            rows["min_pressure_ts"].append(ctx.start_ns + int(round(r.t_s[i] * 1e9)) if i >= 0 else None)
            rows["min_pressure_node"].append(ctx.node_ids[r.min_node[i, c]] if i >= 0 else None)
            rows["customers_below_min"].append(int((in_zone & (r.node_ticks_below > 0)).sum()))
            rows["customer_hours_below_min"].append(float(r.below_min[:, c].sum() * hours))
            rows["customers_unsupplied"].append(int((in_zone & (r.node_ticks_unsupplied > 0)).sum()))
            rows["customer_hours_unsupplied"].append(float(r.unsupplied[:, c].sum() * hours))
            rows["max_customers_unsupplied"].append(int(r.unsupplied[:, c].max()) if len(r.t_s) else 0)
        if base_min is None:
            base_min = mins
        rows["min_pressure_vs_baseline_pa"].extend(
            float(m - b) if np.isfinite(m) and np.isfinite(b) else None for m, b in zip(mins, base_min))
    table = pa.table(rows)
    return table.set_column(table.schema.get_field_index("min_pressure_ts"), "min_pressure_ts",
                            pa.array(rows["min_pressure_ts"], pa.int64()).cast(TS))


def variants_table(results: list[VariantResult], ctx: Context) -> pa.Table:
    """One row per variant: totals over the study."""
    hours = ctx.tick_s / 3600.0
    rows: dict[str, list] = {k: [] for k in (
        "variant", "description", "changes", "ticks", "ticks_not_converged", "network_versions",
        "min_pressure_pa", "customer_hours_below_min", "customer_hours_unsupplied", "customers_unsupplied",
        "line_pack_min_kg", "line_pack_mean_kg", "line_pack_max_kg", "line_pack_vs_baseline_kg", "gas_lost_kg",
        "methane_released_kg", "co2e_t", "gas_not_delivered_kg")}
    base_pack = None
    for r in results:
        pack = r.line_pack_kg
        lost = float(r.leak_kg_s.sum() * ctx.tick_s)
        released = methane_released(ctx.factors, mass_kg=lost)
        if base_pack is None:
            base_pack = float(pack.mean())
        mins = r.min_pressure_pa[:, -1]
        rows["variant"].append(r.name)
        rows["description"].append(ctx.descriptions.get(r.name, ""))
        rows["changes"].append("; ".join(ctx.changes.get(r.name, [])))
        rows["ticks"].append(len(r.t_s))
        rows["ticks_not_converged"].append(int((~r.converged).sum()))
        rows["network_versions"].append(r.versions)
        rows["min_pressure_pa"].append(float(np.nanmin(mins)) if np.isfinite(mins).any() else None)
        rows["customer_hours_below_min"].append(float(r.below_min[:, -1].sum() * hours))
        rows["customer_hours_unsupplied"].append(float(r.unsupplied[:, -1].sum() * hours))
        rows["customers_unsupplied"].append(int((ctx.customers & (r.node_ticks_unsupplied > 0)).sum()))
        rows["line_pack_min_kg"].append(float(pack.min()))
        rows["line_pack_mean_kg"].append(float(pack.mean()))
        rows["line_pack_max_kg"].append(float(pack.max()))
        rows["line_pack_vs_baseline_kg"].append(float(pack.mean()) - base_pack)
        rows["gas_lost_kg"].append(lost)
        rows["methane_released_kg"].append(released["ch4_kg"])
        rows["co2e_t"].append(released["co2e_kg"] / 1000.0)
        rows["gas_not_delivered_kg"].append(float(r.undelivered_kg_s.sum() * ctx.tick_s))
    return pa.table(rows)


def nodes_table(results: list[VariantResult], ctx: Context) -> pa.Table:
    """One row per variant and node, for maps: the lowest pressure and hours below the minimum
    service pressure or cut off."""
    hours = ctx.tick_s / 3600.0
    n = len(ctx.node_ids)
    names = ctx.zone_names
    zone = [names[z] if z >= 0 else None for z in ctx.zones]
    parts = []
    for r in results:
        tick = r.node_min_tick
        ts = np.where(tick >= 0, ctx.start_ns + np.round(r.t_s[np.maximum(tick, 0)] * 1e9).astype(np.int64), 0)
        parts.append(pa.table({
            "variant": pa.array([r.name] * n, pa.string()), "node": pa.array(list(ctx.node_ids), pa.string()),
            "x": ctx.x, "y": ctx.y, "zone": pa.array(zone, pa.string()), "customer": ctx.customers,
            "min_pressure_pa": r.node_min_pressure_pa,
            "min_pressure_ts": pa.array(ts, pa.int64(), mask=tick < 0).cast(TS),
            "hours_below_min": r.node_ticks_below * hours, "hours_unsupplied": r.node_ticks_unsupplied * hours}))
    return pa.concat_tables(parts)
