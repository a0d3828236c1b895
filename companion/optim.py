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
    """Adam with bias-corrected first and second moments (Kingma & Ba, 2015)."""

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7) -> None:
        super().__init__(learning_rate)
        self.beta_1 = _unit(beta_1, "beta_1")
        self.beta_2 = _unit(beta_2, "beta_2")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _update(self, params, grads):
        if self.m is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        t = self.iterations  # 1 on the first step: 1 - beta**0 would divide by zero
        self.m = self.beta_1 * self.m + (1 - self.beta_1) * grads
        self.v = self.beta_2 * self.v + (1 - self.beta_2) * grads**2
        m_hat = self.m / (1 - self.beta_1**t)
        v_hat = self.v / (1 - self.beta_2**t)
        return params - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.epsilon)


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
