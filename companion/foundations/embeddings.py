"""Skip-gram embeddings with negative sampling (word2vec, item2vec / prod2vec) in Keras.

Words in product descriptions and products in baskets are both "tokens in sequences".
:class:`SkipGram` learns one vector per token such that tokens that appear together
(within ``window`` positions, or anywhere in the same basket when ``window=None``) get
similar vectors: for a pair (target, context) it maximises
:math:`\\log\\sigma(u_t^\\top v_c) + \\sum_n \\log\\sigma(-u_t^\\top v_n)`
over ``negatives`` random contexts :math:`n` drawn from the unigram distribution raised to
the power 3/4 (Mikolov et al., 2013).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion._optional import require
from companion.exceptions import not_fitted
from companion.foundations.keras_helpers import seed_everything


class SkipGram:
    """Skip-gram with negative sampling over token sequences.

    Parameters
    ----------
    dim
        Embedding size.
    window
        Context window in positions; ``None`` treats each sequence as an unordered set
        (a basket), in which every other token is context.
    contexts_per_token
        For ``window=None``, how many contexts to sample per token and epoch (large
        baskets would otherwise produce quadratically many pairs).
    negatives
        Negative samples per positive pair.
    min_count
        Tokens seen fewer times are dropped.
    epochs, batch_size, learning_rate, seed
        Training settings (Adam).

    Attributes
    ----------
    vocabulary_
        Tokens, most frequent first.
    vectors_
        Array ``(len(vocabulary_), dim)`` of unit-length embeddings.
    history_
        Training loss per epoch.
    """

    def __init__(self, dim: int = 32, *, window: int | None = 2, contexts_per_token: int = 4,
                 negatives: int = 4, min_count: int = 3, epochs: int = 5,
                 batch_size: int = 4096, learning_rate: float = 0.005, seed: int = 0) -> None:
        self.dim = check_positive_int(dim, name="dim")
        self.window = None if window is None else check_positive_int(window, name="window")
        self.contexts_per_token = check_positive_int(contexts_per_token,
                                                     name="contexts_per_token")
        self.negatives = check_positive_int(negatives, name="negatives", minimum=0)
        self.min_count = check_positive_int(min_count, name="min_count")
        self.epochs = check_positive_int(epochs, name="epochs")
        self.batch_size = check_positive_int(batch_size, name="batch_size")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
        self.learning_rate = learning_rate
        self.seed = seed

    def _pairs(self, seqs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        targets, contexts = [], []
        for seq in seqs:
            n = len(seq)
            if n < 2:
                continue
            if self.window is None:
                k = min(self.contexts_per_token, n - 1)
                # for each position pick k other positions of the same basket
                offsets = rng.integers(1, n, size=(n, k))
                idx = (np.arange(n)[:, None] + offsets) % n
                targets.append(np.repeat(seq, k))
                contexts.append(seq[idx].ravel())
            else:
                for d in range(1, self.window + 1):
                    if d >= n:
                        break
                    targets += [seq[:-d], seq[d:]]
                    contexts += [seq[d:], seq[:-d]]
        if not targets:
            raise ValueError("no (target, context) pairs: every sequence has fewer than 2 "
                             "known tokens.")
        return np.c_[np.concatenate(targets), np.concatenate(contexts)]

    def fit(self, sequences: Iterable[Sequence[str]]) -> SkipGram:
        """Learn embeddings from ``sequences`` (lists of tokens)."""
        keras = require("keras", "deep")

        seqs = [list(s) for s in sequences]
        if not seqs:
            raise ValueError("sequences is empty.")
        counts = Counter(tok for s in seqs for tok in s)
        vocab = [t for t, c in counts.most_common() if c >= self.min_count]
        if len(vocab) < 2:
            raise ValueError(f"fewer than 2 tokens occur at least min_count={self.min_count} "
                             "times.")
        index = {t: i for i, t in enumerate(vocab)}
        coded = [np.array([index[t] for t in s if t in index], dtype=np.int64) for s in seqs]
        freq = np.array([counts[t] for t in vocab], dtype=float) ** 0.75
        noise = freq / freq.sum()

        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        target_in = keras.Input(shape=(), dtype="int32")
        context_in = keras.Input(shape=(), dtype="int32")
        target_emb = keras.layers.Embedding(len(vocab), self.dim, name="target")(target_in)
        context_emb = keras.layers.Embedding(len(vocab), self.dim, name="context")(context_in)
        logit = keras.ops.sum(target_emb * context_emb, axis=-1)
        model = keras.Model([target_in, context_in], logit)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        self.history_ = []
        for _ in range(self.epochs):
            pos = self._pairs(coded, rng)
            neg_t = np.repeat(pos[:, 0], self.negatives)
            neg_c = rng.choice(len(vocab), size=neg_t.size, p=noise)
            t = np.r_[pos[:, 0], neg_t]
            c = np.r_[pos[:, 1], neg_c]
            y = np.r_[np.ones(len(pos)), np.zeros(neg_t.size)].astype("float32")
            order = rng.permutation(len(t))
            hist = model.fit([t[order], c[order]], y[order], batch_size=self.batch_size,
                             epochs=1, verbose=0, shuffle=False)
            self.history_.append(float(hist.history["loss"][0]))
        vectors = model.get_layer("target").get_weights()[0]
        self.vocabulary_ = vocab
        self._index = index
        self.vectors_ = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            raise not_fitted(self)

    def vector(self, token: str) -> np.ndarray:
        """The unit-length embedding of ``token``."""
        self._check_fitted()
        if token not in self._index:
            raise KeyError(f"token {token!r} is not in the vocabulary "
                           f"({len(self.vocabulary_)} tokens; rare ones are dropped).")
        return self.vectors_[self._index[token]]

    def most_similar(self, token: str, k: int = 5) -> pd.DataFrame:
        """The ``k`` tokens with the highest cosine similarity to ``token``."""
        check_positive_int(k, name="k")
        self._check_fitted()
        sims = self.vectors_ @ self.vector(token)
        sims[self._index[token]] = -np.inf
        top = np.argsort(-sims)[:k]
        return pd.DataFrame({"token": [self.vocabulary_[i] for i in top],
                             "similarity": sims[top]})


def neighbour_coherence(model: SkipGram, labels: dict, tokens: Iterable[str], *, k: int = 5,
                        seed: int = 0) -> tuple[float, float]:
    """How often a token's ``k`` nearest neighbours share a label word with it.

    ``labels`` maps each token to a set of words (for products, the words of their
    description). Returns ``(neighbours, random)``: the share of (token, neighbour) pairs
    sharing at least one word, and the same share for random tokens of the vocabulary,
    the baseline the neighbours must beat.
    """
    rng = np.random.default_rng(seed)
    tokens = [t for t in tokens if t in model._index and t in labels]
    if not tokens:
        raise ValueError("none of the tokens is both in the vocabulary and in labels.")
    known = [t for t in model.vocabulary_ if t in labels]
    near, rand = [], []
    for token in tokens:
        words = labels[token]
        for other in model.most_similar(token, k)["token"]:
            near.append(bool(words & labels.get(other, set())))
        for other in rng.choice(known, size=k):
            rand.append(bool(words & labels[other]))
    return float(np.mean(near)), float(np.mean(rand))
