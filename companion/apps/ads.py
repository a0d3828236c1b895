"""Ad targeting on web sessions: a time-honest split, deep-and-cross and Wide & Deep
networks in Keras, calibration and budgeted targeting.

The task is the Online Shoppers one: will this session end in a purchase? An ad (or an
offer) can be shown to only a share of sessions, so a model is judged by its ranking
(ROC-AUC, PR-AUC), by its probabilities (log loss, calibration) and by the conversions it
finds within a budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion._optional import require
from companion.exceptions import not_fitted
from companion.foundations.keras_helpers import predict_in_chunks

#: Calendar order of the months present in the Online Shoppers data (no January or April).
SHOPPERS_MONTH_ORDER = ("Feb", "Mar", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

DEFAULT_SPLIT = {"train": ("Feb", "Mar", "May", "June", "Jul", "Aug"),
                 "validation": ("Sep", "Oct"), "test": ("Nov", "Dec")}


def month_split(sessions: pd.DataFrame, months: Mapping[str, Sequence[str]] | None = None
                ) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Split the sessions by month: ``{"train": (X, y), "validation": ..., "test": ...}``.

    Features are :func:`companion.data.preprocessing.shoppers_features` without the month
    dummies (a model cannot learn anything about a month it never saw). Every month of a
    later part must come after every month of an earlier part in calendar order.
    """
    from companion.data.preprocessing import shoppers_features

    months = dict(DEFAULT_SPLIT if months is None else months)
    if set(months) != {"train", "validation", "test"}:
        raise ValueError(f"months must have keys train, validation, test; got {sorted(months)}.")
    order = {m: i for i, m in enumerate(SHOPPERS_MONTH_ORDER)}
    for part, names in months.items():
        bad = [m for m in names if m not in order]
        if bad or not names:
            raise ValueError(f"months[{part!r}] has unknown or no months {bad}; "
                             f"known: {list(SHOPPERS_MONTH_ORDER)}.")
    parts = ["train", "validation", "test"]
    for early, late in zip(parts, parts[1:], strict=False):
        if max(order[m] for m in months[early]) >= min(order[m] for m in months[late]):
            raise ValueError(f"every {late} month must come after every {early} month, "
                             f"got {list(months[early])} and {list(months[late])}.")
    X, y = shoppers_features(sessions)
    X = X.drop(columns=[c for c in X.columns if c.startswith("Month_")])
    month = sessions["Month"].astype(str).to_numpy()
    out = {}
    for part in parts:
        mask = np.isin(month, months[part])
        if not mask.any() or len(np.unique(y[mask])) < 2:
            raise ValueError(f"the {part} months {list(months[part])} hold no sessions or "
                             "only one class.")
        out[part] = (X[mask].reset_index(drop=True), y[mask])
    return out


# --------------------------------------------------------------------------------------
# Keras models
# --------------------------------------------------------------------------------------

def _keras():
    keras = require("keras", "deep")

    return keras


def cross_layer_class():
    """The DCN-v2 cross layer class (built lazily so that importing this module does not
    import Keras)."""
    keras = _keras()

    @keras.saving.register_keras_serializable(package="companion")
    class CrossLayer(keras.layers.Layer):
        """DCN-v2 cross layer (Wang et al. 2021): ``x_{l+1} = x0 * (W x_l + b) + x_l``.

        Called on ``(x0, x_l)``, both of shape (batch, d); returns shape (batch, d). With
        ``W = 0`` and ``b = 0`` it is the identity on ``x_l``.
        """

        def __init__(self, l2: float = 0.0, kernel_initializer=None, **kwargs):
            super().__init__(**kwargs)
            self.l2 = float(l2)
            # small initial weights: each layer starts close to the identity on x_l
            self.kernel_initializer = kernel_initializer or keras.initializers.TruncatedNormal(
                stddev=0.01)

        def build(self, input_shape):
            d = input_shape[0][-1]
            if d is None or input_shape[1][-1] != d:
                raise ValueError(f"CrossLayer needs x0 and x_l of the same width, got "
                                 f"{input_shape[0]} and {input_shape[1]}.")
            reg = keras.regularizers.L2(self.l2) if self.l2 else None
            self.dense = keras.layers.Dense(d, kernel_initializer=self.kernel_initializer,
                                            kernel_regularizer=reg)
            self.dense.build((None, d))

        def call(self, inputs):
            x0, x = inputs
            return x0 * self.dense(x) + x

        def get_config(self):
            return {**super().get_config(), "l2": self.l2,
                    "kernel_initializer": keras.initializers.serialize(
                        keras.initializers.get(self.kernel_initializer))}

    return CrossLayer


