"""Tests of companion.cache."""

from __future__ import annotations

import pandas as pd
import pytest

from companion import cache


def test_memoise_off_without_env(monkeypatch):
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    calls = []
    for _ in range(2):
        cache.memoise("x", {"a": 1}, lambda: calls.append(1) or len(calls))
    assert len(calls) == 2


def test_memoise_reuses_and_separates_keys(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert cache.memoise("x", {"a": 1}, compute) == {"n": 1}
    assert cache.memoise("x", {"a": 1}, compute) == {"n": 1}
    assert cache.memoise("x", {"a": 2}, compute) == {"n": 2}
    assert len(list(tmp_path.glob("x-*.pkl"))) == 2
    with pytest.raises(TypeError, match="not JSON"):
        cache.memoise("x", {"a": object()}, compute)


def test_fingerprint_sees_values_and_columns():
    a = pd.DataFrame({"x": [1, 2]})
    assert cache.fingerprint(a) == cache.fingerprint(a.copy())
    assert cache.fingerprint(a) != cache.fingerprint(pd.DataFrame({"x": [1, 3]}))
    assert cache.fingerprint(a) != cache.fingerprint(pd.DataFrame({"y": [1, 2]}))
    assert len(cache.code_version()) == 64
