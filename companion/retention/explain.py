"""Three ways to look inside a model: permutation importance, integrated gradients, attention.

* Permutation importance of a churn model is
  :func:`companion.retention.churn.permutation_importance`
  (it treats the model as a black box).
* :func:`integrated_gradients` (Sundararajan, Taly and Yan, 2017) attributes a Keras
  model's output for one input to its features by integrating the gradient along the
  straight line from a baseline input; the attributions add up to the difference between
  the output at the input and at the baseline (completeness). :class:`FeatureMLP` is a
  small Keras churn model on the same features as the other churn models, to apply it to.
* :func:`sasrec_attention` reads the self-attention weights of a fitted
  :class:`companion.recsys.deep.SASRec`: how much each position of a customer's history weighs
  when the model predicts the next purchase.

:func:`fit_and_explain` and :func:`attention_study` are chapter 9.5's studies with them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion._optional import require
from companion.retention.churn import (
    ChurnData,
    ChurnModel,
    signed_log1p,
    standardiser,
    train_keras_churn,
)

require("tensorflow", "deep", load=False)


def integrated_gradients(model, inputs: np.ndarray, baseline: np.ndarray | None = None, *,
                         steps: int = 64, batch_size: int = 4096) -> np.ndarray:
    """Integrated gradients of a Keras model with one scalar output per row.

    Parameters
    ----------
    model
        A callable Keras model mapping float inputs of shape ``(n, d)`` to outputs of shape
        ``(n,)`` or ``(n, 1)``.
    inputs
        The rows to explain, shape ``(n, d)``.
    baseline
        The reference input, shape ``(d,)`` (default: zeros).
    steps
        Points of the trapezoidal rule along the path from ``baseline`` to each input.
    batch_size
        Path points evaluated per gradient call.

    Returns
    -------
    numpy.ndarray
        Attributions of shape ``(n, d)``; row ``i`` sums to about
        ``model(inputs[i]) - model(baseline)`` (the error shrinks with ``steps``).
    """
    import tensorflow as tf

    check_positive_int(steps, name="steps", minimum=2)
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (n, d), got {x.shape}.")
    base = np.zeros(x.shape[1], np.float32) if baseline is None else \
        np.asarray(baseline, dtype=np.float32)
    if base.shape != (x.shape[1],):
        raise ValueError(f"baseline must have shape ({x.shape[1]},), got {base.shape}.")
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    weights = np.full(steps, 1.0 / (steps - 1), np.float32)  # trapezoidal rule on [0, 1]
    weights[[0, -1]] /= 2
    diff = x - base
    path = (base[None, None, :] + alphas[None, :, None] * diff[:, None, :]).reshape(
        -1, x.shape[1])
    grads = np.empty_like(path)
    for lo in range(0, len(path), batch_size):
        chunk = tf.convert_to_tensor(path[lo:lo + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(chunk)
            out = tf.reshape(model(chunk, training=False), [-1])
        grads[lo:lo + batch_size] = tape.gradient(out, chunk).numpy()
    mean_grad = np.einsum("s,nsd->nd", weights, grads.reshape(len(x), steps, -1))
    return diff * mean_grad


class FeatureMLP(ChurnModel):
    """A small Keras network on the churn features (``signed log1p``, standardised).

    One hidden ReLU layer, dropout, and a logit output trained with binary cross-entropy;
    early-stops on a random ``validation_fraction`` of the training customers and restores
    the best weights. ``logit_model_`` maps standardised features to the logit, the
    input :func:`integrated_gradients` explains (:meth:`standardise` makes that input).
    """

    def __init__(self, hidden: int = 32, dropout: float = 0.1, epochs: int = 60,
                 batch_size: int = 256, learning_rate: float = 2e-3, patience: int = 6,
                 validation_fraction: float = 0.2, seed: int = 0) -> None:
        self.hidden, self.dropout, self.epochs = hidden, dropout, epochs
        self.batch_size, self.learning_rate, self.patience = batch_size, learning_rate, patience
        self.validation_fraction, self.seed = validation_fraction, seed

    def standardise(self, data: ChurnData) -> np.ndarray:
        """The network's input: the feature columns of ``data``, log-scaled and standardised."""
        self._check_fitted()
        x = signed_log1p(self._matrix(self._check_data(data)))
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def fit(self, data: ChurnData) -> FeatureMLP:
        """Train on ``data``; returns ``self``."""
        import keras

        from companion.foundations.keras_helpers import seed_everything

        data = self._check_data(data)
        check_positive_int(self.epochs, name="epochs")
        seed_everything(self.seed)
        self.columns_ = tuple(data.features.columns)
        self.mean_, self.scale_ = standardiser(signed_log1p(self._matrix(data)))
        x, y = self.standardise(data), data.labels.to_numpy(dtype=np.float32)
        inp = keras.Input(shape=(x.shape[1],))
        h = keras.layers.Dense(self.hidden, activation="relu", kernel_initializer="he_normal")(inp)
        h = keras.layers.Dropout(self.dropout, seed=self.seed)(h)
        logit = keras.layers.Dense(1)(h)
        self.logit_model_ = keras.Model(inp, logit)
        self.model_ = keras.Model(inp, keras.layers.Activation("sigmoid")(logit))
        self.history_ = train_keras_churn(
            self.model_, x, y, data.customers, validation_fraction=self.validation_fraction,
            seed=self.seed, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, patience=self.patience)
        return self

    def predict_proba(self, data: ChurnData) -> np.ndarray:
        """Churn probability of each row of ``data``."""
        from companion.foundations.keras_helpers import predict_in_chunks

        x = self.standardise(data)
        return predict_in_chunks(self.model_, x, 1 << 15).ravel()


