"""Foundations: the maths and training machinery of chapters 3 and 4.

Losses, optimisers, initialisation, metrics, evaluation with intervals, embeddings and
the one multilayer perceptron the chapters share. Nothing here knows about recommenders.

Its modules:

losses
    Teaching implementations of the six losses of chapter 3, with their gradients.
optim
    Teaching implementations of optimisers: gradient descent, momentum and Adam, Newton's
    method, conjugate gradients and a budget-constrained allocation.
nn
    Weight initialisation, what it does to signals in a deep network, and early stopping.
mlp
    A Keras multilayer perceptron for tabular classification, shared by the chapters.
metrics
    Classification and regression metrics, written out so that each formula is visible.
evaluation
    Evaluation protocols: bootstrap confidence intervals, paired comparisons and tables.
embeddings
    Skip-gram embeddings with negative sampling (word2vec, item2vec / prod2vec) in Keras.
keras_helpers
    Seeding, and scoring a Keras model in chunks without retracing.
"""
