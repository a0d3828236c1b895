"""Weekly demand forecasting and an order-up-to inventory simulation.

Data flow: clean invoice lines (:func:`companion.data.preprocessing.clean_transactions`) →
:func:`remove_cancelled_orders` → :func:`weekly_demand` (a weeks × products table of units)
→ forecasters → :func:`rolling_origin` backtest → :func:`score_backtest` (MASE, sMAPE) and
:func:`simulate_order_up_to` (fill rate, cycle service level, stock held).

Every forecaster has the same signature: ``forecaster(history, horizon)`` takes a
``(products, weeks)`` array of the demand observed up to and including the forecast origin
and returns a ``(products, horizon)`` array of forecasts for the next ``horizon`` weeks.
The global models (:class:`GBMForecaster`, :class:`SequenceForecaster`) are fitted once on
the weeks before the first origin and are then called in the same way.
:class:`QuantileGBM` forecasts a quantile of demand over the protection interval instead,
which :func:`quantile_inventory` uses directly as the order-up-to level.

**Why one module.** Forecasting and the inventory policy are one study: the inventory
simulation is how the forecasts are scored, and both read the same weeks × products demand
table and the same rolling-origin backtest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_positive_int
from companion._optional import require
from companion.data.preprocessing import clean_transactions
from companion.exceptions import not_fitted
from companion.foundations.evaluation import bootstrap_ci

Forecaster = Callable[[np.ndarray, int], np.ndarray]

#: Columns :func:`weekly_demand` needs in the clean sales lines.
SALES_SCHEMA = {"stock_code": "string", "quantity": "integer", "invoice_date": "datetime"}
#: Columns :func:`remove_cancelled_orders` needs (sales and returns alike).
ORDER_SCHEMA = {**SALES_SCHEMA, "customer_id": "integer"}


# --------------------------------------------------------------------------------------
# Demand
# --------------------------------------------------------------------------------------

def remove_cancelled_orders(
    sales: pd.DataFrame, returns: pd.DataFrame, *, window_days: int = 30
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop sale lines that a later cancellation reverses exactly.

    A cancellation line (negative quantity) *matches* a sale line of the same customer and
    product with the same absolute quantity, made at most ``window_days`` before it. Each
    cancellation removes at most one sale (the latest matching one) and each sale is
    removed at most once. Such an order was cancelled whole, so its units never left the
    shop and are not demand. Cancellations that match no sale (partial returns, or goods
    bought before the data starts) are *not* subtracted: a return is stock coming back,
    not negative demand.

    Returns
    -------
    (kept sales, report)
        The report counts ``return_lines``, ``return_units``, ``matched_lines`` and
        ``matched_units`` (units of the removed sales).
    """
    sales = check_frame(sales, ORDER_SCHEMA, name="sales")
    returns_checked = (check_frame(returns, ORDER_SCHEMA, name="returns")
                       if len(returns) else returns)
    check_positive_int(window_days, name="window_days", minimum=0)
    report = {"return_lines": len(returns), "return_units": 0, "matched_lines": 0,
              "matched_units": 0}
    if not len(returns):
        return sales, report
    returns = returns_checked
    report["return_units"] = int(-returns["quantity"].clip(upper=0).sum())
    keys = ["customer_id", "stock_code", "units"]
    s = sales[["customer_id", "stock_code", "quantity", "invoice_date"]].assign(
        units=sales["quantity"].abs(), sale_row=np.arange(len(sales)))
    r = returns[["customer_id", "stock_code", "quantity", "invoice_date"]].assign(
        units=returns["quantity"].abs(), return_row=np.arange(len(returns)))
    pairs = s.merge(r, on=keys, suffixes=("_sale", "_return"))
    lag = pairs["invoice_date_return"] - pairs["invoice_date_sale"]
    pairs = pairs[(lag >= pd.Timedelta(0)) & (lag <= pd.Timedelta(days=window_days))]
    pairs = pairs.sort_values(["return_row", "invoice_date_sale"], ascending=[True, False])
    used: set[int] = set()
    done: set[int] = set()
    for return_row, sale_row in zip(pairs["return_row"].tolist(), pairs["sale_row"].tolist(),
                                    strict=True):
        if return_row not in done and sale_row not in used:
            used.add(sale_row)
            done.add(return_row)
    drop = np.zeros(len(sales), dtype=bool)
    drop[list(used)] = True
    report["matched_lines"] = int(drop.sum())
    report["matched_units"] = int(sales["quantity"].to_numpy()[drop].sum())
    return sales[~drop].reset_index(drop=True), report


GUEST_ID = -1


def demand_lines(raw: pd.DataFrame, *, include_guests: bool = True,
                 window_days: int = 30) -> tuple[pd.DataFrame, dict[str, float]]:
    """Clean raw invoice lines into the sale lines that count as demand.

    The book's cleaning (:func:`companion.data.preprocessing.clean_transactions`) drops lines
    without a customer, which is right for retention but not for demand: a guest's
    purchase empties the shelf as well. With ``include_guests`` those lines get the
    customer id :data:`GUEST_ID` before cleaning, so every other rule still applies to
    them. Whole-order cancellations are then removed (:func:`remove_cancelled_orders`).

    Returns the sale lines and a report: ``units_sold`` (after cleaning, before removing
    cancelled orders), ``guest_units``, and the counts of :func:`remove_cancelled_orders`.
    """
    if not isinstance(raw, pd.DataFrame):
        raise TypeError(f"raw must be a pandas DataFrame, got {type(raw).__name__}.")
    column = "CustomerID" if "CustomerID" in raw.columns else "Customer ID"
    if include_guests and column in raw.columns:
        raw = raw.assign(**{column: raw[column].fillna(GUEST_ID)})
    clean = clean_transactions(raw)
    sales, report = remove_cancelled_orders(clean.transactions, clean.returns,
                                            window_days=window_days)
    guests = clean.transactions["customer_id"] == GUEST_ID
    report = {"units_sold": int(clean.transactions["quantity"].sum()),
              "guest_units": int(clean.transactions.loc[guests, "quantity"].sum()), **report}
    return sales, report