def build_dcn(n_features: int, *, cross_layers: int = 2, deep: Sequence[int] = (64, 32),
              dropout: float = 0.1, l2: float = 1e-5, learning_rate: float = 1e-3,
              seed: int = 0):
    """DCN-v2 in its stacked form: ``cross_layers`` cross layers, then an MLP, then a
    sigmoid output. Compiled with binary cross-entropy and Adam."""
    keras = _keras()
    check_positive_int(n_features, name="n_features")
    check_positive_int(cross_layers, name="cross_layers", minimum=0)
    keras.utils.set_random_seed(seed)
    cross = cross_layer_class()
    inp = keras.Input((n_features,), name="features")
    x = inp
    for i in range(cross_layers):
        x = cross(l2=l2, name=f"cross_{i}")([inp, x])
    for units in deep:
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=keras.regularizers.L2(l2))(x)
        if dropout:
            x = keras.layers.Dropout(dropout, seed=seed)(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="proba")(x)
    model = keras.Model(inp, out, name="dcn_v2")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def build_wide_deep(n_features: int, n_wide: int, *, deep: Sequence[int] = (64, 32),
                    dropout: float = 0.1, l2: float = 1e-5, learning_rate: float = 1e-3,
                    seed: int = 0):
    """Wide & Deep (Cheng et al. 2016): a linear model on the wide inputs (0/1 features and
    their crossed indicators) plus an MLP on all features, summed into one logit."""
    keras = _keras()
    check_positive_int(n_features, name="n_features")
    check_positive_int(n_wide, name="n_wide")
    keras.utils.set_random_seed(seed)
    deep_in = keras.Input((n_features,), name="deep")
    wide_in = keras.Input((n_wide,), name="wide")
    x = deep_in
    for units in deep:
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=keras.regularizers.L2(l2))(x)
        if dropout:
            x = keras.layers.Dropout(dropout, seed=seed)(x)
    logit = keras.layers.Add()([
        keras.layers.Dense(1, name="deep_logit")(x),
        keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(l2),
                           name="wide_logit")(wide_in)])
    out = keras.layers.Activation("sigmoid", name="proba")(logit)
    model = keras.Model([deep_in, wide_in], out, name="wide_and_deep")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def cross_indicators(X: pd.DataFrame, left: str, right: str) -> pd.DataFrame:
    """Products of every 0/1 column whose name starts with ``left`` with every one starting
    with ``right``: the crossed features of a Wide & Deep model's wide part."""
    a = [c for c in X.columns if c.startswith(left)]
    b = [c for c in X.columns if c.startswith(right)]
    if not a or not b:
        raise ValueError(f"no columns start with {left!r} or {right!r}.")
    return pd.DataFrame({f"{i} x {j}": X[i] * X[j] for i in a for j in b}, index=X.index)


#: Crossed indicator groups for the wide part (visitor type with traffic source, region
#: and weekend).
WIDE_CROSSES = (("VisitorType_", "TrafficType_"), ("VisitorType_", "Region_"),
                ("VisitorType_", "Weekend"))


