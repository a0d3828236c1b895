"""Optimising and compressing a recommender: depth against width, regularisation,
distillation, magnitude and structured pruning, and int8 quantisation.

* :class:`HistoryMLP` scores every product for a customer from the customer's purchase
  history: the history's mean item embedding passes through a tower of dense layers whose
  depth and width are parameters, and a softmax over the whole catalogue is trained to
  give the customer's purchases (a multinomial autoencoder, as in Liang et al., 2018).
  Optional L1 and L2 penalties act on every weight matrix.
* :class:`DistilledMF` is a small matrix factorisation trained with a full softmax on the
  customer's purchases, optionally plus a distillation term that matches a teacher's
  softened scores (Hinton et al., 2015; :func:`distillation_loss`).
* :func:`magnitude_prune` zeroes the weights of smallest magnitude; structured pruning
  removes whole units or latent dimensions instead (:func:`prune_units`, by
  :func:`unit_importance`), and :func:`low_rank` keeps the strongest singular directions
  of a factorisation; :func:`structured_pruning_curve` compares them at equal budgets,
  scoring the smaller tables with :class:`FactorScorer`;
  :func:`quantize` / :func:`dequantize` implement affine int8 quantisation,
  ``q = clip(round(x / scale) + zero_point, qmin, qmax)`` and ``x ~ scale * (q - zero_point)``
  (Jacob et al., 2018).
* :func:`source_prune` and :func:`source_quantize` reproduce the source's code, for the
  errata; :func:`run_source` runs a function of the source as printed, and
  :func:`source_distillation` and :func:`distillation_gradients` check its distillation
  routines.

**Why one module.** Every technique is applied to the same model (:class:`HistoryMLP`) and
measured the same way (NDCG@10 against size and time), and the study compares them side by
side; split, each part would import the same model and measures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion.foundations.keras_helpers import predict_in_chunks
from companion.recsys.baselines import Recommender
from companion.recsys.deep import KerasRecommender

# ----------------------------------------------------------------------------- losses


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def distillation_loss(student_logits: np.ndarray, teacher_logits: np.ndarray,
                      targets: np.ndarray, temperature: float = 2.0, alpha: float = 0.5
                      ) -> np.ndarray:
    """Per-row knowledge-distillation loss (Hinton et al., 2015), in NumPy.

    ``(1 - alpha) * CE(targets, softmax(s)) + alpha * T**2 * KL(softmax(t / T) ||
    softmax(s / T))``, where ``targets`` are rows of a distribution (a customer's purchases,
    normalised). The ``T**2`` keeps the gradient of the soft term comparable across
    temperatures. With ``alpha = 1`` and ``T = 1`` it is the KL divergence itself.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if s.shape != t.shape or s.shape != y.shape:
        raise ValueError(f"student, teacher and targets must have the same shape, got "
                         f"{s.shape}, {t.shape} and {y.shape}.")
    log_p = np.log(softmax(s))
    hard = -(y * log_p).sum(axis=-1)
    p_t = softmax(t, temperature)
    kl = (p_t * (np.log(np.maximum(p_t, 1e-300)) - np.log(softmax(s, temperature)))).sum(-1)
    return (1 - alpha) * hard + alpha * temperature ** 2 * kl


def _keras_distillation_loss(n_items: int, temperature: float, alpha: float):
    """The Keras version of :func:`distillation_loss`; ``y_true`` holds the targets and the
    teacher's logits side by side."""
    from keras import ops

    def loss(y_true, y_pred):
        y, t = y_true[:, :n_items], y_true[:, n_items:]
        hard = -ops.sum(y * ops.log_softmax(y_pred, axis=-1), axis=-1)
        if alpha == 0:
            return hard
        log_pt = ops.log_softmax(t / temperature, axis=-1)
        log_ps = ops.log_softmax(y_pred / temperature, axis=-1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
        return (1 - alpha) * hard + alpha * temperature ** 2 * kl

    return loss


# ----------------------------------------------------------------------------- models


def _normalised_rows(counts: sp.csr_matrix) -> np.ndarray:
    """Dense float32 rows of a binary purchase matrix, each summing to 1 (or 0)."""
    binary = counts.copy().astype(np.float32)
    binary.data[:] = 1.0
    dense = binary.toarray()
    return dense / np.maximum(dense.sum(axis=1, keepdims=True), 1.0)


def tower_parameters(dim: int, hidden: Sequence[int]) -> int:
    """Weights and biases of a dense tower from ``dim`` through ``hidden`` back to ``dim``."""
    sizes = [dim, *hidden, dim]
    return int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))


