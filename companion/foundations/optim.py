"""Teaching implementations of optimisers: gradient descent, momentum and Adam, Newton's
method, conjugate gradients and a budget-constrained allocation.

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

Beyond first-order steps (chapter 4.4), each solver returning a :class:`Trace`:

* :func:`newton_logistic`: Newton's method (IRLS) for logistic regression, against
  :func:`gradient_descent_logistic`;
* :func:`conjugate_gradient` for a symmetric positive definite system, for example the
  ridge or EASE normal equations through :func:`gram_operator`, against
  :func:`gradient_descent_quadratic`;
* :func:`lagrangian_allocation`: a budget-constrained allocation (the linear relaxation
  of a knapsack) solved through its Lagrange multiplier, and :func:`allocation_lp`, the
  same problem by SciPy's interior-point and simplex solvers or, in 0/1 form, by
  branch and bound.

**Why one module.** Each teaching implementation is checked against another in the same
module (Newton against gradient descent, conjugate gradients against the normal equations,
the Lagrangian against the linear program), so they sit together.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from companion._checks import check_in, check_positive_int
from companion._optional import require


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
    from companion.foundations.losses import binary_cross_entropy_from_logits

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
    keras = require("keras", "deep")

    check_positive_int(steps, name="steps")
    variable = keras.Variable(np.asarray(x0, dtype="float64"), dtype="float64")
    path = [variable.numpy().copy()]
    for _ in range(steps):
        g = keras.ops.convert_to_tensor(np.asarray(grad(variable.numpy()), dtype="float64"))
        optimizer.apply_gradients([(g, variable)])
        path.append(variable.numpy().copy())
    return np.array(path)


# --------------------------------------------------------------- second-order and constrained


class Trace:
    """What an iterative solver did: the solution ``x`` and, for the start and after every
    iteration, the objective (``loss``), the norm of the gradient or residual
    (``grad_norm``) and the seconds since the start (``seconds``)."""

    def __init__(self, x: np.ndarray, loss, grad_norm, seconds, converged: bool) -> None:
        self.x = x
        self.loss = np.asarray(loss, dtype=float)
        self.grad_norm = np.asarray(grad_norm, dtype=float)
        self.seconds = np.asarray(seconds, dtype=float)
        self.converged = bool(converged)

    @property
    def iterations(self) -> int:
        """Iterations made (the start is not one)."""
        return len(self.loss) - 1

    def reached(self, target: float) -> tuple[int, float] | None:
        """The first iteration whose objective is at most ``target`` and the seconds it had
        taken by then, or None if it never got there."""
        hits = np.flatnonzero(self.loss <= target)
        return (int(hits[0]), float(self.seconds[hits[0]])) if len(hits) else None

    def __repr__(self) -> str:
        return (f"Trace(iterations={self.iterations}, loss={self.loss[-1]:.6g}, "
                f"grad_norm={self.grad_norm[-1]:.3g}, converged={self.converged})")


def _design(X: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D design matrix, got shape {X.shape}.")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"X has a non-finite value at row {bad[0]}, column {bad[1]}.")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=float)
    if y.shape != (len(X),):
        raise ValueError(f"y must have one label per row of X ({len(X)}), got shape "
                         f"{y.shape}.")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))[0]
        raise ValueError(f"y must hold 0/1 labels; row {bad} is {float(y[bad])!r}.")
    return X, y


def logistic_loss(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Mean log loss of logistic regression ``P(y = 1) = sigmoid(X theta)`` (no intercept is
    added: give ``X`` a column of ones for one)."""
    z = np.asarray(X, dtype=float) @ np.asarray(theta, dtype=float)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def newton_logistic(X: np.ndarray, y: np.ndarray, *, tol: float = 1e-10,
                    max_iter: int = 50) -> Trace:
    """Fit logistic regression by Newton's method (iteratively reweighted least squares).

    From ``theta = 0``, each iteration solves ``H d = g`` with the gradient
    ``g = X^T (p - y) / n`` and the Hessian ``H = X^T diag(p (1 - p)) X / n``, and steps
    ``theta <- theta - t d``; ``t`` starts at 1 and is halved until the loss does not rise
    (a safeguard; on well-posed problems the full step is always taken). Near the optimum
    the number of correct digits doubles every iteration. Stops when ``||g|| <= tol`` or
    after ``max_iter`` iterations. ``X`` should hold a column of ones for an intercept.
    """
    X, y = _design(X, y)
    check_positive_int(max_iter, name="max_iter")
    n = len(X)
    theta = np.zeros(X.shape[1])
    start = time.perf_counter()
    loss = logistic_loss(theta, X, y)
    p = 0.5 * np.ones(n)
    g = X.T @ (p - y) / n
    losses, norms, seconds = [loss], [np.linalg.norm(g)], [0.0]
    for _ in range(max_iter):
        if norms[-1] <= tol:
            break
        hessian = (X * (p * (1 - p))[:, None]).T @ X / n
        if np.linalg.cond(hessian) > 1e12:
            raise ValueError("the Hessian is singular: X has linearly dependent columns "
                             "(or the classes are separable).")
        step = np.linalg.solve(hessian, g)
        t = 1.0
        while True:
            candidate = theta - t * step
            new_loss = logistic_loss(candidate, X, y)
            if new_loss <= loss or t < 1e-10:
                break
            t /= 2
        theta, loss = candidate, new_loss
        p = 1 / (1 + np.exp(-(X @ theta)))
        g = X.T @ (p - y) / n
        losses.append(loss)
        norms.append(np.linalg.norm(g))
        seconds.append(time.perf_counter() - start)
    return Trace(theta, losses, norms, seconds, norms[-1] <= tol)