def attribution_table(attributions: np.ndarray, columns) -> pd.DataFrame:
    """Mean absolute and mean signed attribution per feature, largest first."""
    attributions = np.asarray(attributions, dtype=float)
    columns = list(columns)
    if attributions.ndim != 2 or attributions.shape[1] != len(columns):
        raise ValueError(f"attributions must have shape (n, {len(columns)}), "
                         f"got {attributions.shape}.")
    table = pd.DataFrame({"mean |attribution|": np.abs(attributions).mean(axis=0),
                          "mean attribution": attributions.mean(axis=0)}, index=columns)
    return table.sort_values("mean |attribution|", ascending=False)


def sasrec_attention(model, user_ids) -> tuple[np.ndarray, np.ndarray]:
    """Self-attention weights of a fitted one-block :class:`companion.recsys.deep.SASRec`.

    For each user, the input the model scores from (the last ``max_len`` purchases,
    left-padded with 0) and the attention weights of every head.

    Returns
    -------
    items, weights
        ``items`` of shape ``(n_users, max_len)``: the item ids at each position (``None``
        where padded); ``weights`` of shape ``(n_users, heads, max_len, max_len)``: row
        ``q`` is how position ``q`` spreads its attention over positions ``<= q``. The last
        row is the one that scores the next purchase.
    """
    import keras

    model._check_fitted()
    if getattr(model, "blocks", None) != 1:
        raise ValueError("sasrec_attention reads one-block SASRec models only, got "
                         f"blocks={getattr(model, 'blocks', None)!r}.")
    encoder = model._encoder()
    attention = [la for la in encoder.layers if isinstance(la, keras.layers.MultiHeadAttention)]
    x = _sasrec_inputs(model, user_ids)
    # the attention layer's own inputs (embedded sequence and causal padding mask), read
    # from the graph rather than rebuilt, so they are exactly what the model computes
    node = attention[0]._inbound_nodes[0]
    inputs = keras.Model(encoder.inputs, [node.arguments.args[0],
                                          node.arguments.kwargs["attention_mask"]])
    h, mask = inputs([x], training=False)
    _, scores = attention[0](h, h, attention_mask=mask, return_attention_scores=True,
                             training=False)
    items = np.full(x.shape, None, dtype=object)
    known = x > 0
    items[known] = model.items_[x[known] - 1]
    return items, np.asarray(scores)


