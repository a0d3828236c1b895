"""companion.recsys.ranking: the evaluation protocol and full-ranking metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from companion.recsys import ranking


def _frame(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


@pytest.fixture
def task():
    train = _frame([(1, "a", "2011-01-01"), (1, "b", "2011-01-02"), (2, "c", "2011-01-03"),
                    (3, "a", "2011-01-04")])
    window = _frame([(1, "a", "2011-02-01"), (1, "d", "2011-02-01"), (2, "c", "2011-02-02"),
                     (4, "a", "2011-02-03")])
    return ranking.RankingTask.from_split(train, window)


def test_tasks_by_hand(task):
    assert task.truth["all"].to_dict() == {1: {"a", "d"}, 2: {"c"}}  # user 4 is unknown
    assert task.truth["new"].to_dict() == {1: {"d"}}                 # user 2 only repeats
    assert task.users("new").tolist() == [1]


def test_task_rejects_overlapping_windows():
    train = _frame([(1, "a", "2011-02-05")])
    window = _frame([(1, "a", "2011-02-01")])
    with pytest.raises(ValueError, match="after the last training"):
        ranking.RankingTask.from_split(train, window)
    with pytest.raises(ValueError, match="no user of the window"):
        ranking.RankingTask.from_split(_frame([(1, "a", "2011-01-01")]),
                                       _frame([(9, "a", "2011-02-01")]))


def test_metrics_by_hand():
    hits = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=bool)
    out = ranking.metrics_from_hits(hits, np.array([1, 4, 2]))
    assert out["Recall"].tolist() == [1.0, 0.5, 0.0]
    assert out["HitRate"].tolist() == [1.0, 1.0, 0.0]
    assert out["MRR"].tolist() == [0.5, 1.0, 0.0]
    assert out.loc[0, "NDCG"] == pytest.approx(1 / np.log2(3))
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert out.loc[1, "NDCG"] == pytest.approx((1 + 1 / np.log2(4)) / ideal)
    assert out.loc[1, "MAP"] == pytest.approx((1 + 2 / 3) / 3)
    assert out.loc[0, "MAP"] == pytest.approx(0.5)


def test_ndcg_matches_sklearn():
    rng = np.random.default_rng(0)
    relevance = (rng.random((50, 40)) < 0.1).astype(float)
    relevance[relevance.sum(axis=1) == 0, 0] = 1.0
    scores = rng.random((50, 40))
    k = 10
    top = np.argsort(-scores, axis=1)[:, :k]
    hits = np.take_along_axis(relevance, top, axis=1).astype(bool)
    ours = ranking.metrics_from_hits(hits, relevance.sum(axis=1))["NDCG"]
    theirs = [ndcg_score(relevance[i:i + 1], scores[i:i + 1], k=k) for i in range(50)]
    np.testing.assert_allclose(ours, theirs)


def test_metric_input_checks():
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking.metrics_from_hits(np.zeros((1, 3), bool), np.array([0]))
    with pytest.raises(ValueError, match="rows"):
        ranking.hits_matrix(np.array([["a"]]), pd.Series([{"a"}, {"b"}]))


class _Fixed:
    """A stand-in recommender that returns fixed lists."""

    def recommend(self, users, k=10, exclude_seen=True):
        lists = {1: ["d", "a"], 2: ["c", "b"]} if not exclude_seen else {1: ["b", "d"]}
        return np.array([lists[u][:k] for u in users])


def test_evaluate_and_summarise(task):
    result = ranking.evaluate(_Fixed(), task, k=2)
    assert result["all"]["Recall"].tolist() == [1.0, 1.0]
    assert result["new"]["MRR"].tolist() == [0.5]
    assert result["all"].attrs["coverage"] == 1.0  # a, b, c; d is not in the catalogue
    summary = ranking.summarise(result, n_boot=20)
    assert summary.loc["all", "Recall"] == 1.0
    assert summary.loc["all", "Recall low"] <= 1.0 <= summary.loc["all", "Recall high"]
    table = ranking.results_table({"fixed": summary}, metric="MRR", digits=2)
    assert table.loc["fixed", "new"] == "0.50 [0.50, 0.50]"
    with pytest.raises(ValueError, match="metric"):
        ranking.results_table({"fixed": summary}, metric="AUC")


def test_grid_search_and_best_params(task):
    from companion.recsys import baselines as rec

    results = ranking.grid_search(lambda half_life_days: rec.RepeatBuy(half_life_days),
                                  {"half_life_days": [10.0, 100.0]}, task, k=2)
    assert list(results.columns) == ["half_life_days", "all", "new"]
    assert len(results) == 2
    assert ranking.best_params(results, "all")["half_life_days"] in (10.0, 100.0)
    mixed = pd.DataFrame({"n": [5, 50], "x": [0.1, 0.2], "all": [0.3, 0.4]})
    best = ranking.best_params(mixed, "all")
    assert best == {"n": 50, "x": 0.2} and isinstance(best["n"], int)
    with pytest.raises(ValueError, match="no column"):
        ranking.best_params(results, "other")
    with pytest.raises(ValueError, match="grid is empty"):
        ranking.grid_search(rec.RepeatBuy, {}, task)


def test_plot_model_comparison(task):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from companion import plotting

    summary = ranking.summarise(ranking.evaluate(_Fixed(), task, k=2), n_boot=10)
    axes = plotting.plot_model_comparison({"a": summary, "b": summary})
    assert len(axes) == 2 and len(axes[0].patches) == 2
    plt.close(axes[0].figure)


def test_summarise_intervals_and_attributes():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((200, 5)), columns=list(ranking.METRICS))
    frame.attrs.update(coverage=0.25, novelty=7.5)
    summary = ranking.summarise({"all": frame}, n_boot=300, seed=4)
    row = summary.loc["all"]
    for metric in ranking.METRICS:
        assert row[metric] == pytest.approx(frame[metric].mean())
        assert row[f"{metric} low"] < row[metric] < row[f"{metric} high"]
        # a 95% interval of the mean of 200 users: about 2 x 1.96 standard errors wide
        width = 2 * 1.96 * frame[metric].std() / np.sqrt(len(frame))
        assert row[f"{metric} high"] - row[f"{metric} low"] == pytest.approx(width, rel=0.25)
    assert (row["coverage"], row["novelty"], row["users"]) == (0.25, 7.5, 200)
    pd.testing.assert_frame_equal(summary, ranking.summarise({"all": frame}, n_boot=300, seed=4))
    assert not summary.equals(ranking.summarise({"all": frame}, n_boot=300, seed=5))
    bare = ranking.summarise({"all": pd.DataFrame(frame.to_numpy(), columns=frame.columns)},
                             n_boot=20)
    assert np.isnan(bare.loc["all", "coverage"]) and np.isnan(bare.loc["all", "novelty"])


def test_results_table_defaults(task):
    summary = ranking.summarise(ranking.evaluate(_Fixed(), task, k=2), n_boot=20)
    table = ranking.results_table({"fixed": summary})
    # NDCG by default, four digits: user 1's new item comes second
    ndcg = 1 / np.log2(3)
    assert table.loc["fixed", "new"] == f"{ndcg:.4f} [{ndcg:.4f}, {ndcg:.4f}]"


class _Listed:
    """A stand-in recommender that ranks twelve items, every user's window item 11th."""

    def fit(self, train):
        return self

    def recommend(self, users, k=10, exclude_seen=True):
        items = [f"x{j}" for j in range(10)] + ["d", "c"]
        return np.array([items[:k] for _ in users])


