"""Recommenders with one protocol: ``fit(interactions)``, ``score(user_ids)``, ``recommend``.

Every model is fitted on an interactions table (``user_id``, ``item_id``, ``timestamp``,
optionally ``quantity``/``value``) and recommends **original item ids**. Users unknown at
fit time get the popularity ranking, never an error deep inside Keras.

Baselines: :class:`Popularity`, :class:`RepeatBuy`, :class:`ItemKNN`, :class:`EASE`.
Keras models: :class:`MatrixFactorization` (BPR), :class:`NeuMF`, :class:`TwoTower`,
:class:`SASRec` (a Transformer over purchase histories) and :class:`SourceLSTM` (the
source article's model with ids fed as integers), plus :class:`Blend` to combine a model
with repeat behaviour.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion.preprocessing import IdEncoder, check_interactions

_CHUNK = 1024  # users scored at once


class Recommender:
    """Base class. Subclasses implement ``_fit`` and ``_score``."""

    #: whether training uses Keras (and so a seed and epochs)
    uses_keras = False

    def fit(self, interactions: pd.DataFrame) -> Recommender:
        """Learn from ``interactions``; returns ``self``."""
        frame = check_interactions(interactions)
        self.user_encoder_ = IdEncoder("use_unknown").fit(frame["user_id"])
        self.item_encoder_ = IdEncoder("use_unknown").fit(frame["item_id"])
        users = self.user_encoder_.transform(frame["user_id"])
        items = self.item_encoder_.transform(frame["item_id"])
        frame = frame.assign(u=users, i=items)
        shape = (len(self.user_encoder_), len(self.item_encoder_))
        counts = sp.csr_matrix((np.ones(len(frame), dtype=np.float32), (users, items)),
                               shape=shape)
        counts.sum_duplicates()
        self.seen_ = counts
        binary = counts.copy()
        binary.data[:] = 1.0
        self.popularity_ = np.asarray(binary.sum(axis=0)).ravel().astype(np.float32)
        self._fit(frame, counts)
        return self

    # -- to implement -------------------------------------------------------------------
    def _fit(self, frame: pd.DataFrame, counts: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _score(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- protocol ---------------------------------------------------------------------
    @property
    def items_(self) -> np.ndarray:
        """Item ids in the column order of :meth:`score`."""
        self._check_fitted()
        return self.item_encoder_.classes_.to_numpy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "seen_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first.")

    def _codes(self, user_ids) -> np.ndarray:
        self._check_fitted()
        ids = np.asarray(user_ids)
        if ids.ndim != 1:
            raise ValueError(f"user_ids must be 1-D, got shape {ids.shape}.")
        if ids.dtype.kind == "f" and np.isnan(ids).any():
            raise ValueError("user_ids contain NaN.")
        return self.user_encoder_.transform(ids)

    def score(self, user_ids) -> np.ndarray:
        """Scores of every catalogue item for each user, shape ``(len(user_ids), n_items)``.

        Unknown users get the popularity scores.
        """
        codes = self._codes(user_ids)
        parts = [self.score_codes(codes[lo:lo + _CHUNK]) for lo in range(0, len(codes), _CHUNK)]
        return np.vstack(parts) if parts else np.empty((0, len(self.item_encoder_)), np.float32)

    def recommend(self, user_ids, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """The top ``k`` item ids for each user, best first, shape ``(len(user_ids), k)``.

        With ``exclude_seen`` items the user bought during training are never returned.
        """
        check_positive_int(k, name="k")
        self._check_fitted()
        n_items = len(self.item_encoder_)
        if k > n_items:
            raise ValueError(f"k={k} exceeds the catalogue of {n_items} items.")
        codes = self._codes(user_ids)
        items = self.items_
        out = np.empty((len(codes), k), dtype=items.dtype)
        for lo in range(0, len(codes), _CHUNK):
            part = codes[lo:lo + _CHUNK]
            scores = self.score_codes(part)
            if exclude_seen:
                known = np.flatnonzero(part >= 0)
                sub = self.seen_[part[known]]
                rows = np.repeat(known, np.diff(sub.indptr))
                scores[rows, sub.indices] = -np.inf
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            out[lo:lo + len(part)] = items[np.take_along_axis(top, order, axis=1)]
        return out

    def score_codes(self, codes: np.ndarray) -> np.ndarray:
        """Like :meth:`score` but for encoded users (``-1`` for unknown)."""
        out = np.empty((len(codes), len(self.item_encoder_)), dtype=np.float32)
        known = codes >= 0
        out[~known] = self.popularity_ / max(float(self.popularity_.max()), 1.0)
        if known.any():
            out[known] = self._score(codes[known])
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict:
        """Constructor arguments (for tables and cloning)."""
        import inspect

        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n != "self" and hasattr(self, n)}


# ------------------------------------------------------------------------------ baselines


class Popularity(Recommender):
    """Most-bought items (by distinct customers), optionally over the last ``window_days``."""

    def __init__(self, window_days: int | None = None) -> None:
        self.window_days = window_days

    def _fit(self, frame, counts):
        if self.window_days is not None:
            check_positive_int(self.window_days, name="window_days")
            start = frame["timestamp"].max() - pd.Timedelta(days=self.window_days)
            frame = frame[frame["timestamp"] > start]
        pop = frame.groupby("i")["u"].nunique().reindex(range(counts.shape[1]), fill_value=0)
        self.scores_ = (pop.to_numpy(dtype=np.float32) + 1e-3 * self.popularity_ /
                        max(float(self.popularity_.max()), 1.0))

    def _score(self, users):
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).copy()


class RepeatBuy(Recommender):
    """A user's own past items, by purchase count decayed with ``half_life_days``.

    Items the user never bought are ranked after them by popularity, so the list is
    always full; with ``exclude_seen=True`` the model therefore becomes popularity.
    """

    def __init__(self, half_life_days: float = 90.0) -> None:
        self.half_life_days = half_life_days

    def _fit(self, frame, counts):
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive, got {self.half_life_days}.")
        age = (frame["timestamp"].max() - frame["timestamp"]).dt.total_seconds() / 86400
        weight = np.power(0.5, age.to_numpy() / self.half_life_days).astype(np.float32)
        self.weights_ = sp.csr_matrix((weight, (frame["u"], frame["i"])), shape=counts.shape)
        self.weights_.sum_duplicates()
        self.tiebreak_ = 1e-6 * self.popularity_ / max(float(self.popularity_.max()), 1.0)

    def _score(self, users):
        return self.weights_[users].toarray() + self.tiebreak_


class ItemKNN(Recommender):
    """Item-based collaborative filtering with shrunk cosine similarity.

    ``sim(i, j) = c_ij / (sqrt(c_i c_j) + shrinkage)`` over customers who bought both,
    keeping the ``neighbours`` most similar items of each item; a user's score for item j
    sums the similarities of j to the items the user bought.
    """

    def __init__(self, neighbours: int = 100, shrinkage: float = 10.0) -> None:
        self.neighbours = neighbours
        self.shrinkage = shrinkage

    def _fit(self, frame, counts):
        check_positive_int(self.neighbours, name="neighbours")
        binary = (counts > 0).astype(np.float32)
        co = (binary.T @ binary).toarray()
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrinkage + 1e-9)
        np.fill_diagonal(sim, 0.0)
        if self.neighbours < sim.shape[0]:
            cut = np.argpartition(-sim, self.neighbours - 1, axis=0)[self.neighbours:]
            np.put_along_axis(sim, cut, 0.0, axis=0)
        self.similarity_ = sim.astype(np.float32)
        self.binary_ = binary.tocsr()

    def _score(self, users):
        return np.asarray(self.binary_[users] @ self.similarity_)


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019), solved in closed form.

    ``B = I - P / diag(P)`` with ``P = (X^T X + l2 I)^{-1}`` and a zero diagonal; scores are
    ``X_u B``.
    """

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2

    def _fit(self, frame, counts):
        if self.l2 <= 0:
            raise ValueError(f"l2 must be positive, got {self.l2}.")
        binary = (counts > 0).astype(np.float64)
        gram = (binary.T @ binary).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        self.weights_ = b.astype(np.float32)
        self.binary_ = binary.astype(np.float32).tocsr()

    def _score(self, users):
        return np.asarray(self.binary_[users] @ self.weights_)


