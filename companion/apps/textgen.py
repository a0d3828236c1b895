"""A small character-level language model of product descriptions, and its baselines.

Data flow: product descriptions (:func:`companion.data.preprocessing.product_descriptions`)
→ :func:`prepare_corpus` (normalised, unique) → :func:`split_corpus` (by product) →
models → :func:`evaluate_models` and :func:`sample`.

* :class:`CharVocabulary` maps characters to ids. The symbols a model predicts are the
  characters of the training text plus an end-of-text symbol (id 0); a begin-of-text
  symbol (id ``size``) is only ever read, never predicted.
* :class:`UniformModel` gives every symbol the same probability (perplexity = vocabulary
  size), :class:`NGramModel` is an interpolated Kneser–Ney character n-gram model, and
  :class:`TransformerLM` is a decoder-only Transformer in Keras (causal self-attention,
  learned position embeddings, output layer tied to the input embedding).
* All three expose ``next_log_probs(prefixes)``: the log-probabilities of the next
  symbol after each prefix. :func:`score` turns that into the negative log-likelihood of
  whole descriptions, :func:`perplexity` and :func:`bits_per_char` summarise it, and
  :func:`sample` draws new descriptions with temperature and top-k, deterministically
  for a seed. :func:`novelty` says how many samples copy a training description and how
  many are new but made of known words.

**Why one module.** The three language models share one interface (``next_log_probs``), one
corpus and one scorer; the n-gram baselines exist to be compared with the Transformer under
that scorer.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion._optional import require
from companion.exceptions import not_fitted

#: Printed name of the end-of-text symbol in tables.
EOS_NAME = "<end>"


# ----------------------------------------------------------------------------- corpus


def prepare_corpus(descriptions: Iterable[object]) -> list[str]:
    """Normalise product descriptions and keep each distinct text once, sorted.

    Upper-cases (a few descriptions have stray lower-case letters), collapses runs of
    white space and trims; empty and missing descriptions are dropped. Products that share
    a description become one text, so no text can be in two parts of a split.

    Raises
    ------
    ValueError
        If nothing is left.
    """
    if isinstance(descriptions, str):
        raise TypeError("descriptions must be a collection of strings, not one string.")
    texts = set()
    for value in descriptions:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value is pd.NA:
            continue
        if not isinstance(value, str):
            raise TypeError(f"descriptions must be strings, got {type(value).__name__} "
                            f"({value!r}).")
        text = re.sub(r"\s+", " ", value).strip().upper()
        if text:
            texts.add(text)
    if not texts:
        raise ValueError("the corpus is empty: no non-blank description was given.")
    return sorted(texts)


def split_corpus(texts: Sequence[str], *, validation: float = 0.1, test: float = 0.1,
                 seed: int = 0) -> dict[str, list[str]]:
    """Split distinct descriptions at random into ``train``, ``validation`` and ``test``.

    Each description is one product (after :func:`prepare_corpus`), so held-out texts are
    products the models never saw. Each part keeps the sorted order of ``texts``.
    """
    texts = list(texts)
    if len(set(texts)) != len(texts):
        raise ValueError("texts has duplicates; run prepare_corpus first.")
    for name, share in (("validation", validation), ("test", test)):
        if not 0 < share < 1:
            raise ValueError(f"{name} share must be in (0, 1), got {share}.")
    if validation + test >= 1:
        raise ValueError(f"validation + test must be below 1, got {validation + test}.")
    n = len(texts)
    n_val, n_test = round(n * validation), round(n * test)
    if min(n_val, n_test, n - n_val - n_test) < 1:
        raise ValueError(f"{n} texts are too few to split into three non-empty parts.")
    order = np.random.default_rng(seed).permutation(n)
    part = np.zeros(n, dtype=int)
    part[order[:n_val]] = 1
    part[order[n_val:n_val + n_test]] = 2
    return {name: [t for t, p in zip(texts, part, strict=True) if p == k]
            for k, name in enumerate(("train", "validation", "test"))}


class CharVocabulary:
    """Characters ↔ ids. Id 0 is the end of a text; id ``size`` is the begin symbol.

    Parameters
    ----------
    chars
        The characters, in the order their ids are given (1, 2, ...).
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("a vocabulary needs at least one character.")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[:3]}.")
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct.")
        self.chars = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharVocabulary:
        """The sorted set of characters in ``texts``."""
        texts = list(texts)
        if not texts:
            raise ValueError("the corpus is empty: cannot build a vocabulary.")
        chars = sorted(set("".join(texts)))
        if not chars:
            raise ValueError("the corpus has only empty texts.")
        return cls(chars)

    @property
    def size(self) -> int:
        """Number of symbols a model predicts: the characters plus the end symbol."""
        return len(self.chars) + 1

    @property
    def bos(self) -> int:
        """Id of the begin symbol (input only)."""
        return self.size

    def symbols(self) -> list[str]:
        """Printable name of each predicted symbol, by id."""
        return [EOS_NAME, *self.chars]

    def unknown(self, text: str) -> list[str]:
        """The characters of ``text`` not in the vocabulary (sorted, distinct)."""
        return sorted(set(text) - set(self._index))

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text`` (no begin or end symbol)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}.")
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"text {text!r} has character(s) {missing} that are not in "
                             f"the vocabulary of {len(self.chars)} characters.")
        return np.array([self._index[c] for c in text], dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """Characters of ``ids``, stopping at the first end symbol; begin symbols skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == 0:
                break
            if i == self.bos:
                continue
            if not 0 < i < self.size:
                raise ValueError(f"id {i} is outside the vocabulary (0..{self.size}).")
            out.append(self.chars[i - 1])
        return "".join(out)


def _check_prefixes(prefixes: object, vocab: CharVocabulary) -> list[str]:
    if isinstance(prefixes, str) or not isinstance(prefixes, Sequence):
        raise TypeError("prefixes must be a list of strings.")
    for p in prefixes:
        vocab.encode(p)  # raises on unknown characters
    return list(prefixes)


# ----------------------------------------------------------------------------- scoring


class LanguageModel:
    """Protocol: ``vocab`` and ``next_log_probs(prefixes) -> (len(prefixes), size)``."""

    vocab: CharVocabulary

    def next_log_probs(self, prefixes: Sequence[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def symbol_log_probs(model: LanguageModel, texts: Sequence[str]) -> list[np.ndarray]:
    """Log-probability (nats) of each symbol of each text: its characters, then the end.

    Returns one array of length ``len(text) + 1`` per text.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: nothing to score.")
    if hasattr(model, "symbol_log_probs"):
        return model.symbol_log_probs(texts)
    prefixes, targets, bounds = [], [], [0]
    for text in texts:
        ids = model.vocab.encode(text)
        prefixes.extend(text[:j] for j in range(len(text) + 1))
        targets.extend([*ids.tolist(), 0])
        bounds.append(len(targets))
    lp = model.next_log_probs(prefixes)
    picked = lp[np.arange(len(targets)), targets]
    return [picked[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def score(model: LanguageModel, texts: Sequence[str]) -> pd.DataFrame:
    """Negative log-likelihood (nats) of each whole text, its end symbol included.

    Returns a frame with ``text``, ``nll`` and ``symbols`` (the number of predictions:
    characters + 1 for the end), one row per text in the order given.
    """
    texts = list(texts)
    lps = symbol_log_probs(model, texts)
    return pd.DataFrame({"text": texts, "nll": [-float(lp.sum()) for lp in lps],
                         "symbols": [len(t) + 1 for t in texts]})


class Interpolated(LanguageModel):
    """The mixture ``weight * first + (1 - weight) * second`` of two models' predictions.

    Both models must share one vocabulary. Each next-symbol distribution is a mixture of
    two distributions, so it sums to 1.
    """

    def __init__(self, first: LanguageModel, second: LanguageModel, weight: float) -> None:
        if first.vocab.symbols() != second.vocab.symbols():
            raise ValueError("the two models must share one vocabulary.")
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight}.")
        self.first, self.second, self.weight = first, second, float(weight)
        self.vocab = first.vocab

    def _mix(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.logaddexp(np.log(self.weight) + a, np.log1p(-self.weight) + b)

    def next_log_probs(self, prefixes: Sequence[str]) -> np.ndarray:
        return self._mix(self.first.next_log_probs(prefixes),
                         self.second.next_log_probs(prefixes))

    def symbol_log_probs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._mix(a, b) for a, b in zip(symbol_log_probs(self.first, texts),
                                                symbol_log_probs(self.second, texts),
                                                strict=True)]


def tune_interpolation(first: list[np.ndarray], second: list[np.ndarray],
                       weights: Iterable[float] = np.linspace(0, 1, 21)
                       ) -> tuple[float, pd.Series]:
    """The weight of ``first`` in a mixture with ``second`` that minimises validation loss.

    ``first`` and ``second`` are :func:`symbol_log_probs` of the same texts. Returns the
    best weight and the bits per character of every weight tried.
    """
    a, b = np.concatenate(first), np.concatenate(second)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("first and second must hold the log-probabilities of the same "
                         "texts.")
    grid = {}
    for w in weights:
        if not 0 <= w <= 1:
            raise ValueError(f"weights must lie in [0, 1], got {w}.")
        with np.errstate(divide="ignore"):
            mixed = np.logaddexp(np.log(w) + a, np.log1p(-w) + b)
        grid[float(w)] = float(-mixed.mean() / np.log(2))
    grid = pd.Series(grid, name="validation bits")
    grid.index.name = "weight"
    return float(grid.idxmin()), grid


def perplexity(nll: object, symbols: object) -> float:
    """Perplexity per symbol: ``exp(sum(nll) / sum(symbols))``."""
    nll, symbols = np.asarray(nll, float), np.asarray(symbols, float)
    if symbols.sum() <= 0:
        raise ValueError("symbols must sum to a positive number.")
    return float(np.exp(nll.sum() / symbols.sum()))


def bits_per_char(nll: object, symbols: object) -> float:
    """Bits per symbol: ``sum(nll) / sum(symbols) / ln 2``."""
    nll, symbols = np.asarray(nll, float), np.asarray(symbols, float)
    if symbols.sum() <= 0:
        raise ValueError("symbols must sum to a positive number.")
    return float(nll.sum() / symbols.sum() / np.log(2))


# ----------------------------------------------------------------------------- baselines


class UniformModel(LanguageModel):
    """Every symbol (characters and end) equally likely: perplexity = ``vocab.size``."""

    def __init__(self, vocab: CharVocabulary) -> None:
        self.vocab = vocab

    def next_log_probs(self, prefixes: Sequence[str]) -> np.ndarray:
        prefixes = _check_prefixes(prefixes, self.vocab)
        return np.full((len(prefixes), self.vocab.size), -np.log(self.vocab.size))


_BOS, _EOS = "\x02", "\x03"


class NGramModel(LanguageModel):
    """Interpolated Kneser–Ney character n-gram model (Chen and Goodman's modified form).

    The probability of the next symbol given the last ``order - 1`` characters mixes the
    discounted count of the full n-gram with the lower-order distribution; lower orders
    use continuation counts (how many different characters precede a string), and the
    lowest order is mixed with the uniform distribution, so every symbol has a positive
    probability and each distribution sums to 1. Texts are padded with ``order - 1``
    begin symbols.

    Parameters
    ----------
    order
        n, the number of symbols in an n-gram (1 = unigram).
    discount
        ``None`` (default) for the three discounts per order estimated from the
        counts of counts (modified Kneser–Ney); a number in (0, 1] for one absolute
        discount at every order (interpolated Kneser–Ney).
    vocab
        Vocabulary; by default the characters of the training texts.
    """

    def __init__(self, order: int = 5, discount: float | None = None,
                 vocab: CharVocabulary | None = None) -> None:
        self.order = check_positive_int(order, name="order")
        if discount is not None and not 0 < discount <= 1:
            raise ValueError(f"discount must be in (0, 1] or None, got {discount}.")
        self.discount = discount
        self.vocab = vocab

    def fit(self, texts: Sequence[str]) -> NGramModel:
        """Count the n-grams of ``texts``."""
        texts = list(texts)
        if not texts:
            raise ValueError("the corpus is empty: cannot fit an n-gram model.")
        if self.vocab is None:
            self.vocab = CharVocabulary.fit(texts)
        for t in texts:
            self.vocab.encode(t)
        n, index = self.order, {c: i + 1 for i, c in enumerate(self.vocab.chars)}
        index[_EOS] = 0
        # raw counts of the highest order: context (n - 1 chars) -> Counter of next symbol
        top: dict[str, Counter] = defaultdict(Counter)
        for t in texts:
            seq = _BOS * (n - 1) + t + _EOS
            for j in range(n - 1, len(seq)):
                top[seq[j - n + 1:j]][index[seq[j]]] += 1
        tables = {n: top}
        # continuation counts: order k from the distinct (k + 1)-grams
        for k in range(n - 1, 0, -1):
            cont: dict[str, Counter] = defaultdict(Counter)
            for ctx, nxt in tables[k + 1].items():
                for sym in nxt:
                    cont[ctx[1:]][sym] += 1
            tables[k] = cont
        self.tables_ = {}
        self.discounts_ = {}
        for k, table in tables.items():
            self.discounts_[k] = self._discounts(table)
            self.tables_[k] = {ctx: (np.fromiter(c.keys(), np.int64, len(c)),
                                     np.fromiter(c.values(), float, len(c)))
                               for ctx, c in table.items()}
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        return self

    def _discounts(self, table: dict[str, Counter]) -> np.ndarray:
        if self.discount is not None:
            return np.full(3, float(self.discount))
        counts = Counter(v for c in table.values() for v in c.values())
        n1, n2, n3, n4 = (counts.get(i, 0) for i in (1, 2, 3, 4))
        if min(n1, n2, n3, n4) == 0:  # too little data: one standard discount
            return np.full(3, 0.75)
        y = n1 / (n1 + 2 * n2)
        d = np.array([1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3])
        return np.clip(d, 0.05, None)

    def _dist(self, k: int, ctx: str) -> np.ndarray:
        key = (k, ctx)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        v = self.vocab.size
        lower = np.full(v, 1.0 / v) if k == 1 else self._dist(k - 1, ctx[1:])
        entry = self.tables_[k].get(ctx)
        if entry is None:
            out = lower
        else:
            syms, counts = entry
            d = self.discounts_[k][np.minimum(counts, 3).astype(int) - 1]
            total = counts.sum()
            gamma = d.sum() / total
            out = gamma * lower
            out[syms] += (counts - d) / total
        self._cache[key] = out
        return out

    def _context(self, prefix: str) -> str:
        n = self.order
        padded = _BOS * (n - 1) + prefix
        return padded[len(padded) - (n - 1):] if n > 1 else ""

    def next_log_probs(self, prefixes: Sequence[str]) -> np.ndarray:
        """Log-probabilities of the next symbol after each prefix."""
        self._check_fitted()
        prefixes = _check_prefixes(prefixes, self.vocab)
        out = np.empty((len(prefixes), self.vocab.size))
        for i, p in enumerate(prefixes):
            out[i] = self._dist(self.order, self._context(p))
        return np.log(out)

    def _check_fitted(self) -> None:
        if not hasattr(self, "tables_"):
            raise not_fitted(self, "call fit(texts) first")


def tune_ngram(train: Sequence[str], validation: Sequence[str], *,
               orders: Iterable[int] = range(2, 13),
               discounts: Iterable[float] = (0.6, 0.7, 0.8, 0.9, 1.0),
               vocab: CharVocabulary | None = None,
               progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Choose the n-gram order, then the discount, by bits per character on ``validation``.

    Every order is first fitted with the estimated (modified Kneser–Ney) discounts; at the
    best order each fixed discount of ``discounts`` is tried as well.

    Returns
    -------
    (grid, best)
        ``grid`` has one row per setting (``order``, ``discount``, ``validation bits``);
        ``best`` is the chosen ``{"order": ..., "discount": ...}``.
    """
    vocab = vocab or CharVocabulary.fit(train)
    orders = [check_positive_int(o, name="order") for o in orders]
    if not orders:
        raise ValueError("orders is empty.")
    rows = []

    def run(order: int, discount: float | None) -> None:
        model = NGramModel(order, discount, vocab=vocab).fit(train)
        scored = score(model, validation)
        rows.append({"order": order, "discount": "estimated" if discount is None
                     else discount, "validation bits": bits_per_char(scored["nll"],
                                                                    scored["symbols"])})

    if progress:
        from tqdm.auto import tqdm
        orders = tqdm(orders, desc="n-gram orders")
    for order in orders:
        run(order, None)
    best_order = min(rows, key=lambda r: r["validation bits"])["order"]
    for d in discounts:
        run(best_order, float(d))
    grid = pd.DataFrame(rows)
    top = grid.loc[grid["validation bits"].idxmin()]
    best = {"order": int(top["order"]),
            "discount": None if top["discount"] == "estimated" else float(top["discount"])}
    return grid, best


# ----------------------------------------------------------------------------- transformer


@dataclass
class TrainingHistory:
    """Per-epoch training and validation loss (nats per symbol) and the epoch kept."""

    train: list[float]
    validation: list[float]
    best_epoch: int
    seconds: float


class TransformerLM(LanguageModel):
    """A decoder-only Transformer over characters, in Keras 3.

    Token and learned position embeddings are added, then ``layers`` pre-norm blocks of
    causal multi-head self-attention and a GELU feed-forward layer (4 × ``dim``), each
    with a residual connection, then a final layer norm. The output logits reuse the
    token embedding matrix (weight tying, as in GPT-2).

    Each description is one training sequence: the begin symbol, its characters, and the
    end symbol as the last target; shorter texts are padded with end symbols whose loss
    is masked. Causality makes the padding invisible to the real positions.

    Parameters
    ----------
    vocab
        The vocabulary (from the training texts).
    context
        Longest input, in symbols (begin symbol included). Texts must have at most
        ``context - 1`` characters.
    dim, layers, heads, dropout
        Model width, number of blocks, attention heads, dropout rate.
    epochs, batch_size, learning_rate, patience
        Training: AdamW with a cosine decay, early stopping on the validation loss
        (``patience`` epochs), best epoch's weights kept.
    seed
        Seed of initialisation, dropout and batch order.
    """

    def __init__(self, vocab: CharVocabulary, *, context: int = 40, dim: int = 64,
                 layers: int = 2, heads: int = 4, dropout: float = 0.1, epochs: int = 30,
                 batch_size: int = 64, learning_rate: float = 3e-3, patience: int = 3,
                 seed: int = 0, verbose: bool = False) -> None:
        if not isinstance(vocab, CharVocabulary):
            raise TypeError(f"vocab must be a CharVocabulary, got {type(vocab).__name__}.")
        self.vocab = vocab
        self.context = check_positive_int(context, name="context", minimum=2)
        self.dim = check_positive_int(dim, name="dim")
        self.layers = check_positive_int(layers, name="layers")
        self.heads = check_positive_int(heads, name="heads")
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.dropout = dropout
        self.epochs = check_positive_int(epochs, name="epochs")
        self.batch_size = check_positive_int(batch_size, name="batch_size")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
        self.learning_rate = learning_rate
        self.patience = check_positive_int(patience, name="patience")
        self.seed = int(seed)
        self.verbose = verbose
        self.model_ = self._build()

    # -- model
    def _build(self):
        keras = require("keras", "deep")

        keras.utils.set_random_seed(self.seed)
        model = _char_transformer_class()(
            n_inputs=self.vocab.size + 1, n_outputs=self.vocab.size, context=self.context,
            dim=self.dim, layers=self.layers, heads=self.heads, dropout=self.dropout,
            seed=self.seed)
        model(np.zeros((1, self.context), np.int32))  # create the weights
        return model

    def n_parameters(self) -> int:
        """Number of trainable weights (the tied output matrix counted once)."""
        return int(sum(np.prod(w.shape) for w in self.model_.trainable_weights))

    def get_weights(self) -> list[np.ndarray]:
        """The weights, as NumPy arrays (for memoising a trained model)."""
        return [np.asarray(w) for w in self.model_.get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> TransformerLM:
        """Load weights from :meth:`get_weights`."""
        self.model_.set_weights(weights)
        self.fitted_ = True
        return self

    # -- data
    def _arrays(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        texts = list(texts)
        if not texts:
            raise ValueError("the corpus is empty: nothing to train or score on.")
        too_long = [x for x in texts if len(x) > self.context - 1]
        if too_long:
            raise ValueError(f"{len(too_long)} text(s) are longer than context - 1 = "
                             f"{self.context - 1} characters, e.g. {too_long[0]!r}.")
        width = max(len(x) for x in texts) + 1
        x = np.zeros((len(texts), width), np.int32)
        y = np.zeros((len(texts), width), np.int32)
        w = np.zeros((len(texts), width), np.float32)
        for i, text in enumerate(texts):
            ids = self.vocab.encode(text)
            x[i, 0], x[i, 1:len(ids) + 1] = self.vocab.bos, ids
            y[i, :len(ids)] = ids  # end symbol (0) after the last character
            w[i, :len(ids) + 1] = 1.0
        return x, y, w

    def fit(self, train: Sequence[str], validation: Sequence[str]) -> TransformerLM:
        """Train on ``train``; keep the epoch with the lowest loss on ``validation``."""
        import time

        keras = require("keras", "deep")
        tf = require("tensorflow", "deep")

        keras.utils.set_random_seed(self.seed)
        x, y, w = self._arrays(train)
        xv, yv, wv = self._arrays(validation)
        n_val = wv.sum()
        steps = self.epochs * math.ceil(len(x) / self.batch_size)
        warmup = max(1, steps // 20)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=steps - warmup, alpha=0.05,
            warmup_target=self.learning_rate, warmup_steps=warmup)
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01, clipnorm=1.0)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                             reduction="sum")
        model = self.model_

        @tf.function(reduce_retracing=True)
        def step(xb, yb, wb):
            with tf.GradientTape() as tape:
                logits = model(xb, training=True)
                loss = loss_fn(yb, logits, sample_weight=wb) / tf.reduce_sum(wb)
            grads = tape.gradient(loss, model.trainable_weights)
            optimizer.apply(grads, model.trainable_weights)
            return loss

        rng = np.random.default_rng(self.seed)
        history = TrainingHistory([], [], 0, 0.0)
        best, best_weights, waited, started = np.inf, None, 0, time.process_time()
        epochs = range(self.epochs)
        if self.verbose:
            from tqdm.auto import tqdm
            epochs = tqdm(epochs, desc="epochs")
        for epoch in epochs:
            order = rng.permutation(len(x))
            total, seen = 0.0, 0.0
            for start in range(0, len(x), self.batch_size):
                b = order[start:start + self.batch_size]
                loss = float(step(x[b], y[b], w[b]))
                total += loss * w[b].sum()
                seen += w[b].sum()
            history.train.append(total / seen)
            val = float(self._loss_per_text_arrays(xv, yv, wv).sum() / n_val)
            history.validation.append(val)
            if val < best - 1e-4:
                best, best_weights, waited = val, self.get_weights(), 0
                history.best_epoch = epoch + 1
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_weights is None:
            raise RuntimeError("training diverged: the validation loss was never finite; "
                               "try a lower learning_rate.")
        model.set_weights(best_weights)
        history.seconds = time.process_time() - started
        self.history_ = history
        self.fitted_ = True
        return self

    def _loss_per_text_arrays(self, x, y, w) -> np.ndarray:
        logits = np.asarray(self.model_(x, training=False), float)
        logz = _logsumexp(logits)
        picked = np.take_along_axis(logits, y[..., None], 2)[..., 0]
        return ((logz - picked) * w).sum(1)

    def symbol_log_probs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Log-probability of each symbol of each text (characters, then the end)."""
        x, y, _ = self._arrays(texts)
        out = []
        for start in range(0, len(x), 512):
            logits = np.asarray(self.model_(x[start:start + 512], training=False), float)
            logz = _logsumexp(logits)
            picked = np.take_along_axis(logits, y[start:start + 512, :, None], 2)[..., 0]
            for row, text in zip(picked - logz, texts[start:start + 512], strict=True):
                out.append(row[:len(text) + 1])
        return out

    def next_log_probs(self, prefixes: Sequence[str]) -> np.ndarray:
        """Log-probabilities of the next symbol after each prefix."""
        prefixes = _check_prefixes(prefixes, self.vocab)
        if not prefixes:
            return np.empty((0, self.vocab.size))
        too_long = [p for p in prefixes if len(p) > self.context - 1]
        if too_long:
            raise ValueError(f"prefix {too_long[0]!r} is longer than context - 1 = "
                             f"{self.context - 1} characters.")
        lengths = np.array([len(p) for p in prefixes])
        x = np.zeros((len(prefixes), lengths.max() + 1), np.int32)
        x[:, 0] = self.vocab.bos
        for i, p in enumerate(prefixes):
            x[i, 1:len(p) + 1] = self.vocab.encode(p)
        out = np.empty((len(prefixes), self.vocab.size))
        for start in range(0, len(x), 1024):
            logits = np.asarray(self.model_(x[start:start + 1024], training=False), float)
            last = logits[np.arange(len(logits)), lengths[start:start + 1024]]
            out[start:start + 1024] = last - _logsumexp(last)[:, None]
        return out


def _char_transformer_class():
    """The Keras model class (built on first use, so importing this module needs no Keras)."""
    global _CharTransformer
    if _CharTransformer is not None:
        return _CharTransformer
    keras = require("keras", "deep")
    kl = require("keras.layers", "deep")

    class CharTransformer(keras.Model):
        def __init__(self, n_inputs, n_outputs, context, dim, layers, heads, dropout, seed):
            super().__init__(name="char_transformer")
            normal = keras.initializers.RandomNormal
            self.n_outputs = n_outputs
            self.token_embedding = kl.Embedding(
                n_inputs, dim, embeddings_initializer=normal(stddev=0.02, seed=seed),
                name="token_embedding")
            self.position_embedding = kl.Embedding(
                context, dim, embeddings_initializer=normal(stddev=0.02, seed=seed + 1),
                name="position_embedding")
            self.drop = kl.Dropout(dropout, seed=seed + 2)
            self.blocks = []
            for i in range(layers):
                s = seed + 10 * (i + 1)
                glorot = keras.initializers.GlorotUniform
                self.blocks.append((
                    kl.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm1"),
                    kl.MultiHeadAttention(heads, dim // heads, dropout=dropout,
                                          kernel_initializer=glorot(seed=s),
                                          name=f"block{i}_attention"),
                    kl.Dropout(dropout, seed=s + 1),
                    kl.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm2"),
                    kl.Dense(4 * dim, activation="gelu", kernel_initializer=glorot(seed=s + 2),
                             name=f"block{i}_up"),
                    kl.Dense(dim, kernel_initializer=glorot(seed=s + 3), name=f"block{i}_down"),
                    kl.Dropout(dropout, seed=s + 4)))
            self.final_norm = kl.LayerNormalization(epsilon=1e-5, name="final_norm")

        def call(self, tokens, training=False):
            ops = keras.ops
            length = ops.shape(tokens)[1]
            h = self.token_embedding(tokens) + self.position_embedding(
                ops.arange(length))[None]
            h = self.drop(h, training=training)
            for norm1, attention, drop1, norm2, up, down, drop2 in self.blocks:
                a = norm1(h)
                a = attention(a, a, use_causal_mask=True, training=training)
                h = h + drop1(a, training=training)
                f = down(up(norm2(h)))
                h = h + drop2(f, training=training)
            h = self.final_norm(h)
            # tied output layer: logits are scores against the token embeddings of the
            # predicted symbols (the begin symbol is never predicted)
            table = self.token_embedding.embeddings[: self.n_outputs]
            return ops.matmul(h, ops.transpose(table))

    _CharTransformer = CharTransformer
    return CharTransformer


_CharTransformer = None


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=-1, keepdims=True)))[..., 0]