def test_grid_search_ranks_at_ten_by_default(task):
    results = ranking.grid_search(lambda n: _Listed(), {"n": [1, 2]}, task, metric="HitRate")
    assert results[["all", "new"]].to_numpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]
    at_11 = ranking.grid_search(lambda n: _Listed(), {"n": [1]}, task, k=11, metric="HitRate",
                                tasks=("new",))
    assert list(at_11.columns) == ["n", "new"] and at_11.loc[0, "new"] == 1.0
    # parameters that are not numbers come back as they are
    named = pd.DataFrame({"name": ["first", "second"], "all": [0.1, 0.2]})
    assert ranking.best_params(named, "all") == {"name": "second"}


def test_from_time_split_trains_on_everything_before_the_window():
    from companion.data import preprocessing

    frame = _frame([(1, "a", "2011-01-01"), (2, "b", "2011-01-02"), (1, "c", "2011-02-01"),
                    (2, "a", "2011-02-02"), (1, "d", "2011-03-01"), (2, "b", "2011-03-02")])
    split = preprocessing.split_by_time(frame, "2011-03-01", validation_days=28)
    validation = ranking.RankingTask.from_time_split(split, "validation")
    assert validation.train["item_id"].tolist() == ["a", "b"]
    assert validation.truth["all"].to_dict() == {1: {"c"}, 2: {"a"}}
    assert validation.truth["new"].to_dict() == {1: {"c"}, 2: {"a"}}
    assert validation.description == (f"{split.description}; evaluated on the validation "
                                      "window")
    test = ranking.RankingTask.from_time_split(split)
    assert test.train["item_id"].tolist() == ["a", "b", "c", "a"]
    assert test.train.index.tolist() == [0, 1, 2, 3]
    assert test.truth["all"].to_dict() == {1: {"d"}, 2: {"b"}}
    assert test.truth["new"].to_dict() == {1: {"d"}}
    assert test.description == f"{split.description}; evaluated on test"
    with pytest.raises(ValueError, match="part must be one of"):
        ranking.RankingTask.from_time_split(split, "train")


def test_evaluate_defaults_coverage_and_novelty(task):
    assert task.description == "" and task.truth["all"].index.name == "user_id"
    # ten items by default: the window items ranked eleventh are missed
    assert ranking.evaluate(_Listed(), task)["new"]["HitRate"].tolist() == [0.0]
    result = ranking.evaluate(_Fixed(), task, k=2)
    assert result["all"].index.name == "user_id"
    # novelty is the mean of -log2(share of training users who bought the item); items the
    # training data lack (d) count as bought by one user of three
    share = {"a": 2 / 3, "b": 1 / 3, "c": 1 / 3, "d": 1 / 3}
    expected = np.mean([-np.log2(share[i]) for i in ["d", "a", "c", "b"]])
    assert result["all"].attrs["novelty"] == pytest.approx(expected)
    assert result["new"].attrs["novelty"] == pytest.approx(np.log2(3))
    assert result["new"].attrs["coverage"] == pytest.approx(1 / 3)   # b of a, b, c
    with pytest.raises(ValueError, match="one relevant count per user"):
        ranking.metrics_from_hits(np.zeros((2, 3), bool), np.array([1]))
    with pytest.raises(ValueError, match="window"):
        ranking.RankingTask.from_split(task.train, task.train.drop(columns="item_id"))
