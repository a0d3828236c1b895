"""Teaching implementations of gradient descent, momentum and Adam.

Each optimiser keeps its state and updates a parameter vector in :meth:`step`. They
follow the update rules of ``keras.optimizers`` so that chapter 3 can check them step for
step:

* :class:`GradientDescent`: :math:`\\theta \\leftarrow \\theta - \\alpha g`.
* :class:`Momentum`, ``form="heavy_ball"`` (Keras ``SGD(momentum=...)``):
  :math:`v \\leftarrow \\beta v - \\alpha g,\\ \\theta \\leftarrow \\theta + v`.
  ``form="ema"`` (the source article):
  :math:`v \\leftarrow \\beta v + (1-\\beta) g,\\ \\theta \\leftarrow \\theta - \\alpha v`;
  it equals heavy ball with learning rate :math:`\\alpha(1-\\beta)`.
* :class:`Adam` with bias correction, step counter starting at 1:
  :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`,
  :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
  :math:`\\theta \\leftarrow \\theta - \\alpha \\hat m / (\\sqrt{\\hat v} + \\epsilon)` with
  :math:`\\hat m = m/(1-\\beta_1^t)`, :math:`\\hat v = v/(1-\\beta_2^t)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from companion._checks import check_in, check_positive_int


def _lr(value: float) -> float:
    if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate must be a positive number, got {value!r}.")
    return float(value)


def _unit(value: float, name: str) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return float(value)


class Optimizer:
    """Base class: subclasses implement :meth:`_update`."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = _lr(learning_rate)
        self.iterations = 0

    def step(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Return the updated parameters (the input array is not modified)."""
        params = np.asarray(params, dtype=float)
        grads = np.asarray(grads, dtype=float)
        if params.shape != grads.shape:
            raise ValueError(f"params have shape {params.shape} but grads {grads.shape}.")
        if not np.all(np.isfinite(grads)):
            raise ValueError(f"gradient at step {self.iterations + 1} is not finite.")
        self.iterations += 1
        return self._update(params, grads)

    def _update(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GradientDescent(Optimizer):
    """Plain gradient descent with a fixed learning rate."""

    def _update(self, params, grads):
        return params - self.learning_rate * grads


class Momentum(Optimizer):
    """Gradient descent with momentum, in the heavy-ball or the EMA form."""

    def __init__(self, learning_rate: float, beta: float = 0.9, form: str = "heavy_ball"):
        super().__init__(learning_rate)
        self.beta = _unit(beta, "beta")
        check_in(form, ("heavy_ball", "ema"), name="form")
        self.form = form
        self.velocity: np.ndarray | None = None

    def _update(self, params, grads):
        if self.velocity is None:
            self.velocity = np.zeros_like(params)
        if self.form == "heavy_ball":
            self.velocity = self.beta * self.velocity - self.learning_rate * grads
            return params + self.velocity
        self.velocity = self.beta * self.velocity + (1 - self.beta) * grads
        return params - self.learning_rate * self.velocity


class Adam(Optimizer):
    r"""Adam with bias-corrected first and second moments (Kingma & Ba, 2015).

    ``keras_compatible=True`` reproduces ``keras.optimizers.Adam`` to the last bits: the
    learning rate and the betas are rounded to float32 as Keras stores them, and epsilon is
    added to :math:`\sqrt{v_t}` before the bias correction (the paper's
    ":math:`\hat\epsilon`" form) instead of to :math:`\sqrt{\hat v_t}`.

    ``bias_correction=False`` is the update the source article prints (its sections 3.7.4.3
    and 4.2.3), :math:`\theta \leftarrow \theta - \alpha m_t / (\sqrt{v_t} + \epsilon)`
    with the raw averages. Both start near zero, at different speeds, so each step is
    :math:`(1-\beta_1^t)/\sqrt{1-\beta_2^t}` times the corrected one: at the default betas
    about 3.2 at the first step and more than 3 for the first hundred (for small epsilon).
    """

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7,
                 keras_compatible: bool = False, bias_correction: bool = True) -> None:
        super().__init__(learning_rate)
        if keras_compatible and not bias_correction:
            raise ValueError("keras_compatible=True needs bias_correction=True: Keras corrects.")
        self.beta_1 = _unit(beta_1, "beta_1")
        self.beta_2 = _unit(beta_2, "beta_2")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.keras_compatible = keras_compatible
        self.bias_correction = bias_correction
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _update(self, params, grads):
        if self.m is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        t = self.iterations  # 1 on the first step: 1 - beta**0 would divide by zero
        b1, b2, lr = self.beta_1, self.beta_2, self.learning_rate
        if self.keras_compatible:
            b1, b2, lr = (float(np.float32(v)) for v in (b1, b2, lr))
        self.m = self.m + (grads - self.m) * (1 - self.beta_1)
        self.v = self.v + (grads**2 - self.v) * (1 - self.beta_2)
        if not self.bias_correction:
            return params - lr * self.m / (np.sqrt(self.v) + self.epsilon)
        if self.keras_compatible:
            alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            return params - alpha * self.m / (np.sqrt(self.v) + self.epsilon)
        m_hat = self.m / (1 - b1**t)
        v_hat = self.v / (1 - b2**t)
        return params - lr * m_hat / (np.sqrt(v_hat) + self.epsilon)


def minimise(
    grad: Callable[[np.ndarray], np.ndarray],
    x0: object,
    optimizer: Optimizer,
    steps: int,
) -> np.ndarray:
    """Run ``steps`` updates from ``x0``; return the trajectory, shape ``(steps + 1, dim)``."""
    check_positive_int(steps, name="steps")
    x = np.asarray(x0, dtype=float).copy()
    path = [x]
    for _ in range(steps):
        x = optimizer.step(x, grad(x))
        path.append(x)
    return np.array(path)


def fit_logistic_regression(
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    *,
    batch_size: int | None = None,
    epochs: int = 10,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, list[dict]]:
    """Train logistic regression (weights and bias) with ``optimizer``, from zeros.

    ``batch_size=None`` is full-batch gradient descent, ``1`` is stochastic gradient
    descent and anything in between is mini-batch training; examples are shuffled every
    epoch. Returns the parameters (bias last) and a history with, per epoch, the
    training log loss, the validation log loss (if given), the number of updates so far
    and the seconds elapsed.
    """
    import time

    from companion.losses import binary_cross_entropy_from_logits

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be 2-D with one row per label; got {X.shape} and {y.shape}.")
    n = len(X)
    size = n if batch_size is None else check_positive_int(batch_size, name="batch_size")
    check_positive_int(epochs, name="epochs")
    Xb = np.c_[X, np.ones(n)]
    Xv = None if X_val is None else np.c_[np.asarray(X_val, dtype=float), np.ones(len(X_val))]
    theta = np.zeros(Xb.shape[1])
    rng = np.random.default_rng(seed)
    history, updates, start = [], 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        for lo in range(0, n, size):
            idx = order[lo:lo + size]
            z = Xb[idx] @ theta
            residual = 1 / (1 + np.exp(-z)) - y[idx]
            theta = optimizer.step(theta, Xb[idx].T @ residual / len(idx))
            updates += 1
        row = {"epoch": epoch, "updates": updates, "seconds": time.perf_counter() - start,
               "train loss": binary_cross_entropy_from_logits(y, Xb @ theta)}
        if Xv is not None:
            row["validation loss"] = binary_cross_entropy_from_logits(y_val, Xv @ theta)
        history.append(row)
    return theta, history


def keras_trajectory(
    optimizer, grad: Callable[[np.ndarray], np.ndarray], x0: object, steps: int
) -> np.ndarray:
    """The same as :func:`minimise`, but each update is made by a ``keras.optimizers`` object.

    Used to check the teaching optimisers step for step against Keras (float64).
    """
    import keras

    check_positive_int(steps, name="steps")
    variable = keras.Variable(np.asarray(x0, dtype="float64"), dtype="float64")
    path = [variable.numpy().copy()]
    for _ in range(steps):
        g = keras.ops.convert_to_tensor(np.asarray(grad(variable.numpy()), dtype="float64"))
        optimizer.apply_gradients([(g, variable)])
        path.append(variable.numpy().copy())
    return np.array(path)