def weekly_demand(sales: pd.DataFrame, *, full_weeks_only: bool = True) -> pd.DataFrame:
    """Units sold per week (rows, Monday start dates) and product (columns).

    Weeks run Monday to Sunday. Weeks without a sale of a product hold 0, and weeks in
    which the shop sold nothing at all (the Christmas closure) are kept as rows of zeros.
    With ``full_weeks_only`` the first and last week are dropped when the data do not
    cover all seven of their days.
    """
    sales = check_frame(sales, SALES_SCHEMA, name="sales")
    week = sales["invoice_date"].dt.to_period("W-SUN").dt.start_time
    table = (sales.assign(week=week)
             .pivot_table(index="week", columns="stock_code", values="quantity",
                          aggfunc="sum", fill_value=0))
    weeks = pd.date_range(table.index.min(), table.index.max(), freq="7D")
    table = table.reindex(weeks, fill_value=0)
    if full_weeks_only:
        first, last = sales["invoice_date"].min(), sales["invoice_date"].max()
        if first.normalize() > weeks[0]:
            table = table.iloc[1:]
        if last.normalize() < weeks[-1] + pd.Timedelta(days=6):
            table = table.iloc[:-1]
    table.index.name = "week"
    table.columns.name = "stock_code"
    return table.astype("int64")


def top_products(demand: pd.DataFrame, *, until: int, n: int = 100,
                 min_presence: float = 0.9) -> list[str]:
    """The ``n`` best-selling products among those sold in most weeks before ``until``.

    Only rows ``0 .. until - 1`` are read, so the choice uses no information from the
    held-out weeks. A product qualifies when it sold in at least ``min_presence`` of the
    weeks in which the shop sold anything.
    """
    check_positive_int(n, name="n")
    check_positive_int(until, name="until", minimum=2)
    if not 0 < min_presence <= 1:
        raise ValueError(f"min_presence must be in (0, 1], got {min_presence}.")
    past = demand.iloc[:until]
    open_weeks = past.sum(axis=1) > 0
    presence = (past[open_weeks] > 0).mean()
    eligible = presence[presence >= min_presence].index
    ranked = past[eligible].sum().sort_values(ascending=False, kind="stable")
    if len(ranked) < n:
        raise ValueError(f"only {len(ranked)} products sold in at least {min_presence:.0%} "
                         f"of weeks before row {until}; asked for n={n}.")
    return list(ranked.index[:n])


# --------------------------------------------------------------------------------------
# Checks shared by the forecasters
# --------------------------------------------------------------------------------------

def _history(history: object, horizon: object, *, min_weeks: int = 1) -> np.ndarray:
    check_positive_int(horizon, name="horizon")
    y = np.asarray(history, dtype=float)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2:
        raise ValueError(f"history must be 1-D or (products, weeks), got shape {y.shape}.")
    if y.shape[1] < min_weeks:
        raise ValueError(f"history has {y.shape[1]} week(s); this forecaster needs at "
                         f"least {min_weeks}.")
    if not np.isfinite(y).all():
        raise ValueError("history holds NaN or infinite values.")
    return y


# --------------------------------------------------------------------------------------
# Local forecasters
# --------------------------------------------------------------------------------------

def naive(history: object, horizon: int) -> np.ndarray:
    """Repeat the last observed week."""
    y = _history(history, horizon)
    return np.repeat(y[:, -1:], horizon, axis=1)


def seasonal_naive(history: object, horizon: int, season: int = 52) -> np.ndarray:
    """The value one season earlier; the naive forecast where the history is shorter.

    Week ``T + h`` is forecast by week ``T + h - season`` when that week is observed
    (``T + h - season < T`` and ``>= 0``); otherwise by the last observed week.
    :func:`seasonal_coverage` says which horizons used the season.
    """
    y = _history(history, horizon)
    check_positive_int(season, name="season")
    weeks = y.shape[1]
    out = np.empty((y.shape[0], horizon))
    for h in range(1, horizon + 1):
        src = weeks - 1 + h - season
        out[:, h - 1] = y[:, src] if 0 <= src < weeks else y[:, -1]
    return out


def seasonal_coverage(weeks: int, horizon: int, season: int = 52) -> np.ndarray:
    """Booleans per horizon: does :func:`seasonal_naive` use the season at this length?"""
    h = np.arange(1, horizon + 1)
    src = weeks - 1 + h - season
    return (src >= 0) & (src < weeks)


def _smooth(y: np.ndarray, alpha: np.ndarray, beta: np.ndarray, phi: np.ndarray):
    """Run damped-trend Holt smoothing; arrays broadcast as (grid, products).

    Returns the one-step squared errors summed over time and the final level and trend.
    """
    level = np.broadcast_to(y[:, 0], np.broadcast(alpha, y[:, 0]).shape).astype(float)
    trend = np.zeros_like(level)
    sse = np.zeros_like(level)
    for t in range(1, y.shape[1]):
        pred = level + phi * trend
        err = y[:, t] - pred
        sse = sse + err**2
        new_level = pred + alpha * err
        trend = phi * trend + beta * (new_level - level - phi * trend)
        level = new_level
    return sse, level, trend


