"""Integrated gradients, the Keras feature MLP and SASRec's attention weights."""

from __future__ import annotations

import numpy as np
import pytest

from companion.recsys import deep
from companion.retention import churn, explain


def test_integrated_gradients_of_a_linear_model_is_exact():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(3,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    w, b = model.layers[-1].get_weights()
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    base = np.array([0.5, -1.0, 2.0], np.float32)
    got = explain.integrated_gradients(model, x, base, steps=2)
    np.testing.assert_allclose(got, (x - base) * w[:, 0], rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_and_checks():
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input(shape=(4,))
    out = keras.layers.Dense(1)(keras.layers.Dense(8, activation="tanh")(inp))
    model = keras.Model(inp, out)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    attr = explain.integrated_gradients(model, x, steps=200, batch_size=64)
    gap = np.asarray(model(x)).ravel() - np.asarray(model(np.zeros((1, 4)))).ravel()
    np.testing.assert_allclose(attr.sum(axis=1), gap, atol=2e-3)
    coarse = explain.integrated_gradients(model, x, steps=2)
    assert not np.allclose(coarse.sum(axis=1), gap, atol=2e-3)  # the check can fail
    with pytest.raises(ValueError, match="shape"):
        explain.integrated_gradients(model, x[0])
    with pytest.raises(ValueError, match="baseline"):
        explain.integrated_gradients(model, x, np.zeros(3))


@pytest.fixture(scope="module")
def churn_data(interactions):
    return (churn.churn_dataset(interactions, "2011-07-01", 60),
            churn.churn_dataset(interactions, "2011-09-01", 60))


def test_feature_mlp_learns_churn_and_attributes_it(churn_data):
    from companion.foundations import metrics

    train, test = churn_data
    model = explain.FeatureMLP(epochs=40, seed=0).fit(train)
    proba = model.predict_proba(test)
    assert proba.shape == (len(test),) and ((proba > 0) & (proba < 1)).all()
    assert metrics.roc_auc(test.labels.to_numpy(), proba) > 0.6
    x = model.standardise(test)
    attr = explain.integrated_gradients(model.logit_model_, x, steps=256)
    logit = np.asarray(model.logit_model_(x)).ravel()
    zero = float(np.asarray(model.logit_model_(np.zeros((1, x.shape[1])))).ravel()[0])
    np.testing.assert_allclose(attr.sum(axis=1), logit - zero, atol=0.02)
    table = explain.attribution_table(attr, model.columns_)
    assert list(table.columns) == ["mean |attribution|", "mean attribution"]
    assert table["mean |attribution|"].is_monotonic_decreasing
    again = explain.FeatureMLP(epochs=40, seed=0).fit(train).predict_proba(test)
    np.testing.assert_allclose(again, proba, rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        explain.attribution_table(attr[:, :2], model.columns_)
    with pytest.raises(RuntimeError, match="not fitted"):
        explain.FeatureMLP().predict_proba(test)


@pytest.fixture(scope="module")
def sasrec(interactions):
    return deep.SASRec(dim=16, heads=2, max_len=8, epochs=2, seed=0).fit(interactions)


def test_sasrec_attention_is_causal(interactions, sasrec):
    model = sasrec
    users = np.sort(interactions["user_id"].unique())[:5]
    items, weights = explain.sasrec_attention(model, users)
    assert items.shape == (5, 8) and weights.shape == (5, 2, 8, 8)
    real = np.array([[v is not None for v in row] for row in items])
    last = weights[:, :, -1, :]  # the row that scores the next purchase
    np.testing.assert_allclose(last.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(last[np.broadcast_to(~real[:, None, :], last.shape)] < 1e-6)
    assert np.all(np.triu(weights[..., :, :], k=1)[np.broadcast_to(
        real[:, None, :, None] & real[:, None, None, :], weights.shape)] < 1e-6)
    # the items shown are the user's last purchases, oldest first
    history = interactions.sort_values("timestamp", kind="stable")
    first = history[history["user_id"] == users[0]]["item_id"].tolist()[-8:]
    assert [v for v in items[0] if v is not None][-len(first):] == first[-real[0].sum():]
    # a customer with a single purchase attends to it alone
    counts = interactions.groupby("user_id").size()
    single = counts.index[counts == 1]
    if len(single):
        one_items, one = explain.sasrec_attention(model, single[:1])
        np.testing.assert_allclose(one[0, :, -1, -1], 1.0, atol=1e-6)
    # with several purchases the weights depend on the items: not uniform for everyone
    many = real.sum(axis=1) >= 3
    assert many.any()
    spread = [np.ptp(last[i, :, real[i]]) for i in np.flatnonzero(many)]
    assert max(spread) > 1e-4
    with pytest.raises(ValueError, match="not seen"):
        explain.sasrec_attention(model, [-12345])
    with pytest.raises(ValueError, match="one-block"):
        two = deep.SASRec(dim=8, blocks=2, max_len=4, epochs=1).fit(interactions)
        explain.sasrec_attention(two, users)


def test_sasrec_deletion_test(interactions, sasrec):
    users = np.sort(interactions["user_id"].unique())[:20]
    table = explain.sasrec_deletion_test(sasrec, users, seed=0)
    assert list(table.columns) == ["user_id", "purchases", "newest_most_attended", "most",
                                   "least", "random"]
    assert (table["purchases"] >= 3).all() and len(table) > 0
    assert np.isfinite(table[["most", "least", "random"]].to_numpy()).all()
    assert (table[["most", "least", "random"]] >= 0).all().all()
    assert (table[["most", "least", "random"]].sum(axis=1) > 0).all()  # a deletion moves it
    again = explain.sasrec_deletion_test(sasrec, users, seed=0)
    np.testing.assert_allclose(again[["most", "least", "random"]],
                               table[["most", "least", "random"]], rtol=1e-5)


# ----------------------------------------------------------------------------- studies


def test_fit_and_explain_explains_both_models_on_the_test_customers(churn_data):
    train, test = churn_data
    out = explain.fit_and_explain(train, test, steps=64, n_repeats=2, mlp_epochs=3)
    n, columns = len(test.labels), out["columns"]
    assert set(out["proba"]) == {"trees", "Keras MLP"}
    for proba in out["proba"].values():
        assert proba.shape == (n,) and ((proba >= 0) & (proba <= 1)).all()
    assert out["ig"].shape == (n, len(columns)) and out["ig gap"].shape == (n,)
    # completeness: each customer's attributions add up to the change of the logit
    np.testing.assert_allclose(out["ig"].sum(axis=1), out["ig gap"], rtol=0.05, atol=0.02)
    for name in ("perm trees", "perm mlp"):
        assert set(out[name].index) <= set(columns) and "AUC drop" in out[name]
    assert 1 <= out["best epoch"] <= out["epochs"] <= 3
    with pytest.raises(TypeError, match="train must be a ChurnData"):
        explain.fit_and_explain(train.features, test)


def test_attention_study_draws_customers_and_reads_their_attention(interactions):
    cutoff = "2011-09-01"
    past = interactions[interactions["timestamp"] < cutoff]
    customers = past["user_id"].unique()
    out = explain.attention_study(interactions, cutoff, customers, n_users=6, dim=8,
                                  epochs=1, seed=0)
    assert out["purchases"] == len(past) and out["max_len"] == 20
    assert len(set(out["users"])) == 6 and set(out["users"]) <= set(customers)
    assert out["items"].shape == (6, 20) and out["weights"].shape == (6, 2, 20, 20)
    # the last row (it scores the next purchase) spreads the attention over the positions
    np.testing.assert_allclose(out["weights"][:, :, -1, :].sum(axis=-1), 1.0, atol=1e-5)
    assert set(out["deletion"]["user_id"]) <= set(out["users"])
    same = explain.attention_study(interactions, cutoff, customers[::-1], n_users=6, dim=8,
                                   epochs=1, seed=0)
    np.testing.assert_array_equal(same["users"], out["users"])  # the draw is sorted first
    with pytest.raises(ValueError, match="n_users"):
        explain.attention_study(interactions, cutoff, customers[:3], n_users=6)