def gradient_descent_logistic(X: np.ndarray, y: np.ndarray, *,
                              learning_rate: float | None = None,
                              target_loss: float | None = None, tol: float = 1e-10,
                              max_iter: int = 100_000) -> Trace:
    """Fit logistic regression by full-batch gradient descent from ``theta = 0``.

    The default step is ``1 / L`` with ``L = lambda_max(X^T X) / (4 n)``, an upper bound on
    the Hessian's largest eigenvalue (``p (1 - p) <= 1/4``), so every step lowers the loss.
    Stops when the loss reaches ``target_loss`` (if given), the gradient norm falls to
    ``tol``, or after ``max_iter`` iterations.
    """
    X, y = _design(X, y)
    check_positive_int(max_iter, name="max_iter")
    n = len(X)
    if learning_rate is None:
        learning_rate = 4 * n / np.linalg.eigvalsh(X.T @ X)[-1]
    learning_rate = _lr(learning_rate)
    theta = np.zeros(X.shape[1])
    start = time.perf_counter()
    z = X @ theta
    losses, norms, seconds = [], [], []
    for _ in range(max_iter + 1):
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        g = X.T @ (1 / (1 + np.exp(-z)) - y) / n
        losses.append(loss)
        norms.append(float(np.linalg.norm(g)))
        seconds.append(time.perf_counter() - start)
        if norms[-1] <= tol or (target_loss is not None and loss <= target_loss) \
                or len(losses) > max_iter:
            break
        theta = theta - learning_rate * g
        z = X @ theta
    done = norms[-1] <= tol or (target_loss is not None and losses[-1] <= target_loss)
    return Trace(theta, losses, norms, seconds, done)


def _matvec(A) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    shape = getattr(A, "shape", None)
    if shape is None:
        if callable(A):
            raise TypeError("A must be a square matrix (dense, scipy.sparse or a "
                            "LinearOperator), not a function.")
        shape = np.shape(A)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {shape}.")
    if not hasattr(A, "dot"):
        A = np.asarray(A, dtype=float)
    return (lambda v: A @ v), shape[0]


