"""companion.foundations.mlp (Keras MLP), logistic-regression training and split helpers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from companion import plotting  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.foundations import metrics, optim  # noqa: E402
from companion.foundations.mlp import KerasMLPClassifier, build_mlp  # noqa: E402

rng = np.random.default_rng(3)
X = rng.normal(size=(600, 4))
Y = (X[:, 0] - 2 * X[:, 1] + 0.5 * rng.normal(size=600) > 0).astype(int)


def test_full_batch_logistic_regression_reaches_the_mle():
    theta, hist = optim.fit_logistic_regression(X, Y, optim.GradientDescent(4.0), epochs=8000)
    ref = LogisticRegression(C=np.inf, max_iter=10_000, tol=1e-10).fit(X, Y)
    np.testing.assert_allclose(theta[:-1], ref.coef_.ravel(), rtol=3e-3)
    ours = hist[-1]["train loss"]
    theirs = metrics.log_loss(Y, ref.predict_proba(X)[:, 1])
    assert ours <= theirs + 1e-6
    assert hist[-1]["updates"] == 8000
    assert hist[-1]["train loss"] < hist[0]["train loss"]


def test_minibatch_counts_updates_and_tracks_validation():
    _, hist = optim.fit_logistic_regression(X, Y, optim.Adam(0.05), batch_size=32, epochs=3,
                                            X_val=X[:50], y_val=Y[:50])
    assert hist[0]["updates"] == int(np.ceil(600 / 32))
    assert "validation loss" in hist[-1]
    with pytest.raises(ValueError, match="one row per label"):
        optim.fit_logistic_regression(X, Y[:10], optim.Adam(0.1))


def test_stratified_split_keeps_class_balance():
    parts = preprocessing.stratified_split(pd.DataFrame(X), Y, seed=0)
    assert sum(len(p[1]) for p in parts.values()) == len(Y)
    for _, y in parts.values():
        assert abs(y.mean() - Y.mean()) < 0.03
    with pytest.raises(ValueError, match="sizes"):
        preprocessing.stratified_split(pd.DataFrame(X), Y, sizes=(0.5, 0.5, 0.5))


def test_keras_mlp_classifier_learns_and_is_sklearn_compatible():
    model = KerasMLPClassifier(hidden=(16,), epochs=40, patience=5, seed=0).fit(X, Y)
    proba = model.predict_proba(X)
    assert proba.shape == (600, 2) and np.allclose(proba.sum(axis=1), 1)
    assert metrics.roc_auc(Y, proba[:, 1]) > 0.9
    assert set(model.predict(X)) <= {0, 1}
    again = clone(model).fit(X, Y)
    np.testing.assert_allclose(again.predict_proba(X), proba, atol=1e-6)  # seeded
    best = int(np.argmin(model.history_["val_loss"]))
    assert len(model.history_["val_loss"]) <= best + 1 + 5 or best == 39


def test_keras_mlp_rejects_bad_input():
    with pytest.raises(ValueError, match="labels 0 and 1"):
        KerasMLPClassifier(epochs=1).fit(X, Y + 1)
    with pytest.raises(RuntimeError, match="not fitted"):
        KerasMLPClassifier().predict_proba(X)
    fitted = KerasMLPClassifier(hidden=(4,), epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="4 columns"):
        fitted.predict_proba(X[:, :2])
    with pytest.raises(ValueError, match="dropout"):
        build_mlp(3, dropout=1.5)


def test_training_plots():
    ax = plotting.plot_training_curves({"a": {"loss": [3, 2, 1], "val_loss": [3, 2.5, 2.4]}})
    assert len(ax.lines) == 2
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="no 'auc'"):
        plotting.plot_training_curves({"a": {"loss": [1]}}, metric="auc")
    path = optim.minimise(lambda w: w, [1.0, 1.0], optim.GradientDescent(0.5), 5)
    ax = plotting.plot_trajectories(lambda a, b: a**2 + b**2, {"gd": path})
    assert len(ax.lines) == 1
    plt.close(ax.figure)
