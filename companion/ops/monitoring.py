"""Monitoring a deployed recommender: drift of data and predictions, and delayed labels.

A recommender trained once goes stale as the shop moves on: new products arrive, the season
changes what sells, and customers' recent purchases are missing from a frozen model. This
module replays a purchase log week by week after a training cutoff and measures, for each
week, what a shop could watch:

* **data drift**: the population stability index (:func:`psi`) of the distribution of
  purchases over item-popularity bins (:func:`popularity_bins`) and of basket sizes
  (:func:`basket_size_counts`), against a reference window at the end of training;
* **prediction drift**: the PSI of the frozen model's top-k scores (:func:`top_k_scores`);
* **delayed-label quality**: NDCG@10 of the frozen model on the week's purchases (known
  only once the week is over), and of a model retrained on everything before the week.

The population stability index of a current distribution ``a`` against a reference ``e``
over the same bins is ``PSI = sum_i (a_i - e_i) ln(a_i / e_i)``: the symmetrised
Kullback-Leibler divergence ``KL(a||e) + KL(e||a)``. Empty bins get a small ``eps`` so that
the logarithm stays finite. Common rules of thumb read PSI < 0.1 as stable and PSI > 0.25
as a significant shift (Siddiqi, 2006; Yurdakul, 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from companion._checks import check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions
from companion.recsys import ranking
from companion.recsys.baselines import Recommender

#: basket-size bin edges (distinct products per invoice): 1, 2-3, 4-7, ..., 64 and more
BASKET_EDGES: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, np.inf)


def psi(expected: object, actual: object, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or shares).

    Both are normalised to proportions over the same bins; bins with a proportion below
    ``eps`` are raised to ``eps`` (and the proportions renormalised) so that an empty bin
    gives a large but finite term. ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i) >= 0``, zero
    exactly when the two distributions agree.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.ndim != 1 or e.shape != a.shape:
        raise ValueError(f"expected and actual must be 1-D with the same number of bins, got "
                         f"shapes {e.shape} and {a.shape}.")
    if len(e) < 2:
        raise ValueError("PSI needs at least two bins.")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    for name, v in (("expected", e), ("actual", a)):
        if not np.isfinite(v).all() or (v < 0).any():
            raise ValueError(f"{name} must be finite and non-negative.")
        if v.sum() <= 0:
            raise ValueError(f"{name} is empty (all bins zero).")
    e, a = e / e.sum(), a / a.sum()
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(reference: object, n_bins: int = 10) -> np.ndarray:
    """Bin edges at the reference's quantiles (open-ended outer bins; ties merged)."""
    check_positive_int(n_bins, name="n_bins", minimum=2)
    values = np.asarray(reference, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("reference must be a non-empty array of finite values.")
    inner = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def histogram(values: object, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``[edges[j], edges[j + 1])``."""
    values = np.asarray(values, dtype=float)
    idx = np.searchsorted(edges, values, side="right") - 1
    idx = np.clip(idx, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1)


def psi_values(reference: object, current: object, n_bins: int = 10,
               eps: float = 1e-4) -> float:
    """PSI of a continuous variable, binned at the reference's deciles (or ``n_bins``)."""
    edges = quantile_edges(reference, n_bins)
    return psi(histogram(reference, edges), histogram(current, edges), eps)


def popularity_bins(train: pd.DataFrame, n_bins: int = 10) -> pd.Series:
    """Item id -> popularity bin in the training data, bins of equal purchase mass.

    Items are ranked by their number of purchases (rows) in ``train``; bin 0 holds the
    most popular items that make up the first ``1/n_bins`` of all purchases, and so on.
    Items absent from ``train`` fall in bin ``n_bins`` (see :func:`popularity_counts`).
    """
    check_positive_int(n_bins, name="n_bins", minimum=2)
    frame = check_interactions(train, name="train")
    counts = frame["item_id"].value_counts(sort=False)
    counts = counts.sort_values(ascending=False, kind="stable")
    mass = np.cumsum(counts.to_numpy()) / counts.sum()
    bins = np.minimum((mass * n_bins - 1e-9).astype(int), n_bins - 1)
    return pd.Series(np.maximum(bins, 0), index=counts.index, name="bin")


def popularity_counts(frame: pd.DataFrame, bins: pd.Series) -> np.ndarray:
    """Purchases of ``frame`` per popularity bin, plus a last bin for unseen items."""
    n_bins = int(bins.max()) + 1
    idx = frame["item_id"].map(bins).fillna(n_bins).astype(int).to_numpy()
    return np.bincount(idx, minlength=n_bins + 1)


def basket_sizes(frame: pd.DataFrame) -> np.ndarray:
    """Distinct products per invoice."""
    if "invoice" not in frame.columns:
        raise ValueError("basket sizes need an 'invoice' column.")
    return frame.groupby("invoice")["item_id"].nunique().to_numpy()


def basket_size_counts(frame: pd.DataFrame) -> np.ndarray:
    """Invoices per basket-size bin of :data:`BASKET_EDGES`."""
    return histogram(basket_sizes(frame), np.asarray(BASKET_EDGES, dtype=float))


def top_k_scores(model: Recommender, user_ids, k: int = 10) -> np.ndarray:
    """The ``k`` highest scores of each user (all items ranked), flattened."""
    check_positive_int(k, name="k")
    scores = model.score(np.asarray(user_ids))
    if scores.shape[1] < k:
        raise ValueError(f"k={k} exceeds the catalogue of {scores.shape[1]} items.")
    return -np.partition(-scores, k - 1, axis=1)[:, :k].ravel()


def weekly_windows(start, end, days: int = 7) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Consecutive ``[start, start + days)`` windows until ``end`` (the last may be short)."""
    start, end = check_timestamp(start, name="start"), check_timestamp(end, name="end")
    check_positive_int(days, name="days")
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}.")
    out, lo = [], start
    while lo < end:
        hi = min(lo + pd.Timedelta(days=days), end)
        out.append((lo, hi))
        lo = hi
    return out


@dataclass
class MonitoringResult:
    """One row per replayed week, plus the per-customer NDCG behind the quality columns.

    ``table`` columns: ``week`` (index 0 is the first week after training), ``start``,
    ``purchases``, ``customers``, ``unknown customers`` (share of the week's customers the
    frozen model never saw), ``unknown items`` (share of the week's purchases of products
    it never saw), ``PSI popularity`` (over the products it knows), ``PSI basket size``,
    ``PSI scores``, ``NDCG frozen`` and, on retraining weeks, ``NDCG retrained``; both
    NDCG columns are means over the same customers (those the frozen model knows).
    """

    table: pd.DataFrame
    frozen: dict[int, pd.Series] = field(default_factory=dict)
    retrained: dict[int, pd.Series] = field(default_factory=dict)

    def gap(self, week: int, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
        """Mean per-customer NDCG of the retrained minus the frozen model in ``week``, with
        a paired 95% bootstrap interval over customers."""
        from companion.foundations.evaluation import bootstrap_ci

        if week not in self.retrained:
            raise ValueError(f"week {week} has no retrained model; retrained weeks are "
                             f"{sorted(self.retrained)}.")
        diff = (self.retrained[week] - self.frozen[week]).to_numpy()
        return bootstrap_ci(np.mean, diff, n_boot=n_boot, seed=seed)


def replay(interactions: pd.DataFrame, factory: Callable[[], Recommender], cutoff, *,
           weeks: int | None = None, reference_weeks: int = 4, retrain_every: int = 4,
           k: int = 10, n_bins: int = 10, progress: bool = False) -> MonitoringResult:
    """Train ``factory()`` on everything before ``cutoff`` and replay the following weeks.

    Drift is measured against the last ``reference_weeks`` weeks before the cutoff; the
    popularity PSI is taken over the purchases of items the frozen model knows, and the
    share of purchases of items it does not know is reported as ``unknown items`` (an empty
    reference bin would make the PSI a function of ``eps``). Every ``retrain_every`` weeks
    (weeks ``retrain_every``, ``2 * retrain_every``, ...; in week 0 the retrained model is
    the frozen one) a fresh ``factory()`` is fitted on all interactions before that week
    and scored on the same customers as the frozen model.
    """
    from tqdm.auto import tqdm

    frame = check_interactions(interactions)
    cutoff = check_timestamp(cutoff, name="cutoff")
    check_positive_int(reference_weeks, name="reference_weeks")
    check_positive_int(retrain_every, name="retrain_every")
    train = frame[frame["timestamp"] < cutoff]
    if train.empty:
        raise ValueError(f"no interactions before the cutoff {cutoff}.")
    windows = weekly_windows(cutoff, frame["timestamp"].max() + pd.Timedelta(seconds=1))
    windows = [w for w in windows if w[1] - w[0] == pd.Timedelta(days=7)] or windows
    if weeks is not None:
        check_positive_int(weeks, name="weeks")
        windows = windows[:weeks]
    reference = train[train["timestamp"] >= cutoff - pd.Timedelta(weeks=reference_weeks)]
    model = factory().fit(train)
    bins = popularity_bins(train, n_bins)
    ref_pop = popularity_counts(reference, bins)
    ref_basket = basket_size_counts(reference)
    known = set(train["user_id"])
    ref_users = np.array(sorted(set(reference["user_id"]) & known))
    ref_scores = top_k_scores(model, ref_users, k)
    rows, frozen, retrained = [], {}, {}
    for week, (lo, hi) in enumerate(tqdm(windows, desc="weeks", disable=not progress)):
        window = frame[(frame["timestamp"] >= lo) & (frame["timestamp"] < hi)]
        customers = window["user_id"].unique()
        row = {"week": week, "start": lo, "purchases": len(window),
               "customers": len(customers),
               "unknown customers": float(np.mean([u not in known for u in customers]))
               if len(customers) else np.nan}
        if window.empty or not set(customers) & known:
            rows.append(row)
            continue
        pop = popularity_counts(window, bins)
        row["unknown items"] = pop[-1] / pop.sum()
        row["PSI popularity"] = psi(ref_pop[:-1], pop[:-1])
        row["PSI basket size"] = psi(ref_basket, basket_size_counts(window))
        task = _all_task(train, window, known)
        users = task.users("all")
        row["PSI scores"] = psi_values(ref_scores, top_k_scores(model, users, k), n_bins)
        ndcg = ranking.evaluate(model, task, k=k, tasks=("all",))["all"]["NDCG"]
        frozen[week] = ndcg
        row["NDCG frozen"] = float(ndcg.mean())
        row["customers evaluated"] = len(users)
        if week > 0 and week % retrain_every == 0:
            history = frame[frame["timestamp"] < lo]
            fresh = factory().fit(history)
            fresh_task = _all_task(history, window, set(history["user_id"]))
            fresh_ndcg = ranking.evaluate(fresh, fresh_task, k=k, tasks=("all",))["all"]["NDCG"]
            retrained[week] = fresh_ndcg.reindex(ndcg.index)
            row["NDCG retrained"] = float(retrained[week].mean())
        rows.append(row)
    return MonitoringResult(pd.DataFrame(rows).set_index("week"), frozen, retrained)


def _all_task(train: pd.DataFrame, window: pd.DataFrame, known: set) -> ranking.RankingTask:
    """The ``"all"`` task of :meth:`RankingTask.from_split`, without recomputing the
    training customers' histories every week (only ``"all"`` is evaluated here)."""
    seen = window[window["user_id"].isin(known)]
    truth = pd.Series({u: set(items) for u, items in seen.groupby("user_id")["item_id"]},
                      dtype=object).sort_index()
    truth.index.name = "user_id"
    return ranking.RankingTask(train, {"all": truth}, "one replayed week")


def first_alarm(values: pd.Series, threshold: float, *, consecutive: int = 1) -> int | None:
    """The first index at which ``values`` has been at or above ``threshold`` for
    ``consecutive`` entries in a row (missing values break a run), or None."""
    check_positive_int(consecutive, name="consecutive")
    if not isinstance(values, pd.Series):
        raise TypeError(f"values must be a pandas Series, got {type(values).__name__}.")
    run = 0
    for index, value in values.items():
        run = run + 1 if pd.notna(value) and value >= threshold else 0
        if run >= consecutive:
            return index
    return None
