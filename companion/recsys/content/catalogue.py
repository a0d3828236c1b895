"""The catalogue as known at a cutoff, and the checks and sets shared by the content models."""

from __future__ import annotations

import pandas as pd

from companion._checks import check_frame, check_timestamp


def product_catalogue(transactions: pd.DataFrame, cutoff, until=None) -> pd.DataFrame:
    """Products known at ``cutoff``, plus those first sold in ``[cutoff, until)``.

    For a product sold before ``cutoff`` the description and price are those of its last
    line before ``cutoff``; for a product first sold in ``[cutoff, until)`` they are those
    of its first line (its launch text and list price, which a shop knows before anyone
    buys). Nothing after ``until`` (default ``cutoff``) is read.

    Returns a frame indexed by ``stock_code`` with ``description`` (empty string when
    unknown), ``price`` and ``first_sold``, sorted by stock code.
    """
    frame = check_frame(transactions, {"stock_code": "string", "invoice_date": "datetime",
                                       "price": "float"}, name="transactions")
    if "description" not in frame.columns:
        raise ValueError("transactions is missing column 'description'.")
    cutoff = check_timestamp(cutoff, name="cutoff")
    until = cutoff if until is None else check_timestamp(until, name="until")
    if until < cutoff:
        raise ValueError(f"until={until} is before cutoff={cutoff}.")
    frame = frame[frame["invoice_date"] < until].sort_values("invoice_date", kind="stable")
    if frame.empty:
        raise ValueError(f"transactions have no line before {until}.")
    first = frame.groupby("stock_code")["invoice_date"].min()
    before = frame[frame["invoice_date"] < cutoff]
    known = before.dropna(subset=["description"]).drop_duplicates("stock_code", keep="last")
    warm = pd.DataFrame({
        "description": known.set_index("stock_code")["description"],
        "price": before.drop_duplicates("stock_code", keep="last").set_index(
            "stock_code")["price"]})
    later = frame[frame["invoice_date"] >= cutoff]
    later = later[~later["stock_code"].isin(warm.index)]
    launch = later.dropna(subset=["description"]).drop_duplicates("stock_code", keep="first")
    cold = pd.DataFrame({
        "description": launch.set_index("stock_code")["description"],
        "price": later.drop_duplicates("stock_code", keep="first").set_index(
            "stock_code")["price"]})
    out = pd.concat([warm, cold])
    out["description"] = out["description"].fillna("").astype("string")
    out["first_sold"] = first.reindex(out.index)
    out.index.name = "stock_code"
    return out.sort_index()


def check_item_text(item_text: object, name: str = "item_text") -> pd.Series:
    if not isinstance(item_text, pd.Series):
        raise TypeError(f"{name} must be a pandas Series (item id -> description), "
                        f"got {type(item_text).__name__}.")
    if item_text.index.has_duplicates:
        dup = item_text.index[item_text.index.duplicated()][:3].tolist()
        raise ValueError(f"{name} has duplicate item ids, e.g. {dup}.")
    bad = item_text.dropna()
    bad = bad[~bad.map(lambda v: isinstance(v, str))]
    if len(bad):
        raise ValueError(f"{name} must hold text; e.g. item {bad.index[0]!r} has "
                         f"{bad.iloc[0]!r}.")
    return item_text.fillna("").astype(str)


def item_sets(frame: pd.DataFrame, by: str) -> pd.Series:
    """``by`` value -> set of item ids (a Series of Python sets, sorted by key)."""
    out = pd.Series({key: set(items) for key, items in frame.groupby(by)["item_id"]},
                    dtype=object)
    out.index.name = by
    return out.sort_index()