# ----------------------------------------------------------------------------- sampling


def sample(model: LanguageModel, prompts: Sequence[str], *, n: int = 1,
           temperature: float = 1.0, top_k: int | None = None, max_length: int = 39,
           seed: int = 0) -> pd.DataFrame:
    """Draw ``n`` continuations of each prompt, one symbol at a time.

    At each step the model's log-probabilities are divided by ``temperature`` and, with
    ``top_k``, all but the ``top_k`` most likely symbols are dropped; a draw of the end
    symbol, or reaching ``max_length`` characters, ends a text. The same seed gives the
    same texts.

    Returns a frame with ``prompt`` and ``text`` (the prompt included), ``n`` rows per
    prompt, and ``finished`` (False where ``max_length`` cut the text).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string.")
    prompts = _check_prefixes(list(prompts), model.vocab)
    if not prompts:
        raise ValueError("prompts is empty.")
    n = check_positive_int(n, name="n")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}.")
    if top_k is not None:
        top_k = check_positive_int(top_k, name="top_k")
        if top_k > model.vocab.size:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {model.vocab.size}.")
    max_length = check_positive_int(max_length, name="max_length")
    long = [p for p in prompts if len(p) >= max_length]
    if long:
        raise ValueError(f"prompt {long[0]!r} is not shorter than max_length={max_length}.")
    rng = np.random.default_rng(seed)
    texts = [p for p in prompts for _ in range(n)]
    owners = [p for p in prompts for _ in range(n)]
    done = np.zeros(len(texts), bool)
    while not done.all():
        live = np.flatnonzero(~done)
        logits = model.next_log_probs([texts[i] for i in live]) / temperature
        if top_k is not None and top_k < logits.shape[1]:
            # exactly top_k symbols; ties broken towards the lower id
            drop = np.argsort(-logits, axis=1, kind="stable")[:, top_k:]
            np.put_along_axis(logits, drop, -np.inf, axis=1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        u = rng.random(len(live))
        picks = np.minimum((probs.cumsum(axis=1) < u[:, None]).sum(axis=1),
                           probs.shape[1] - 1)
        for i, sym in zip(live, picks, strict=True):
            if sym == 0:
                done[i] = True
            else:
                texts[i] += model.vocab.chars[sym - 1]
                if len(texts[i]) >= max_length:
                    done[i] = True
    finished = [len(t) < max_length for t in texts]
    return pd.DataFrame({"prompt": owners, "text": texts, "finished": finished})


def sample_grid(models: Mapping[str, LanguageModel], prompts: Sequence[str],
                settings: Mapping[str, Mapping[str, object]], *, n: int = 1,
                max_length: int = 39, seed: int = 0) -> dict[tuple[str, str], pd.DataFrame]:
    """:func:`sample` for every model and every sampling setting, with the same prompts,
    ``n``, ``max_length`` and seed: ``{(model name, setting name): samples}``.

    ``settings`` maps a setting's name to the keyword arguments of :func:`sample` that
    define it (``temperature``, ``top_k``).
    """
    if not models or not settings:
        raise ValueError("models and settings must each hold at least one entry.")
    return {(name, label): sample(model, prompts, n=n, max_length=max_length, seed=seed,
                                  **kwargs)
            for name, model in models.items() for label, kwargs in settings.items()}


def novelty(samples: Iterable[str], train: Iterable[str],
            heldout: Iterable[str] = ()) -> dict[str, float]:
    """Shares of samples that copy a training text, that are real held-out texts, and that
    are new and well-formed (every word occurs in the training texts).

    Returns a dict with ``samples``, ``copies of training``, ``held-out products``,
    ``novel`` (not a training text), ``novel, known words`` and ``distinct`` (share of
    samples that are distinct texts).
    """
    samples = [s.strip() for s in samples]
    if not samples:
        raise ValueError("samples is empty.")
    train = set(train)
    if not train:
        raise ValueError("train is empty: nothing to compare with.")
    heldout = set(heldout) - train
    words = {w for t in train for w in t.split()}
    copies = np.array([s in train for s in samples])
    known = np.array([bool(s.split()) and all(w in words for w in s.split())
                      for s in samples])
    return {"samples": len(samples),
            "copies of training": float(copies.mean()),
            "held-out products": float(np.mean([s in heldout for s in samples])),
            "novel": float((~copies).mean()),
            "novel, known words": float((~copies & known).mean()),
            "distinct": len(set(samples)) / len(samples)}