class Blend(Recommender):
    """``weight`` x a base recommender's score + rank-normalised scores of a learned model.

    The base defaults to :class:`RepeatBuy` (the customer's own past items); a
    :class:`Popularity` base over a recent window blends in what is selling now. Both parts
    are fitted on the same interactions. The base part is scaled to [0, 1] per user, the
    model part is turned into percentiles, so ``weight`` is interpretable: with a repeat-buy
    base and ``weight`` above 1 every past item outranks every new one.
    """

    def __init__(self, model: Recommender, weight: float = 0.5,
                 half_life_days: float = 90.0, base: Recommender | None = None) -> None:
        self.model = model
        self.weight = weight
        self.half_life_days = half_life_days
        self.base = base

    def _fit(self, frame, counts):
        plain = frame.drop(columns=["u", "i"])
        base = self.base if self.base is not None else RepeatBuy(self.half_life_days)
        self.base_ = base.fit(plain) if not hasattr(base, "seen_") else base
        if not hasattr(self.model, "seen_"):
            self.model.fit(plain)
        for part in (self.model, self.base_):
            if not np.array_equal(part.items_, self.items_):
                raise ValueError(f"the blended {type(part).__name__} was fitted on a different "
                                 "catalogue.")

    def _score(self, users):
        ids = self.user_encoder_.classes_.to_numpy()[users]
        base = self.base_.score(ids)
        base = base - base.min(axis=1, keepdims=True)
        base = base / np.maximum(base.max(axis=1, keepdims=True), 1e-12)
        model = self.model.score(ids)
        ranks = np.argsort(np.argsort(model, axis=1), axis=1) / model.shape[1]
        return self.weight * base + ranks.astype(np.float32)
