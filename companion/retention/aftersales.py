"""After-sales: return rates and a time-honest model of which order lines get returned.

Online Retail records a return as a cancellation invoice (number starting with ``C``)
with a negative quantity; :func:`companion.data.preprocessing.clean_transactions` sets these
lines aside as ``returns``. A cancellation does not say which sale it cancels, so a sale
line counts as *returned* when the same customer cancels the same product within
``horizon_days`` after buying it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp

_SCHEMA = {"invoice": "string", "stock_code": "string", "quantity": "number",
           "invoice_date": "datetime", "price": "number", "customer_id": "integer",
           "country": "string"}
FEATURES = ("log_quantity", "log_price", "log_value", "basket_lines", "is_uk",
            "customer_lines", "customer_return_rate", "product_lines", "product_return_rate")


def _check(transactions: object, returns: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    sales = check_frame(transactions, _SCHEMA, name="transactions")
    ret = check_frame(returns, _SCHEMA, name="returns")
    if (sales["quantity"] <= 0).any():
        raise ValueError("transactions must hold sales only (quantity > 0); pass the cleaned "
                         "transactions and their returns separately.")
    return sales, ret


def return_rates(transactions: pd.DataFrame, returns: pd.DataFrame, by: str = "stock_code",
                 min_lines: int = 1) -> pd.DataFrame:
    """Units sold and returned per product (``by="stock_code"``) or customer.

    Columns: ``lines_sold``, ``units_sold``, ``units_returned``, ``value_returned`` and
    ``return_rate`` (units returned over units sold), for groups with at least
    ``min_lines`` sale lines, sorted by ``value_returned``.
    """
    check_in(by, ("stock_code", "customer_id"), name="by")
    check_positive_int(min_lines, name="min_lines")
    sales, ret = _check(transactions, returns)
    sold = sales.groupby(by).agg(lines_sold=("quantity", "size"), units_sold=("quantity", "sum"))
    back = ret.assign(units=ret["quantity"].abs(), value=ret["quantity"].abs() * ret["price"])
    back = back.groupby(by).agg(units_returned=("units", "sum"), value_returned=("value", "sum"))
    table = sold.join(back, how="left").fillna({"units_returned": 0, "value_returned": 0.0})
    table["return_rate"] = table["units_returned"] / table["units_sold"]
    table = table[table["lines_sold"] >= min_lines]
    return table.sort_values("value_returned", ascending=False)


def label_returned_lines(transactions: pd.DataFrame, returns: pd.DataFrame,
                         horizon_days: int = 90) -> pd.Series:
    """1 for each sale line whose customer cancels the same product within the horizon."""
    check_positive_int(horizon_days, name="horizon_days")
    sales, ret = _check(transactions, returns)
    keys = ["customer_id", "stock_code"]
    left = sales[keys + ["invoice_date"]].reset_index().sort_values("invoice_date")
    right = (ret[keys + ["invoice_date"]].rename(columns={"invoice_date": "return_date"})
             .sort_values("return_date"))
    matched = pd.merge_asof(left, right, left_on="invoice_date", right_on="return_date",
                            by=keys, direction="forward",
                            tolerance=pd.Timedelta(days=horizon_days))
    label = matched.set_index("index")["return_date"].notna().astype(np.int8)
    return label.reindex(sales.index).rename("returned")


def cancellation_dataset(transactions: pd.DataFrame, returns: pd.DataFrame, start: object,
                         end: object, horizon_days: int = 90
                         ) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels of the sale lines dated in ``[start, end)``.

    Customer and product histories (lines bought, share of units returned) come from data
    strictly before ``start``; the label looks ``horizon_days`` past each line, so the data
    must reach ``end + horizon_days``.
    """
    sales, ret = _check(transactions, returns)
    lo, hi = check_timestamp(start, name="start"), check_timestamp(end, name="end")
    if not lo < hi:
        raise ValueError(f"start={lo.date()} must be before end={hi.date()}.")
    first, last = sales["invoice_date"].min(), sales["invoice_date"].max()
    if lo <= first:
        raise ValueError(f"start={lo.date()} leaves no history: the data begin on "
                         f"{first.date()}.")
    if hi + pd.Timedelta(days=horizon_days) > last + pd.Timedelta(days=1):
        raise ValueError(f"end={hi.date()} plus horizon_days={horizon_days} runs past the end "
                         f"of the data ({last.date()}).")
    labels = label_returned_lines(sales, ret, horizon_days)
    past_sales = sales[sales["invoice_date"] < lo]
    past_rates = {by: return_rates(past_sales, ret[ret["invoice_date"] < lo], by=by)
                  for by in ("customer_id", "stock_code")}
    lines = sales[(sales["invoice_date"] >= lo) & (sales["invoice_date"] < hi)]
    value = lines["quantity"] * lines["price"]
    cust, prod = past_rates["customer_id"], past_rates["stock_code"]
    features = pd.DataFrame({
        "log_quantity": np.log1p(lines["quantity"]),
        "log_price": np.log1p(lines["price"]),
        "log_value": np.log1p(value),
        "basket_lines": lines.groupby("invoice")["invoice"].transform("size"),
        "is_uk": (lines["country"] == "United Kingdom").astype(float),
        "customer_lines": lines["customer_id"].map(cust["lines_sold"]).fillna(0.0),
        "customer_return_rate": lines["customer_id"].map(cust["return_rate"]),
        "product_lines": lines["stock_code"].map(prod["lines_sold"]).fillna(0.0),
        "product_return_rate": lines["stock_code"].map(prod["return_rate"]),
    }, index=lines.index).astype(float)
    return features, labels.loc[lines.index]