class HistoryMLP(KerasRecommender):
    """Scores from the customer's history through a dense tower.

    ``h0 = mean of the embeddings of the items the customer bought`` (input dropout on the
    history during training), ``h = tower(h0)`` through ``hidden`` ReLU layers and a linear
    layer back to ``dim``, and ``scores = h . q_i + b_i`` with a second item table. Trained
    with a softmax over the whole catalogue against the customer's purchases (Liang et al.,
    2018). ``l1`` and ``l2`` penalise every weight matrix (the source's "regularised
    cross-entropy").
    """

    def __init__(self, dim: int = 32, hidden: tuple[int, ...] = (64,), l1: float = 0.0,
                 l2: float = 0.0, dropout: float = 0.5, epochs: int = 20,
                 batch_size: int = 256, learning_rate: float = 2e-3, patience: int = 2,
                 seed: int = 0) -> None:
        self.dim, self.hidden, self.l1, self.l2, self.dropout = dim, hidden, l1, l2, dropout
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.patience, self.seed = patience, seed

    def _prepare(self, frame, counts):
        check_positive_int(self.dim, name="dim")
        for units in self.hidden:
            check_positive_int(units, name="hidden units")
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"l1 and l2 must be non-negative, got {self.l1} and {self.l2}.")
        self.inputs_ = _normalised_rows(counts)
        self.active_ = np.flatnonzero(np.diff(counts.indptr) > 0)
        self.n_users_, self.n_items_ = counts.shape

    def _regulariser(self):
        import keras

        if self.l1 == 0 and self.l2 == 0:
            return None
        return keras.regularizers.L1L2(l1=self.l1, l2=self.l2)

    def _build(self):
        import keras

        reg = self._regulariser()
        init = keras.initializers.GlorotUniform
        x = keras.Input(shape=(self.n_items_,), dtype="float32")
        h = keras.layers.Dropout(self.dropout, seed=self.seed)(x)
        h = keras.layers.Dense(self.dim, use_bias=False, kernel_regularizer=reg,
                               kernel_initializer=init(self.seed), name="item_in")(h)
        for n, units in enumerate(self.hidden):
            h = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg,
                                   kernel_initializer=keras.initializers.HeNormal(
                                       self.seed + 10 + n), name=f"hidden_{n}")(h)
        h = keras.layers.Dense(self.dim, kernel_regularizer=reg,
                               kernel_initializer=init(self.seed + 1), name="tower_out")(h)
        logits = keras.layers.Dense(self.n_items_, kernel_regularizer=reg,
                                    kernel_initializer=init(self.seed + 2), name="item_out")(h)
        model = keras.Model(x, logits)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        return model

    def _train_epoch(self):
        order = self.rng_.permutation(self.n_users_)
        order = order[np.isin(order, self.active_)]
        rows = self.inputs_[order]
        return self._fit_arrays(rows, rows)

    def _score(self, users):
        return predict_in_chunks(self.model_, self.inputs_[users], 1024)

    def tower_parameters(self) -> int:
        """Parameters of the dense tower alone (what depth and width trade)."""
        return tower_parameters(self.dim, self.hidden)


class DistilledMF(KerasRecommender):
    """Matrix factorisation with a full softmax, optionally distilled from a teacher.

    Scores ``p_u . q_i + b_i``. Each customer's target is the distribution of their
    purchases; with a ``teacher`` (a fitted recommender that knows the same customers and
    items) the loss is :func:`distillation_loss` with ``temperature`` and ``alpha``, and
    ``alpha = 0`` trains on the data alone.
    """

    def __init__(self, dim: int = 8, teacher: Recommender | None = None,
                 temperature: float = 2.0, alpha: float = 0.5, l2: float = 0.0,
                 epochs: int = 30, batch_size: int = 256, learning_rate: float = 1e-2,
                 patience: int = 2, seed: int = 0) -> None:
        self.dim, self.teacher, self.temperature, self.alpha = dim, teacher, temperature, alpha
        self.l2, self.epochs, self.batch_size = l2, epochs, batch_size
        self.learning_rate, self.patience, self.seed = learning_rate, patience, seed

    def __repr__(self) -> str:
        teacher = repr(self.teacher) if self.teacher is not None else None
        return (f"DistilledMF(dim={self.dim}, teacher={teacher}, temperature="
                f"{self.temperature}, alpha={self.alpha}, l2={self.l2}, epochs={self.epochs}, "
                f"batch_size={self.batch_size}, learning_rate={self.learning_rate}, "
                f"patience={self.patience}, seed={self.seed})")

    def _prepare(self, frame, counts):
        check_positive_int(self.dim, name="dim")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        self.n_users_, self.n_items_ = counts.shape
        targets = _normalised_rows(counts)
        if self.teacher is not None and self.alpha > 0:
            users = self.user_encoder_.classes_.to_numpy()
            columns = np.asarray(
                __import__("pandas").Index(self.teacher.items_).get_indexer(self.items_))
            if (columns < 0).any():
                raise ValueError(f"the teacher does not know {(columns < 0).sum()} of the "
                                 "student's items; fit both on the same interactions.")
            teacher = self.teacher.score(users)[:, columns].astype(np.float32)
            self.targets_ = np.concatenate([targets, teacher], axis=1)
        else:
            # trained on the data alone: the loss never reads the teacher's half
            self.targets_ = targets
        self.active_ = np.flatnonzero(targets.sum(axis=1) > 0).astype(np.int32)

    def _build(self):
        import keras

        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        u = keras.Input(shape=(), dtype="int32")
        users = keras.layers.Embedding(self.n_users_, self.dim, embeddings_regularizer=reg,
                                       embeddings_initializer=keras.initializers.RandomNormal(
                                           stddev=0.05, seed=self.seed), name="users")
        items = keras.layers.Dense(self.n_items_, kernel_regularizer=reg,
                                   kernel_initializer=keras.initializers.RandomNormal(
                                       stddev=0.05, seed=self.seed + 1), name="items")
        model = keras.Model(u, items(users(u)))
        alpha = self.alpha if self.teacher is not None else 0.0
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=_keras_distillation_loss(self.n_items_, self.temperature, alpha))
        return model

    def _train_epoch(self):
        order = self.rng_.permutation(self.active_)
        return self._fit_arrays(order, self.targets_[order])

    def _after_fit(self):
        self.user_vectors_ = self.model_.get_layer("users").get_weights()[0]
        self.item_vectors_, self.item_bias_ = self.model_.get_layer("items").get_weights()

    def _score(self, users):
        return self.user_vectors_[users] @ self.item_vectors_ + self.item_bias_


