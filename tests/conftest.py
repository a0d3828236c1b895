"""Shared fixtures: the synthetic shop and, when available, the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from companion import data
from companion.data import preprocessing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shop():
    """A small synthetic shop and its hidden truth."""
    return data.synthetic_shop(n_customers=150, n_products=120, months=12, seed=7,
                               return_truth=True)


@pytest.fixture(scope="session")
def clean_shop(shop):
    return preprocessing.clean_transactions(shop[0])


@pytest.fixture(scope="session")
def interactions(clean_shop):
    return preprocessing.to_interactions(clean_shop.transactions)


def real_data_dir() -> Path | None:
    """The folder with the real UCI files, if this machine has one."""
    for candidate in (os.environ.get(data.DATA_DIR_ENV), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "online_retail.parquet").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_dir():
    found = real_data_dir()
    if found is None:
        pytest.skip("the real UCI data are not on this machine")
    return found


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
    """No data directory and an empty cache, so nothing real can be found."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path
