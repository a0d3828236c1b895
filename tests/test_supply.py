"""Tests of companion.apps.supply: forecasters on series with known answers, scores, inventory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.apps import supply


def _lines(rows):
    frame = pd.DataFrame(rows, columns=["invoice", "stock_code", "quantity", "invoice_date",
                                        "customer_id"])
    frame["invoice_date"] = pd.to_datetime(frame["invoice_date"])
    return frame


# ---------------------------------------------------------------- demand


def test_remove_cancelled_orders_matches_whole_orders_only():
    sales = _lines([
        ("1", "A", 10, "2011-01-03", 1),   # cancelled whole 5 days later: removed
        ("2", "A", 10, "2011-01-04", 2),   # other customer: kept
        ("3", "B", 6, "2011-01-05", 1),    # partial return (2 of 6): kept
        ("4", "C", 3, "2011-01-01", 1),    # cancelled after 60 days: kept
    ])
    returns = _lines([
        ("C1", "A", -10, "2011-01-08", 1), ("C2", "B", -2, "2011-01-09", 1),
        ("C3", "C", -3, "2011-03-02", 1),
    ])
    kept, report = supply.remove_cancelled_orders(sales, returns, window_days=30)
    assert list(kept["invoice"]) == ["2", "3", "4"]
    assert report == {"return_lines": 3, "return_units": 15, "matched_lines": 1,
                      "matched_units": 10}


def test_one_cancellation_removes_one_sale():
    sales = _lines([("1", "A", 5, "2011-01-03", 1), ("2", "A", 5, "2011-01-04", 1)])
    returns = _lines([("C1", "A", -5, "2011-01-05", 1)])
    kept, report = supply.remove_cancelled_orders(sales, returns)
    assert list(kept["invoice"]) == ["1"] and report["matched_lines"] == 1


def test_weekly_demand_sums_by_monday_week_and_fills_zeros():
    sales = _lines([
        ("1", "A", 2, "2011-01-03 10:00", 1), ("2", "A", 3, "2011-01-09 18:00", 1),
        ("3", "B", 4, "2011-01-12 00:00", 1), ("4", "A", 1, "2011-01-30 09:00", 1),
    ])
    table = supply.weekly_demand(sales)
    assert list(table.index) == list(pd.to_datetime(["2011-01-03", "2011-01-10",
                                                     "2011-01-17", "2011-01-24"]))
    assert table.loc["2011-01-03", "A"] == 5 and table.loc["2011-01-10", "B"] == 4
    assert table.loc["2011-01-17"].sum() == 0


def test_weekly_demand_drops_partial_edge_weeks():
    sales = _lines([("1", "A", 2, "2011-01-04", 1), ("2", "A", 3, "2011-01-12", 1),
                    ("3", "A", 1, "2011-01-19", 1)])
    table = supply.weekly_demand(sales)
    assert list(table.index) == [pd.Timestamp("2011-01-10")]
    assert len(supply.weekly_demand(sales, full_weeks_only=False)) == 3


def test_weekly_demand_names_missing_column():
    sales = _lines([("1", "A", 2, "2011-01-04", 1)]).drop(columns="quantity")
    with pytest.raises(ValueError, match="quantity"):
        supply.weekly_demand(sales)


def test_demand_lines_keeps_guests_when_asked():
    raw = pd.DataFrame({
        "Invoice": ["1", "2", "C3"], "StockCode": ["A", "A", "A"], "Description": "x",
        "Quantity": [4, 6, -4], "InvoiceDate": pd.to_datetime(["2011-01-03"] * 2
                                                              + ["2011-01-04"]),
        "Price": 1.0, "Customer ID": [1.0, np.nan, 1.0], "Country": "UK"})
    sales, report = supply.demand_lines(raw)
    assert list(sales["invoice"]) == ["2"]
    assert report["guest_units"] == 6 and report["units_sold"] == 10
    without, _ = supply.demand_lines(raw, include_guests=False)
    assert without.empty


def test_top_products_uses_only_the_past():
    weeks = pd.date_range("2011-01-03", periods=10, freq="7D")
    demand = pd.DataFrame({"A": [5] * 10, "B": [1] * 10, "C": [0] * 5 + [100] * 5},
                          index=weeks)
    assert supply.top_products(demand, until=5, n=2) == ["A", "B"]
    with pytest.raises(ValueError, match="only 2 products"):
        supply.top_products(demand, until=5, n=3)


# ---------------------------------------------------------------- forecasters


def test_seasonal_naive_is_exact_on_a_seasonal_series():
    season = 52
    pattern = np.random.default_rng(0).poisson(20, season).astype(float)
    series = np.tile(pattern, 3)
    history, future = series[:120], series[120:124]
    forecast = supply.seasonal_naive(history, 4, season=season)
    assert np.abs(forecast[0] - future).max() == 0
    assert supply.seasonal_coverage(120, 4, season).all()


def test_seasonal_naive_falls_back_to_naive_on_short_history():
    history = np.arange(1.0, 31.0)
    forecast = supply.seasonal_naive(history, 3, season=52)
    assert np.all(forecast == 30.0)
    assert not supply.seasonal_coverage(30, 3, 52).any()


def test_mase_of_naive_on_its_own_scale_is_one():
    y = np.random.default_rng(1).gamma(2.0, 10.0, 60)
    in_sample = supply.mase(y[1:], y[:-1], y, season=1)
    assert in_sample[0] == pytest.approx(1.0)
    seasonal = supply.mase(y[4:], y[:-4], y, season=4)
    assert seasonal[0] == pytest.approx(1.0)


def test_mase_and_smape_known_values():
    history = np.array([[0.0, 2.0, 0.0, 2.0]])  # naive in-sample error 2
    assert supply.mase([[3.0, 5.0]], [[4.0, 4.0]], history)[0] == pytest.approx(0.5)
    assert supply.smape([[0.0, 100.0]], [[0.0, 50.0]])[0] == pytest.approx(
        (0 + 200 * 50 / 150) / 2)
    with pytest.raises(ValueError, match="constant history"):
        supply.mase([[1.0]], [[1.0]], [[3.0, 3.0, 3.0]])


@pytest.mark.parametrize("trend", [False, True])
def test_exponential_smoothing_returns_a_constant(trend):
    history = np.full((2, 30), 7.0)
    history[1] = 3.0
    forecast = supply.exp_smoothing(history, 4, trend=trend)
    assert np.allclose(forecast, [[7.0] * 4, [3.0] * 4])


def test_exponential_smoothing_fits_alpha_to_the_data():
    rng = np.random.default_rng(2)
    walk = 100 + np.cumsum(rng.normal(0, 5, 200))  # a random walk: alpha near 1
    noise = 100 + rng.normal(0, 5, 200)             # white noise: alpha small
    _, params = supply.exp_smoothing(np.vstack([walk, noise]), 1, return_params=True)
    assert params.loc[0, "alpha"] >= 0.8 and params.loc[1, "alpha"] <= 0.2


def test_holt_follows_a_linear_trend():
    history = 10 + 2.0 * np.arange(40)
    forecast = supply.holt_damped(history, 3)[0]
    assert np.all(np.diff(forecast) > 0) and forecast[0] > history[-1]


@pytest.mark.parametrize("fn", [supply.naive, supply.seasonal_naive, supply.ses])
def test_forecasters_reject_bad_input(fn):
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        fn(np.ones(10), -1)
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([1.0, np.nan, 2.0]), 1)
    with pytest.raises(ValueError, match="week"):
        fn(np.ones(0), 1)


def test_smoothing_needs_enough_history():
    with pytest.raises(ValueError, match="at least 3"):
        supply.holt_damped(np.ones(2), 1)


def _toy_demand(products=6, weeks=70, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 80, products)[:, None]
    season = 1 + 0.3 * np.sin(2 * np.pi * np.arange(weeks) / 52)[None, :]
    values = rng.poisson(base * season).astype(float)
    index = pd.date_range("2010-01-04", periods=weeks, freq="7D")
    return pd.DataFrame(values.T, index=index, columns=[f"P{i}" for i in range(products)])


def _week_of_year(index, horizon):
    woy = np.asarray(index.isocalendar().week, dtype=float)
    return np.concatenate([woy, woy[-1] + np.arange(1, horizon + 1)])


def test_gbm_forecaster_fits_and_forecasts():
    demand = _toy_demand()
    woy = _week_of_year(demand.index, 4)
    model = supply.GBMForecaster(horizon=4, window=8, n_estimators=20).fit(
        demand.to_numpy().T, 60, woy)
    out = model(demand.to_numpy().T[:, :61], 4)
    assert out.shape == (6, 4) and np.all(out >= 0)
    assert np.allclose(out, model(demand.to_numpy().T[:, :61], 4))
    with pytest.raises(ValueError, match="horizon=4"):
        model(demand.to_numpy().T, 2)
    with pytest.raises(RuntimeError, match="not fitted"):
        supply.GBMForecaster()(demand.to_numpy().T, 4)


def test_sequence_forecaster_is_seeded_and_survives_pickling():
    import pickle

    demand = _toy_demand()
    woy = _week_of_year(demand.index, 4)
    history = demand.to_numpy().T

    def fit():
        return supply.SequenceForecaster(horizon=4, window=8, units=4, epochs=2,
                                         validation_weeks=4).fit(history, 60, woy)

    first, second = fit(), fit()
    out = first(history[:, :61], 4)
    assert out.shape == (6, 4) and np.all(out >= 0)
    assert np.allclose(out, second(history[:, :61], 4))
    restored = pickle.loads(pickle.dumps(first))
    assert np.allclose(out, restored(history[:, :61], 4))
    with pytest.raises(ValueError, match="beyond"):
        supply.SequenceForecaster(horizon=4, window=8).fit(history, 80, woy)


def test_rolling_origin_and_scores():
    demand = _toy_demand()
    backtest = supply.rolling_origin(demand, {"naive": supply.naive, "snaive":
                                              supply.seasonal_naive}, [60, 62], 4)
    assert len(backtest) == 2 * 2 * 6 * 4
    row = backtest[(backtest["forecaster"] == "naive") & (backtest["origin"] == 60)
                   & (backtest["h"] == 2) & (backtest["stock_code"] == "P0")].iloc[0]
    assert row["actual"] == demand["P0"].iloc[62] and row["forecast"] == demand["P0"].iloc[60]
    scores = supply.score_backtest(backtest, demand)
    assert set(scores.columns) == {"forecaster", "stock_code", "MASE", "sMAPE"}
    diffs = supply.paired_differences(scores, "snaive", n_boot=100)
    assert list(diffs.index) == ["naive"]
    with pytest.raises(ValueError, match="leave no room"):
        supply.rolling_origin(demand, {"naive": supply.naive}, [68], 4)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        supply.rolling_origin(demand, {"naive": supply.naive}, [60], 0)
    with pytest.raises(ValueError, match="missing column"):
        supply.score_backtest(backtest.drop(columns="actual"), demand)


def test_backtest_forecasters_runs_six_forecasters_without_looking_ahead():
    demand = _toy_demand()
    woy = _week_of_year(demand.index, 4)
    small = {"gbm_params": {"window": 8, "n_estimators": 20},
             "gru_params": {"window": 8, "units": 4, "epochs": 2, "validation_weeks": 4}}
    backtest, epochs, n_train = supply.backtest_forecasters(demand, [60, 62], 4, woy,
                                                            **small)
    assert list(backtest["forecaster"].unique()) == ["seasonal naive", "naive", "SES",
                                                     "Holt (damped)", "LightGBM", "GRU"]
    assert len(backtest) == 6 * 2 * 6 * 4 and 1 <= epochs <= 2 and n_train > 0
    naive = supply.rolling_origin(demand, {"naive": supply.naive}, [60, 62], 4)
    np.testing.assert_array_equal(
        backtest.loc[backtest["forecaster"] == "naive", "forecast"], naive["forecast"])
    # weeks after the last origin change the actuals, never a forecast
    later = demand.copy()
    later.iloc[63:] *= 3
    again, _, _ = supply.backtest_forecasters(later, [60, 62], 4, woy, **small)
    np.testing.assert_allclose(again["forecast"], backtest["forecast"], rtol=1e-5)
    assert not np.allclose(again["actual"], backtest["actual"])
    with pytest.raises(ValueError, match="increasing"):
        supply.backtest_forecasters(demand, [62, 60], 4, woy, **small)


# ---------------------------------------------------------------- inventory


@pytest.mark.parametrize("lead_time", [0, 1, 3])
def test_perfect_forecast_gives_full_service_and_safety_stock(lead_time):
    demand = np.full(20, 12.0)
    forecasts = np.full((20, lead_time + 1), 12.0)
    result = supply.simulate_order_up_to(demand, forecasts, 5.0, lead_time=lead_time)
    assert result["fill_rate"] == 1.0 and result["cycle_service"] == 1.0
    assert result["mean_stock"] == pytest.approx(5.0)


def test_underforecast_without_safety_stock_runs_short():
    demand = np.full(10, 10.0)
    result = supply.simulate_order_up_to(demand, np.full((10, 2), 8.0), 0.0, lead_time=1)
    assert result["fill_rate"] < 1.0 and result["cycle_service"] < 1.0
    assert result["mean_stock"] == 0.0


def test_simulation_rejects_bad_input():
    with pytest.raises(ValueError, match="lead_time \\+ 1"):
        supply.simulate_order_up_to(np.ones(5), np.ones((5, 1)), 0.0, lead_time=2)
    with pytest.raises(ValueError, match="lead_time must be >= 0"):
        supply.simulate_order_up_to(np.ones(5), np.ones((5, 1)), 0.0, lead_time=-1)
    with pytest.raises(ValueError, match="non-negative"):
        supply.simulate_order_up_to(-np.ones(5), np.ones((5, 1)), 0.0, lead_time=0)
    with pytest.raises(ValueError, match="z must be"):
        supply.safety_stock(pd.DataFrame({"forecaster": ["a"], "stock_code": ["A"],
                                          "error": [1.0]}), -1.0)


def test_inventory_backtest_end_to_end():
    demand = _toy_demand()
    backtest = supply.rolling_origin(demand, {"naive": supply.naive}, list(range(55, 66)), 4)
    errors = supply.protection_errors(backtest[backtest["origin"] < 60], 3)
    safety = supply.safety_stock(errors, 1.645)
    inv = supply.inventory_backtest(backtest, safety, lead_time=2, origins=range(60, 66))
    assert len(inv) == 6 and inv["weeks"].eq(6).all()
    assert inv["fill_rate"].between(0, 1).all()
    curve = supply.service_curve(backtest, errors, [0.0, 3.0], lead_time=2,
                                 origins=range(60, 66))
    low, high = curve.set_index("z").loc[0.0], curve.set_index("z").loc[3.0]
    assert high["mean_stock"] > low["mean_stock"] and high["fill_rate"] >= low["fill_rate"]
    with pytest.raises(ValueError, match="shorter than"):
        supply.protection_errors(backtest[backtest["h"] == 1], 3)


def test_error_summary_known_values():
    backtest = pd.DataFrame({
        "forecaster": "f", "stock_code": "A", "origin": [1, 1, 2, 2], "h": [1, 2, 1, 2],
        "actual": [10.0, 10.0, 10.0, 10.0], "forecast": [8.0, 8.0, 12.0, 12.0]})
    summary = supply.error_summary(backtest, 2)
    assert summary.loc["f", "bias"] == pytest.approx(0.0)
    assert summary.loc["f", "rms"] == pytest.approx(4.0)


def test_quantile_gbm_covers_about_alpha_and_drives_the_policy():
    demand = _toy_demand(products=8, weeks=80)
    woy = _week_of_year(demand.index, 3)
    history = demand.to_numpy(dtype=float).T
    model = supply.QuantileGBM(weeks=3, alpha=0.9, window=8, n_estimators=100)
    model.fit(history, 60, woy)
    covered = []
    for origin in range(8, 57):
        level = model(history[:, : origin + 1])[:, 0]
        covered.append(history[:, origin + 1: origin + 4].sum(axis=1) <= level)
    assert 0.75 <= np.mean(covered) <= 0.99  # in-sample coverage near alpha
    point = supply.rolling_origin(demand, {"naive": supply.naive}, list(range(60, 72)), 4)
    inv = supply.quantile_inventory(demand, model, point, lead_time=2,
                                    origins=range(60, 72))
    assert len(inv) == 8 and inv["cycle_service"].between(0, 1).all()
    with pytest.raises(ValueError, match="lead_time \\+ 1 = 2"):
        supply.quantile_inventory(demand, model, point, lead_time=1, origins=[60])
    with pytest.raises(ValueError, match="alpha must be"):
        supply.QuantileGBM(alpha=1.5)
