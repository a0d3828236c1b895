"""Evaluation protocols: bootstrap confidence intervals, paired comparisons and tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from companion._checks import check_positive_int


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: object,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of ``metric(*arrays)``.

    Rows are resampled with replacement (the same rows for every array); resamples on
    which the metric is undefined (for example a single class) are skipped.

    Returns
    -------
    (estimate, low, high)
        The metric on the full data and the ``level`` interval.
    """
    check_positive_int(n_boot, name="n_boot", minimum=10)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array.")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays must have equal lengths, got {[len(a) for a in arrays]}.")
    estimate = float(metric(*arrays))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            values.append(metric(*(a[idx] for a in arrays)))
        except ValueError:
            continue
    if len(values) < n_boot // 2:
        raise ValueError("the metric was undefined on most bootstrap resamples.")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: object,
    score_a: object,
    score_b: object,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Interval of ``metric(y, a) - metric(y, b)`` over the same bootstrap resamples.

    Pairing removes the variance the two models share, so a difference can be
    significant even when the two separate intervals overlap.
    """
    return bootstrap_ci(
        lambda t, a, b: metric(t, a) - metric(t, b),
        y_true, score_a, score_b, n_boot=n_boot, level=level, seed=seed,
    )


def paired_difference(
    a: object, b: object, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the units both were measured on, with a bootstrap interval.

    ``a`` and ``b`` hold one score per unit (customer, description, week) for two
    systems. As Series they are paired on ``a``'s index (units missing from either side
    are dropped); as arrays, by position. Resampling the differences, not each side,
    removes the variance the two systems share.

    Returns
    -------
    (difference, low, high)
        The mean difference and its ``level`` percentile interval.
    """
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        if not a.index.is_unique or not b.index.is_unique:
            raise ValueError("paired_difference needs one score per unit: an index "
                             "holds duplicates.")
        diff = (a - b.reindex(a.index)).dropna().to_numpy(dtype=float)
    else:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape:
            raise ValueError(f"a and b must have the same shape, got {a.shape} and "
                             f"{b.shape}.")
        diff = (a - b).ravel()
        diff = diff[~np.isnan(diff)]
    if len(diff) < 2:
        raise ValueError(f"paired_difference needs at least 2 paired units, got "
                         f"{len(diff)}.")
    return bootstrap_ci(np.mean, diff, n_boot=n_boot, level=level, seed=seed)


def verdict(low: float, high: float, *, above: str, below: str, neither: str) -> str:
    """Words for an interval of a difference: ``above`` zero, ``below`` zero, or neither."""
    if not low <= high:
        raise ValueError(f"the interval's low end {low} is above its high end {high}.")
    return above if low > 0 else below if high < 0 else neither


def comparison_table(
    y_true: object,
    scores: Mapping[str, object],
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model, with each metric as "estimate [low, high]" columns.

    Returns a frame with, for each metric, columns ``metric``, ``metric low`` and
    ``metric high``.
    """
    rows = {}
    for model, score in scores.items():
        row = {}
        for name, fn in metrics.items():
            est, low, high = bootstrap_ci(fn, y_true, score, n_boot=n_boot, seed=seed)
            row.update({name: est, f"{name} low": low, f"{name} high": high})
        rows[model] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def format_ci(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Collapse ``m``, ``m low``, ``m high`` columns into one "m [low, high]" text column.

    Columns without both partners (a lone ``x low``, say) are kept as they are.
    """
    out = {}
    paired = {c for c in table.columns
              if f"{c} low" in table.columns and f"{c} high" in table.columns}
    for col in table.columns:
        if any(col in (f"{m} low", f"{m} high") for m in paired):
            continue
        if col in paired:
            out[col] = [
                f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                for v, lo, hi in zip(table[col], table[f"{col} low"], table[f"{col} high"],
                                     strict=True)
            ]
        else:
            out[col] = table[col]
    return pd.DataFrame(out, index=table.index)


def expanding_window_folds(
    periods: object, order: list | tuple | None = None, *, min_train_periods: int = 3
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Time-aware cross-validation folds: train on every earlier period, test on the next.

    ``periods`` gives each row's period (a month name, a date, ...); ``order`` lists the
    periods in time order (default: sorted). Fold ``k`` trains on the first
    ``min_train_periods + k`` periods and tests on the one after, so no fold ever trains
    on the future. Returns ``(train_index, test_index)`` pairs, as scikit-learn's ``cv``
    argument accepts.
    """
    labels = pd.Series(np.asarray(periods))
    order = list(order) if order is not None else sorted(labels.unique())
    unknown = set(labels.unique()) - set(order)
    if unknown:
        raise ValueError(f"periods {sorted(map(str, unknown))} are not in order.")
    check_positive_int(min_train_periods, name="min_train_periods")
    present = [p for p in order if (labels == p).any()]
    if len(present) <= min_train_periods:
        raise ValueError(f"need more than {min_train_periods} periods, got {len(present)}.")
    rank = labels.map({p: i for i, p in enumerate(present)}).to_numpy()
    return [(np.flatnonzero(rank < k), np.flatnonzero(rank == k))
            for k in range(min_train_periods, len(present))]
