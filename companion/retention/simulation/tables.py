"""The tables and runs chapter 6.3 shows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from companion.retention.simulation.engine import simulate
from companion.retention.simulation.measures import behaviour_statistics, churn_rate, real_lines
from companion.retention.simulation.policies import NoRecommendations
from companion.retention.simulation.runs import final_window_task, offline_ndcg, simulate_many
from companion.retention.simulation.world import ShopWorld


def calibration_runs(world: ShopWorld, *, start: int, end: int, cutoffs: Sequence[int],
                     seeds: Sequence[int], processes: int = 1) -> tuple[dict, list[dict]]:
    """Real and simulated (no recommendations, one run per seed) statistics of weeks
    ``start`` to ``end``, for
    :func:`~companion.retention.simulation.measures.calibration_table`. The simulations
    start from the real state at ``start``; 90-day churn is measured at each of ``cutoffs``."""
    summarise = _CheckSummary(start, end, tuple(cutoffs))
    runs = simulate_many(world, [NoRecommendations()], seeds, start=start, weeks=end - start,
                         summarise=summarise, processes=processes, progress=False)
    real = summarise.statistics(world, world.real_active, real_lines(world, start, end))
    return real, [runs["no recommendations", seed] for seed in seeds]


class _CheckSummary:
    def __init__(self, start: int, end: int, cutoffs: tuple[int, ...]) -> None:
        self.start, self.end, self.cutoffs = start, end, cutoffs

    def statistics(self, world, active, lines):
        out = behaviour_statistics(world, active, lines, self.start, self.end,
                                   self.cutoffs[-1])
        del out["90-day churn"]
        for cutoff in self.cutoffs:
            out[f"90-day churn from {world.date(cutoff).date()}"] = churn_rate(active,
                                                                              cutoff)[0]
        return out

    def __call__(self, world, result, policy):
        return self.statistics(world, result.active, result.lines)


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import t as student

    values = np.asarray(values, dtype=float)
    mean = values.mean()
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = student.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def policy_table(summaries: dict[tuple[str, int], dict], metrics: Sequence[str], *,
                 baseline: str | None = None) -> pd.DataFrame:
    """Mean of each metric over seeds with a 95% t-interval (``metric low``/``high``), and
    with ``baseline`` the paired difference to it (``metric vs baseline``, same seeds)."""
    policies = list(dict.fromkeys(name for name, _ in summaries))
    rows = {}
    for name in policies:
        seeds = sorted(s for n, s in summaries if n == name)
        row = {"seeds": len(seeds)}
        for metric in metrics:
            values = np.array([summaries[name, s][metric] for s in seeds], dtype=float)
            row[metric], row[f"{metric} low"], row[f"{metric} high"] = _interval(values)
            if baseline is not None and name != baseline:
                base = np.array([summaries[baseline, s][metric] for s in seeds], dtype=float)
                diff = _interval(values - base)
                row[f"{metric} vs {baseline}"] = diff[0]
                row[f"{metric} vs {baseline} low"], row[f"{metric} vs {baseline} high"] = \
                    diff[1], diff[2]
        rows[name] = row
    return pd.DataFrame(rows).T


def curve_table(summaries: dict[tuple[str, int], dict], curve: str) -> pd.DataFrame:
    """A month-by-month curve (``"retention curve"`` ...) per policy: mean, low and high
    over seeds, long format (policy, month, mean, low, high)."""
    rows = []
    for name in dict.fromkeys(n for n, _ in summaries):
        values = np.array([summaries[name, s][curve] for n, s in summaries if n == name])
        for month in range(values.shape[1]):
            mean, low, high = _interval(values[:, month])
            rows.append((name, month + 1, mean, low, high))
    return pd.DataFrame(rows, columns=["policy", "month", "mean", "low", "high"])


def organic_offline_ndcg(world: ShopWorld, factories: dict[str, Callable[[], object]], *,
                         start: int, weeks: int = 52, seed: int = 0,
                         test_weeks: int = 4) -> pd.DataFrame:
    """Offline NDCG@10 of each recommender with chapter 5's protocol on the log of the
    shop *without* recommendations (the last ``test_weeks`` weeks are the test window): the
    evaluation a shop can run before it deploys anything."""
    result = simulate(world, NoRecommendations(), start=start, weeks=weeks, seed=seed)
    task = final_window_task(world, result, test_weeks=test_weeks)
    return pd.DataFrame({name: offline_ndcg(factory().fit(task.train), task)
                         for name, factory in factories.items()}).T