#: Smoothing parameters searched when fitting (one-step squared error on the history).
ALPHAS = np.round(np.arange(0.05, 1.0001, 0.05), 2)
BETAS = np.array([0.01, 0.05, 0.1, 0.2])
PHIS = np.array([0.8, 0.9, 0.98])


def exp_smoothing(history: object, horizon: int, *, trend: bool = False,
                  return_params: bool = False):
    """Simple (``trend=False``) or damped-trend Holt exponential smoothing.

    Parameters are fitted per product by a grid search minimising the one-step-ahead
    squared error over the history (:data:`ALPHAS`, and :data:`BETAS`, :data:`PHIS` for
    the trend). The level starts at the first observation and the trend at zero. Forecast
    ``h`` is ``level + (phi + ... + phi**h) * trend``.

    Returns the ``(products, horizon)`` forecasts, and with ``return_params`` also a frame
    of the fitted ``alpha``, ``beta`` and ``phi`` per product.
    """
    y = _history(history, horizon, min_weeks=3 if trend else 2)
    if trend:
        a, b, p = np.meshgrid(ALPHAS, BETAS, PHIS, indexing="ij")
        a, b, p = a.ravel(), b.ravel(), p.ravel()
    else:
        a, b, p = ALPHAS, np.zeros_like(ALPHAS), np.ones_like(ALPHAS)
    sse, level, tr = _smooth(y, a[:, None], b[:, None], p[:, None])
    best = np.argmin(sse, axis=0)
    cols = np.arange(y.shape[0])
    level, tr = level[best, cols], tr[best, cols]
    damp = np.cumsum(p[best][:, None] ** np.arange(1, horizon + 1)[None, :], axis=1)
    out = level[:, None] + damp * tr[:, None]
    if return_params:
        params = pd.DataFrame({"alpha": a[best], "beta": b[best], "phi": p[best]})
        return out, params
    return out


def ses(history: object, horizon: int) -> np.ndarray:
    """Simple exponential smoothing with alpha fitted on the history."""
    return exp_smoothing(history, horizon, trend=False)


def holt_damped(history: object, horizon: int) -> np.ndarray:
    """Damped-trend Holt smoothing with alpha, beta and phi fitted on the history."""
    return exp_smoothing(history, horizon, trend=True)


# --------------------------------------------------------------------------------------
# Global models: features on scaled windows
# --------------------------------------------------------------------------------------

def _scale(y: np.ndarray, window: int) -> np.ndarray:
    """Per-product scale at the origin: 1 + the mean of the last ``window`` weeks."""
    return 1.0 + y[:, -window:].mean(axis=1)


def window_features(history: np.ndarray, horizon: int, week_of_year: np.ndarray, *,
                    window: int = 16, season: int = 52) -> tuple[np.ndarray, np.ndarray]:
    """Scale-free features of every product at the origin (the last column of history).

    Returns ``(window, side)``: the last ``window`` weeks divided by the product's scale
    (``1 +`` their mean), shape ``(products, window)``, and side features of shape
    ``(products, horizon, 6)`` for each target week: the scaled value one season earlier
    (0 where unobserved), an indicator that it was observed, the sine and cosine of the
    target's week of year, the horizon divided by ``horizon``, and the log of the scale.
    ``week_of_year`` gives the week of year of every column of history plus ``horizon``
    more.
    """
    y = _history(history, horizon, min_weeks=window)
    weeks = y.shape[1]
    if len(week_of_year) < weeks + horizon:
        raise ValueError(f"week_of_year has {len(week_of_year)} entries; need "
                         f"{weeks + horizon} (the history plus the horizon).")
    scale = _scale(y, window)
    win = y[:, -window:] / scale[:, None]
    side = np.zeros((y.shape[0], horizon, 6))
    for h in range(1, horizon + 1):
        src = weeks - 1 + h - season
        seen = 0 <= src < weeks
        side[:, h - 1, 0] = y[:, src] / scale if seen else 0.0
        side[:, h - 1, 1] = float(seen)
        angle = 2 * np.pi * week_of_year[weeks - 1 + h] / 52.18
        side[:, h - 1, 2] = np.sin(angle)
        side[:, h - 1, 3] = np.cos(angle)
        side[:, h - 1, 4] = h / horizon
    side[:, :, 5] = np.log(scale)[:, None]
    return win, side


def _training_windows(demand: np.ndarray, last_week: int, horizon: int,
                      week_of_year: np.ndarray, window: int):
    """All (origin, product) training examples whose targets end by ``last_week``."""
    wins, sides, targets, scales = [], [], [], []
    for origin in range(window - 1, last_week - horizon + 1):
        hist = demand[:, : origin + 1]
        win, side = window_features(hist, horizon, week_of_year, window=window)
        scale = _scale(hist, window)
        wins.append(win)
        sides.append(side)
        targets.append(demand[:, origin + 1: origin + 1 + horizon] / scale[:, None])
        scales.append(scale)
    if not wins:
        raise ValueError(f"no training window fits: last_week={last_week} must be at least "
                         f"window + horizon - 1 = {window + horizon - 1}.")
    return (np.concatenate(wins), np.concatenate(sides), np.concatenate(targets),
            np.concatenate(scales))


