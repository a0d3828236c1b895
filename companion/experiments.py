"""Experiment drivers for the Keras recommenders: tune on validation, test over seeds.

:func:`tune_and_test` is the protocol of chapter 5 for a trainable model:

1. fit on the training part with early stopping on the validation window (seed 0), which
   fixes the number of epochs;
2. on the same validation window, pick the weight of each task's blend (the model's
   ranks plus a baseline's scores, see :class:`companion.recommenders.Blend`);
3. for every seed, refit on training plus validation data for exactly that many epochs
   and score the model and its blends once on the test window.

Nothing of the test window is used before step 3. Results are plain data (per-user metric
frames), so :func:`companion.cache.memoise` can store them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from companion import ranking
from companion import recommenders as rec
from companion._checks import check_positive_int
from companion.preprocessing import Split, check_interactions, split_by_time
from companion.recommenders import Blend, Recommender

#: baselines of chapter 5 and the grids they are tuned over on the validation window
BASELINE_GRIDS: dict[str, tuple[Callable[..., Recommender], dict[str, list]]] = {
    "popularity": (rec.Popularity, {}),
    "recent popularity": (rec.Popularity, {"window_days": [7, 14, 30, 90]}),
    "repeat-buy": (rec.RepeatBuy, {"half_life_days": [14, 60, 180, 720]}),
    "item-kNN": (rec.ItemKNN, {"neighbours": [50, 200], "shrinkage": [0.0, 20.0]}),
    "EASE": (rec.EASE, {"l2": [100.0, 400.0, 1600.0]}),
}


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
    out = {}
    for name, params in chosen.items():
        factory = grids[name][0]
        out[name] = {}
        for task in ("all", "new"):
            model = factory(**params[task]).fit(test.train)
            out[name].update(ranking.evaluate(model, test, tasks=(task,)))
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
