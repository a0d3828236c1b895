"""Stage two's learned rankers: LightGBM LambdaRank and a Keras listwise MLP.

:class:`~companion.recsys.twostage.LightGBMRanker` (Burges 2010; Ke et al. 2017) and
:class:`~companion.recsys.twostage.KerasListwiseRanker` (a softmax loss over each customer's
candidates) share one interface: ``fit(features, labels, groups)`` and
``predict(features)``; :func:`~companion.recsys.twostage.candidate_ndcg` scores a ranking of
candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion._optional import require
from companion.exceptions import not_fitted

__all__ = ["candidate_ndcg", "LightGBMRanker", "KerasListwiseRanker"]

def _check_xy(features, labels, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {x.shape}.")
    y = np.asarray(labels, dtype=np.float32)
    q = np.asarray(groups)
    if y.shape != (len(x),) or q.shape != (len(x),):
        raise ValueError(f"labels and groups need one value per row of features ({len(x)}), "
                         f"got shapes {y.shape} and {q.shape}.")
    if len(q) and (np.diff(pd.factorize(q)[0]) < 0).any():
        raise ValueError("rows of a query (groups) must be contiguous.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1.")
    return x, y, q


def _query_sizes(groups: np.ndarray) -> np.ndarray:
    change = np.r_[True, groups[1:] != groups[:-1]]
    starts = np.flatnonzero(change)
    return np.diff(np.r_[starts, len(groups)])


def candidate_ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10
                   ) -> float:
    """Mean NDCG@k over queries with a positive label, ranking each query's rows by
    ``scores`` (the ideal counts only the query's positive rows)."""
    frame = pd.DataFrame({"q": groups, "s": scores, "y": labels})
    frame = frame[frame.groupby("q")["y"].transform("max") > 0]
    if frame.empty:
        return float("nan")
    frame = frame.sort_values(["q", "s"], ascending=[True, False], kind="stable")
    pos = frame.groupby("q").cumcount().to_numpy()
    gain = np.where(pos < k, frame["y"].to_numpy() / np.log2(pos + 2), 0.0)
    dcg = pd.Series(gain).groupby(frame["q"].to_numpy()).sum()
    n_pos = frame.groupby("q")["y"].sum()
    disc = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal = disc[np.minimum(n_pos.to_numpy(), k).astype(int) - 1]
    return float(np.mean(dcg.to_numpy() / ideal))


def _fitted_features(ranker, features) -> np.ndarray:
    """``features`` as float32 after checking that ``ranker`` is fitted and the columns fit."""
    if not hasattr(ranker, "model_"):
        raise not_fitted(ranker)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(ranker.feature_names_):
        raise ValueError(f"features must have {len(ranker.feature_names_)} columns, got "
                         f"shape {x.shape}.")
    return x


class LightGBMRanker:
    """Gradient-boosted trees with the LambdaRank objective, one query per customer.

    With validation data and ``early_stopping_rounds`` the number of trees is chosen by
    early stopping on the validation NDCG@10 (at most ``n_estimators``);
    ``best_iteration_`` records it. With ``early_stopping_rounds=None`` exactly
    ``n_estimators`` trees are grown and validation data are ignored.
    ``feature_importances_`` is the total gain of each feature's splits, normalised to
    sum to 1. Deterministic for a given ``seed`` and ``n_jobs``.
    """

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 31, min_child_samples: int = 50,
                 colsample_bytree: float = 0.8, early_stopping_rounds: int | None = 20,
                 n_jobs: int = 1, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.seed = seed

    def fit(self, features, labels, groups, validation: tuple | None = None,
            feature_names: Sequence[str] | None = None) -> LightGBMRanker:
        """Fit on rows grouped by query (``groups``: one query id per row, each query's
        rows contiguous); ``validation`` is an optional ``(features, labels, groups)``."""
        lgb = require("lightgbm", "rank")

        check_positive_int(self.n_estimators, name="n_estimators")
        x, y, q = _check_xy(features, labels, groups)
        self.feature_names_ = (list(feature_names) if feature_names is not None
                               else [f"f{j}" for j in range(x.shape[1])])
        if len(self.feature_names_) != x.shape[1]:
            raise ValueError(f"feature_names has {len(self.feature_names_)} names for "
                             f"{x.shape[1]} columns.")
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
            "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.colsample_bytree, "lambdarank_truncation_level": 20,
            "seed": self.seed, "num_threads": self.n_jobs, "deterministic": True,
            "force_row_wise": True, "verbosity": -1}
        train = lgb.Dataset(x, y, group=_query_sizes(q), feature_name=self.feature_names_,
                            free_raw_data=True)
        kwargs = {}
        if self.early_stopping_rounds is not None:
            check_positive_int(self.early_stopping_rounds, name="early_stopping_rounds")
        if validation is not None and self.early_stopping_rounds is not None:
            vx, vy, vq = _check_xy(*validation)
            if vx.shape[1] != x.shape[1]:
                raise ValueError(f"validation features have {vx.shape[1]} columns, the "
                                 f"training features {x.shape[1]}.")
            kwargs = {"valid_sets": [lgb.Dataset(vx, vy, group=_query_sizes(vq),
                                                 reference=train)],
                      "callbacks": [lgb.early_stopping(self.early_stopping_rounds,
                                                       verbose=False)]}
        self.model_ = lgb.train(params, train, num_boost_round=self.n_estimators, **kwargs)
        best = self.model_.best_iteration
        self.best_iteration_ = int(best) if best and best > 0 else self.n_estimators
        gain = self.model_.feature_importance("gain", iteration=self.best_iteration_)
        self.feature_importances_ = gain / max(gain.sum(), 1e-12)
        return self

    def predict(self, features) -> np.ndarray:
        """Scores of each row (higher is better)."""
        x = _fitted_features(self, features)
        return self.model_.predict(x, num_iteration=self.best_iteration_)


