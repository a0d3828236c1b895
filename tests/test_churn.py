"""Tests of companion.retention.churn: time-honest labels and features, planted signal,
bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.retention import churn


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


# the label window's edges: cutoff 2011-03-01, horizon 30 days (to 2011-03-31), active
# window 60 days (from 2010-12-31); one second either side of each edge
_CUT, _END, _ACTIVE_FROM = "2011-03-01 00:00:00", "2011-03-31 00:00:00", "2010-12-31 00:00:00"
_EDGE_ROWS = [
    (1, "a", "2011-02-28 23:59:59", "e1", 1.0),    # a second before the cutoff, then nothing
    (2, "a", "2011-02-10 00:00:00", "e2", 2.0),
    (2, "b", _CUT, "e3", 30.0),                    # exactly at the cutoff
    (3, "a", "2011-02-10 00:00:00", "e4", 4.0),
    (3, "b", "2011-03-30 23:59:59", "e5", 50.0),   # a second before the window ends
    (4, "a", "2011-02-10 00:00:00", "e6", 8.0),
    (4, "b", _END, "e7", 70.0),                    # exactly at cutoff + horizon
    (5, "a", _ACTIVE_FROM, "e8", 16.0),            # exactly at cutoff - active_days
    (6, "a", "2010-12-30 23:59:59", "e9", 32.0),   # a second before the active window
    (6, "b", _CUT, "e10", 90.0),
    (7, "a", _CUT, "e11", 64.0),                   # first purchase at the cutoff
    (9, "a", "2011-04-15 00:00:00", "e12", 1.0),   # keeps the data running past the horizon
]


def test_label_window_boundaries():
    frame = _frame(_EDGE_ROWS)
    labels = churn.churn_labels(frame, _CUT, horizon_days=30, active_days=60)
    # active: a purchase in [cutoff - 60 days, cutoff); churned: none in [cutoff, cutoff + 30)
    assert labels.to_dict() == {1: 1, 2: 0, 3: 0, 4: 1, 5: 1}
    assert labels.dtype == np.int8 and labels.name == "churned"
    assert list(churn.active_customers(frame, _CUT, active_days=60)) == [1, 2, 3, 4, 5]
    # the future value reads the same window as the labels
    data_set = churn.churn_dataset(frame, _CUT, 30, active_days=60, weeks=4)
    assert data_set.future_value.to_dict() == {1: 0.0, 2: 30.0, 3: 50.0, 4: 0.0, 5: 0.0}
    pd.testing.assert_series_equal(data_set.labels, labels)
    assert data_set.horizon_days == 30 and data_set.future_value.name == "future_value"
    # one day more or less of horizon moves exactly the customers on the edges
    longer = churn.churn_labels(frame, _CUT, horizon_days=31, active_days=60)
    assert longer.to_dict() == {1: 1, 2: 0, 3: 0, 4: 0, 5: 1}
    shorter = churn.churn_labels(frame, _CUT, horizon_days=29, active_days=60)
    assert shorter.to_dict() == {1: 1, 2: 0, 3: 1, 4: 1, 5: 1}
    # a second later, the purchases at the cutoff are history (6 and 7 become active, 2 no
    # longer returns), user 5's first purchase falls out of the active window, and 4's
    # purchase at the old window's end falls inside the new one
    later = pd.Timestamp(_CUT) + pd.Timedelta(seconds=1)
    moved = churn.churn_labels(frame, later, horizon_days=30, active_days=60)
    assert moved.to_dict() == {1: 1, 2: 1, 3: 0, 4: 0, 6: 1, 7: 1}


def test_features_stop_a_second_before_the_cutoff():
    frame = _frame(_EDGE_ROWS)
    feats = churn.churn_features(frame, _CUT, active_days=60)
    assert list(feats.index) == [1, 2, 3, 4, 5]
    # the purchases at the cutoff (users 2, 6, 7) are not in any feature
    assert feats["frequency"].to_dict() == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert feats["monetary"].to_dict() == {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 16.0}
    assert feats.loc[1, "recency_days"] == pytest.approx(1 / 86400)
    assert feats.loc[5, "recency_days"] == pytest.approx(60.0)
    assert feats.loc[5, "tenure_days"] == pytest.approx(60.0)
    assert feats.loc[2, "days_per_invoice"] == pytest.approx(19.0)
    assert feats.loc[2, "overdue"] == pytest.approx(1.0)
    assert feats.loc[2, "basket_value"] == pytest.approx(2.0)
    assert feats["history_days"].tolist() == [pytest.approx(60 + 1 / 86400)] * 5
    # the last 90 days hold every purchase but user 5's, made exactly 60 days back
    assert feats["invoices_90d"].to_dict() == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert feats["spend_90d"].to_dict() == {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 16.0}
    # weekly sequences: the purchase a second before the cutoff is in the last week
    seq = churn.activity_sequences(frame, _CUT, feats.index, weeks=4)
    assert seq.shape == (5, 4, 2)
    assert seq[0, :, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert seq[0, 3, 1] == pytest.approx(np.log1p(1.0))
    # user 2 bought on 2011-02-10, 19 days before the cutoff: week 2 of the 4 (from 02-01)
    assert seq[1, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    # user 5's purchase, 60 days back, is older than the 4 weeks
    assert not seq[4].any()


def test_horizon_may_end_on_the_last_day_of_data():
    frame = _frame(_EDGE_ROWS)
    # the data end on 2011-04-15: a window [cutoff, 2011-04-16) fits, one more day does not
    assert len(churn.churn_labels(frame, _CUT, horizon_days=46, active_days=60)) == 5
    with pytest.raises(ValueError, match="horizon_days=47 is too long.*leaving 46 days"):
        churn.churn_labels(frame, _CUT, horizon_days=47, active_days=60)
    # a cutoff at the first purchase leaves no history; at the last one, it is allowed
    with pytest.raises(ValueError, match="outside the data"):
        churn.active_customers(frame, "2010-12-30 23:59:59")
    assert list(churn.active_customers(frame, "2011-04-15", active_days=60)) == [1, 2, 3, 4, 6, 7]


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
    from companion.retention import behaviour

    inter, _, _ = long_shop
    feats = churn.churn_features(inter, cutoffs[0], active_days=10_000)
    rfm = behaviour.rfm_features(inter, cutoffs[0])
    pd.testing.assert_series_equal(feats["frequency"], rfm["frequency"].astype(float))
    assert np.allclose(feats["monetary"], rfm["monetary"])
    # the two ratios: days per invoice over the customer's tenure, and the mean basket
    assert np.allclose(feats["days_per_invoice"], feats["tenure_days"] / feats["frequency"])
    assert np.allclose(feats["basket_value"], feats["monetary"] / feats["frequency"])
    assert (feats["frequency"] > 1).any()  # the ratios differ from products here


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
    from companion.foundations import metrics

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


def test_training_cutoffs_end_before_the_test():
    test = pd.Timestamp("2011-09-01")
    cuts = churn.training_cutoffs(test, 90)
    assert cuts[0] == pd.Timestamp("2010-09-01") and cuts[-1] == pd.Timestamp("2011-06-01")
    assert all(c.day == 1 for c in cuts) and len(cuts) == 10
    assert all(c + pd.Timedelta(days=90) <= test for c in cuts)
    with pytest.raises(ValueError, match="span_days"):
        churn.training_cutoffs(test, 90, span_days=30)


def test_stacked_dataset_is_time_honest(long_shop, cutoffs):
    inter, returns, _ = long_shop
    test = cutoffs[1]
    cuts = churn.training_cutoffs(test, 90, span_days=300)
    stacked = churn.stacked_churn_dataset(inter, cuts, 90, test_cutoff=test, returns=returns)
    # one row per (cutoff, active customer), each labelled as churn_labels labels it
    assert stacked.labels.index.is_unique and stacked.labels.index.names == ["cutoff", "user_id"]
    assert len(stacked) == sum(len(churn.churn_labels(inter, c)) for c in cuts)
    for c in (cuts[0], cuts[-1]):
        part = stacked.labels.xs(c, level="cutoff")
        pd.testing.assert_series_equal(part, churn.churn_labels(inter, c))
    # no label window reaches the test cutoff
    ends = pd.DatetimeIndex(stacked.row_cutoffs) + pd.Timedelta(days=90)
    assert (ends <= test).all() and stacked.cutoff == max(cuts)
    # rewriting, deleting and adding events from the test cutoff on changes nothing
    future = inter["timestamp"] >= test
    altered = inter.copy()
    altered.loc[future, "value"] *= 100.0
    altered.loc[future, "invoice"] = altered.loc[future, "invoice"] + "x"
    extra = altered[future].head(50).assign(user_id=altered["user_id"].iloc[0])
    altered = pd.concat([altered.drop(altered[future].index[::2]), extra], ignore_index=True)
    again = churn.stacked_churn_dataset(altered, cuts, 90, test_cutoff=test, returns=returns)
    pd.testing.assert_frame_equal(stacked.features, again.features)
    pd.testing.assert_series_equal(stacked.labels, again.labels)
    pd.testing.assert_series_equal(stacked.future_value, again.future_value)
    assert np.array_equal(stacked.sequences, again.sequences)
    # a training cutoff whose labels would read the test period is refused
    with pytest.raises(ValueError, match="runs past test_cutoff"):
        churn.stacked_churn_dataset(inter, [test - pd.Timedelta(days=60)], 90, test_cutoff=test)


def test_stack_and_select(datasets):
    first, second = datasets
    stacked = churn.stack_churn_data([first, second])
    assert len(stacked) == len(first) + len(second)
    back = stacked.select(stacked.row_cutoffs == np.datetime64(first.cutoff))
    assert np.array_equal(back.sequences, first.sequences)
    assert np.array_equal(back.labels.to_numpy(), first.labels.to_numpy())
    assert np.array_equal(back.customers, first.labels.index.to_numpy())
    with pytest.raises(ValueError, match="more than one data set"):
        churn.stack_churn_data([first, first])
    with pytest.raises(ValueError, match="at least one"):
        churn.stack_churn_data([])
    with pytest.raises(ValueError, match="empty"):
        stacked.select(np.zeros(len(stacked), dtype=bool))


def test_validation_split_keeps_customers_together():
    customers = np.repeat(np.arange(50), 3)
    val, train = churn.customer_split(customers, 0.2, seed=1)
    assert len(val) == 30 and len(train) == 120
    assert not set(customers[val]) & set(customers[train])
    # with one row per customer it is a plain random permutation of the rows
    order = np.random.default_rng(0).permutation(40)
    val, train = churn.customer_split(np.arange(40), 0.25, seed=0)
    assert np.array_equal(np.concatenate([val, train]), order)


def test_pool_sequences():
    seq = np.zeros((2, 8, 2), dtype=np.float32)
    seq[0, :, 0] = 1.0
    seq[0, :, 1] = np.log1p(3.0)
    pooled = churn.pool_sequences(seq, 4)
    assert pooled.shape == (2, 2, 2)
    assert np.allclose(pooled[0, :, 0], 4.0) and np.allclose(pooled[0, :, 1], np.log1p(12.0))
    assert np.array_equal(churn.pool_sequences(seq, 1), seq)
    with pytest.raises(ValueError, match="multiple of pool"):
        churn.pool_sequences(seq, 3)


def test_history_days_is_the_data_before_the_cutoff(long_shop, cutoffs):
    inter, _, _ = long_shop
    feats = churn.churn_features(inter, cutoffs[0])
    expected = (cutoffs[0] - inter["timestamp"].min()).total_seconds() / 86400
    assert np.allclose(feats["history_days"], expected)


def test_blend():
    a, b = np.array([0.2, 0.8]), np.array([0.4, 0.4])
    assert np.allclose(churn.blend({"a": a, "b": b}), [0.3, 0.6])
    assert np.allclose(churn.blend({"a": a, "b": b}, {"a": 3, "b": 1}), [0.25, 0.7])
    assert np.allclose(churn.blend([a, b], [0, 1]), b)
    with pytest.raises(ValueError, match="weights name"):
        churn.blend({"a": a, "b": b}, {"a": 1})
    with pytest.raises(ValueError, match="non-negative"):
        churn.blend({"a": a, "b": b}, {"a": -1, "b": 1})
    with pytest.raises(ValueError, match="different shapes"):
        churn.blend({"a": a, "b": b[:1]})


def test_models_on_stacked_cutoffs(long_shop, cutoffs, datasets):
    from companion.foundations import metrics

    inter, returns, _ = long_shop
    test = datasets[1]
    train = churn.stacked_churn_dataset(inter, churn.training_cutoffs(cutoffs[1], span_days=300),
                                        test_cutoff=cutoffs[1], returns=returns)
    bgnbd = churn.BetaGeoChurn(inter).fit(train)
    ensemble = churn.Ensemble({"trees": churn.GradientBoosting(seed=0),
                               "BG/NBD": churn.BetaGeoChurn(inter)}).fit(train)
    y = test.labels.to_numpy()
    scores = {name: model.predict_proba(test) for name, model in
              [("BG/NBD", bgnbd), ("ensemble", ensemble)]}
    for proba in scores.values():
        assert ((proba >= 0) & (proba <= 1)).all() and metrics.roc_auc(y, proba) > 0.8
    # BG/NBD reads only purchases before the test cutoff, fitted there
    assert list(bgnbd.models_) == [test.cutoff]
    expected = churn.blend({"trees": ensemble.models["trees"].predict_proba(test),
                            "BG/NBD": scores["BG/NBD"]})
    assert np.allclose(scores["ensemble"], expected)
    assert "recency_days" in ensemble.columns_
    # the GRU trains on the stacked rows (pooled to four-week steps) and is deterministic
    gru = churn.SequenceChurn(epochs=5, units=8, hidden=8, pool=4, batch_size=256, seed=0)
    proba = gru.fit(train).predict_proba(test)
    assert metrics.roc_auc(y, proba) > 0.75
    again = churn.SequenceChurn(epochs=5, units=8, hidden=8, pool=4, batch_size=256, seed=0)
    assert np.allclose(again.fit(train).predict_proba(test), proba, atol=1e-5)


def test_pooling_cost_times_each_pooling_on_the_same_rows(datasets):
    train, _ = datasets
    model = churn.SequenceChurn(epochs=3, patience=3, units=4, hidden=4, seed=0).fit(train)
    assert len(model.epoch_seconds_) == len(model.history_) == 3
    assert all(s > 0 for s in model.epoch_seconds_)
    table = churn.pooling_cost(train, (1, 4), rows=60, epochs=2, units=4, hidden=4)
    weeks = train.sequences.shape[1]
    assert table.index.tolist() == [1, 4]
    assert table["GRU steps"].tolist() == [weeks, weeks // 4]
    assert (table["CPU seconds per epoch"] > 0).all()
    assert table.loc[1, "relative cost"] == 1.0
    assert table.loc[4, "relative cost"] == pytest.approx(
        table.loc[4, "CPU seconds per epoch"] / table.loc[1, "CPU seconds per epoch"])
    with pytest.raises(ValueError, match="at least 2"):
        churn.pooling_cost(train, epochs=1)
    with pytest.raises(ValueError, match="'pool' is set by pooling_cost"):
        churn.pooling_cost(train, pool=4)
    with pytest.raises(ValueError, match="pools is empty"):
        churn.pooling_cost(train, ())


def test_stacked_dataset_passes_every_setting_on():
    frame = _frame(_EDGE_ROWS)
    returns = pd.DataFrame({"customer_id": [2, 3], "quantity": [-1, -2], "price": [5.0, 1.0],
                            "invoice_date": pd.to_datetime(["2011-02-20", "2011-03-05"])})
    cuts = [pd.Timestamp(_CUT), pd.Timestamp("2011-03-10")]
    # the second label window ends exactly at the test cutoff: allowed
    stacked = churn.stacked_churn_dataset(frame, cuts, 30, test_cutoff="2011-04-09",
                                          active_days=60, weeks=4, returns=returns)
    assert stacked.horizon_days == 30 and stacked.sequences.shape[1] == 4
    assert "return_share" in stacked.features.columns
    for cut in cuts:
        one = churn.churn_dataset(frame, cut, 30, active_days=60, weeks=4, returns=returns)
        rows = stacked.select(stacked.row_cutoffs == np.datetime64(cut))
        assert np.array_equal(rows.labels.to_numpy(), one.labels.to_numpy())
        assert np.array_equal(rows.customers, one.labels.index.to_numpy())
        assert np.array_equal(rows.features.to_numpy(), one.features.to_numpy())
        assert np.array_equal(rows.sequences, one.sequences)
        assert np.array_equal(rows.future_value.to_numpy(), one.future_value.to_numpy())
    # user 2's return (5.0 of 32.0 bought before the second cutoff) counts from then on
    second = stacked.features.xs(cuts[1], level="cutoff")
    assert second.loc[2, "return_share"] == pytest.approx(5.0 / 32.0)
    assert stacked.features.xs(cuts[0], level="cutoff").loc[3, "return_lines"] == 0.0
    with pytest.raises(ValueError, match="cutoff 2011-03-10 \\+ 30 days runs past"):
        churn.stacked_churn_dataset(frame, cuts, 30, test_cutoff="2011-04-08")


def test_defaults_a_year_of_activity_and_ninety_days():
    # user 1 bought 365.5 days before the cutoff: outside the default year of activity;
    # user 2 exactly 90 days and 90 days and a second before it; user 4 only long before
    frame = _frame([(1, "a", "2010-02-28 12:00:00", "i1", 1.0),
                    (2, "a", "2011-02-01 00:00:00", "i2", 1.0),
                    (2, "a", "2010-12-01 00:00:00", "i5", 2.0),
                    (2, "a", "2010-11-30 23:59:59", "i6", 4.0),
                    (4, "a", "2010-06-01 00:00:00", "i7", 8.0),
                    (3, "a", "2011-06-01 00:00:00", "i3", 1.0)])
    cut = pd.Timestamp("2011-03-01")
    assert list(churn.active_customers(frame, cut)) == [2, 4]
    assert list(churn.churn_labels(frame, cut).index) == [2, 4]
    feats = churn.churn_features(frame, cut)
    assert feats["invoices_90d"].to_dict() == {2: 2.0, 4: 0.0}
    assert feats["spend_90d"].to_dict() == {2: 3.0, 4: 0.0}
    stacked = churn.stacked_churn_dataset(frame, [cut])
    single = churn.churn_dataset(frame, cut)
    assert stacked.customers.tolist() == single.labels.index.tolist() == [2, 4]
    assert stacked.sequences.shape == single.sequences.shape == (2, 52, 2)
    assert stacked.horizon_days == single.horizon_days == 90
    assert single.future_value.name == "future_value"


def test_stack_churn_data_rejects_mismatches():
    frame = _frame(_EDGE_ROWS)
    first = churn.churn_dataset(frame, _CUT, 30, active_days=60, weeks=4)
    later = churn.churn_dataset(frame, "2011-03-10", 31, active_days=60, weeks=4)
    with pytest.raises(ValueError, match=r"different horizons: \[30, 31\]"):
        churn.stack_churn_data([first, later])
    returns = pd.DataFrame({"customer_id": [2], "quantity": [-1], "price": [5.0],
                            "invoice_date": pd.to_datetime(["2011-02-20"])})
    other = churn.churn_dataset(frame, "2011-03-10", 30, active_days=60, weeks=4,
                                returns=returns)
    with pytest.raises(ValueError, match="the data sets have different feature columns"):
        churn.stack_churn_data([first, other])
    with pytest.raises(TypeError, match="stack_churn_data expects ChurnData, got str"):
        churn.stack_churn_data([first, "later"])


def test_training_cutoffs_edges():
    # a year back from 2012-03-01 is 2011-03-02 (a leap year): the first month start after it
    assert churn.training_cutoffs("2012-03-01", 90)[0] == pd.Timestamp("2011-04-01")
    # a span as long as the horizon leaves the single date test - horizon
    assert churn.training_cutoffs("2011-09-01", 31, span_days=31) == [pd.Timestamp("2011-08-01")]
    with pytest.raises(ValueError, match="no 'MS' date lies between test_cutoff - 12 days"):
        churn.training_cutoffs("2011-09-15", 10, span_days=12)


def test_select_by_positions_and_mask(datasets):
    first = datasets[0]
    part = first.select(np.array([2, 0]))
    assert part.customers.tolist() == first.customers[[2, 0]].tolist()
    pd.testing.assert_frame_equal(part.features, first.features.iloc[[2, 0]])
    pd.testing.assert_series_equal(part.future_value, first.future_value.iloc[[2, 0]])
    assert np.array_equal(part.sequences, first.sequences[[2, 0]])
    assert part.cutoff == first.cutoff and part.horizon_days == first.horizon_days
    mask = np.zeros(len(first), dtype=bool)
    mask[[0, 2]] = True
    assert first.select(mask).customers.tolist() == first.customers[[0, 2]].tolist()
    with pytest.raises(ValueError, match=f"a boolean mask must have {len(first)} entries"):
        first.select(mask[:-1])


def test_pool_sequences_shapes_and_types():
    seq = np.zeros((2, 8, 2))                      # float64 in: float32 out, pooled or not
    seq[1, :, 0] = np.arange(8)
    assert churn.pool_sequences(seq, 1).dtype == np.float32
    pooled = churn.pool_sequences(seq, 2)
    assert pooled.dtype == np.float32 and pooled.shape == (2, 4, 2)
    assert pooled[1, :, 0].tolist() == [1.0, 5.0, 9.0, 13.0]
    for bad in (np.zeros((2, 8)), np.zeros((2, 8, 3))):
        with pytest.raises(ValueError, match=r"sequences must have shape \(customers, weeks, 2\)"):
            churn.pool_sequences(bad, 2)


def test_inter_purchase_days_is_named():
    frame = _frame([(1, "a", "2011-01-01", "i1", 1.0), (1, "a", "2011-01-03", "i2", 1.0)])
    gaps = churn.inter_purchase_days(frame)
    assert gaps.name == "days" and gaps.tolist() == [2.0]


def test_activity_sequences_week_edges():
    cut = pd.Timestamp("2011-03-01")
    frame = _frame([(1, "a", "2011-02-01 00:00:00", "i1", 2.0),   # exactly four weeks back
                    (1, "b", "2011-02-08 00:00:00", "i2", 0.5),   # seven days later: week 1
                    (1, "c", "2011-02-08 00:00:00", "i2", 0.5),   # same invoice, counted once
                    (2, "a", "2011-01-31 23:59:59", "i3", 1.0),   # a second too early
                    (2, "a", "2011-06-01 00:00:00", "i4", 1.0)])
    seq = churn.activity_sequences(frame, cut, pd.Index([1, 2]), weeks=4)
    assert seq.dtype == np.float32
    assert seq[0, :, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(seq[0, :, 1], np.log1p([2.0, 1.0, 0.0, 0.0]), rtol=1e-6)
    assert not seq[1].any()
    assert churn.activity_sequences(frame, cut, pd.Index([1, 2])).shape == (2, 52, 2)


def test_return_features_by_hand():
    frame = _frame([(1, "a", "2011-02-01", "i1", 40.0), (2, "a", "2011-02-02", "i2", 0.0),
                    (3, "a", "2011-02-03", "i3", 10.0), (4, "a", "2011-06-01", "i4", 1.0)])
    returns = pd.DataFrame({
        "customer_id": [1, 1, 2, 3],
        "invoice_date": pd.to_datetime(["2011-02-05", "2011-02-06", "2011-02-07",
                                        "2011-03-01"]),   # user 3's is at the cutoff: later
        "quantity": [-2, -1, -1, -5], "price": [4.0, 2.0, 3.0, 1.0]})
    feats = churn.churn_features(frame, "2011-03-01", returns=returns)
    assert feats["return_lines"].to_dict() == {1: 2.0, 2: 1.0, 3: 0.0}
    # returned value |quantity| x price over the value bought; a customer who paid nothing
    # gets a large but finite share
    assert feats.loc[1, "return_share"] == pytest.approx((2 * 4.0 + 1 * 2.0) / 40.0)
    assert feats.loc[3, "return_share"] == 0.0
    assert np.isfinite(feats.loc[2, "return_share"]) and feats.loc[2, "return_share"] > 1e6
