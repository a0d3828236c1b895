"""Tests of companion.foundations.optim's second-order, conjugate-gradient and
constrained solvers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from companion.foundations import optim


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(0)
    n = 400
    X = np.c_[np.ones(n), rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2]]
    theta = np.array([-0.5, 1.0, -0.3, 2.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ theta))).astype(float)
    return X, y


def _reference(X, y):
    """The maximum-likelihood solution by SciPy's BFGS on the same loss."""
    res = optimize.minimize(optim.logistic_loss, np.zeros(X.shape[1]), args=(X, y),
                            jac=lambda t, *_: X.T @ (1 / (1 + np.exp(-X @ t)) - y) / len(y),
                            method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000})
    return res.x


def test_logistic_loss_hand_value():
    X = np.array([[1.0, 0.0], [1.0, 2.0]])
    y = np.array([0.0, 1.0])
    theta = np.array([0.0, 0.5])
    want = 0.5 * (np.log(2) + np.log(1 + np.exp(-1.0)))
    assert optim.logistic_loss(theta, X, y) == pytest.approx(want, rel=1e-12)


def test_newton_converges_quadratically_to_the_optimum(logistic_data):
    X, y = logistic_data
    trace = optim.newton_logistic(X, y, tol=1e-12)
    assert trace.converged and trace.iterations <= 10
    np.testing.assert_allclose(trace.x, _reference(X, y), atol=1e-6)
    # quadratic convergence: once close, the gradient norm is roughly squared each step
    g = trace.grad_norm
    late = np.flatnonzero((g[:-1] < 1e-2) & (g[1:] > 0))
    assert any(g[i + 1] < 10 * g[i] ** 2 for i in late)
    assert np.all(np.diff(trace.loss) <= 1e-15)                 # never goes up
    assert len(trace.seconds) == trace.iterations + 1 and np.all(np.diff(trace.seconds) >= 0)


def test_newton_is_invariant_to_rescaling_gradient_descent_is_not(logistic_data):
    X, y = logistic_data
    scaled = X * [1.0, 100.0, 0.01, 10.0]
    a, b = optim.newton_logistic(X, y), optim.newton_logistic(scaled, y)
    assert a.iterations == b.iterations
    np.testing.assert_allclose(b.x * [1.0, 100.0, 0.01, 10.0], a.x, rtol=1e-6, atol=1e-8)
    target = a.loss[-1] + 1e-6
    fast = optim.gradient_descent_logistic(X, y, target_loss=target, max_iter=50_000)
    slow = optim.gradient_descent_logistic(scaled, y, target_loss=target, max_iter=2_000)
    assert fast.converged and fast.reached(target)[0] == fast.iterations
    assert not slow.converged and slow.reached(target) is None


def test_gradient_descent_logistic_reaches_the_newton_solution(logistic_data):
    X, y = logistic_data
    newton = optim.newton_logistic(X, y)
    gd = optim.gradient_descent_logistic(X, y, tol=1e-9, max_iter=200_000)
    assert gd.converged
    np.testing.assert_allclose(gd.x, newton.x, atol=1e-6)
    assert np.all(np.diff(gd.loss) <= 1e-15)        # step 1/L never raises the loss
    assert gd.iterations > 20 * newton.iterations


def test_logistic_solvers_reject_bad_input():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="row 1 is 2.0"):
        optim.newton_logistic(X, np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="one label per row"):
        optim.gradient_descent_logistic(X, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="row 0, column 1"):
        optim.newton_logistic(np.array([[1.0, np.nan]]), np.array([1.0]))
    with pytest.raises(ValueError, match="singular"):
        optim.newton_logistic(np.c_[np.ones(4), np.ones(4)], np.array([0.0, 1.0, 1.0, 1.0]))


def _spd(n, condition, seed=0):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    return (q * np.geomspace(1.0, condition, n)) @ q.T


