"""Context-aware recommendation: each basket described by what is known when the customer
arrives, and models that use it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp
from companion._optional import require
from companion.data.preprocessing import check_interactions
from companion.exceptions import not_fitted
from companion.foundations.nn import EarlyStopping
from companion.recsys.content.catalogue import item_sets
from companion.recsys.ranking import METRICS, metrics_from_hits

#: the context of a basket known when the customer arrives
CONTEXT_FEATURES = ("hour", "weekday", "month", "weeks_to_christmas", "country")


def basket_contexts(transactions: pd.DataFrame) -> pd.DataFrame:
    """One row per invoice: customer, time, country and the context features.

    ``hour`` (clipped to 7..20), ``weekday`` (0 = Monday), ``month``,
    ``weeks_to_christmas`` (whole weeks to the next 25 December, 13 and more pooled as
    13) and ``country``: each read from the invoice's own line, so nothing later enters.
    """
    frame = check_frame(transactions, {"invoice": "string", "customer_id": "integer",
                                       "invoice_date": "datetime", "country": "string"},
                        name="transactions")
    first = frame.sort_values("invoice_date", kind="stable").drop_duplicates("invoice")
    ts = first["invoice_date"]
    christmas = pd.to_datetime(ts.dt.year.astype(str) + "-12-25")
    late = ts.dt.normalize() > christmas
    christmas = christmas.where(~late, pd.to_datetime((ts.dt.year + 1).astype(str) + "-12-25"))
    days = (christmas - ts.dt.normalize()).dt.days
    out = pd.DataFrame({
        "user_id": first["customer_id"].to_numpy(),
        "timestamp": ts.to_numpy(),
        "country": first["country"].astype(str).to_numpy(),
        "hour": ts.dt.hour.clip(7, 20).to_numpy(),
        "weekday": ts.dt.day_of_week.to_numpy(),
        "month": ts.dt.month.to_numpy(),
        "weeks_to_christmas": np.minimum(days.to_numpy() // 7, 13),
    }, index=pd.Index(first["invoice"].astype(str).to_numpy(), name="invoice"))
    return out.sort_values("timestamp", kind="stable")


def _check_contexts(contexts: object, features: Sequence[str]) -> pd.DataFrame:
    if not isinstance(contexts, pd.DataFrame):
        raise TypeError(f"contexts must be a DataFrame from basket_contexts, got "
                        f"{type(contexts).__name__}.")
    for f in features:
        check_in(f, CONTEXT_FEATURES, name="context feature")
    missing = [c for c in ("user_id", "timestamp", *features) if c not in contexts.columns]
    if missing:
        raise ValueError(f"contexts is missing column(s) {missing}.")
    return contexts


@dataclass
class BasketTask:
    """Every basket of a window, each with its own context and items.

    Attributes
    ----------
    train
        Interactions before the window (with ``invoice``).
    contexts
        :func:`basket_contexts` rows of the training invoices.
    baskets
        One row per basket of a customer seen in ``train``: its context columns and
        ``all`` (the set of its items) and ``new`` (those the customer had not bought
        before the window; baskets without any have an empty set).
    description
        How the task was built.
    history
        User id -> set of products bought in ``train`` (excluded on ``new``).
    """

    train: pd.DataFrame
    contexts: pd.DataFrame
    baskets: pd.DataFrame
    description: str
    history: pd.Series


def basket_task(interactions: pd.DataFrame, contexts: pd.DataFrame, start, end=None
                ) -> BasketTask:
    """Per-basket task for the window ``[start, end)``; nothing after ``end`` is read."""
    frame = check_interactions(interactions)
    if "invoice" not in frame.columns:
        raise ValueError("interactions is missing column 'invoice'.")
    contexts = _check_contexts(contexts, CONTEXT_FEATURES)
    start = check_timestamp(start, name="start")
    if end is not None:
        end = check_timestamp(end, name="end")
        if end <= start:
            raise ValueError(f"end={end} must be after start={start}.")
        frame = frame[frame["timestamp"] < end]
    frame = frame.assign(invoice=frame["invoice"].astype(str))
    train = frame[frame["timestamp"] < start]
    window = frame[(frame["timestamp"] >= start) & frame["user_id"].isin(set(train["user_id"]))]
    if train.empty or window.empty:
        raise ValueError(f"the window starting {start} has no training data or no basket of "
                         "a known customer.")
    missing = pd.Index(frame["invoice"].unique()).difference(contexts.index)
    if len(missing):
        raise ValueError(f"contexts lack {len(missing)} invoice(s), e.g. {list(missing[:3])}.")
    history = item_sets(train, "user_id")
    items = item_sets(window, "invoice")
    baskets = contexts.loc[items.index].copy()
    baskets["all"] = items
    baskets["new"] = [basket - history.get(user, set())
                      for basket, user in zip(items, baskets["user_id"], strict=True)]
    baskets = baskets.sort_values(["timestamp"], kind="stable")
    desc = (f"baskets from {start.date()}" + (f" to {end.date()}" if end is not None else "")
            + f": {len(baskets)} baskets of {baskets['user_id'].nunique()} customers")
    return BasketTask(train.reset_index(drop=True),
                      contexts.loc[contexts.index.isin(set(train["invoice"]))], baskets, desc,
                      history)


def evaluate_baskets(model, task: BasketTask, *, k: int = 10,
                     tasks: tuple[str, ...] = ("all", "new")) -> dict[str, pd.DataFrame]:
    """Per-basket metrics@k over the whole catalogue, ``{task: frame}``.

    ``model`` is a context model (with ``score_baskets``) or any fitted
    :class:`~companion.recsys.baselines.Recommender` (which ignores the context). On ``new``
    the customer's past products are excluded and baskets with no new product are left
    out. Each frame is indexed by invoice and has a ``user_id`` column, so intervals can
    resample customers (:func:`per_customer`).
    """
    check_positive_int(k, name="k")
    for name in tasks:
        check_in(name, ("all", "new"), name="task")
    baskets = task.baskets
    if hasattr(model, "score_baskets"):
        scores = model.score_baskets(baskets)
    else:
        scores = model.score(baskets["user_id"].to_numpy())
    items = np.asarray(model.items_)
    codes = pd.Index(items)
    out = {}
    for name in tasks:
        keep = baskets[name].map(len).to_numpy() > 0
        part, s = baskets[keep], scores[keep].copy()
        if name == "new":
            seen = task.history
            for row, user in enumerate(part["user_id"]):
                cols = codes.get_indexer(list(seen.get(user, ())))
                s[row, cols[cols >= 0]] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        rec = items[np.take_along_axis(top, order, axis=1)]
        hits = np.array([[i in relevant for i in row]
                         for row, relevant in zip(rec, part[name], strict=True)], dtype=bool)
        frame = metrics_from_hits(hits, part[name].map(len).to_numpy())
        frame.index = part.index
        frame.insert(0, "user_id", part["user_id"].to_numpy())
        out[name] = frame
    return out


def per_customer(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over a customer's baskets (one row per customer)."""
    if "user_id" not in frame.columns:
        raise ValueError("frame is missing column 'user_id'; use evaluate_baskets output.")
    return frame.groupby("user_id")[list(METRICS)].mean()


