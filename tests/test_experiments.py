"""Tests of companion.recsys.experiments: the tune-on-validation, test-over-seeds protocol."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep, experiments, ranking  # noqa: E402


@pytest.fixture(scope="module")
def split():
    frame = data.synthetic_shop(n_customers=200, n_products=120, months=12, seed=5)
    interactions = preprocessing.to_interactions(
        preprocessing.clean_transactions(frame).transactions)
    return experiments.last_days_split(interactions, window_days=30)


def _mf(seed):
    return deep.MatrixFactorization(dim=8, epochs=5, batch_size=256, learning_rate=0.02,
                                    patience=2, seed=seed)


BASES = {"all": lambda: rec.RepeatBuy(60), "new": lambda: rec.Popularity(30)}


@pytest.fixture(scope="module")
def result(split):
    return experiments.tune_and_test("MF", _mf, split, bases=BASES, seeds=(0, 1),
                                     weights=(0.5, 2.0), progress=False)


def test_last_days_split(split):
    days = (split.test["timestamp"].max() - split.test["timestamp"].min()).days
    assert days < 30
    assert split.validation["timestamp"].max() < split.test["timestamp"].min()
    preprocessing.check_no_future_leakage(split)


def test_tune_and_test_structure(result):
    assert set(result.test) == {0, 1}
    assert 1 <= result.best_epoch <= len(result.history) <= 5
    assert set(result.blend_weights) == {"all", "new"}
    assert set(result.blend_weights.values()) <= {0.5, 2.0}
    for task, grid in result.blend_grid.items():
        assert set(grid) == {0.5, 2.0}
        assert grid[result.blend_weights[task]] == max(grid.values())
    assert len(result.fit_seconds) == 2 and result.n_parameters > 0
    per_user = result.per_user("model")
    assert set(per_user) == {"all", "new"}
    single = result.test[0]["model"]["all"]["NDCG"]
    assert per_user["all"].index.equals(single.index)
    table = result.seed_table()
    assert table.shape == (2, 4)
    # the blend on "all" leans on repeat-buy, which dominates that task
    assert table[("blend", "all")].mean() > table[("model", "all")].mean()


def test_test_window_is_not_used_for_tuning(split, result):
    """Changing the test window changes nothing that was tuned."""
    shuffled = split.test.assign(item_id=split.test["item_id"].sample(
        frac=1.0, random_state=0).to_numpy())
    other = preprocessing.Split(split.train, split.validation, shuffled, "shuffled test")
    again = experiments.tune_and_test("MF", _mf, other, bases=BASES, seeds=(0,),
                                      weights=(0.5, 2.0), progress=False)
    assert again.best_epoch == result.best_epoch
    assert again.blend_weights == result.blend_weights
    assert again.validation == pytest.approx(result.validation)


def test_baseline_helpers(split):
    validation = ranking.RankingTask.from_time_split(split, "validation")
    test = ranking.RankingTask.from_time_split(split, "test")
    grids = {"popularity": (rec.Popularity, {}),
             "repeat-buy": (rec.RepeatBuy, {"half_life_days": [14, 180]})}
    chosen, tuning = experiments.tune_baselines(validation, grids)
    assert chosen["popularity"] == {"all": {}, "new": {}}
    assert chosen["repeat-buy"]["all"]["half_life_days"] in (14, 180)
    assert list(tuning) == ["repeat-buy"]
    frames = experiments.test_baselines(test, chosen, grids)
    assert set(frames["repeat-buy"]) == {"all", "new"}
    assert frames["repeat-buy"]["all"]["NDCG"].mean() > frames["popularity"]["all"]["NDCG"].mean()


def test_bad_input(split):
    with pytest.raises(ValueError, match="seeds is empty"):
        experiments.tune_and_test("MF", _mf, split, bases=BASES, seeds=())
    with pytest.raises(ValueError, match="unknown task"):
        experiments.tune_and_test("MF", _mf, split, bases={"old": BASES["all"]})
    with pytest.raises(ValueError, match="window_days"):
        experiments.last_days_split(split.train, window_days=0)
    with pytest.raises(ValueError, match="'user_id'"):
        experiments.last_days_split(pd.DataFrame({"x": [1]}))


def test_scaling_point_trains_on_the_last_months_and_scores_everyone(split):
    task = ranking.RankingTask.from_time_split(split, "validation")
    short = experiments.scaling_point(split, task, "MF", 4, 2, mf_epochs=2, seed=0)
    assert set(short) == {"model", "dim", "months", "parameters", "validation NDCG@10",
                          "epochs"}
    assert (short["model"], short["dim"], short["months"]) == ("MF", 4, 2)
    assert 1 <= short["epochs"] <= 2 and 0.0 <= short["validation NDCG@10"] <= 1.0
    long = experiments.scaling_point(split, task, "MF", 4, 24, mf_epochs=2, seed=0)
    # two months of history know fewer customers and products: fewer factors
    assert short["parameters"] < long["parameters"]
    sasrec = experiments.scaling_point(split, task, "SASRec", 4, 24, sasrec_epochs=1)
    assert sasrec["model"] == "SASRec" and sasrec["epochs"] == 1
    with pytest.raises(ValueError, match="model_name"):
        experiments.scaling_point(split, task, "LSTM", 4, 2)
    with pytest.raises(TypeError, match="RankingTask"):
        experiments.scaling_point(split, split.validation, "MF", 4, 2)
