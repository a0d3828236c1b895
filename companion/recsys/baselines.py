"""The recommender protocol, and the classical recommenders that are the book's baselines.

One protocol: ``fit(interactions)``, ``score(user_ids)``, ``recommend``.

Every model is fitted on an interactions table (``user_id``, ``item_id``, ``timestamp``,
optionally ``quantity``/``value``) and recommends **original item ids**. Users unknown at
fit time get the popularity ranking, never an error deep inside Keras.

Baselines: :class:`Popularity`, :class:`RepeatBuy`, :class:`ItemKNN`, :class:`EASE`, and the
next-basket baselines :class:`TIFUKNN` and :class:`UPCF` (baskets are invoices).
Keras models: :class:`MatrixFactorization` (BPR), :class:`NeuMF`, :class:`TwoTower`,
:class:`SASRec` (a Transformer over purchase histories) and :class:`SourceLSTM` (the
source article's model with ids fed as integers), plus :class:`Blend` to combine a model
with repeat behaviour.

Request-time histories: :meth:`Recommender.recommend_from_history` scores a basket or
session given as item ids, for a visitor the model has never seen or together with a
known customer's stored purchases, without refitting. The baselines and their blends
implement it (``supports_history``); the others raise NotImplementedError.

**Why one module.** It holds the protocol's base class and the classical recommenders that
implement it; each recommender is a few dozen lines and shares the base class's id encoding,
seen-item masks and top-k selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion._compat import renamed_argument
from companion.data.preprocessing import IdEncoder, check_interactions
from companion.exceptions import not_fitted

_CHUNK = 1024  # users scored at once


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, best first (ties in the order
    ``argpartition`` leaves them): the selection :meth:`Recommender.recommend` makes."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _item_key(value: object) -> str | None:
    """``value`` as a catalogue key (item ids are text), or None when it cannot be one."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value)


