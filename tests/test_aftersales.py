"""Tests of companion.retention.aftersales on hand-made orders and the synthetic shop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.retention import aftersales


def _lines(rows):
    frame = pd.DataFrame(rows, columns=["invoice", "stock_code", "quantity", "invoice_date",
                                        "price", "customer_id"])
    frame["invoice_date"] = pd.to_datetime(frame["invoice_date"])
    return frame.assign(description="x", country="United Kingdom")


@pytest.fixture
def orders():
    sales = _lines([
        ("1", "A", 10, "2011-01-01", 1.0, 1), ("1", "B", 5, "2011-01-01", 2.0, 1),
        ("2", "A", 4, "2011-01-10", 1.0, 2), ("3", "A", 6, "2011-06-01", 1.0, 1),
    ])
    returns = _lines([
        ("C1", "A", -5, "2011-01-20", 1.0, 1),   # customer 1 returns half of line 1's A
        ("C2", "B", -5, "2011-09-01", 2.0, 1),   # too late for line 1's B (> 90 days)
    ])
    return sales, returns


def test_return_rates_by_hand(orders):
    sales, returns = orders
    rates = aftersales.return_rates(sales, returns)
    assert rates.loc["A", "units_sold"] == 20 and rates.loc["A", "units_returned"] == 5
    assert rates.loc["A", "return_rate"] == pytest.approx(0.25)
    assert rates.loc["B", "value_returned"] == pytest.approx(10.0)
    by_customer = aftersales.return_rates(sales, returns, by="customer_id")
    assert by_customer.loc[2, "units_returned"] == 0


def test_labels_by_hand(orders):
    sales, returns = orders
    labels = aftersales.label_returned_lines(sales, returns, horizon_days=90)
    # line 0 (A, customer 1) is returned 19 days later; B's return comes after 243 days;
    # customer 2 returned nothing; line 3 comes after the return
    assert labels.tolist() == [1, 0, 0, 0]


def test_dataset_is_time_honest():
    tx = data.synthetic_shop(n_customers=300, n_products=100, months=24, seed=2)
    clean = preprocessing.clean_transactions(tx)
    sales, returns = clean.transactions, clean.returns
    start = sales["invoice_date"].min() + pd.Timedelta(days=200)
    end = start + pd.Timedelta(days=60)
    X, y = aftersales.cancellation_dataset(sales, returns, start, end)
    assert list(X.columns) == list(aftersales.FEATURES)
    assert len(X) == len(y) == ((sales["invoice_date"] >= start)
                                & (sales["invoice_date"] < end)).sum()
    # histories read nothing from the period itself: altering its returns changes nothing
    later = returns["invoice_date"] >= start
    altered = pd.concat([returns[~later], returns[later].assign(quantity=-999)])
    X2, _ = aftersales.cancellation_dataset(sales, altered, start, end)
    pd.testing.assert_frame_equal(X, X2)
    assert np.isin(y.unique(), [0, 1]).all()


def test_bad_input(orders):
    sales, returns = orders
    with pytest.raises(ValueError, match="by"):
        aftersales.return_rates(sales, returns, by="country")
    with pytest.raises(ValueError, match="sales only"):
        aftersales.return_rates(pd.concat([sales, returns]), returns)
    with pytest.raises(ValueError, match="'price'"):
        aftersales.return_rates(sales.drop(columns="price"), returns)
    with pytest.raises(ValueError, match="no history"):
        aftersales.cancellation_dataset(sales, returns, "2010-01-01", "2011-02-01")
    with pytest.raises(ValueError, match="runs past the end"):
        aftersales.cancellation_dataset(sales, returns, "2011-01-05", "2011-05-01")
    with pytest.raises(ValueError, match="must be before"):
        aftersales.cancellation_dataset(sales, returns, "2011-02-01", "2011-01-05")