def test_conjugate_gradient_solves_and_beats_its_bound():
    A = _spd(60, 1e3)
    b = np.random.default_rng(1).normal(size=60)
    trace = optim.conjugate_gradient(A, b, tol=1e-10)
    kappa = 1e3
    rate = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    assert trace.converged and trace.iterations <= np.log(2e10) / -np.log(rate)
    np.testing.assert_allclose(trace.x, np.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    # the objective falls monotonically to its minimum -b^T A^{-1} b / 2
    assert np.all(np.diff(trace.loss) <= 1e-9)
    assert trace.loss[-1] == pytest.approx(-0.5 * b @ np.linalg.solve(A, b), rel=1e-9)
    # the error in the A-norm stays under 2 ((sqrt k - 1) / (sqrt k + 1))^t
    x_star = np.linalg.solve(A, b)
    partial = optim.conjugate_gradient(A, b, max_iter=15)
    err = partial.x - x_star
    assert np.sqrt(err @ A @ err) <= 2 * rate ** 15 * np.sqrt(x_star @ A @ x_star)


def test_conjugate_gradient_takes_sparse_matrices_and_rejects_indefinite_ones():
    import scipy.sparse as sp

    A = sp.diags([np.arange(1.0, 11.0)], [0]).tocsr()
    b = np.ones(10)
    trace = optim.conjugate_gradient(A, b)
    np.testing.assert_allclose(trace.x, 1 / np.arange(1.0, 11.0), rtol=1e-9)
    assert trace.iterations == 10              # ten distinct eigenvalues: ten steps
    with pytest.raises(ValueError, match="not positive definite"):
        optim.conjugate_gradient(np.diag([1.0, -1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="square"):
        optim.conjugate_gradient(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="length 2"):
        optim.conjugate_gradient(np.eye(2), np.ones(3))


def test_gradient_descent_on_a_quadratic_needs_about_kappa_steps():
    A = _spd(40, 100.0, seed=2)
    b = np.random.default_rng(3).normal(size=40)
    gd = optim.gradient_descent_quadratic(A, b, tol=1e-8)
    cg = optim.conjugate_gradient(A, b, tol=1e-8)
    assert gd.converged and cg.converged
    np.testing.assert_allclose(gd.x, cg.x, atol=1e-6)
    assert gd.iterations > 5 * cg.iterations
    assert gd.loss[-1] == pytest.approx(cg.loss[-1], rel=1e-8)


def test_trace_reached():
    trace = optim.Trace(np.zeros(1), [3.0, 2.0, 1.0], [1, 1, 1], [0.0, 0.5, 0.9], True)
    assert trace.reached(2.0) == (1, 0.5) and trace.reached(0.5) is None
    assert trace.iterations == 2


def test_lagrangian_allocation_hand_example():
    # ratios 3, 2, 1, -1; budget 3 takes item 0 (cost 1) and item 1 (cost 2)
    gain = np.array([3.0, 4.0, 2.0, -1.0])
    cost = np.array([1.0, 2.0, 2.0, 1.0])
    out = optim.lagrangian_allocation(gain, cost, 3.0)
    np.testing.assert_allclose(out["x"], [1, 1, 0, 0])
    assert out["objective"] == 7.0 and out["spent"] == 3.0
    # budget 4: item 2 half-taken; the multiplier is its ratio
    out = optim.lagrangian_allocation(gain, cost, 4.0)
    np.testing.assert_allclose(out["x"], [1, 1, 0.5, 0])
    assert out["objective"] == pytest.approx(8.0)
    assert out["multiplier"] == pytest.approx(1.0, abs=1e-9)
    assert out["dual"] == pytest.approx(out["objective"], abs=1e-8)
    # a budget that covers every worthwhile item: multiplier zero, losers left out
    out = optim.lagrangian_allocation(gain, cost, 100.0)
    np.testing.assert_allclose(out["x"], [1, 1, 1, 0])
    assert out["multiplier"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lagrangian_allocation_matches_linprog_and_bounds_the_integer_optimum(seed):
    rng = np.random.default_rng(seed)
    n = 200
    gain = rng.gamma(2.0, 10.0, size=n) - 5.0
    cost = rng.uniform(1.0, 20.0, size=n)
    budget = 0.2 * cost.sum()
    ours = optim.lagrangian_allocation(gain, cost, budget)
    for method in ("highs-ipm", "highs-ds"):
        lp = optim.allocation_lp(gain, cost, budget, method=method)
        assert ours["objective"] == pytest.approx(lp["objective"], rel=1e-7)
        assert ours["multiplier"] == pytest.approx(lp["multiplier"], rel=1e-6)
        np.testing.assert_allclose(ours["x"], lp["x"], atol=1e-6)
    assert ours["dual"] == pytest.approx(ours["objective"], rel=1e-9)
    assert ours["spent"] == pytest.approx(budget, rel=1e-12)
    assert ((ours["x"] > 0) & (ours["x"] < 1)).sum() <= 1
    # the multiplier is the value of one more unit of budget
    more = optim.lagrangian_allocation(gain, cost, budget + 0.01)
    assert (more["objective"] - ours["objective"]) / 0.01 == pytest.approx(
        ours["multiplier"], rel=1e-6)
    best = optim.allocation_lp(gain, cost, budget, integer=True)
    rounded = gain @ np.floor(ours["x"])
    assert rounded <= best["objective"] + 1e-9 <= ours["objective"] + 1e-6
    assert best["spent"] <= budget + 1e-9 and set(np.unique(best["x"])) <= {0.0, 1.0}


def test_allocation_rejects_bad_input():
    with pytest.raises(ValueError, match="entry 1 is 0.0"):
        optim.lagrangian_allocation([1.0, 2.0], [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="same length"):
        optim.allocation_lp([1.0, 2.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="budget"):
        optim.lagrangian_allocation([1.0], [1.0], -1.0)


def test_gram_operator_solves_the_ridge_and_ease_normal_equations():
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    X = sp.csr_matrix((rng.random((80, 12)) < 0.3).astype(float))
    l2, j = 2.0, 5
    gram = (X.T @ X).toarray()
    op = optim.gram_operator(X, l2)
    v = rng.normal(size=12)
    np.testing.assert_allclose(op @ v, (gram + l2 * np.eye(12)) @ v, rtol=1e-12)
    # ridge regression of column j on the others, through the operator with drop=j
    rhs = X.T @ X[:, j].toarray().ravel()
    rhs[j] = 0.0
    w = optim.conjugate_gradient(optim.gram_operator(X, l2, drop=j), rhs, tol=1e-12).x
    others = np.arange(12) != j
    direct = np.linalg.solve(gram[np.ix_(others, others)] + l2 * np.eye(11), gram[others, j])
    np.testing.assert_allclose(w[others], direct, rtol=1e-8, atol=1e-10)
    assert w[j] == 0.0
    # and that is EASE's column j: B = I - P / diag(P), P = (X^T X + l2 I)^-1
    P = np.linalg.inv(gram + l2 * np.eye(12))
    np.testing.assert_allclose(w[others], (-P[:, j] / P[j, j])[others], rtol=1e-8)
    with pytest.raises(ValueError, match="l2"):
        optim.gram_operator(X, 0.0)
    with pytest.raises(ValueError, match="drop"):
        optim.gram_operator(X, 1.0, drop=12)


# ------------------------------------------------------------- chapter 3.4-3.5 experiments


def test_optimiser_race_on_an_ill_conditioned_line():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 0.5, size=300)                 # far from zero: ill-conditioned
    t = 0.5 + 1.5 * x + rng.normal(0, 0.1, size=300)
    race = optim.optimiser_race(x, t, steps=150, keras_steps=20)
    D = np.c_[np.ones_like(x), x]
    eig = np.linalg.eigvalsh(D.T @ D / len(x))
    assert race["condition"] == pytest.approx(eig[1] / eig[0], rel=1e-10)
    assert race["steps"]["momentum"] is not None
    assert race["steps"]["gradient descent"] is None or \
        race["steps"]["momentum"] < race["steps"]["gradient descent"]
    assert race["gap"]["momentum"] < 1e-4 and min(race["gap"].values()) >= -1e-12
    assert race["keras"]["Adam (keras_compatible=True)"] == 0.0
    assert race["keras"]["gradient descent"] < 1e-5
    with pytest.raises(ValueError, match="same length"):
        optim.optimiser_race(x, t[:-1])


def test_batch_strategies_count_updates():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] + rng.normal(size=90) > 0).astype(float)
    runs = optim.batch_strategies(X[:60], y[:60], X[60:], y[60:], epochs=2,
                                  settings={"full": (None, 1.0), "ten": (10, 0.1)})
    assert [r["updates"] for r in runs["full"]] == [1, 2]
    assert [r["updates"] for r in runs["ten"]] == [6, 12]
    assert all("validation loss" in r for r in runs["ten"])


def test_training_recipes_restore_the_best_weights_and_remove_the_penalty():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 4)).astype("float32")
    y = (X[:, 0] - X[:, 1] + rng.normal(size=300) > 0).astype("float32")
    out = optim.training_recipes(X[:200], y[:200], X[200:], y[200:], max_epochs=6,
                                 patience=2, epochs=3, l2_rows=50, l2_values=(1e-1,))
    early = out["early_stopping"]
    assert 1 <= early["best epoch"] <= early["stopped epoch"] <= 6
    assert early["restored"] == pytest.approx(early["best"], abs=1e-4)
    assert set(out["schedules"]) == {"constant 1e-3", "step decay ×0.5 every 10 epochs",
                                     "cosine decay", "reduce on plateau"}
    for row in out["schedules"].values():
        assert row["best"] <= row["final"]
    # with the penalty taken out, a strong L2 gives a plain log loss, not loss + penalty
    assert set(out["l2"]) == {0.1}
    assert 0 < out["l2"][0.1] < 1.0
    # the histories behind the rows: one loss per epoch, the rows' numbers among them
    curves = out["histories"]
    assert set(curves["schedules"]) == set(out["schedules"]) and set(curves["l2"]) == {"λ = 0.1"}
    for name, row in out["schedules"].items():
        h = curves["schedules"][name]
        assert len(h["loss"]) == len(h["val_loss"]) == 3
        assert (min(h["val_loss"]), h["val_loss"][-1]) == (row["best"], row["final"])
    assert len(curves["l2"]["λ = 0.1"]["val_loss"]) == 3