class Recommender:
    """Base class of every recommender, and the contract that all of them keep.

    Subclasses implement ``_fit(frame, counts)`` and ``_score(users)`` (and, to learn
    incrementally or from request-time histories, ``_partial_fit`` and ``_score_history``);
    this class encodes the ids, keeps what each customer bought (``seen_``) and the number
    of distinct buyers of each item (``popularity_``), and serves unknown customers.

    Notes
    -----
    The contract, in the spirit of scikit-learn's estimator checks. Every concrete
    recommender of the companion guarantees the following, and ``tests/test_contracts.py``
    checks each point on every class it finds (a new class without a factory there fails):

    1. ``fit(interactions)`` returns the model itself and does not modify
       ``interactions``. (Models built from other models or encoders, such as
       :class:`Blend`, ``Hybrid`` and ``ContentRecommender``, fit those parts in place
       when they are not fitted yet.)
    2. Before ``fit``, ``score``, ``recommend``, ``recommend_from_history``,
       ``partial_fit`` and :attr:`items_` raise
       :class:`~companion.exceptions.NotFittedError` ("... is not fitted yet; call fit
       first.") and change nothing.
    3. ``score(user_ids)`` returns finite floats of shape ``(len(user_ids),
       len(items_))``: column ``j`` scores item ``items_[j]``, and :attr:`items_` holds
       each item id once.
    4. ``recommend(user_ids, k, exclude_seen)`` returns an array of shape
       ``(len(user_ids), k)`` of ids from :attr:`items_`, no id twice in a row; a ``k``
       larger than the catalogue raises ``ValueError``. With ``exclude_seen=False`` a row
       holds the ``k`` items of highest score, best first.
    5. With ``exclude_seen=True`` no item the customer bought in the training
       interactions is returned, as long as at least ``k`` items are left that they have
       not bought; a longer list ends with bought items.
    6. Customer ids unknown at fit time are no error: ``score`` gives each of them the
       popularity scores ``popularity_ / max(popularity_)``, and ``recommend`` the ``k``
       items with the most buyers.
    7. ``get_params()`` returns every constructor argument by name, and
       ``type(m)(**m.get_params())`` builds an unfitted model with the same arguments
       (the same objects: a part such as a blended model is shared, not copied).
    8. The same arguments, seed included, fitted on the same interactions give the same
       recommendations.
    9. ``recommend_from_history`` and ``score_history`` raise ``NotImplementedError``
       unless :attr:`supports_history`; when it holds, ``score_history`` returns finite
       scores of shape ``(len(items_),)`` (those of :meth:`score` for an empty history)
       and ``recommend_from_history`` returns ``k`` distinct items from :attr:`items_`,
       none of the history nor, for a known customer, of their purchases.
    10. ``partial_fit(interactions)`` on a fitted model either learns from them and
        returns the model, with :attr:`items_` keeping its order (new items appended)
        and their purchases excluded by ``recommend(exclude_seen=True)`` from then on
        (a model may refuse more new ids than it has room for with ``ValueError``, as
        ``TwoTower`` does beyond ``spare_users`` and ``spare_items``), or raises
        ``NotImplementedError`` and leaves the model as it was.

    Scorers made from an already fitted model
    (:class:`companion.ops.compression.FactorScorer`,
    :class:`companion.ops.export.ServingRecommender`) are fitted when they are built and
    cannot be refitted; points 3 to 6 and 9 apply to them.
    """

    #: whether training uses Keras (and so a seed and epochs)
    uses_keras = False

    def fit(self, interactions: pd.DataFrame) -> Recommender:
        """Learn from ``interactions``; returns ``self``."""
        frame = check_interactions(interactions)
        self.user_encoder_ = IdEncoder("use_unknown").fit(frame["user_id"])
        self.item_encoder_ = IdEncoder("use_unknown").fit(self._catalogue_ids(frame))
        frame, counts = self._encode(frame)
        self.seen_ = counts
        self._count_buyers()
        self._fit(frame, counts)
        return self

    def _encode(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, sp.csr_matrix]:
        """The frame with user and item codes (``u``, ``i``) and its users x items counts."""
        users = self.user_encoder_.transform(frame["user_id"])
        items = self.item_encoder_.transform(frame["item_id"])
        shape = (len(self.user_encoder_), len(self.item_encoder_))
        counts = sp.csr_matrix((np.ones(len(frame), dtype=np.float32), (users, items)),
                               shape=shape)
        counts.sum_duplicates()
        return frame.assign(u=users, i=items), counts

    def _count_buyers(self) -> None:
        binary = self.seen_.copy()
        binary.data[:] = 1.0
        self.popularity_ = np.asarray(binary.sum(axis=0)).ravel().astype(np.float32)

    def partial_fit(self, interactions: pd.DataFrame) -> Recommender:
        """Update a fitted model with new interactions instead of starting over.

        New customers and items get the next codes (:meth:`IdEncoder.extend`), so
        :attr:`items_` keeps its order and appends new items. Models that can learn
        incrementally implement ``_partial_fit``; the others raise NotImplementedError
        (refit them on all the data instead).
        """
        self._check_fitted()
        if type(self)._partial_fit is Recommender._partial_fit:
            raise NotImplementedError(f"{type(self).__name__} cannot be updated incrementally; "
                                      "call fit on all the interactions instead.")
        frame = check_interactions(interactions)
        self.user_encoder_.extend(frame["user_id"])
        self.item_encoder_.extend(frame["item_id"])
        frame, counts = self._encode(frame)
        old = self.seen_.tocoo()
        self.seen_ = (sp.csr_matrix((old.data, (old.row, old.col)), shape=counts.shape)
                      + counts).tocsr()
        self._count_buyers()
        self._partial_fit(frame, counts)
        return self

    def _partial_fit(self, frame: pd.DataFrame, counts: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _catalogue_ids(self, frame: pd.DataFrame) -> pd.Series:
        """The item ids a model can score: those in the training interactions. Content
        models extend it with products that have a description but no purchase yet."""
        return frame["item_id"]

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
            raise not_fitted(self)

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
            out[lo:lo + len(part)] = items[_top_k(scores, k)]
        return out

    # -- request-time histories ---------------------------------------------------------
    @property
    def supports_history(self) -> bool:
        """Whether :meth:`Recommender.recommend_from_history` can score this model from a
        history."""
        return type(self)._score_history is not Recommender._score_history

    def history_codes(self, history) -> tuple[np.ndarray, list]:
        """The item codes of ``history`` (repeats kept, in the order given) and the ids in
        it that are not in the catalogue (each once, in order of first appearance).

        ``history`` is a sequence of item ids (a list or array, not a single str). Item ids
        are text (stock codes such as ``"85123A"``); a whole number given for one, as JSON
        clients may send it, matches its text (22423 matches ``"22423"``). Ids that match
        nothing are returned, not raised, so a basket that holds a product added after the
        fit still gets recommendations.
        """
        self._check_fitted()
        if isinstance(history, str | bytes) or not hasattr(history, "__iter__"):
            raise TypeError("history must be a sequence of item ids (for example a list), "
                            f"got {type(history).__name__}.")
        values = list(np.asarray(history, dtype=object).ravel()) \
            if isinstance(history, np.ndarray) else list(history)
        index, _ = self._item_lookup()
        codes = np.array([index.get(_item_key(v), -1) for v in values], dtype=np.int64)
        unknown, seen = [], set()
        for value, code in zip(values, codes, strict=True):
            if code < 0:
                key = repr(value)
                if key not in seen:
                    seen.add(key)
                    unknown.append(value.item() if isinstance(value, np.generic) else value)
        return codes[codes >= 0], unknown

    def _item_lookup(self) -> tuple[dict, np.ndarray]:
        """``{item id: code}`` and :attr:`items_`, built once per catalogue: for a few ids a
        dict look-up is much faster than an Index look-up, above all with Arrow-backed text
        ids, whose :attr:`items_` is converted to NumPy on every call."""
        classes = self.item_encoder_.classes_
        cached = getattr(self, "_item_cache", None)
        if cached is None or cached[0] is not classes:
            cached = (classes, {item: code for code, item in enumerate(classes.tolist())},
                      classes.to_numpy())
            self._item_cache = cached  # not exported (a leading underscore)
        return cached[1], cached[2]

    def _user_code(self, user_id) -> int:
        """The code of one customer id (-1 for None or a customer unknown at fit time)."""
        if user_id is None:
            return -1
        return int(self._codes(np.asarray([user_id]))[0])

    def score_history(self, history, user_id=None) -> np.ndarray:
        """Scores of every catalogue item for a history given at request time, shape
        ``(n_items,)``; see :meth:`recommend_from_history`."""
        codes, _ = self.history_codes(history)
        return self._history_scores(codes, self._user_code(user_id))

    def _history_scores(self, codes: np.ndarray, user: int) -> np.ndarray:
        if not self.supports_history:
            raise NotImplementedError(
                f"{type(self).__name__} cannot score a history given at request time; the "
                "baselines (popularity, repeat-buy, item-kNN, EASE, TIFU-KNN, UP-CF@r) and "
                "their blends can.")
        if len(codes) == 0:  # nothing new: exactly what score() gives the customer
            return self.score_codes(np.array([user], dtype=np.int64))[0]
        return np.asarray(self._score_history(user, codes), dtype=np.float32)

    def recommend_from_history(self, history, k: int = 10, exclude_seen: bool = True,
                               user_id=None) -> np.ndarray:
        """The top ``k`` item ids for a history given at request time, best first.

        ``history`` holds item ids: a basket or a browsing session, treated as one invoice
        bought now (an item repeated in it counts once, as in a fit). With ``user_id`` a
        customer known at fit time, the history is added to that customer's stored
        purchases; without it (or for a customer the model has never seen) the history
        alone is scored, as for an anonymous visitor. Ids not in the catalogue are ignored
        (:meth:`history_codes` lists them); an empty history scores like :meth:`recommend`
        (popularity for an unknown customer). With ``exclude_seen`` the items in the
        history and, for a known customer, the items bought during training are never
        returned. The model is not changed.
        """
        check_positive_int(k, name="k")
        self._check_fitted()
        n_items = len(self.item_encoder_)
        if k > n_items:
            raise ValueError(f"k={k} exceeds the catalogue of {n_items} items.")
        codes, _ = self.history_codes(history)
        user = self._user_code(user_id)
        scores = self._history_scores(codes, user)[None, :].copy()
        if exclude_seen:
            scores[0, codes] = -np.inf
            if user >= 0:
                scores[0, self.seen_[user].indices] = -np.inf
        return self._item_lookup()[1][_top_k(scores, k)[0]]

    def _score_history(self, user: int, codes: np.ndarray) -> np.ndarray:
        """Scores for customer code ``user`` (-1: none) with the item codes ``codes``
        (non-empty, repeats kept) added to their purchases, bought now."""
        raise NotImplementedError

    def score_codes(self, codes: np.ndarray) -> np.ndarray:
        """Like :meth:`score` but for encoded users (``-1`` for unknown)."""
        out = np.empty((len(codes), len(self.item_encoder_)), dtype=np.float32)
        known = codes >= 0
        out[~known] = self.popularity_ / max(float(self.popularity_.max()), 1.0)
        if known.any():
            out[known] = self._score(codes[known])
        return out

    def _history_row(self, matrix: sp.csr_matrix, user: int, codes: np.ndarray
                     ) -> sp.csr_matrix:
        """A 1 x n_items 0/1 row: the user's row of ``matrix`` (if known) and ``codes``."""
        items = np.unique(codes)
        if user >= 0:
            items = np.union1d(items, matrix[user].indices)
        return sp.csr_matrix((np.ones(len(items), dtype=matrix.dtype),
                              (np.zeros(len(items), dtype=np.int64), items)),
                             shape=(1, matrix.shape[1]))

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

    def _score_history(self, user, codes):
        return self.scores_.copy()


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

    def _score_history(self, user, codes):
        # the history is one invoice made now: each of its items counts once, weight 1
        row = (self.weights_[user].toarray()[0] if user >= 0
               else np.zeros(self.weights_.shape[1], dtype=np.float32))
        row[np.unique(codes)] += np.float32(1.0)
        return row + self.tiebreak_


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
        self.co_ = (binary.T @ binary).toarray()
        self.binary_ = binary.tocsr()
        self._similarity()

    def _similarity(self) -> None:
        co = self.co_
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrinkage + 1e-9)
        np.fill_diagonal(sim, 0.0)
        if self.neighbours < sim.shape[0]:
            # keep each item's (column's) most similar items; sim is symmetric, so the
            # columns are read as rows, which is much faster
            keep = np.argpartition(-sim, self.neighbours - 1, axis=1)[:, :self.neighbours]
            # written straight into the transposed layout (a transposed copy of the dense
            # matrix costs more than the selection)
            pruned = np.zeros(sim.shape, dtype=np.float32)
            rows = np.repeat(np.arange(sim.shape[0]), self.neighbours)
            pruned[keep.ravel(), rows] = np.take_along_axis(sim, keep, axis=1).ravel()
            sim = pruned
        self.similarity_ = np.ascontiguousarray(sim, dtype=np.float32)

    def _partial_fit(self, frame, counts):
        """Add the co-purchases of new (customer, item) pairs to the counts and recompute
        the similarities: the same model as a fit on all the data, at a fraction of the
        cost."""
        n_users, n_items = counts.shape
        old = self.binary_.copy()
        old.resize((n_users, n_items))
        new = (counts > 0).astype(np.float32).tocsr()
        new = (new - new.multiply(old)).tocsr()  # pairs not bought before
        new.eliminate_zeros()
        co = self.co_
        if co.shape != (n_items, n_items):  # new items: grow the counts (else in place)
            co = np.zeros((n_items, n_items), dtype=self.co_.dtype)
            co[:self.co_.shape[0], :self.co_.shape[1]] = self.co_
        changed = np.unique(new.tocoo().row)
        if len(changed):
            # the new pairs' co-purchases with everything the customer now has:
            # (old + new)'(old + new) - old'old = A + A' - new'new with A = new'(old + new)
            x_new, x_old = new[changed], old[changed]
            a = (x_new.T @ (x_new + x_old)).tocoo()  # sparse: no dense temporaries
            n = (x_new.T @ x_new).tocoo()
            a.sum_duplicates()  # each (row, col) once, so that += adds every count
            n.sum_duplicates()
            co[a.row, a.col] += a.data
            co[a.col, a.row] += a.data
            co[n.row, n.col] -= n.data
        self.co_ = co
        self.binary_ = (old + new).tocsr()
        self._similarity()

    def _score(self, users):
        return np.asarray(self.binary_[users] @ self.similarity_)

    def _score_history(self, user, codes):
        return np.asarray(self._history_row(self.binary_, user, codes) @ self.similarity_)[0]


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

    def _score_history(self, user, codes):
        return np.asarray(self._history_row(self.binary_, user, codes) @ self.weights_)[0]


