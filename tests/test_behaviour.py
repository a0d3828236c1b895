"""Tests of companion.retention.behaviour on hand-computed cases, and of companion.plotting."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from companion import plotting  # noqa: E402
from companion.retention import behaviour  # noqa: E402


@pytest.fixture
def tiny():
    """Three customers over three months.

    user 1: Jan, Feb, Mar    user 2: Jan, Mar    user 3: Feb
    """
    rows = [
        (1, "a", "2011-01-05", "i1", 10.0), (1, "b", "2011-02-05", "i2", 5.0),
        (1, "a", "2011-03-05", "i3", 1.0), (2, "a", "2011-01-20", "i4", 2.0),
        (2, "c", "2011-03-20", "i5", 2.0), (2, "d", "2011-03-20", "i5", 3.0),
        (3, "b", "2011-02-10", "i6", 4.0),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def test_monthly_activity(tiny):
    monthly = behaviour.monthly_activity(tiny)
    assert monthly["customers"].tolist() == [2, 2, 2]
    assert monthly["new_customers"].tolist() == [2, 1, 0]
    assert monthly["returning_customers"].tolist() == [0, 1, 2]
    assert monthly["invoices"].tolist() == [2, 2, 2]
    assert monthly["revenue"].tolist() == [12.0, 9.0, 6.0]


def test_repeat_purchase_rate(tiny):
    assert behaviour.repeat_purchase_rate(tiny) == pytest.approx(2 / 3)


def test_cohort_retention_by_hand(tiny):
    matrix = behaviour.cohort_retention(tiny)
    assert [str(c) for c in matrix.index] == ["2011-01", "2011-02"]
    jan, feb = matrix.iloc[0], matrix.iloc[1]
    assert jan.tolist() == [1.0, 0.5, 1.0]          # both in Jan; 1 in Feb; both in Mar
    assert feb[0] == 1.0 and feb[1] == 0.0        # user 3 never returns: zero, observed
    assert np.isnan(feb[2])                       # March + 1 is beyond the data
    assert matrix.attrs["cohort_size"].tolist() == [2, 1]


def test_retention_curve_weights_by_observed_cohorts(tiny):
    curve = behaviour.retention_curve(behaviour.cohort_retention(tiny))
    assert curve[0] == 1.0
    assert curve[1] == pytest.approx((0.5 * 2 + 0.0 * 1) / 3)
    assert curve[2] == pytest.approx(1.0)  # only the January cohort is observed at age 2


def test_retention_curve_needs_cohort_sizes(tiny):
    matrix = behaviour.cohort_retention(tiny)
    matrix.attrs = {}
    with pytest.raises(ValueError, match="cohort_size"):
        behaviour.retention_curve(matrix)


def test_behaviour_names_a_missing_column(tiny):
    with pytest.raises(ValueError, match="'invoice'"):
        behaviour.monthly_activity(tiny.drop(columns="invoice"))


def test_cohort_retention_on_the_synthetic_shop(interactions):
    matrix = behaviour.cohort_retention(interactions)
    assert (matrix[0] == 1).all()
    values = matrix.to_numpy()
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    # the lower-right triangle (not yet observable) is missing, the rest is present
    assert np.isnan(values[-1, 1:]).all()
    assert not np.isnan(values[0]).any()


# --------------------------------------------------------------------------- plotting


def test_plot_closed_loop_draws_every_stage():
    ax = plotting.plot_closed_loop()
    texts = [t.get_text() for t in ax.texts]
    assert all(stage in texts for stage in plotting.LOOP_STAGES)
    arrows = [p for p in ax.patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(arrows) == len(plotting.LOOP_STAGES)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="at least 2"):
        plotting.plot_closed_loop(("only",))


def test_plot_cohort_heatmap_shape(tiny):
    matrix = behaviour.cohort_retention(tiny)
    ax = plotting.plot_cohort_heatmap(matrix)
    image = ax.images[0].get_array()
    assert image.shape == (2, 2)  # age 0 is left out
    plt.close(ax.figure)


def test_plot_retention_curves(tiny):
    matrix = behaviour.cohort_retention(tiny)
    curve = behaviour.retention_curve(matrix)
    ax = plotting.plot_retention_curves(matrix, average=curve)
    assert len(ax.lines) == 3
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not in the matrix"):
        plotting.plot_retention_curves(matrix, cohorts=["1999-01"])


def test_plot_monthly_activity(tiny):
    monthly = behaviour.monthly_activity(tiny)
    ax = plotting.plot_monthly_activity(monthly)
    assert len(ax.patches) == 2 * len(monthly)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="new_customers"):
        plotting.plot_monthly_activity(monthly.drop(columns="new_customers"))


def test_plot_outlier_rule():
    values = pd.Series([1, 2, 3, 50, 0, -1.0])
    ax = plotting.plot_outlier_rule(values, (0.0, 10.0), label="quantity")
    assert ax.get_xscale() == "log"
    assert sum(p.get_height() for p in ax.patches if hasattr(p, "get_height")) >= 4
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="positive"):
        plotting.plot_outlier_rule(pd.Series([-1.0]), (0, 1), label="x")


def test_plot_layer_stats_and_losses():
    from companion.foundations import nn

    stats = {"he": nn.signal_propagation("he_normal", "relu", depth=3, width=8)}
    axes = plotting.plot_layer_stats(stats)
    assert axes[0].get_yscale() == "log" and len(axes[1].lines) == 1
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_layer_stats({})
    x = np.linspace(-2, 2, 5)
    axes = plotting.plot_losses({"mse": (x**2, 2 * x)}, x, xlabel="error")
    assert len(axes[0].lines) == 2  # the curve and the zero line
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="points"):
        plotting.plot_losses({"bad": (x, x[:2])}, x, xlabel="error")


def test_rfm_features_by_hand(tiny):
    rfm = behaviour.rfm_features(tiny, "2011-03-01")
    assert rfm.index.tolist() == [1, 2, 3]
    assert rfm.loc[1, "frequency"] == 2 and rfm.loc[1, "monetary"] == 15.0
    assert rfm.loc[1, "recency_days"] == pytest.approx(24.0)   # Feb 5 -> Mar 1
    assert rfm.loc[2, "tenure_days"] == pytest.approx(40.0)    # Jan 20 -> Mar 1
    assert rfm.loc[3, "items"] == 1


def test_rfm_features_ignore_the_future(tiny):
    before = behaviour.rfm_features(tiny, "2011-03-01")
    extra = pd.concat([tiny, tiny.assign(timestamp=pd.Timestamp("2011-03-25"),
                                         invoice="new", value=1000.0)])
    after = behaviour.rfm_features(extra, "2011-03-01")
    pd.testing.assert_frame_equal(before, after)


def test_future_value(tiny):
    value = behaviour.future_value(tiny, "2011-03-01", 20)
    assert value.index.equals(behaviour.rfm_features(tiny, "2011-03-01").index)
    assert value.to_dict() == {1: 1.0, 2: 5.0, 3: 0.0}
    with pytest.raises(ValueError, match="past the end"):
        behaviour.future_value(tiny, "2011-03-01", 90)
    with pytest.raises(ValueError, match="outside the data"):
        behaviour.rfm_features(tiny, "2012-01-01")


def test_rfm_segments_and_profiles():
    rng = np.random.default_rng(0)
    n = 200
    rfm = pd.DataFrame({"recency_days": rng.uniform(0, 400, n),
                        "frequency": rng.integers(1, 30, n).astype(float),
                        "monetary": rng.uniform(10, 5000, n)},
                       index=pd.Index(np.arange(n), name="user_id"))
    seg = behaviour.rfm_segments(rfm)
    assert seg[["R", "F", "M"]].isin([1, 2, 3, 4, 5]).all().all()
    assert (seg["R"].value_counts() == n // 5).all()
    # the most recent customer scores R=5, the least recent R=1
    assert seg.loc[rfm["recency_days"].idxmin(), "R"] == 5
    assert seg.loc[rfm["recency_days"].idxmax(), "R"] == 1
    champions = seg["segment"] == "champions"
    assert ((seg.loc[champions, "R"] >= 4) & (seg.loc[champions, "F"] >= 4)).all()
    assert set(seg["segment"]) <= {name for name, _ in behaviour.RFM_SEGMENTS}
    flag = pd.Series((rfm["recency_days"] > 200).astype(float), index=rfm.index)
    table = behaviour.segment_profiles(rfm, seg["segment"], flag=flag)
    assert table["customers"].sum() == n
    assert table.loc["hibernating", "flag"] > table.loc["champions", "flag"]
    with pytest.raises(ValueError, match="at least 5"):
        behaviour.rfm_segments(rfm.head(3))
    with pytest.raises(ValueError, match="'monetary'"):
        behaviour.rfm_segments(rfm.drop(columns="monetary"))
    with pytest.raises(ValueError, match="same customer index"):
        behaviour.segment_profiles(rfm, seg["segment"].iloc[1:])


def test_characteristic_items(tiny):
    groups = pd.Series({1: "g1", 2: "g2", 3: "g1"})
    items = behaviour.characteristic_items(tiny, groups, n=1, min_customers=1)
    # item b is bought by users 1 and 3 (both g1) only; c and d by user 2 only
    assert items["g1"] == ["b"]
    assert items["g2"][0] in {"c", "d"}


def test_new_plots():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 300), 0, 1)
    for ax in (plotting.plot_calibration(y, {"m": p}), plotting.plot_gains(y, {"m": p}),
               plotting.plot_gap_distribution(pd.Series(rng.exponential(30, 500))),
               plotting.plot_embedding_map(rng.normal(size=(300, 2)),
                                           pd.Series(y, name="g"))):
        assert ax.has_data()
    rfm = pd.DataFrame({"recency_days": rng.uniform(0, 300, 50),
                        "frequency": rng.integers(1, 9, 50).astype(float),
                        "monetary": rng.uniform(1, 100, 50)})
    axes = plotting.plot_rfm_segments(rfm, behaviour.rfm_segments(rfm)["segment"])
    assert axes[1].patches
    scaling = pd.DataFrame({"model": ["a", "a", "b"], "parameters": [10, 100, 10],
                            "validation NDCG@10": [0.1, 0.2, 0.15]})
    assert plotting.plot_scaling(scaling, "parameters").get_xscale() == "log"
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_embedding_map(np.zeros((3, 3)), pd.Series([1, 2, 3]))
    plt.close("all")


def test_period_retention_by_hand(tiny):
    # first period January: users 1 and 2 (value 12, invoices i1, i4); in Feb-Mar user 1
    # buys i2 and i3 (6), user 2 buys i5 (5): both come back, spending 11 of 12
    out = behaviour.period_retention(tiny, "2011-01-01", "2011-02-01", "2011-04-01")
    assert out["customers"] == 1.0
    assert out["revenue"] == pytest.approx(11 / 12)
    assert out["invoices"] == pytest.approx(3 / 2)
    # February: users 1 and 3; only user 1 buys in March
    out = behaviour.period_retention(tiny, "2011-02-01", "2011-03-01", "2011-04-01")
    assert out["customers"] == 0.5
    assert out["revenue"] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="start < middle < end"):
        behaviour.period_retention(tiny, "2011-03-01", "2011-02-01", "2011-04-01")
    with pytest.raises(ValueError, match="no interactions"):
        behaviour.period_retention(tiny, "2010-01-01", "2010-02-01", "2011-04-01")


def test_basket_overlap_by_hand():
    rows = [  # user 1: {a, b} -> {c} -> {a, c}; user 2: {a} -> {b} -> {a, b, c, d}
        (1, "a", "2011-01-01", "x1", 1.0), (1, "b", "2011-01-01", "x1", 1.0),
        (1, "c", "2011-02-01", "x2", 1.0),
        (1, "a", "2011-03-01", "x3", 1.0), (1, "c", "2011-03-01", "x3", 1.0),
        (2, "a", "2011-01-02", "y1", 1.0), (2, "b", "2011-02-02", "y2", 1.0),
        (2, "a", "2011-03-02", "y3", 1.0), (2, "b", "2011-03-02", "y3", 1.0),
        (2, "c", "2011-03-02", "y3", 1.0), (2, "d", "2011-03-02", "y3", 1.0),
        (3, "a", "2011-01-03", "z1", 1.0), (3, "a", "2011-02-03", "z2", 1.0),  # 2 baskets
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    out = behaviour.basket_overlap(frame.sample(frac=1, random_state=0))  # order from time
    assert list(out.index) == [1, 2]
    assert out.loc[1, "previous"] == 0.5 and out.loc[1, "first"] == 0.5
    assert out.loc[2, "previous"] == 0.25 and out.loc[2, "first"] == 0.25
    frame.loc[frame["invoice"] == "x3", "item_id"] = ["c", "c"]  # a repeated product
    out = behaviour.basket_overlap(frame)
    assert out.loc[1, "previous"] == 1.0 and out.loc[1, "first"] == 0.0
    with pytest.raises(ValueError, match="at least 3"):
        behaviour.basket_overlap(frame, min_baskets=2)
