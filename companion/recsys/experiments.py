"""Experiment drivers for the Keras recommenders: tune on validation, test over seeds.

:func:`tune_and_test` is the protocol of chapter 5 for a trainable model:

1. fit on the training part with early stopping on the validation window (seed 0), which
   fixes the number of epochs;
2. on the same validation window, pick the weight of each task's blend (the model's
   ranks plus a baseline's scores, see :class:`companion.recsys.baselines.Blend`);
3. for every seed, refit on training plus validation data for exactly that many epochs
   and score the model and its blends once on the test window.

Nothing of the test window is used before step 3. Results are plain data (per-user metric
frames), so :func:`companion.cache.memoise` can store them.

:func:`rolling_baselines` repeats the baseline protocol over several test windows
(rolling origin, :func:`rolling_tasks`); :func:`rolling_table` and :func:`rolling_difference`
average the windows and give paired bootstrap intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from companion._checks import check_in, check_positive_int, check_timestamp
from companion.data.preprocessing import Split, check_interactions, split_by_time
from companion.recsys import baselines as rec
from companion.recsys import ranking
from companion.recsys.baselines import Blend, Recommender

#: baselines of chapter 5 and the grids they are tuned over on the validation window
BASELINE_GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    "popularity": (rec.Popularity, {}),
    "recent popularity": (rec.Popularity, {"window_days": [7, 14, 30, 90]}),
    "repeat-buy": (rec.RepeatBuy, {"half_life_days": [14, 60, 180, 720]}),
    "item-kNN": (rec.ItemKNN, {"neighbours": [50, 200], "shrinkage": [0.0, 20.0]}),
    "EASE": (rec.EASE, {"l2": [100.0, 400.0, 1600.0]}),
}

#: the next-basket baselines (chapter 5.6), kept out of :data:`BASELINE_GRIDS` so that
#: chapter 5's tables and run time stay as they are. Ranges: the values the reality check
#: (Li et al., 2023) tuned on Ta-Feng, Dunnhumby and Instacart (TIFU-KNN: neighbours 300 or
#: 900, alpha 0.2 to 0.9, group_size 3 or 7, within_decay 0.9, group_decay 0.6 or 0.7; UP-CF@r:
#: recency 10 or 25, asymmetry 0.75, locality 10 or 100), widened towards fewer neighbours,
#: shorter recency and smaller locality for a shop with fewer customers (5.9k) and baskets
#: (median 3 per customer), after a look at a development window (June and July 2011)
#: before every test window of :data:`ROLLING_WINDOWS`. For the "new" task TIFU-KNN's
#: alpha changes nothing (a customer's own vector is zero on items they never bought).
NEXT_BASKET_GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    "TIFU-KNN": (rec.TIFUKNN, {"neighbours": [20, 100, 300], "alpha": [0.2, 0.6],
                               "group_size": [3, 7]}),
    "UP-CF@r": (rec.UPCF, {"recency": [1, 5, 25], "asymmetry": [0.25, 0.75],
                           "locality": [2, 10]}),
}

#: every baseline, for :func:`rolling_baselines`: :data:`BASELINE_GRIDS` with EASE on two
#: values (each EASE fit inverts a catalogue-sized matrix) plus :data:`NEXT_BASKET_GRIDS`
ROLLING_GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    **BASELINE_GRIDS,
    "EASE": (rec.EASE, {"l2": [400.0, 1600.0]}),
    **NEXT_BASKET_GRIDS,
}

#: test windows of the rolling-origin comparison on the real data (the last day with data
#: is 2011-12-09; ends are exclusive)
ROLLING_WINDOWS: tuple[tuple[str, str], ...] = (
    ("2011-09-01", "2011-10-01"),
    ("2011-10-01", "2011-11-01"),
    ("2011-11-01", "2011-12-10"),
)


def last_days_split(interactions: pd.DataFrame, window_days: int = 30) -> Split:
    """Test on the last ``window_days`` days, validate on as many days before them."""
    frame = check_interactions(interactions)
    check_positive_int(window_days, name="window_days")
    end = frame["timestamp"].max().normalize() + pd.Timedelta(days=1)
    return split_by_time(frame, end - pd.Timedelta(days=window_days),
                         validation_days=window_days)


def tune_baselines(validation: ranking.RankingTask, grids=None
                   ) -> tuple[dict[str, dict[str, dict]], dict[str, pd.DataFrame]]:
    """Grid-search every baseline on a validation task, separately for each task.

    Returns ``(chosen, tuning)``: ``chosen[name][task]`` holds the best parameters and
    ``tuning[name]`` the grid-search table.
    """
    grids = BASELINE_GRIDS if grids is None else grids
    chosen, tuning = {}, {}
    for name, (factory, grid) in grids.items():
        if not grid:
            chosen[name] = {"all": {}, "new": {}}
            continue
        tuning[name] = ranking.grid_search(factory, grid, validation)
        chosen[name] = {task: ranking.best_params(tuning[name], task) for task in ("all", "new")}
    return chosen, tuning


def test_baselines(test: ranking.RankingTask, chosen: dict[str, dict[str, dict]], grids=None
                   ) -> dict[str, dict[str, pd.DataFrame]]:
    """Refit each baseline with its tuned parameters on ``test.train``; per-user metrics."""
    grids = BASELINE_GRIDS if grids is None else grids
    return {name: _test_one(grids[name][0], params, test) for name, params in chosen.items()}


def _test_one(factory: Callable[..., Recommender], params: dict[str, dict],
              test: ranking.RankingTask) -> dict[str, pd.DataFrame]:
    """Per-user test metrics of one baseline; one fit when both tasks chose the same
    parameters."""
    out = {}
    tasks = ("all", "new")
    if params["all"] == params["new"]:
        return ranking.evaluate(factory(**params["all"]).fit(test.train), test, tasks=tasks)
    for task in tasks:
        model = factory(**params[task]).fit(test.train)
        out.update(ranking.evaluate(model, test, tasks=(task,)))
    return out


@dataclass
class DeepResult:
    """What :func:`tune_and_test` measured for one model."""

    name: str
    params: dict
    history: pd.DataFrame
    best_epoch: int
    n_parameters: int
    blend_weights: dict[str, float]
    validation: dict[str, float]
    test: dict[int, dict[str, dict[str, pd.DataFrame]]] = field(repr=False)
    fit_seconds: list[float] = field(default_factory=list)
    blend_grid: dict[str, dict[float, float]] = field(default_factory=dict)

    def per_user(self, variant: str = "model") -> dict[str, pd.DataFrame]:
        """Per-user metrics averaged over seeds, ``{task: frame}`` (``variant`` is
        ``"model"`` or ``"blend"``)."""
        out = {}
        for task in self.test[min(self.test)][variant]:
            frames = [self.test[s][variant][task] for s in sorted(self.test)]
            mean = sum(f[list(ranking.METRICS)] for f in frames) / len(frames)
            mean.attrs = {key: float(np.mean([f.attrs[key] for f in frames]))
                          for key in frames[0].attrs}
            out[task] = mean
        return out

    def seed_table(self, metric: str = "NDCG") -> pd.DataFrame:
        """``metric`` per seed (rows) for each variant and task (columns)."""
        return pd.DataFrame({
            seed: {(variant, task): frame[metric].mean()
                   for variant, tasks in parts.items() for task, frame in tasks.items()}
            for seed, parts in self.test.items()}).T


def _blend_grid(model: Recommender, base: Recommender, task: ranking.RankingTask,
                name: str, weights: Sequence[float]) -> dict[float, float]:
    """Validation NDCG@10 of the blend for each weight."""
    return {float(w): float(ranking.evaluate(Blend(model, weight=w, base=base).fit(task.train),
                                             task, tasks=(name,))[name]["NDCG"].mean())
            for w in weights}


def tune_and_test(name: str, factory: Callable[..., Recommender], split: Split, *,
                  bases: dict[str, Callable[[], Recommender]],
                  seeds: Sequence[int] = (0, 1, 2),
                  weights: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
                  progress: bool = True) -> DeepResult:
    """Run the protocol above for ``factory(seed=...)``; ``bases`` maps task to the
    baseline factory blended with the model on that task."""
    from tqdm.auto import tqdm

    if not seeds:
        raise ValueError("seeds is empty.")
    unknown = set(bases) - {"all", "new"}
    if unknown:
        raise ValueError(f"bases has unknown task(s) {sorted(unknown)}; use 'all' and 'new'.")
    validation = ranking.RankingTask.from_time_split(split, "validation")
    test = ranking.RankingTask.from_time_split(split, "test")
    bar = tqdm(total=1 + len(seeds), desc=name, disable=not progress, leave=False)
    model = factory(seed=seeds[0])
    model.fit(validation.train, validation=split.validation)
    bar.update()
    val = ranking.evaluate(model, validation)
    scores = {task: float(frame["NDCG"].mean()) for task, frame in val.items()}
    blend_weights, grids = {}, {}
    for task, base in bases.items():
        grids[task] = _blend_grid(model, base().fit(validation.train), validation, task,
                                  weights)
        blend_weights[task] = max(grids[task], key=grids[task].get)
        scores[f"blend {task}"] = grids[task][blend_weights[task]]
    epochs = int(model.best_epoch_)
    params = {k: v for k, v in model.get_params().items() if np.isscalar(v) or v is None}
    result = DeepResult(name, params, pd.DataFrame(model.history_), epochs,
                        model.n_parameters(), blend_weights, scores, {}, blend_grid=grids)
    for seed in seeds:
        start = time.perf_counter()
        refit = factory(seed=seed)
        refit.epochs = epochs
        refit.fit(test.train)
        result.fit_seconds.append(time.perf_counter() - start)
        plain = ranking.evaluate(refit, test)
        blended = {task: ranking.evaluate(
            Blend(refit, weight=blend_weights[task], base=bases[task]()).fit(test.train),
            test, tasks=(task,))[task] for task in bases}
        result.test[seed] = {"model": plain, "blend": blended}
        bar.update()
    bar.close()
    return result


# ------------------------------------------------------------------------ rolling origin


@dataclass
class RollingWindow:
    """One origin of a rolling evaluation: its validation and test tasks.

    The validation window has the test window's length and ends where the test window
    starts; ``validation.train`` is everything before it and ``test.train`` everything
    before the test window (so it includes the validation window).
    """

    name: str
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    validation: ranking.RankingTask = field(repr=False)
    test: ranking.RankingTask = field(repr=False)


def rolling_tasks(interactions: pd.DataFrame, windows: Sequence[tuple[object, object]]
                  ) -> list[RollingWindow]:
    """Validation and test tasks for each test window ``(start, end)`` (end exclusive).

    For a test window ``[start, end)`` of length ``L`` the validation window is
    ``[start - L, start)``: tuning then sees a task of the same horizon as the test (the
    number of items a customer buys grows with the window, and with it every metric), and
    the most recent data before the test, as in :func:`last_days_split`. With contiguous
    windows of equal length it is the previous test window. The test model is refitted on
    everything before ``start``. Windows may overlap each other but each must hold
    interactions, and its validation window must leave training data before it.
    """
    frame = check_interactions(interactions)
    if isinstance(windows, str | bytes) or not len(windows):
        raise ValueError("windows must be a non-empty list of (start, end) pairs.")
    first, last = frame["timestamp"].min(), frame["timestamp"].max()
    out = []
    for number, window in enumerate(windows):
        if len(window) != 2:
            raise ValueError(f"windows[{number}]={window!r} is not a (start, end) pair.")
        start = check_timestamp(window[0], name=f"windows[{number}] start")
        end = check_timestamp(window[1], name=f"windows[{number}] end")
        name = f"{start.date()}..{end.date()}"
        if end <= start:
            raise ValueError(f"test window {name} ends before it starts.")
        if start > last:
            raise ValueError(f"test window {name} starts after the last interaction "
                             f"({last}).")
        val_start = start - (end - start)
        if val_start <= first:
            raise ValueError(f"test window {name} needs a validation window from "
                             f"{val_start.date()}, which leaves no training data (the first "
                             f"interaction is on {first.date()}).")
        times = frame["timestamp"]
        try:
            validation = ranking.RankingTask.from_split(
                frame[times < val_start], frame[(times >= val_start) & (times < start)],
                f"validation for {name}: train before {val_start.date()}, "
                f"window {val_start.date()}..{start.date()}")
            test = ranking.RankingTask.from_split(
                frame[times < start], frame[(times >= start) & (times < end)],
                f"test window {name}: train before {start.date()}")
        except ValueError as err:
            raise ValueError(f"test window {name}: {err}") from err
        out.append(RollingWindow(name, val_start, start, end, validation, test))
    return out


@dataclass
class RollingResult:
    """What :func:`rolling_baselines` measured; every part is keyed by window name first.

    ``chosen[window][model][task]`` are the tuned parameters, ``tuning[window][model]`` the
    grid-search tables, ``per_user[window][model][task]`` the per-user test metrics, and
    ``seconds[window][model]`` the CPU seconds spent on tuning plus testing.
    """

    windows: list[str]
    chosen: dict[str, dict[str, dict[str, dict]]]
    tuning: dict[str, dict[str, pd.DataFrame]]
    per_user: dict[str, dict[str, dict[str, pd.DataFrame]]]
    seconds: dict[str, dict[str, float]]

    def table(self, metric: str = "NDCG") -> pd.DataFrame:
        """Shorthand for :func:`rolling_table` on :attr:`per_user`."""
        return rolling_table(self.per_user, metric)

    def params_table(self) -> pd.DataFrame:
        """Tuned parameters, one row per (window, model) and one column per task."""
        rows = {(window, model): {task: ", ".join(f"{k}={v}" for k, v in params.items())
                                  or "-" for task, params in tasks.items()}
                for window, models in self.chosen.items() for model, tasks in models.items()}
        table = pd.DataFrame(rows).T
        table.index.names = ["window", "model"]
        return table


def rolling_baselines(interactions: pd.DataFrame,
                      windows: Sequence[tuple[object, object]] = ROLLING_WINDOWS,
                      grids=None, *, progress: bool = True) -> RollingResult:
    """Tune every baseline on each window's validation task, refit it on everything before
    the test window with the tuned parameters (per task) and score it once on the test
    window. ``grids`` defaults to :data:`ROLLING_GRIDS`."""
    from tqdm.auto import tqdm

    grids = ROLLING_GRIDS if grids is None else grids
    if not grids:
        raise ValueError("grids is empty.")
    origins = rolling_tasks(interactions, windows)
    chosen, tuning, per_user, seconds = {}, {}, {}, {}
    bar = tqdm(total=len(origins) * len(grids), desc="rolling baselines", disable=not progress,
               leave=False)
    for origin in origins:
        w = origin.name
        chosen[w], tuning[w], per_user[w], seconds[w] = {}, {}, {}, {}
        for name, (factory, grid) in grids.items():
            start = time.process_time()
            picked, table = tune_baselines(origin.validation, {name: (factory, grid)})
            chosen[w][name] = picked[name]
            if name in table:
                tuning[w][name] = table[name]
            per_user[w][name] = _test_one(factory, picked[name], origin.test)
            seconds[w][name] = time.process_time() - start
            bar.update()
    bar.close()
    return RollingResult([o.name for o in origins], chosen, tuning, per_user, seconds)


def _check_per_user(per_user: dict, metric: str) -> None:
    check_in(metric, ranking.METRICS, name="metric")
    if not isinstance(per_user, dict) or not per_user:
        raise ValueError("per_user must be a non-empty dict {window: {model: {task: frame}}}.")


def rolling_table(per_user: dict[str, dict[str, dict[str, pd.DataFrame]]],
                  metric: str = "NDCG") -> pd.DataFrame:
    """Mean ``metric`` per model (rows) for each task and window, plus the mean over windows.

    Columns are ``(task, window)`` pairs, with ``(task, "mean")`` the unweighted mean of
    the windows' means (each window counts once, whatever its number of customers). A
    model missing from a window gets NaN there and in its mean.
    """
    _check_per_user(per_user, metric)
    cells = {}
    for window, models in per_user.items():
        for model, tasks in models.items():
            for task, frame in tasks.items():
                cells.setdefault(model, {})[(task, window)] = float(frame[metric].mean())
    table = pd.DataFrame(cells).T
    windows = list(per_user)
    tasks = list(dict.fromkeys(task for models in per_user.values()
                               for model_tasks in models.values() for task in model_tasks))
    columns = []
    for task in tasks:
        part = table.reindex(columns=[(task, w) for w in windows])
        for w in windows:
            columns.append(((task, w), part[(task, w)]))
        columns.append(((task, "mean"), part.mean(axis=1, skipna=False)))
    out = pd.DataFrame(dict(columns), index=table.index)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["task", "window"])
    return out


def rolling_difference(per_user: dict[str, dict[str, dict[str, pd.DataFrame]]],
                       model_a: str, model_b: str, task: str = "all", metric: str = "NDCG",
                       *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                       resample: str = "window") -> tuple[float, float, float]:
    """Mean over windows of ``mean(a) - mean(b)``, with a paired bootstrap interval.

    In each window both models were scored on the same customers, so the per-customer
    differences ``d = a - b`` are paired. The estimate is the unweighted mean over windows
    of each window's mean ``d``. Each bootstrap replicate recomputes it on resampled
    customers:

    * ``resample="window"``: in every window independently, draw as many customers as the
      window has, with replacement, and average their ``d``; a customer who appears in
      several windows is drawn independently in each (windows are strata). This ignores
      that a customer's advantage may persist from window to window, so the interval can be
      a little narrow when it does.
    * ``resample="customer"``: draw customer ids with replacement from all windows' customers
      together (a cluster bootstrap); each drawn customer brings all their windows, each
      window's mean being taken over the drawn customers it holds (with multiplicity).

    Returns ``(estimate, low, high)``, the interval being the percentile ``level`` interval.
    """
    _check_per_user(per_user, metric)
    check_in(resample, ("window", "customer"), name="resample")
    check_positive_int(n_boot, name="n_boot", minimum=10)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    diffs = []
    for window, models in per_user.items():
        for model in (model_a, model_b):
            if model not in models or task not in models[model]:
                raise ValueError(f"window {window} has no {task!r} results for model "
                                 f"{model!r}; it has models {sorted(models)}.")
        a = models[model_a][task][metric]
        b = models[model_b][task][metric]
        if not a.index.equals(b.index):
            raise ValueError(f"window {window}: {model_a!r} and {model_b!r} were scored on "
                             "different customers; the difference is not paired.")
        diffs.append(a - b)
    estimate = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    if resample == "window":
        boot = np.zeros(n_boot)
        for d in diffs:
            values = d.to_numpy()
            boot += values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
        boot /= len(diffs)
    else:
        customers = pd.Index(sorted(set().union(*(d.index for d in diffs))))
        draws = rng.integers(0, len(customers), (n_boot, len(customers)))
        counts = np.zeros((n_boot, len(customers)))
        np.add.at(counts, (np.repeat(np.arange(n_boot), len(customers)), draws.ravel()), 1.0)
        means = []
        for d in diffs:
            weight = counts[:, customers.get_indexer(d.index)]
            total = weight.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(np.where(total > 0, weight @ d.to_numpy() / total, np.nan))
        boot = np.mean(means, axis=0)
        boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def scaling_point(split: Split, task: ranking.RankingTask, model_name: str, dim: int,
                  months: int, *, mf_epochs: int = 10, sasrec_epochs: int = 8,
                  seed: int = 0) -> dict:
    """One point of chapter 5's scaling study: a model's size and history against NDCG@10.

    Matrix factorisation (``"MF"``) or SASRec (``"SASRec"``) with ``dim`` factors is
    trained on the last ``months`` months of ``split.train``, with early stopping on
    ``split.validation``, and scored on ``task``. Customers a short history does not
    cover are still scored (the model recommends them popular products), so that every
    point is scored on the same customers.

    Parameters
    ----------
    split
        The train / validation split (:func:`last_days_split`).
    task
        The ranking task every point is scored on (usually the validation task).
    model_name
        ``"MF"`` (:class:`companion.recsys.deep.MatrixFactorization`) or ``"SASRec"``
        (:class:`companion.recsys.deep.SASRec`, one block, 30 positions).
    dim
        Number of factors (embedding size).
    months
        Months of training history kept, counted back from the last training purchase.
    mf_epochs, sasrec_epochs
        The most epochs each model trains for (early stopping may stop it sooner).
    seed
        Seed of the model.

    Returns
    -------
    dict
        ``model``, ``dim``, ``months``, ``parameters`` (trainable), ``validation NDCG@10``
        (the mean over the task's parts of the per-customer mean) and ``epochs`` (the
        best epoch).
    """
    from companion.recsys import deep

    check_in(model_name, ("MF", "SASRec"), name="model_name")
    check_positive_int(dim, name="dim")
    check_positive_int(months, name="months")
    if not isinstance(task, ranking.RankingTask):
        raise TypeError(f"task must be a RankingTask, got {type(task).__name__}.")
    start = split.train["timestamp"].max() - pd.DateOffset(months=months)
    train = split.train[split.train["timestamp"] > start]
    if model_name == "MF":
        model = deep.MatrixFactorization(dim=dim, epochs=mf_epochs, patience=2, seed=seed)
    else:
        model = deep.SASRec(dim=dim, blocks=1, max_len=30, dropout=0.1, negatives=100,
                            batch_size=256, learning_rate=5e-3, windows_per_user=3,
                            epochs=sasrec_epochs, patience=2, seed=seed)
    model.fit(train, validation=split.validation)
    # every point is scored on the same customers: those with any history in the
    # training part (customers a short history does not cover get popularity)
    scores = ranking.evaluate(model, task)
    return {"model": model_name, "dim": dim, "months": months,
            "parameters": model.n_parameters(),
            "validation NDCG@10": float(np.mean([f["NDCG"].mean() for f in scores.values()])),
            "epochs": model.best_epoch_}
