"""Churn prediction: time-honest labels, features, models and the numbers a shop acts on.

A customer is *active* at a ``cutoff`` if they bought something in the ``active_days``
before it, and *churned* if they then buy nothing in the ``horizon_days`` after it.
Features read only interactions strictly before the cutoff, so a model trained at one
cutoff and tested at a later one sees exactly what it would have seen in production.

Every model has ``fit(data)`` and ``predict_proba(data)`` (probability of churn) on a
:class:`ChurnData`:

* :class:`RecencyRule`: days since the last purchase, mapped to a probability by isotonic
  regression (the rule a shop would write by hand, calibrated);
* :class:`LogisticRFM`: logistic regression on log recency, frequency and monetary value;
* :class:`GradientBoosting`: histogram gradient-boosted trees on all features;
* :class:`SequenceChurn`: a Keras GRU over each customer's weekly activity plus the
  features (the deep model);
* :class:`BetaGeoChurn`: the BG/NBD buy-till-you-die model (:mod:`companion.retention.btyd`), which
  needs no labels;
* :class:`Ensemble`: several of these, their probabilities averaged (:func:`blend`).

Models can be trained at one cutoff (:func:`churn_dataset`) or on several earlier cutoffs
stacked (:func:`training_cutoffs`, :func:`stacked_churn_dataset`).

**Why one module.** Labels, features and models are tied by the cutoff: what one cutoff's
features and labels are is what every model's fit and evaluation take, and the stacked
training sets are built from the same pieces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from companion._checks import check_positive_int, check_timestamp
from companion._optional import require
from companion.data.preprocessing import check_order_interactions
from companion.exceptions import not_fitted
from companion.retention.behaviour import rfm_features

#: default horizon; chapter 6 justifies it from the inter-purchase times
DEFAULT_HORIZON_DAYS = 90
RFM_COLUMNS = ("recency_days", "frequency", "monetary")
#: SequenceChurn settings for stacked cutoffs, chosen on the validation cutoff 2011-03-01 of
#: Online Retail II (four-week steps train about four times faster than weekly ones at the
#: same validation ROC-AUC; the higher rate and shorter patience stop in half the epochs)
STACKED_SEQUENCE_PARAMS = {"pool": 4, "batch_size": 512, "learning_rate": 4e-3,
                           "patience": 4, "epochs": 30}


def inter_purchase_days(interactions: pd.DataFrame) -> pd.Series:
    """Days between consecutive invoices of the same customer (one value per gap)."""
    frame = check_order_interactions(interactions)
    invoices = (frame.groupby(["user_id", "invoice"], observed=True)["timestamp"].min()
                .reset_index().sort_values(["user_id", "timestamp"], kind="stable"))
    gaps = invoices.groupby("user_id")["timestamp"].diff().dropna()
    return (gaps.dt.total_seconds() / 86400).rename("days").reset_index(drop=True)


def _check_window(frame: pd.DataFrame, cutoff: object, horizon_days: int | None,
                  active_days: int) -> pd.Timestamp:
    cut = check_timestamp(cutoff, name="cutoff")
    first, last = frame["timestamp"].min(), frame["timestamp"].max()
    if not first < cut <= last:
        raise ValueError(f"cutoff={cut.date()} is outside the data, which runs from "
                         f"{first.date()} to {last.date()}.")
    check_positive_int(active_days, name="active_days")
    if horizon_days is not None:
        check_positive_int(horizon_days, name="horizon_days")
        end = cut + pd.Timedelta(days=horizon_days)
        if end > last.normalize() + pd.Timedelta(days=1):
            left = (last.normalize() + pd.Timedelta(days=1) - cut).days
            raise ValueError(
                f"horizon_days={horizon_days} is too long for cutoff={cut.date()}: the data "
                f"end on {last.date()}, leaving {left} days after the cutoff.")
    return cut


def active_customers(interactions: pd.DataFrame, cutoff: object, active_days: int = 365
                     ) -> pd.Index:
    """Customers with a purchase in ``[cutoff - active_days, cutoff)``, sorted."""
    frame = check_order_interactions(interactions)
    cut = _check_window(frame, cutoff, None, active_days)
    recent = frame[(frame["timestamp"] < cut)
                   & (frame["timestamp"] >= cut - pd.Timedelta(days=active_days))]
    return pd.Index(np.sort(recent["user_id"].unique()), name="user_id")


def churn_labels(interactions: pd.DataFrame, cutoff: object,
                 horizon_days: int = DEFAULT_HORIZON_DAYS, active_days: int = 365) -> pd.Series:
    """1 for active customers who buy nothing in ``[cutoff, cutoff + horizon_days)``, else 0.

    Raises if the cutoff lies outside the data or the horizon runs past its end.
    """
    frame = check_order_interactions(interactions)
    cut = _check_window(frame, cutoff, horizon_days, active_days)
    customers = active_customers(frame, cut, active_days)
    end = cut + pd.Timedelta(days=horizon_days)
    future = frame[(frame["timestamp"] >= cut) & (frame["timestamp"] < end)]
    returned = customers.isin(set(future["user_id"]))
    return pd.Series((~returned).astype(np.int8), index=customers, name="churned")


def churn_features(interactions: pd.DataFrame, cutoff: object, *, active_days: int = 365,
                   returns: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features of every active customer, from interactions strictly before ``cutoff``.

    Columns: ``recency_days``, ``frequency`` (invoices), ``monetary`` (value),
    ``tenure_days``, ``items`` (distinct products), ``days_per_invoice`` (tenure over
    frequency), ``overdue`` (recency over days per invoice), ``invoices_90d``,
    ``spend_90d``, ``basket_value``, ``history_days`` (days of data before the cutoff, the
    same for every customer: it tells a model trained on several cutoffs how far back the
    cumulative features could look) and, with ``returns`` (the set-aside cancellation lines
    of :func:`companion.data.preprocessing.clean_transactions`), ``return_lines`` and
    ``return_share`` (returned value over bought value).
    """
    frame = check_order_interactions(interactions)
    cut = _check_window(frame, cutoff, None, active_days)
    customers = active_customers(frame, cut, active_days)
    past = frame[(frame["timestamp"] < cut) & frame["user_id"].isin(set(customers))]
    out = rfm_features(frame, cut).reindex(customers)
    out["days_per_invoice"] = out["tenure_days"] / out["frequency"]
    out["overdue"] = out["recency_days"] / out["days_per_invoice"]
    recent = past[past["timestamp"] >= cut - pd.Timedelta(days=90)].groupby("user_id")
    out["invoices_90d"] = recent["invoice"].nunique().reindex(customers, fill_value=0)
    out["spend_90d"] = recent["value"].sum().reindex(customers, fill_value=0.0)
    out["basket_value"] = out["monetary"] / out["frequency"]
    out["history_days"] = (cut - frame["timestamp"].min()).total_seconds() / 86400
    if returns is not None:
        out = out.join(_return_features(returns, cut, customers, out["monetary"]))
    return out.astype(float)


