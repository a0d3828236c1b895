"""Every recommender follows the protocol and learns the tastes planted in the synthetic shop."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep, ranking  # noqa: E402


@pytest.fixture(scope="module")
def world():
    frame, truth = data.synthetic_shop(n_customers=200, n_products=150, months=12, seed=11,
                                       return_truth=True)
    clean = preprocessing.clean_transactions(frame)
    interactions = preprocessing.to_interactions(clean.transactions)
    split = preprocessing.split_by_time(interactions, "2011-10-01", validation_days=30)
    desc = preprocessing.product_descriptions(clean.transactions)
    country = preprocessing.customer_countries(clean.transactions)
    return {"train": pd.concat([split.train, split.validation]), "split": split,
            "truth": truth, "desc": desc, "country": country}


FACTORIES = {
    "popularity": lambda w: rec.Popularity(),
    "recent popularity": lambda w: rec.Popularity(window_days=60),
    "repeat-buy": lambda w: rec.RepeatBuy(half_life_days=60),
    "item-kNN": lambda w: rec.ItemKNN(neighbours=30, shrinkage=5),
    "EASE": lambda w: rec.EASE(l2=50),
    "TIFU-KNN": lambda w: rec.TIFUKNN(neighbours=5, group_size=3, alpha=0.5),
    "UP-CF@r": lambda w: rec.UPCF(recency=5, asymmetry=0.75, locality=2, neighbours=20),
    "blend": lambda w: rec.Blend(rec.EASE(l2=50), weight=0.5),
    "blend on recent popularity": lambda w: rec.Blend(rec.EASE(l2=50), weight=0.5,
                                                      base=rec.Popularity(window_days=60)),
    "MF": lambda w: deep.MatrixFactorization(dim=16, epochs=20, batch_size=256,
                                             learning_rate=0.01),
    "NeuMF": lambda w: deep.NeuMF(dim=8, hidden=(16,), epochs=8, batch_size=256,
                                  learning_rate=0.01),
    "two-tower": lambda w: deep.TwoTower(dim=16, item_text=w["desc"],
                                         user_context=w["country"], epochs=15,
                                         batch_size=256, learning_rate=0.01),
    "two-tower (recency-weighted)": lambda w: deep.TwoTower(
        dim=16, item_text=w["desc"], user_context=w["country"], epochs=15, batch_size=256,
        learning_rate=0.01, half_life_days=60),
    "SASRec": lambda w: deep.SASRec(dim=16, blocks=1, heads=1, max_len=20, negatives=20,
                                    epochs=20, batch_size=32, learning_rate=0.01),
    "SASRec (full softmax)": lambda w: deep.SASRec(dim=16, blocks=1, heads=1, max_len=20,
                                                   negatives=None, epochs=20, batch_size=32,
                                                   learning_rate=0.01),
    "source LSTM": lambda w: deep.SourceLSTM(dim=8, units=8, epochs=2),
}
#: models that must learn the planted category tastes (the rest cannot by design)
LEARNERS = ["item-kNN", "EASE", "TIFU-KNN", "UP-CF@r", "blend", "blend on recent popularity",
            "MF", "NeuMF", "two-tower", "two-tower (recency-weighted)", "SASRec"]


@pytest.fixture(scope="module")
def fitted(world):
    return {name: make(world).fit(world["train"]) for name, make in FACTORIES.items()}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_protocol(fitted, world, name):
    model = fitted[name]
    users = world["train"]["user_id"].unique()[:25]
    top = model.recommend(users, k=5, exclude_seen=True)
    assert top.shape == (25, 5)
    assert set(top.ravel()) <= set(model.items_)
    bought = {u: set(g) for u, g in world["train"].groupby("user_id")["item_id"]}
    for user, row in zip(users, top, strict=True):
        assert not set(row) & bought[user], f"{name} recommended an item already bought"
        assert len(set(row)) == 5
    scores = model.score(users[:3])
    assert scores.shape == (3, len(model.items_)) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", list(FACTORIES))
def test_unknown_users_get_popularity(fitted, name):
    model = fitted[name]
    unknown = model.recommend(np.array([-1, -2]), k=5)
    popular = fitted["popularity"].recommend(np.array([-1]), k=5)
    assert (unknown == popular[0]).all()


@pytest.mark.parametrize("name", LEARNERS)
def test_learns_planted_tastes(fitted, world, name):
    """Recommended new items fall in each customer's favourite category far more often
    than popularity's do."""
    truth = world["truth"]
    category = truth.products.set_index("StockCode")["category"]
    favourite = truth.customers.set_index("CustomerID")["favourite_category"]
    users = np.array(sorted(set(world["train"]["user_id"]) & set(favourite.index)))

    def share(model):
        top = model.recommend(users, k=10, exclude_seen=True)
        return np.mean([category.get(i) == favourite[u]
                        for u, row in zip(users, top, strict=True) for i in row])

    assert share(fitted[name]) > share(fitted["popularity"]) + 0.1