# ----------------------------------------------------------------------------- pruning


def magnitude_prune(weights: Sequence[np.ndarray], sparsity: float, *, scope: str = "global",
                    min_ndim: int = 2) -> list[np.ndarray]:
    """Zero the ``sparsity`` share of weights with the smallest magnitude.

    Only arrays with at least ``min_ndim`` dimensions (weight matrices, embedding tables)
    are pruned; biases are kept. ``scope="global"`` ranks all prunable weights together,
    ``"layer"`` prunes every array to the same sparsity. Returns new arrays.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}.")
    weights = [np.array(w, copy=True) for w in weights]
    prunable = [n for n, w in enumerate(weights) if w.ndim >= min_ndim]
    if not prunable:
        raise ValueError(f"no array has {min_ndim} or more dimensions to prune.")
    if sparsity == 0:
        return weights
    if scope == "global":
        magnitudes = np.concatenate([np.abs(weights[n]).ravel() for n in prunable])
        n_prune = int(round(sparsity * magnitudes.size))
        threshold = np.partition(magnitudes, n_prune - 1)[n_prune - 1] if n_prune else -1.0
        # prune exactly n_prune weights: all below the threshold, then ties in order
        budget = n_prune - int((magnitudes < threshold).sum())
        for n in prunable:
            w = weights[n]
            below = np.abs(w) < threshold
            ties = np.flatnonzero(np.abs(w).ravel() == threshold)[:max(budget, 0)]
            budget -= len(ties)
            w[below] = 0
            w.ravel()[ties] = 0
    else:
        for n in prunable:
            w = weights[n]
            order = np.argsort(np.abs(w).ravel(), kind="stable")
            w.ravel()[order[:int(round(sparsity * w.size))]] = 0
    return weights


def sparsity_of(weights: Sequence[np.ndarray], min_ndim: int = 2) -> float:
    """Share of zeros among the arrays with at least ``min_ndim`` dimensions."""
    arrays = [np.asarray(w) for w in weights if np.ndim(w) >= min_ndim]
    total = sum(a.size for a in arrays)
    return float(sum((a == 0).sum() for a in arrays) / total) if total else 0.0


def source_prune(weights: np.ndarray, pruning_rate: float) -> np.ndarray:
    """The source's ``weight_pruning`` (section 3.7.9.2) made runnable, for the errata.

    ``importance = compute_importance(weights)`` gives one importance per weight, in the
    weights' order, and ``importance[:int(pruning_rate * len(importance))]`` then selects
    the *first* weights by position, not the least important ones: nothing is sorted.
    """
    w = np.array(weights, copy=True)
    importance = np.abs(w).ravel()
    w.ravel()[:int(pruning_rate * len(importance))] = 0
    return w


def run_source(code: str, name: str, *args, namespace: dict | None = None):
    """Run a function of the source as printed: execute ``code`` in a fresh namespace (with
    the names in ``namespace``), then call the function ``name`` it defines with ``args``.

    Returns ``(result, error)``: the function's return value and None, or None and the
    exception it raised (an error of the source's code is a finding, not a failure here).
    """
    scope = dict(namespace or {})
    exec(compile(code, f"<source: {name}>", "exec"), scope)
    if not callable(scope.get(name)):
        raise ValueError(f"the source code given defines no function named {name!r}.")
    try:
        return scope[name](*args), None
    except Exception as err:  # noqa: BLE001 - the source's error is the result
        return None, err


def build_source_model(code: str, name: str, num_layers: int, hidden_size: int, *,
                       inputs: int = 32, num_classes: int = 10):
    """The Keras model that the source's ``deep_model`` or ``wide_model`` (section 3.7.8.3)
    builds, run as printed by :func:`run_source` on a ``keras.Sequential`` with ``inputs``
    features, with ``Dense`` and ``num_classes`` defined as the code expects."""
    import keras

    start = keras.Sequential([keras.Input(shape=(inputs,))])
    model, error = run_source(code, name, start, num_layers, hidden_size,
                              namespace={"Dense": keras.layers.Dense, "num_classes": num_classes})
    if error is not None:
        raise ValueError(f"the source's {name} failed: {error!r}") from error
    return model


def describe_layers(model) -> str:
    """A Keras model's dense layers as ``"units activation"``, input to output."""
    return " > ".join(f"{layer.units} {layer.activation.__name__}" for layer in model.layers)


class _Quiet:
    """A Keras model whose ``predict`` prints no progress bar (the source calls
    ``model.predict(data)``)."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, data):
        return self.model.predict(data, verbose=0)


def source_distillation(code: str, name: str, student_model, teacher_model, train_data, *,
                        temperature: float = 2.0, define_gradients: bool = False,
                        learning_rate: float = 0.01, num_epochs: int = 1) -> dict:
    """Run one of the source's distillation routines (section 3.7.9.1) as printed.

    The source leaves three names undefined. ``compute_loss(student, teacher)`` is made the
    soft-target distillation term, the mean over rows of ``T**2 KL(softmax(t / T) ||
    softmax(s / T))`` (:func:`distillation_loss` with ``alpha = 1``);
    ``update_model_parameters(model, gradients, learning_rate)`` records what it is asked
    to apply; ``gradients``, which the source never computes, stays undefined unless
    ``define_gradients`` (then it is None, so that the loop can run to the end).

    Returns ``{"losses": [...], "updates": [...], "error": exception or None}``.
    """
    losses, updates = [], []

    def compute_loss(student_predictions, teacher_predictions):
        s, t = np.asarray(student_predictions), np.asarray(teacher_predictions)
        loss = float(distillation_loss(s, t, np.zeros_like(s), temperature=temperature,
                                       alpha=1.0).mean())
        losses.append(loss)
        return loss

    def update_model_parameters(model, gradients, learning_rate):
        updates.append({"gradients": gradients, "learning_rate": learning_rate})

    namespace = {"compute_loss": compute_loss, "update_model_parameters": update_model_parameters}
    if define_gradients:
        namespace["gradients"] = None
    _, error = run_source(code, name, None, _Quiet(student_model), _Quiet(teacher_model),
                          train_data, learning_rate, num_epochs, namespace=namespace)
    return {"losses": losses, "updates": updates, "error": error}


def distillation_gradients(student_model, teacher_logits: np.ndarray, inputs, *,
                           through_predict: bool, temperature: float = 2.0) -> list:
    """Norm of the gradient of the distillation term with respect to each trainable weight
    of a Keras ``student_model``, or None where no gradient reaches the weight.

    With ``through_predict`` the student's outputs come from ``model.predict`` (a NumPy
    array, as in the source's routines), otherwise from calling the model, as training
    must.
    """
    import tensorflow as tf
    from keras import ops

    t = ops.convert_to_tensor(np.asarray(teacher_logits, dtype=np.float32))
    with tf.GradientTape() as tape:
        s = (ops.convert_to_tensor(student_model.predict(inputs, verbose=0))
             if through_predict else student_model(inputs, training=True))
        log_pt = ops.log_softmax(t / temperature, axis=-1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - ops.log_softmax(s / temperature, axis=-1)),
                     axis=-1)
        loss = temperature ** 2 * ops.mean(kl)
    grads = tape.gradient(loss, student_model.trainable_weights)
    return [None if g is None else float(tf.norm(tf.convert_to_tensor(g))) for g in grads]


def storage_bytes(weights: Sequence[np.ndarray], sparse: bool = False) -> int:
    """Bytes to store the arrays: dense float32, or CSR (float32 values, int32 column
    indices and row pointers) for the matrices when ``sparse``."""
    total = 0
    for w in weights:
        w = np.asarray(w, dtype=np.float32)
        if sparse and w.ndim == 2:
            nnz = int((w != 0).sum())
            total += nnz * 4 + nnz * 4 + (w.shape[0] + 1) * 4
        else:
            total += w.size * 4
    return total


# ----------------------------------------------------------------------------- structured


def unit_importance(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """Importance of each hidden unit (or latent dimension) ``k`` between two weight matrices.

    ``w_in`` holds the units on its last axis (``(n_in, d)``: an embedding table or a dense
    kernel into the units), ``w_out`` on its first (``(d, n_out)``: the kernel out of them).
    The importance is ``||w_in[:, k]|| * ||w_out[k, :]||``, the Frobenius norm of the unit's
    rank-one contribution ``w_in[:, k] w_out[k, :]`` to the product ``w_in @ w_out``: for a
    matrix factorisation, how much dimension ``k`` adds to the score matrix.
    """
    w_in, w_out = np.asarray(w_in, dtype=np.float64), np.asarray(w_out, dtype=np.float64)
    if w_in.ndim != 2 or w_out.ndim != 2:
        raise ValueError(f"w_in and w_out must be matrices, got shapes {w_in.shape} and "
                         f"{w_out.shape}.")
    if w_in.shape[1] != w_out.shape[0]:
        raise ValueError(f"w_in has {w_in.shape[1]} units (columns) but w_out has "
                         f"{w_out.shape[0]} (rows); they must be the same units.")
    return np.linalg.norm(w_in, axis=0) * np.linalg.norm(w_out, axis=1)


def prune_units(w_in: np.ndarray, w_out: np.ndarray, keep: int, *,
                b_in: np.ndarray | None = None, method: str = "norm", seed: int = 0) -> dict:
    """Structured pruning: keep ``keep`` whole units (latent dimensions) and drop the rest.

    ``method="norm"`` keeps the units of largest :func:`unit_importance`, ``"random"`` a
    random set of the same size (the control). The pruned matrices are *smaller* dense
    arrays, ``w_in[:, kept]`` and ``w_out[kept]`` (and ``b_in[kept]``, the bias into the
    units, when given), so the model that uses them stores and multiplies less, unlike
    magnitude pruning, which leaves zeros in place. Returns a dict with ``w_in``,
    ``w_out``, ``b_in`` (or None) and ``kept`` (the kept unit indices, ascending).
    """
    importance = unit_importance(w_in, w_out)
    d = len(importance)
    if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or not 1 <= keep <= d:
        raise ValueError(f"keep must be an integer from 1 to the {d} units, got {keep!r}.")
    if method == "norm":
        kept = np.sort(np.argsort(-importance, kind="stable")[:keep])
    elif method == "random":
        kept = np.sort(np.random.default_rng(seed).choice(d, size=keep, replace=False))
    else:
        raise ValueError(f"method must be 'norm' or 'random', got {method!r}.")
    if b_in is not None and np.shape(b_in) != (d,):
        raise ValueError(f"b_in must have one entry per unit ({d}), got shape "
                         f"{np.shape(b_in)}.")
    return {"w_in": np.asarray(w_in)[:, kept].copy(), "w_out": np.asarray(w_out)[kept].copy(),
            "b_in": None if b_in is None else np.asarray(b_in)[kept].copy(), "kept": kept}


def low_rank(w_in: np.ndarray, w_out: np.ndarray, keep: int) -> dict:
    """The best rank-``keep`` approximation of ``w_in @ w_out`` as two smaller factors.

    A factorisation's latent dimensions are not natural units: rotating them (``w_in R``,
    ``R^T w_out`` for any orthogonal ``R``) leaves every score unchanged. So instead of
    dropping dimensions as they are, rotate them first onto the singular directions of the
    product, ``w_in @ w_out = U S V^T``, and keep the ``keep`` strongest: by the
    Eckart-Young theorem ``U_k S_k V_k^T`` is the closest rank-``keep`` matrix to the product
    in Frobenius norm. It is computed through QR factorisations of the two factors, never
    forming the product. Returns ``w_in`` (``U_k S_k^{1/2}``), ``w_out``
    (``S_k^{1/2} V_k^T``) and ``singular_values`` (all of them, descending).
    """
    importance = unit_importance(w_in, w_out)  # checks the shapes
    d = len(importance)
    if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or not 1 <= keep <= d:
        raise ValueError(f"keep must be an integer from 1 to the {d} units, got {keep!r}.")
    q_in, r_in = np.linalg.qr(np.asarray(w_in, dtype=np.float64))
    q_out, r_out = np.linalg.qr(np.asarray(w_out, dtype=np.float64).T)
    u, s, vt = np.linalg.svd(r_in @ r_out.T)
    root = np.sqrt(s[:keep])
    dtype = np.result_type(w_in, w_out)
    return {"w_in": (q_in @ (u[:, :keep] * root)).astype(dtype),
            "w_out": ((root[:, None] * vt[:keep]) @ q_out.T).astype(dtype),
            "singular_values": s}


class FactorScorer(Recommender):
    """Scores ``p_u . q_i + b_i`` from given arrays, with a fitted model's customers and
    products: a factorisation whose tables were pruned to fewer dimensions."""

    def __init__(self, fitted: Recommender, user_vectors: np.ndarray,
                 item_vectors: np.ndarray, item_bias: np.ndarray) -> None:
        n_users, n_items = fitted.seen_.shape
        user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if user_vectors.ndim != 2 or user_vectors.shape[0] != n_users:
            raise ValueError(f"user_vectors must have one row per customer ({n_users}), got "
                             f"shape {user_vectors.shape}.")
        if item_vectors.shape != (user_vectors.shape[1], n_items):
            raise ValueError(f"item_vectors must have shape {(user_vectors.shape[1], n_items)}"
                             f", got {item_vectors.shape}.")
        if np.shape(item_bias) != (n_items,):
            raise ValueError(f"item_bias must have one entry per product ({n_items}), got "
                             f"shape {np.shape(item_bias)}.")
        self.user_vectors_, self.item_vectors_ = user_vectors, item_vectors
        self.item_bias_ = np.asarray(item_bias, dtype=np.float32)
        for name in ("user_encoder_", "item_encoder_", "seen_", "popularity_"):
            setattr(self, name, getattr(fitted, name))

    def _score(self, users):
        return self.user_vectors_[users] @ self.item_vectors_ + self.item_bias_

    def n_parameters(self) -> int:
        """Entries of the two tables and the bias."""
        return int(self.user_vectors_.size + self.item_vectors_.size + self.item_bias_.size)


def structured_pruning_curve(model: DistilledMF, test_task, dimensions: Sequence[int], *,
                             users=None, seed: int = 0) -> tuple[list[dict], dict]:
    """Shrink a fitted :class:`DistilledMF` to each number of ``dimensions``, four ways, at
    the same budget of table weights ``kept / dim``:

    * ``"dimensions by norm"``: keep the dimensions of largest :func:`unit_importance`
      (structured pruning; the tables become smaller dense arrays);
    * ``"random dimensions"``: as many dimensions drawn at random (the control);
    * ``"rank by SVD"``: rotate the dimensions onto the product's singular directions
      first, then keep the strongest (:func:`low_rank`);
    * ``"magnitude"``: :func:`magnitude_prune` at sparsity ``1 - kept / dim``, stored as
      sparse matrices.

    Each is scored on ``test_task``; ``users`` (default: the first 1,000 of the task) are
    timed. Returns rows (dimensions, method, sparsity of the tables, stored bytes,
    latency, mean NDCG@10 per task) and the per-customer NDCG of each variant, keyed
    ``"<method>, <kept> of <dim>"``.
    """
    weights = model.model_.get_weights()
    p, q, bias = weights
    d = p.shape[1]
    users = test_task.users("all")[:1000] if users is None else users
    rows, per_user = [], {}
    for keep in dimensions:
        sparsity = 1 - keep / d
        by_norm = prune_units(p, q, keep, method="norm")
        drawn = prune_units(p, q, keep, method="random", seed=seed)
        svd = low_rank(p, q, keep)
        pruned = magnitude_prune(weights, sparsity)
        variants = {"dimensions by norm": (by_norm["w_in"], by_norm["w_out"]),
                    "random dimensions": (drawn["w_in"], drawn["w_out"]),
                    "rank by SVD": (svd["w_in"], svd["w_out"]),
                    "magnitude": None}
        for method, tables in variants.items():
            name = f"{method}, {keep} of {d}"
            if tables is None:
                size = storage_bytes(pruned, sparse=True)
                with WithWeights(model, pruned) as scorer:
                    per_user[name] = _ndcg(scorer, test_task)
                    latency = time_recommend(scorer, users)
            else:
                size = storage_bytes([*tables, bias])
                scorer = FactorScorer(model, *tables, bias)
                per_user[name] = _ndcg(scorer, test_task)
                latency = time_recommend(scorer, users)
            rows.append({"dimensions": keep, "method": method, "sparsity": sparsity,
                         "bytes": size, "latency ms / 1000 customers": 1000 * latency,
                         **{t: float(v.mean()) for t, v in per_user[name].items()}})
    return rows, per_user


# ----------------------------------------------------------------------------- quantisation


def affine_parameters(x: np.ndarray, qmin: int = -128, qmax: int = 127, axis: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that map ``[min(x), max(x)]`` (widened to contain 0) onto
    ``[qmin, qmax]``; per tensor, or per slice along ``axis`` (e.g. per output channel)."""
    if qmin >= qmax:
        raise ValueError(f"qmin must be below qmax, got {qmin} and {qmax}.")
    x = np.asarray(x, dtype=np.float64)
    reduce = None if axis is None else tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    lo = np.minimum(x.min(axis=reduce, keepdims=axis is not None), 0.0)
    hi = np.maximum(x.max(axis=reduce, keepdims=axis is not None), 0.0)
    scale = np.maximum((hi - lo) / (qmax - qmin), 1e-12)
    zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    return scale, zero_point