class KerasListwiseRanker:
    """An MLP scoring each candidate, trained with a listwise softmax cross-entropy.

    For a customer with candidates ``1..m``, scores ``s_j`` and labels ``y_j``, the loss is
    ``-sum_j (y_j / sum y) log softmax(s)_j``: the softmax over the customer's candidates
    should put its mass on what they bought (ListNet's top-one loss with binary labels).
    Features are turned into ``sign(x) log(1 + |x|)``, standardised on the training rows
    (missing values become 0 after standardising, with an indicator column per feature
    that had any) and clipped to [-5, 5]. Customers without a positive candidate carry no
    signal and are left out of training. With validation data the number of epochs is
    chosen by early stopping on its NDCG@10 (``patience``); ``best_epoch_`` records it.
    """

    def __init__(self, hidden: Sequence[int] = (64, 32), dropout: float = 0.1,
                 epochs: int = 15, patience: int = 2, batch_size: int = 128,
                 learning_rate: float = 1e-3, seed: int = 0) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed

    def _transform(self, x: np.ndarray) -> np.ndarray:
        z = np.sign(x) * np.log1p(np.abs(x))
        z = (z - self.mean_) / self.scale_
        missing = np.isnan(z[:, self.indicators_]).astype(np.float32)
        z = np.clip(np.nan_to_num(z, nan=0.0), -5.0, 5.0)
        return np.hstack([z, missing]).astype(np.float32)

    def _lists(self, x: np.ndarray, y: np.ndarray, q: np.ndarray, positive_only: bool):
        sizes = _query_sizes(q)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        if positive_only:
            keep = np.add.reduceat(y, starts) > 0 if len(y) else np.zeros(0, bool)
            sizes, starts = sizes[keep], starts[keep]
        width = int(sizes.max()) if len(sizes) else 1
        xs = np.zeros((len(sizes), width, x.shape[1]), dtype=np.float32)
        ys = np.full((len(sizes), width), -1.0, dtype=np.float32)
        for row, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            xs[row, :size] = x[start:start + size]
            ys[row, :size] = y[start:start + size]
        return xs, ys

    def fit(self, features, labels, groups, validation: tuple | None = None,
            feature_names: Sequence[str] | None = None) -> KerasListwiseRanker:
        """Fit on rows grouped by query, as :meth:`LightGBMRanker.fit`."""
        keras = require("keras", "deep")

        from companion.foundations.keras_helpers import seed_everything

        check_positive_int(self.epochs, name="epochs")
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.patience, name="patience")
        x, y, q = _check_xy(features, labels, groups)
        self.feature_names_ = (list(feature_names) if feature_names is not None
                               else [f"f{j}" for j in range(x.shape[1])])
        seed_everything(self.seed)
        z = np.sign(x) * np.log1p(np.abs(x))
        present = ~np.isnan(z)
        count = np.maximum(present.sum(axis=0), 1)
        self.mean_ = np.where(present, z, 0.0).sum(axis=0) / count
        scale = np.sqrt(np.where(present, (z - self.mean_) ** 2, 0.0).sum(axis=0) / count)
        self.scale_ = np.where(scale > 1e-9, scale, 1.0)
        self.indicators_ = np.flatnonzero(np.isnan(x).any(axis=0))
        xs, ys = self._lists(self._transform(x), y, q, positive_only=True)
        if not len(xs):
            raise ValueError("no query has a positive label; nothing to learn.")
        inputs = keras.Input(shape=(None, xs.shape[2]))
        h = inputs
        for units in self.hidden:
            h = keras.layers.Dense(units, activation="relu")(h)
            if self.dropout:
                h = keras.layers.Dropout(self.dropout)(h)
        out = keras.layers.Reshape((-1,))(keras.layers.Dense(1)(h))
        self.model_ = keras.Model(inputs, out)
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                            loss=_softmax_list_loss)
        val = None
        if validation is not None:
            vx, vy, vq = _check_xy(*validation)
            val = (self._transform(vx), vy, vq)
        ranker = self
        self.history_ = []
        state = {"best": -np.inf, "weights": None, "waited": 0}

        class EarlyStopping(keras.callbacks.Callback):
            """Scores the validation lists after each epoch, keeps the best weights."""

            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", np.nan))}
                if val is not None:
                    score = candidate_ndcg(ranker._predict_z(val[0], val[2]), val[1], val[2])
                    row["validation NDCG@10"] = score
                    if score > state["best"]:
                        state.update(best=score, weights=self.model.get_weights(), waited=0)
                        ranker.best_epoch_ = epoch + 1
                    else:
                        state["waited"] += 1
                        self.model.stop_training = state["waited"] >= ranker.patience
                ranker.history_.append(row)

        self.model_.fit(xs, ys, batch_size=self.batch_size, epochs=self.epochs, verbose=0,
                        shuffle=True, callbacks=[EarlyStopping()])
        if state["weights"] is not None:
            self.model_.set_weights(state["weights"])
        else:
            self.best_epoch_ = len(self.history_)
        return self

    def _predict_z(self, z: np.ndarray, q: np.ndarray) -> np.ndarray:
        xs, _ = self._lists(z, np.zeros(len(z), np.float32), q, positive_only=False)
        scores = self.model_.predict(xs, batch_size=256, verbose=0)
        sizes = _query_sizes(q)
        mask = np.arange(scores.shape[1])[None, :] < sizes[:, None]
        return scores[mask].astype(np.float64)

    def predict(self, features, groups=None) -> np.ndarray:
        """Scores of each row. The MLP scores rows independently, so ``groups`` is
        optional (rows are then scored in blocks)."""
        x = _fitted_features(self, features)
        z = self._transform(x)
        q = np.arange(len(z)) // 256 if groups is None else np.asarray(groups)
        return self._predict_z(z, q)


def _softmax_list_loss(y_true, y_pred):
    """Softmax cross-entropy over each padded list; label -1 marks padding."""
    keras = require("keras", "deep")
    ops = require("keras.ops", "deep")

    mask = ops.greater_equal(y_true, 0.0)
    logits = ops.where(mask, y_pred, -1e9)
    target = ops.where(mask, y_true, 0.0)
    target = target / ops.maximum(ops.sum(target, axis=-1, keepdims=True), 1e-9)
    log_p = keras.ops.log_softmax(logits, axis=-1)
    return -ops.sum(target * ops.where(mask, log_p, 0.0), axis=-1)
