"""companion.foundations.losses and companion.foundations.optim against Keras and finite
differences."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from companion.foundations import losses, optim  # noqa: E402

rng = np.random.default_rng(0)
Y_REG, P_REG = rng.normal(size=50), rng.normal(size=50) * 2
Y_BIN = rng.integers(0, 2, 50).astype(float)
Z_BIN = rng.normal(size=50) * 3
Y_CAT = np.eye(4)[rng.integers(0, 4, 30)]
Z_CAT = rng.normal(size=(30, 4)) * 2


def _keras(loss, y, p):
    return float(loss(y.astype("float32"), p.astype("float32")))


@pytest.mark.parametrize(
    ("ours", "theirs", "y", "p"),
    [
        (losses.mse, keras.losses.MeanSquaredError(), Y_REG, P_REG),
        (losses.mae, keras.losses.MeanAbsoluteError(), Y_REG, P_REG),
        (losses.huber, keras.losses.Huber(delta=1.0), Y_REG, P_REG),
        (losses.binary_cross_entropy, keras.losses.BinaryCrossentropy(), Y_BIN,
         losses.sigmoid(Z_BIN)),
        (losses.binary_cross_entropy_from_logits,
         keras.losses.BinaryCrossentropy(from_logits=True), Y_BIN, Z_BIN),
        (losses.categorical_cross_entropy, keras.losses.CategoricalCrossentropy(), Y_CAT,
         losses.softmax(Z_CAT)),
        (losses.categorical_cross_entropy_from_logits,
         keras.losses.CategoricalCrossentropy(from_logits=True), Y_CAT, Z_CAT),
        (losses.hinge, keras.losses.Hinge(), Y_BIN, Z_BIN),
    ],
)
def test_losses_match_keras(ours, theirs, y, p):
    assert ours(y, p) == pytest.approx(_keras(theirs, y, p), rel=1e-5, abs=1e-6)


def _numeric_grad(fn, y, p, h=1e-6):
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        g[i] = (fn(y, up) - fn(y, down)) / (2 * h)
    return g


@pytest.mark.parametrize(
    ("fn", "grad", "y", "p"),
    [
        (losses.mse, losses.mse_grad, Y_REG, P_REG),
        (losses.mae, losses.mae_grad, Y_REG, P_REG),
        (losses.huber, losses.huber_grad, Y_REG, P_REG),
        (losses.binary_cross_entropy, losses.binary_cross_entropy_grad, Y_BIN,
         losses.sigmoid(Z_BIN / 3)),
        (losses.binary_cross_entropy_from_logits, losses.binary_cross_entropy_from_logits_grad,
         Y_BIN, Z_BIN),
        (losses.categorical_cross_entropy_from_logits,
         losses.categorical_cross_entropy_from_logits_grad, Y_CAT, Z_CAT),
        (losses.hinge, losses.hinge_grad, Y_BIN, Z_BIN),
    ],
)
def test_gradients_match_finite_differences(fn, grad, y, p):
    np.testing.assert_allclose(grad(y, p), _numeric_grad(fn, y, p), rtol=1e-4, atol=1e-7)


def test_logit_losses_are_stable_for_huge_scores():
    z = np.array([1000.0, -1000.0])
    y = np.array([1.0, 0.0])
    assert losses.binary_cross_entropy_from_logits(y, z) == 0.0
    assert losses.binary_cross_entropy_from_logits(1 - y, z) == pytest.approx(1000.0)
    assert np.isfinite(losses.categorical_cross_entropy_from_logits(np.eye(2), z * np.eye(2)))
    assert losses.binary_cross_entropy(y, np.array([1.0, 0.0])) < 1e-6  # clipped, not nan


@pytest.mark.parametrize(
    ("fn", "y", "p", "match"),
    [
        (losses.mse, [1.0, 2.0], [1.0], "shape"),
        (losses.mae, [1.0, np.nan], [1.0, 2.0], "NaN"),
        (losses.binary_cross_entropy, [0, 2], [0.1, 0.2], "0 or 1"),
        (losses.binary_cross_entropy, [0, 1], [0.1, 1.2], "probabilities"),
        (losses.hinge, [0, 2], [0.1, 0.2], "hinge labels"),
        (losses.categorical_cross_entropy, [[1, 1], [0, 1]], [[0.5, 0.5], [0.5, 0.5]],
         "one-hot"),
        (losses.categorical_cross_entropy, [1, 0], [0.5, 0.5], "2-D"),
        (losses.huber, [], [], "empty"),
    ],
)
def test_losses_reject_bad_input(fn, y, p, match):
    with pytest.raises(ValueError, match=match):
        fn(np.asarray(y, dtype=float), np.asarray(p, dtype=float))


# --------------------------------------------------------------------------- optimisers

A = np.diag([1.0, 25.0])


@pytest.mark.parametrize(
    ("ours", "theirs", "tolerance"),
    [
        (lambda: optim.GradientDescent(0.03), lambda: keras.optimizers.SGD(0.03), 1e-7),
        (lambda: optim.Momentum(0.03, 0.9), lambda: keras.optimizers.SGD(0.03, momentum=0.9),
         1e-6),
        # Keras rounds beta_1 and beta_2 to float32 and adds epsilon before the bias
        # correction ("epsilon hat"); the paths differ by a few 1e-6 on the way.
        (lambda: optim.Adam(0.05), lambda: keras.optimizers.Adam(0.05), 1e-5),
    ],
)
def test_optimisers_match_keras_for_100_steps(ours, theirs, tolerance):
    x0 = [1.0, -1.5]
    path = optim.minimise(lambda x: A @ x, x0, ours(), 100)
    assert path.shape == (101, 2)
    reference = optim.keras_trajectory(theirs(), lambda x: A @ x, x0, 100)
    assert reference.shape == path.shape
    np.testing.assert_allclose(path, reference, rtol=0, atol=tolerance)
    assert np.abs(path[-1] - reference[-1]).max() < 1e-6


def test_keras_compatible_adam_is_bit_identical():
    ours = optim.minimise(lambda x: A @ x, [1.0, -1.5], optim.Adam(0.05, keras_compatible=True),
                          100)
    theirs = optim.keras_trajectory(keras.optimizers.Adam(0.05), lambda x: A @ x,
                                    [1.0, -1.5], 100)
    np.testing.assert_array_equal(ours, theirs)


def test_uncorrected_adam_is_the_sources_update():
    """The source's theta update uses the raw averages: by hand, and 3.16 times too big."""
    g = np.array([0.5, -2.0, 1e-3])
    raw = optim.Adam(0.01, epsilon=1e-12, bias_correction=False)
    first = raw.step(np.zeros(3), g)
    m, v = 0.1 * g, 0.001 * g**2
    np.testing.assert_allclose(first, -0.01 * m / (np.sqrt(v) + 1e-12), rtol=1e-12)
    corrected = optim.Adam(0.01, epsilon=1e-12).step(np.zeros(3), g)
    np.testing.assert_allclose(corrected, -0.01 * np.sign(g), rtol=1e-9)
    np.testing.assert_allclose(first / corrected, 0.1 / np.sqrt(0.001), rtol=1e-6)
    # the second step: ratio (1 - beta1^2) / sqrt(1 - beta2^2), for a constant gradient
    a = raw.step(first, g) - first
    b = optim.Adam(0.01, epsilon=1e-12)
    b.step(np.zeros(3), g)
    np.testing.assert_allclose(a / (b.step(corrected, g) - corrected),
                               0.19 / np.sqrt(1 - 0.999**2), rtol=1e-6)
    with pytest.raises(ValueError, match="bias_correction"):
        optim.Adam(keras_compatible=True, bias_correction=False)