class _GlobalModel:
    """Common fitting checks of the two global models."""

    window: int
    horizon: int

    def _check_fit(self, demand: object, last_week: int, week_of_year: object):
        y = _history(demand, self.horizon, min_weeks=2)
        check_positive_int(self.window, name="window", minimum=2)
        week_of_year = np.asarray(week_of_year, dtype=float)
        last_week = check_positive_int(last_week, name="last_week")
        if last_week >= y.shape[1]:
            raise ValueError(f"last_week={last_week} is beyond the {y.shape[1]} weeks given.")
        self.week_of_year_ = week_of_year
        return y[:, : last_week + 1]

    def __call__(self, history: object, horizon: int) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise not_fitted(self)
        if horizon != self.horizon:
            raise ValueError(f"this model was fitted for horizon={self.horizon}, "
                             f"got {horizon}.")
        y = _history(history, horizon, min_weeks=self.window)
        win, side = window_features(y, horizon, self.week_of_year_, window=self.window)
        scaled = self._predict(win, side)
        return np.clip(scaled * _scale(y, self.window)[:, None], 0, None)


class GBMForecaster(_GlobalModel):
    """One LightGBM model for all products and horizons, on lags and calendar features.

    Each example is a (product, origin, horizon) triple; the features are the scaled
    last ``window`` weeks, the mean of the last 4 and 13 of them, and the side features of
    :func:`window_features`; the target is the scaled demand ``h`` weeks ahead. The loss
    is the absolute error (``objective="l1"``), whose minimiser, the median, is what MASE
    rewards.
    """

    def __init__(self, horizon: int = 4, window: int = 16, n_estimators: int = 300,
                 learning_rate: float = 0.05, num_leaves: int = 15, seed: int = 0) -> None:
        self.horizon, self.window, self.n_estimators = horizon, window, n_estimators
        self.learning_rate, self.num_leaves, self.seed = learning_rate, num_leaves, seed

    def _rows(self, win: np.ndarray, side: np.ndarray) -> np.ndarray:
        n, horizon = side.shape[0], side.shape[1]
        means = np.stack([win[:, -4:].mean(1), win[:, -13:].mean(1)], axis=1)
        base = np.concatenate([win, means], axis=1)
        base = np.repeat(base[:, None, :], horizon, axis=1)
        return np.concatenate([base, side], axis=2).reshape(n * horizon, -1)

    def fit(self, demand: object, last_week: int, week_of_year: object) -> GBMForecaster:
        """Fit on every origin whose targets fall in columns ``0 .. last_week``."""
        lgb = require("lightgbm", "rank")

        y = self._check_fit(demand, last_week, week_of_year)
        win, side, target, _ = _training_windows(y, last_week, self.horizon,
                                                 self.week_of_year_, self.window)
        self.model_ = lgb.LGBMRegressor(
            objective="l1", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=20, subsample=0.8,
            subsample_freq=1, colsample_bytree=0.8, random_state=self.seed, n_jobs=1,
            deterministic=True, force_row_wise=True, verbose=-1)
        self.model_.fit(self._rows(win, side), target.ravel())
        self.n_train_ = int(target.size)
        return self

    def _predict(self, win: np.ndarray, side: np.ndarray) -> np.ndarray:
        return self.model_.predict(self._rows(win, side)).reshape(side.shape[0], -1)


class QuantileGBM(GBMForecaster):
    """LightGBM for a high quantile of total demand over the next ``weeks`` weeks.

    Instead of a point forecast plus a safety stock, this model is trained directly for
    what an order-up-to policy needs: the ``alpha`` quantile of demand over the
    protection interval (lead time plus review period). Its features are those of
    :class:`GBMForecaster` with the side features of every week of the interval side by
    side; its target is the scaled total; its loss is LightGBM's quantile (pinball) loss.
    Calling it returns a ``(products, 1)`` array of quantiles in units.
    """

    def __init__(self, weeks: int = 3, alpha: float = 0.95, window: int = 16,
                 n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 15, seed: int = 0) -> None:
        super().__init__(horizon=weeks, window=window, n_estimators=n_estimators,
                         learning_rate=learning_rate, num_leaves=num_leaves, seed=seed)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
        self.alpha = alpha

    def _rows(self, win: np.ndarray, side: np.ndarray) -> np.ndarray:
        means = np.stack([win[:, -4:].mean(1), win[:, -13:].mean(1)], axis=1)
        return np.concatenate([win, means, side.reshape(len(side), -1)], axis=1)

    def fit(self, demand: object, last_week: int, week_of_year: object) -> QuantileGBM:
        """Fit on every origin whose interval ends by column ``last_week``."""
        lgb = require("lightgbm", "rank")

        y = self._check_fit(demand, last_week, week_of_year)
        win, side, target, _ = _training_windows(y, last_week, self.horizon,
                                                 self.week_of_year_, self.window)
        self.model_ = lgb.LGBMRegressor(
            objective="quantile", alpha=self.alpha, n_estimators=self.n_estimators,
            learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_child_samples=20, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
            random_state=self.seed, n_jobs=1, deterministic=True, force_row_wise=True,
            verbose=-1)
        self.model_.fit(self._rows(win, side), target.sum(axis=1))
        self.n_train_ = int(len(target))
        return self

    def _predict(self, win: np.ndarray, side: np.ndarray) -> np.ndarray:
        return self.model_.predict(self._rows(win, side))[:, None]

    def __call__(self, history: object, horizon: int | None = None) -> np.ndarray:
        """The ``alpha`` quantile of the next ``weeks`` weeks' total, per product."""
        return super().__call__(history, self.horizon if horizon is None else horizon)