def test_keras_early_stopping_on_validation(world):
    split = world["split"]
    model = deep.MatrixFactorization(dim=8, epochs=6, learning_rate=0.02, patience=2)
    model.fit(split.train, validation=split.validation)
    assert 1 <= model.best_epoch_ <= len(model.history_) <= 6
    assert all("validation NDCG@10" in row for row in model.history_)
    assert model.n_parameters() > 0


def test_bad_input(fitted, world):
    model = fitted["EASE"]
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        model.recommend(np.array([1]), k=10_000)
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.recommend(np.array([1]), k=0)
    with pytest.raises(ValueError, match="1-D"):
        model.recommend(np.array([[1, 2]]), k=3)
    with pytest.raises(RuntimeError, match="not fitted"):
        rec.EASE().recommend(np.array([1]))
    with pytest.raises(ValueError, match="'timestamp'"):
        rec.ItemKNN().fit(world["train"].drop(columns="timestamp"))
    with pytest.raises(ValueError, match="l2 must be positive"):
        rec.EASE(l2=0).fit(world["train"])
    with pytest.raises(ValueError, match="half_life_days"):
        rec.RepeatBuy(half_life_days=-1).fit(world["train"])


def test_repeat_buy_ranks_own_items_first(fitted, world):
    model = fitted["repeat-buy"]
    user = world["train"]["user_id"].value_counts().index[0]
    own = set(world["train"].loc[world["train"]["user_id"] == user, "item_id"])
    top = model.recommend(np.array([user]), k=5, exclude_seen=False)[0]
    assert set(top) <= own


def test_evaluation_on_synthetic_time_split(fitted, world):
    task = ranking.RankingTask.from_time_split(world["split"], "validation")
    model = rec.EASE(l2=50).fit(task.train)
    result = ranking.evaluate(model, task, k=10)
    assert set(result) == {"all", "new"}
    assert result["all"]["NDCG"].between(0, 1).all()


def test_blend_mixes_base_and_model(world):
    train = world["train"]
    ease = rec.EASE(l2=50).fit(train)
    users = train["user_id"].unique()[:20]
    # a weight of 0 keeps the model's ranking; a huge weight keeps the base's top items
    only_model = rec.Blend(ease, weight=0.0, base=rec.Popularity()).fit(train)
    assert (only_model.recommend(users, k=5) == ease.recommend(users, k=5)).all()
    pop = rec.Popularity().fit(train)
    only_base = rec.Blend(ease, weight=1e6, base=rec.Popularity()).fit(train)
    assert (only_base.recommend(users, k=1) == pop.recommend(users, k=1)).all()
    other = rec.EASE(l2=50).fit(train[train["item_id"] != train["item_id"].iloc[0]])
    with pytest.raises(ValueError, match="does not know 1 of the blend.s items"):
        rec.Blend(other, weight=1.0).fit(train)


def test_sasrec_rejects_bad_negatives(world):
    with pytest.raises(ValueError, match="negatives"):
        deep.SASRec(dim=8, blocks=1, heads=1, max_len=5, negatives=0, epochs=1).fit(
            world["train"])


