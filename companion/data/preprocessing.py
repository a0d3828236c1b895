"""Cleaning invoice lines, building the interactions table, encoding ids and splitting in time.

Data flow: raw invoice lines (either Online Retail schema) → :func:`clean_transactions`
→ :func:`to_interactions` → a splitter (:func:`split_by_time`,
:func:`leave_last_basket_out`) → models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp
from companion._compat import renamed_argument
from companion.data import I_TO_II, RETAIL_I_SCHEMA, RETAIL_II_SCHEMA
from companion.exceptions import not_fitted

#: Snake-case names used from cleaning onwards, from the Online Retail II names.
CANONICAL = {
    "Invoice": "invoice",
    "StockCode": "stock_code",
    "Description": "description",
    "Quantity": "quantity",
    "InvoiceDate": "invoice_date",
    "Price": "price",
    "Customer ID": "customer_id",
    "Country": "country",
}

#: Stock codes that are not products: postage, carriage, fees, manual entries,
#: discounts, adjustments, tests, charity, padding and samples.
NON_PRODUCT_CODES = frozenset({
    "POST", "DOT", "C2", "C3", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK",
    "PADS", "ADJUST", "ADJUST2", "TEST001", "TEST002", "GIFT",
})
#: Gift vouchers (``gift_0001_10`` ...) are not products either.
NON_PRODUCT_PATTERN = re.compile(r"^gift_\d+_\d+$", re.IGNORECASE)

INTERACTIONS_SCHEMA = {"user_id": "integer", "item_id": "string", "timestamp": "datetime"}
#: The interactions of :func:`to_interactions` with their invoice and value, which the
#: behaviour, buy-till-you-die and churn functions need.
ORDER_INTERACTIONS_SCHEMA = {**INTERACTIONS_SCHEMA, "invoice": "string", "value": "float"}


def standardise_columns(raw: pd.DataFrame) -> pd.DataFrame:
    """Validate raw invoice lines in either Online Retail schema and rename to snake case.

    Returns a copy with columns ``invoice, stock_code, description, quantity,
    invoice_date, price, customer_id, country``. Raises a ValueError naming any column
    that is missing, misnamed or of the wrong kind.
    """
    if isinstance(raw, pd.DataFrame) and "InvoiceNo" in raw.columns:
        checked = check_frame(raw, RETAIL_I_SCHEMA, name="transactions",
                              allow_missing=("Description", "CustomerID"))
        checked = checked.rename(columns=I_TO_II)
    else:
        checked = check_frame(raw, RETAIL_II_SCHEMA, name="transactions",
                              allow_missing=("Description", "Customer ID"))
    return checked[list(CANONICAL)].rename(columns=CANONICAL)


def is_product_code(codes: pd.Series) -> pd.Series:
    """Return a boolean Series, True where a stock code names a real product."""
    codes = codes.astype("string")
    named = codes.str.upper().isin(NON_PRODUCT_CODES)
    voucher = codes.str.match(NON_PRODUCT_PATTERN.pattern, case=False)
    return ~(named | voucher.fillna(False)).fillna(False).astype(bool)


@dataclass
class CleanResult:
    """What :func:`clean_transactions` returns.

    Attributes
    ----------
    transactions
        Clean purchase lines in canonical columns; ``customer_id`` is an integer.
    returns
        Cancellation (or refund) lines of known customers and real products (negative
        quantities), kept aside for after-sales analysis.
    report
        One row per rule: ``rule``, ``description``, ``rows_removed``, ``rows_modified``
        and ``rows_remaining``.
    """

    transactions: pd.DataFrame
    returns: pd.DataFrame
    report: pd.DataFrame


def clean_transactions(raw: pd.DataFrame, *, refunds: object | None = None) -> CleanResult:
    """Apply the book's cleaning rules, in order, and report what each one did.

    1. ``strip_whitespace``: trim stray spaces in text columns (rows modified, none
       removed).
    2. ``missing_customer``: drop lines without a customer id; they cannot be tied to a
       person, so they tell nothing about retention.
    3. ``cancellations``: set aside lines whose invoice starts with ``C`` as returns
       (``refunds`` instead when the lines marked by ``refunds`` are the returns).
    4. ``non_positive``: drop lines with quantity <= 0 or price <= 0 (free samples,
       stock corrections and bad-debt adjustments).
    5. ``non_product``: drop postage, fees, manual entries, discounts, vouchers and tests
       (:data:`NON_PRODUCT_CODES`, :data:`NON_PRODUCT_PATTERN`).
    6. ``duplicates``: drop exact duplicate lines, which are double scans, not purchases.

    Parameters
    ----------
    raw
        Invoice lines in the Online Retail or Online Retail II schema.
    refunds
        Optional boolean mask, one value per line of ``raw``, for exports that mark returns
        otherwise than by a ``C`` invoice (negative quantities on ordinary orders, a status
        column; see :mod:`companion.shop`). The marked lines are set aside as returns, with
        their quantities made negative, and invoice numbers no longer matter.

    Returns
    -------
    CleanResult
    """
    frame = standardise_columns(raw)
    flags = None
    if refunds is not None:
        flags = pd.Series(refunds)
        if len(flags) != len(frame) or flags.isna().any():
            raise ValueError(f"refunds must hold one True/False per line: {len(frame)} "
                             f"lines, {len(flags)} values ({int(flags.isna().sum())} missing).")
        frame = frame.reset_index(drop=True)  # positions, whatever raw's index
        flags = pd.Series(flags.to_numpy(dtype=bool), index=frame.index)
    steps = [("input", "rows read", 0, 0, len(frame))]

    text = ["invoice", "stock_code", "description", "country"]
    stripped = frame[text].apply(lambda s: s.str.strip())
    changed = ((stripped != frame[text]) & frame[text].notna()).any(axis=1)
    frame[text] = stripped
    steps.append(("strip_whitespace", "trim leading and trailing spaces in text",
                  0, int(changed.sum()), len(frame)))

    def drop(mask: pd.Series, rule: str, description: str) -> pd.DataFrame:
        steps.append((rule, description, int(mask.sum()), 0, int((~mask).sum())))
        return frame[~mask]

    frame = drop(frame["customer_id"].isna(), "missing_customer", "no customer id")
    if flags is None:
        cancelled = frame["invoice"].str.upper().str.startswith("C")
        returns = frame[cancelled]
        frame = drop(cancelled, "cancellations",
                     "cancellation (C) invoices, set aside as returns")
    else:
        cancelled = flags.loc[frame.index]
        returns = frame[cancelled]
        returns = returns.assign(quantity=-returns["quantity"].abs())
        frame = drop(cancelled, "refunds", "refund lines, set aside as returns")
    frame = drop((frame["quantity"] <= 0) | (frame["price"] <= 0), "non_positive",
                 "quantity <= 0 or price <= 0")
    frame = drop(~is_product_code(frame["stock_code"]), "non_product",
                 "postage, fees, adjustments, vouchers and other non-product codes")
    frame = drop(frame.duplicated(keep="first"), "duplicates", "exact duplicate lines")

    def finish(part: pd.DataFrame) -> pd.DataFrame:
        part = part.copy()
        part["customer_id"] = part["customer_id"].astype("int64")
        return part.sort_values("invoice_date", kind="stable").reset_index(drop=True)

    returns = returns[is_product_code(returns["stock_code"]) & ~returns.duplicated()]
    report = pd.DataFrame(
        steps, columns=["rule", "description", "rows_removed", "rows_modified", "rows_remaining"]
    )
    return CleanResult(finish(frame), finish(returns), report)


def product_descriptions(transactions: pd.DataFrame) -> pd.Series:
    """Stock code -> description, from clean lines (the latest non-missing description).

    Returns a string Series indexed by ``stock_code``; products that never had a
    description get an empty string, so text features never see a missing value.
    """
    frame = check_frame(transactions, {"stock_code": "string", "invoice_date": "datetime"},
                        name="transactions")
    if "description" not in frame.columns:
        raise ValueError("transactions is missing column 'description'.")
    ordered = frame.sort_values("invoice_date", kind="stable")
    known = ordered.dropna(subset=["description"]).drop_duplicates("stock_code", keep="last")
    out = known.set_index("stock_code")["description"].astype("string")
    codes = pd.Index(frame["stock_code"].unique())
    return out.reindex(codes).fillna("").sort_index().rename("description")


def customer_countries(transactions: pd.DataFrame) -> pd.Series:
    """Customer id -> country of the customer's latest line (a customer may move)."""
    frame = check_frame(transactions, {"customer_id": "integer", "invoice_date": "datetime",
                                       "country": "string"}, name="transactions")
    latest = frame.sort_values("invoice_date", kind="stable").drop_duplicates(
        "customer_id", keep="last")
    return latest.set_index("customer_id")["country"].sort_index().rename("country")