def quantize(x: np.ndarray, scale, zero_point, qmin: int = -128, qmax: int = 127
             ) -> np.ndarray:
    """``q = clip(round(x / scale) + zero_point, qmin, qmax)`` as int8 (or int16 if the
    range needs it)."""
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point, qmin, qmax)
    dtype = np.int8 if qmin >= -128 and qmax <= 127 else np.int16
    return q.astype(dtype)


def dequantize(q: np.ndarray, scale, zero_point) -> np.ndarray:
    """``x ~ scale * (q - zero_point)`` as float32."""
    return (scale * (np.asarray(q, dtype=np.float64) - zero_point)).astype(np.float32)


def quantize_weights(weights: Sequence[np.ndarray], min_ndim: int = 2, axis: int | None = -1
                     ) -> tuple[list[np.ndarray], int]:
    """Post-training int8 quantisation of every matrix (per output channel by default);
    biases stay float32. Returns the dequantised arrays (to run the model) and the bytes
    the quantised model stores (int8 values plus float32 scales and zero points)."""
    out, size = [], 0
    for w in weights:
        w = np.asarray(w, dtype=np.float32)
        if w.ndim < min_ndim:
            out.append(w.copy())
            size += w.size * 4
            continue
        scale, zero_point = affine_parameters(w, axis=axis)
        out.append(dequantize(quantize(w, scale, zero_point), scale, zero_point))
        size += w.size + 2 * int(np.size(scale)) * 4
    return out, size


