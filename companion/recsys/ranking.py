"""The recommender evaluation protocol: tasks, full-ranking metrics and result tables.

A :class:`RankingTask` holds what a model may learn from (``train``) and what it must
predict: for every evaluated user, the set of items bought in a later window. Two tasks are
reported separately:

* ``"all"``: every item bought in the window counts, re-purchases included (in a wholesale
  shop most purchases are repeats);
* ``"new"``: only items the user never bought before count (discovery); models must then
  not recommend items the user already bought.

Metrics rank the **whole catalogue** (no sampled negatives, see Krichene & Rendle, 2020) and
are computed per user, so that confidence intervals can resample users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_in, check_positive_int
from companion.data.preprocessing import Split, check_interactions

METRICS = ("Recall", "NDCG", "HitRate", "MAP", "MRR")


@dataclass
class RankingTask:
    """Training data plus ground truth for one evaluation window.

    Attributes
    ----------
    train
        Interactions a model may be fitted on.
    truth
        Mapping task name (``"all"``, ``"new"``) to a Series indexed by user id whose
        values are the sets of item ids bought in the window (users with an empty set for
        a task are left out of that task).
    description
        How the task was built.
    """

    train: pd.DataFrame
    truth: dict[str, pd.Series]
    description: str

    @classmethod
    def from_split(cls, train: pd.DataFrame, window: pd.DataFrame, description: str = ""
                   ) -> RankingTask:
        """Build both tasks from training interactions and a later window.

        Only users seen in ``train`` are evaluated (unknown users have no history to
        personalise from; models fall back to popularity for them).
        """
        train = check_interactions(train, name="train")
        window = check_interactions(window, name="window")
        if len(train) and len(window) and train["timestamp"].max() >= window["timestamp"].min():
            raise ValueError("window must start after the last training interaction.")
        known = window[window["user_id"].isin(set(train["user_id"]))]
        all_items = _item_sets(known)
        history = _item_sets(train)
        new_items = pd.Series({u: items - history.get(u, set()) for u, items in all_items.items()},
                              dtype=object)
        new_items = new_items[new_items.map(len) > 0]
        if all_items.empty:
            raise ValueError("no user of the window appears in train; nothing to evaluate.")
        return cls(train, {"all": all_items, "new": new_items}, description)

    @classmethod
    def from_time_split(cls, split: Split, part: str = "test") -> RankingTask:
        """Task whose window is ``split.test`` (trained on train + validation) or
        ``split.validation`` (trained on train only)."""
        check_in(part, ("validation", "test"), name="part")
        if part == "validation":
            return cls.from_split(split.train, split.validation,
                                  f"{split.description}; evaluated on the validation window")
        train = pd.concat([split.train, split.validation], ignore_index=True)
        return cls.from_split(train, split.test, f"{split.description}; evaluated on test")

    def users(self, task: str) -> np.ndarray:
        """The user ids evaluated on ``task``."""
        check_in(task, self.truth, name="task")
        return self.truth[task].index.to_numpy()


def _item_sets(frame: pd.DataFrame) -> pd.Series:
    """User id -> set of item ids (a Series of Python sets, sorted by user)."""
    sets = {user: set(items) for user, items in frame.groupby("user_id")["item_id"]}
    out = pd.Series(sets, dtype=object)
    out.index.name = "user_id"
    return out.sort_index()


def hits_matrix(recommended: np.ndarray, truth: pd.Series) -> np.ndarray:
    """Boolean ``(users, k)``: whether each recommended item is in that user's truth set."""
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or len(recommended) != len(truth):
        raise ValueError(f"recommended must be (users, k) with {len(truth)} rows, "
                         f"got shape {recommended.shape}.")
    return np.array([[item in items for item in row]
                     for row, items in zip(recommended, truth.to_numpy(), strict=True)],
                    dtype=bool)


def metrics_from_hits(hits: np.ndarray, n_relevant: np.ndarray) -> pd.DataFrame:
    """Per-user Recall, NDCG, HitRate, MAP and MRR at ``k = hits.shape[1]``.

    * Recall@k = hits / |relevant|.
    * NDCG@k = DCG / ideal DCG with binary gains, DCG = sum of 1 / log2(rank + 1).
    * HitRate@k = 1 if any hit.
    * MAP@k = sum over hit ranks r of precision@r, divided by min(k, |relevant|).
    * MRR@k = 1 / rank of the first hit (0 if none in the top k).
    """
    hits = np.asarray(hits, dtype=float)
    n_relevant = np.asarray(n_relevant, dtype=float)
    if hits.ndim != 2 or len(hits) != len(n_relevant):
        raise ValueError("hits must be (users, k) with one relevant count per user.")
    if (n_relevant <= 0).any():
        raise ValueError("every evaluated user needs at least one relevant item.")
    k = hits.shape[1]
    ranks = np.arange(1, k + 1)
    discounts = 1.0 / np.log2(ranks + 1)
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k).astype(int) - 1]
    precision_at = np.cumsum(hits, axis=1) / ranks
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return pd.DataFrame({
        "Recall": hits.sum(axis=1) / n_relevant,
        "NDCG": dcg / ideal,
        "HitRate": hits.any(axis=1).astype(float),
        "MAP": (precision_at * hits).sum(axis=1) / np.minimum(n_relevant, k),
        "MRR": 1.0 / first,
    })