# ------------------------------------------------------------------- next-basket baselines


def _basket_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, basket, item) of an encoded frame (columns ``u``, ``i``).

    A basket is an invoice (``invoice`` column) or, without one, all of a user's rows with
    the same timestamp. Returns columns ``u``, ``i``, ``pos`` (the basket's position in the
    user's history, 0 = oldest; baskets ordered by time, then by key) and ``n`` (the
    user's number of baskets).
    """
    key = frame["invoice"] if "invoice" in frame.columns else frame["timestamp"]
    codes = pd.factorize(key, sort=True)[0]
    rows = pd.DataFrame({"u": frame["u"].to_numpy(), "i": frame["i"].to_numpy(), "b": codes,
                         "t": frame["timestamp"].to_numpy()})
    baskets = rows.groupby(["u", "b"], sort=False)["t"].min().reset_index()
    baskets = baskets.sort_values(["u", "t", "b"], kind="stable")
    baskets["pos"] = baskets.groupby("u").cumcount().to_numpy()
    baskets["n"] = baskets.groupby("u")["b"].transform("size").to_numpy()
    rows = rows.merge(baskets[["u", "b", "pos", "n"]], on=["u", "b"], how="left")
    return rows.drop_duplicates(["u", "pos", "i"])[["u", "i", "pos", "n"]]


def _basket_matrix(rows: pd.DataFrame, shape: tuple[int, int]
                   ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Every user's baskets as rows of a 0/1 matrix (users in code order, each user's
    baskets oldest first) and the pointer array: user ``u``'s baskets are the rows
    ``ptr[u]:ptr[u + 1]``. Kept by the next-basket models to add a basket given at request
    time to a known customer's history."""
    n_users, n_items = shape
    per_user = rows.groupby("u")["n"].first().reindex(range(n_users), fill_value=0)
    ptr = np.r_[0, np.cumsum(per_user.to_numpy())].astype(np.int64)
    basket = ptr[rows["u"].to_numpy()] + rows["pos"].to_numpy()
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32),
                            (basket, rows["i"].to_numpy())), shape=(int(ptr[-1]), n_items))
    matrix.sum_duplicates()
    return matrix, ptr