def iqr_bounds(values: pd.Series, k: float = 1.5) -> tuple[float, float]:
    """Tukey's fences: ``(Q1 - k IQR, Q3 + k IQR)`` of ``values``."""
    series = pd.Series(values, dtype=float).dropna()
    if series.empty:
        raise ValueError("iqr_bounds needs at least one non-missing value.")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}.")
    q1, q3 = series.quantile([0.25, 0.75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def iqr_outliers(values: pd.Series, k: float = 1.5) -> pd.Series:
    """Boolean mask of the values outside :func:`iqr_bounds` (a row mask, not a cell mask)."""
    low, high = iqr_bounds(values, k)
    series = pd.Series(values)
    return (series < low) | (series > high)


#: Months of the Online Shoppers data in calendar order (there is no January or April).
SHOPPERS_MONTHS = ("Feb", "Mar", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SHOPPERS_LOG = ("Administrative", "Administrative_Duration", "Informational",
                 "Informational_Duration", "ProductRelated", "ProductRelated_Duration",
                 "PageValues")
_SHOPPERS_CATEGORICAL = ("Month", "VisitorType", "OperatingSystems", "Browser", "Region",
                         "TrafficType")


def shoppers_features(sessions: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Model-ready features and labels from the Online Shoppers sessions.

    Counts, durations and page values are heavy-tailed, so they enter as ``log1p``; rates
    stay as they are; month, visitor type and the four technical codes are one-hot
    encoded; ``Weekend`` becomes 0/1. Nothing is scaled here: scaling is learned, so it
    belongs inside the training split (a Pipeline). Returns ``(X, y)`` with ``y`` the 0/1
    ``Revenue`` label.
    """
    from companion.data import SHOPPERS_SCHEMA

    frame = check_frame(sessions, SHOPPERS_SCHEMA, name="sessions")
    unknown = set(frame["Month"]) - set(SHOPPERS_MONTHS)
    if unknown:
        raise ValueError(f"sessions column 'Month' has unknown values {sorted(unknown)}.")
    numeric = frame[["BounceRates", "ExitRates", "SpecialDay"]].astype(float)
    logs = np.log1p(frame[list(_SHOPPERS_LOG)].astype(float).clip(lower=0))
    logs.columns = [f"log1p_{c}" for c in logs.columns]
    cats = pd.get_dummies(frame[list(_SHOPPERS_CATEGORICAL)].astype(str), dtype=float)
    features = pd.concat([numeric, logs, cats,
                          frame[["Weekend"]].astype(float)], axis=1)
    return features, frame["Revenue"].astype(int).to_numpy()


def stratified_split(
    X: pd.DataFrame, y: np.ndarray, *, sizes: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Random train/validation/test split that keeps the class balance in every part.

    For data without a time order that matters (such as independent web sessions).
    Returns ``{"train": (X, y), "validation": (X, y), "test": (X, y)}``.
    """
    from sklearn.model_selection import train_test_split

    if len(sizes) != 3 or not np.isclose(sum(sizes), 1) or min(sizes) <= 0:
        raise ValueError(f"sizes must be three positive shares summing to 1, got {sizes}.")
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}.")
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=sizes[2], stratify=y, random_state=seed)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=sizes[1] / (sizes[0] + sizes[1]), stratify=y_rest,
        random_state=seed)
    return {"train": (X_train, y_train), "validation": (X_val, y_val), "test": (X_test, y_test)}


def to_interactions(transactions: pd.DataFrame) -> pd.DataFrame:
    """Turn clean purchase lines into the interactions table every model consumes.

    One row per (invoice, item): ``user_id`` (int), ``item_id`` (stock code),
    ``timestamp``, ``invoice``, ``quantity`` (summed over the invoice's lines) and
    ``value`` (quantity x price, summed), sorted by time.
    """
    schema = {"invoice": "string", "stock_code": "string", "quantity": "integer",
              "invoice_date": "datetime", "price": "float", "customer_id": "integer"}
    frame = check_frame(transactions, schema, name="transactions")
    frame = frame.assign(value=frame["quantity"] * frame["price"])
    out = (
        frame.groupby(["invoice", "customer_id", "stock_code", "invoice_date"],
                      sort=False, observed=True)[["quantity", "value"]]
        .sum()
        .reset_index()
        .rename(columns={"customer_id": "user_id", "stock_code": "item_id",
                         "invoice_date": "timestamp"})
    )
    out = out[["user_id", "item_id", "timestamp", "invoice", "quantity", "value"]]
    return out.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(
        drop=True
    )


def check_interactions(interactions: object, name: str = "interactions") -> pd.DataFrame:
    """Validate an interactions table (``user_id``, ``item_id``, ``timestamp`` at least)."""
    return check_frame(interactions, INTERACTIONS_SCHEMA, name=name)


def check_order_interactions(interactions: object, name: str = "interactions"
                             ) -> pd.DataFrame:
    """Validate an interactions table with invoices and values (``user_id``, ``item_id``,
    ``timestamp``, ``invoice``, ``value`` at least)."""
    return check_frame(interactions, ORDER_INTERACTIONS_SCHEMA, name=name)


class IdEncoder:
    """Map arbitrary ids to contiguous integers ``0 .. n-1`` and back.

    Like scikit-learn's ``OrdinalEncoder`` for one column, with an explicit policy for
    ids that were not seen by :meth:`fit`.

    Parameters
    ----------
    handle_unknown
        ``"error"`` (default) raises a ValueError naming unseen ids; ``"use_unknown"``
        maps them to :attr:`UNKNOWN` (-1), which models must treat explicitly.

    Attributes
    ----------
    classes_
        The known ids in code order (sorted by :meth:`fit`; ids added later by
        :meth:`extend` follow them).
    """

    UNKNOWN = -1

    def __init__(self, handle_unknown: str = "error") -> None:
        check_in(handle_unknown, ("error", "use_unknown"), name="handle_unknown")
        self.handle_unknown = handle_unknown

    def fit(self, ids: Iterable[object]) -> IdEncoder:
        """Learn the ids; they are sorted so that the codes are deterministic."""
        values = pd.Series(list(ids) if not isinstance(ids, pd.Series | np.ndarray) else ids)
        if values.empty:
            raise ValueError("cannot fit an IdEncoder on no ids.")
        if values.isna().any():
            raise ValueError(
                f"ids contain {int(values.isna().sum())} missing value(s); drop them first."
            )
        self.classes_ = pd.Index(pd.unique(values)).sort_values()
        return self

    def extend(self, ids: Iterable[object]) -> np.ndarray:
        """Append ids not seen before (in order of first appearance) and return their codes.

        Codes of known ids never change, so arrays indexed by code stay valid; the new ids
        get the next codes. Used to update a fitted model with new customers or items.
        """
        self._check_fitted()
        values = pd.Series(list(ids) if not isinstance(ids, pd.Series | np.ndarray) else ids)
        if values.isna().any():
            raise ValueError(
                f"ids contain {int(values.isna().sum())} missing value(s); drop them first."
            )
        fresh = pd.Index(pd.unique(values))
        fresh = fresh[self.classes_.get_indexer(fresh) < 0]
        start = len(self.classes_)
        if len(fresh):
            self.classes_ = self.classes_.append(fresh)
        return np.arange(start, start + len(fresh), dtype=np.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise not_fitted(self)

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.classes_)

    def transform(self, ids: Iterable[object]) -> np.ndarray:
        """Return the int64 codes of ``ids``; see ``handle_unknown`` for unseen ids."""
        self._check_fitted()
        values = pd.Index(list(ids) if not isinstance(ids, pd.Series | np.ndarray) else ids)
        codes = self.classes_.get_indexer(values).astype(np.int64)
        unknown = codes < 0
        if unknown.any() and self.handle_unknown == "error":
            examples = list(pd.unique(values[unknown]))[:5]
            raise ValueError(
                f"{int(unknown.sum())} id(s) were not seen during fit, e.g. {examples}. "
                "Use handle_unknown='use_unknown' to map them to -1."
            )
        return codes

    def fit_transform(self, ids: Iterable[object]) -> np.ndarray:
        """Fit on ``ids`` and return their codes."""
        return self.fit(ids).transform(ids)

    def inverse_transform(self, codes: Iterable[int]) -> np.ndarray:
        """Return the original ids of ``codes``; codes outside ``0 .. n-1`` raise."""
        self._check_fitted()
        codes = np.asarray(list(codes) if not isinstance(codes, np.ndarray) else codes)
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}.")
        bad = (codes < 0) | (codes >= len(self.classes_))
        if bad.any():
            raise ValueError(
                f"codes {codes[bad][:5].tolist()} are outside 0..{len(self.classes_) - 1}."
            )
        return self.classes_.to_numpy()[codes]