def evaluate(model, task: RankingTask, *, k: int = 10, tasks: tuple[str, ...] = ("all", "new")
             ) -> dict[str, pd.DataFrame]:
    """Per-user metrics of a fitted recommender on each task.

    ``"all"`` ranks every item (re-purchases allowed); ``"new"`` excludes each user's
    past items. Returns ``{task: frame}`` with one row per evaluated user (indexed by user
    id) and the columns of :data:`METRICS`; ``frame.attrs`` carries the catalogue
    coverage and the novelty of the recommendations.
    """
    check_positive_int(k, name="k")
    popularity = task.train.groupby("item_id")["user_id"].nunique()
    share = popularity / task.train["user_id"].nunique()
    out = {}
    for name in tasks:
        truth = task.truth[name]
        rec = model.recommend(truth.index.to_numpy(), k=k, exclude_seen=(name == "new"))
        frame = metrics_from_hits(hits_matrix(rec, truth), truth.map(len).to_numpy())
        frame.index = truth.index
        distinct = popularity.index.intersection(pd.unique(rec.ravel()))
        frame.attrs["coverage"] = len(distinct) / len(popularity)
        p = share.reindex(rec.ravel()).fillna(1.0 / task.train["user_id"].nunique())
        frame.attrs["novelty"] = float(np.mean(-np.log2(p.to_numpy())))
        out[name] = frame
    return out


def summarise(per_user: dict[str, pd.DataFrame], *, n_boot: int = 500, seed: int = 0
              ) -> pd.DataFrame:
    """Mean of each metric with a per-user bootstrap 95% interval, plus coverage and novelty.

    Returns one row per task with columns ``metric``, ``metric low``, ``metric high``.
    """
    rng = np.random.default_rng(seed)
    rows = {}
    for task, frame in per_user.items():
        values = frame[list(METRICS)].to_numpy()
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        boot = values[idx].mean(axis=1)
        row = {}
        for j, metric in enumerate(METRICS):
            row[metric] = values[:, j].mean()
            row[f"{metric} low"], row[f"{metric} high"] = np.quantile(boot[:, j], [0.025, 0.975])
        row["coverage"] = frame.attrs.get("coverage", np.nan)
        row["novelty"] = frame.attrs.get("novelty", np.nan)
        row["users"] = len(frame)
        rows[task] = row
    return pd.DataFrame(rows).T


def results_table(summaries: dict[str, pd.DataFrame], metric: str = "NDCG",
                  digits: int = 4) -> pd.DataFrame:
    """Models x tasks table of ``metric`` as "mean [low, high]" text, from :func:`summarise`."""
    check_in(metric, METRICS, name="metric")
    table = {}
    for model, summary in summaries.items():
        table[model] = {
            task: f"{row[metric]:.{digits}f} [{row[f'{metric} low']:.{digits}f}, "
                  f"{row[f'{metric} high']:.{digits}f}]"
            for task, row in summary.iterrows()
        }
    return pd.DataFrame(table).T


def grid_search(factory, grid: dict[str, list], task: RankingTask, *, k: int = 10,
                metric: str = "NDCG", tasks: tuple[str, ...] = ("all", "new")) -> pd.DataFrame:
    """Fit ``factory(**params)`` for every combination of ``grid`` on ``task.train``.

    Returns one row per combination with the mean ``metric``@k on each task (columns named
    by task), so that each task can pick its own best parameters (see :func:`best_params`).
    Tune on a validation window, never on the test window.
    """
    import itertools

    check_in(metric, METRICS, name="metric")
    if not grid:
        raise ValueError("grid is empty.")
    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[key] for key in keys)):
        params = dict(zip(keys, values, strict=True))
        model = factory(**params).fit(task.train)
        result = evaluate(model, task, k=k, tasks=tasks)
        rows.append({**params, **{name: frame[metric].mean() for name, frame in result.items()}})
    return pd.DataFrame(rows)


def best_params(results: pd.DataFrame, task: str) -> dict:
    """The parameter combination of :func:`grid_search` with the best score on ``task``."""
    if task not in results.columns:
        raise ValueError(f"results have no column {task!r}.")
    params = [c for c in results.columns if c not in ("all", "new")]
    best = results[task].idxmax()
    # read column by column so that integer parameters stay integers
    return {key: (results.at[best, key].item() if hasattr(results.at[best, key], "item")
                  else results.at[best, key]) for key in params}
