"""Tests of companion.ops.monitoring: PSI, binning, the weekly replay and the alarm rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.ops import monitoring
from companion.recsys import baselines as rec


def test_psi_of_identical_distributions_is_zero():
    assert monitoring.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)


def test_psi_known_value():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * np.log(2) + 0.25 * np.log(1.5)
    assert monitoring.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_psi_is_symmetric_kl_and_nonnegative():
    rng = np.random.default_rng(0)
    e, a = rng.dirichlet(5 * np.ones(6)), rng.dirichlet(5 * np.ones(6))
    kl = np.sum(a * np.log(a / e)) + np.sum(e * np.log(e / a))
    assert monitoring.psi(e, a) == pytest.approx(kl, rel=1e-6)
    assert monitoring.psi(e, a) >= 0


def test_psi_empty_bin_is_finite_and_grows_as_eps_shrinks():
    small = monitoring.psi([5, 5, 0], [4, 4, 2], eps=1e-6)
    large = monitoring.psi([5, 5, 0], [4, 4, 2], eps=1e-2)
    assert np.isfinite(small) and small > large > 0


@pytest.mark.parametrize("args, message", [
    (([1, 2], [1, 2, 3]), "same number of bins"),
    (([0, 0], [1, 2]), "expected is empty"),
    (([1, -1], [1, 2]), "non-negative"),
    (([1], [1]), "two bins"),
])
def test_psi_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        monitoring.psi(*args)


def test_psi_values_detects_a_shift_in_a_continuous_variable():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=5000)
    assert monitoring.psi_values(ref, rng.normal(size=5000)) < 0.02
    assert monitoring.psi_values(ref, rng.normal(1.0, 1.0, size=5000)) > 0.25


def test_histogram_and_quantile_edges():
    edges = monitoring.quantile_edges(np.arange(100), n_bins=4)
    assert np.isinf(edges[0]) and np.isinf(edges[-1]) and len(edges) == 5
    counts = monitoring.histogram(np.arange(100), edges)
    assert counts.sum() == 100 and (counts >= 24).all()
    assert list(monitoring.histogram([1, 2, 3, 5, 100], np.array(monitoring.BASKET_EDGES))) \
        == [1, 2, 1, 0, 0, 0, 1]


def _frame(items, users=None, days=None):
    n = len(items)
    return pd.DataFrame({
        "user_id": users if users is not None else np.arange(n) % 3,
        "item_id": items,
        "timestamp": pd.Timestamp("2011-01-01") + pd.to_timedelta(
            days if days is not None else np.arange(n), unit="D"),
        "invoice": np.arange(n) // 2, "quantity": 1, "value": 1.0})


def test_popularity_bins_have_equal_mass_and_unseen_items_get_the_last_bin():
    train = _frame(["a"] * 6 + ["b"] * 3 + ["c"] * 3)
    bins = monitoring.popularity_bins(train, n_bins=2)
    assert bins["a"] == 0 and bins["b"] == 1 and bins["c"] == 1
    counts = monitoring.popularity_counts(_frame(["a", "b", "z", "z"]), bins)
    assert list(counts) == [1, 1, 2]


def test_basket_sizes_count_distinct_products_per_invoice():
    frame = _frame(["a", "b", "a", "a"])
    assert list(monitoring.basket_sizes(frame)) == [2, 1]
    with pytest.raises(ValueError, match="invoice"):
        monitoring.basket_sizes(frame.drop(columns="invoice"))


def test_weekly_windows_and_first_alarm():
    windows = monitoring.weekly_windows("2011-01-01", "2011-01-20")
    assert len(windows) == 3 and windows[-1][1] == pd.Timestamp("2011-01-20")
    values = pd.Series([0.05, 0.3, 0.05, 0.3, 0.4, np.nan, 0.5])
    assert monitoring.first_alarm(values, 0.25) == 1
    assert monitoring.first_alarm(values, 0.25, consecutive=2) == 4
    assert monitoring.first_alarm(values, 0.9) is None
    with pytest.raises(TypeError, match="Series"):
        monitoring.first_alarm([0.1], 0.1)


def test_replay_on_the_synthetic_shop(interactions):
    cutoff = interactions["timestamp"].min() + pd.Timedelta(days=240)
    result = monitoring.replay(interactions, lambda: rec.RepeatBuy(half_life_days=60), cutoff,
                               weeks=8, retrain_every=4)
    table = result.table
    assert len(table) == 8
    assert {"PSI popularity", "PSI basket size", "PSI scores", "NDCG frozen",
            "unknown items", "unknown customers"} <= set(table.columns)
    assert (table["PSI popularity"].dropna() >= 0).all()
    assert table["NDCG frozen"].dropna().between(0, 1).all()
    # retrained on weeks 4 (not 0), on exactly the frozen model's customers
    assert sorted(result.retrained) == [4]
    assert result.retrained[4].index.equals(result.frozen[4].index)
    est, low, high = result.gap(4, n_boot=200)
    assert low <= est <= high
    with pytest.raises(ValueError, match="no retrained model"):
        result.gap(1)


def test_replay_rejects_a_cutoff_before_the_data(interactions):
    with pytest.raises(ValueError, match="no interactions before"):
        monitoring.replay(interactions, rec.Popularity, "1990-01-01")