class SequenceForecaster(_GlobalModel):
    """One small Keras GRU for all products: scaled window in, all horizons out.

    A GRU reads the scaled last ``window`` weeks; its state is joined with the flattened
    side features of :func:`window_features` (last year's values, week of year) and a
    dense layer gives the ``horizon`` scaled forecasts at once. Trained with the absolute
    error, Adam, and early stopping on the last ``validation_weeks`` origins before
    ``last_week`` (best weights restored).
    """

    def __init__(self, horizon: int = 4, window: int = 16, units: int = 32,
                 epochs: int = 40, batch_size: int = 128, learning_rate: float = 3e-3,
                 validation_weeks: int = 6, patience: int = 5, seed: int = 0) -> None:
        self.horizon, self.window, self.units, self.epochs = horizon, window, units, epochs
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.validation_weeks, self.patience, self.seed = validation_weeks, patience, seed

    def fit(self, demand: object, last_week: int, week_of_year: object) -> SequenceForecaster:
        """Fit on every origin whose targets fall in columns ``0 .. last_week``."""
        keras = require("keras", "deep")

        from companion.foundations.keras_helpers import seed_everything

        check_positive_int(self.epochs, name="epochs")
        y = self._check_fit(demand, last_week, week_of_year)
        win, side, target, _ = _training_windows(y, last_week, self.horizon,
                                                 self.week_of_year_, self.window)
        n_products = y.shape[0]
        n_val = n_products * self.validation_weeks
        if n_val >= len(target):
            raise ValueError("validation_weeks leaves no training windows.")
        seed_everything(self.seed)
        w_in = keras.Input(shape=(self.window, 1))
        s_in = keras.Input(shape=(side.shape[1] * side.shape[2],))
        h = keras.layers.GRU(self.units, seed=self.seed)(w_in)
        h = keras.layers.concatenate([h, s_in])
        h = keras.layers.Dense(self.units, activation="relu", kernel_initializer="he_normal")(h)
        out = keras.layers.Dense(self.horizon)(h)
        self.model_ = keras.Model([w_in, s_in], out)
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mae")
        x = [win[..., None].astype(np.float32),
             side.reshape(len(side), -1).astype(np.float32)]
        t = target.astype(np.float32)
        tr = slice(0, len(t) - n_val)
        va = slice(len(t) - n_val, len(t))
        stop = keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True)
        hist = self.model_.fit([x[0][tr], x[1][tr]], t[tr],
                               validation_data=([x[0][va], x[1][va]], t[va]),
                               epochs=self.epochs, batch_size=self.batch_size, verbose=0,
                               shuffle=True, callbacks=[stop])
        self.history_ = pd.DataFrame(hist.history)
        self.n_train_ = int(len(t) - n_val)
        return self

    def _predict(self, win: np.ndarray, side: np.ndarray) -> np.ndarray:
        x = [win[..., None].astype(np.float32),
             side.reshape(len(side), -1).astype(np.float32)]
        return np.asarray(self.model_(x, training=False), dtype=float)

    def __getstate__(self):
        """Pickle the weights and the architecture's settings, not the Keras graph."""
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            state["weights_"] = model.get_weights()
            state["side_dim_"] = int(model.inputs[1].shape[-1])
        return state

    def __setstate__(self, state):
        weights = state.pop("weights_", None)
        side_dim = state.pop("side_dim_", None)
        self.__dict__.update(state)
        if weights is not None:
            keras = require("keras", "deep")

            w_in = keras.Input(shape=(self.window, 1))
            s_in = keras.Input(shape=(side_dim,))
            h = keras.layers.GRU(self.units)(w_in)
            h = keras.layers.concatenate([h, s_in])
            h = keras.layers.Dense(self.units, activation="relu")(h)
            out = keras.layers.Dense(self.horizon)(h)
            self.model_ = keras.Model([w_in, s_in], out)
            self.model_.set_weights(weights)


# --------------------------------------------------------------------------------------
# Backtest and scores
# --------------------------------------------------------------------------------------

def rolling_origin(demand: pd.DataFrame, forecasters: Mapping[str, Forecaster],
                   origins: Sequence[int], horizon: int, *,
                   progress: bool = False) -> pd.DataFrame:
    """Forecast from every origin with every forecaster, using only the weeks up to it.

    ``origins`` are row positions in ``demand``: the forecaster sees rows
    ``0 .. origin`` and forecasts rows ``origin + 1 .. origin + horizon``, all of which
    must exist. Returns a long frame with columns ``forecaster, stock_code, origin, h,
    week, actual, forecast``; forecasts are clipped at zero.
    """
    check_positive_int(horizon, name="horizon")
    values = np.asarray(demand, dtype=float)
    origins = [int(o) for o in origins]
    if not origins:
        raise ValueError("origins is empty.")
    bad = [o for o in origins if o < 1 or o + horizon >= len(demand)]
    if bad:
        raise ValueError(f"origins {bad[:3]} leave no room: each needs 1 <= origin and "
                         f"origin + horizon <= {len(demand) - 1}.")
    products = np.asarray(demand.columns)
    parts = []
    iterator = origins
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(origins, desc="origins")
    for origin in iterator:
        hist = values[: origin + 1].T
        actual = values[origin + 1: origin + 1 + horizon].T
        for name, fn in forecasters.items():
            fc = np.clip(np.asarray(fn(hist, horizon), dtype=float), 0, None)
            if fc.shape != actual.shape:
                raise ValueError(f"forecaster {name!r} returned shape {fc.shape}, "
                                 f"expected {actual.shape}.")
            parts.append(pd.DataFrame({
                "forecaster": name,
                "stock_code": np.repeat(products, horizon),
                "origin": origin,
                "h": np.tile(np.arange(1, horizon + 1), len(products)),
                "week": np.tile(demand.index[origin + 1: origin + 1 + horizon], len(products)),
                "actual": actual.ravel(),
                "forecast": fc.ravel(),
            }))
    return pd.concat(parts, ignore_index=True)