def source_quantize(input_data: np.ndarray, scale, zero_point) -> np.ndarray:
    """The source's ``fixed_point_quantization`` (section 3.7.9.3), verbatim:
    ``(input_data * scale + zero_point).astype(np.int8)``: it multiplies where it should
    divide, does not round (the cast truncates) and does not clip (the cast wraps)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.asarray(input_data) * scale + zero_point).astype(np.int8)


# ----------------------------------------------------------------------------- measuring


def time_recommend(model: Recommender, user_ids, k: int = 10, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds for ``model.recommend(user_ids, k)``."""
    check_positive_int(repeats, name="repeats")
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.recommend(user_ids, k=k, exclude_seen=False)
        best = min(best, time.perf_counter() - start)
    return float(best)


class WithWeights:
    """Context manager: temporarily replace a fitted Keras recommender's weights."""

    def __init__(self, model: KerasRecommender, weights: Sequence[np.ndarray]) -> None:
        self.model, self.weights = model, list(weights)

    def __enter__(self) -> KerasRecommender:
        self.saved = self.model.model_.get_weights()
        self.model.model_.set_weights(self.weights)
        self.model._after_fit()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.model_.set_weights(self.saved)
        self.model._after_fit()


# ----------------------------------------------------------------------------- the study


def _ndcg(model: Recommender, task) -> dict:
    from companion.recsys.ranking import evaluate

    return {name: frame["NDCG"] for name, frame in evaluate(model, task, k=10).items()}


