"""Week-by-week model updates: a full refit, a warm-start update, or no update at all.

:func:`weekly_updates` walks ``weeks`` consecutive weeks from ``start``. Before each week
every model has seen exactly the interactions before that week, and is scored on the
week's purchases (full ranking, chapter 5's ``"all"`` task, customers known before the
week). How a model gets there depends on its mode:

* ``"refit"``: a new model fitted on everything before the week;
* ``"update"``: the model fitted before ``start``, then
  :meth:`companion.recsys.baselines.Recommender.partial_fit` with each past week's
  interactions in turn (a warm start);
* ``"frozen"``: the model fitted before ``start`` and never touched again (the cost of
  doing nothing).

CPU seconds of each fit or update are recorded (``time.process_time``, which the other
processes of a busy machine inflate less than wall time).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from companion._checks import check_in, check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions
from companion.recsys import ranking
from companion.recsys.baselines import Recommender

#: How :func:`weekly_updates` brings a model up to date each week.
MODES = ("refit", "update", "frozen")


def weekly_updates(interactions: pd.DataFrame, start: object, weeks: int,
                   models: dict[str, tuple[Callable[[], Recommender], str]], *, k: int = 10,
                   progress: bool = False) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Score each model on each of ``weeks`` weeks from ``start``.

    ``models`` maps a name to ``(factory, mode)``, with ``factory()`` a new unfitted
    recommender and ``mode`` one of :data:`MODES`. Returns a table with one row per
    (model, week): ``NDCG``, ``Recall``, ``users`` and ``seconds`` (CPU seconds spent
    fitting or updating before that week), and per model a frame of per-user NDCG@k
    indexed by (week, user_id) for paired comparisons.
    """
    frame = check_interactions(interactions)
    start = check_timestamp(start, name="start")
    check_positive_int(weeks, name="weeks")
    if not models:
        raise ValueError("models must name at least one (factory, mode) pair.")
    for name, spec in models.items():
        if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])):
            raise ValueError(f"models[{name!r}] must be a (factory, mode) pair.")
        check_in(spec[1], MODES, name=f"mode of {name!r}")
    times = frame["timestamp"]
    end = start + pd.Timedelta(weeks=weeks)
    if not (times < start).any():
        raise ValueError(f"no interactions before start={start.date()} to train on.")
    if end > times.max() + pd.Timedelta(days=1):
        raise ValueError(f"{weeks} weeks from {start.date()} run past the last interaction "
                         f"({times.max().date()}).")
    rows, per_user = [], {name: [] for name in models}
    state: dict[str, Recommender] = {}
    weeks_iter = range(weeks)
    if progress:
        from tqdm.auto import tqdm

        weeks_iter = tqdm(weeks_iter, desc="weeks")
    for week in weeks_iter:
        lo = start + pd.Timedelta(weeks=week)
        hi = lo + pd.Timedelta(weeks=1)
        train, window = frame[times < lo], frame[(times >= lo) & (times < hi)]
        task = ranking.RankingTask.from_split(train, window, f"week from {lo.date()}")
        for name, (factory, mode) in models.items():
            clock = time.process_time()
            if mode == "refit" or name not in state:
                state[name] = factory().fit(train)
            elif mode == "update":
                previous = frame[(times >= lo - pd.Timedelta(weeks=1)) & (times < lo)]
                if len(previous):
                    state[name].partial_fit(previous)
            seconds = time.process_time() - clock
            result = ranking.evaluate(state[name], task, k=k, tasks=("all",))["all"]
            rows.append({"model": name, "mode": mode, "week": week + 1,
                         "week start": lo, "NDCG": result["NDCG"].mean(),
                         "Recall": result["Recall"].mean(), "users": len(result),
                         "seconds": seconds})
            per_user[name].append(result["NDCG"].rename("NDCG").to_frame().assign(
                week=week + 1).set_index("week", append=True).swaplevel())
    return pd.DataFrame(rows), {name: pd.concat(parts) for name, parts in per_user.items()}