def _return_features(returns: pd.DataFrame, cut: pd.Timestamp, customers: pd.Index,
                     monetary: pd.Series) -> pd.DataFrame:
    from companion._checks import check_frame

    ret = check_frame(returns, {"customer_id": "integer", "invoice_date": "datetime",
                                "quantity": "number", "price": "number"}, name="returns")
    ret = ret[ret["invoice_date"] < cut]
    value = (ret["quantity"].abs() * ret["price"]).groupby(ret["customer_id"]).sum()
    lines = ret.groupby("customer_id").size()
    idx = customers
    return pd.DataFrame({
        "return_lines": lines.reindex(idx, fill_value=0).astype(float),
        "return_share": (value.reindex(idx, fill_value=0.0) / monetary.clip(lower=1e-9)),
    }, index=idx)


def activity_sequences(interactions: pd.DataFrame, cutoff: object, customers: pd.Index,
                       weeks: int = 52) -> np.ndarray:
    """Weekly activity before ``cutoff``: shape ``(len(customers), weeks, 2)``.

    Channel 0 is the number of invoices in the week, channel 1 ``log1p`` of the value
    spent; the last step is the week just before the cutoff.
    """
    frame = check_order_interactions(interactions)
    cut = check_timestamp(cutoff, name="cutoff")
    check_positive_int(weeks, name="weeks")
    start = cut - pd.Timedelta(weeks=weeks)
    past = frame[(frame["timestamp"] < cut) & (frame["timestamp"] >= start)
                 & frame["user_id"].isin(set(customers))]
    week = ((past["timestamp"] - start).dt.days // 7).clip(upper=weeks - 1).to_numpy()
    row = customers.get_indexer(past["user_id"])
    out = np.zeros((len(customers), weeks, 2), dtype=np.float32)
    invoices = pd.DataFrame({"row": row, "week": week, "invoice": past["invoice"].to_numpy()})
    first = invoices.drop_duplicates(["row", "invoice"])
    np.add.at(out[:, :, 0], (first["row"].to_numpy(), first["week"].to_numpy()), 1.0)
    np.add.at(out[:, :, 1], (row, week), past["value"].to_numpy(dtype=np.float32))
    out[:, :, 1] = np.log1p(np.maximum(out[:, :, 1], 0.0))
    return out


@dataclass
class ChurnData:
    """Features, weekly sequences and labels of the active customers at one cutoff."""

    features: pd.DataFrame
    sequences: np.ndarray
    labels: pd.Series
    cutoff: pd.Timestamp
    horizon_days: int
    future_value: pd.Series = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def base_rate(self) -> float:
        """Share of active customers who churned."""
        return float(self.labels.mean())

    @property
    def customers(self) -> np.ndarray:
        """The customer of each row (rows of a stacked data set repeat customers)."""
        index = self.labels.index
        if isinstance(index, pd.MultiIndex):
            return index.get_level_values("user_id").to_numpy()
        return index.to_numpy()

    @property
    def row_cutoffs(self) -> np.ndarray:
        """The cutoff of each row: one date, or several for a stacked data set."""
        index = self.labels.index
        if isinstance(index, pd.MultiIndex):
            return index.get_level_values("cutoff").to_numpy()
        return np.full(len(index), self.cutoff.to_datetime64())

    def select(self, rows) -> ChurnData:
        """The rows picked by a boolean mask or integer positions, as a new ChurnData."""
        rows = np.asarray(rows)
        if rows.dtype == bool and rows.shape != (len(self),):
            raise ValueError(f"a boolean mask must have {len(self)} entries, got {rows.shape}.")
        pos = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
        if len(pos) == 0:
            raise ValueError("the selection is empty.")
        cutoffs = self.row_cutoffs[pos]
        return ChurnData(self.features.iloc[pos], self.sequences[pos], self.labels.iloc[pos],
                         pd.Timestamp(cutoffs.max()), self.horizon_days,
                         self.future_value.iloc[pos])


def churn_dataset(interactions: pd.DataFrame, cutoff: object,
                  horizon_days: int = DEFAULT_HORIZON_DAYS, *, active_days: int = 365,
                  weeks: int = 52, returns: pd.DataFrame | None = None) -> ChurnData:
    """Everything a churn model needs at ``cutoff``, with its labels and future spend."""
    frame = check_order_interactions(interactions)
    cut = _check_window(frame, cutoff, horizon_days, active_days)
    labels = churn_labels(frame, cut, horizon_days, active_days)
    features = churn_features(frame, cut, active_days=active_days, returns=returns)
    sequences = activity_sequences(frame, cut, labels.index, weeks)
    end = cut + pd.Timedelta(days=horizon_days)
    window = frame[(frame["timestamp"] >= cut) & (frame["timestamp"] < end)]
    spend = window.groupby("user_id")["value"].sum().reindex(labels.index, fill_value=0.0)
    return ChurnData(features, sequences, labels, cut, horizon_days, spend.rename("future_value"))


def training_cutoffs(test_cutoff: object, horizon_days: int = DEFAULT_HORIZON_DAYS, *,
                     span_days: int = 365, freq: str = "MS") -> list[pd.Timestamp]:
    """Training cutoffs for a test cutoff: dates in ``[test - span_days, test - horizon_days]``.

    The dates follow ``freq`` (pandas offset alias; default month starts), so every
    training label, read over ``[c, c + horizon_days)``, is known before the test cutoff.
    """
    test = check_timestamp(test_cutoff, name="test_cutoff")
    check_positive_int(horizon_days, name="horizon_days")
    check_positive_int(span_days, name="span_days")
    if span_days < horizon_days:
        raise ValueError(f"span_days={span_days} is shorter than horizon_days={horizon_days}.")
    grid = pd.date_range(test - pd.Timedelta(days=span_days),
                         test - pd.Timedelta(days=horizon_days), freq=freq)
    if len(grid) == 0:
        raise ValueError(f"no {freq!r} date lies between test_cutoff - {span_days} days and "
                         f"test_cutoff - {horizon_days} days.")
    return list(grid)


def stack_churn_data(datasets) -> ChurnData:
    """Stack the data sets of several cutoffs into one, indexed by ``(cutoff, user_id)``.

    A customer appears once per cutoff at which they are active. ``cutoff`` of the
    result is the latest cutoff; :attr:`ChurnData.row_cutoffs` gives each row's.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("stack_churn_data needs at least one ChurnData.")
    for d in datasets:
        if not isinstance(d, ChurnData):
            raise TypeError(f"stack_churn_data expects ChurnData, got {type(d).__name__}.")
    horizons = {d.horizon_days for d in datasets}
    if len(horizons) > 1:
        raise ValueError(f"the data sets have different horizons: {sorted(horizons)}.")
    columns = {tuple(d.features.columns) for d in datasets}
    if len(columns) > 1:
        raise ValueError("the data sets have different feature columns.")
    cutoffs = [ts for d in datasets for ts in np.unique(d.row_cutoffs)]
    if len(set(cutoffs)) < len(cutoffs):
        raise ValueError("a cutoff appears in more than one data set.")

    def index(d: ChurnData) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([pd.DatetimeIndex(d.row_cutoffs), d.customers],
                                         names=["cutoff", "user_id"])

    def concat(parts):
        return pd.concat([p.set_axis(index(d)) for p, d in zip(parts, datasets, strict=True)])

    return ChurnData(concat([d.features for d in datasets]),
                     np.concatenate([d.sequences for d in datasets]),
                     concat([d.labels for d in datasets]).astype(np.int8),
                     max(d.cutoff for d in datasets), horizons.pop(),
                     concat([d.future_value for d in datasets]))


def stacked_churn_dataset(interactions: pd.DataFrame, cutoffs,
                          horizon_days: int = DEFAULT_HORIZON_DAYS, *,
                          test_cutoff: object | None = None, active_days: int = 365,
                          weeks: int = 52, returns: pd.DataFrame | None = None) -> ChurnData:
    """:func:`churn_dataset` at each of ``cutoffs``, stacked (see :func:`stack_churn_data`).

    With ``test_cutoff``, every label window ``[c, c + horizon_days)`` must end on or before
    it, so that no training row reads anything from the test cutoff on.
    """
    cuts = sorted({check_timestamp(c, name="cutoffs") for c in cutoffs})
    if not cuts:
        raise ValueError("cutoffs is empty.")
    check_positive_int(horizon_days, name="horizon_days")
    if test_cutoff is not None:
        test = check_timestamp(test_cutoff, name="test_cutoff")
        late = [c for c in cuts if c + pd.Timedelta(days=horizon_days) > test]
        if late:
            raise ValueError(f"cutoff {late[0].date()} + {horizon_days} days runs past "
                             f"test_cutoff={test.date()}: its labels would read the test "
                             f"period.")
    return stack_churn_data(churn_dataset(interactions, c, horizon_days, active_days=active_days,
                                          weeks=weeks, returns=returns) for c in cuts)


# ------------------------------------------------------------------------------------ models

class ChurnModel:
    """Base class of the churn classifiers, and the contract that all of them keep.

    Subclasses implement ``fit(data)`` and ``predict_proba(data)`` on a
    :class:`ChurnData`; this class checks the input and the fitted state.

    Notes
    -----
    Every concrete churn model of the companion (those here and
    :class:`companion.retention.explain.FeatureMLP`) guarantees the following, and
    ``tests/test_contracts.py`` checks each point on every subclass it finds (a new class
    without a factory there fails):

    1. ``fit(data)`` returns the model itself and does not modify ``data`` (its
       features, labels and sequences). (:class:`Ensemble` fits its member models in
       place.)
    2. Before ``fit``, ``predict_proba`` raises
       :class:`~companion.exceptions.NotFittedError` ("... is not fitted yet;
       call fit first."); ``fit`` and ``predict_proba`` given anything but a
       :class:`ChurnData` raise ``TypeError``.
    3. ``predict_proba(data)`` returns a 1-D float array of ``len(data)`` churn
       probabilities, one per row of ``data`` in its order, finite and in [0, 1].
    4. The same arguments, seed included, fitted on the same data give the same
       probabilities (to float32 precision for the Keras models).
    """

    def _check_data(self, data: object) -> ChurnData:
        if not isinstance(data, ChurnData):
            raise TypeError(f"{type(self).__name__} expects a ChurnData (see churn_dataset), "
                            f"got {type(data).__name__}.")
        return data

    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise not_fitted(self)

    def _matrix(self, data: ChurnData) -> np.ndarray:
        missing = [c for c in self.columns_ if c not in data.features.columns]
        if missing:
            raise ValueError(f"features lack the column(s) {missing} used in fit.")
        return data.features[list(self.columns_)].to_numpy(dtype=float)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RecencyRule(ChurnModel):
    """Churn probability as a monotone function of the days since the last purchase."""

    def fit(self, data: ChurnData) -> RecencyRule:
        from sklearn.isotonic import IsotonicRegression

        data = self._check_data(data)
        self.columns_ = ("recency_days",)
        self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                                         out_of_bounds="clip")
        self.model_.fit(self._matrix(data)[:, 0], data.labels.to_numpy())
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        self._check_fitted()
        return self.model_.predict(self._matrix(self._check_data(data))[:, 0])


class LogisticRFM(ChurnModel):
    """Logistic regression on standardised ``log1p`` recency, frequency and monetary value."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, data: ChurnData) -> LogisticRFM:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        data = self._check_data(data)
        self.columns_ = RFM_COLUMNS
        self.model_ = make_pipeline(FunctionTransformer(signed_log1p), StandardScaler(),
                                    LogisticRegression(C=self.C, max_iter=1000))
        self.model_.fit(self._matrix(data), data.labels.to_numpy())
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        self._check_fitted()
        return self.model_.predict_proba(self._matrix(self._check_data(data)))[:, 1]


def signed_log1p(x):
    """``sign(x) * log(1 + |x|)``: compresses large counts and amounts, keeps the sign."""
    return np.sign(x) * np.log1p(np.abs(x))


def customer_split(customers: np.ndarray, fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of a random ``fraction`` of the customers, and of the others.

    Rows are ordered by their customer's place in a random permutation (with one row per
    customer this is a plain random permutation of the rows).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
    codes, uniques = pd.factorize(customers)
    rng = np.random.default_rng(seed)
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[rng.permutation(len(uniques))] = np.arange(len(uniques))
    order = np.argsort(rank[codes], kind="stable")
    n_val = max(1, int(round(fraction * len(uniques))))
    cut = int(np.searchsorted(np.sort(rank[codes]), n_val))
    return order[:cut], order[cut:]


class GradientBoosting(ChurnModel):
    """Histogram gradient-boosted trees on every feature column.

    Early-stops on a random ``validation_fraction`` of the training customers, all rows of
    a customer on the same side (on a stacked data set a random split of rows would let
    the same customer at the next cutoff into the validation set, and stop too late).
    """

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.05,
                 max_leaf_nodes: int = 15, validation_fraction: float = 0.2,
                 seed: int = 0) -> None:
        self.max_iter, self.learning_rate = max_iter, learning_rate
        self.max_leaf_nodes, self.seed = max_leaf_nodes, seed
        self.validation_fraction = validation_fraction

    def fit(self, data: ChurnData) -> GradientBoosting:
        from sklearn.ensemble import HistGradientBoostingClassifier

        data = self._check_data(data)
        self.columns_ = tuple(data.features.columns)
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, l2_regularization=1.0,
            early_stopping=True, n_iter_no_change=20, random_state=self.seed)
        x, y = self._matrix(data), data.labels.to_numpy()
        val, tr = customer_split(data.customers, self.validation_fraction, self.seed)
        self.model_.fit(x[tr], y[tr], X_val=x[val], y_val=y[val])
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        self._check_fitted()
        return self.model_.predict_proba(self._matrix(self._check_data(data)))[:, 1]


