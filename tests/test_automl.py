"""The search wrapper: budget, determinism and errors."""

from __future__ import annotations

import time

import pytest

from companion.ops import automl

SPACE = {"x": ("float", -2.0, 2.0), "n": ("int", 1, 8, "log"),
         "kind": ("categorical", ["a", "b"])}


def objective(params):
    return -(params["x"] - 0.5) ** 2 - 0.1 * params["n"] + (params["kind"] == "b")


def test_search_is_deterministic_for_a_seed():
    a = automl.search(objective, SPACE, n_trials=12, seed=3)
    b = automl.search(objective, SPACE, n_trials=12, seed=3)
    c = automl.search(objective, SPACE, n_trials=12, seed=4)
    cols = ["x", "n", "kind", "value"]
    assert a[cols].equals(b[cols])
    assert not a[cols].equals(c[cols])
    assert a.attrs["best"] == b.attrs["best"]


def test_search_respects_trial_budget_and_finds_good_values():
    table = automl.search(objective, SPACE, n_trials=25, seed=0)
    assert len(table) == 25
    assert list(table["trial"]) == list(range(25))
    assert table["best_so_far"].is_monotonic_increasing
    assert table["value"].max() == table["best_so_far"].iloc[-1] > 0.5
    rand = automl.search(objective, SPACE, n_trials=5, seed=0, sampler="random")
    assert len(rand) == 5


def test_search_respects_time_budget():
    def slow(params):
        clock = time.process_time()
        while time.process_time() - clock < 0.05:
            pass
        return objective(params)

    table = automl.search(slow, SPACE, timeout_s=0.2, seed=0)
    assert 2 <= len(table) <= 6
    assert len(automl.search(slow, SPACE, timeout_s=10, n_trials=2, seed=0)) == 2


def test_run_configs_matches_the_search_table():
    configs = [{"x": 0.0, "n": 1, "kind": "a"}, {"x": 0.5, "n": 1, "kind": "b"}]
    table = automl.run_configs(objective, configs)
    assert table.attrs["best"] == configs[1]
    assert list(table.columns) == ["trial", "x", "n", "kind", "value", "seconds",
                                   "best_so_far"]
    low = automl.run_configs(objective, configs, direction="minimize")
    assert low.attrs["best"] == configs[0]


@pytest.mark.parametrize("space, match", [
    ({}, "non-empty"),
    ({"x": ("float", 1.0, 0.0)}, "not below"),
    ({"x": ("float", 0.0, 1.0, "log")}, "low must be > 0"),
    ({"x": ("uniform", 0.0, 1.0)}, "kind of space"),
    ({"x": ("categorical", [])}, "categorical"),
    ({"x": 3}, "must be a tuple"),
])
def test_bad_spaces_are_named(space, match):
    with pytest.raises(ValueError, match=match):
        automl.search(objective, space, n_trials=2)


def test_bad_budgets_and_options():
    with pytest.raises(ValueError, match="budget"):
        automl.search(objective, SPACE)
    with pytest.raises(ValueError, match="n_trials"):
        automl.search(objective, SPACE, n_trials=0)
    with pytest.raises(ValueError, match="timeout_s"):
        automl.search(objective, SPACE, timeout_s=-1)
    with pytest.raises(ValueError, match="sampler"):
        automl.search(objective, SPACE, n_trials=2, sampler="grid")
    with pytest.raises(ValueError, match="NaN"):
        automl.search(lambda p: float("nan"), SPACE, n_trials=2)
    with pytest.raises(ValueError, match="configs"):
        automl.run_configs(objective, [])


def test_search_against_grid_tunes_on_validation_and_tests_the_winners(interactions):
    from companion.recsys import experiments, ranking

    split = experiments.last_days_split(interactions, window_days=30)
    validation = ranking.RankingTask.from_time_split(split, "validation")
    test = ranking.RankingTask.from_time_split(split, "test")
    fixed = dict(dim=4, learning_rate=0.05, batch_size=128, seed=0)
    grid = [dict(fixed, epochs=1), dict(fixed, epochs=3)]
    space = {"epochs": ("int", 1, 3)}
    out = automl.search_against_grid(validation, test, grid, space, fixed,
                                     n_startup_trials=1, seed=0)
    assert len(out["hand"]) == len(out["tpe"]) == len(grid)  # equal budgets by default
    assert out["best"]["hand-made grid"] == grid[int(out["hand"]["value"].idxmax())]
    assert set(out["best"]["Optuna TPE"]) == {*fixed, "epochs"}
    assert 1 <= out["best"]["Optuna TPE"]["epochs"] <= 3
    for series in out["test"].values():
        assert series.index.equals(test.truth["all"].index)
    with pytest.raises(ValueError, match="either tuned or fixed"):
        automl.search_against_grid(validation, test, grid, space, dict(fixed, epochs=2))
    with pytest.raises(TypeError, match="RankingTask"):
        automl.search_against_grid(split.validation, test, grid, space, fixed)
