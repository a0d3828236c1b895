"""Hyper-parameter search with a budget: Optuna's samplers behind one small function.

A search space is a dict ``name -> spec`` with specs

* ``("int", low, high)`` and ``("int", low, high, "log")``;
* ``("float", low, high)`` and ``("float", low, high, "log")``;
* ``("categorical", [choice, ...])``.

:func:`search` maximises (or minimises) ``objective(params) -> float`` under a budget of
trials and/or seconds and returns a table of trials. :func:`run_configs` scores a fixed
list of configurations (a hand-made grid) into the same table, so that both can be
compared at equal compute; :func:`search_against_grid` is chapter 8's comparison of the
two for the factor model. Optuna (Akiba et al., 2019) is imported only when needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import pandas as pd

from companion._checks import check_in, check_positive_int
from companion._optional import require

#: The samplers :func:`search` offers.
SAMPLERS = ("tpe", "random")


def check_space(space: dict) -> dict:
    """Validate a search space; returns it. Errors name the parameter."""
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict name -> spec.")
    for name, spec in space.items():
        if not isinstance(spec, tuple | list) or not spec:
            raise ValueError(f"space[{name!r}] must be a tuple such as ('float', 0.1, 1.0).")
        kind = spec[0]
        check_in(kind, ("int", "float", "categorical"), name=f"kind of space[{name!r}]")
        if kind == "categorical":
            if len(spec) != 2 or not isinstance(spec[1], list | tuple) or not spec[1]:
                raise ValueError(f"space[{name!r}] must be ('categorical', [choices]).")
            continue
        if len(spec) not in (3, 4) or (len(spec) == 4 and spec[3] != "log"):
            raise ValueError(f"space[{name!r}] must be ({kind!r}, low, high[, 'log']).")
        low, high = spec[1], spec[2]
        if not low < high:
            raise ValueError(f"space[{name!r}] has low={low} not below high={high}.")
        if len(spec) == 4 and low <= 0:
            raise ValueError(f"space[{name!r}] is on a log scale, so low must be > 0.")
    return space


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, spec in space.items():
        kind, log = spec[0], len(spec) == 4
        if kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=log)
        elif kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=log)
        else:
            params[name] = trial.suggest_categorical(name, list(spec[1]))
    return params


def _row(number: int, params: dict, value: float, seconds: float) -> dict:
    return {"trial": number, **params, "value": value, "seconds": seconds}


def _table(rows: list[dict], direction: str) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    best = table["value"].cummax() if direction == "maximize" else table["value"].cummin()
    return table.assign(best_so_far=best)


def search(objective: Callable[[dict], float], space: dict, *, n_trials: int | None = None,
           timeout_s: float | None = None, seed: int = 0, sampler: str = "tpe",
           direction: str = "maximize", n_startup_trials: int | None = None
           ) -> pd.DataFrame:
    """Search ``space`` for the best ``objective`` within the budget.

    At least one budget is required: ``n_trials`` (exactly that many are run) or
    ``timeout_s`` (CPU seconds of this process; no new trial starts after it). Trials run
    one after another, so that a seed gives the same trials for a deterministic objective.
    ``sampler`` is ``"tpe"`` (Optuna's tree-structured Parzen estimator, with
    ``n_startup_trials`` random trials first, default ``min(5, n_trials // 2)``) or
    ``"random"``. Returns one row per trial: ``trial``, the parameters, ``value``,
    ``seconds`` (CPU) and ``best_so_far``; ``table.attrs["best"]`` holds the best
    parameters.
    """
    check_space(space)
    check_in(sampler, SAMPLERS, name="sampler")
    check_in(direction, ("maximize", "minimize"), name="direction")
    if n_trials is None and timeout_s is None:
        raise ValueError("give a budget: n_trials and/or timeout_s.")
    if n_trials is not None:
        check_positive_int(n_trials, name="n_trials")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}.")
    optuna = require("optuna", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "tpe":
        startup = n_startup_trials if n_startup_trials is not None else (
            min(5, max(1, (n_trials or 10) // 2)))
        chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction=direction, sampler=chosen)
    rows: list[dict] = []
    began = time.process_time()
    while n_trials is None or len(rows) < n_trials:
        if timeout_s is not None and time.process_time() - began >= timeout_s:
            break
        trial = study.ask()
        params = _suggest(trial, space)
        clock = time.process_time()
        value = float(objective(params))
        if math.isnan(value):
            raise ValueError(f"objective returned NaN for {params}.")
        study.tell(trial, value)
        rows.append(_row(len(rows), params, value, time.process_time() - clock))
    table = _table(rows, direction)
    table.attrs["best"] = dict(study.best_params)
    return table


def run_configs(objective: Callable[[dict], float], configs: Sequence[dict], *,
                direction: str = "maximize") -> pd.DataFrame:
    """Score fixed configurations (for example a hand-made grid) in the table format of
    :func:`search`; ``table.attrs["best"]`` holds the best one."""
    check_in(direction, ("maximize", "minimize"), name="direction")
    if not configs or not all(isinstance(c, dict) for c in configs):
        raise ValueError("configs must be a non-empty list of dicts.")
    rows = []
    for number, params in enumerate(configs):
        clock = time.process_time()
        value = float(objective(dict(params)))
        rows.append(_row(number, dict(params), value, time.process_time() - clock))
    table = _table(rows, direction)
    pick = table["value"].idxmax() if direction == "maximize" else table["value"].idxmin()
    table.attrs["best"] = dict(configs[int(pick)])
    return table


def search_against_grid(validation, test, grid: Sequence[dict], space: dict, fixed: dict, *,
                        n_trials: int | None = None, n_startup_trials: int = 3,
                        seed: int = 0) -> dict:
    """Chapter 8's AutoML study: a hand-made grid against Optuna's TPE at equal budget.

    Both tune a :class:`companion.recsys.federated.FactorMF` on the validation task: the
    grid scores each of ``grid`` (:func:`run_configs`); the search runs ``n_trials`` trials
    over ``space`` (:func:`search`, ``n_startup_trials`` of them at random), with the
    settings outside the space taken from ``fixed``. The objective is the mean NDCG@10 of
    the *all* task, fitted on ``validation.train``. Each winner is then refitted on
    ``test.train`` and scored once on ``test``.

    Parameters
    ----------
    validation, test
        :class:`companion.recsys.ranking.RankingTask` of the validation and test windows.
    grid
        Complete :class:`FactorMF` settings, one per configuration.
    space
        Search space of the tuned settings (see :func:`check_space`).
    fixed
        The :class:`FactorMF` settings the search does not tune.
    n_trials
        Trials of the search; default ``len(grid)``, the grid's budget.
    n_startup_trials, seed
        Random trials before TPE, and the sampler's seed.

    Returns
    -------
    dict
        ``hand`` and ``tpe`` (the tables of trials), ``best`` (the winners' full
        settings) and ``test`` (winner -> per-customer NDCG@10 on the test task).
    """
    from companion.recsys import ranking
    from companion.recsys.federated import FactorMF

    for name, task in (("validation", validation), ("test", test)):
        if not isinstance(task, ranking.RankingTask):
            raise TypeError(f"{name} must be a RankingTask, got {type(task).__name__}.")
    check_space(space)
    if not isinstance(fixed, dict):
        raise TypeError(f"fixed must be a dict of settings, got {type(fixed).__name__}.")
    overlap = sorted(set(fixed) & set(space))
    if overlap:
        raise ValueError(f"fixed and space both set {overlap}; a setting is either tuned "
                         "or fixed.")
    n_trials = len(grid) if n_trials is None else n_trials

    def ndcg(model, task):
        return ranking.evaluate(model, task, tasks=("all",))["all"]["NDCG"]

    def objective(params):
        return float(ndcg(FactorMF(**{**fixed, **params}).fit(validation.train),
                          validation).mean())

    hand = run_configs(objective, grid)
    tpe = search(objective, space, n_trials=n_trials, seed=seed,
                 n_startup_trials=n_startup_trials)
    best = {"hand-made grid": hand.attrs["best"],
            "Optuna TPE": {**fixed, **tpe.attrs["best"]}}
    tested = {name: ndcg(FactorMF(**params).fit(test.train), test)
              for name, params in best.items()}
    return {"hand": hand, "tpe": tpe, "best": best, "test": tested}
