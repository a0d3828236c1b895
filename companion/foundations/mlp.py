"""A Keras multilayer perceptron for tabular classification, shared by the chapters.

It can be used directly
(:func:`build_mlp`) or as a scikit-learn estimator (:class:`KerasMLPClassifier`) so that
it can sit in pipelines, cross-validation and grid search beside scikit-learn models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from companion._checks import check_positive_int
from companion._optional import require
from companion.exceptions import not_fitted

require("keras", "deep", load=False)


def build_mlp(
    n_features: int,
    hidden: Sequence[int] = (64, 32),
    *,
    l2: float = 0.0,
    dropout: float = 0.0,
    learning_rate: float = 1e-3,
    seed: int = 0,
):
    """A compiled Keras binary classifier: ReLU layers (He-initialised) and a logit output.

    The model outputs a probability (sigmoid) and is trained with binary cross-entropy and
    Adam. ``l2`` adds :math:`\\lambda\\sum w^2` per layer to the loss.
    """
    import keras

    from companion.foundations.keras_helpers import seed_everything

    check_positive_int(n_features, name="n_features")
    if l2 < 0 or not 0 <= dropout < 1:
        raise ValueError(f"need l2 >= 0 and 0 <= dropout < 1, got l2={l2}, dropout={dropout}.")
    seed_everything(seed)
    regulariser = keras.regularizers.L2(l2) if l2 else None
    layers = [keras.Input(shape=(n_features,))]
    for units in hidden:
        layers.append(keras.layers.Dense(check_positive_int(units, name="hidden units"),
                                         activation="relu", kernel_initializer="he_normal",
                                         kernel_regularizer=regulariser))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, seed=seed))
    layers.append(keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regulariser))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy())
    return model


class KerasMLPClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn wrapper around :func:`build_mlp` with early stopping.

    ``fit`` holds out ``validation_fraction`` of the training rows (stratified), trains
    for up to ``epochs`` epochs and restores the weights of the epoch with the lowest
    validation loss.
    """

    def __init__(self, hidden: Sequence[int] = (64, 32), l2: float = 0.0, dropout: float = 0.0,
                 learning_rate: float = 1e-3, epochs: int = 100, batch_size: int = 128,
                 patience: int = 8, validation_fraction: float = 0.15, seed: int = 0) -> None:
        self.hidden = hidden
        self.l2 = l2
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed

    def fit(self, X, y):
        import keras
        from sklearn.model_selection import train_test_split

        X = np.asarray(X, dtype="float32")
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if not np.array_equal(self.classes_, [0, 1]):
            raise ValueError(f"y must hold the labels 0 and 1, got {self.classes_.tolist()}.")
        X_fit, X_val, y_fit, y_val = train_test_split(
            X, y, test_size=self.validation_fraction, stratify=y, random_state=self.seed)
        self.model_ = build_mlp(X.shape[1], self.hidden, l2=self.l2, dropout=self.dropout,
                                learning_rate=self.learning_rate, seed=self.seed)
        stop = keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True)
        hist = self.model_.fit(X_fit, y_fit.astype("float32"), validation_data=(
            X_val, y_val.astype("float32")), epochs=self.epochs, batch_size=self.batch_size,
            callbacks=[stop], verbose=0, shuffle=True)
        self.history_ = hist.history
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise not_fitted(self)
        X = np.asarray(X, dtype="float32")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns, got shape {X.shape}.")
        p = self.model_.predict(X, verbose=0, batch_size=4096).ravel().astype(float)
        return np.c_[1 - p, p]

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
