"""Weight initialisation, what it does to signals in a deep network, and early stopping.

:func:`initialise` draws a weight matrix with one of the schemes of chapter 3;
:func:`signal_propagation` pushes a batch through a deep fully connected network and
back, and reports the spread of activations and gradients at every layer;
:class:`EarlyStopping` keeps the best epoch's weights for the training loops of the
Keras models; :func:`source_early_stop` replays the source's own loop, one epoch late.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from companion._checks import check_in, check_positive_int

#: Initialisation schemes and the variance of the weights they draw.
SCHEMES = {
    "uniform(±0.1)": "U(-0.1, 0.1): variance 0.1²/3, independent of layer size",
    "normal(0.1)": "N(0, 0.1²), the source's code",
    "normal(1)": "N(0, 1), the source's text",
    "glorot_uniform": "U(-a, a), a = sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)",
    "glorot_normal": "truncated N with variance 2 / (fan_in + fan_out)",
    "he_uniform": "U(-a, a), a = sqrt(6 / fan_in): variance 2 / fan_in",
    "he_normal": "truncated N with variance 2 / fan_in",
}


def _truncated_normal(rng: np.random.Generator, std: float, shape: tuple[int, int]) -> np.ndarray:
    # Keras draws from N(0, s²) truncated at 2s, with s = std / 0.87962566 so that the
    # truncated distribution has the requested standard deviation.
    s = std / 0.87962566103423978
    out = rng.normal(0.0, s, shape)
    bad = np.abs(out) > 2 * s
    while bad.any():
        out[bad] = rng.normal(0.0, s, bad.sum())
        bad = np.abs(out) > 2 * s
    return out


def initialise(scheme: str, fan_in: int, fan_out: int,
               rng: np.random.Generator | int = 0) -> np.ndarray:
    """Draw a ``(fan_in, fan_out)`` weight matrix with ``scheme`` (a key of :data:`SCHEMES`)."""
    check_in(scheme, SCHEMES, name="scheme")
    check_positive_int(fan_in, name="fan_in")
    check_positive_int(fan_out, name="fan_out")
    rng = np.random.default_rng(rng)
    shape = (fan_in, fan_out)
    if scheme == "uniform(±0.1)":
        return rng.uniform(-0.1, 0.1, shape)
    if scheme == "normal(0.1)":
        return rng.normal(0.0, 0.1, shape)
    if scheme == "normal(1)":
        return rng.normal(0.0, 1.0, shape)
    if scheme == "glorot_uniform":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape)
    if scheme == "glorot_normal":
        return _truncated_normal(rng, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    if scheme == "he_uniform":
        a = np.sqrt(6.0 / fan_in)
        return rng.uniform(-a, a, shape)
    return _truncated_normal(rng, np.sqrt(2.0 / fan_in), shape)


def expected_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The weight variance each scheme is designed to have."""
    check_in(scheme, SCHEMES, name="scheme")
    return {
        "uniform(±0.1)": 0.1**2 / 3,
        "normal(0.1)": 0.01,
        "normal(1)": 1.0,
        "glorot_uniform": 2.0 / (fan_in + fan_out),
        "glorot_normal": 2.0 / (fan_in + fan_out),
        "he_uniform": 2.0 / fan_in,
        "he_normal": 2.0 / fan_in,
    }[scheme]


_ACTIVATIONS = {
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
}


def signal_propagation(
    scheme: str,
    activation: str = "tanh",
    *,
    depth: int = 20,
    width: int = 256,
    x: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Forward a batch through ``depth`` dense layers and backpropagate a unit gradient.

    Returns one row per layer with the standard deviation of the activations (forward)
    and of the gradient with respect to that layer's input (backward). A good scheme
    keeps both roughly constant across layers; a bad one makes them vanish or explode.
    """
    check_in(activation, _ACTIVATIONS, name="activation")
    check_positive_int(depth, name="depth")
    check_positive_int(width, name="width")
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.normal(size=(512, width))
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError("x must be a finite 2-D array (samples x features).")
    f, df = _ACTIVATIONS[activation]
    weights, pre, h = [], [], x
    rows = []
    for layer in range(depth):
        w = initialise(scheme, h.shape[1], width, rng)
        z = h @ w
        weights.append(w)
        pre.append(z)
        h = f(z)
        rows.append({"layer": layer + 1, "activation std": float(h.std())})
    grad = rng.normal(size=h.shape) / np.sqrt(h.shape[1])
    grad_std = [0.0] * depth
    for layer in reversed(range(depth)):
        grad = (grad * df(pre[layer])) @ weights[layer].T
        grad_std[layer] = float(grad.std())
    for row, g in zip(rows, grad_std, strict=True):
        row["gradient std"] = g
    out = pd.DataFrame(rows).set_index("layer")
    out.attrs.update(scheme=scheme, activation=activation)
    return out


class EarlyStopping:
    """Keep the weights of the best epoch by a validation score (higher is better) and say
    when ``patience`` epochs have passed without an improvement.

    Call :meth:`update` after each scored epoch, stop when :attr:`stop` is true, and call
    :meth:`finish` at the end: it restores the best weights and returns the epoch they come
    from (the last epoch run when no epoch was scored).
    """

    def __init__(self, patience: int) -> None:
        self.patience = check_positive_int(patience, name="patience")
        self.best, self.weights, self.waited, self.best_epoch = -np.inf, None, 0, None

    def update(self, epoch: int, score: float, get_weights) -> None:
        """Record ``score`` for ``epoch``; ``get_weights()`` is called on an improvement."""
        if score > self.best:
            self.best, self.weights, self.waited, self.best_epoch = score, get_weights(), 0, epoch
        else:
            self.waited += 1

    @property
    def stop(self) -> bool:
        """Whether ``patience`` scored epochs in a row brought no improvement."""
        return self.waited >= self.patience

    def finish(self, set_weights, epochs_run: int) -> int:
        """Restore the best weights with ``set_weights`` and return the epoch kept."""
        if self.weights is None:
            return epochs_run
        set_weights(self.weights)
        return self.best_epoch


def source_early_stop(val_losses, patience: int) -> int:
    """The epoch after which the source's early-stopping loop (§3.7.5.4) stops.

    The loop is replayed on recorded validation losses: a loss below the best so far
    resets a counter, any other adds one, and training stops once the counter *exceeds*
    ``patience``, one epoch later than Keras' ``EarlyStopping`` with the same patience.
    The source then keeps the last weights, not the best.

    Parameters
    ----------
    val_losses
        Validation loss of each epoch, in order (at least one).
    patience
        The source's patience (0 or more).

    Returns
    -------
    int
        The number of epochs run before the loop stops (``len(val_losses)`` if it never
        does).
    """
    val = [float(v) for v in np.asarray(val_losses, dtype=float).ravel()]
    if not val:
        raise ValueError("val_losses is empty: there is no epoch to replay.")
    if not np.isfinite(val).all():
        raise ValueError(f"val_losses must be finite, got {val[:5]}...")
    patience = check_positive_int(patience, name="patience", minimum=0)
    best_validation_loss, patience_counter = float("inf"), 0
    for epoch, validation_loss in enumerate(val):
        if validation_loss < best_validation_loss:
            best_validation_loss, patience_counter = validation_loss, 0
        else:
            patience_counter += 1
            if patience_counter > patience:
                return epoch + 1
    return len(val)