def backtest_forecasters(demand: pd.DataFrame, origins: Sequence[int], horizon: int,
                         week_of_year: object, *, seed: int = 0,
                         gbm_params: Mapping | None = None,
                         gru_params: Mapping | None = None
                         ) -> tuple[pd.DataFrame, int, int]:
    """Chapter 6.7's backtest: six forecasters from every origin (:func:`rolling_origin`).

    The two global models, :class:`GBMForecaster` and :class:`SequenceForecaster`, are
    fitted once on the weeks up to the first origin; seasonal naive, naive, SES and
    damped Holt are refitted at every origin.

    Parameters
    ----------
    demand
        Weekly demand, weeks x products (:func:`weekly_demand`).
    origins
        Row positions of the forecast origins, in increasing order.
    horizon
        Weeks forecast from each origin.
    week_of_year
        Week of the year of every row of ``demand`` and of the ``horizon`` weeks after.
    seed
        Seed of both global models.
    gbm_params, gru_params
        Further settings of :class:`GBMForecaster` and :class:`SequenceForecaster`.

    Returns
    -------
    backtest, gru_epochs, n_train
        The long frame of :func:`rolling_origin` (forecasters ``seasonal naive``,
        ``naive``, ``SES``, ``Holt (damped)``, ``LightGBM``, ``GRU``), the epochs the GRU
        trained, and its number of training windows.
    """
    if not isinstance(demand, pd.DataFrame):
        raise TypeError(f"demand must be a DataFrame of weeks x products, got "
                        f"{type(demand).__name__}.")
    origins = list(origins)
    if not origins:
        raise ValueError("origins is empty.")
    if origins != sorted(origins):
        raise ValueError(f"origins must be in increasing order, got {origins[:5]}...")
    history = demand.to_numpy(dtype=float).T
    gbm = GBMForecaster(horizon=horizon, seed=seed, **dict(gbm_params or {}))
    gbm.fit(history, origins[0], week_of_year)
    gru = SequenceForecaster(horizon=horizon, seed=seed, **dict(gru_params or {}))
    gru.fit(history, origins[0], week_of_year)
    forecasters = {"seasonal naive": seasonal_naive,
                   "naive": naive, "SES": ses,
                   "Holt (damped)": holt_damped,
                   "LightGBM": gbm, "GRU": gru}
    frame = rolling_origin(demand, forecasters, origins, horizon,
                           progress=False)
    return frame, len(gru.history_), gru.n_train_


def naive_scale(history: object, season: int = 1) -> np.ndarray:
    """In-sample mean absolute error of the (seasonal) naive forecast, per product.

    This is the denominator of MASE: ``mean |y_t - y_{t-season}|`` over the history.
    """
    y = _history(history, 1, min_weeks=season + 1)
    return np.abs(y[:, season:] - y[:, :-season]).mean(axis=1)


def mase(actual: object, forecast: object, history: object, season: int = 1) -> np.ndarray:
    """Mean absolute scaled error per product (Hyndman & Koehler, 2006).

    The mean absolute error of the forecasts divided by the in-sample mean absolute error
    of the naive forecast with lag ``season`` on ``history``. ``actual`` and ``forecast``
    are ``(products, horizon)`` (or 1-D for one product). Raises when the scale is zero.
    """
    a = np.atleast_2d(np.asarray(actual, dtype=float))
    f = np.atleast_2d(np.asarray(forecast, dtype=float))
    if a.shape != f.shape:
        raise ValueError(f"actual {a.shape} and forecast {f.shape} differ in shape.")
    scale = naive_scale(history, season)
    if len(scale) != a.shape[0]:
        raise ValueError(f"history has {len(scale)} products, actual has {a.shape[0]}.")
    if np.any(scale == 0):
        raise ValueError("the naive in-sample error is zero (a constant history): MASE is "
                         "undefined.")
    return np.abs(a - f).mean(axis=1) / scale


def smape(actual: object, forecast: object) -> np.ndarray:
    """Symmetric MAPE in percent, ``200 |a - f| / (|a| + |f|)``, averaged per row.

    Terms where both actual and forecast are zero count as zero error.
    """
    a = np.atleast_2d(np.asarray(actual, dtype=float))
    f = np.atleast_2d(np.asarray(forecast, dtype=float))
    if a.shape != f.shape:
        raise ValueError(f"actual {a.shape} and forecast {f.shape} differ in shape.")
    denom = np.abs(a) + np.abs(f)
    terms = np.where(denom > 0, 200 * np.abs(a - f) / np.where(denom > 0, denom, 1), 0.0)
    return terms.mean(axis=1)


def score_backtest(backtest: pd.DataFrame, demand: pd.DataFrame, *,
                   season: int = 1) -> pd.DataFrame:
    """MASE and sMAPE per forecaster and product, averaged over origins and horizons.

    The MASE scale of each (product, origin) is the in-sample naive error (lag
    ``season``) on the weeks up to that origin. Returns columns ``forecaster,
    stock_code, MASE, sMAPE``.
    """
    need = {"forecaster", "stock_code", "origin", "actual", "forecast"}
    missing = need - set(backtest.columns)
    if missing:
        raise ValueError(f"backtest is missing column(s) {sorted(missing)}.")
    values = np.asarray(demand, dtype=float)
    col = {c: i for i, c in enumerate(demand.columns)}
    scales = {}
    for origin in backtest["origin"].unique():
        scales[origin] = naive_scale(values[: origin + 1].T, season)
    frame = backtest.assign(
        scale=[scales[o][col[c]] for o, c in zip(backtest["origin"], backtest["stock_code"],
                                                   strict=True)])
    if (frame["scale"] == 0).any():
        raise ValueError("a product has a zero naive in-sample error: MASE is undefined.")
    frame["ase"] = (frame["actual"] - frame["forecast"]).abs() / frame["scale"]
    frame["sape"] = smape(frame["actual"].to_numpy()[:, None],
                          frame["forecast"].to_numpy()[:, None])
    return (frame.groupby(["forecaster", "stock_code"], sort=False)
            .agg(MASE=("ase", "mean"), sMAPE=("sape", "mean")).reset_index())


