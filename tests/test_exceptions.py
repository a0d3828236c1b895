"""One error for a model used before ``fit``: scikit-learn's, and the old RuntimeError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sklearn.exceptions

from companion.exceptions import not_fitted

ROOT = Path(__file__).resolve().parents[1] / "companion"


class Model:
    pass


def test_not_fitted_is_sklearns_error_and_a_runtime_error():
    err = not_fitted(Model())
    assert str(err) == "this Model is not fitted yet; call fit first."
    for kind in (sklearn.exceptions.NotFittedError, RuntimeError, ValueError,
                 AttributeError):
        with pytest.raises(kind):
            raise err
    assert "fit(texts)" in str(not_fitted(Model(), "call fit(texts) first"))


def test_no_model_raises_anything_else_when_not_fitted():
    other = re.compile(r"raise (?!NotFittedError|not_fitted)\w+\([^)]*not fitted", re.S)
    found = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
             if other.search(p.read_text(encoding="utf-8"))]
    assert not found, found
    assert other.search('raise RuntimeError("this X is not fitted yet")')
