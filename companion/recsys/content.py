"""Content-based, cold-start and context-aware recommendation.

* **Catalogue**: :func:`product_catalogue` gives each product's description and list price
  as known at a cutoff, including products first sold later (their launch description and
  price), so that a model can score products nobody has bought yet.
* **Content models** follow the protocol of :mod:`companion.recsys.baselines`:
  :class:`ContentRecommender` builds each customer's profile as the (recency-weighted)
  mean of the vectors of the products they bought and scores every product by cosine.
  The vectors come from :class:`TfidfText` (TF-IDF over description words) or
  :class:`TextEncoder` (a Keras encoder of words and character trigrams, trained so that
  products bought in the same basket are close, which can embed a product never bought).
  :class:`WordPopularity` and :class:`PriceMatch` are the non-learned baselines for new
  products.
* **Cold start**: :func:`cold_start_task` and :func:`evaluate_cold` rank only the products
  first sold in a window for the customers with a history who bought them;
  :func:`random_cold` is the random baseline, averaged over many orders.
* **Hybrid**: :class:`Hybrid` keeps a collaborative model's ranking of products with
  purchases and gives a never-bought product the collaborative scores of its nearest
  products by description.
* **Context**: :func:`basket_contexts` describes each invoice by what is known when the
  customer arrives (hour, weekday, month, weeks to Christmas, country);
  :func:`basket_task` and :func:`evaluate_baskets` score every basket of a window against
  the whole catalogue; :class:`ContextPopularity` and :class:`ContextTwoTower` use the
  context, and the two-tower model can be built without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp
from companion._optional import require
from companion.data.preprocessing import check_interactions
from companion.foundations.nn import EarlyStopping
from companion.recsys.baselines import Recommender
from companion.recsys.ranking import METRICS, metrics_from_hits

# ----------------------------------------------------------------------------- catalogue


def product_catalogue(transactions: pd.DataFrame, cutoff, until=None) -> pd.DataFrame:
    """Products known at ``cutoff``, plus those first sold in ``[cutoff, until)``.

    For a product sold before ``cutoff`` the description and price are those of its last
    line before ``cutoff``; for a product first sold in ``[cutoff, until)`` they are those
    of its first line (its launch text and list price, which a shop knows before anyone
    buys). Nothing after ``until`` (default ``cutoff``) is read.

    Returns a frame indexed by ``stock_code`` with ``description`` (empty string when
    unknown), ``price`` and ``first_sold``, sorted by stock code.
    """
    frame = check_frame(transactions, {"stock_code": "string", "invoice_date": "datetime",
                                       "price": "float"}, name="transactions")
    if "description" not in frame.columns:
        raise ValueError("transactions is missing column 'description'.")
    cutoff = check_timestamp(cutoff, name="cutoff")
    until = cutoff if until is None else check_timestamp(until, name="until")
    if until < cutoff:
        raise ValueError(f"until={until} is before cutoff={cutoff}.")
    frame = frame[frame["invoice_date"] < until].sort_values("invoice_date", kind="stable")
    if frame.empty:
        raise ValueError(f"transactions have no line before {until}.")
    first = frame.groupby("stock_code")["invoice_date"].min()
    before = frame[frame["invoice_date"] < cutoff]
    known = before.dropna(subset=["description"]).drop_duplicates("stock_code", keep="last")
    warm = pd.DataFrame({
        "description": known.set_index("stock_code")["description"],
        "price": before.drop_duplicates("stock_code", keep="last").set_index(
            "stock_code")["price"]})
    later = frame[frame["invoice_date"] >= cutoff]
    later = later[~later["stock_code"].isin(warm.index)]
    launch = later.dropna(subset=["description"]).drop_duplicates("stock_code", keep="first")
    cold = pd.DataFrame({
        "description": launch.set_index("stock_code")["description"],
        "price": later.drop_duplicates("stock_code", keep="first").set_index(
            "stock_code")["price"]})
    out = pd.concat([warm, cold])
    out["description"] = out["description"].fillna("").astype("string")
    out["first_sold"] = first.reindex(out.index)
    out.index.name = "stock_code"
    return out.sort_index()


def _check_text(item_text: object, name: str = "item_text") -> pd.Series:
    if not isinstance(item_text, pd.Series):
        raise TypeError(f"{name} must be a pandas Series (item id -> description), "
                        f"got {type(item_text).__name__}.")
    if item_text.index.has_duplicates:
        dup = item_text.index[item_text.index.duplicated()][:3].tolist()
        raise ValueError(f"{name} has duplicate item ids, e.g. {dup}.")
    bad = item_text.dropna()
    bad = bad[~bad.map(lambda v: isinstance(v, str))]
    if len(bad):
        raise ValueError(f"{name} must hold text; e.g. item {bad.index[0]!r} has "
                         f"{bad.iloc[0]!r}.")
    return item_text.fillna("").astype(str)


# ------------------------------------------------------------------------- text vectors


class TfidfText:
    """TF-IDF vectors of descriptions (scikit-learn), rows scaled to unit length.

    ``analyzer="word"`` uses words, ``"char_wb"`` character n-grams inside words (which
    match ``T-LIGHT`` with ``T-LIGHTS``). The vocabulary and IDF weights are learned from
    the texts given to :meth:`fit`: descriptions of the catalogue, known before any sale.
    """

    def __init__(self, analyzer: str = "word", ngram_range: tuple[int, int] = (1, 1),
                 min_df: int = 1, sublinear_tf: bool = True) -> None:
        self.analyzer, self.ngram_range = analyzer, ngram_range
        self.min_df, self.sublinear_tf = min_df, sublinear_tf

    def fit(self, texts: pd.Series, interactions: pd.DataFrame | None = None) -> TfidfText:
        """Learn the vocabulary and IDF from ``texts`` (``interactions`` is not used)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        check_in(self.analyzer, ("word", "char_wb"), name="analyzer")
        texts = _check_text(texts, "texts")
        self.vectorizer_ = TfidfVectorizer(analyzer=self.analyzer, ngram_range=self.ngram_range,
                                           min_df=self.min_df, sublinear_tf=self.sublinear_tf,
                                           dtype=np.float32)
        try:
            self.vectorizer_.fit(texts)
        except ValueError as err:  # empty vocabulary
            raise ValueError(f"no term of the descriptions is usable: {err}") from None
        return self

    def is_fitted(self) -> bool:
        return hasattr(self, "vectorizer_")

    def transform(self, texts: pd.Series) -> sp.csr_matrix:
        """Unit-length TF-IDF rows, one per text (all-zero for a text with no known term)."""
        if not self.is_fitted():
            raise RuntimeError("this TfidfText is not fitted yet; call fit first.")
        return self.vectorizer_.transform(_check_text(texts, "texts")).tocsr()

    def __repr__(self) -> str:
        return (f"TfidfText(analyzer={self.analyzer!r}, ngram_range={self.ngram_range!r}, "
                f"min_df={self.min_df!r}, sublinear_tf={self.sublinear_tf!r})")


