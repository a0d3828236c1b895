"""Cold start: ranking products nobody has bought yet, and its random baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions
from companion.recsys.baselines import Recommender
from companion.recsys.content.catalogue import item_sets
from companion.recsys.ranking import metrics_from_hits


@dataclass
class ColdStartTask:
    """Products first sold in a window, and who among customers with a history bought them.

    Attributes
    ----------
    train
        Interactions before the window (what a model may learn from).
    candidates
        The cold products: every product first sold in the window (the whole cold
        catalogue is ranked).
    truth
        User id -> set of cold products the customer bought in the window.
    description
        How the task was built.
    """

    train: pd.DataFrame
    candidates: np.ndarray
    truth: pd.Series
    description: str

    def users(self) -> np.ndarray:
        return self.truth.index.to_numpy()


def cold_start_task(interactions: pd.DataFrame, start, end=None, *,
                    min_history: int = 1) -> ColdStartTask:
    """The cold-start task of the window ``[start, end)`` (``end`` default: no end).

    Cold products are those whose first purchase falls in the window; evaluated customers
    have at least ``min_history`` purchase lines before ``start`` and bought at least one
    cold product in the window. Nothing after ``end`` is read.
    """
    frame = check_interactions(interactions)
    start = check_timestamp(start, name="start")
    end = None if end is None else check_timestamp(end, name="end")
    check_positive_int(min_history, name="min_history")
    if end is not None:
        if end <= start:
            raise ValueError(f"end={end} must be after start={start}.")
        frame = frame[frame["timestamp"] < end]
    train = frame[frame["timestamp"] < start]
    window = frame[frame["timestamp"] >= start]
    if train.empty:
        raise ValueError(f"no interaction before start={start}; nothing to learn from.")
    if window.empty:
        raise ValueError(f"no interaction in the window starting {start}.")
    candidates = np.sort(np.setdiff1d(window["item_id"].unique(), train["item_id"].unique()))
    history = train.groupby("user_id").size()
    known = history[history >= min_history].index
    bought = window[window["item_id"].isin(candidates) & window["user_id"].isin(known)]
    if bought.empty:
        raise ValueError(f"no customer with a history bought a product first sold in the "
                         f"window starting {start}.")
    truth = item_sets(bought, "user_id")
    desc = (f"products first sold from {start.date()}"
            + (f" to {end.date()}" if end is not None else "")
            + f": {len(candidates)} products, {len(truth)} customers with a history")
    return ColdStartTask(train.reset_index(drop=True), candidates, truth.sort_index(), desc)


def simulate_launches(interactions: pd.DataFrame, starts: Sequence, *, share: float = 0.1,
                      seed: int = 0) -> pd.DataFrame:
    """Make a shop without product launches look as if it had some.

    For each date in ``starts`` a random ``share`` of the products loses every purchase
    before that date, so those products are first sold from then on. For the synthetic
    shop, whose catalogue is fixed from its first day; never for real data.
    """
    frame = check_interactions(interactions)
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}.")
    rng = np.random.default_rng(seed)
    items = np.sort(frame["item_id"].unique())
    order = rng.permutation(len(items))
    n = int(round(share * len(items)))
    drop = np.zeros(len(frame), dtype=bool)
    for k, start in enumerate(starts):
        start = check_timestamp(start, name="starts")
        launched = items[order[k * n:(k + 1) * n]]
        drop |= (frame["item_id"].isin(launched) & (frame["timestamp"] < start)).to_numpy()
    return frame[~drop].reset_index(drop=True)


def _cold_metrics(scores: np.ndarray, task: ColdStartTask, k: int) -> pd.DataFrame:
    k = min(k, len(task.candidates))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    truth = task.truth.to_numpy()
    hits = np.array([[task.candidates[j] in items for j in row]
                     for row, items in zip(top, truth, strict=True)], dtype=bool)
    frame = metrics_from_hits(hits, task.truth.map(len).to_numpy())
    frame.index = task.truth.index
    return frame


def evaluate_cold(model: Recommender, task: ColdStartTask, *, k: int = 10) -> pd.DataFrame:
    """Per-customer metrics@k of ``model`` ranking only the cold candidates.

    The model's catalogue must hold every candidate (content models get it from their
    ``item_text``). Ties are broken by candidate order, so a model that scores every
    candidate alike is no better than a fixed order.
    """
    check_positive_int(k, name="k")
    model._check_fitted()
    codes = model.item_encoder_.transform(task.candidates)
    if (codes < 0).any():
        missing = task.candidates[codes < 0][:3].tolist()
        raise ValueError(f"the model cannot score {int((codes < 0).sum())} cold product(s), "
                         f"e.g. {missing}; give it their descriptions.")
    scores = model.score(task.users())[:, codes]
    return _cold_metrics(scores, task, k)


def random_cold(task: ColdStartTask, *, k: int = 10, draws: int = 200,
                seed: int = 0) -> pd.DataFrame:
    """Per-customer metrics of a random order of the candidates, averaged over ``draws``
    orders (close to the exact expectation)."""
    check_positive_int(draws, name="draws")
    rng = np.random.default_rng(seed)
    total = None
    for _ in range(draws):
        scores = rng.random((len(task.truth), len(task.candidates)))
        frame = _cold_metrics(scores, task, k)
        total = frame if total is None else total + frame
    return total / draws
