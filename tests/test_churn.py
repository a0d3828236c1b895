"""Tests of companion.churn: time-honest labels and features, planted signal, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import churn, data, preprocessing


@pytest.fixture(scope="module")
def long_shop():
    """Two years of a 600-customer synthetic shop (churn is planted with a slowdown)."""
    tx, truth = data.synthetic_shop(n_customers=600, n_products=150, months=24, seed=3,
                                    return_truth=True)
    clean = preprocessing.clean_transactions(tx)
    return preprocessing.to_interactions(clean.transactions), clean.returns, truth


@pytest.fixture(scope="module")
def cutoffs(long_shop):
    start = long_shop[0]["timestamp"].min().normalize()
    return start + pd.Timedelta(days=300), start + pd.Timedelta(days=420)


@pytest.fixture(scope="module")
def datasets(long_shop, cutoffs):
    inter, returns, _ = long_shop
    return tuple(churn.churn_dataset(inter, c, returns=returns) for c in cutoffs)


def _frame(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def test_labels_by_hand():
    rows = [(1, "a", "2011-01-05", "i1", 1.0), (1, "a", "2011-03-01", "i2", 1.0),
            (2, "a", "2011-01-10", "i3", 1.0), (3, "a", "2010-01-10", "i4", 1.0),
            (4, "b", "2011-06-30", "i5", 1.0)]
    frame = _frame(rows)
    labels = churn.churn_labels(frame, "2011-02-01", horizon_days=60, active_days=365)
    # user 3 bought more than a year before the cutoff: not active, not labelled
    assert labels.to_dict() == {1: 0, 2: 1}


def test_features_ignore_the_future(long_shop, cutoffs):
    inter, returns, _ = long_shop
    cut = cutoffs[0]
    before = churn.churn_features(inter, cut, returns=returns)
    # change everything after the cutoff: the features must not move
    future = inter["timestamp"] >= cut
    altered = inter.copy()
    altered.loc[future, "value"] *= 100.0
    altered.loc[future, "invoice"] = altered.loc[future, "invoice"] + "x"
    after = churn.churn_features(altered, cut, returns=returns)
    pd.testing.assert_frame_equal(before, after)
    seq = churn.activity_sequences(inter, cut, before.index)
    assert np.array_equal(seq, churn.activity_sequences(altered, cut, before.index))


def test_features_match_rfm(long_shop, cutoffs):
    from companion import behaviour

    inter, _, _ = long_shop
    feats = churn.churn_features(inter, cutoffs[0], active_days=10_000)
    rfm = behaviour.rfm_features(inter, cutoffs[0])
    pd.testing.assert_series_equal(feats["frequency"], rfm["frequency"].astype(float))
    assert np.allclose(feats["monetary"], rfm["monetary"])


def test_sequences_count_invoices(long_shop, cutoffs):
    inter, _, _ = long_shop
    cut = cutoffs[0]
    feats = churn.churn_features(inter, cut)
    seq = churn.activity_sequences(inter, cut, feats.index, weeks=13)
    assert seq.shape == (len(feats), 13, 2)
    # the last 13 weeks hold exactly the invoices of the last 91 days
    start = cut - pd.Timedelta(weeks=13)
    recent = inter[(inter["timestamp"] < cut) & (inter["timestamp"] >= start)]
    expected = recent.groupby("user_id")["invoice"].nunique().reindex(feats.index, fill_value=0)
    assert np.array_equal(seq[:, :, 0].sum(axis=1), expected.to_numpy())


def test_labels_agree_with_planted_churn(long_shop, cutoffs):
    inter, _, truth = long_shop
    labels = churn.churn_labels(inter, cutoffs[0])
    churn_date = truth.customers.set_index("CustomerID")["churn_date"].reindex(labels.index)
    gone = churn_date < cutoffs[0]
    # a customer who has churned for good never buys again
    assert gone.any() and (labels[gone] == 1).all()


@pytest.mark.parametrize("model", [churn.RecencyRule(), churn.LogisticRFM(),
                                   churn.GradientBoosting()], ids=repr)
def test_models_recover_planted_churn(datasets, model):
    train, test = datasets
    proba = model.fit(train).predict_proba(test)
    assert proba.shape == (len(test),) and ((proba >= 0) & (proba <= 1)).all()
    scores = churn.churn_scores(test.labels, proba, n_boot=50)
    assert scores["ROC-AUC"] > 0.8
    assert scores["ROC-AUC low"] <= scores["ROC-AUC"] <= scores["ROC-AUC high"]
    assert scores["base rate"] == pytest.approx(test.base_rate)


def test_sequence_model_learns(datasets):
    train, test = datasets
    model = churn.SequenceChurn(epochs=15, units=8, hidden=8, seed=0).fit(train)
    proba = model.predict_proba(test)
    from companion import metrics

    assert metrics.roc_auc(test.labels.to_numpy(), proba) > 0.75
    again = churn.SequenceChurn(epochs=15, units=8, hidden=8, seed=0).fit(train)
    assert np.allclose(again.predict_proba(test), proba, atol=1e-5)


def test_gains_and_offer_tables():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    p = np.linspace(0.9, 0.0, 10)
    gains = churn.gains_table(y, p, bins=5)
    assert gains["churners"].tolist() == [2, 1, 0, 0, 0]
    assert gains["lift"].iloc[0] == pytest.approx(1.0 / 0.3)
    assert gains["cumulative share of churners"].iloc[-1] == pytest.approx(1.0)
    table = churn.offer_value_table(p, np.full(10, 100.0), offer_cost=10.0, save_rate=0.5)
    # gain_i = 50 p_i - 10 > 0 exactly when p_i > 0.2
    assert table.loc["positive expected gain", "customers targeted"] == int((p > 0.2).sum())
    assert table.loc["nobody", "expected net gain"] == 0.0
    assert table["expected net gain"].idxmax() == "positive expected gain"


def test_permutation_importance_finds_recency(datasets):
    train, test = datasets
    model = churn.LogisticRFM().fit(train)
    imp = churn.permutation_importance(model, test, n_repeats=3)
    assert list(imp.index) == sorted(imp.index, key=lambda c: -imp.loc[c, "AUC drop"])
    assert imp.index[0] == "recency_days"


def test_bad_input(long_shop):
    inter, returns, _ = long_shop
    last = inter["timestamp"].max()
    with pytest.raises(ValueError, match="outside the data"):
        churn.churn_labels(inter, last + pd.Timedelta(days=5))
    with pytest.raises(ValueError, match="horizon_days=90 is too long"):
        churn.churn_labels(inter, last - pd.Timedelta(days=30))
    with pytest.raises(ValueError, match="value"):
        churn.churn_features(inter.drop(columns=["value"]), last - pd.Timedelta(days=100))
    with pytest.raises(ValueError, match="horizon_days"):
        churn.churn_dataset(inter, last - pd.Timedelta(days=100), horizon_days=0)
    with pytest.raises(ValueError, match="customer_id"):
        churn.churn_features(inter, last - pd.Timedelta(days=100),
                             returns=returns.drop(columns=["customer_id"]))
    with pytest.raises(TypeError, match="ChurnData"):
        churn.LogisticRFM().fit(inter)
    with pytest.raises(RuntimeError, match="not fitted"):
        churn.GradientBoosting().predict_proba(None)
    with pytest.raises(ValueError, match="probabilities"):
        churn.churn_scores([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="bins"):
        churn.gains_table([0, 1], [0.1, 0.2], bins=5)


def test_inter_purchase_days():
    rows = [(1, "a", "2011-01-01", "i1", 1.0), (1, "b", "2011-01-01", "i1", 1.0),
            (1, "a", "2011-01-11", "i2", 1.0), (2, "a", "2011-01-01", "i3", 1.0),
            (2, "a", "2011-01-04", "i4", 1.0)]
    frame = _frame(rows)
    assert sorted(churn.inter_purchase_days(frame).tolist()) == [3.0, 10.0]