class TabularNet:
    """A DCN-v2 (``kind="dcn"``) or Wide & Deep (``kind="wide_deep"``) classifier.

    0/1 columns enter as they are; the other columns are standardised with the training
    mean and deviation and clipped to [-5, 5] (cross layers multiply features, so one
    extreme value would otherwise dominate). Training stops early on the validation loss
    and keeps the best epoch's weights.
    """

    def __init__(self, kind: str = "dcn", *, epochs: int = 40, batch_size: int = 256,
                 patience: int = 4, seed: int = 0, **params) -> None:
        if kind not in ("dcn", "wide_deep"):
            raise ValueError(f"kind must be 'dcn' or 'wide_deep', got {kind!r}.")
        self.kind, self.epochs, self.batch_size = kind, epochs, batch_size
        self.patience, self.seed, self.params = patience, seed, params

    def _inputs(self, X: pd.DataFrame):
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a DataFrame, got {type(X).__name__}.")
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(f"X is missing columns {missing[:3]}.")
        dense = np.clip((X[self.columns_].to_numpy(float) - self.mean_) / self.std_, -5, 5
                        ).astype("float32")
        if self.kind == "dcn":
            return dense
        binary = [c for c, is_bin in zip(self.columns_, self.binary_, strict=True) if is_bin]
        wide = pd.concat([X[binary]] + [cross_indicators(X, a, b)
                                        for a, b in WIDE_CROSSES], axis=1)
        return [dense, wide.to_numpy("float32")]

    def fit(self, X: pd.DataFrame, y, validation: tuple[pd.DataFrame, object]) -> TabularNet:
        keras = _keras()
        y = np.asarray(y, dtype="float32")
        if set(np.unique(y)) != {0.0, 1.0}:
            raise ValueError("y must hold the labels 0 and 1.")
        self.columns_ = list(X.columns)
        values = X.to_numpy(float)
        binary = np.isin(values, (0.0, 1.0)).all(axis=0)
        self.binary_ = binary.tolist()
        self.mean_ = np.where(binary, 0.0, values.mean(axis=0))
        self.std_ = np.where(binary, 1.0, values.std(axis=0) + 1e-6)
        inputs = self._inputs(X)
        if self.kind == "dcn":
            self.model_ = build_dcn(len(self.columns_), seed=self.seed, **self.params)
        else:
            self.model_ = build_wide_deep(len(self.columns_), inputs[1].shape[1],
                                          seed=self.seed, **self.params)
        stop = keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True)
        hist = self.model_.fit(inputs, y, validation_data=(
            self._inputs(validation[0]), np.asarray(validation[1], dtype="float32")),
            epochs=self.epochs, batch_size=self.batch_size, callbacks=[stop], verbose=0)
        self.history_ = hist.history
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability of a purchase, one per row."""
        if not hasattr(self, "model_"):
            raise not_fitted(self)
        # called eagerly in chunks: model.predict retraces (and warns) for every new shape
        return predict_in_chunks(self.model_, self._inputs(X), 4096).ravel().astype(float)


# --------------------------------------------------------------------------------------
# Calibration and targeting
# --------------------------------------------------------------------------------------

def _yp(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true and proba must be 1-D of equal length, got {y.shape} and "
                         f"{p.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1.")
    if (p < 0).any() or (p > 1).any() or np.isnan(p).any():
        raise ValueError("proba must be probabilities in [0, 1].")
    return y, p


def expected_calibration_error(y_true, proba, bins: int = 10) -> float:
    """ECE: the session-weighted mean gap between predicted and observed rate over
    ``bins`` equal-width probability bins."""
    y, p = _yp(y_true, proba)
    check_positive_int(bins, name="bins")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(y))


class Calibrator:
    """Map scores to probabilities, fitted on validation data: ``"platt"`` (a logistic
    regression on the log-odds) or ``"isotonic"`` (a monotone step function)."""

    def __init__(self, method: str = "platt") -> None:
        if method not in ("platt", "isotonic"):
            raise ValueError(f"method must be 'platt' or 'isotonic', got {method!r}.")
        self.method = method

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))[:, None]

    def fit(self, proba, y_true) -> Calibrator:
        y, p = _yp(y_true, proba)
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            self.model_ = LogisticRegression(C=1e6).fit(self._logit(p), y)
        else:
            from sklearn.isotonic import IsotonicRegression

            self.model_ = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
        return self

    def transform(self, proba) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise not_fitted(self)
        p = np.asarray(proba, dtype=float)
        if self.method == "platt":
            return self.model_.predict_proba(self._logit(p))[:, 1]
        return self.model_.predict(p)


def budget_table(y_true, scores: Mapping[str, object],
                 budgets: Sequence[float] = (0.05, 0.1, 0.2)) -> pd.DataFrame:
    """Conversions per 1,000 impressions when the top ``budget`` share of sessions by each
    model's score is targeted; a "random" row targets at random (the base rate)."""
    y = np.asarray(y_true, dtype=float)
    for b in budgets:
        if not 0 < b <= 1:
            raise ValueError(f"budgets must be shares in (0, 1], got {b}.")
    rows = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=float)
        if s.shape != y.shape:
            raise ValueError(f"scores[{name!r}] has shape {s.shape}, y_true {y.shape}.")
        order = np.argsort(-s, kind="stable")
        rows[name] = {f"{b:.0%}": 1000 * y[order[:max(1, round(b * len(y)))]].mean()
                      for b in budgets}
    rows["random"] = {f"{b:.0%}": 1000 * y.mean() for b in budgets}
    return pd.DataFrame.from_dict(rows, orient="index")


def top_share_rate(budget: float):
    """A metric ``f(y, score)``: conversions per 1,000 in the top ``budget`` share (for
    :func:`companion.foundations.evaluation.paired_bootstrap`)."""
    def metric(y, s):
        k = max(1, round(budget * len(y)))
        return 1000 * np.asarray(y, float)[np.argsort(-np.asarray(s, float),
                                                      kind="stable")[:k]].mean()
    return metric


