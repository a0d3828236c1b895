"""Federated averaging, clipping and noise, and the NumPy factor model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.recsys import ranking
from companion.recsys.federated import (
    FactorMF,
    FederatedMF,
    LocalMF,
    aggregate,
    client_weights,
    clip_update,
)


@pytest.fixture(scope="module")
def shop():
    frame = data.synthetic_shop(n_customers=150, n_products=80, months=8, seed=3)
    clean = preprocessing.clean_transactions(frame).transactions
    interactions = preprocessing.to_interactions(clean)
    countries = preprocessing.customer_countries(clean)
    return interactions, countries


SMALL = dict(dim=8, learning_rate=0.05, batch_size=64, seed=1)


def test_one_client_equals_central_sgd(shop):
    interactions, _ = shop
    clients = pd.Series("everyone", index=interactions["user_id"].unique())
    central = FactorMF(epochs=4, **SMALL).fit(interactions)
    fed = FederatedMF(clients, rounds=2, local_epochs=2, **SMALL).fit(interactions)
    np.testing.assert_allclose(fed.item_factors_, central.item_factors_, atol=1e-12)
    np.testing.assert_allclose(fed.item_bias_, central.item_bias_, atol=1e-12)
    np.testing.assert_allclose(fed.user_factors_, central.user_factors_, atol=1e-12)


def test_training_learns_and_is_deterministic(shop):
    interactions, _ = shop
    a = FactorMF(epochs=6, **SMALL).fit(interactions)
    b = FactorMF(epochs=6, **SMALL).fit(interactions)
    assert a.history_[-1] < a.history_[0]
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    users = interactions["user_id"].unique()[:5]
    assert a.recommend(users, k=5).shape == (5, 5)


def test_weights_are_client_sizes():
    np.testing.assert_allclose(client_weights([1, 3, 0]), [0.25, 0.75, 0.0])
    updates = [np.ones((2, 3)), 5 * np.ones((2, 3))]
    np.testing.assert_allclose(aggregate(updates, client_weights([3, 1])), 2 * np.ones((2, 3)))
    with pytest.raises(ValueError, match="sum to zero"):
        client_weights([0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        client_weights([1, -1])
    with pytest.raises(ValueError, match="one weight per update"):
        aggregate(updates, [1.0])
    with pytest.raises(ValueError, match="sum to 1"):
        aggregate(updates, [0.5, 0.2])
    with pytest.raises(ValueError, match="same shape"):
        aggregate([np.ones(2), np.ones(3)], [0.5, 0.5])


def test_fedavg_weights_clients_by_size(shop):
    interactions, countries = shop
    fed = FederatedMF(countries, rounds=1, local_epochs=1, **SMALL).fit(interactions)
    pairs = interactions.drop_duplicates(["user_id", "item_id"])
    sizes = pairs["user_id"].map(countries).value_counts()
    expected = (sizes / sizes.sum()).reindex(fed.weights_.index)
    np.testing.assert_allclose(fed.weights_.to_numpy(), expected.to_numpy())
    assert len(fed.weights_) == countries.reindex(pairs["user_id"].unique()).nunique() > 1


def test_clipping_bounds_the_update_norm():
    rng = np.random.default_rng(0)
    big = 10 * rng.standard_normal((5, 4))
    small = 0.01 * rng.standard_normal((5, 4))
    assert np.linalg.norm(clip_update(big, 1.5)) == pytest.approx(1.5)
    np.testing.assert_array_equal(clip_update(small, 1.5), small)
    out = aggregate([big, -3 * big], [0.5, 0.5], clip_norm=2.0)
    assert np.linalg.norm(out) <= 2.0 + 1e-9
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update(big, 0.0)


def test_clipped_federated_client_updates_are_bounded(shop):
    interactions, countries = shop
    fed = FederatedMF(countries, rounds=2, local_epochs=1, clip_norm=0.05,
                      **SMALL).fit(interactions)
    assert max(fed.history_[0]["client norms"]) > 0.05  # clipping was needed
    assert all(h["update norm"] <= 0.05 + 1e-9 for h in fed.history_)


def test_noise_has_the_right_scale():
    zeros = [np.zeros((200, 50)), np.zeros((200, 50))]
    out = aggregate(zeros, [0.75, 0.25], clip_norm=2.0, noise_multiplier=0.5,
                    rng=np.random.default_rng(0))
    assert out.std() == pytest.approx(0.5 * 2.0 * 0.75, rel=0.03)
    assert abs(out.mean()) < 0.02
    with pytest.raises(ValueError, match="clip_norm"):
        aggregate(zeros, [0.5, 0.5], noise_multiplier=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        aggregate(zeros, [0.5, 0.5], clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        aggregate(zeros, [0.5, 0.5], clip_norm=1.0, noise_multiplier=-1.0)


def test_local_only_uses_each_clients_own_items(shop):
    interactions, countries = shop
    local = LocalMF(countries, epochs=3, **SMALL).fit(interactions)
    assert len(local.client_items_) == len(local.client_names_)
    users = interactions["user_id"].unique()[:20]
    assert local.score(users).shape == (20, len(local.items_))


def test_clear_errors(shop):
    interactions, countries = shop
    with pytest.raises(ValueError, match="no client"):
        FederatedMF(countries.iloc[:3], rounds=1, **SMALL).fit(interactions)
    with pytest.raises(TypeError, match="Series"):
        FederatedMF({"a": 1}, rounds=1, **SMALL).fit(interactions)
    with pytest.raises(ValueError, match="needs clients"):
        LocalMF(**SMALL).fit(interactions)
    with pytest.raises(ValueError, match="learning_rate"):
        FactorMF(learning_rate=0.0).fit(interactions)
    with pytest.raises(ValueError, match="dim"):
        FactorMF(dim=2).warm_start(item_factors=pd.DataFrame(np.ones((2, 3))))


def test_partial_fit_and_transfer(shop):
    interactions, _ = shop
    cut = interactions["timestamp"].quantile(0.8)
    early = interactions[interactions["timestamp"] < cut]
    late = interactions[interactions["timestamp"] >= cut]
    model = FactorMF(epochs=3, **SMALL).fit(early)
    n_users = len(model.user_factors_)
    model.partial_fit(late)
    assert len(model.user_factors_) == len(model.user_encoder_) >= n_users
    assert len(model.item_factors_) == len(model.items_)
    # transfer: shared ids start from the given factors
    items, bias = model.item_table()
    warm = FactorMF(epochs=0, **SMALL).warm_start(item_factors=items, item_bias=bias)
    warm.fit(late)
    got, _ = warm.item_table()
    np.testing.assert_allclose(got.to_numpy(), items.reindex(got.index).to_numpy())
    task = ranking.RankingTask.from_split(early, late)
    assert ranking.evaluate(model, task, tasks=("all",))["all"]["NDCG"].between(0, 1).all()


# ----------------------------------------------------------------------------- studies


@pytest.fixture(scope="module")
def two_periods(shop):
    """An earlier period and a later one, with ten customers who skip the later training
    part and come back in its test window."""
    from companion.recsys import experiments

    interactions, countries = shop
    cut = interactions["timestamp"].min() + pd.DateOffset(months=3)
    earlier = interactions[interactions["timestamp"] < cut]
    later = interactions[interactions["timestamp"] >= cut]
    start = experiments.last_days_split(later, window_days=30).test["timestamp"].min()
    in_test = later.loc[later["timestamp"] >= start, "user_id"].unique()
    back = np.sort([u for u in in_test if u in set(earlier["user_id"])])[:10]
    later = later[~(later["user_id"].isin(back) & (later["timestamp"] < start))]
    split = experiments.last_days_split(later.reset_index(drop=True), window_days=30)
    return earlier, split, back, countries


def test_transfer_study_scores_alone_transfer_and_returning_customers(two_periods):
    from companion.recsys.federated import transfer_study

    earlier, split, back, _ = two_periods
    out = transfer_study(earlier, split, dict(epochs=2, **SMALL))
    test = ranking.RankingTask.from_time_split(split, "test")
    models = ("second year alone", "pre-trained, fine-tuned", "pre-trained items only")
    assert set(out) == {*models, "returning"}
    for name in models:
        for task in ("all", "new"):
            assert out[name][task].index.equals(test.truth[task].index)
            assert out[name][task].between(0, 1).all()
    assert len(back) == 10
    for series in out["returning"].values():  # exactly the customers back after a gap
        assert sorted(series.index) == sorted(back)
    assert not out["pre-trained, fine-tuned"]["all"].equals(out["second year alone"]["all"])
    with pytest.raises(ValueError, match="earlier must end"):
        transfer_study(split.train, split, dict(epochs=1, **SMALL))
    with pytest.raises(TypeError, match="Split"):
        transfer_study(earlier, split.train, dict(epochs=1, **SMALL))


def test_federated_study_compares_central_federated_local_and_private(two_periods):
    from companion.recsys.federated import federated_study

    _, split, _, countries = two_periods
    fed_params = dict(rounds=2, local_epochs=1, **SMALL)
    out = federated_study(split, countries, dict(epochs=2, **SMALL), fed_params,
                          noise=(0.0, 1.0))
    assert list(out["ndcg"]) == ["central", "federated (FedAvg)", "local only",
                                 "clipped at the largest norm",
                                 "clipped at the median, noise 0",
                                 "clipped at the median, noise 1"]
    assert out["weights"].sum() == pytest.approx(1.0)
    assert out["norms"].shape == (2, len(out["weights"]))
    assert out["clip"]["largest"] >= out["clip"]["median"] > 0
    # clipping at the largest norm of the plain run binds no client: nothing changes
    for task in ("all", "new"):
        pd.testing.assert_series_equal(out["ndcg"]["clipped at the largest norm"][task],
                                       out["ndcg"]["federated (FedAvg)"][task])
    with pytest.raises(TypeError, match="clients"):
        federated_study(split, dict(countries), dict(epochs=1, **SMALL), fed_params)