def _sasrec_inputs(model, user_ids) -> np.ndarray:
    codes = model._codes(user_ids)
    if (codes < 0).any():
        unknown = np.asarray(list(user_ids), dtype=object)[codes < 0]
        raise ValueError(f"{len(unknown)} user(s) were not seen in fit, e.g. {list(unknown[:3])}.")
    x = np.zeros((len(codes), model.max_len), dtype=np.int32)
    for row, u in enumerate(codes):
        seq = model.histories_[u][-model.max_len:]
        if len(seq):
            x[row, -len(seq):] = seq
    return x


def sasrec_deletion_test(model, user_ids, *, seed: int = 0) -> pd.DataFrame:
    """Is attention an explanation? Delete one purchase and see how the top item's score moves.

    For each user, the item the fitted one-block :class:`companion.recsys.deep.SASRec` ranks first
    is fixed; then one earlier purchase is removed from the history it reads (the older
    ones shift up, as if it had never happened) and the logit of that item is computed
    again. The newest purchase is never removed: it is the query that scores the next
    purchase, so removing it changes more than one input. Among the earlier purchases,
    three deletions are compared: the one with the **most** attention (last row, mean over
    heads), the one with the **least**, and one at **random**. If attention measured what a
    purchase contributes, removing the most-attended one would change the score most.

    Returns one row per user with at least three purchases: ``purchases`` (non-padded
    positions), ``newest_most_attended`` (whether the newest purchase gets more attention
    than any earlier one) and the absolute change of the top item's logit for each deletion
    (``most``, ``least``, ``random``).
    """
    from companion.foundations.keras_helpers import predict_in_chunks

    items, weights = sasrec_attention(model, user_ids)
    x = _sasrec_inputs(model, user_ids)
    keep = (x > 0).sum(axis=1) >= 3
    if not keep.any():
        raise ValueError("no user has three or more purchases to delete from.")
    x, weights = x[keep], weights[keep]
    users = np.asarray(list(user_ids), dtype=object)[keep]
    attention = weights[:, :, -1, :].mean(axis=1)
    vectors = model.item_vectors_

    def logits(batch: np.ndarray) -> np.ndarray:
        return predict_in_chunks(model._encoder(), batch, 1024)[:, -1] @ vectors.T

    base = logits(x)
    top = base.argmax(axis=1)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(x))
    real = x > 0
    earlier = real.copy()
    earlier[:, -1] = False
    most = np.where(earlier, attention, -np.inf).argmax(axis=1)
    least = np.where(earlier, attention, np.inf).argmin(axis=1)
    random = np.array([rng.choice(np.flatnonzero(r)) for r in earlier])
    out = {"user_id": users, "purchases": real.sum(axis=1),
           "newest_most_attended": attention[:, -1] > attention[rows, most]}
    for name, positions in (("most", most), ("least", least), ("random", random)):
        deleted = np.zeros_like(x)
        for row, pos in enumerate(positions):
            deleted[row, 1:] = np.delete(x[row], pos)
        out[name] = np.abs(logits(deleted)[rows, top] - base[rows, top])
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- studies