def _check_ab(base_rate: float, lift: float, alpha: float) -> tuple[float, float]:
    for name, value in (("base_rate", base_rate), ("alpha", alpha)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {value}.")
    treated = base_rate * (1 + lift)
    if lift == 0 or not 0 < treated < 1:
        raise ValueError(f"lift must be non-zero and keep base_rate * (1 + lift) in (0, 1); "
                         f"got lift={lift} on base_rate={base_rate}.")
    return base_rate, treated


def ab_test_power(base_rate: float, lift: float, per_arm: int, *, alpha: float = 0.05
                  ) -> float:
    """Power of a two-sided two-proportion z-test with ``per_arm`` units in each of two
    arms, when the treated rate is ``base_rate * (1 + lift)`` (normal approximation with
    unpooled variances, ignoring the far tail)."""
    from scipy.stats import norm

    p1, p2 = _check_ab(base_rate, lift, alpha)
    check_positive_int(per_arm, name="per_arm")
    se = np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / per_arm)
    return float(norm.cdf(abs(p2 - p1) / se - norm.ppf(1 - alpha / 2)))


def ab_test_size(base_rate: float, lift: float, *, alpha: float = 0.05,
                 power: float = 0.8) -> int:
    """Units per arm for a two-sided two-proportion z-test at level ``alpha`` to detect a
    relative ``lift`` on ``base_rate`` with probability ``power``:
    ``n = (z_{1-alpha/2} + z_power)^2 (p1 q1 + p2 q2) / (p1 - p2)^2``, rounded up."""
    from scipy.stats import norm

    p1, p2 = _check_ab(base_rate, lift, alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}.")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return int(np.ceil(z**2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2))


# --------------------------------------------------------------------------------------
# The comparison of chapter 6.5
# --------------------------------------------------------------------------------------

#: Validation grids of every model family (each is tuned on the validation log loss).
GRIDS: dict[str, list[dict]] = {
    "logistic regression": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
    "LightGBM": [{"num_leaves": nl, "min_child_samples": mc, "reg_lambda": rl}
                 for nl in (7, 15, 31) for mc in (20, 80) for rl in (0.0, 5.0)],
    "DCN-v2": [{"cross_layers": c, "deep": d} for c in (1, 2, 3) for d in ((64, 32), ())],
    "Wide & Deep": [{"deep": d, "l2": l2} for d in ((64, 32), (32,)) for l2 in (1e-5, 1e-3)],
}


def _fit_one(family: str, params: dict, parts, seed: int):
    """Fit one configuration on the training part; return (validation, test) probabilities."""
    (X_tr, y_tr), (X_va, y_va), (X_te, _) = parts["train"], parts["validation"], parts["test"]
    if family == "logistic regression":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **params))
        model.fit(X_tr, y_tr)
        return model.predict_proba(X_va)[:, 1], model.predict_proba(X_te)[:, 1], {}
    if family == "LightGBM":
        lgb = require("lightgbm", "rank")

        model = lgb.LGBMClassifier(n_estimators=2000, learning_rate=0.02, subsample=0.8,
                                   subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                                   n_jobs=1, verbose=-1, **params)
        model.fit(X_tr, y_tr, eval_X=(X_va,), eval_y=(y_va,), eval_metric="binary_logloss",
                  callbacks=[lgb.early_stopping(50, verbose=False)])
        return (model.predict_proba(X_va)[:, 1], model.predict_proba(X_te)[:, 1],
                {"trees": int(model.best_iteration_)})
    kind = "dcn" if family == "DCN-v2" else "wide_deep"
    net = TabularNet(kind, seed=seed, **params).fit(X_tr, y_tr, validation=(X_va, y_va))
    epochs = int(np.argmin(net.history_["val_loss"])) + 1
    return net.predict_proba(X_va), net.predict_proba(X_te), {"epochs": epochs}


def targeting_study(parts: Mapping[str, tuple[pd.DataFrame, np.ndarray]], *, seed: int = 0,
                    grids: Mapping[str, list[dict]] | None = None, progress: bool = True
                    ) -> dict:
    """Tune every family on the validation log loss and keep its best configuration.

    Returns ``{"grid": frame of every configuration's validation log loss, "best": the
    chosen configuration per family, "validation": {family: probabilities}, "test":
    {family: probabilities}}``.
    """
    from tqdm.auto import tqdm

    from companion.foundations.metrics import log_loss

    grids = GRIDS if grids is None else grids
    rows, out = [], {"best": {}, "validation": {}, "test": {}}
    jobs = [(f, p) for f, grid in grids.items() for p in grid]
    for family, params in tqdm(jobs, desc="targeting models", disable=not progress):
        p_va, p_te, extra = _fit_one(family, params, parts, seed)
        loss = log_loss(parts["validation"][1], p_va)
        rows.append({"model": family, "configuration": str(params), **extra,
                     "validation log loss": loss})
        best = out["best"].get(family)
        if best is None or loss < best["validation log loss"]:
            out["best"][family] = {"configuration": str(params), **extra,
                                   "validation log loss": loss}
            out["validation"][family], out["test"][family] = p_va, p_te
    out["grid"] = pd.DataFrame(rows)
    return out
