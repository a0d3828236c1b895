"""Exceptions shared by the companion's models.

:class:`NotFittedError` is what every model of the companion raises when it is used before
``fit``, as scikit-learn's estimators do.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as SklearnNotFittedError


class NotFittedError(SklearnNotFittedError, RuntimeError):
    """A model used before ``fit``.

    It is scikit-learn's :class:`sklearn.exceptions.NotFittedError`, so code that catches
    that (or ``ValueError``, or ``AttributeError``) catches it, and a ``RuntimeError``, the
    error the companion's models raised before version 0.2.0.
    """


def not_fitted(model: object, hint: str = "call fit first") -> NotFittedError:
    """The error for ``model`` used before ``fit``: "this <class> is not fitted yet; <hint>."."""
    return NotFittedError(f"this {type(model).__name__} is not fitted yet; {hint}.")