def test_ema_momentum_is_heavy_ball_with_a_smaller_step():
    ema = optim.minimise(lambda x: A @ x, [1.0, 1.0], optim.Momentum(0.1, 0.9, form="ema"), 50)
    heavy = optim.minimise(lambda x: A @ x, [1.0, 1.0], optim.Momentum(0.01, 0.9), 50)
    np.testing.assert_allclose(ema, heavy, atol=1e-12)


def test_gradient_descent_converges_on_a_quadratic():
    path = optim.minimise(lambda x: A @ x, [1.0, 1.0], optim.GradientDescent(0.07), 300)
    assert np.abs(path[-1]).max() < 1e-8


def test_optimisers_reject_bad_input():
    with pytest.raises(ValueError, match="learning_rate"):
        optim.GradientDescent(-1)
    with pytest.raises(ValueError, match="beta"):
        optim.Momentum(0.1, beta=1.0)
    with pytest.raises(ValueError, match="form"):
        optim.Momentum(0.1, form="nesterov")
    with pytest.raises(ValueError, match="epsilon"):
        optim.Adam(epsilon=0)
    with pytest.raises(ValueError, match="shape"):
        optim.Adam().step(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="not finite"):
        optim.GradientDescent(0.1).step(np.zeros(2), np.array([np.nan, 0]))
    with pytest.raises(ValueError, match="steps"):
        optim.minimise(lambda x: x, [1.0], optim.GradientDescent(0.1), 0)