@dataclass
class Split:
    """A train / validation / test split of an interactions table.

    Attributes
    ----------
    train, validation, test
        The three parts; ``validation`` may be empty.
    description
        How the split was made, for tables and captions.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    description: str

    def sizes(self) -> pd.DataFrame:
        """Rows, users, items and date range of each part."""
        rows = []
        for name in ("train", "validation", "test"):
            part = getattr(self, name)
            rows.append({
                "part": name,
                "rows": len(part),
                "users": part["user_id"].nunique(),
                "items": part["item_id"].nunique(),
                "first": part["timestamp"].min() if len(part) else pd.NaT,
                "last": part["timestamp"].max() if len(part) else pd.NaT,
            })
        return pd.DataFrame(rows).set_index("part")


def split_by_time(
    interactions: pd.DataFrame,
    cutoff: object = None,
    *,
    validation_days: int | None = None,
    test_days: int | None = None,
    test_start: object = None,
) -> Split:
    """Split at a global time cutoff, with an optional validation window before it.

    ``train`` holds every interaction before ``cutoff - validation_days``,
    ``validation`` those in ``[cutoff - validation_days, cutoff)`` and ``test``
    those in ``[cutoff, cutoff + test_days)`` (to the end when ``test_days`` is
    None). Because the cut is one instant for everybody, no part contains anything that
    happened after a later part began: models trained on ``train`` never see the future.
    ``test_start`` is the old name of ``cutoff`` (it works for one release, with a
    warning).
    """
    cutoff = renamed_argument("split_by_time", "test_start", "cutoff", test_start, cutoff,
                              required=True)
    frame = check_interactions(interactions)
    cutoff = check_timestamp(cutoff, name="cutoff")
    first, last = frame["timestamp"].min(), frame["timestamp"].max()
    if not first < cutoff <= last:
        raise ValueError(
            f"cutoff={cutoff} is outside the data, which runs from {first} to {last}."
        )
    val_start = cutoff
    if validation_days is not None:
        val_start = cutoff - pd.Timedelta(days=check_positive_int(validation_days,
                                                                  name="validation_days"))
        if val_start <= first:
            raise ValueError(
                f"validation_days={validation_days} puts the validation start {val_start} "
                f"before the first interaction {first}; no training data would be left."
            )
    end = None
    if test_days is not None:
        end = cutoff + pd.Timedelta(days=check_positive_int(test_days, name="test_days"))
    ts = frame["timestamp"]
    test_mask = (ts >= cutoff) & (ts < end) if end is not None else ts >= cutoff
    parts = (frame[ts < val_start], frame[(ts >= val_start) & (ts < cutoff)], frame[test_mask])
    parts = tuple(p.reset_index(drop=True) for p in parts)
    desc = f"global time split: test from {cutoff.date()}"
    if validation_days:
        desc += f", validation from {val_start.date()}"
    if end is not None:
        desc += f", test until {end.date()}"
    return Split(*parts, description=desc)


def leave_last_basket_out(interactions: pd.DataFrame, *, validation: bool = False) -> Split:
    """Hold out each user's last basket (and, optionally, the one before for validation).

    A basket is everything a user bought at one timestamp. Users with too few baskets
    to hold any out stay entirely in ``train``. Within each user, every training
    interaction happened strictly before every held-out one. Across users this split
    does *not* respect time: one user's test basket may predate another's training data,
    which is why the book's headline numbers use :func:`split_by_time`.
    """
    frame = check_interactions(interactions)
    basket_rank = (
        frame.groupby("user_id")["timestamp"].rank(method="dense", ascending=False)
    ).astype(int)
    n_baskets = frame.groupby("user_id")["timestamp"].transform("nunique")
    needed = 3 if validation else 2
    eligible = n_baskets >= needed
    test_mask = eligible & (basket_rank == 1)
    val_mask = eligible & (basket_rank == 2) if validation else pd.Series(False, frame.index)
    train = frame[~test_mask & ~val_mask].reset_index(drop=True)
    desc = "leave-last-basket-out per user" + (" with the previous basket for validation"
                                               if validation else "")
    return Split(train, frame[val_mask].reset_index(drop=True),
                 frame[test_mask].reset_index(drop=True), description=desc)


def check_no_future_leakage(split: Split, *, per_user: bool = False) -> None:
    """Raise a ValueError if any training interaction happens after a held-out one.

    With ``per_user=False`` the check is global: the last training timestamp must come
    strictly before the first validation or test timestamp (and validation before test).
    With ``per_user=True`` it is done within each user, which is the guarantee of
    :func:`leave_last_basket_out`.
    """
    later = [p for p in (split.validation, split.test) if len(p)]
    if not per_user:
        chain = [split.train, *later]
        for earlier, after in zip(chain, chain[1:], strict=False):
            if len(earlier) and earlier["timestamp"].max() >= after["timestamp"].min():
                raise ValueError(
                    f"leakage: a part ends at {earlier['timestamp'].max()} but the next "
                    f"starts at {after['timestamp'].min()}."
                )
        return
    last_train = split.train.groupby("user_id")["timestamp"].max()
    for part in later:
        first_held = part.groupby("user_id")["timestamp"].min()
        joined = pd.concat([last_train.rename("train"), first_held.rename("held")],
                           axis=1, join="inner")
        leaks = joined[joined["train"] >= joined["held"]]
        if len(leaks):
            raise ValueError(
                f"leakage: {len(leaks)} user(s) have training data at or after their held-out "
                f"data, e.g. user {leaks.index[0]}."
            )