def conjugate_gradient(A, b: np.ndarray, *, x0: np.ndarray | None = None, tol: float = 1e-10,
                       max_iter: int | None = None) -> Trace:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` (a dense or sparse matrix,
    or a ``LinearOperator`` such as :func:`gram_operator`) by conjugate gradients.

    Equivalently, minimise the quadratic ``f(x) = x^T A x / 2 - b^T x``: each iteration
    moves along a direction conjugate (``A``-orthogonal) to all earlier ones, exactly
    minimising ``f`` over the space they span, so in exact arithmetic it finishes in at
    most ``n`` steps, and the error falls at least by ``2 ((sqrt(k) - 1) / (sqrt(k) + 1))^t``
    for condition number ``k`` (gradient descent: ``((k - 1) / (k + 1))^t``). Only
    products ``A v`` are needed. Stops when ``||b - A x|| <= tol * ||b||`` or after
    ``max_iter`` iterations (default ``10 n``: in floating point the directions slowly lose
    their conjugacy, and more than ``n`` steps can be needed). ``loss`` holds ``f``,
    ``grad_norm`` the residual norm.
    """
    matvec, n = _matvec(A)
    b = np.asarray(b, dtype=float)
    if b.shape != (n,):
        raise ValueError(f"b must be a vector of length {n}, got shape {b.shape}.")
    max_iter = 10 * n if max_iter is None else check_positive_int(max_iter, name="max_iter")
    start = time.perf_counter()
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=float)
    Ax = matvec(x)
    r = b - Ax
    d = r.copy()
    rr = float(r @ r)
    threshold = tol * float(np.linalg.norm(b))
    losses = [float(0.5 * x @ Ax - b @ x)]
    norms, seconds = [np.sqrt(rr)], [0.0]
    for _ in range(max_iter):
        if norms[-1] <= threshold:
            break
        Ad = matvec(d)
        curvature = float(d @ Ad)
        if curvature <= 0:
            raise ValueError(f"A is not positive definite: d^T A d = {curvature:.3g} at "
                             f"iteration {len(norms)}.")
        alpha = rr / curvature
        x = x + alpha * d
        r = r - alpha * Ad
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
        # f(x) = -(b^T x + r^T x) / 2 since A x = b - r
        losses.append(float(-0.5 * (b @ x + r @ x)))
        norms.append(np.sqrt(rr))
        seconds.append(time.perf_counter() - start)
    return Trace(x, losses, norms, seconds, norms[-1] <= threshold)


def gram_operator(X, l2: float, *, drop: int | None = None):
    """``X^T X + l2 I`` as a ``scipy.sparse.linalg.LinearOperator`` that never forms
    ``X^T X``: ``A v = X^T (X v) + l2 v``, two sparse products.

    For a customers-by-products purchase matrix this is the matrix of EASE's and of ridge
    regression's normal equations, whose dense form has one entry per pair of products.
    With ``drop=j`` column ``j`` of ``X`` counts as zero, which gives the normal equations
    of the ridge regression of product ``j`` on all the others (``w_j`` comes out 0).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator

    if not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2 must be a positive number, got {l2!r}.")
    X = sp.csr_matrix(X, dtype=float)
    n = X.shape[1]
    if drop is not None:
        if not 0 <= drop < n:
            raise ValueError(f"drop must be a column of X (0 to {n - 1}), got {drop!r}.")
        keep = np.ones(n)
        keep[drop] = 0.0
        X = X @ sp.diags(keep)
    Xt = X.T.tocsr()

    def matvec(v):
        v = np.asarray(v, dtype=float).ravel()
        return Xt @ (X @ v) + l2 * v

    return LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=float)


def gradient_descent_quadratic(A, b: np.ndarray, *, learning_rate: float | None = None,
                               tol: float = 1e-10, max_iter: int = 100_000) -> Trace:
    """Minimise ``x^T A x / 2 - b^T x`` by gradient descent from zero, with step
    ``1 / lambda_max(A)`` by default (estimated by 100 power iterations), the same stopping
    rule and trace as :func:`conjugate_gradient`."""
    matvec, n = _matvec(A)
    b = np.asarray(b, dtype=float)
    if b.shape != (n,):
        raise ValueError(f"b must be a vector of length {n}, got shape {b.shape}.")
    check_positive_int(max_iter, name="max_iter")
    if learning_rate is None:
        v = np.random.default_rng(0).normal(size=n)
        for _ in range(100):
            v = matvec(v)
            v /= np.linalg.norm(v)
        learning_rate = 1 / (1.01 * float(v @ matvec(v)))   # 1% margin on the estimate
    learning_rate = _lr(learning_rate)
    start = time.perf_counter()
    x = np.zeros(n)
    r = b.copy()
    threshold = tol * float(np.linalg.norm(b))
    losses, norms, seconds = [0.0], [float(np.linalg.norm(r))], [0.0]
    for _ in range(max_iter):
        if norms[-1] <= threshold:
            break
        x = x + learning_rate * r
        r = b - matvec(x)
        losses.append(float(-0.5 * (b @ x + r @ x)))
        norms.append(float(np.linalg.norm(r)))
        seconds.append(time.perf_counter() - start)
    return Trace(x, losses, norms, seconds, norms[-1] <= threshold)


def _allocation_input(gain, cost, budget) -> tuple[np.ndarray, np.ndarray, float]:
    gain = np.asarray(gain, dtype=float)
    cost = np.asarray(cost, dtype=float)
    if gain.ndim != 1 or cost.shape != gain.shape:
        raise ValueError(f"gain and cost must be vectors of the same length, got shapes "
                         f"{gain.shape} and {cost.shape}.")
    if not (np.isfinite(gain).all() and np.isfinite(cost).all()):
        raise ValueError("gain and cost must be finite.")
    if (cost <= 0).any():
        bad = np.flatnonzero(cost <= 0)[0]
        raise ValueError(f"every cost must be positive; entry {bad} is {float(cost[bad])!r}.")
    if not (np.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a non-negative number, got {budget!r}.")
    return gain, cost, float(budget)


def lagrangian_allocation(gain, cost, budget: float, *, tol: float = 1e-12,
                          max_iter: int = 200) -> dict:
    """Maximise ``sum(gain * x)`` subject to ``sum(cost * x) <= budget``, ``0 <= x <= 1``,
    by its Lagrange multiplier (the linear relaxation of a knapsack problem).

    For a multiplier ``lam >= 0`` the Lagrangian ``sum((gain - lam cost) x) + lam budget``
    is maximised by ``x_i = 1`` where ``gain_i / cost_i > lam``; the dual function
    ``D(lam) = lam budget + sum(max(0, gain_i - lam cost_i))`` is convex, and its minimum
    (found by bisection) equals the optimum: the relaxation has no duality gap. The
    multiplier is the marginal gain of one more unit of budget (the shadow price). The
    primal solution takes every item above the multiplier and fills the budget with the
    items at it, in order of ``gain / cost``: at most one ends fractional (Dantzig, 1957).
    Returns ``x``, ``objective``, ``multiplier``, ``dual`` (``D`` at the multiplier),
    ``spent`` and ``iterations`` (of bisection).
    """
    gain, cost, budget = _allocation_input(gain, cost, budget)
    check_positive_int(max_iter, name="max_iter")
    ratio = gain / cost

    def spent(lam):
        return float(cost[ratio > lam].sum())

    lo, hi, iterations = 0.0, max(float(ratio.max(initial=0.0)), 0.0), 0
    if spent(0.0) <= budget:                       # every worthwhile item fits
        lo = hi = 0.0
    while hi - lo > tol * max(1.0, hi) and iterations < max_iter:
        mid = 0.5 * (lo + hi)
        if spent(mid) > budget:
            lo = mid
        else:
            hi = mid
        iterations += 1
    lam = hi
    x = (ratio > lam).astype(float)
    left = budget - float(cost @ x)
    # fill with the items at the multiplier (ratio in (lo, hi]), best first
    for i in np.argsort(-ratio, kind="stable"):
        if left <= 0 or ratio[i] <= 0:
            break
        if x[i] == 0:
            x[i] = min(1.0, left / cost[i])
            left -= x[i] * cost[i]
    dual = lam * budget + float(np.maximum(0.0, gain - lam * cost).sum())
    return {"x": x, "objective": float(gain @ x), "multiplier": lam, "dual": dual,
            "spent": float(cost @ x), "iterations": iterations}


def allocation_lp(gain, cost, budget: float, *, method: str = "highs-ipm",
                  integer: bool = False) -> dict:
    """The same allocation solved by SciPy: ``scipy.optimize.linprog`` with ``method``
    (``"highs-ipm"``: interior point, ``"highs-ds"``: dual simplex), or, with
    ``integer=True``, the 0/1 knapsack by ``scipy.optimize.milp`` (branch and bound).
    Returns ``x``, ``objective``, ``spent`` and, for the linear programme, ``multiplier``
    (the budget constraint's marginal)."""
    from scipy import optimize

    gain, cost, budget = _allocation_input(gain, cost, budget)
    if integer:
        res = optimize.milp(-gain, integrality=np.ones(len(gain)),
                            bounds=optimize.Bounds(0, 1),
                            constraints=optimize.LinearConstraint(cost[None, :], -np.inf,
                                                                  budget))
        if not res.success:
            raise RuntimeError(f"milp failed: {res.message}")
        x = np.round(res.x)
        return {"x": x, "objective": float(gain @ x), "spent": float(cost @ x),
                "multiplier": None}
    res = optimize.linprog(-gain, A_ub=cost[None, :], b_ub=[budget], bounds=(0, 1),
                           method=method)
    if not res.success:
        raise RuntimeError(f"linprog ({method}) failed: {res.message}")
    return {"x": res.x, "objective": float(gain @ res.x), "spent": float(cost @ res.x),
            "multiplier": float(-res.ineqlin.marginals[0])}


# --------------------------------------------------- chapter 3.4-3.5's experiments, reusable


def optimiser_race(x, t, *, steps: int = 150, tol: float = 1e-4,
                   start: tuple[float, float] = (-1.0, 0.0), keras_steps: int = 100) -> dict:
    """Chapter 3.4's race on the least-squares fit ``t ~ w0 + w1 x``, as a function.

    Gradient descent (step ``1 / lambda_max``), heavy-ball momentum (same step,
    ``beta = 0.9``) and Adam (``alpha = 0.1``) run ``steps`` steps from ``start``. Returns
    ``condition`` (of the Hessian), ``steps`` (per optimiser, the first step whose loss is
    within ``tol`` of the minimum, or None), ``gap`` (the loss above the minimum after the
    last step) and ``keras`` (per optimiser, the largest difference from the iterates of the
    matching ``keras.optimizers`` object over ``keras_steps`` steps; the Adam of the paper
    and the Keras-compatible one are both compared).
    """
    keras = require("keras", "deep")

    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    if x.ndim != 1 or x.shape != t.shape:
        raise ValueError(f"x and t must be vectors of the same length, got {x.shape} and "
                         f"{t.shape}.")
    D = np.c_[np.ones_like(x), x]
    H = D.T @ D / len(x)
    eig = np.linalg.eigvalsh(H)
    w_star = np.linalg.solve(H, D.T @ t / len(x))

    def grad(w):
        return D.T @ (D @ w - t) / len(x)

    def loss(w):
        return 0.5 * float(np.mean((D @ w - t) ** 2))

    lr = 1.0 / eig[-1]
    runners = {"gradient descent": GradientDescent(lr), "momentum": Momentum(lr, 0.9),
               "Adam": Adam(0.1)}
    minimum = loss(w_star)
    reach, gaps = {}, {}
    for name, opt in runners.items():
        gap = np.array([loss(w) - minimum for w in minimise(grad, start, opt, steps)])
        hits = np.flatnonzero(gap < tol)
        reach[name] = int(hits[0]) if len(hits) else None
        gaps[name] = float(gap[-1])
    pairs = {"gradient descent": (GradientDescent(lr), keras.optimizers.SGD(lr)),
             "momentum": (Momentum(lr, 0.9), keras.optimizers.SGD(lr, momentum=0.9)),
             "Adam (paper form)": (Adam(0.1), keras.optimizers.Adam(0.1)),
             "Adam (keras_compatible=True)": (Adam(0.1, keras_compatible=True),
                                              keras.optimizers.Adam(0.1))}
    match = {name: float(np.abs(minimise(grad, start, ours, keras_steps)
                                - keras_trajectory(theirs, grad, start, keras_steps)).max())
             for name, (ours, theirs) in pairs.items()}
    return {"condition": float(eig[-1] / eig[0]), "steps": reach, "gap": gaps,
            "keras": match}


#: chapter 3.5's three strategies: (batch size or None for the full batch, learning rate)
BATCH_STRATEGIES = {"full batch (α=3)": (None, 3.0), "SGD, 1 example (α=0.01)": (1, 0.01),
                    "mini-batch 64 (α=0.3)": (64, 0.3)}


def batch_strategies(X_train, y_train, X_val, y_val, *, settings: dict | None = None,
                     epochs: int = 15, seed: int = 0) -> dict:
    """Chapter 3.5's comparison of full-batch, stochastic and mini-batch gradient descent:
    :func:`fit_logistic_regression` with each ``(batch_size, learning_rate)`` of
    ``settings`` (default :data:`BATCH_STRATEGIES`). Returns, per strategy, its history
    (one dict per epoch: updates, seconds, training and validation loss)."""
    settings = BATCH_STRATEGIES if settings is None else settings
    return {name: fit_logistic_regression(X_train, y_train, GradientDescent(rate),
                                          batch_size=batch, epochs=epochs, X_val=X_val,
                                          y_val=y_val, seed=seed)[1]
            for name, (batch, rate) in settings.items()}


def training_recipes(X_train, y_train, X_val, y_val, *, seed: int = 0,
                     max_epochs: int = 100, patience: int = 10, epochs: int = 40,
                     l2_rows: int = 500, l2_values=(0.0, 1e-3, 1e-2)) -> dict:
    """Chapter 3.5's training recipes on a Keras MLP (:func:`companion.foundations.mlp.build_mlp`),
    as a function.

    * ``early_stopping``: up to ``max_epochs`` epochs, stopping once the validation loss has
      not improved for ``patience`` epochs, best weights restored: the best and the
      stopping epoch, the best and the last validation loss, and the validation loss of
      the restored model;
    * ``schedules``: Adam's learning rate constant at 1e-3, halved every 10 epochs, cosine
      decay, and halved on a plateau of 3 epochs, ``epochs`` epochs each from the same
      initial weights: best and final validation loss;
    * ``l2``: a network of two layers of 256 units trained on ``l2_rows`` training rows
      for ``epochs`` epochs with each L2 strength of ``l2_values``: the final validation
      loss without the penalty term;
    * ``histories``: the Keras histories (training and validation loss per epoch) of the
      ``schedules`` runs, by schedule, and of the ``l2`` runs, by ``"λ = <value>"``.
    """
    keras = require("keras", "deep")

    from companion.foundations.mlp import build_mlp

    X_train, X_val = np.asarray(X_train, "float32"), np.asarray(X_val, "float32")
    n_features = X_train.shape[1]
    model = build_mlp(n_features, (128, 64), seed=seed)
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    hist = model.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=max_epochs,
                     batch_size=256, callbacks=[stop], verbose=0).history["val_loss"]
    early = {"best epoch": int(np.argmin(hist)) + 1, "stopped epoch": len(hist),
             "best": float(min(hist)), "last": float(hist[-1]),
             "restored": float(model.evaluate(X_val, y_val, verbose=0, batch_size=4096))}
    per_epoch = int(np.ceil(len(y_train) / 256))
    schedules = {
        "constant 1e-3": (1e-3, []),
        "step decay ×0.5 every 10 epochs": (keras.optimizers.schedules.ExponentialDecay(
            1e-3, decay_steps=10 * per_epoch, decay_rate=0.5, staircase=True), []),
        "cosine decay": (keras.optimizers.schedules.CosineDecay(1e-3, epochs * per_epoch), []),
        "reduce on plateau": (1e-3, [keras.callbacks.ReduceLROnPlateau(factor=0.5,
                                                                       patience=3)]),
    }
    scheduled, histories = {}, {"schedules": {}, "l2": {}}
    for name, (rate, callbacks) in schedules.items():
        net = build_mlp(n_features, (128, 64), seed=seed)
        net.compile(optimizer=keras.optimizers.Adam(rate), loss="binary_crossentropy")
        h = _losses(net.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=epochs,
                            batch_size=256, callbacks=callbacks, verbose=0).history)
        histories["schedules"][name] = h
        scheduled[name] = {"best": min(h["val_loss"]), "final": h["val_loss"][-1]}
    small = np.random.default_rng(seed).choice(len(y_train), l2_rows, replace=False)
    penalised = {}
    for lam in l2_values:
        net = build_mlp(n_features, (256, 256), l2=lam, seed=seed)
        histories["l2"][f"λ = {lam:g}"] = _losses(net.fit(
            X_train[small], y_train[small], validation_data=(X_val, y_val), epochs=epochs,
            batch_size=32, verbose=0).history)
        penalty = sum(float(keras.ops.sum(term)) for term in net.losses)
        penalised[lam] = float(net.evaluate(X_val, y_val, verbose=0)) - penalty
    return {"early_stopping": early, "schedules": scheduled, "l2": penalised,
            "histories": histories}


def _losses(history: dict) -> dict[str, list[float]]:
    """The training and validation loss of a Keras history, as plain floats."""
    return {key: [float(v) for v in history[key]] for key in ("loss", "val_loss")}