def test_recency_weights(world):
    frame = world["train"].assign(u=0, i=0)
    frame["u"] = frame["user_id"].rank(method="dense").astype(int) - 1
    frame["i"] = frame["item_id"].rank(method="dense").astype(int) - 1
    pairs = frame.groupby(["u", "i"])["timestamp"].max().reset_index()
    users, items = pairs["u"].to_numpy(), pairs["i"].to_numpy()
    weight = deep._recency_weights(frame, users, items, 30.0)
    assert weight.mean() == pytest.approx(1.0, rel=1e-5)
    age = (frame["timestamp"].max() - pairs["timestamp"]).dt.days.to_numpy()
    # newer pairs weigh more; a pair 30 days older weighs half as much
    newest, oldest = age.argmin(), age.argmax()
    assert weight[newest] > weight[oldest]
    ratio = weight[oldest] / weight[newest]
    expected = 0.5 ** ((pairs["timestamp"].iloc[newest] - pairs["timestamp"].iloc[oldest])
                       .total_seconds() / 86400 / 30)
    assert ratio == pytest.approx(expected, rel=1e-3)
    assert deep._recency_weights(frame, users, items, None) is None
    with pytest.raises(ValueError, match="half_life_days"):
        deep._recency_weights(frame, users, items, -5.0)


def test_max_age_leaves_out_old_pairs(world):
    train = world["train"]
    last = train.groupby(["user_id", "item_id"])["timestamp"].max()
    age = (train["timestamp"].max() - last).dt.total_seconds() / 86400
    cut = deep.age_cut(train, half_life_days=30, max_age_days=120)
    assert cut["pairs kept"] == pytest.approx(float((age <= 120).mean()))
    weight = 0.5 ** (age / 30)
    assert cut["weight dropped"] == pytest.approx(
        float(weight[age > 120].sum() / weight.sum()))
    assert 0 < cut["pairs kept"] < 1 and 0 < cut["weight dropped"] < 0.1
    model = deep.TwoTower(dim=8, half_life_days=30, max_age_days=120, epochs=1,
                          batch_size=64).fit(train)
    kept = (model.users_.size, model.pair_weight_.size)
    assert kept[0] == kept[1] == round(cut["pairs kept"] * len(last))
    all_pairs = deep.TwoTower(dim=8, half_life_days=30, epochs=1, batch_size=64).fit(train)
    assert all_pairs.users_.size == len(last)
    # every customer and product is still known to the model, and scored
    assert model.score(train["user_id"].unique()).shape == (
        train["user_id"].nunique(), train["item_id"].nunique())
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_age_days"):
            deep.TwoTower(max_age_days=bad, epochs=1).fit(train)
        with pytest.raises(ValueError, match="max_age_days"):
            deep.age_cut(train, half_life_days=30, max_age_days=bad)


@pytest.mark.parametrize("hidden", [(16,), (16, 8), ()])
def test_neumf_fast_scores_match_keras(world, hidden):
    model = deep.NeuMF(dim=8, hidden=hidden, epochs=2, batch_size=256, seed=3)
    model.fit(world["train"])
    users = np.arange(7)
    u = np.repeat(users, model.n_items_).astype(np.int32)
    i = np.tile(np.arange(model.n_items_), len(users)).astype(np.int32)
    expected = np.asarray(model.model_([u, i], training=False)).reshape(7, -1)
    fast = model._score(users)
    assert fast.dtype == np.float32
    assert np.allclose(fast, expected, atol=1e-5)
    # the fast path reads the trained weights: another seed's model scores differently
    other = deep.NeuMF(dim=8, hidden=hidden, epochs=2, batch_size=256, seed=4)
    assert not np.allclose(other.fit(world["train"])._score(users), fast, atol=1e-3)


def test_source_lstm_fast_scores_match_keras(fitted):
    model = fitted["source LSTM"]
    users = np.arange(5)
    pairs = np.c_[np.repeat(users, model.n_items_),
                  np.tile(model.n_users_ + np.arange(model.n_items_), len(users))]
    expected = np.asarray(model.model_(pairs.astype(np.int32), training=False))
    assert np.allclose(model._score(users), expected.reshape(5, -1), atol=1e-5)


def test_steps_per_execution_trains_the_same_weights(world, monkeypatch):
    import companion.foundations.keras_helpers as helpers

    def make():
        return deep.MatrixFactorization(dim=8, epochs=2, batch_size=64, seed=5)

    assert helpers.STEPS_PER_EXECUTION > 1
    fast = make().fit(world["train"])
    monkeypatch.setattr(deep, "STEPS_PER_EXECUTION", 1)
    slow = make().fit(world["train"])
    assert fast.model_.steps_per_execution > 1 and slow.model_.steps_per_execution == 1
    for a, b in zip(fast.model_.get_weights(), slow.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
