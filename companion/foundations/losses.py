"""Teaching implementations of the six losses of chapter 3, with their gradients.

Each loss returns the **mean over samples**, like ``keras.losses``; each ``*_grad``
returns the gradient of that mean with respect to the prediction, the same shape as the
prediction. All functions check their inputs: equal shapes, finite values, and labels in
the set the loss is defined for.

The classification losses are numerically stable: probabilities are clipped to
``[eps, 1 - eps]`` (Keras uses ``eps = 1e-7``), and the ``*_from_logits`` variants work
on raw scores through ``log1p``/log-sum-exp so that they never take the log of zero.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7


def _pair(y_true: object, y_pred: object, *, name: str = "y_pred") -> tuple[np.ndarray, ...]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but {name} has shape {p.shape}.")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty.")
    for label, arr in (("y_true", t), (name, p)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{label} contains NaN or infinite values.")
    return t, p


def _binary_labels(t: np.ndarray) -> None:
    bad = ~np.isin(t, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"binary labels must be 0 or 1, got {np.unique(t[bad])[:5].tolist()}.")


def _probabilities(p: np.ndarray, name: str = "y_pred") -> None:
    if (p < 0).any() or (p > 1).any():
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; got values in "
            f"[{p.min():.3g}, {p.max():.3g}]. Pass raw scores to the *_from_logits variant."
        )


def _rows(t: np.ndarray) -> int:
    return t.shape[0] if t.ndim > 1 else t.size


# --------------------------------------------------------------------------- regression


def mse(y_true: object, y_pred: object) -> float:
    r"""Mean squared error :math:`\frac1n\sum_i (y_i - \hat y_i)^2`."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def mse_grad(y_true: object, y_pred: object) -> np.ndarray:
    r"""Gradient of :func:`mse`: :math:`\frac{2}{n}(\hat y - y)`."""
    t, p = _pair(y_true, y_pred)
    return 2.0 * (p - t) / t.size


def mae(y_true: object, y_pred: object) -> float:
    r"""Mean absolute error :math:`\frac1n\sum_i |y_i - \hat y_i|`."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def mae_grad(y_true: object, y_pred: object) -> np.ndarray:
    r"""(Sub)gradient of :func:`mae`: :math:`\operatorname{sign}(\hat y - y)/n`, 0 at a tie."""
    t, p = _pair(y_true, y_pred)
    return np.sign(p - t) / t.size


def huber(y_true: object, y_pred: object, delta: float = 1.0) -> float:
    r"""Huber loss: :math:`\frac12 e^2` for :math:`|e| \le \delta`, else
    :math:`\delta(|e| - \frac12\delta)`, averaged."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}.")
    t, p = _pair(y_true, y_pred)
    e = np.abs(p - t)
    return float(np.mean(np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))))