class _ContextCodes:
    """Integer codes of context values; values unseen in training map to 0."""

    def fit(self, contexts: pd.DataFrame, features: Sequence[str], min_count: int = 20):
        self.features = tuple(features)
        self.values_ = {}
        for f in self.features:
            counts = contexts[f].astype(str).value_counts()
            kept = sorted(counts[counts >= min_count].index)
            self.values_[f] = {v: i + 1 for i, v in enumerate(kept)}
        return self

    def transform(self, contexts: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(contexts), len(self.features)), dtype=np.int32)
        for j, f in enumerate(self.features):
            out[:, j] = contexts[f].astype(str).map(self.values_[f]).fillna(0).to_numpy()
        return out

    def sizes(self) -> list[int]:
        return [len(self.values_[f]) + 1 for f in self.features]


class ContextPopularity:
    """Popular in this context: a smoothed naive-Bayes mix of per-context popularity.

    ``log p(i) + sum_f [log p(i | f = v) - log p(i)]``, where ``p(i | f = v)`` is the
    share of training baskets with context value ``v`` that hold product ``i``, shrunk
    towards ``p(i)`` with ``alpha`` pseudo-baskets. No customer history is used.
    """

    def __init__(self, features: Sequence[str] = ("hour", "weekday", "weeks_to_christmas"),
                 alpha: float = 50.0) -> None:
        self.features, self.alpha = tuple(features), alpha

    def fit(self, train: pd.DataFrame, contexts: pd.DataFrame) -> ContextPopularity:
        frame = check_interactions(train, name="train")
        contexts = _check_contexts(contexts, self.features)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}.")
        self.items_ = np.sort(frame["item_id"].astype(str).unique())
        codes = pd.Index(self.items_)
        item = codes.get_indexer(frame["item_id"].astype(str))
        n_baskets = frame["invoice"].nunique()
        count = np.bincount(item, minlength=len(codes)).astype(float)
        self.log_p_ = np.log((count + 1.0) / (n_baskets + len(codes)))
        invoices = frame["invoice"].astype(str)
        train_ctx = contexts.loc[contexts.index.isin(set(invoices))]
        missing = pd.Index(invoices.unique()).difference(train_ctx.index)
        if len(missing):
            raise ValueError(f"contexts lack {len(missing)} training invoice(s), e.g. "
                             f"{list(missing[:3])}.")
        self.codes_ = _ContextCodes().fit(train_ctx, self.features, min_count=1)
        basket_ctx = self.codes_.transform(train_ctx)
        ctx = basket_ctx[train_ctx.index.get_indexer(invoices)]
        p = np.exp(self.log_p_)
        self.tables_ = []
        for j, size in enumerate(self.codes_.sizes()):
            joint = np.bincount(ctx[:, j] * len(codes) + item, minlength=size * len(codes)
                                ).reshape(size, len(codes)).astype(float)
            n_v = np.bincount(basket_ctx[:, j], minlength=size).astype(float)
            cond = (joint + self.alpha * p[None]) / (n_v[:, None] + self.alpha)
            self.tables_.append((np.log(cond) - self.log_p_[None]).astype(np.float32))
        return self

    def score_baskets(self, baskets: pd.DataFrame) -> np.ndarray:
        ctx = self.codes_.transform(_check_contexts(baskets, self.features))
        out = np.broadcast_to(self.log_p_.astype(np.float32), (len(baskets), len(self.items_)))
        out = out.copy()
        for j, table in enumerate(self.tables_):
            out += table[ctx[:, j]]
        return out


