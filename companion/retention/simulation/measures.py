"""Measures of a run: churn, gaps, cohorts and the summary of a run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from companion.retention.simulation.engine import SimulationResult
from companion.retention.simulation.hazard import (
    WEEKS_PER_YEAR,
    edge_labels,
    fit_hazard,
    hazard_panel,
)
from companion.retention.simulation.world import ShopWorld


def churn_rate(active: np.ndarray, cutoff: int, *, horizon: int = 13,
               lookback: int = 52) -> tuple[float, int]:
    """Share of customers with a purchase in the ``lookback`` weeks before week ``cutoff``
    and none in the ``horizon`` weeks from it (90 days is about 13 weeks), and how many
    customers that share is taken over."""
    if not lookback <= cutoff <= active.shape[1] - horizon:
        raise ValueError(f"cutoff={cutoff} needs {lookback} weeks before it and {horizon} "
                         f"after it within the {active.shape[1]} weeks given.")
    at_risk = active[:, cutoff - lookback:cutoff].any(axis=1)
    churned = ~active[at_risk][:, cutoff:cutoff + horizon].any(axis=1)
    return float(churned.mean()), int(at_risk.sum())


def gap_histogram(active: np.ndarray, start: int, end: int,
                  edges: Sequence[int] = (1, 2, 3, 4, 6, 9, 14, 27, 53)) -> pd.Series:
    """Share of the gaps between consecutive purchase weeks, for purchases in weeks
    ``start`` to ``end`` (a gap is counted in the week of its second purchase), by bin
    of ``edges`` (weeks)."""
    users, weeks = np.nonzero(active[:, :end])
    order = np.lexsort((weeks, users))
    users, weeks = users[order], weeks[order]
    same = users[1:] == users[:-1]
    gaps = (weeks[1:] - weeks[:-1])[same & (weeks[1:] >= start)]
    bins = np.searchsorted(np.asarray(edges), gaps, side="right") - 1
    labels = edge_labels(edges)
    counts = np.bincount(bins, minlength=len(edges))
    return pd.Series(counts / max(counts.sum(), 1), index=labels, name="share of gaps")


def cohort_retention(active: np.ndarray, first_week: np.ndarray, start: int, end: int,
                     months: int = 6, weeks_per_month: int = 4) -> pd.Series:
    """Share of new customers who buy again in each month after the month they arrived,
    pooled over the monthly cohorts that arrived in ``[start, end)`` and can be followed
    for ``months`` months."""
    span = months * weeks_per_month
    rows = []
    for lo in range(start, end - span - weeks_per_month + 1, weeks_per_month):
        cohort = (first_week >= lo) & (first_week < lo + weeks_per_month)
        if not cohort.any():
            continue
        part = active[cohort]
        base = lo + weeks_per_month
        rows.append([part[:, base + m * weeks_per_month:base + (m + 1) * weeks_per_month]
                     .any(axis=1).sum() for m in range(months)] + [cohort.sum()])
    if not rows:
        raise ValueError(f"no cohort in weeks {start} to {end} can be followed for {months} "
                         "months.")
    table = np.array(rows, dtype=float)
    return pd.Series(table[:, :-1].sum(axis=0) / table[:, -1].sum(),
                     index=pd.RangeIndex(1, months + 1, name="months after arrival"),
                     name="retained")


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; near 1: one takes all)."""
    x = np.sort(np.asarray(values, dtype=float))
    if (x < 0).any():
        raise ValueError("gini needs non-negative values.")
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def real_lines(world: ShopWorld, start: int, end: int) -> pd.DataFrame:
    """The real purchases of weeks ``start`` to ``end`` as simulated lines are logged:
    one row per customer, week and product, with ``repeat`` (bought in an earlier week)."""
    lines = world.real[["u", "week", "i", "value"]]
    lines = lines.groupby(["u", "week", "i"], sort=False)["value"].sum().reset_index()
    first = lines.groupby(["u", "i"])["week"].transform("min")
    lines = lines.assign(repeat=lines["week"] > first)
    return lines[(lines["week"] >= start) & (lines["week"] < end)].reset_index(drop=True)


def behaviour_statistics(world: ShopWorld, active: np.ndarray, lines: pd.DataFrame,
                         start: int, end: int, cutoff: int) -> dict[str, object]:
    """The statistics the calibration compares, for real or simulated logs of weeks
    ``start`` to ``end``: churn at week ``cutoff``, gap distribution, cohort retention,
    repeat share, visits and items per visit."""
    period = active[:, start:end]
    churn, _ = churn_rate(active, cutoff)
    return {
        "90-day churn": churn,
        "repeat share": float(lines["repeat"].mean()),
        "visits": int(period.sum()),
        "customers with a visit": int(period.any(axis=1).sum()),
        "items per visit": float(len(lines) / max(period.sum(), 1)),
        "gaps": gap_histogram(active, start, end),
        "cohorts": cohort_retention(active, world.first_week, start, end),
    }


