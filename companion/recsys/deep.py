"""Keras recommenders that follow the protocol of :mod:`companion.recsys.baselines`.

All are trained epoch by epoch with Adam. When ``fit`` is given ``validation``
interactions (a later time window), each epoch is scored by NDCG@10 on that window and
training stops once it has not improved for ``patience`` epochs, restoring the best
weights; ``best_epoch_`` records the epoch, so that a final model can be refitted on more
data for exactly that many epochs.

**Why one module.** The Keras recommenders share one training loop (epochs, early stopping
on validation NDCG, the best weights restored) and the recency weights; each model adds only
its network and its scoring.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion._optional import require
from companion.data.preprocessing import check_interactions
from companion.foundations.keras_helpers import (
    STEPS_PER_EXECUTION,
    predict_in_chunks,
    seed_everything,
)
from companion.foundations.nn import EarlyStopping
from companion.recsys.baselines import Recommender

require("keras", "deep", load=False)


class KerasRecommender(Recommender):
    """Shared training loop of the Keras models."""

    uses_keras = True

    def fit(self, interactions: pd.DataFrame, validation: pd.DataFrame | None = None):
        """Fit; with ``validation`` interactions, early-stop on their NDCG@10."""
        self._validation = validation
        try:
            return super().fit(interactions)
        finally:
            self._validation = None

    def _fit(self, frame, counts):
        check_positive_int(self.epochs, name="epochs")
        check_positive_int(self.batch_size, name="batch_size")
        seed_everything(self.seed)
        self.rng_ = np.random.default_rng(self.seed)
        self._prepare(frame, counts)
        self.model_ = self._build()
        task = None
        if self._validation is not None:
            from companion.recsys.ranking import RankingTask

            task = RankingTask.from_split(frame.drop(columns=["u", "i"]), self._validation)
        stopper = EarlyStopping(self.patience)
        self.history_ = []
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            loss = self._train_epoch()
            row = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start}
            if task is not None:
                row["validation NDCG@10"] = _validation_ndcg(self, task)
                stopper.update(epoch, row["validation NDCG@10"], self.model_.get_weights)
            self.history_.append(row)
            if task is not None and stopper.stop:
                break
        self.best_epoch_ = stopper.finish(self.model_.set_weights, len(self.history_))
        self._after_fit()

    def _after_fit(self) -> None:
        """Cache what scoring needs (for example item vectors)."""

    def partial_fit(self, interactions: pd.DataFrame, epochs: int = 1):
        """Warm start: train ``epochs`` more epochs on new interactions only, starting from
        the fitted weights (see :meth:`Recommender.partial_fit`)."""
        check_positive_int(epochs, name="epochs")
        self._partial_epochs = epochs
        return super().partial_fit(interactions)

    def _fit_arrays(self, inputs, targets, sample_weight=None) -> float:
        hist = self.model_.fit(inputs, targets, sample_weight=sample_weight,
                               batch_size=self.batch_size, epochs=1, verbose=0, shuffle=False)
        return float(hist.history["loss"][-1])

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return int(sum(np.prod(w.shape) for w in self.model_.trainable_weights))




def _validation_ndcg(model: Recommender, task) -> float:
    from companion.recsys.ranking import evaluate

    if hasattr(model, "_after_fit"):
        model._after_fit()
    result = evaluate(model, task, k=10)
    return float(np.mean([frame["NDCG"].mean() for frame in result.values()]))


def _positives(counts: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    coo = counts.tocoo()
    return coo.row.astype(np.int32), coo.col.astype(np.int32)


def _pair_ages(frame: pd.DataFrame, users: str = "u", items: str = "i") -> pd.Series:
    """Days from each (user, item) pair's last purchase to the end of ``frame``, indexed by
    the pair: the age that the recency weights and the ``max_age_days`` cut both read."""
    last = frame.groupby([users, items])["timestamp"].max()
    return (frame["timestamp"].max() - last).dt.total_seconds() / 86400


def _recency_weights(frame: pd.DataFrame, users: np.ndarray, items: np.ndarray,
                     half_life_days: float | None) -> np.ndarray | None:
    """Weight of each (user, item) pair: ``0.5 ** (age / half_life_days)``, where age is
    the days from the pair's last purchase to the end of the training data; mean 1."""
    if half_life_days is None:
        return None
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be positive or None, got {half_life_days}.")
    ages = _pair_ages(frame)
    age, codes = ages.to_numpy(), ages.index
    shape = (int(max(users.max(), codes.get_level_values(0).max())) + 1,
             int(max(items.max(), codes.get_level_values(1).max())) + 1)
    table = sp.csr_matrix((0.5 ** (age / half_life_days) + 1e-12,
                           (codes.get_level_values(0), codes.get_level_values(1))),
                          shape=shape)
    weight = np.asarray(table[users, items]).ravel().astype(np.float32)
    return weight / weight.mean()


