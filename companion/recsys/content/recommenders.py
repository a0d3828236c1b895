"""Content recommenders: customer profiles over product vectors, the new-product
baselines and the hybrid with a collaborative model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion.recsys.baselines import Recommender
from companion.recsys.content.catalogue import check_item_text
from companion.recsys.content.text import TfidfText


def _user_weights(frame: pd.DataFrame, shape: tuple[int, int],
                  half_life_days: float | None) -> sp.csr_matrix:
    """Users x items: purchase lines, each weighted ``0.5 ** (age / half_life_days)``."""
    if half_life_days is None:
        weight = np.ones(len(frame), dtype=np.float32)
    else:
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be positive or None, got {half_life_days}.")
        age = (frame["timestamp"].max() - frame["timestamp"]).dt.total_seconds() / 86400
        weight = np.power(0.5, age.to_numpy() / half_life_days).astype(np.float32)
    out = sp.csr_matrix((weight, (frame["u"], frame["i"])), shape=shape)
    out.sum_duplicates()
    return out


def _unit_rows(matrix):
    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ matrix
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class _CatalogueMixin:
    """Recommenders whose catalogue also holds products with a description only."""

    def _catalogue_index(self) -> pd.Index:
        raise NotImplementedError

    def _catalogue_ids(self, frame: pd.DataFrame) -> pd.Series:
        extra = self._catalogue_index()
        return pd.concat([frame["item_id"].astype(str), pd.Series(extra.astype(str))],
                         ignore_index=True)


class ContentRecommender(_CatalogueMixin, Recommender):
    """Scores every product by the cosine between its text vector and the customer's
    profile, the recency-weighted mean of the vectors of the products they bought.

    Parameters
    ----------
    item_text
        Item id -> description for the whole catalogue, including products nobody has
        bought yet (they become scorable).
    encoder
        :class:`~companion.recsys.content.text.TfidfText` (default) or
        :class:`~companion.recsys.content.text.TextEncoder`. An unfitted encoder is fitted
        on ``item_text`` and the training interactions; a fitted one is used as it is (it
        must not have seen later data).
    half_life_days
        Weight of a purchase line in the profile, ``0.5 ** (age / half_life_days)``;
        ``None`` counts every line equally.
    """

    def __init__(self, item_text: pd.Series, encoder=None,
                 half_life_days: float | None = None) -> None:
        self.item_text, self.encoder, self.half_life_days = item_text, encoder, half_life_days

    def _catalogue_index(self) -> pd.Index:
        return check_item_text(self.item_text).index

    def _fit(self, frame, counts):
        texts = check_item_text(self.item_text).reindex(self.items_).fillna("")
        encoder = self.encoder if self.encoder is not None else TfidfText()
        if not encoder.is_fitted():
            encoder.fit(texts, frame.drop(columns=["u", "i"]))
        self.encoder_ = encoder
        self.item_vectors_ = _unit_rows(encoder.transform(texts))
        weights = _user_weights(frame, counts.shape, self.half_life_days)
        self.profiles_ = _unit_rows(weights @ self.item_vectors_)

    def _score(self, users):
        out = self.profiles_[users] @ self.item_vectors_.T
        return (out.toarray() if sp.issparse(out) else np.asarray(out)).astype(np.float32)


class WordPopularity(_CatalogueMixin, Recommender):
    """Non-personalised: how well the words of a product's description sold before.

    Each word gets the mean number of buyers of the training products whose description
    has it; a product scores the mean over its words (words never seen give the mean of
    all products). A new product that is a "PAPER BUNTING" inherits the sales of bunting.
    """

    def __init__(self, item_text: pd.Series) -> None:
        self.item_text = item_text

    def _catalogue_index(self) -> pd.Index:
        return check_item_text(self.item_text).index

    def _fit(self, frame, counts):
        from sklearn.feature_extraction.text import CountVectorizer

        texts = check_item_text(self.item_text).reindex(self.items_).fillna("")
        words = CountVectorizer(binary=True, dtype=np.float32).fit_transform(texts).tocsc()
        sold = self.popularity_ > 0
        buyers = np.log1p(self.popularity_)
        with_word = np.asarray(words[sold].sum(axis=0)).ravel()
        word_score = np.asarray(words[sold].T @ buyers[sold]).ravel() / np.maximum(with_word, 1)
        known = (with_word > 0).astype(np.float32)
        words = words.tocsr()
        n_known = np.asarray(words @ known).ravel()
        mean = float(buyers[sold].mean()) if sold.any() else 0.0
        scores = np.asarray(words @ (word_score * known)).ravel() / np.maximum(n_known, 1)
        self.scores_ = np.where(n_known > 0, scores, mean).astype(np.float32)

    def _score(self, users):
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).copy()


class PriceMatch(_CatalogueMixin, Recommender):
    """Products priced like what the customer usually pays score highest.

    ``score = -|log price - mean log unit price the customer paid|``; the unit price of a
    line is ``value / quantity``. ``item_price`` (item id -> list price) covers the
    catalogue, new products included.
    """

    def __init__(self, item_price: pd.Series) -> None:
        self.item_price = item_price

    def _catalogue_index(self) -> pd.Index:
        return self._prices().index

    def _prices(self) -> pd.Series:
        if not isinstance(self.item_price, pd.Series):
            raise TypeError(f"item_price must be a pandas Series, got "
                            f"{type(self.item_price).__name__}.")
        price = pd.to_numeric(self.item_price, errors="coerce")
        bad = price[~(price > 0)]
        if len(bad):
            raise ValueError(f"item_price must be positive; item {bad.index[0]!r} has "
                             f"{self.item_price.loc[bad.index[0]]!r}.")
        return price

    def _fit(self, frame, counts):
        for col in ("value", "quantity"):
            if col not in frame.columns:
                raise ValueError(f"interactions is missing column {col!r} (PriceMatch reads "
                                 "the unit prices paid).")
        prices = self._prices()
        log_item = np.log(prices.reindex(self.items_).to_numpy(dtype=float))
        missing = np.isnan(log_item)
        if missing.any():
            unit = (frame["value"] / frame["quantity"]).groupby(frame["i"]).median()
            fill = np.log(unit.reindex(np.flatnonzero(missing)).to_numpy(dtype=float))
            log_item[missing] = fill
        log_item = np.nan_to_num(log_item, nan=float(np.nanmedian(log_item)))
        paid = np.log((frame["value"] / frame["quantity"]).clip(lower=1e-3))
        self.user_price_ = paid.groupby(frame["u"]).mean().reindex(
            range(counts.shape[0])).to_numpy(dtype=np.float32)
        self.log_price_ = log_item.astype(np.float32)

    def _score(self, users):
        return -np.abs(self.log_price_[None, :] - self.user_price_[users, None])


class Hybrid(_CatalogueMixin, Recommender):
    """A collaborative model for products with purchases; content for the others.

    Both parts are turned into per-customer percentiles. A product with purchases keeps
    its collaborative percentile; a product without (which a collaborative model cannot
    score) gets ``weight`` times the similarity-weighted mean percentile of its
    ``neighbours`` nearest products by description (cosine of the content model's
    vectors). ``weight=0`` is the collaborative model alone; the weight is tuned on a
    validation window.
    """

    def __init__(self, collaborative: Recommender, content: ContentRecommender,
                 weight: float = 1.0, neighbours: int = 10) -> None:
        self.collaborative, self.content = collaborative, content
        self.weight, self.neighbours = weight, neighbours

    def _catalogue_index(self) -> pd.Index:
        return self.content._catalogue_index()

    def _fit(self, frame, counts):
        if not isinstance(self.content, ContentRecommender):
            raise TypeError(f"content must be a ContentRecommender, got "
                            f"{type(self.content).__name__}.")
        check_positive_int(self.neighbours, name="neighbours")
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}.")
        plain = frame.drop(columns=["u", "i"])
        for part in (self.collaborative, self.content):
            if not hasattr(part, "seen_"):
                part.fit(plain)
        if not np.array_equal(self.content.items_, self.items_):
            raise ValueError("the content model was fitted on a different catalogue.")
        warm = self.item_encoder_.transform(self.collaborative.items_)
        if (warm < 0).any():
            raise ValueError("the collaborative model knows products outside the catalogue.")
        cold = np.setdiff1d(np.arange(len(self.items_)), warm)
        self.warm_, self.cold_ = warm, cold
        vectors = self.content.item_vectors_
        sim = vectors[cold] @ vectors[warm].T
        sim = np.clip(sim.toarray() if sp.issparse(sim) else np.asarray(sim), 0.0, None)
        k = min(self.neighbours, len(warm))
        if len(cold) and k:
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            keep = np.zeros_like(sim)
            np.put_along_axis(keep, top, np.take_along_axis(sim, top, axis=1), axis=1)
            sim = keep / np.maximum(keep.sum(axis=1, keepdims=True), 1e-12)
        self.mapping_ = sp.csr_matrix(sim.astype(np.float32))

    def _score(self, users):
        ids = self.user_encoder_.classes_.to_numpy()[users]
        collab = self.collaborative.score(ids)
        pct = (np.argsort(np.argsort(collab, axis=1, kind="stable"), axis=1, kind="stable")
               / collab.shape[1]).astype(np.float32)
        out = np.zeros((len(users), len(self.items_)), dtype=np.float32)
        out[:, self.warm_] = pct
        if len(self.cold_):
            out[:, self.cold_] = self.weight * np.asarray(self.mapping_ @ pct.T).T
        return out
