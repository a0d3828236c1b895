"""Chapter 5.6's study: the two-stage recommender on each window of a rolling origin.

:func:`~companion.recsys.twostage.rolling_two_stage` fits, tunes and scores it on every test
window, with the Keras ranker and the feature-group ablation beside it, and returns a
:class:`~companion.recsys.twostage.TwoStageResult`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion.recsys import baselines as rec
from companion.recsys.twostage.candidates import TASKS, candidate_recall, restrict_candidates
from companion.recsys.twostage.features import FEATURE_GROUPS, feature_groups
from companion.recsys.twostage.pipeline import TwoStageRecommender
from companion.recsys.twostage.rankers import LightGBMRanker

__all__ = ["N_GRID", "TwoStageResult", "rolling_two_stage"]

#: candidates per generator tried by :func:`rolling_two_stage`, per task
N_GRID = {"all": (10, 20), "new": (20, 50)}


@dataclass
class TwoStageResult:
    """What :func:`rolling_two_stage` measured; parts are keyed by window name first.

    ``per_user[window][model][task]`` are per-customer test metrics (as
    :func:`companion.recsys.ranking.evaluate` returns them) of the LightGBM and Keras rankers,
    ``ablation[window][group][task]`` those of the LightGBM ranker retrained without a
    feature group, ``recall`` the candidate recall on the test windows, ``tuning`` the
    validation NDCG@10 of each ``n`` (held-out customers of the training cutoff),
    ``chosen_n[window][task]`` the ``n`` kept, ``importance[window][task]`` the
    LightGBM gain of each feature, ``training`` the size of the training data and the
    rankers' trees and epochs, ``seconds`` CPU and wall times.
    """

    windows: list[str]
    per_user: dict[str, dict[str, dict[str, pd.DataFrame]]]
    ablation: dict[str, dict[str, dict[str, pd.DataFrame]]]
    recall: pd.DataFrame
    tuning: pd.DataFrame
    chosen_n: dict[str, dict[str, int]]
    importance: dict[str, dict[str, pd.Series]]
    training: pd.DataFrame
    seconds: pd.DataFrame

    def importance_table(self) -> pd.DataFrame:
        """Mean normalised gain over windows, one column per task, with each feature's
        group; sorted by the mean over tasks."""
        tasks = list(next(iter(self.importance.values())))
        table = pd.DataFrame({task: pd.concat([self.importance[w][task] for w in self.windows],
                                              axis=1).fillna(0.0).mean(axis=1)
                              for task in tasks}).fillna(0.0)
        groups = feature_groups(table.index)
        table.insert(0, "group", [next(g for g, cols in groups.items() if f in cols)
                                  for f in table.index])
        return table.loc[table[tasks].mean(axis=1).sort_values(ascending=False,
                                                               kind="stable").index]


def rolling_two_stage(interactions: pd.DataFrame, windows: Sequence[tuple[object, object]]
                      | None = None, *, generators: Mapping[str, rec.Recommender] | None = None,
                      n_grid: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
                      keras: bool = True,
                      ablation: bool = True, seed: int = 0, progress: bool = True
                      ) -> TwoStageResult:
    """The two-stage recommender on each test window of a rolling-origin evaluation.

    For each window of :func:`companion.recsys.experiments.rolling_tasks` (default
    :data:`companion.recsys.experiments.ROLLING_WINDOWS`), with test window ``[c, c + L)``:

    1. fit a :class:`TwoStageRecommender` on everything before ``c`` with
       ``horizon_days = L`` (so its ranker learns from the labels of ``[c - L, c)``, the
       window's validation period, with features and generators from before ``c - L``)
       and, for each task, ``n`` the largest of ``n_grid`` (one list, or a mapping task
       -> list; default :data:`N_GRID`);
    2. for each task pick ``n`` from its grid by the validation NDCG@10 of the held-out
       customers of that training cutoff (:meth:`TwoStageRecommender.with_ranker`);
    3. score it once on the test window; likewise a :class:`KerasListwiseRanker` on the
       same candidates and features (``keras``) and, for the ablation, the LightGBM
       ranker retrained without each feature group, with the number of trees the full
       ranker chose (``ablation``). A group whose features are constant in a task's
       training examples (the season group with one label cutoff, the pair group on
       "new") cannot be split on, so that task's ranker without it is the full ranker
       and is not retrained.

    Nothing of a test window is read before its scoring. Candidate recall is measured
    on the test windows (it is the ceiling of stage two, not a tuning input).
    """
    import time

    from tqdm.auto import tqdm

    from companion.recsys import experiments, ranking

    windows = experiments.ROLLING_WINDOWS if windows is None else windows
    grids = _check_grid(N_GRID if n_grid is None else n_grid)
    origins = experiments.rolling_tasks(interactions, windows)
    groups = list(FEATURE_GROUPS) + ["generators"]
    per_user, abl, importance, chosen = {}, {}, {}, {}
    recall_rows, tuning_rows, training_rows, seconds_rows = [], [], [], []
    steps = 2 + int(keras) + (len(groups) if ablation else 0)
    bar = tqdm(total=len(origins) * steps, desc="two-stage", disable=not progress,
               leave=False)
    depth = max(len(grid) for grid in grids.values())
    for origin in origins:
        w, test = origin.name, origin.test
        horizon_days = int(np.ceil((origin.test_end - origin.test_start)
                                 / pd.Timedelta(days=1)))
        times: dict[str, float] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        model = TwoStageRecommender(generators, n={t: g[-1] for t, g in grids.items()},
                                    horizon_days=horizon_days, seed=seed).fit(
            test.train, cutoff=origin.test_start)
        # variant k uses the k-th smallest n of each task's grid (its largest when shorter)
        variants = {}  # (task, n) -> the model whose ranker for that task used n
        for k in range(depth):
            sizes = {t: g[min(k, len(g) - 1)] for t, g in grids.items()}
            variant = model if k == depth - 1 else model.with_ranker(n=sizes)
            for task, size in sizes.items():
                variants.setdefault((task, size), variant)
        times["fit s"] = time.process_time() - cpu
        times["fit wall s"] = time.perf_counter() - wall
        bar.update()
        chosen[w] = {}
        for task, grid in grids.items():
            for size in grid:
                tuning_rows.append({"window": w, "task": task, "n": size,
                                    "validation NDCG@10":
                                        variants[task, size].validation_ndcg_[task]})
            chosen[w][task] = max(grid, key=lambda size, t=task:
                                  variants[t, size].validation_ndcg_[t])
        final = copy.copy(model)  # each task's ranker from the variant its grid chose
        final.n = dict(chosen[w])
        final._check_params()
        final.rankers_ = {t: variants[t, chosen[w][t]].rankers_[t] for t in TASKS}
        final.validation_ndcg_ = {t: variants[t, chosen[w][t]].validation_ndcg_[t]
                                  for t in TASKS}
        # recommending for every test customer from an empty feature cache (the
        # evaluation below then finds the same customers' features in the cache)
        final._cache.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        final.recommend(test.users("all"), k=10, exclude_seen=False)
        times["recommend s"] = time.process_time() - cpu
        times["recommend wall s"] = time.perf_counter() - wall
        times["customers"] = len(test.users("all"))
        per_user[w] = {"two-stage LightGBM": ranking.evaluate(final, test)}
        importance[w] = {task: final.feature_importance(task) for task in TASKS}
        for task in TASKS:
            frame = model.features(test.users(task), task)
            truth = test.truth[task]
            for size in grids[task]:
                part = frame if size == grids[task][-1] else restrict_candidates(frame, size)
                row = {"window": w, "task": task, "n": size,
                       "candidates per customer": len(part) / len(truth),
                       "candidate recall": _pooled_recall(part, truth)}
                for name in final.generator_.models_:
                    alone = part[part[f"{name} rank"] <= size]
                    row[f"recall {name}"] = _pooled_recall(alone, truth)
                recall_rows.append(row)
            examples = final.examples_[task][0]
            training_rows.append({
                "window": w, "task": task, "label cutoff": examples.cutoff,
                "customers": len(examples.truth), "n": chosen[w][task],
                "rows": int(sum(examples.frame[f"{g} rank"] <= chosen[w][task]
                                for g in final.generator_.models_).astype(bool).sum()),
                "trees": final.rankers_[task].best_iteration_})
        bar.update()
        if keras:
            cpu = time.process_time()
            neural = final.with_ranker("keras")
            per_user[w]["two-stage Keras"] = ranking.evaluate(neural, test)
            times["Keras s"] = time.process_time() - cpu
            for row in training_rows[-len(TASKS):]:
                row["Keras epochs"] = neural.rankers_[row["task"]].best_epoch_
            bar.update()
        if ablation:
            cpu = time.process_time()
            abl[w] = {}
            same_size = {task: LightGBMRanker(n_estimators=final.rankers_[task].best_iteration_,
                                              early_stopping_rounds=None, seed=seed)
                         for task in TASKS}
            constant = {t: _constant_groups(final, t) for t in TASKS}
            for group in groups:
                # a group constant in a task's training examples gives nothing to split
                # on: without it, that task's ranker is the full one
                varying = [t for t in TASKS if group not in constant[t]]
                abl[w][group] = dict(per_user[w]["two-stage LightGBM"])
                if varying:
                    reduced = final.with_ranker(same_size, drop_groups=[group], tasks=varying)
                    abl[w][group].update(ranking.evaluate(reduced, test, tasks=tuple(varying)))
                bar.update()
            times["ablation s"] = time.process_time() - cpu
        seconds_rows.append({"window": w, **times})
    bar.close()
    return TwoStageResult(
        [o.name for o in origins], per_user, abl,
        pd.DataFrame(recall_rows).set_index(["window", "task", "n"]),
        pd.DataFrame(tuning_rows).set_index(["window", "task", "n"]), chosen, importance,
        pd.DataFrame(training_rows).set_index(["window", "task"]),
        pd.DataFrame(seconds_rows).set_index("window"))


def _constant_groups(model: TwoStageRecommender, task: str) -> set[str]:
    """The feature groups whose every feature takes one value (NaN counts as a value) in
    the training examples of ``task``."""
    frames = [ex.frame for ex in model.examples_[task]]
    names = model.examples_[task][0].feature_names
    varies = {c for c in names
              if pd.concat([f[c] for f in frames]).nunique(dropna=False) > 1}
    return {group for group, columns in feature_groups(names).items()
            if not set(columns) & varies}


def _check_grid(n_grid) -> dict[str, list[int]]:
    """``n_grid`` as a mapping task -> sorted distinct positive ints."""
    raw = n_grid if isinstance(n_grid, Mapping) else dict.fromkeys(TASKS, n_grid)
    if set(raw) != set(TASKS):
        raise ValueError(f"n_grid must give a list for each task {list(TASKS)}, got "
                         f"{sorted(raw)}.")
    out = {}
    for task in TASKS:
        if isinstance(raw[task], str) or not len(raw[task]):
            raise ValueError(f"n_grid for {task!r} must be a non-empty list of integers.")
        out[task] = sorted({check_positive_int(v, name="n_grid entry") for v in raw[task]})
    return out


def _pooled_recall(candidates: pd.DataFrame, truth: pd.Series) -> float:
    """Relevant items among the candidates over all relevant items (all customers)."""
    per_customer = candidate_recall(candidates, truth)
    sizes = truth.map(len)
    return float((per_customer * sizes).sum() / sizes.sum())