def age_cut(interactions: pd.DataFrame, half_life_days: float,
            max_age_days: float) -> dict[str, float]:
    """What leaving out pairs older than ``max_age_days`` removes (see :class:`TwoTower`).

    Each (user, item) pair is aged from its last purchase to the end of
    ``interactions``. Returns ``pairs kept``, the share of pairs last bought within
    ``max_age_days``, and ``weight dropped``, the share of the pairs' total recency weight
    ``0.5 ** (age / half_life_days)`` that the older pairs carry.
    """
    frame = check_interactions(interactions)
    for value, name in ((half_life_days, "half_life_days"), (max_age_days, "max_age_days")):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    age = _pair_ages(frame, "user_id", "item_id").to_numpy()
    weight = 0.5 ** (age / half_life_days)
    old = age > max_age_days
    return {"pairs kept": float(1 - old.mean()),
            "weight dropped": float(weight[old].sum() / weight.sum())}


class MatrixFactorization(KerasRecommender):
    """Matrix factorisation trained with the BPR ranking loss (Rendle et al., 2009).

    Scores ``p_u . q_i + b_i``; each epoch pairs every observed (user, item) with a random
    item and maximises ``log sigmoid(s_ui - s_uj)``.
    """

    def __init__(self, dim: int = 64, l2: float = 1e-5, epochs: int = 30,
                 batch_size: int = 4096, learning_rate: float = 5e-3, patience: int = 3,
                 seed: int = 0) -> None:
        self.dim, self.l2, self.epochs, self.batch_size = dim, l2, epochs, batch_size
        self.learning_rate, self.patience, self.seed = learning_rate, patience, seed

    def _prepare(self, frame, counts):
        self.users_, self.items_pos_ = _positives(counts)
        self.n_users_, self.n_items_ = counts.shape

    def _build(self):
        import keras

        reg = keras.regularizers.L2(self.l2)
        u = keras.Input(shape=(), dtype="int32")
        i = keras.Input(shape=(), dtype="int32")
        j = keras.Input(shape=(), dtype="int32")
        users = keras.layers.Embedding(self.n_users_, self.dim, embeddings_regularizer=reg,
                                       embeddings_initializer=keras.initializers.RandomNormal(
                                           stddev=0.05, seed=self.seed), name="users")
        items = keras.layers.Embedding(self.n_items_, self.dim, embeddings_regularizer=reg,
                                       embeddings_initializer=keras.initializers.RandomNormal(
                                           stddev=0.05, seed=self.seed + 1), name="items")
        bias = keras.layers.Embedding(self.n_items_, 1, embeddings_initializer="zeros",
                                      name="bias")
        pu = users(u)
        s_i = keras.ops.sum(pu * items(i), axis=-1) + keras.ops.squeeze(bias(i), -1)
        s_j = keras.ops.sum(pu * items(j), axis=-1) + keras.ops.squeeze(bias(j), -1)
        model = keras.Model([u, i, j], s_i - s_j)
        model.compile(steps_per_execution=STEPS_PER_EXECUTION,
                      optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        return model

    def _train_epoch(self):
        order = self.rng_.permutation(len(self.users_))
        neg = self.rng_.integers(0, self.n_items_, len(order)).astype(np.int32)
        ones = np.ones(len(order), dtype=np.float32)
        return self._fit_arrays([self.users_[order], self.items_pos_[order], neg], ones)

    def _after_fit(self):
        self.user_vectors_ = self.model_.get_layer("users").get_weights()[0]
        self.item_vectors_ = self.model_.get_layer("items").get_weights()[0]
        self.item_bias_ = self.model_.get_layer("bias").get_weights()[0][:, 0]

    def _score(self, users):
        return self.user_vectors_[users] @ self.item_vectors_.T + self.item_bias_


class NeuMF(KerasRecommender):
    """Neural matrix factorisation (He et al., 2017): GMF and MLP branches, fused.

    Trained as binary classification of observed pairs against ``negatives`` random items
    per positive. Scoring runs the network on every (user, item) pair, which is why it is
    the slowest model to serve.
    """

    def __init__(self, dim: int = 32, hidden: tuple[int, ...] = (64, 32), negatives: int = 4,
                 epochs: int = 20, batch_size: int = 4096, learning_rate: float = 2e-3,
                 patience: int = 2, seed: int = 0) -> None:
        self.dim, self.hidden, self.negatives, self.epochs = dim, hidden, negatives, epochs
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.patience, self.seed = patience, seed

    def _prepare(self, frame, counts):
        self.users_, self.items_pos_ = _positives(counts)
        self.n_users_, self.n_items_ = counts.shape

    def _build(self):
        import keras

        u = keras.Input(shape=(), dtype="int32")
        i = keras.Input(shape=(), dtype="int32")
        gmf = keras.layers.Embedding(self.n_users_, self.dim, name="gmf_users")(u) * \
            keras.layers.Embedding(self.n_items_, self.dim, name="gmf_items")(i)
        h = keras.ops.concatenate([
            keras.layers.Embedding(self.n_users_, self.dim, name="mlp_users")(u),
            keras.layers.Embedding(self.n_items_, self.dim, name="mlp_items")(i)], axis=-1)
        for depth, units in enumerate(self.hidden):
            h = keras.layers.Dense(units, activation="relu", kernel_initializer="he_normal",
                                   name=f"hidden_{depth}")(h)
        logit = keras.layers.Dense(1, name="output")(keras.ops.concatenate([gmf, h], axis=-1))
        model = keras.Model([u, i], keras.ops.squeeze(logit, -1))
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        return model

    def _train_epoch(self):
        n = len(self.users_)
        users = np.concatenate([self.users_, np.repeat(self.users_, self.negatives)])
        items = np.concatenate([self.items_pos_, self.rng_.integers(
            0, self.n_items_, n * self.negatives).astype(np.int32)])
        labels = np.concatenate([np.ones(n), np.zeros(n * self.negatives)]).astype(np.float32)
        order = self.rng_.permutation(len(users))
        return self._fit_arrays([users[order], items[order]], labels[order])

    def _after_fit(self):
        layer = self.model_.get_layer
        gmf_users, gmf_items = (layer(n).get_weights()[0] for n in ("gmf_users", "gmf_items"))
        mlp_users, mlp_items = (layer(n).get_weights()[0] for n in ("mlp_users", "mlp_items"))
        self.hidden_weights_ = [layer(f"hidden_{d}").get_weights()
                                for d in range(len(self.hidden))]
        w_out, self.out_bias_ = layer("output").get_weights()
        w_gmf, self.w_mlp_ = w_out[:self.dim, 0], w_out[self.dim:, 0]
        # the GMF branch's part of the logit is a dot product of a user and an item vector
        self.gmf_users_, self.gmf_items_ = gmf_users, gmf_items * w_gmf
        # the first layer after concat(user, item) is a user part plus an item part
        kernel, bias = self.hidden_weights_[0] if self.hidden else \
            (self.w_mlp_[:, None], np.zeros(1, np.float32))
        self.mlp_user_part_ = mlp_users @ kernel[:self.dim] + bias
        self.mlp_item_part_ = mlp_items @ kernel[self.dim:]

    def _score(self, users):
        """The network's logit for every (user, item) pair, computed in NumPy.

        The GMF branch's share of the logit is a matrix product, and the first hidden
        layer splits into a user part and an item part, so only the later layers run per
        pair (the same numbers as calling the Keras model on every pair, tested).
        """
        out = self.gmf_users_[users] @ self.gmf_items_.T + self.out_bias_[0]
        if not self.hidden:  # no hidden layer: the MLP branch is linear
            return (out + self.mlp_user_part_[users] + self.mlp_item_part_[:, 0]
                    ).astype(np.float32)
        for lo in range(0, len(users), 64):
            rows = users[lo:lo + 64]
            h = self.mlp_user_part_[rows, None] + self.mlp_item_part_[None]
            h = np.maximum(h, 0, out=h).reshape(-1, h.shape[-1])  # 2-D for BLAS
            for kernel, bias in self.hidden_weights_[1:]:
                h = h @ kernel
                h += bias
                np.maximum(h, 0, out=h)
            out[lo:lo + 64] += (h @ self.w_mlp_).reshape(len(rows), -1)
        return out.astype(np.float32)


_MAX_WORDS = 12  # description words kept per item by the two-tower model


class TwoTower(KerasRecommender):
    """Two-tower retrieval with in-batch negatives, item text and user context.

    The item tower embeds the item id and the mean embedding of the words of its
    description (words found in at least two descriptions, at most 12 per item); the user
    tower embeds the user id and a context value (the country). A batch of ``B`` observed
    pairs gives a ``B x B`` score matrix whose diagonal holds the positives and whose other
    entries serve as negatives; the logits are corrected by the log of each item's
    frequency so that popular items are not over-penalised as negatives (logQ correction).
    With ``half_life_days`` each pair's loss is weighted by how recently it was bought, so
    that the model leans towards current tastes and season; with ``max_age_days`` as well,
    pairs last bought longer ago than that are left out of training, which saves their
    share of every epoch's work at the cost of their small weight (:func:`age_cut`
    measures both).
    """

    def __init__(self, dim: int = 64, item_text: pd.Series | None = None,
                 user_context: pd.Series | None = None, temperature: float = 0.1,
                 epochs: int = 30, batch_size: int = 1024, learning_rate: float = 5e-3,
                 patience: int = 3, half_life_days: float | None = None,
                 max_age_days: float | None = None,
                 spare_users: int = 0, spare_items: int = 0, seed: int = 0) -> None:
        self.half_life_days, self.max_age_days = half_life_days, max_age_days
        self.dim, self.item_text, self.user_context = dim, item_text, user_context
        self.temperature, self.epochs, self.batch_size = temperature, epochs, batch_size
        self.learning_rate, self.patience, self.seed = learning_rate, patience, seed
        self.spare_users, self.spare_items = spare_users, spare_items

    def _prepare(self, frame, counts):
        from sklearn.feature_extraction.text import CountVectorizer

        for name in ("spare_users", "spare_items"):
            check_positive_int(getattr(self, name), name=name, minimum=0)
        for stale in ("towers_", "model_"):  # a refit builds new towers
            self.__dict__.pop(stale, None)
        self.n_users_, self.n_items_ = counts.shape
        self.capacity_ = (self.n_users_ + self.spare_users, self.n_items_ + self.spare_items)
        self._training_pairs(frame, counts)
        docs = self._docs(self.items_)
        vec = CountVectorizer(min_df=2, binary=True)
        try:
            vec.fit(docs)
            self.vocabulary_ = vec.vocabulary_
        except ValueError:  # no vocabulary (no text given)
            self.vocabulary_ = {}
        self.n_words_ = len(self.vocabulary_) + 1
        self.tokens_ = self._tokens(docs)
        ctx = self._contexts(self.user_encoder_.classes_)
        self.context_values_ = np.array(sorted(set(ctx) | {"unknown"}))
        self.context_ = np.searchsorted(self.context_values_, ctx).astype(np.int32)
        freq = np.bincount(self.items_pos_, minlength=self.n_items_) + 1.0
        self.log_q_ = np.log(freq / freq.sum()).astype(np.float32)

    def _training_pairs(self, frame, counts) -> None:
        """The (user, item) pairs an epoch trains on, with their recency weights; pairs
        last bought more than ``max_age_days`` before the end of the data are left out."""
        self.users_, self.items_pos_ = _positives(counts)
        if self.max_age_days is not None:
            if not self.max_age_days > 0:
                raise ValueError("max_age_days must be positive or None, got "
                                 f"{self.max_age_days}.")
            ages = _pair_ages(frame)
            recent = ages[ages <= self.max_age_days].index
            keep = pd.MultiIndex.from_arrays([self.users_, self.items_pos_]).isin(recent)
            self.users_, self.items_pos_ = self.users_[keep], self.items_pos_[keep]
        self.pair_weight_ = _recency_weights(frame, self.users_, self.items_pos_,
                                             self.half_life_days)

    def _docs(self, items) -> pd.Series:
        text = (self.item_text if self.item_text is not None else pd.Series(dtype=str))
        return text.reindex(items).fillna("").astype(str)

    def _tokens(self, docs: pd.Series) -> np.ndarray:
        """Word ids (1-based, 0 = padding) of each description, at most ``_MAX_WORDS``."""
        from sklearn.feature_extraction.text import CountVectorizer

        analyse = CountVectorizer(binary=True).build_analyzer()
        vocab = self.vocabulary_
        out = np.zeros((len(docs), _MAX_WORDS), dtype=np.int32)
        for row, doc in enumerate(docs):
            ids = [vocab[w] + 1 for w in dict.fromkeys(analyse(doc)) if w in vocab][:_MAX_WORDS]
            out[row, :len(ids)] = ids
        return out

    def _contexts(self, users) -> np.ndarray:
        context = (self.user_context if self.user_context is not None else pd.Series(dtype=str))
        return context.reindex(users).fillna("unknown").astype(str).to_numpy()

    def _partial_fit(self, frame, counts):
        n_users, n_items = counts.shape
        for n, capacity, name in ((n_users, self.capacity_[0], "spare_users"),
                                  (n_items, self.capacity_[1], "spare_items")):
            if n > capacity:
                raise ValueError(f"{n - capacity} more ids than the model has room for; "
                                 f"raise {name} or refit on all the data.")
        new_users = self.user_encoder_.classes_[self.n_users_:]
        index = {value: code for code, value in enumerate(self.context_values_)}
        ctx = [index.get(value, index["unknown"]) for value in self._contexts(new_users)]
        self.context_ = np.concatenate([self.context_, np.asarray(ctx, dtype=np.int32)])
        new_items = self.item_encoder_.classes_[self.n_items_:]
        self.tokens_ = np.vstack([self.tokens_, self._tokens(self._docs(new_items))])
        self.n_users_, self.n_items_ = n_users, n_items
        self._training_pairs(frame, counts)
        freq = np.asarray((self.seen_ > 0).sum(axis=0)).ravel() + 1.0
        self.log_q_ = np.log(freq / freq.sum()).astype(np.float32)
        batch = self.batch_size
        self.batch_size = min(batch, len(self.users_))
        try:
            for _ in range(self._partial_epochs):
                self._train_epoch()
        finally:
            self.batch_size = batch
        self._after_fit()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("towers_", None)  # rebuilt from model_, so that they share its weights
        return state

    def _towers(self):
        import keras

        if hasattr(self, "towers_"):
            return self.towers_
        if hasattr(self, "model_"):
            self.towers_ = (self.model_.get_layer("user_tower"),
                            self.model_.get_layer("item_tower"))
            return self.towers_
        n_users, n_items = self.capacity_
        u = keras.Input(shape=(), dtype="int32")
        c = keras.Input(shape=(), dtype="int32")
        user = keras.ops.concatenate([
            keras.layers.Embedding(n_users, self.dim)(u),
            keras.layers.Embedding(len(self.context_values_), 8)(c)], axis=-1)
        user = keras.layers.Dense(self.dim)(keras.layers.Dense(
            self.dim, activation="relu", kernel_initializer="he_normal")(user))
        user_tower = keras.Model([u, c], keras.ops.normalize(user, axis=-1), name="user_tower")
        i = keras.Input(shape=(), dtype="int32")
        t = keras.Input(shape=(_MAX_WORDS,), dtype="int32")
        mask = keras.ops.cast(keras.ops.greater(t, 0), "float32")[..., None]
        words = keras.layers.Embedding(self.n_words_, self.dim)(t) * mask
        text = keras.ops.sum(words, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        item = keras.ops.concatenate([keras.layers.Embedding(n_items, self.dim)(i), text],
                                     axis=-1)
        item = keras.layers.Dense(self.dim)(keras.layers.Dense(
            self.dim, activation="relu", kernel_initializer="he_normal")(item))
        item_tower = keras.Model([i, t], keras.ops.normalize(item, axis=-1), name="item_tower")
        self.towers_ = (user_tower, item_tower)
        return self.towers_

    def _build(self):
        import keras

        user_tower, item_tower = self._towers()
        u = keras.Input(shape=(), dtype="int32")
        c = keras.Input(shape=(), dtype="int32")
        i = keras.Input(shape=(), dtype="int32")
        t = keras.Input(shape=(_MAX_WORDS,), dtype="int32")
        q = keras.Input(shape=(), dtype="float32")
        logits = keras.ops.matmul(user_tower([u, c]), keras.ops.transpose(item_tower([i, t])))
        logits = logits / self.temperature - keras.ops.expand_dims(q, 0)
        model = keras.Model([u, c, i, t, q], logits)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def _train_epoch(self):
        b = self.batch_size
        order = self.rng_.permutation(len(self.users_))
        order = order[: len(order) // b * b]
        if len(order) == 0:
            raise ValueError(f"batch_size={b} exceeds the {len(self.users_)} training pairs.")
        users, items = self.users_[order], self.items_pos_[order]
        labels = np.tile(np.arange(b, dtype=np.int32), len(order) // b)
        weight = None if self.pair_weight_ is None else self.pair_weight_[order]
        return self._fit_arrays([users, self.context_[users], items, self.tokens_[items],
                                 self.log_q_[items]], labels, sample_weight=weight)

    def _after_fit(self):
        user_tower, item_tower = self._towers()
        all_users = np.arange(self.n_users_, dtype=np.int32)
        self.user_vectors_ = predict_in_chunks(
            user_tower, [all_users, self.context_[all_users]], 8192)
        self.item_vectors_ = predict_in_chunks(
            item_tower, [np.arange(self.n_items_, dtype=np.int32), self.tokens_], 8192)

    def _score(self, users):
        return self.user_vectors_[users] @ self.item_vectors_.T


class SASRec(KerasRecommender):
    """A Transformer over each customer's purchase history (after Kang & McAuley, 2018).

    Items bought, in time order, pass through an item embedding plus a learned position
    embedding and ``blocks`` causal self-attention blocks; the output at each position is
    trained to give the next item the highest score against ``negatives`` random items
    (sampled softmax). With ``negatives=None`` the loss is the softmax cross-entropy over
    the whole catalogue, which Klenitskiy & Vasilev (2023) found to train SASRec better on
    public benchmarks; on a CPU it makes each epoch several times slower.
    Each history is cut into windows of ``max_len + 1`` purchases from its end backwards;
    ``windows_per_user`` keeps only the most recent ones (cheaper epochs, recent tastes).
    To recommend, the last ``max_len`` purchases are read and the final position is scored
    against every item's embedding.
    """

    def __init__(self, dim: int = 32, blocks: int = 1, heads: int = 2, max_len: int = 30,
                 dropout: float = 0.1, negatives: int | None = 100, epochs: int = 30,
                 batch_size: int = 256, learning_rate: float = 5e-3, patience: int = 3,
                 windows_per_user: int | None = 3, seed: int = 0) -> None:
        self.dim, self.blocks, self.heads, self.max_len = dim, blocks, heads, max_len
        self.windows_per_user = windows_per_user
        self.dropout, self.negatives, self.epochs = dropout, negatives, epochs
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.patience, self.seed = patience, seed

    def _prepare(self, frame, counts):
        check_positive_int(self.max_len, name="max_len", minimum=2)
        self.n_users_, self.n_items_ = counts.shape
        ordered = frame.sort_values(["timestamp", "i"], kind="stable")
        groups = ordered.groupby("u")["i"].agg(list)
        self.histories_ = [np.asarray(groups.get(u, []), dtype=np.int32) + 1
                           for u in range(self.n_users_)]
        length = self.max_len + 1
        windows = []
        for seq in self.histories_:
            ends = range(len(seq), 1, -self.max_len)
            if self.windows_per_user is not None:
                ends = list(ends)[:self.windows_per_user]
            for end in ends:
                chunk = seq[max(0, end - length):end]
                windows.append(np.pad(chunk, (length - len(chunk), 0)))
        self.windows_ = np.array(windows, dtype=np.int32)

    def _encoder(self):
        import keras

        if hasattr(self, "encoder_"):
            return self.encoder_
        x = keras.Input(shape=(self.max_len,), dtype="int32")
        self.item_embedding_ = keras.layers.Embedding(self.n_items_ + 1, self.dim,
                                                      name="item_embedding")
        h = self.item_embedding_(x) * np.sqrt(self.dim)
        # the positions are computed from the symbolic input, so that the embedding is a
        # layer of the model and trained; called on a constant such as arange(max_len),
        # Keras evaluates the lookup once and adds a fixed random matrix that never learns
        positions = keras.ops.zeros_like(x) + keras.ops.arange(self.max_len, dtype="int32")
        h = h + keras.layers.Embedding(self.max_len, self.dim,
                                       name="position_embedding")(positions)
        h = keras.layers.Dropout(self.dropout, seed=self.seed)(h)
        keys = keras.ops.cast(keras.ops.greater(x, 0), "bool")
        causal = keras.ops.tril(keras.ops.ones((self.max_len, self.max_len), dtype="bool"))
        mask = keras.ops.logical_and(causal[None], keys[:, None, :])
        for _ in range(self.blocks):
            a = keras.layers.MultiHeadAttention(self.heads, self.dim // self.heads,
                                                dropout=self.dropout, seed=self.seed)(
                h, h, attention_mask=mask)
            h = keras.layers.LayerNormalization()(h + a)
            f = keras.layers.Dense(self.dim, activation="relu", kernel_initializer="he_normal")(h)
            f = keras.layers.Dropout(self.dropout, seed=self.seed)(keras.layers.Dense(self.dim)(f))
            h = keras.layers.LayerNormalization()(h + f)
        self.encoder_ = keras.Model(x, h)
        return self.encoder_

    def _build(self):
        import keras

        encoder = self._encoder()
        x = keras.Input(shape=(self.max_len,), dtype="int32")
        if self.negatives is None:
            logits = keras.ops.matmul(encoder(x), keras.ops.transpose(
                self.item_embedding_.embeddings))
            model = keras.Model(x, logits)
            model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            return model
        check_positive_int(self.negatives, name="negatives")
        y = keras.Input(shape=(self.max_len,), dtype="int32")
        n = keras.Input(shape=(self.negatives,), dtype="int32")
        h = encoder(x)
        pos = keras.ops.sum(h * self.item_embedding_(y), axis=-1, keepdims=True)
        neg = keras.ops.einsum("bld,bnd->bln", h, self.item_embedding_(n))
        model = keras.Model([x, y, n], keras.ops.concatenate([pos, neg], axis=-1))
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def _train_epoch(self):
        w = self.windows_[self.rng_.permutation(len(self.windows_))]
        x, y = w[:, :-1], w[:, 1:]
        weight = (y > 0).astype(np.float32)
        if self.negatives is None:
            return self._fit_arrays(x, y, sample_weight=weight)
        neg = self.rng_.integers(1, self.n_items_ + 1, (len(w), self.negatives)).astype(np.int32)
        return self._fit_arrays([x, y, neg], np.zeros_like(y), sample_weight=weight)

    def _after_fit(self):
        self.item_vectors_ = self.item_embedding_.get_weights()[0][1:]

    def _score(self, users):
        x = np.zeros((len(users), self.max_len), dtype=np.int32)
        for row, u in enumerate(users):
            seq = self.histories_[u][-self.max_len:]
            if len(seq):
                x[row, -len(seq):] = seq
        h = predict_in_chunks(self._encoder(), x, 1024)[:, -1]
        return h @ self.item_vectors_.T


class SourceLSTM(KerasRecommender):
    """The source article's chapter-5 model, with ids fed correctly.

    ``[user, item]`` (as integer indices in one shared vocabulary) pass through an
    ``Embedding``, an ``LSTM`` over that sequence of length two, and a ``Dense`` layer that
    regresses the min-max-normalised log quantity bought. It is trained only on observed
    pairs, so nothing teaches it which items a user would *not* buy.
    """

    def __init__(self, dim: int = 32, units: int = 32, epochs: int = 5,
                 batch_size: int = 1024, learning_rate: float = 1e-3, patience: int = 2,
                 seed: int = 0) -> None:
        self.dim, self.units, self.epochs, self.batch_size = dim, units, epochs, batch_size
        self.learning_rate, self.patience, self.seed = learning_rate, patience, seed

    def _prepare(self, frame, counts):
        self.n_users_, self.n_items_ = counts.shape
        qty = frame.groupby(["u", "i"])["quantity"].sum() if "quantity" in frame else \
            frame.groupby(["u", "i"]).size()
        rating = np.log1p(qty.to_numpy(dtype=float))
        self.pairs_ = np.c_[qty.index.get_level_values(0),
                            self.n_users_ + qty.index.get_level_values(1)].astype(np.int32)
        self.rating_ = ((rating - rating.min()) / max(rating.max() - rating.min(), 1e-12)
                        ).astype(np.float32)

    def _build(self):
        import keras

        model = keras.Sequential([
            keras.Input(shape=(2,), dtype="int32"),
            keras.layers.Embedding(self.n_users_ + self.n_items_, self.dim),
            keras.layers.LSTM(self.units),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mse")
        return model

    def _train_epoch(self):
        order = self.rng_.permutation(len(self.rating_))
        return self._fit_arrays(self.pairs_[order], self.rating_[order])

    def _after_fit(self):
        embedding, lstm, dense = self.model_.layers
        self.embeddings_ = embedding.get_weights()[0]
        self.kernel_, self.recurrent_, self.bias_ = lstm.get_weights()
        self.dense_w_, self.dense_b_ = dense.get_weights()
        # the second step's input part of the gates, for every item (n_items, 4 * units)
        self.item_gates_ = self.embeddings_[self.n_users_:] @ self.kernel_

    def _score(self, users):
        """The network's output for every (user, item) pair, computed in NumPy.

        The LSTM runs over ``[user, item]``: its state after the user step depends on the
        user only, so the second step needs one ``(users, items, 4 * units)`` sum of a
        user part and an item part instead of a network call per pair (the same numbers
        as ``model.predict``, tested).
        """
        u = self.units

        def sigmoid(x):
            return 1.0 / (1.0 + np.exp(-x))

        z = self.embeddings_[users] @ self.kernel_ + self.bias_
        c1 = sigmoid(z[:, :u]) * np.tanh(z[:, 2 * u:3 * u])
        h1 = sigmoid(z[:, 3 * u:]) * np.tanh(c1)
        user_gates = h1 @ self.recurrent_ + self.bias_
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        for lo in range(0, len(users), 64):
            g = user_gates[lo:lo + 64, None, :] + self.item_gates_[None]
            c2 = sigmoid(g[..., u:2 * u]) * c1[lo:lo + 64, None] + \
                sigmoid(g[..., :u]) * np.tanh(g[..., 2 * u:3 * u])
            h2 = sigmoid(g[..., 3 * u:]) * np.tanh(c2)
            out[lo:lo + 64] = sigmoid(h2 @ self.dense_w_[:, 0] + self.dense_b_[0])
        return out
