"""Tests of companion.retention.btyd: the BG/NBD fit against the published CDNOW fit,
parameter recovery
on simulated data, the closed forms against simulation, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from companion.retention import btyd


def _cdnow() -> pd.DataFrame:
    """The CDNOW sample of Fader, Hardie and Lee (2005), as shipped by the ``lifetimes`` package.

    2,357 customers, ``x`` repeat purchases, ``t_x`` and ``T`` in weeks. ``lifetimes`` is a
    test dependency (pyproject's ``test`` extra); only its data file is read, the package
    itself is not imported.
    """
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the test dependency 'lifetimes' is not installed; "
                           "pip install -e '.[test]'.")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "cdnow_customers_summary.csv"
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def cdnow():
    return _cdnow()


def test_fit_recovers_the_published_cdnow_parameters(cdnow):
    assert len(cdnow) == 2357
    model = btyd.BetaGeo().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, abs=0.005), name
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.1)
    # the published parameters themselves give the published log-likelihood
    ll = btyd.log_likelihood(list(published.values()), cdnow["frequency"], cdnow["recency"],
                             cdnow["T"]).sum()
    assert ll == pytest.approx(-9582.4, abs=0.1)


def test_gradient_matches_finite_differences(cdnow):
    x, t_x, big_t = (cdnow[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    theta = np.log([0.3, 5.0, 0.9, 2.0])
    _, grad = btyd._log_likelihood_and_gradient(np.exp(theta), x, t_x, big_t)
    eps = 1e-6
    for k in range(4):
        step = np.zeros(4)
        step[k] = eps
        up = btyd.log_likelihood(np.exp(theta + step), x, t_x, big_t).sum()
        down = btyd.log_likelihood(np.exp(theta - step), x, t_x, big_t).sum()
        assert grad[:, k].sum() == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_fit_recovers_simulated_parameters():
    truth = np.array([0.5, 10.0, 0.7, 3.0])
    ages = np.random.default_rng(0).uniform(30, 80, 20_000)
    sim = btyd.simulate(truth, ages, seed=1)
    model = btyd.BetaGeo().fit(sim["frequency"], sim["recency"], sim["age"])
    # with 20,000 customers the purchase rate is pinned down to a few per cent; the
    # dropout parameters (a, b) less tightly, as in the paper's standard errors
    fitted = model.params_.to_numpy()
    assert np.allclose(fitted[:2], truth[:2], rtol=0.05)
    assert np.allclose(fitted[2:], truth[2:], rtol=0.15)
    # and the mean dropout probability a / (a + b) to a few per cent
    assert fitted[2] / fitted[2:].sum() == pytest.approx(truth[2] / truth[2:].sum(), rel=0.05)


def test_closed_forms_agree_with_simulation():
    truth = [0.5, 10.0, 0.7, 3.0]
    ages = np.random.default_rng(2).uniform(20, 80, 40_000)
    sim = btyd.simulate(truth, ages, horizon=13.0, seed=3)
    model = btyd.BetaGeo()
    model.params_ = pd.Series(truth, index=list(btyd.PARAMETERS))
    args = sim["frequency"], sim["recency"], sim["age"]
    alive = model.p_alive(*args)
    quiet = model.p_no_purchase(13.0, *args)
    assert alive.mean() == pytest.approx(sim["alive"].mean(), abs=0.01)
    assert quiet.mean() == pytest.approx((sim["future"] == 0).mean(), abs=0.01)
    # calibrated within each fifth of predicted churn probability, not only on average
    bins = pd.qcut(quiet, 5, labels=False, duplicates="drop")
    observed = (sim["future"] == 0).groupby(bins).mean()
    predicted = pd.Series(quiet).groupby(bins).mean()
    assert np.abs(observed - predicted).max() < 0.02
    # the no-purchase probability is the likelihood ratio L(x, t_x, T + tau) / L(x, t_x, T)
    ratio = np.exp(btyd.log_likelihood(truth, args[0], args[1], args[2] + 13.0)
                   - btyd.log_likelihood(truth, *args))
    assert np.allclose(quiet, ratio, rtol=1e-9)
    # one-time buyers are alive for sure; P(alive) falls the longer a repeat buyer is silent
    assert (alive[sim["frequency"] == 0] == 1).all()
    p = model.p_alive([3, 3, 3], [10, 10, 10], [12, 30, 60])
    assert p[0] > p[1] > p[2]


def test_rfm_summary_counts_purchase_days():
    rows = [(1, "a", "2011-01-01 09:00", "i1", 1.0), (1, "b", "2011-01-01 15:00", "i2", 1.0),
            (1, "a", "2011-01-11 10:00", "i3", 1.0), (2, "a", "2011-01-05 10:00", "i4", 1.0),
            (3, "a", "2011-02-01 10:00", "i5", 1.0)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    summary = btyd.rfm_summary(frame, "2011-01-21")
    # two invoices on 1 January are one purchase day; customer 3 comes after the cutoff
    assert summary.index.tolist() == [1, 2]
    assert summary.loc[1].tolist() == [1.0, 10.0, 20.0]
    assert summary.loc[2].tolist() == [0.0, 0.0, 16.0]


def test_churn_probability_on_a_shop(interactions):
    cutoff = interactions["timestamp"].min() + pd.Timedelta(days=200)
    scores = btyd.churn_probability(interactions, cutoff, 90)
    assert ((scores["p_churn"] >= 1 - scores["p_alive"] - 1e-12)
            & (scores["p_churn"] <= 1)).all()
    assert set(scores.attrs["model"].params_.index) == set(btyd.PARAMETERS)
    # the future is not read: changing it leaves the scores unchanged
    altered = interactions[interactions["timestamp"] < cutoff]
    again = btyd.churn_probability(altered, cutoff, 90)
    pd.testing.assert_frame_equal(scores, again)
    with pytest.raises(ValueError, match="no purchase before the cutoff"):
        btyd.churn_probability(interactions, cutoff, 90, pd.Index([-1]))


@pytest.mark.parametrize("args, match", [
    (([-1, 0], [0, 0], [5, 5]), "frequency must be >= 0"),
    (([1, 0], [6, 0], [5, 5]), "recency must not exceed age"),
    (([], [], []), "frequency is empty"),
    (([0, 1], [2, 1], [5, 5]), "recency must be 0 when frequency is 0"),
    (([1.5], [1], [5]), "frequency must count purchases"),
    (([1], [1], [0]), "age must be > 0"),
    (([1, 2], [1], [5, 5]), "equal lengths"),
    (([1], [np.nan], [5]), "recency must be finite"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        btyd.BetaGeo().fit(*args)


def test_bad_parameters_and_unfitted():
    with pytest.raises(ValueError, match="four positive numbers"):
        btyd.log_likelihood([1, 1, -1, 1], [1], [1], [2])
    with pytest.raises(RuntimeError, match="not fitted"):
        btyd.BetaGeo().p_alive([1], [1], [2])
    with pytest.raises(ValueError, match="horizon must be > 0"):
        model = btyd.BetaGeo()
        model.params_ = pd.Series([1.0, 1.0, 1.0, 1.0], index=list(btyd.PARAMETERS))
        model.p_no_purchase(0, [1], [1], [2])
    with pytest.raises(ValueError, match="penalty"):
        btyd.BetaGeo(penalty=-1)