def paired_differences(scores: pd.DataFrame, baseline: str, metric: str = "MASE", *,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean difference of ``metric`` against ``baseline`` over products, with a 95% interval.

    Products are resampled with replacement (paired: the same products for both
    forecasters). Negative differences favour the forecaster over the baseline.
    """
    wide = scores.pivot(index="stock_code", columns="forecaster", values=metric)
    if baseline not in wide.columns:
        raise ValueError(f"baseline {baseline!r} is not among {list(wide.columns)}.")
    rows = {}
    for name in wide.columns:
        if name == baseline:
            continue
        diff = (wide[name] - wide[baseline]).to_numpy()
        est, low, high = bootstrap_ci(np.mean, diff, n_boot=n_boot, seed=seed)
        rows[name] = {"difference": est, "low": low, "high": high,
                      "share of products better": float((diff < 0).mean())}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------

def protection_errors(backtest: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """Error of the forecast of total demand over the next ``weeks`` weeks, per origin.

    From a :func:`rolling_origin` frame: for each forecaster, product and origin, the sum
    of actual minus the sum of forecasts over horizons ``1 .. weeks``.
    """
    check_positive_int(weeks, name="weeks")
    if backtest["h"].max() < weeks:
        raise ValueError(f"the backtest's horizon {backtest['h'].max()} is shorter than "
                         f"the protection interval of {weeks} weeks.")
    part = backtest[backtest["h"] <= weeks]
    sums = part.groupby(["forecaster", "stock_code", "origin"], sort=False)[
        ["actual", "forecast"]].sum()
    return (sums["actual"] - sums["forecast"]).rename("error").reset_index()


def error_summary(backtest: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """Bias and size of each forecaster's ``weeks``-week total forecasts.

    Returns, per forecaster, ``bias``: the summed error (actual minus forecast) divided by
    the summed actual demand, positive when the forecaster under-forecasts; and ``rms``:
    the root mean square of the errors (units), over products and origins.
    """
    errors = protection_errors(backtest, weeks)
    part = backtest[backtest["h"] <= weeks]
    actual = part.groupby("forecaster", sort=False)["actual"].sum()
    grouped = errors.groupby("forecaster", sort=False)["error"]
    return pd.DataFrame({
        "bias": grouped.sum() / actual.reindex(grouped.sum().index),
        "rms": grouped.apply(lambda e: float(np.sqrt(np.mean(np.square(e))))),
    })


def safety_stock(errors: pd.DataFrame, z: float) -> pd.Series:
    """``z`` times the root mean square protection-interval error, per forecaster and product.

    The root mean square (not the standard deviation) is used so that a biased forecast
    pays for its bias with more safety stock.
    """
    if z < 0:
        raise ValueError(f"z must be >= 0, got {z}.")
    rms = errors.groupby(["forecaster", "stock_code"], sort=False)["error"].apply(
        lambda e: float(np.sqrt(np.mean(np.square(e)))))
    return z * rms


def simulate_order_up_to(demand: object, forecasts: object, safety: object, *,
                         lead_time: int) -> dict[str, float]:
    """Periodic review (every week), order-up-to policy with backorders, for one product.

    At the start of week ``t`` the order placed ``lead_time`` weeks earlier arrives, the
    inventory position (stock on hand, net of backorders, plus orders in transit) is
    raised to ``S_t = sum(forecasts[t]) + safety[t]`` and the order arrives at the start
    of week ``t + lead_time`` (at once when ``lead_time`` is 0). ``forecasts[t]`` holds the
    ``lead_time + 1`` forecasts, made with data up to the end of week ``t - 1``, of weeks
    ``t .. t + lead_time``: the protection interval of the review period plus the lead
    time. The simulation starts in steady state: stock on hand is ``forecasts[0][0] +
    safety[0]`` and the orders in transit equal ``forecasts[0][1:lead_time]``.

    Returns
    -------
    dict
        ``fill_rate`` (share of demand met from stock in the week it occurred),
        ``cycle_service`` (share of weeks without a shortage), ``mean_stock`` (mean stock
        on hand at the end of a week, backorders counting as zero), ``weeks``.
    """
    d = np.asarray(demand, dtype=float)
    lead_time = check_positive_int(lead_time, name="lead_time", minimum=0)
    f = np.asarray(forecasts, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"demand must be a non-empty 1-D array, got shape {d.shape}.")
    if f.shape != (len(d), lead_time + 1):
        raise ValueError(f"forecasts must have shape (weeks, lead_time + 1) = "
                         f"{(len(d), lead_time + 1)}, got {f.shape}.")
    ss = np.broadcast_to(np.asarray(safety, dtype=float), d.shape)
    if np.any(d < 0) or np.any(f < 0) or np.any(ss < 0):
        raise ValueError("demand, forecasts and safety stock must be non-negative.")
    arrivals = np.zeros(len(d) + lead_time + 1)
    arrivals[1:lead_time] = f[0, 1:lead_time]
    on_hand = f[0, 0] + ss[0]
    served = np.zeros(len(d))
    end = np.zeros(len(d))
    for t in range(len(d)):
        if t > 0:
            on_hand += arrivals[t]
        position = on_hand + arrivals[t + 1: t + lead_time].sum()
        order = max(0.0, f[t].sum() + ss[t] - position)
        if lead_time == 0:
            on_hand += order
        else:
            arrivals[t + lead_time] += order
        served[t] = min(d[t], max(on_hand, 0.0))
        on_hand -= d[t]
        end[t] = on_hand
    total = d.sum()
    return {
        "fill_rate": float(served.sum() / total) if total > 0 else 1.0,
        "cycle_service": float(np.mean(served >= d - 1e-9)),
        "mean_stock": float(np.clip(end, 0, None).mean()),
        "weeks": len(d),
    }


def inventory_backtest(backtest: pd.DataFrame, safety: pd.Series, *, lead_time: int,
                       origins: Sequence[int]) -> pd.DataFrame:
    """Simulate :func:`simulate_order_up_to` per forecaster and product over ``origins``.

    The review at week ``origin + 1`` uses the forecasts made at ``origin`` for horizons
    ``1 .. lead_time + 1``; demand is the actual of horizon 1. ``safety`` is indexed by
    ``(forecaster, stock_code)``. Returns one row per forecaster and product with the
    results of the simulation and the product's mean weekly demand.
    """
    lead_time = check_positive_int(lead_time, name="lead_time", minimum=0)
    part = backtest[backtest["origin"].isin(list(origins)) & (backtest["h"] <= lead_time + 1)]
    if part.empty:
        raise ValueError("no backtest rows for these origins.")
    rows = []
    for (name, code), grp in part.groupby(["forecaster", "stock_code"], sort=False):
        wide = grp.pivot(index="origin", columns="h", values="forecast").sort_index()
        if wide.shape[1] != lead_time + 1 or wide.isna().any().any():
            raise ValueError(f"backtest lacks horizons 1..{lead_time + 1} for {name}/{code}.")
        actual = grp[grp["h"] == 1].set_index("origin")["actual"].reindex(wide.index)
        result = simulate_order_up_to(actual.to_numpy(), wide.to_numpy(),
                                      float(safety.loc[(name, code)]), lead_time=lead_time)
        rows.append({"forecaster": name, "stock_code": code, **result,
                     "mean_demand": float(actual.mean())})
    return pd.DataFrame(rows)


def service_curve(backtest: pd.DataFrame, errors: pd.DataFrame, zs: Sequence[float], *,
                  lead_time: int, origins: Sequence[int]) -> pd.DataFrame:
    """Mean fill rate, cycle service and stock cover per forecaster for several ``z``.

    ``errors`` are the calibration errors of :func:`protection_errors`; for each ``z`` the
    safety stock is :func:`safety_stock` and the simulation :func:`inventory_backtest`.
    Stock cover is the mean stock divided by the mean weekly demand (weeks of demand),
    averaged over products. Returns one row per forecaster and ``z``.
    """
    rows = []
    for z in zs:
        inv = inventory_backtest(backtest, safety_stock(errors, z), lead_time=lead_time,
                                 origins=origins)
        inv = inv.assign(cover=inv["mean_stock"] / inv["mean_demand"].where(
            inv["mean_demand"] > 0))
        agg = inv.groupby("forecaster", sort=False)[
            ["fill_rate", "cycle_service", "mean_stock", "cover"]].mean()
        rows.append(agg.assign(z=z).reset_index())
    return pd.concat(rows, ignore_index=True)


def quantile_inventory(demand: pd.DataFrame, model: QuantileGBM, point: pd.DataFrame, *,
                       lead_time: int, origins: Sequence[int]) -> pd.DataFrame:
    """Simulate the order-up-to policy with levels set by a quantile model.

    At the review after each origin the order-up-to level is ``model``'s quantile of the
    next ``lead_time + 1`` weeks. ``point`` is a :func:`rolling_origin` frame of a single
    point forecaster (for example the median LightGBM), used only to start the
    simulation in steady state (stock on hand and orders in transit); the safety stock
    passed to :func:`simulate_order_up_to` each week is the quantile minus the point
    forecasts' total, floored at zero. Returns one row per product, as
    :func:`inventory_backtest`.
    """
    lead_time = check_positive_int(lead_time, name="lead_time", minimum=0)
    if model.horizon != lead_time + 1:
        raise ValueError(f"the model covers {model.horizon} weeks; the policy needs "
                         f"lead_time + 1 = {lead_time + 1}.")
    if point["forecaster"].nunique() != 1:
        raise ValueError("point must hold the forecasts of exactly one forecaster.")
    values = np.asarray(demand, dtype=float)
    origins = [int(o) for o in origins]
    levels = np.stack([model(values[: o + 1].T)[:, 0] for o in origins], axis=1)
    part = point[point["origin"].isin(origins) & (point["h"] <= lead_time + 1)]
    rows = []
    for i, code in enumerate(demand.columns):
        grp = part[part["stock_code"] == code]
        wide = grp.pivot(index="origin", columns="h", values="forecast").reindex(origins)
        if wide.shape[1] != lead_time + 1 or wide.isna().any().any():
            raise ValueError(f"point lacks horizons 1..{lead_time + 1} for {code}.")
        actual = values[[o + 1 for o in origins], i]
        safety = np.clip(levels[i] - wide.to_numpy().sum(axis=1), 0, None)
        result = simulate_order_up_to(actual, wide.to_numpy(), safety, lead_time=lead_time)
        rows.append({"forecaster": f"quantile LightGBM ({model.alpha:.0%})",
                     "stock_code": code, **result, "mean_demand": float(actual.mean())})
    return pd.DataFrame(rows)
