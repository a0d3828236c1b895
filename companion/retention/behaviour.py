"""Descriptive customer behaviour: activity per month, repeat purchase and cohort retention.

All functions take the interactions table of
:func:`companion.data.preprocessing.to_interactions` (``user_id``, ``item_id``,
``timestamp``, ``invoice``, ``value``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from companion.data.preprocessing import check_order_interactions


def monthly_activity(interactions: pd.DataFrame) -> pd.DataFrame:
    """Customers, new customers, invoices and revenue per calendar month.

    Returns a frame indexed by month (a ``Period``) with columns ``customers``,
    ``new_customers``, ``returning_customers``, ``invoices`` and ``revenue``.
    """
    frame = check_order_interactions(interactions)
    month = frame["timestamp"].dt.to_period("M")
    first_month = frame.groupby("user_id")["timestamp"].transform("min").dt.to_period("M")
    grouped = frame.assign(month=month, new=(month == first_month))
    out = grouped.groupby("month").agg(
        customers=("user_id", "nunique"),
        invoices=("invoice", "nunique"),
        revenue=("value", "sum"),
    )
    new = grouped[grouped["new"]].groupby("month")["user_id"].nunique()
    out["new_customers"] = new.reindex(out.index, fill_value=0).astype(int)
    out["returning_customers"] = out["customers"] - out["new_customers"]
    return out[["customers", "new_customers", "returning_customers", "invoices", "revenue"]]


def repeat_purchase_rate(interactions: pd.DataFrame) -> float:
    """Share of customers who placed more than one invoice."""
    frame = check_order_interactions(interactions)
    invoices = frame.groupby("user_id")["invoice"].nunique()
    return float((invoices > 1).mean())


def cohort_retention(interactions: pd.DataFrame) -> pd.DataFrame:
    """Monthly cohort retention matrix.

    A customer's cohort is the month of their first purchase. Entry ``(c, k)`` is the
    share of cohort ``c`` who bought in month ``c + k``; column ``0`` is 1 by
    definition. Cells beyond the end of the data are missing (NaN), not zero. The cohort
    sizes are in ``result.attrs["cohort_size"]``.

    .. math::  r_{c,k} = \\frac{|\\{u \\in C_c : u \\text{ buys in month } c+k\\}|}{|C_c|}
    """
    frame = check_order_interactions(interactions)
    ts = frame["timestamp"]
    month = (ts.dt.year * 12 + ts.dt.month - 1).to_numpy()  # months since year 0
    cohort = pd.Series(month).groupby(frame["user_id"].to_numpy()).transform("min").to_numpy()
    active = pd.DataFrame({"cohort": cohort, "age": month - cohort,
                           "user_id": frame["user_id"].to_numpy()})
    counts = active.drop_duplicates().groupby(["cohort", "age"])["user_id"].count()
    matrix = counts.unstack("age")
    sizes = matrix[0]
    matrix = matrix.div(sizes, axis=0)
    horizon = month.max() - matrix.index.to_numpy()
    ages = matrix.columns.to_numpy()
    beyond = ages[None, :] > horizon[:, None]
    matrix = matrix.where(~beyond).where(matrix.notna() | beyond, 0.0)
    periods = pd.PeriodIndex(
        [pd.Period(year=int(c) // 12, month=int(c) % 12 + 1, freq="M") for c in matrix.index]
    )
    matrix.index = periods
    sizes.index = periods
    matrix.index.name = "cohort"
    matrix.columns.name = "months since first purchase"
    matrix.attrs["cohort_size"] = sizes.astype(int)
    return matrix


def retention_curve(matrix: pd.DataFrame) -> pd.Series:
    """Average retention by months since first purchase, weighted by cohort size.

    Each age averages only the cohorts old enough to be observed at that age.
    """
    sizes = matrix.attrs.get("cohort_size")
    if sizes is None:
        raise ValueError("matrix has no attrs['cohort_size']; build it with cohort_retention.")
    weights = matrix.notna().mul(sizes, axis=0)
    curve = (matrix.fillna(0.0).mul(sizes, axis=0)).sum() / weights.sum()
    curve.name = "retention"
    return curve


def rfm_features(interactions: pd.DataFrame, cutoff: object) -> pd.DataFrame:
    """Recency, frequency and monetary value of every customer seen before ``cutoff``.

    Only interactions strictly before ``cutoff`` are used, so the features never see the
    future. Columns: ``recency_days`` (days from the last purchase to the cutoff),
    ``frequency`` (distinct invoices), ``monetary`` (total value), ``tenure_days`` (days
    from the first purchase to the cutoff) and ``items`` (distinct products).
    """
    from companion._checks import check_timestamp

    frame = check_order_interactions(interactions)
    cut = check_timestamp(cutoff, name="cutoff")
    first, last = frame["timestamp"].min(), frame["timestamp"].max()
    if not first < cut <= last + pd.Timedelta(days=1):
        raise ValueError(f"cutoff={cut} is outside the data, which runs from {first} to {last}.")
    past = frame[frame["timestamp"] < cut]
    grouped = past.groupby("user_id")
    out = pd.DataFrame({
        "recency_days": (cut - grouped["timestamp"].max()).dt.total_seconds() / 86400,
        "frequency": grouped["invoice"].nunique(),
        "monetary": grouped["value"].sum(),
        "tenure_days": (cut - grouped["timestamp"].min()).dt.total_seconds() / 86400,
        "items": grouped["item_id"].nunique(),
    })
    out.index.name = "user_id"
    return out


def future_value(interactions: pd.DataFrame, cutoff: object, horizon_days: int) -> pd.Series:
    """Total value each customer spends in ``[cutoff, cutoff + horizon_days)`` (0 if none).

    Indexed by every customer seen before ``cutoff``, in the same (sorted) order as
    :func:`rfm_features`; raises if the data end before the horizon does.
    """
    from companion._checks import check_positive_int, check_timestamp

    frame = check_order_interactions(interactions)
    cut = check_timestamp(cutoff, name="cutoff")
    end = cut + pd.Timedelta(days=check_positive_int(horizon_days, name="horizon_days"))
    if end > frame["timestamp"].max() + pd.Timedelta(days=1):
        raise ValueError(
            f"horizon_days={horizon_days} reaches {end.date()}, past the end of the data "
            f"({frame['timestamp'].max().date()})."
        )
    known = np.sort(frame.loc[frame["timestamp"] < cut, "user_id"].unique())
    window = frame[(frame["timestamp"] >= cut) & (frame["timestamp"] < end)]
    spend = window.groupby("user_id")["value"].sum()
    return spend.reindex(pd.Index(known, name="user_id"), fill_value=0.0).rename("future_value")


#: RFM segment rules, checked in order on 1-5 recency and frequency scores
RFM_SEGMENTS = (
    ("champions", lambda r, f: (r >= 4) & (f >= 4)),
    ("loyal", lambda r, f: (r >= 3) & (f >= 3)),
    ("new or promising", lambda r, f: (r >= 4) & (f <= 2)),
    ("at risk", lambda r, f: (r <= 2) & (f >= 3)),
    ("hibernating", lambda r, f: (r <= 2) & (f <= 2)),
    ("needs attention", lambda r, f: np.ones_like(r, dtype=bool)),
)


def rfm_segments(rfm: pd.DataFrame) -> pd.DataFrame:
    """Quintile scores (1-5, 5 best) and a named segment for each customer.

    Recency scores are reversed (recent buyers score 5). Frequency is ranked before cutting
    so that ties (many customers with one invoice) do not break the quintiles. Segments
    follow :data:`RFM_SEGMENTS`.
    """
    from companion._checks import check_frame

    frame = check_frame(rfm, {"recency_days": "number", "frequency": "number",
                              "monetary": "number"}, name="rfm")
    if len(frame) < 5:
        raise ValueError(f"rfm has {len(frame)} customers; quintiles need at least 5.")

    def score(values: pd.Series, reverse: bool = False) -> np.ndarray:
        ranks = values.rank(method="first", ascending=not reverse)
        return pd.qcut(ranks, 5, labels=False).to_numpy() + 1

    r = score(frame["recency_days"], reverse=True)
    f = score(frame["frequency"])
    m = score(frame["monetary"])
    segment = np.select([rule(r, f) for _, rule in RFM_SEGMENTS],
                        [n for n, _ in RFM_SEGMENTS], default="needs attention")
    return pd.DataFrame({"R": r, "F": f, "M": m, "segment": segment}, index=frame.index)


def segment_profiles(features: pd.DataFrame, segments: pd.Series, **extra: pd.Series
                     ) -> pd.DataFrame:
    """Size and median features per segment (plus the mean of each ``extra`` series)."""
    if not features.index.equals(segments.index):
        raise ValueError("features and segments must share the same customer index.")
    grouped = features.groupby(segments)
    table = grouped.median(numeric_only=True).add_prefix("median ")
    table.insert(0, "customers", grouped.size())
    for name, series in extra.items():
        table[name] = series.reindex(features.index).groupby(segments).mean()
    return table.sort_values("customers", ascending=False)


def characteristic_items(interactions: pd.DataFrame, groups: pd.Series, n: int = 3,
                         min_customers: int = 10) -> pd.Series:
    """For each group of customers, the ``n`` items most over-represented in it.

    Over-representation is the share of the group's customers who bought the item divided
    by the share of all customers who did (lift), among items bought by at least
    ``min_customers`` customers of the group.
    """
    frame = check_order_interactions(interactions)
    pairs = frame[["user_id", "item_id"]].drop_duplicates()
    pairs = pairs[pairs["user_id"].isin(groups.index)]
    pairs = pairs.assign(group=groups.reindex(pairs["user_id"]).to_numpy())
    overall = pairs.groupby("item_id").size() / groups.size
    out = {}
    for group, part in pairs.groupby("group"):
        counts = part.groupby("item_id").size()
        counts = counts[counts >= min_customers]
        lift = (counts / (groups == group).sum()) / overall.reindex(counts.index)
        out[group] = list(lift.sort_values(ascending=False).index[:n])
    return pd.Series(out, name="characteristic items")


def period_retention(interactions: pd.DataFrame, start: object, middle: object,
                     end: object) -> pd.Series:
    """Three measures of how the customers of one period stay with the shop in the next.

    The customers who bought in ``[start, middle)`` are followed into ``[middle, end)``:
    ``customers`` is the share of them who bought again (customer retention),
    ``revenue`` what they spent in the second period over what they spent in the first
    (net revenue retention, which can exceed 1) and ``invoices`` the same ratio for
    their invoices. The three are forms of "stickiness" and need not agree.
    """
    from companion._checks import check_timestamp

    frame = check_order_interactions(interactions)
    a, b, c = (check_timestamp(t, name=n) for t, n in
               ((start, "start"), (middle, "middle"), (end, "end")))
    if not a < b < c:
        raise ValueError(f"need start < middle < end, got {a}, {b}, {c}.")
    ts = frame["timestamp"]
    first = frame[(ts >= a) & (ts < b)]
    if first.empty:
        raise ValueError(f"no interactions in the first period [{a}, {b}).")
    second = frame[(ts >= b) & (ts < c) & frame["user_id"].isin(first["user_id"])]
    return pd.Series({
        "customers": second["user_id"].nunique() / first["user_id"].nunique(),
        "revenue": second["value"].sum() / first["value"].sum(),
        "invoices": second["invoice"].nunique() / first["invoice"].nunique(),
    }, name="retention")


def basket_overlap(interactions: pd.DataFrame, min_baskets: int = 3) -> pd.DataFrame:
    """How much of each customer's last basket repeats an earlier one, by position.

    For every customer with at least ``min_baskets`` invoices (ordered by time), the share
    of the distinct products of the last invoice that were also in the one before it
    (``previous``) and in the very first one (``first``). If purchase order carried no
    information, the two would be equal on average.
    """
    from companion._checks import check_positive_int

    check_positive_int(min_baskets, name="min_baskets")
    if min_baskets < 3:
        raise ValueError(f"min_baskets must be at least 3 (last, previous, first distinct), "
                         f"got {min_baskets}.")
    frame = check_order_interactions(interactions)[["user_id", "item_id", "invoice", "timestamp"]]
    order = (frame.groupby(["user_id", "invoice"])["timestamp"].min()
             .groupby(level=0).rank(method="first").astype(int).rename("position"))
    frame = frame.join(order, on=["user_id", "invoice"]).drop_duplicates(
        ["user_id", "item_id", "position"])
    n = frame.groupby("user_id")["position"].transform("max")
    frame = frame[n >= min_baskets].assign(n=n[n >= min_baskets])
    last = frame[frame["position"] == frame["n"]][["user_id", "item_id"]]
    out = {}
    for name, mask in (("previous", frame["position"] == frame["n"] - 1),
                       ("first", frame["position"] == 1)):
        seen = frame[mask][["user_id", "item_id"]].assign(hit=1.0)
        hits = last.merge(seen, on=["user_id", "item_id"], how="left")["hit"].fillna(0.0)
        out[name] = hits.groupby(last["user_id"].to_numpy()).mean()
    table = pd.DataFrame(out)
    table.index.name = "user_id"
    return table