def pool_sequences(sequences: np.ndarray, pool: int) -> np.ndarray:
    """Merge each run of ``pool`` weeks of :func:`activity_sequences` into one step.

    Invoices add up; the value channel is ``log1p`` of the summed value. The number of
    weeks must be a multiple of ``pool``; the last step still ends at the cutoff.
    """
    check_positive_int(pool, name="pool")
    seq = np.asarray(sequences, dtype=np.float32)
    if seq.ndim != 3 or seq.shape[2] != 2:
        raise ValueError(f"sequences must have shape (customers, weeks, 2), got {seq.shape}.")
    if pool == 1:
        return seq
    n, weeks, _ = seq.shape
    if weeks % pool:
        raise ValueError(f"weeks={weeks} is not a multiple of pool={pool}.")
    steps = seq.reshape(n, weeks // pool, pool, 2)
    out = np.empty((n, weeks // pool, 2), dtype=np.float32)
    out[:, :, 0] = steps[:, :, :, 0].sum(axis=2)
    out[:, :, 1] = np.log1p(np.expm1(steps[:, :, :, 1]).sum(axis=2))
    return out


def standardiser(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column of ``raw`` (rows are examples), for
    ``(raw - mean) / scale``; a column constant in training gets an infinite scale, so that
    it is left out (standardised to 0)."""
    std = raw.std(axis=0)
    return raw.mean(axis=0), np.where(std > 1e-9, std + 1e-6, np.inf)


def train_keras_churn(model, inputs, labels: np.ndarray, customers: np.ndarray, *,
                      validation_fraction: float, seed: int, epochs: int, batch_size: int,
                      learning_rate: float, patience: int, callbacks: Sequence = ()
                      ) -> pd.DataFrame:
    """Train a Keras churn network and return its history (one row per epoch).

    ``model`` maps ``inputs`` (an array, or a list of arrays, one row per example) to a
    churn probability. It is compiled with Adam and binary cross-entropy and trained on the
    examples of the customers outside a random ``validation_fraction`` of them
    (:func:`customer_split`), with early stopping on the loss of the others after
    ``patience`` epochs without improvement; the best epoch's weights are restored.
    """
    keras = require("keras", "deep")

    val, tr = customer_split(customers, validation_fraction, seed)

    def rows(index):
        return [a[index] for a in inputs] if isinstance(inputs, list) else inputs[index]

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    hist = model.fit(rows(tr), labels[tr], validation_data=(rows(val), labels[val]),
                     epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
                     callbacks=[stop, *callbacks])
    return pd.DataFrame(hist.history)


class SequenceChurn(ChurnModel):
    """A Keras GRU over weekly activity, joined with the (log, standardised) features.

    ``pool`` merges that many weeks into one step of the GRU (4 turns a year of weeks into
    13 four-week steps and trains about four times faster).

    Early-stops on a random ``validation_fraction`` of the training customers (all rows
    of a customer, at every cutoff of a stacked data set, fall on the same side) and
    restores the best weights.
    """

    def __init__(self, units: int = 32, hidden: int = 32, dropout: float = 0.2,
                 epochs: int = 60, batch_size: int = 128, learning_rate: float = 2e-3,
                 patience: int = 6, validation_fraction: float = 0.2, pool: int = 1,
                 seed: int = 0) -> None:
        self.units, self.hidden, self.dropout = units, hidden, dropout
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.patience, self.validation_fraction, self.seed = patience, validation_fraction, seed
        self.pool = pool

    def _inputs(self, data: ChurnData):
        x = signed_log1p(self._matrix(data))
        x = (x - self.mean_) / self.scale_
        return [pool_sequences(data.sequences, self.pool), x.astype(np.float32)]

    def fit(self, data: ChurnData) -> SequenceChurn:
        keras = require("keras", "deep")

        from companion.foundations.keras_helpers import seed_everything

        data = self._check_data(data)
        check_positive_int(self.epochs, name="epochs")
        seed_everything(self.seed)
        self.columns_ = tuple(data.features.columns)
        # a column constant in training (history_days at one cutoff) is left out
        self.mean_, self.scale_ = standardiser(signed_log1p(self._matrix(data)))
        seq, x = self._inputs(data)
        y = data.labels.to_numpy(dtype=np.float32)
        s_in = keras.Input(shape=seq.shape[1:])
        f_in = keras.Input(shape=(x.shape[1],))
        h = keras.layers.GRU(self.units, seed=self.seed)(s_in)
        h = keras.layers.concatenate([h, f_in])
        h = keras.layers.Dense(self.hidden, activation="relu", kernel_initializer="he_normal")(h)
        h = keras.layers.Dropout(self.dropout, seed=self.seed)(h)
        out = keras.layers.Dense(1, activation="sigmoid")(h)
        self.model_ = keras.Model([s_in, f_in], out)
        seconds: list[float] = []

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(time.process_time() - self.started)

        self.history_ = train_keras_churn(
            self.model_, [seq, x], y, data.customers,
            validation_fraction=self.validation_fraction, seed=self.seed, epochs=self.epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate,
            patience=self.patience, callbacks=[EpochTimer()])
        #: CPU seconds of this process per epoch (training and validation loss)
        self.epoch_seconds_ = seconds
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        from companion.foundations.keras_helpers import predict_in_chunks

        self._check_fitted()
        return predict_in_chunks(self.model_, self._inputs(self._check_data(data)), 4096).ravel()


def pooling_cost(data: ChurnData, pools: Sequence[int] = (1, 4), *, rows: int = 20_000,
                 epochs: int = 3, seed: int = 0, **params) -> pd.DataFrame:
    """CPU seconds per training epoch of :class:`SequenceChurn` at each ``pool``.

    Every pooling trains on the same ``rows`` rows of ``data``, drawn at random with
    ``seed``, for ``epochs`` epochs (no early stop), with ``params`` passed on. The first
    epoch also builds the graph and is left out; the table gives the median of the others,
    the GRU's number of steps and the cost relative to the first of ``pools``.
    """
    check_positive_int(rows, name="rows")
    check_positive_int(epochs, name="epochs")
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 (the first is left out), got {epochs}.")
    if not pools:
        raise ValueError("pools is empty.")
    for name in ("pool", "epochs", "patience", "seed"):
        if name in params:
            raise ValueError(f"{name!r} is set by pooling_cost, not in params.")
    pick = np.random.default_rng(seed).choice(len(data), size=min(rows, len(data)),
                                              replace=False)
    sample = data.select(np.sort(pick))
    out = {}
    for pool in pools:
        model = SequenceChurn(pool=pool, epochs=epochs, patience=epochs, seed=seed,
                              **params).fit(sample)
        out[pool] = {"GRU steps": sample.sequences.shape[1] // pool,
                     "CPU seconds per epoch": float(np.median(model.epoch_seconds_[1:]))}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "pool"
    table["relative cost"] = (table["CPU seconds per epoch"]
                              / table["CPU seconds per epoch"].iloc[0])
    return table


class BetaGeoChurn(ChurnModel):
    """The BG/NBD model's probability of no purchase over the horizon, as a churn model.

    BG/NBD needs no labels, so ``fit`` only checks the data; ``predict_proba`` fits the
    model (:func:`companion.retention.btyd.churn_probability`) on every customer's purchases before
    each cutoff of the data it scores and returns the probability of no purchase in the
    next ``horizon_days``. The fitted models are kept in ``models_`` by cutoff.
    """

    def __init__(self, interactions: pd.DataFrame) -> None:
        self.interactions = interactions

    def fit(self, data: ChurnData) -> BetaGeoChurn:
        self._check_data(data)
        self.columns_ = ()
        self.models_ = {}
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        from companion.retention.btyd import churn_probability

        self._check_fitted()
        data = self._check_data(data)
        cutoffs, customers = data.row_cutoffs, data.customers
        out = np.empty(len(data))
        for cut in np.unique(cutoffs):
            rows = cutoffs == cut
            key = pd.Timestamp(cut)
            scores = churn_probability(self.interactions, key, data.horizon_days,
                                       pd.Index(customers[rows]), model=self.models_.get(key))
            self.models_[key] = scores.attrs["model"]
            out[rows] = scores["p_churn"].to_numpy()
        return out

    def __repr__(self) -> str:
        return "BetaGeoChurn()"


def blend(probas, weights=None) -> np.ndarray:
    """Weighted mean of several models' churn probabilities (equal weights by default).

    ``probas`` maps a model name to its probabilities (or is a sequence of arrays);
    ``weights`` maps the same names to non-negative weights, normalised to sum to 1.
    """
    items = dict(probas) if hasattr(probas, "keys") else dict(enumerate(probas))
    if not items:
        raise ValueError("blend needs at least one model's probabilities.")
    arrays = {k: np.asarray(v, dtype=float) for k, v in items.items()}
    shapes = {v.shape for v in arrays.values()}
    if len(shapes) > 1:
        raise ValueError(f"the probabilities have different shapes: {sorted(shapes)}.")
    if weights is None:
        weights = dict.fromkeys(arrays, 1.0)
    weights = dict(weights) if hasattr(weights, "keys") else dict(enumerate(weights))
    if set(weights) != set(arrays):
        raise ValueError(f"weights name {sorted(map(str, weights))} but the probabilities "
                         f"name {sorted(map(str, arrays))}.")
    w = np.array([weights[k] for k in arrays], dtype=float)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}.")
    return np.tensordot(w / w.sum(), np.stack(list(arrays.values())), axes=1)


class Ensemble(ChurnModel):
    """Several churn models fitted on the same data, their probabilities averaged.

    Averaging probabilities (not ranks) keeps the output a probability; each member is
    fitted to the same labels, so their scales agree. ``weights`` as in :func:`blend`
    (equal by default).
    """

    def __init__(self, models, weights=None) -> None:
        self.models = dict(models)
        self.weights = weights
        if not self.models:
            raise ValueError("an Ensemble needs at least one model.")

    def fit(self, data: ChurnData) -> Ensemble:
        data = self._check_data(data)
        for model in self.models.values():
            model.fit(data)
        self.columns_ = tuple(dict.fromkeys(c for m in self.models.values()
                                            for c in m.columns_))
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        self._check_fitted()
        data = self._check_data(data)
        return blend({name: m.predict_proba(data) for name, m in self.models.items()},
                     self.weights)

    def __repr__(self) -> str:
        return f"Ensemble({list(self.models)})"


# -------------------------------------------------------------------------------- evaluation

def churn_scores(y_true, proba, *, n_boot: int = 500, seed: int = 0) -> pd.Series:
    """ROC-AUC, PR-AUC, Brier score and base rate, each with a 95% bootstrap interval.

    Returns a Series with entries ``metric``, ``metric low`` and ``metric high`` (the
    layout :func:`companion.foundations.evaluation.format_ci` turns into text).
    """
    from companion.foundations import metrics
    from companion.foundations.evaluation import comparison_table

    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"y_true has shape {y.shape} but proba has {p.shape}.")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("proba must be probabilities in [0, 1] without NaN.")
    fns = {"ROC-AUC": metrics.roc_auc, "PR-AUC": metrics.average_precision,
           "Brier": metrics.brier_score, "base rate": lambda t, _: float(np.mean(t))}
    table = comparison_table(y, {"model": p}, fns, n_boot=n_boot, seed=seed)
    return table.iloc[0].astype(float).rename(None)


def gains_table(y_true, proba, bins: int = 10) -> pd.DataFrame:
    """Customers ranked by predicted churn, cut into ``bins`` equal groups (highest first).

    Columns: customers, churners, churn rate, lift (rate over the base rate) and the
    cumulative share of all churners caught by targeting down to that group.
    """
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(proba, dtype=float)
    check_positive_int(bins, name="bins", minimum=2)
    if len(y) < bins:
        raise ValueError(f"{len(y)} customers cannot fill {bins} bins.")
    order = np.argsort(-p, kind="stable")
    group = np.arange(len(y)) * bins // len(y) + 1
    frame = pd.DataFrame({"group": group, "y": y[order]})
    table = frame.groupby("group")["y"].agg(customers="size", churners="sum")
    table["churn rate"] = table["churners"] / table["customers"]
    table["lift"] = table["churn rate"] / max(y.mean(), 1e-12)
    table["cumulative share of churners"] = table["churners"].cumsum() / max(y.sum(), 1e-12)
    return table


def offer_value_table(proba, value, *, offer_cost: float, save_rate: float) -> pd.DataFrame:
    """Expected value of a retention offer under four targeting policies.

    A targeted customer who would churn is kept with probability ``save_rate`` and then
    spends ``value`` (for example their spend over the last horizon); every offer costs
    ``offer_cost``. The expected gain of targeting customer *i* is
    ``p_i * save_rate * value_i - offer_cost``. ``save_rate`` is an assumption: purchase
    histories do not identify it, only a randomised test of the offer does.
    """
    p = np.asarray(proba, dtype=float)
    v = np.asarray(value, dtype=float)
    if p.shape != v.shape:
        raise ValueError(f"proba has shape {p.shape} but value has {v.shape}.")
    if offer_cost < 0 or not 0 <= save_rate <= 1:
        raise ValueError("offer_cost must be >= 0 and save_rate in [0, 1].")
    gain = p * save_rate * v - offer_cost
    decile = p >= np.quantile(p, 0.9)
    policies = {
        "nobody": np.zeros_like(p, dtype=bool),
        "everybody": np.ones_like(p, dtype=bool),
        "top 10% churn risk": decile,
        "positive expected gain": gain > 0,
    }
    rows = {name: {"customers targeted": int(mask.sum()),
                   "expected churners reached": float(p[mask].sum()),
                   "offer cost": float(offer_cost * mask.sum()),
                   "expected net gain": float(gain[mask].sum())}
            for name, mask in policies.items()}
    return pd.DataFrame(rows).T


def permutation_importance(model, data: ChurnData, *, n_repeats: int = 5, seed: int = 0
                           ) -> pd.DataFrame:
    """Drop in ROC-AUC when each feature column is shuffled (mean and sd over repeats)."""
    from companion.foundations import metrics

    model._check_fitted()
    y = data.labels.to_numpy()
    base = metrics.roc_auc(y, model.predict_proba(data))
    rng = np.random.default_rng(seed)
    rows = {}
    for column in model.columns_:
        drops = []
        for _ in range(n_repeats):
            shuffled = data.features.copy()
            shuffled[column] = rng.permutation(shuffled[column].to_numpy())
            probe = ChurnData(shuffled, data.sequences, data.labels, data.cutoff,
                              data.horizon_days, data.future_value)
            drops.append(base - metrics.roc_auc(y, model.predict_proba(probe)))
        rows[column] = {"AUC drop": float(np.mean(drops)), "sd": float(np.std(drops))}
    return pd.DataFrame(rows).T.sort_values("AUC drop", ascending=False)