def _tokenise(texts: pd.Series, char_ngrams: bool) -> list[list[str]]:
    """Words (``w:``) and, optionally, character trigrams inside words (``c:``)."""
    from sklearn.feature_extraction.text import CountVectorizer

    words = CountVectorizer(analyzer="word").build_analyzer()
    chars = CountVectorizer(analyzer="char_wb", ngram_range=(3, 3)).build_analyzer()
    out = []
    for text in texts:
        tokens = [f"w:{w}" for w in dict.fromkeys(words(text))]
        if char_ngrams:
            tokens += [f"c:{c}" for c in dict.fromkeys(chars(text))]
        out.append(tokens)
    return out


class TextEncoder:
    """A Keras encoder from a description to a unit vector, trained on co-purchases.

    A description is read as its words and, with ``char_ngrams``, the character trigrams
    of its words; their embeddings are averaged and passed through two dense layers. The
    encoder is trained contrastively: each step draws ``batch_size`` pairs of products
    bought in the same basket and asks each product to pick its partner among all the
    partners of the batch (in-batch softmax, with the logQ correction for popular
    products). Only text enters the encoder, so it embeds products that were never sold.
    Nothing is downloaded: vocabulary and weights are learned from the shop's data.

    ``fit`` may be given ``validation``, a function of the encoder returning a score to
    maximise (for example cold-start NDCG on a validation window); training then stops
    after ``patience`` epochs without improvement and keeps the best weights, and
    ``best_epoch_`` records the epoch.
    """

    def __init__(self, dim: int = 64, char_ngrams: bool = True, min_df: int = 2,
                 max_tokens: int = 48, temperature: float = 0.1, epochs: int = 10,
                 pairs_per_epoch: int = 100_000, batch_size: int = 512,
                 learning_rate: float = 3e-3, patience: int = 2, pairs: str = "basket",
                 seed: int = 0) -> None:
        self.pairs = pairs
        self.dim, self.char_ngrams, self.min_df, self.max_tokens = dim, char_ngrams, min_df, \
            max_tokens
        self.temperature, self.epochs, self.pairs_per_epoch = temperature, epochs, \
            pairs_per_epoch
        self.batch_size, self.learning_rate, self.patience, self.seed = batch_size, \
            learning_rate, patience, seed

    def __repr__(self) -> str:
        names = ("dim", "char_ngrams", "min_df", "max_tokens", "temperature", "epochs",
                 "pairs_per_epoch", "batch_size", "learning_rate", "patience", "pairs", "seed")
        return "TextEncoder(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

    def is_fitted(self) -> bool:
        return hasattr(self, "encoder_")

    # -- tokens ---------------------------------------------------------------------
    def _token_ids(self, texts: pd.Series) -> np.ndarray:
        out = np.zeros((len(texts), self.max_tokens), dtype=np.int32)
        for row, tokens in enumerate(_tokenise(texts, self.char_ngrams)):
            ids = [self.vocabulary_[t] for t in tokens if t in self.vocabulary_]
            ids = ids[:self.max_tokens]
            out[row, :len(ids)] = ids
        return out

    def _build(self, n_tokens: int):
        keras = require("keras", "deep")

        t = keras.Input(shape=(self.max_tokens,), dtype="int32")
        mask = keras.ops.cast(keras.ops.greater(t, 0), "float32")[..., None]
        emb = keras.layers.Embedding(n_tokens, self.dim, embeddings_initializer=(
            keras.initializers.RandomNormal(stddev=0.1, seed=self.seed)))(t) * mask
        mean = keras.ops.sum(emb, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        h = keras.layers.Dense(self.dim, activation="relu", kernel_initializer=(
            keras.initializers.HeNormal(seed=self.seed + 1)))(mean)
        h = keras.layers.Dense(self.dim, kernel_initializer=keras.initializers.GlorotUniform(
            seed=self.seed + 2))(h) + mean
        encoder = keras.Model(t, keras.ops.normalize(h, axis=-1))
        a = keras.Input(shape=(self.max_tokens,), dtype="int32")
        b = keras.Input(shape=(self.max_tokens,), dtype="int32")
        q = keras.Input(shape=(), dtype="float32")
        logits = keras.ops.matmul(encoder(a), keras.ops.transpose(encoder(b)))
        logits = logits / self.temperature - keras.ops.expand_dims(q, 0)
        trainer = keras.Model([a, b, q], logits)
        trainer.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return encoder, trainer

    # -- training -------------------------------------------------------------------
    def fit(self, texts: pd.Series, interactions: pd.DataFrame,
            validation: Callable[[TextEncoder], float] | None = None,
            progress: bool = False) -> TextEncoder:
        """Learn the vocabulary from the descriptions of products in ``interactions`` and
        train on pairs of products bought in the same invoice."""
        from tqdm.auto import tqdm

        from companion.foundations.keras_helpers import seed_everything

        for name in ("epochs", "batch_size", "pairs_per_epoch", "max_tokens", "dim"):
            check_positive_int(getattr(self, name), name=name)
        if self.pairs_per_epoch < self.batch_size:
            raise ValueError(f"pairs_per_epoch={self.pairs_per_epoch} is smaller than "
                             f"batch_size={self.batch_size}.")
        texts = _check_text(texts, "texts")
        frame = check_interactions(interactions)
        if "invoice" not in frame.columns:
            raise ValueError("interactions is missing column 'invoice' (baskets pair the "
                             "products).")
        missing = pd.Index(frame["item_id"].unique()).difference(texts.index)
        if len(missing):
            raise ValueError(f"{len(missing)} product(s) of interactions have no text, e.g. "
                             f"{list(missing[:3])}.")
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        items = pd.Index(np.sort(frame["item_id"].unique()))
        bought = texts.reindex(items)
        counts: dict[str, int] = {}
        for tokens in _tokenise(bought, self.char_ngrams):
            for token in tokens:
                counts[token] = counts.get(token, 0) + 1
        kept = sorted(t for t, c in counts.items() if c >= self.min_df)
        if not kept:
            raise ValueError(f"no token occurs in min_df={self.min_df} descriptions.")
        self.vocabulary_ = {t: i + 1 for i, t in enumerate(kept)}
        tokens = self._token_ids(bought)
        # pairs: a random line of a basket (or customer) with at least two products, and
        # another line of the same basket (customer)
        check_in(self.pairs, ("basket", "customer"), name="pairs")
        group = "invoice" if self.pairs == "basket" else "user_id"
        if self.pairs == "customer":
            frame = frame.drop_duplicates(["user_id", "item_id"])
        ordered = frame.assign(code=items.get_indexer(frame["item_id"])).sort_values(
            [group, "code"], kind="stable")
        size = ordered.groupby(group, sort=False)["code"].transform("size").to_numpy()
        start = np.arange(len(ordered)) - ordered.groupby(group, sort=False).cumcount(
        ).to_numpy()
        lines = np.flatnonzero(size >= 2)
        if len(lines) == 0:
            raise ValueError(f"no {group} holds two products; nothing to pair.")
        codes = ordered["code"].to_numpy()
        freq = np.bincount(codes[lines], minlength=len(items)) + 1.0
        log_q = np.log(freq / freq.sum()).astype(np.float32)
        self.encoder_, trainer = self._build(len(self.vocabulary_) + 1)
        b = self.batch_size
        n = self.pairs_per_epoch // b * b
        labels = np.tile(np.arange(b, dtype=np.int32), n // b)
        stopper = EarlyStopping(self.patience)
        self.history_ = []
        for epoch in tqdm(range(1, self.epochs + 1), desc="text encoder", disable=not progress,
                          leave=False):
            tic = time.perf_counter()
            anchor = lines[rng.integers(0, len(lines), n)]
            offset = rng.integers(1, size[anchor])
            partner = start[anchor] + (anchor - start[anchor] + offset) % size[anchor]
            a, p = codes[anchor], codes[partner]
            hist = trainer.fit([tokens[a], tokens[p], log_q[p]], labels, batch_size=b,
                               epochs=1, verbose=0, shuffle=False)
            row = {"epoch": epoch, "loss": float(hist.history["loss"][-1]),
                   "seconds": time.perf_counter() - tic}
            if validation is not None:
                row["validation"] = float(validation(self))
                stopper.update(epoch, row["validation"], self.encoder_.get_weights)
            self.history_.append(row)
            if validation is not None and stopper.stop:
                break
        self.best_epoch_ = stopper.finish(self.encoder_.set_weights, len(self.history_))
        return self

    def transform(self, texts: pd.Series) -> np.ndarray:
        """Unit vectors, one row per text (zero for a text with no known token)."""
        from companion.foundations.keras_helpers import predict_in_chunks

        if not self.is_fitted():
            raise RuntimeError("this TextEncoder is not fitted yet; call fit first.")
        tokens = self._token_ids(_check_text(texts, "texts"))
        out = predict_in_chunks(self.encoder_, tokens, 8192)
        out[~(tokens > 0).any(axis=1)] = 0.0
        return out.reshape(len(tokens), self.dim)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return int(sum(np.prod(w.shape) for w in self.encoder_.trainable_weights))


# ------------------------------------------------------------------ content recommenders


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
        :class:`TfidfText` (default) or :class:`TextEncoder`. An unfitted encoder is fitted
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
        return _check_text(self.item_text).index

    def _fit(self, frame, counts):
        texts = _check_text(self.item_text).reindex(self.items_).fillna("")
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
        return _check_text(self.item_text).index

    def _fit(self, frame, counts):
        from sklearn.feature_extraction.text import CountVectorizer

        texts = _check_text(self.item_text).reindex(self.items_).fillna("")
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


# ------------------------------------------------------------------------- cold start


def _sets(frame: pd.DataFrame, by: str) -> pd.Series:
    """``by`` value -> set of item ids (a Series of Python sets, sorted by key)."""
    out = pd.Series({key: set(items) for key, items in frame.groupby(by)["item_id"]},
                    dtype=object)
    out.index.name = by
    return out.sort_index()


@dataclass
class ColdStartTask:
    """Products first sold in a window, and who among customers with a history bought them.

    Attributes
    ----------
    train
        Interactions before the window (what a model may learn from).
    candidates
        The cold products: every product first sold in the window (the whole cold
        catalogue is ranked).
    truth
        User id -> set of cold products the customer bought in the window.
    description
        How the task was built.
    """

    train: pd.DataFrame
    candidates: np.ndarray
    truth: pd.Series
    description: str

    def users(self) -> np.ndarray:
        return self.truth.index.to_numpy()


def cold_start_task(interactions: pd.DataFrame, start, end=None, *,
                    min_history: int = 1) -> ColdStartTask:
    """The cold-start task of the window ``[start, end)`` (``end`` default: no end).

    Cold products are those whose first purchase falls in the window; evaluated customers
    have at least ``min_history`` purchase lines before ``start`` and bought at least one
    cold product in the window. Nothing after ``end`` is read.
    """
    frame = check_interactions(interactions)
    start = check_timestamp(start, name="start")
    end = None if end is None else check_timestamp(end, name="end")
    check_positive_int(min_history, name="min_history")
    if end is not None:
        if end <= start:
            raise ValueError(f"end={end} must be after start={start}.")
        frame = frame[frame["timestamp"] < end]
    train = frame[frame["timestamp"] < start]
    window = frame[frame["timestamp"] >= start]
    if train.empty:
        raise ValueError(f"no interaction before start={start}; nothing to learn from.")
    if window.empty:
        raise ValueError(f"no interaction in the window starting {start}.")
    candidates = np.sort(np.setdiff1d(window["item_id"].unique(), train["item_id"].unique()))
    history = train.groupby("user_id").size()
    known = history[history >= min_history].index
    bought = window[window["item_id"].isin(candidates) & window["user_id"].isin(known)]
    if bought.empty:
        raise ValueError(f"no customer with a history bought a product first sold in the "
                         f"window starting {start}.")
    truth = _sets(bought, "user_id")
    desc = (f"products first sold from {start.date()}"
            + (f" to {end.date()}" if end is not None else "")
            + f": {len(candidates)} products, {len(truth)} customers with a history")
    return ColdStartTask(train.reset_index(drop=True), candidates, truth.sort_index(), desc)


def simulate_launches(interactions: pd.DataFrame, starts: Sequence, *, share: float = 0.1,
                      seed: int = 0) -> pd.DataFrame:
    """Make a shop without product launches look as if it had some.

    For each date in ``starts`` a random ``share`` of the products loses every purchase
    before that date, so those products are first sold from then on. For the synthetic
    shop, whose catalogue is fixed from its first day; never for real data.
    """
    frame = check_interactions(interactions)
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}.")
    rng = np.random.default_rng(seed)
    items = np.sort(frame["item_id"].unique())
    order = rng.permutation(len(items))
    n = int(round(share * len(items)))
    drop = np.zeros(len(frame), dtype=bool)
    for k, start in enumerate(starts):
        start = check_timestamp(start, name="starts")
        launched = items[order[k * n:(k + 1) * n]]
        drop |= (frame["item_id"].isin(launched) & (frame["timestamp"] < start)).to_numpy()
    return frame[~drop].reset_index(drop=True)


def _cold_metrics(scores: np.ndarray, task: ColdStartTask, k: int) -> pd.DataFrame:
    k = min(k, len(task.candidates))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    truth = task.truth.to_numpy()
    hits = np.array([[task.candidates[j] in items for j in row]
                     for row, items in zip(top, truth, strict=True)], dtype=bool)
    frame = metrics_from_hits(hits, task.truth.map(len).to_numpy())
    frame.index = task.truth.index
    return frame


def evaluate_cold(model: Recommender, task: ColdStartTask, *, k: int = 10) -> pd.DataFrame:
    """Per-customer metrics@k of ``model`` ranking only the cold candidates.

    The model's catalogue must hold every candidate (content models get it from their
    ``item_text``). Ties are broken by candidate order, so a model that scores every
    candidate alike is no better than a fixed order.
    """
    check_positive_int(k, name="k")
    model._check_fitted()
    codes = model.item_encoder_.transform(task.candidates)
    if (codes < 0).any():
        missing = task.candidates[codes < 0][:3].tolist()
        raise ValueError(f"the model cannot score {int((codes < 0).sum())} cold product(s), "
                         f"e.g. {missing}; give it their descriptions.")
    scores = model.score(task.users())[:, codes]
    return _cold_metrics(scores, task, k)


def random_cold(task: ColdStartTask, *, k: int = 10, draws: int = 200,
                seed: int = 0) -> pd.DataFrame:
    """Per-customer metrics of a random order of the candidates, averaged over ``draws``
    orders (close to the exact expectation)."""
    check_positive_int(draws, name="draws")
    rng = np.random.default_rng(seed)
    total = None
    for _ in range(draws):
        scores = rng.random((len(task.truth), len(task.candidates)))
        frame = _cold_metrics(scores, task, k)
        total = frame if total is None else total + frame
    return total / draws


# ---------------------------------------------------------------------------- context

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
    history = _sets(train, "user_id")
    items = _sets(window, "invoice")
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
            raise RuntimeError("this ContextTwoTower is not fitted yet; call fit first.")
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