class ContextTwoTower:
    """Two-tower retrieval per basket, with the basket's context in the query tower.

    The query tower embeds the customer and, for each name in ``features``, the
    basket's context value; the item tower embeds the product. Every purchase line of a
    training basket is a positive for that basket's query, and the other products of the
    batch are its negatives (in-batch softmax with logQ correction). With
    ``features=()`` it is the same model without context, so the two can be trained
    identically and compared. ``fit`` may early-stop on a validation :class:`BasketTask`
    (mean NDCG@10 of its tasks); ``best_epoch_`` records the epoch kept.
    """

    def __init__(self, features: Sequence[str] = CONTEXT_FEATURES, dim: int = 32,
                 context_dim: int = 8, temperature: float = 0.1, epochs: int = 10,
                 batch_size: int = 512, learning_rate: float = 1e-2, patience: int = 1,
                 lines_per_epoch: int | None = 100_000, half_life_days: float | None = None,
                 seed: int = 0) -> None:
        self.lines_per_epoch = lines_per_epoch
        self.features, self.dim, self.context_dim = tuple(features), dim, context_dim
        self.temperature, self.epochs, self.batch_size = temperature, epochs, batch_size
        self.learning_rate, self.patience = learning_rate, patience
        self.half_life_days, self.seed = half_life_days, seed

    def __repr__(self) -> str:
        names = ("features", "dim", "context_dim", "temperature", "epochs", "batch_size",
                 "learning_rate", "patience", "lines_per_epoch", "half_life_days", "seed")
        return "ContextTwoTower(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

    def _build(self):
        keras = require("keras", "deep")

        u = keras.Input(shape=(), dtype="int32")
        c = keras.Input(shape=(len(self.features),), dtype="int32")
        parts = [keras.layers.Embedding(self.n_users_, self.dim, embeddings_initializer=(
            keras.initializers.RandomNormal(stddev=0.05, seed=self.seed)))(u)]
        for j, size in enumerate(self.codes_.sizes()):
            parts.append(keras.layers.Embedding(size, self.context_dim, embeddings_initializer=(
                keras.initializers.RandomNormal(stddev=0.05, seed=self.seed + 10 + j)))(
                c[:, j]))
        h = parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)
        h = keras.layers.Dense(self.dim, activation="relu", kernel_initializer=(
            keras.initializers.HeNormal(seed=self.seed + 1)))(h)
        h = keras.layers.Dense(self.dim, kernel_initializer=keras.initializers.GlorotUniform(
            seed=self.seed + 2))(h)
        query = keras.Model([u, c], keras.ops.normalize(h, axis=-1))
        i = keras.Input(shape=(), dtype="int32")
        items = keras.layers.Embedding(self.n_items_, self.dim, embeddings_initializer=(
            keras.initializers.RandomNormal(stddev=0.05, seed=self.seed + 3)))
        item = keras.Model(i, keras.ops.normalize(items(i), axis=-1))
        q = keras.Input(shape=(), dtype="float32")
        logits = keras.ops.matmul(query([u, c]), keras.ops.transpose(item(i)))
        logits = logits / self.temperature - keras.ops.expand_dims(q, 0)
        model = keras.Model([u, c, i, q], logits)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return query, item, model

    def fit(self, train: pd.DataFrame, contexts: pd.DataFrame,
            validation: BasketTask | None = None, progress: bool = False) -> ContextTwoTower:
        """Train on every line of ``train`` with its basket's context."""
        from tqdm.auto import tqdm

        from companion.foundations.keras_helpers import seed_everything

        for name in ("epochs", "batch_size", "dim", "context_dim"):
            check_positive_int(getattr(self, name), name=name)
        frame = check_interactions(train, name="train")
        if "invoice" not in frame.columns:
            raise ValueError("train is missing column 'invoice'.")
        contexts = _check_contexts(contexts, self.features)
        invoices = frame["invoice"].astype(str)
        missing = pd.Index(invoices.unique()).difference(contexts.index)
        if len(missing):
            raise ValueError(f"contexts lack {len(missing)} training invoice(s), e.g. "
                             f"{list(missing[:3])}.")
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        self.users_ = np.sort(frame["user_id"].unique())
        self.items_ = np.sort(frame["item_id"].astype(str).unique())
        self.n_users_, self.n_items_ = len(self.users_), len(self.items_)
        user = np.searchsorted(self.users_, frame["user_id"].to_numpy()).astype(np.int32)
        item = pd.Index(self.items_).get_indexer(frame["item_id"].astype(str)).astype(np.int32)
        train_ctx = contexts.loc[contexts.index.isin(set(invoices))]
        self.codes_ = _ContextCodes().fit(train_ctx, self.features)
        ctx = self.codes_.transform(train_ctx)[train_ctx.index.get_indexer(invoices)]
        freq = np.bincount(item, minlength=self.n_items_) + 1.0
        log_q = np.log(freq / freq.sum()).astype(np.float32)
        weight = None
        if self.half_life_days is not None:
            if not self.half_life_days > 0:
                raise ValueError(f"half_life_days must be positive or None, got "
                                 f"{self.half_life_days}.")
            age = (frame["timestamp"].max() - frame["timestamp"]).dt.total_seconds() / 86400
            weight = np.power(0.5, age.to_numpy() / self.half_life_days)
            weight = (weight / weight.mean()).astype(np.float32)
        self.query_, self.item_, model = self._build()
        b = self.batch_size
        if len(user) < b:
            raise ValueError(f"batch_size={b} exceeds the {len(user)} training lines.")
        n = len(user) if self.lines_per_epoch is None else min(
            len(user), check_positive_int(self.lines_per_epoch, name="lines_per_epoch"))
        labels = np.tile(np.arange(b, dtype=np.int32), max(n // b, 1))
        stopper = EarlyStopping(self.patience)
        self.history_ = []
        for epoch in tqdm(range(1, self.epochs + 1), desc="context two-tower",
                          disable=not progress, leave=False):
            tic = time.perf_counter()
            order = rng.permutation(len(user))[: len(labels)]
            hist = model.fit([user[order], ctx[order], item[order], log_q[item[order]]], labels,
                             sample_weight=None if weight is None else weight[order],
                             batch_size=b, epochs=1, verbose=0, shuffle=False)
            row = {"epoch": epoch, "loss": float(hist.history["loss"][-1]),
                   "seconds": time.perf_counter() - tic}
            if validation is not None:
                self._cache()
                scores = evaluate_baskets(self, validation)
                row["validation NDCG@10"] = float(np.mean([f["NDCG"].mean()
                                                           for f in scores.values()]))
                stopper.update(epoch, row["validation NDCG@10"], model.get_weights)
            self.history_.append(row)
            if validation is not None and stopper.stop:
                break
        self.best_epoch_ = stopper.finish(model.set_weights, len(self.history_))
        self._cache()
        return self

    def _cache(self) -> None:
        from companion.foundations.keras_helpers import predict_in_chunks

        self.item_vectors_ = predict_in_chunks(self.item_, np.arange(self.n_items_, dtype=np.int32))

    def score_baskets(self, baskets: pd.DataFrame) -> np.ndarray:
        """Scores of every product for each basket's customer and context."""
        from companion.foundations.keras_helpers import predict_in_chunks

        if not hasattr(self, "item_vectors_"):
            raise not_fitted(self)
        baskets = _check_contexts(baskets, self.features)
        users = np.searchsorted(self.users_, baskets["user_id"].to_numpy())
        known = (users < self.n_users_) & (
            self.users_[np.minimum(users, self.n_users_ - 1)] == baskets["user_id"].to_numpy())
        if not known.all():
            bad = baskets["user_id"].to_numpy()[~known][:3].tolist()
            raise ValueError(f"{int((~known).sum())} basket(s) belong to customers unseen in "
                             f"training, e.g. {bad}.")
        ctx = self.codes_.transform(baskets)
        vectors = predict_in_chunks(self.query_, [users.astype(np.int32), ctx])
        return vectors @ self.item_vectors_.T