def calibration_table(real: dict, simulated: Sequence[dict]) -> pd.DataFrame:
    """Real against simulated statistics: the simulated mean over seeds and a 95%
    prediction interval for one run (``mean +- t * sd * sqrt(1 + 1/n)``), the range in
    which the real value should fall if the simulator describes the shop."""
    from scipy.stats import t as student

    rows = {}
    n = len(simulated)
    if n < 2:
        raise ValueError("calibration_table needs at least two simulated runs.")
    scale = student.ppf(0.975, n - 1) * np.sqrt(1 + 1 / n)
    for key, value in real.items():
        if isinstance(value, pd.Series):
            items = [(f"{key}: {label}", value[label], [s[key][label] for s in simulated])
                     for label in value.index]
        else:
            items = [(key, value, [s[key] for s in simulated])]
        for name, real_value, sims in items:
            sims = np.asarray(sims, dtype=float)
            mean, sd = sims.mean(), sims.std(ddof=1)
            rows[name] = {"real": float(real_value), "simulated": mean,
                          "low": mean - scale * sd, "high": mean + scale * sd}
    table = pd.DataFrame(rows).T
    table["inside"] = (table["real"] >= table["low"]) & (table["real"] <= table["high"])
    return table


def run_summary(world: ShopWorld, result: SimulationResult, cutoff: int,
                months: int = 13) -> dict[str, object]:
    """What the chapter reports for one run: churn at ``cutoff``, purchases, revenue,
    relevance, and month-by-month retention, coverage and concentration."""
    start, end = result.start, result.end
    present = world.first_week < end
    base = result.active[:, start - WEEKS_PER_YEAR:start].any(axis=1)
    churn, _ = churn_rate(result.active, cutoff)
    month = (result.lines["week"].to_numpy() - start) // 4
    shown_month = (result.visits["week"].to_numpy() - start) // 4
    retention, coverage, concentration = [], [], []
    for m in range(months):
        weeks = slice(start + 4 * m, min(start + 4 * (m + 1), end))
        retention.append(float(result.active[base, weeks].any(axis=1).mean()))
        on_sale = ((world.available_from <= start + 4 * m)
                   & (world.available_until >= start + 4 * m)).sum()
        shown = result.shown[shown_month == m]
        coverage.append(len(np.unique(shown[shown >= 0])) / on_sale if shown.size else 0.0)
        bought = np.bincount(result.lines["i"].to_numpy()[month == m], minlength=world.n_items)
        concentration.append(gini(bought))
    visits = result.visits
    k = result.assumptions.slate_size
    return {
        "90-day churn": churn,
        "visits per customer": len(visits) / present.sum(),
        "items per customer": len(result.lines) / present.sum(),
        "revenue per customer": float(visits["value"].sum() / present.sum()),
        "slate precision": float(visits["hits"].mean() / k) if result.shown.size else 0.0,
        "coverage": float(np.mean(coverage)),
        "gini": float(np.mean(concentration)),
        "retention curve": retention,
        "coverage curve": coverage,
        "gini curve": concentration,
        "fit seconds": float(np.sum(result.fit_seconds)),
    }


def estimate_relevance_effect(world: ShopWorld, result: SimulationResult) -> float:
    """Estimate the relevance effect back from simulated logs, as an analyst with exposure
    logs could: the return model refitted on the run's weeks with each customer's
    relevance ``R`` as an extra column. Logs of real shops without
    records of what was shown offer no such column."""
    start, end = result.start, result.end
    panel = hazard_panel(result.active, range(start, end))
    visits = result.visits.sort_values(["u", "week"])
    key_v = visits["u"].to_numpy() * (end + 1) + visits["week"].to_numpy()
    key_p = panel["u"].to_numpy() * (end + 1) + panel["week"].to_numpy()
    pos = np.searchsorted(key_v, key_p) - 1  # the customer's last simulated visit before
    valid = (pos >= 0) & (visits["u"].to_numpy()[np.maximum(pos, 0)] == panel["u"].to_numpy())
    relevance = np.where(valid, visits["relevance"].to_numpy()[np.maximum(pos, 0)], 0.0)
    hazard = fit_hazard(result.active, range(start, end), extra=relevance,
                        extra_names=["relevance"])
    return hazard.extra["relevance"]