def huber_grad(y_true: object, y_pred: object, delta: float = 1.0) -> np.ndarray:
    """Gradient of :func:`huber`: the error, clipped to ``[-delta, delta]``, over n."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}.")
    t, p = _pair(y_true, y_pred)
    return np.clip(p - t, -delta, delta) / t.size


# --------------------------------------------------------------------------- binary


def binary_cross_entropy(y_true: object, y_prob: object, eps: float = EPSILON) -> float:
    r"""Log loss :math:`-\frac1n\sum_i [y_i\log p_i + (1-y_i)\log(1-p_i)]`.

    Both terms matter: the source's :math:`-y\log p` ignores every negative example.
    """
    t, p = _pair(y_true, y_prob, name="y_prob")
    _binary_labels(t)
    _probabilities(p, "y_prob")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def binary_cross_entropy_grad(y_true: object, y_prob: object, eps: float = EPSILON) -> np.ndarray:
    r"""Gradient of :func:`binary_cross_entropy` in :math:`p`: :math:`\frac{p-y}{n\,p(1-p)}`."""
    t, p = _pair(y_true, y_prob, name="y_prob")
    _binary_labels(t)
    _probabilities(p, "y_prob")
    p = np.clip(p, eps, 1 - eps)
    return (p - t) / (p * (1 - p)) / t.size


def binary_cross_entropy_from_logits(y_true: object, logits: object) -> float:
    r"""Log loss on raw scores :math:`z`: :math:`\max(z,0) - zy + \log(1 + e^{-|z|})`.

    Exact for any finite :math:`z`, with no clipping: it never forms :math:`\sigma(z)`.
    """
    t, z = _pair(y_true, logits, name="logits")
    _binary_labels(t)
    return float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))


def binary_cross_entropy_from_logits_grad(y_true: object, logits: object) -> np.ndarray:
    r"""Gradient in the logits: :math:`(\sigma(z) - y)/n`."""
    t, z = _pair(y_true, logits, name="logits")
    _binary_labels(t)
    return (sigmoid(z) - t) / t.size


def sigmoid(z: object) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


# --------------------------------------------------------------------------- categorical


def _one_hot(t: np.ndarray) -> None:
    if t.ndim != 2:
        raise ValueError(f"categorical labels must be 2-D (samples x classes), got {t.ndim}-D.")
    if not (np.isin(t, (0.0, 1.0)).all() and np.all(t.sum(axis=1) == 1)):
        raise ValueError("categorical labels must be one-hot rows (one 1, the rest 0).")


def categorical_cross_entropy(y_true: object, y_prob: object, eps: float = EPSILON) -> float:
    r"""Cross-entropy :math:`-\frac1n\sum_i\sum_k y_{ik}\log p_{ik}` for one-hot labels.

    The sum runs over classes and the mean over samples; the source's code averages over
    both, which divides the loss by the number of classes.
    """
    t, p = _pair(y_true, y_prob, name="y_prob")
    _one_hot(t)
    _probabilities(p, "y_prob")
    p = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)
    return float(-np.mean(np.sum(t * np.log(p), axis=1)))


def categorical_cross_entropy_from_logits(y_true: object, logits: object) -> float:
    r"""Cross-entropy on logits through log-sum-exp:
    :math:`\log\sum_k e^{z_k} - \sum_k y_k z_k`, stable for any finite logits."""
    t, z = _pair(y_true, logits, name="logits")
    _one_hot(t)
    return float(np.mean(_logsumexp(z) - np.sum(t * z, axis=1)))


def categorical_cross_entropy_from_logits_grad(y_true: object, logits: object) -> np.ndarray:
    r"""Gradient in the logits: :math:`(\operatorname{softmax}(z) - y)/n`."""
    t, z = _pair(y_true, logits, name="logits")
    _one_hot(t)
    return (softmax(z) - t) / _rows(t)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True)))[:, 0]


def softmax(z: object) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that ``exp`` never overflows."""
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- hinge


def _signed(t: np.ndarray) -> np.ndarray:
    values = set(np.unique(t).tolist())
    if values <= {0.0, 1.0}:
        return 2 * t - 1
    if values <= {-1.0, 1.0}:
        return t
    raise ValueError(f"hinge labels must be -1/1 or 0/1, got {sorted(values)[:5]}.")


def hinge(y_true: object, scores: object) -> float:
    r"""Hinge loss :math:`\frac1n\sum_i\max(0, 1 - y_i s_i)` with :math:`y_i\in\{-1,1\}`.

    ``scores`` are raw margins (a linear model's output), not probabilities: a
    probability in [0, 1] never reaches the margin of 1, so every example stays "wrong".
    Labels 0/1 are mapped to -1/1, as ``keras.losses.Hinge`` does.
    """
    t, s = _pair(y_true, scores, name="scores")
    return float(np.mean(np.maximum(0.0, 1.0 - _signed(t) * s)))


def hinge_grad(y_true: object, scores: object) -> np.ndarray:
    """(Sub)gradient of :func:`hinge`: ``-y/n`` where the margin is violated, else 0."""
    t, s = _pair(y_true, scores, name="scores")
    y = _signed(t)
    return np.where(y * s < 1.0, -y, 0.0) / t.size


#: name -> (loss, gradient) for the regression and binary losses, for plots and tables.
LOSSES = {
    "MSE": (mse, mse_grad),
    "MAE": (mae, mae_grad),
    "Huber": (huber, huber_grad),
    "log loss (logits)": (binary_cross_entropy_from_logits, binary_cross_entropy_from_logits_grad),
    "hinge": (hinge, hinge_grad),
}