def _row(name: str, per_user: dict, size: int, latency: float, parameters: int) -> dict:
    return {"variant": name, "parameters": parameters, "bytes": size,
            "latency ms / 1000 customers": 1000 * latency,
            **{f"NDCG@10 {task}": float(values.mean()) for task, values in per_user.items()}}


def compression_study(train, validation, test_task, *, teacher_dim: int = 128,
                      student_dim: int = 8, temperature: float = 2.0, alpha: float = 0.5,
                      sparsities: Sequence[float] = (0.25, 0.5, 0.7, 0.8, 0.9),
                      source_sparsity: float = 0.5,
                      dimensions: Sequence[int] = (96, 64, 32, 16, 8), student_epochs: int = 12,
                      latency_users: int = 1000, seed: int = 0) -> dict:
    """Train a :class:`DistilledMF` teacher and compress it four ways, scored on ``test_task``.

    The teacher (``teacher_dim``) and two students (``student_dim``: on the data alone,
    and distilled with ``temperature`` and ``alpha``) are fitted on ``train`` with early
    stopping on ``validation``. The teacher is then pruned by magnitude at each of
    ``sparsities``, pruned as the source does (at ``source_sparsity``), quantised to int8
    after training (per output channel, NumPy), quantised with the source's formula, and
    quantised with Keras' ``model.quantize("int8")``; it is also pruned to each number of
    ``dimensions`` by :func:`structured_pruning_curve`. Returns plain data: ``table`` (one
    row per variant: parameters, bytes, latency, NDCG@10 per task), ``per_user`` (variant ->
    task -> per-customer NDCG), ``pruning`` (the sparsity curve), ``structured`` (whole
    dimensions against magnitude pruning at equal budgets), ``teacher`` (its epochs and
    validation history) and ``quantisation`` (error checks).
    """
    import pandas as pd

    users = test_task.users("all")[:latency_users]
    rows, per_user = [], {}

    def record(name, model, size, parameters, latency=None):
        per_user[name] = _ndcg(model, test_task)
        latency = time_recommend(model, users) if latency is None else latency
        rows.append(_row(name, per_user[name], size, latency, parameters))

    teacher = DistilledMF(dim=teacher_dim, alpha=0.0, epochs=15, patience=2, seed=seed)
    teacher.fit(train, validation=validation)
    weights = teacher.model_.get_weights()
    n_params = teacher.n_parameters()
    record(f"teacher (MF, dim {teacher_dim})", teacher, storage_bytes(weights), n_params)
    for name, kwargs in (("student, data alone", {"alpha": 0.0}),
                         ("student, distilled", {"teacher": teacher, "alpha": alpha,
                                                 "temperature": temperature})):
        student = DistilledMF(dim=student_dim, learning_rate=2e-2, epochs=student_epochs,
                              patience=2,
                              seed=seed, **kwargs).fit(train, validation=validation)
        record(f"{name} (dim {student_dim})", student,
               storage_bytes(student.model_.get_weights()), student.n_parameters())
    curve = []
    for sparsity in sparsities:
        pruned = magnitude_prune(weights, sparsity)
        with WithWeights(teacher, pruned) as model:
            name = f"pruned {sparsity:.0%}"
            record(name, model, storage_bytes(pruned, sparse=True), n_params)
        curve.append({"sparsity": sparsity, "method": "magnitude",
                      **{t: float(v.mean()) for t, v in per_user[name].items()}})
    source = [source_prune(w, source_sparsity) if w.ndim >= 2 else w for w in weights]
    name = f"source pruning {source_sparsity:.0%}"
    with WithWeights(teacher, source) as model:
        record(name, model, storage_bytes(source, sparse=True), n_params)
    curve.append({"sparsity": source_sparsity, "method": "source",
                  **{t: float(v.mean()) for t, v in per_user[name].items()}})
    structured, structured_users = structured_pruning_curve(teacher, test_task, dimensions,
                                                            users=users, seed=seed)
    per_user.update(structured_users)
    quantised, size = quantize_weights(weights)
    with WithWeights(teacher, quantised) as model:
        record("int8 post-training (NumPy)", model, size, n_params)
    checks = []
    for w in weights:
        if w.ndim < 2:
            continue
        scale, zero_point = affine_parameters(w, axis=-1)
        q = quantize(w, scale, zero_point)
        error = np.abs(dequantize(q, scale, zero_point) - w)
        wrong = dequantize(source_quantize(w, scale, zero_point), scale, zero_point)
        checks.append({"shape": w.shape, "max error / scale": float((error / scale).max()),
                       "source distinct values": int(len(np.unique(
                           source_quantize(w, scale, zero_point)))),
                       "source max error / scale": float((np.abs(wrong - w) / scale).max())})
    source_q = []
    for w in weights:
        if w.ndim < 2:
            source_q.append(w)
            continue
        scale, zero_point = affine_parameters(w, axis=-1)
        source_q.append(dequantize(source_quantize(w, scale, zero_point), scale, zero_point))
    with WithWeights(teacher, source_q) as model:
        record("source quantisation", model, size, n_params)
    # Keras' own int8: the model now computes through int8 kernels
    keras_float = time_recommend(_KerasScorer(teacher), users)
    teacher.model_.quantize("int8")
    keras_int8 = _KerasScorer(teacher)
    record("int8 Keras quantize", keras_int8,
           int(sum(np.asarray(v).nbytes for v in teacher.model_.weights)), n_params)
    table = pd.DataFrame(rows).set_index("variant")
    table.attrs["keras float32 latency ms"] = 1000 * keras_float
    return {"table": table, "per_user": per_user, "pruning": pd.DataFrame(curve),
            "teacher": {"best_epoch": teacher.best_epoch_,
                        "history": pd.DataFrame(teacher.history_)},
            "quantisation": pd.DataFrame(checks), "structured": pd.DataFrame(structured)}


