"""Product vectors from descriptions: TF-IDF and a learned Keras text encoder."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_in, check_positive_int
from companion._optional import require
from companion.data.preprocessing import check_interactions
from companion.exceptions import not_fitted
from companion.foundations.nn import EarlyStopping
from companion.recsys.content.catalogue import check_item_text


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
        texts = check_item_text(texts, "texts")
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
            raise not_fitted(self)
        return self.vectorizer_.transform(check_item_text(texts, "texts")).tocsr()

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
        texts = check_item_text(texts, "texts")
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
            raise not_fitted(self)
        tokens = self._token_ids(check_item_text(texts, "texts"))
        out = predict_in_chunks(self.encoder_, tokens, 8192)
        out[~(tokens > 0).any(axis=1)] = 0.0
        return out.reshape(len(tokens), self.dim)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return int(sum(np.prod(w.shape) for w in self.encoder_.trainable_weights))