def _history_baskets(model: Recommender, user: int, codes: np.ndarray) -> list[np.ndarray]:
    """The item codes of each basket of customer ``user`` (none for -1), oldest first, with
    ``codes`` appended as the newest basket."""
    baskets = []
    if user >= 0:
        if not hasattr(model, "baskets_"):
            raise ValueError(f"this {type(model).__name__} was fitted without its baskets "
                             "(by an older version); refit it to add a history to a known "
                             "customer.")
        matrix, ptr = model.baskets_, model.basket_ptr_
        baskets = [matrix.indices[matrix.indptr[b]:matrix.indptr[b + 1]]
                   for b in range(ptr[user], ptr[user + 1])]
    return baskets + [np.unique(codes)]


def _check_rate(value: float, name: str, *, low_open: bool = True) -> float:
    """A number in (0, 1] (or [0, 1] with ``low_open=False``), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    ok = (0 < value <= 1) if low_open else (0 <= value <= 1)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}.")
    return float(value)


class TIFUKNN(Recommender):
    """TIFU-KNN: temporal item frequency plus user kNN (Hu, He, Gao and Zhang, SIGIR 2020).

    Baskets are invoices. For a user with baskets ``b_1 .. b_n`` (oldest first, each a 0/1
    item vector) the history is split into ``m = group_size`` groups of consecutive baskets
    and

    .. math::

        v_u = \\frac{1}{G} \\sum_{g=1}^{G} r_g^{\\,m-g}\\,
              \\frac{1}{|g|} \\sum_{j \\in g} r_b^{\\,n-j}\\, b_j ,

    with ``r_b = within_decay`` and ``r_g = group_decay``. The prediction is
    ``alpha * v_u + (1 - alpha) * (mean v of the nearest users)``, the ``neighbours``
    nearest by Euclidean distance between the ``v`` vectors, the user excluded.

    This follows the authors' code (``HaojiHu/TIFUKNN``, ``TIFUKNN.py``, and the copy in
    ``liming-7/A-Next-Basket-Recommendation-Reality-Check``, ``methods/tifuknn``) formula
    for formula:

    * ``group_size`` is the *number* of groups ``m`` (the authors' README calls it the
      group size): with ``n >= m`` baskets the ``m - (n mod m)`` oldest groups hold
      ``floor(n/m)`` baskets and the others one more, so ``G = m``; with ``n < m`` every
      basket is its own group (``G = n``) but the group decay keeps the exponent
      ``m - g``, so the newest basket then weighs ``r_g^{m-n}``, not 1;
    * the basket decay exponent ``n - j`` counts baskets to the end of the whole history,
      not to the end of the basket's group (the README calls ``r_b`` the decay "within each
      group"), so ``r_b`` also decays across groups;
    * a basket vector is 0/1 (quantities are ignored); neighbours are averaged with equal
      weights (scikit-learn's brute-force Euclidean kNN in the original).

    Departures: the authors search neighbours of test users among *other* (training) users;
    here every user is both, so a user is never its own neighbour. ``neighbours`` is capped at the
    number of other users. Neighbours are found exactly, by matrix products in chunks, when
    users are scored (fitting only builds the vectors). On random baskets the vectors equal
    the authors' ``temporal_decay_sum_history`` to 1e-16 and the predictions their
    ``merge_history`` with scikit-learn's kNN to 1e-8, except where distances tie at the
    last neighbour kept (either tied user may then be kept). The formulas are those of the
    code; the paper's text was not at hand to check them against.

    Parameters
    ----------
    neighbours
        Number of neighbours (``k`` before 0.2.0; the old name still works for one release,
        with a warning).
    group_size
        Number of groups ``m`` (see above).
    within_decay, group_decay
        ``r_b`` and ``r_g`` in (0, 1]; 1 means no decay.
    alpha
        Weight of the user's own vector, in [0, 1] (1: personal item frequency only).
    """

    #: old argument name -> new name (the old one works in 0.2.x, with a warning)
    RENAMED = {"k": "neighbours"}

    def __init__(self, neighbours: int = 300, group_size: int = 7, within_decay: float = 0.9,
                 group_decay: float = 0.7, alpha: float = 0.7, *, k: int | None = None) -> None:
        self.neighbours = renamed_argument("TIFUKNN", "k", "neighbours", k, neighbours, 300)
        self.group_size = group_size
        self.within_decay = within_decay
        self.group_decay = group_decay
        self.alpha = alpha

    def _fit(self, frame, counts):
        check_positive_int(self.neighbours, name="neighbours")
        m = check_positive_int(self.group_size, name="group_size")
        r_b = _check_rate(self.within_decay, "within_decay")
        r_g = _check_rate(self.group_decay, "group_decay")
        _check_rate(self.alpha, "alpha", low_open=False)
        rows = _basket_rows(frame)
        pos, n = rows["pos"].to_numpy(), rows["n"].to_numpy()
        value = self._decay(pos, n, m, r_b, r_g)
        vectors = sp.csr_matrix((value, (rows["u"].to_numpy(), rows["i"].to_numpy())),
                                shape=counts.shape, dtype=np.float64)
        vectors.sum_duplicates()
        self.baskets_, self.basket_ptr_ = _basket_matrix(rows, counts.shape)
        self.vectors_ = vectors
        self.vectors_t_ = vectors.T.tocsr()
        self.sq_norms_ = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
        # neighbours, found when a user is first scored (-1: not yet)
        self.near_ = np.full((counts.shape[0], min(self.neighbours, counts.shape[0] - 1)), -1)

    @staticmethod
    def _decay(pos: np.ndarray, n: np.ndarray, m: int, r_b: float, r_g: float
               ) -> np.ndarray:
        """The weight of basket ``pos`` (0 = oldest) of a history of ``n`` baskets in the
        user's vector: basket decay, group decay, group and history averages."""
        small = n < m
        size = np.maximum(n // m, 1)                  # baskets in the short groups
        extra = np.where(small, 0, n % m)             # groups with one basket more
        cut = (m - extra) * size                      # first basket of the long groups
        group = np.where(small | (pos < cut), pos // size, (m - extra) + (pos - cut) // (size + 1))
        members = np.where(small | (pos < cut), size, size + 1)
        n_groups = np.where(small, n, m)
        return (np.power(r_b, n - 1 - pos) * np.power(r_g, m - 1 - group)
                / members / n_groups)

    def nearest_users(self, users: np.ndarray) -> np.ndarray:
        """Codes of the ``neighbours`` nearest other users of each user code, shape
        ``(len, k)`` with ``k = min(neighbours, n_users - 1)``, in no particular order."""
        users = np.asarray(users)
        k = self.near_.shape[1]
        if k == 0:
            return self.near_[users]
        todo = np.unique(users[self.near_[users, 0] < 0])
        for lo in range(0, len(todo), _CHUNK):
            part = todo[lo:lo + _CHUNK]
            dot = (self.vectors_[part] @ self.vectors_t_).toarray()
            dist = self.sq_norms_[part, None] + self.sq_norms_[None, :] - 2 * dot
            dist[np.arange(len(part)), part] = np.inf
            self.near_[part] = np.argpartition(dist, k - 1, axis=1)[:, :k]
        return self.near_[users]

    def _score(self, users):
        own = self.vectors_[users].toarray()
        near = self.nearest_users(users)
        if near.shape[1] == 0:
            return (self.alpha * own).astype(np.float32)
        weights = sp.csr_matrix(
            (np.full(near.size, 1.0 / near.shape[1]),
             (np.repeat(np.arange(len(users)), near.shape[1]), near.ravel())),
            shape=(len(users), self.vectors_.shape[0]))
        mean = (weights @ self.vectors_).toarray()
        return (self.alpha * own + (1 - self.alpha) * mean).astype(np.float32)

    def _score_history(self, user, codes):
        # the history is the newest basket; the vector is what a fit on the customer's
        # baskets plus this one would give, and the neighbours are searched among the
        # fitted customers (the customer excluded), whose vectors that fit would not change
        baskets = _history_baskets(self, user, codes)
        n = len(baskets)
        pos = np.repeat(np.arange(n), [len(b) for b in baskets])
        value = self._decay(pos, np.full(len(pos), n), self.group_size, self.within_decay,
                            self.group_decay)
        own = np.zeros(self.vectors_.shape[1])
        np.add.at(own, np.concatenate(baskets), value)
        n_users = self.vectors_.shape[0]
        k = min(self.neighbours, n_users - 1 if user >= 0 else n_users)
        if k == 0:
            return (self.alpha * own).astype(np.float32)
        dist = self.sq_norms_ + own @ own - 2 * (self.vectors_ @ own)
        if user >= 0:
            dist[user] = np.inf
        near = np.argpartition(dist, k - 1)[:k]
        weights = sp.csr_matrix((np.full(k, 1.0 / k), (np.zeros(k, dtype=np.int64), near)),
                                shape=(1, n_users))
        mean = (weights @ self.vectors_).toarray()[0]
        return (self.alpha * own + (1 - self.alpha) * mean).astype(np.float32)


class UPCF(Recommender):
    """UP-CF@r: recency-aware user popularity plus user-based CF (Faggioli, Polato and
    Aiolli, UMAP 2020).

    With ``B_u`` the user's baskets (invoices), the recency-aware user-wise popularity is

    .. math::

        p^r_{u,i} = \\frac{|\\{b \\in \\text{last } \\min(r, |B_u|) \\text{ baskets of } u
        : i \\in b\\}|}{\\min(r, |B_u|)},

    the asymmetric cosine between users with item sets ``I_u`` (whole history) is
    ``w_uv = |I_u ∩ I_v| / (|I_u|^a |I_v|^(1-a))`` (``a = asymmetry``, the exponent ``a``
    on the user being scored), and the score is

    .. math::

        s_{u,i} = \\sum_{v \\in N(u) \\cup \\{u\\}} w_{uv}^{\\,q}\\, p^r_{v,i}

    with ``q = locality``; ``w_uu = 1`` and ``N(u)`` holds the ``neighbours`` most
    similar other users (all of them with ``neighbours=None``).

    This follows the reference code of the reality check
    (``liming-7/A-Next-Basket-Recommendation-Reality-Check``, ``methods/upcf/racf.py``,
    checked against it to float32 precision on random baskets: the last ``r`` baskets,
    counts over ``min(r, |B_u|)``, the 100 most similar other users, a diagonal set to 1,
    similarities raised to ``q`` and multiplied with ``p^r``) and of the implementation it
    links to (``NextBasketRecFramework.py`` of ``MayloIFERR/RACF``, whose ``uwPopMat``
    however uses a window of 5 baskets whatever ``r`` is; here ``r`` is used). Departures
    from ``racf.py``: the user vectors of the similarity are 0/1 (as in that framework's
    ``upcf``; ``racf.py`` uses basket counts) and there is no shrinkage (``racf.py`` adds
    1000 to the cosine's denominator; the framework does not). The formulas are those of
    the code; the paper's text was not at hand to check them against.

    Parameters
    ----------
    recency
        ``r``: number of most recent baskets in the popularity, or None for all.
    asymmetry
        ``a`` in [0, 1] (0.5: the usual cosine).
    locality
        ``q > 0``: large values keep only the most similar neighbours' say.
    neighbours
        Number of most similar other users kept, or None for all.
    """

    def __init__(self, recency: int | None = 10, asymmetry: float = 0.75,
                 locality: float = 10.0, neighbours: int | None = 100) -> None:
        self.recency = recency
        self.asymmetry = asymmetry
        self.locality = locality
        self.neighbours = neighbours

    def _fit(self, frame, counts):
        if self.recency is not None:
            check_positive_int(self.recency, name="recency")
        if self.neighbours is not None:
            check_positive_int(self.neighbours, name="neighbours")
        _check_rate(self.asymmetry, "asymmetry", low_open=False)
        if (isinstance(self.locality, bool)
                or not isinstance(self.locality, int | float | np.integer | np.floating)
                or not self.locality > 0):
            raise ValueError(f"locality must be a positive number, got {self.locality!r}.")
        rows = _basket_rows(frame)
        self.baskets_, self.basket_ptr_ = _basket_matrix(rows, counts.shape)
        pos, n = rows["pos"].to_numpy(), rows["n"].to_numpy()
        window = n if self.recency is None else np.minimum(n, self.recency)
        recent = pos >= n - window
        self.popularity_r_ = sp.csr_matrix(
            (1.0 / window[recent], (rows["u"].to_numpy()[recent], rows["i"].to_numpy()[recent])),
            shape=counts.shape, dtype=np.float64)
        self.popularity_r_.sum_duplicates()
        self.popularity_t_ = self.popularity_r_.T.tocsr()
        binary = (counts > 0).astype(np.float64).tocsr()
        self.binary_ = binary
        self.binary_t_ = binary.T.tocsr()
        self.n_items_ = np.asarray(binary.sum(axis=1)).ravel()
        self.norm_other_ = self.n_items_ ** (1 - self.asymmetry)
        # the most similar other users and their similarity, found when a user is first
        # scored (-1: not yet)
        k = min(self.neighbours or 0, counts.shape[0] - 1)
        self.near_ = np.full((counts.shape[0], max(k, 1)), -1)
        self.near_sim_ = np.zeros((counts.shape[0], max(k, 1)))

    def similarity(self, users: np.ndarray) -> np.ndarray:
        """Asymmetric cosine ``w_uv`` of each user code to every user, dense
        ``(len(users), n_users)``, before the neighbour cut and the diagonal."""
        users = np.asarray(users)
        common = (self.binary_[users] @ self.binary_t_).toarray()
        common /= self.n_items_[users, None] ** self.asymmetry
        common /= self.norm_other_[None, :]
        return common

    def _score(self, users):
        rows = np.arange(len(users))
        n_users = self.binary_.shape[0]
        if self.neighbours is None or self.neighbours >= n_users - 1:
            weights = np.power(self.similarity(users), self.locality)
            weights[rows, users] = 1.0
            return (self.popularity_t_ @ weights.T).T.astype(np.float32)
        k = self.neighbours
        todo = np.unique(users[self.near_[users, 0] < 0])
        for lo in range(0, len(todo), _CHUNK):
            part = todo[lo:lo + _CHUNK]
            sim = self.similarity(part)
            sim[np.arange(len(part)), part] = -np.inf
            near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            self.near_[part] = near
            self.near_sim_[part] = np.take_along_axis(sim, near, axis=1)
        values = np.power(self.near_sim_[users], self.locality)
        weights = sp.csr_matrix(
            (np.r_[values.ravel(), np.ones(len(users))],
             (np.r_[np.repeat(rows, k), rows], np.r_[self.near_[users].ravel(), users])),
            shape=(len(users), n_users))
        return (weights @ self.popularity_r_).toarray().astype(np.float32)

    def _score_history(self, user, codes):
        # the history is the newest basket: the customer's recency-aware popularity and
        # item set become what a fit with it would give; the other customers' do not change
        baskets = _history_baskets(self, user, codes)
        window = len(baskets) if self.recency is None else min(len(baskets), self.recency)
        n_users, n_items = self.binary_.shape
        own = np.zeros(n_items)
        for basket in baskets[-window:]:
            own[basket] += 1.0 / window
        items = np.unique(np.concatenate(baskets))
        common = np.asarray(self.binary_t_[items].sum(axis=0)).ravel()
        sim = common / len(items) ** self.asymmetry / self.norm_other_
        others = n_users - 1 if user >= 0 else n_users
        if self.neighbours is None or self.neighbours >= others:
            weights = np.power(sim, self.locality)
            if user >= 0:
                weights[user] = 0.0
            return (self.popularity_t_ @ weights + own).astype(np.float32)
        k = self.neighbours
        if user >= 0:
            sim[user] = -np.inf
        near = np.argpartition(-sim, k - 1)[:k]
        weights = sp.csr_matrix((np.power(sim[near], self.locality),
                                 (np.zeros(k, dtype=np.int64), near)), shape=(1, n_users))
        return ((weights @ self.popularity_r_).toarray()[0] + own).astype(np.float32)


class Blend(Recommender):
    """``weight`` x a base recommender's score + rank-normalised scores of a learned model.

    The base defaults to :class:`RepeatBuy` (the customer's own past items); a
    :class:`Popularity` base over a recent window blends in what is selling now. Both parts
    are fitted on the same interactions. The base part is scaled to [0, 1] per user, the
    model part is turned into percentiles, so ``weight`` is interpretable: with a repeat-buy
    base and ``weight`` above 1 every past item outranks every new one. The parts may order
    their catalogues differently (a model updated with :meth:`Recommender.partial_fit`
    appends new items), but must know every item the blend is fitted on.
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
        self.columns_ = []
        for part in (self.model, self.base_):
            if np.array_equal(part.items_, self.items_):
                self.columns_.append(None)
                continue
            columns = pd.Index(part.items_).get_indexer(self.items_)
            if (columns < 0).any():
                missing = self.items_[columns < 0]
                raise ValueError(f"the blended {type(part).__name__} does not know "
                                 f"{len(missing)} of the blend's items, e.g. "
                                 f"{list(missing[:3])}; fit it on the same interactions.")
            self.columns_.append(columns)

    def _score(self, users):
        ids = self.user_encoder_.classes_.to_numpy()[users]
        return self._combine(self.base_.score(ids), self.model.score(ids))

    @property
    def supports_history(self) -> bool:
        base = getattr(self, "base_", self.base)
        return self.model.supports_history and (base is None or base.supports_history)

    def _score_history(self, user, codes):
        ids = self._item_lookup()[1][codes]
        user_id = self.user_encoder_.classes_[user] if user >= 0 else None
        return self._combine(self.base_.score_history(ids, user_id)[None, :],
                             self.model.score_history(ids, user_id)[None, :])[0]

    def _combine(self, base: np.ndarray, model: np.ndarray) -> np.ndarray:
        """``weight`` x the base part scaled to [0, 1] per user + the model part's ranks
        (both given in their own item order)."""
        model_columns, base_columns = getattr(self, "columns_", (None, None))
        if base_columns is not None:
            base = base[:, base_columns]
        base = base - base.min(axis=1, keepdims=True)
        base = base / np.maximum(base.max(axis=1, keepdims=True), 1e-12)
        if model_columns is not None:
            model = model[:, model_columns]
        # each item's rank among the user's items: the inverse of the sorting permutation
        order = np.argsort(model, axis=1)
        ranks = np.empty(model.shape, dtype=np.float32)
        np.put_along_axis(ranks, order, np.broadcast_to(
            np.arange(model.shape[1], dtype=np.float32) / model.shape[1], order.shape), axis=1)
        return self.weight * base + ranks