def fit_and_explain(train: ChurnData, test: ChurnData, *, steps: int = 128,
                    n_repeats: int = 5, mlp_epochs: int = 60, seed: int = 0) -> dict:
    """Chapter 9.5's study: fit two churn models and explain them three ways.

    Chapter 6.1's :class:`companion.retention.churn.GradientBoosting` and a
    :class:`FeatureMLP` are fitted on ``train`` and explained on ``test``: permutation
    importance of both (lost ROC-AUC, ``n_repeats`` shuffles), and integrated gradients of
    the network's logit (``steps`` steps, from the average training customer).

    Parameters
    ----------
    train, test
        :class:`companion.retention.churn.ChurnData` at the training and test cutoffs.
    steps
        Steps of the integrated-gradients integral.
    n_repeats
        Shuffles per feature of the permutation importance.
    mlp_epochs
        The most epochs of the network (it early-stops).
    seed
        Seed of both models and of the shuffles.

    Returns
    -------
    dict
        ``proba`` (model -> churn probability of each test customer), ``perm trees`` and
        ``perm mlp`` (permutation importances), ``ig`` (customers x features attributions),
        ``ig gap`` (each customer's logit minus the baseline's, which the attributions
        should add up to), ``columns``, ``epochs`` (trained) and ``best epoch`` (lowest
        validation loss).
    """
    from companion.retention import churn

    for name, data in (("train", train), ("test", test)):
        if not isinstance(data, ChurnData):
            raise TypeError(f"{name} must be a ChurnData, got {type(data).__name__}.")
    check_positive_int(steps, name="steps")
    check_positive_int(n_repeats, name="n_repeats")
    trees = churn.GradientBoosting(seed=seed).fit(train)
    mlp = FeatureMLP(epochs=mlp_epochs, seed=seed).fit(train)
    x = mlp.standardise(test)
    attributions = integrated_gradients(mlp.logit_model_, x, steps=steps)
    zero = np.zeros((1, x.shape[1]), np.float32)
    gap = (np.asarray(mlp.logit_model_(x)).ravel()
           - float(np.asarray(mlp.logit_model_(zero)).ravel()[0]))
    return {
        "proba": {"trees": trees.predict_proba(test), "Keras MLP": mlp.predict_proba(test)},
        "perm trees": churn.permutation_importance(trees, test, n_repeats=n_repeats,
                                                   seed=seed),
        "perm mlp": churn.permutation_importance(mlp, test, n_repeats=n_repeats, seed=seed),
        "ig": attributions, "ig gap": gap, "columns": list(mlp.columns_),
        "epochs": len(mlp.history_),
        "best epoch": int(mlp.history_["val_loss"].to_numpy().argmin()) + 1,
    }


def attention_study(interactions: pd.DataFrame, cutoff: object, customers, *,
                    n_users: int = 1000, dim: int = 32, epochs: int = 6,
                    seed: int = 0) -> dict:
    """Chapter 9.5's attention study: SASRec's attention weights and the deletion test.

    A one-block :class:`companion.recsys.deep.SASRec` (``dim``, two heads, the last 20
    purchases, ``epochs`` epochs) is fitted on the purchases before ``cutoff``; for
    ``n_users`` customers drawn at random from ``customers`` it reads the attention
    weights (:func:`sasrec_attention`) and runs :func:`sasrec_deletion_test`.

    Parameters
    ----------
    interactions
        The interactions table; only the lines before ``cutoff`` are used.
    cutoff
        The time stamp before which the model learns.
    customers
        The customer ids to draw from (each must have a purchase before ``cutoff``).
    n_users
        How many customers to draw, without replacement.
    dim, epochs, seed
        Size, epochs and seed of the model; ``seed`` also seeds the draw.

    Returns
    -------
    dict
        ``items`` and ``weights`` (of :func:`sasrec_attention`), ``users`` (drawn),
        ``deletion`` (of :func:`sasrec_deletion_test`), ``parameters`` (of the model),
        ``purchases`` (training lines) and ``max_len``.
    """
    from companion._checks import check_timestamp
    from companion.data.preprocessing import check_interactions
    from companion.recsys import deep

    check_interactions(interactions)
    cutoff = check_timestamp(cutoff, name="cutoff")
    check_positive_int(n_users, name="n_users")
    pool = np.sort(np.asarray(customers))
    if n_users > len(pool):
        raise ValueError(f"n_users={n_users} is more than the {len(pool)} customers given.")
    past = interactions[interactions["timestamp"] < cutoff]
    model = deep.SASRec(dim=dim, blocks=1, heads=2, max_len=20, epochs=epochs,
                        windows_per_user=2, seed=seed).fit(past)
    rng = np.random.default_rng(seed)
    users = rng.choice(pool, size=n_users, replace=False)
    items, weights = sasrec_attention(model, users)
    deletion = sasrec_deletion_test(model, users, seed=seed)
    return {"items": items, "weights": weights, "users": users, "deletion": deletion,
            "parameters": model.n_parameters(), "purchases": len(past),
            "max_len": model.max_len}