class _KerasScorer(Recommender):
    """Scores a fitted :class:`DistilledMF` through its Keras model (float or quantised)."""

    def __init__(self, fitted: DistilledMF) -> None:
        self.fitted = fitted
        for name in ("user_encoder_", "item_encoder_", "seen_", "popularity_"):
            setattr(self, name, getattr(fitted, name))

    def _score(self, users):
        return predict_in_chunks(self.fitted.model_, users.astype(np.int32), 4096)


# ----------------------------------------------------------------------------- depth and width


def tower_point(split, task, hidden: Sequence[int], l1: float = 0.0, l2: float = 0.0, *,
                dim: int = 32, epochs: int = 8, patience: int = 1, seed: int = 0) -> dict:
    """Train one :class:`HistoryMLP` tower and measure it: one point of the depth study.

    The model (``dim``, the dense tower ``hidden``, penalties ``l1`` and ``l2``) is fitted
    on ``split.train`` for at most ``epochs`` epochs, early-stopped with ``patience`` on the
    NDCG@10 of ``split.validation``, and scored on the ranking ``task``.

    Parameters
    ----------
    split
        A :class:`companion.data.preprocessing.Split` with non-empty ``train`` and
        ``validation`` parts.
    task
        The :class:`companion.recsys.ranking.RankingTask` the fitted model is scored on.
    hidden
        Units of each hidden layer of the tower, for example ``(256,)`` or ``(64,) * 4``.
    l1, l2
        Penalties on every weight matrix.
    dim, epochs, patience, seed
        Passed to :class:`HistoryMLP`.

    Returns
    -------
    dict
        ``tower`` (the shape as text), ``l1``, ``l2``, ``tower parameters``,
        ``parameters``, ``epochs`` (the best epoch), ``training loss`` (at the best epoch),
        ``validation NDCG@10`` (the mean over the task's parts of the per-customer mean),
        ``weights below 1e-3`` (the share of weight-matrix entries under 1e-3 in absolute
        value) and ``per_user`` (task part -> per-customer NDCG@10).
    """
    from companion.recsys import ranking

    for part in ("train", "validation"):
        frame = getattr(split, part, None)
        if frame is None or len(frame) == 0:
            raise ValueError(f"split.{part} must be a non-empty interactions frame.")
    if not isinstance(task, ranking.RankingTask):
        raise TypeError(f"task must be a RankingTask, got {type(task).__name__}.")
    hidden = tuple(hidden)
    if not hidden:
        raise ValueError("hidden must name at least one layer, got an empty tower.")
    model = HistoryMLP(dim=dim, hidden=hidden, l1=l1, l2=l2, epochs=epochs,
                       patience=patience, seed=seed)
    model.fit(split.train, validation=split.validation)
    per_user = ranking.evaluate(model, task)
    weights = [w for w in model.model_.get_weights() if w.ndim == 2]
    return {"tower": " x ".join(map(str, hidden)), "l1": l1, "l2": l2,
            "tower parameters": model.tower_parameters(),
            "parameters": model.n_parameters(), "epochs": model.best_epoch_,
            "training loss": model.history_[model.best_epoch_ - 1]["loss"],
            "validation NDCG@10": np.mean([f["NDCG"].mean()
                                           for f in per_user.values()]),
            "weights below 1e-3": np.mean(np.concatenate(
                [np.abs(w).ravel() < 1e-3 for w in weights])),
            "per_user": {t: f["NDCG"] for t, f in per_user.items()}}
