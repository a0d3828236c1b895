"""Stage two's inputs: features of each (customer, candidate) pair, computed before a cutoff.

:class:`~companion.recsys.twostage.FeatureBuilder` and
:func:`~companion.recsys.twostage.ranker_features` build the pair, item, customer,
co-purchase, season and generator features;
:data:`~companion.recsys.twostage.FEATURE_GROUPS` and
:func:`~companion.recsys.twostage.feature_groups` name the groups the ablation of chapter
5.6 removes one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_frame, check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions

__all__ = ["FEATURE_GROUPS", "HALF_LIVES", "feature_groups", "FeatureBuilder", "ranker_features"]

#: feature groups of :func:`ranker_features` (the generator group is added by
#: :func:`feature_groups` from the generator names)
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "pair": ("days since bought", "invoices since bought", "invoices with item",
             "decayed count 14d", "decayed count 60d", "decayed count 365d", "quantity",
             "value", "share of invoices", "item interval", "due ratio", "bought a year ago"),
    "item": ("buyers 7d", "buyers 30d", "buyers 90d", "trend 30d", "repurchase rate",
             "seasonality", "price", "item age"),
    "customer": ("invoices", "tenure", "days since last invoice", "invoice gap",
                 "customer due ratio", "basket size", "distinct items", "repeat share",
                 "home country"),
    "co-purchase": ("co-purchase max", "co-purchase mean"),
    "season": ("days to Christmas", "month"),
}


HALF_LIVES = (14.0, 60.0, 365.0)  # days, of the decayed counts


def feature_groups(columns: Sequence[str]) -> dict[str, list[str]]:
    """Map each feature group to its columns among ``columns``; generator columns
    (``"<name> score"``, ``"<name> rank"``, ``"generators"``) form the group
    ``"generators"``."""
    columns = list(columns)
    out = {group: [c for c in names if c in columns] for group, names in FEATURE_GROUPS.items()}
    known = {c for names in out.values() for c in names}
    out["generators"] = [c for c in columns if c not in known
                         and (c == "generators" or c.endswith((" score", " rank")))]
    return out


class FeatureBuilder:
    """Per-cutoff tables behind :func:`ranker_features`, built once and applied to any
    number of candidate frames with :meth:`transform` (same arguments)."""

    def __init__(self, interactions: pd.DataFrame, cutoff: object, *,
                 recent_invoices: int = 3,
                 season_days: int = 30, home_country: str = "United Kingdom",
                 shrinkage: float = 20.0) -> None:
        frame = check_interactions(interactions)
        cutoff = check_timestamp(cutoff, name="cutoff")
        check_positive_int(recent_invoices, name="recent_invoices")
        check_positive_int(season_days, name="season_days")
        if not shrinkage >= 0:
            raise ValueError(f"shrinkage must be >= 0, got {shrinkage}.")
        hist = frame[frame["timestamp"] < cutoff]
        if hist.empty:
            raise ValueError(f"interactions hold nothing before the cutoff {cutoff}.")
        self.cutoff = cutoff
        self.users_ = pd.Index(pd.unique(hist["user_id"].to_numpy()))
        self.items_ = pd.Index(pd.unique(hist["item_id"].to_numpy(dtype=object)))
        n_users, n_items = len(self.users_), len(self.items_)
        u = self.users_.get_indexer(hist["user_id"].to_numpy())
        i = self.items_.get_indexer(hist["item_id"].to_numpy(dtype=object))
        basket = hist["invoice"] if "invoice" in hist.columns else hist["timestamp"]
        b = pd.factorize(basket)[0]
        age = (cutoff - hist["timestamp"]).dt.total_seconds().to_numpy(dtype=float) / 86400.0
        quantity = (hist["quantity"].to_numpy(dtype=float) if "quantity" in hist.columns
                    else np.full(len(hist), np.nan))
        value = (hist["value"].to_numpy(dtype=float) if "value" in hist.columns
                 else np.full(len(hist), np.nan))

        # pair: one row per (customer, item) ever bought
        key = u.astype(np.int64) * n_items + i
        year_ago = (age < 365) & (age >= 365 - season_days)
        rows = pd.DataFrame({"key": key, "age": age, "q": quantity, "v": value,
                             "y": year_ago.astype(float)})
        for j, h in enumerate(HALF_LIVES):
            rows[f"d{j}"] = np.power(0.5, age / h)
        pair = rows.groupby("key", sort=True).agg(
            n=("age", "size"), last=("age", "min"), first=("age", "max"),
            q=("q", "sum"), v=("v", "sum"), y=("y", "sum"),
            **{f"d{j}": (f"d{j}", "sum") for j in range(3)})
        self.pair_keys_ = pair.index.to_numpy()
        self.pair_ = pair
        self.n_items = n_items

        # customer
        baskets = pd.DataFrame({"u": u, "b": b, "age": age}).groupby(["u", "b"])["age"].min()
        per_user = baskets.groupby(level="u")
        invoices = np.bincount(baskets.index.get_level_values("u"), minlength=n_users)
        last_inv = np.full(n_users, np.nan)
        first_inv = np.full(n_users, np.nan)
        last_inv[per_user.min().index] = per_user.min().to_numpy()
        first_inv[per_user.max().index] = per_user.max().to_numpy()
        lines = np.bincount(u, minlength=n_users)
        distinct = np.bincount(self.pair_keys_ // n_items, minlength=n_users)
        gap = np.where(invoices >= 2, (first_inv - last_inv) / np.maximum(invoices - 1, 1),
                       np.nan)
        # invoices of the customer after the last purchase of each pair
        basket_u = baskets.index.get_level_values("u").to_numpy()
        basket_key = basket_u * 1e6 + baskets.to_numpy()  # ages stay far below 1e6 days
        sorter = np.argsort(basket_key, kind="stable")
        basket_key = basket_key[sorter]
        pair_u = self.pair_keys_ // n_items
        first_basket = np.searchsorted(basket_key, pair_u * 1e6, side="left")
        pair["since"] = (np.searchsorted(basket_key, pair_u * 1e6 + pair["last"].to_numpy(),
                                         side="left") - first_basket).astype(float)
        home = np.full(n_users, np.nan)
        if "country" in hist.columns:
            latest = pd.DataFrame({"u": u, "t": hist["timestamp"].to_numpy(),
                                   "c": hist["country"].astype(str).to_numpy()})
            latest = latest.sort_values("t", kind="stable").drop_duplicates("u", keep="last")
            home[latest["u"].to_numpy()] = latest["c"].to_numpy() == home_country
        self.customer_ = pd.DataFrame({
            "invoices": invoices.astype(float), "tenure": first_inv,
            "days since last invoice": last_inv, "invoice gap": gap,
            "customer due ratio": last_inv / np.maximum(gap, 1.0),
            "basket size": lines / np.maximum(invoices, 1), "distinct items": distinct,
            "repeat share": (lines - distinct) / np.maximum(lines, 1), "home country": home})

        # item
        def buyers(mask) -> np.ndarray:
            return np.bincount(np.unique(key[mask]) % n_items, minlength=n_items).astype(float)

        b30 = buyers(age < 30)
        pair_items = self.pair_keys_ % n_items
        all_buyers = np.bincount(pair_items, minlength=n_items).astype(float)
        repeat_buyers = np.bincount(pair_items[pair["n"].to_numpy() >= 2], minlength=n_items)
        year = age < 365
        year_lines = np.bincount(i[year], minlength=n_items).astype(float)
        season_lines = np.bincount(i[year & (age >= 365 - season_days)],
                                   minlength=n_items).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = pd.Series(np.where(quantity > 0, value / quantity, np.nan))
        price = np.full(n_items, np.nan)
        median = unit[year].groupby(i[year]).median()
        price[median.index.to_numpy()] = median.to_numpy()
        item_age = np.full(n_items, np.nan)
        oldest = pd.Series(age).groupby(i).max()
        item_age[oldest.index.to_numpy()] = oldest.to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            self.item_ = pd.DataFrame({
                "buyers 7d": buyers(age < 7), "buyers 30d": b30, "buyers 90d": buyers(age < 90),
                "trend 30d": (b30 + 1.0) / (buyers((age >= 30) & (age < 60)) + 1.0),
                "repurchase rate": repeat_buyers / all_buyers,
                "seasonality": np.where(year_lines > 0, season_lines / year_lines, np.nan),
                "price": price, "item age": item_age})

        # co-purchase: cosine similarity and each customer's recent items
        binary = sp.csr_matrix((np.ones(len(self.pair_keys_), dtype=np.float32),
                                (self.pair_keys_ // n_items, pair_items)),
                               shape=(n_users, n_items))
        co = (binary.T @ binary).toarray()
        norms = np.sqrt(np.diag(co))
        self.similarity_ = (co / (np.outer(norms, norms) + shrinkage + 1e-9)).astype(np.float32)
        np.fill_diagonal(self.similarity_, 0.0)
        order = baskets.reset_index().sort_values(["u", "age", "b"], kind="stable")
        order = order[order.groupby("u").cumcount().to_numpy() < recent_invoices]
        recent = pd.DataFrame({"u": u, "b": b, "i": i}).merge(order[["u", "b"]], on=["u", "b"])
        self.recent_ = sp.csr_matrix((np.ones(len(recent), dtype=np.float32),
                                      (recent["u"], recent["i"])), shape=(n_users, n_items))
        self.recent_.sum_duplicates()

        christmas = pd.Timestamp(year=cutoff.year, month=12, day=25)
        if christmas < cutoff.normalize():
            christmas = pd.Timestamp(year=cutoff.year + 1, month=12, day=25)
        self.season_ = {"days to Christmas": float((christmas - cutoff.normalize()).days),
                        "month": float(cutoff.month)}

    def transform(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """``candidates`` with the feature columns added (see :func:`ranker_features`)."""
        cands = check_frame(candidates, {"user_id": "integer", "item_id": "string"},
                            name="candidates")
        cu = self.users_.get_indexer(cands["user_id"].to_numpy())
        ci = self.items_.get_indexer(cands["item_id"].to_numpy(dtype=object))
        ok = (cu >= 0) & (ci >= 0)
        out = {}
        # pair
        where = np.searchsorted(self.pair_keys_, cu.astype(np.int64) * self.n_items + ci)
        where = np.minimum(where, len(self.pair_keys_) - 1)
        found = ok & (self.pair_keys_[where] == cu.astype(np.int64) * self.n_items + ci)

        def pair(column: str, fill: float) -> np.ndarray:
            res = np.full(len(cands), fill)
            res[found] = self.pair_[column].to_numpy(dtype=float)[where[found]]
            return np.where(ok, res, np.nan)

        n_pair = pair("n", 0.0)
        out["days since bought"] = pair("last", np.nan)
        out["invoices since bought"] = pair("since", np.nan)
        out["invoices with item"] = n_pair
        out["bought a year ago"] = pair("y", 0.0)
        for j, name in enumerate(("decayed count 14d", "decayed count 60d",
                                  "decayed count 365d")):
            out[name] = pair(f"d{j}", 0.0)
        out["quantity"] = pair("q", 0.0)
        out["value"] = pair("v", 0.0)
        interval = np.where(n_pair >= 2, (pair("first", np.nan) - out["days since bought"])
                            / np.maximum(n_pair - 1, 1), np.nan)
        customer = {c: np.where(cu >= 0, self.customer_[c].to_numpy(dtype=float)[cu], np.nan)
                    for c in self.customer_.columns}
        out["share of invoices"] = n_pair / np.maximum(customer["invoices"], 1.0)
        out["item interval"] = interval
        out["due ratio"] = out["days since bought"] / np.maximum(interval, 1.0)
        out.update({c: np.where(ci >= 0, self.item_[c].to_numpy(dtype=float)[ci], np.nan)
                    for c in self.item_.columns})
        out.update(customer)
        out["co-purchase max"], out["co-purchase mean"] = self._co_purchase(cu, ci)
        out.update({c: np.full(len(cands), v) for c, v in self.season_.items()})
        features = pd.DataFrame(out, index=cands.index)
        ordered = [c for names in FEATURE_GROUPS.values() for c in names]
        return pd.concat([candidates, features[ordered]], axis=1)

    def _co_purchase(self, cu: np.ndarray, ci: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Largest and mean similarity between each candidate and the customer's recent
        items."""
        ok = (cu >= 0) & (ci >= 0)
        counts = np.where(ok, np.diff(self.recent_.indptr)[np.maximum(cu, 0)], 0)
        starts = self.recent_.indptr[np.maximum(cu, 0)]
        best = np.full(len(cu), np.nan)
        mean = np.full(len(cu), np.nan)
        total = int(counts.sum())
        if total:
            offsets = np.cumsum(counts) - counts
            flat = np.repeat(starts - offsets, counts) + np.arange(total)
            values = self.similarity_[self.recent_.indices[flat], np.repeat(ci, counts)]
            has = counts > 0
            best[has] = np.maximum.reduceat(values, offsets[has])
            mean[has] = np.add.reduceat(values, offsets[has]) / counts[has]
        return best, mean


def ranker_features(interactions: pd.DataFrame, candidates: pd.DataFrame, cutoff: object,
                    **options) -> pd.DataFrame:
    """Features of each (customer, candidate item) pair from interactions before ``cutoff``.

    Only rows of ``interactions`` with ``timestamp < cutoff`` are read (everything on or
    after the cutoff is dropped first), so the features are those a shop could compute at
    the cutoff. ``candidates`` needs ``user_id`` and ``item_id``; its other columns (for
    example the generator scores of :meth:`CandidateGenerator.candidates`) are kept in
    front. The groups, see :data:`FEATURE_GROUPS`:

    * **pair**: days and invoices since the customer last bought the item, invoices with
      the item, counts decayed with half-lives of 14, 60 and 365 days, quantity and value
      bought, the item's share of the customer's invoices, the customer's typical
      interval between purchases of the item ((last - first) / (purchases - 1)), the
      "due ratio" (days since bought / that interval) and the purchases of it in the
      ``season_days`` starting a year before the cutoff;
    * **item**: distinct buyers over the last 7, 30 and 90 days, trend (buyers in the last
      30 days over the 30 before, +1 smoothed), repurchase rate (share of its buyers who
      bought it on two invoices or more), seasonality (its lines in the ``season_days``
      starting one year before the cutoff as a share of its lines over that year), median
      unit price over the year, days since its first sale;
    * **customer**: invoices, tenure, days since the last invoice, typical gap between
      invoices and the days since the last invoice over that gap, mean basket size (lines
      per invoice), distinct items, repeat share (share of lines re-buying an item of an
      earlier invoice), whether the latest ``country`` (when the interactions have that
      column) is ``home_country``;
    * **co-purchase**: largest and mean cosine similarity (customers who bought both, with
      ``shrinkage`` added to the denominator) between the candidate and the items of the
      customer's last ``recent_invoices`` invoices;
    * **season**: days from the cutoff to the next Christmas, and the cutoff's month.

    Missing values mean "never" or "unknown" (a pair never bought, a single invoice, a
    customer or item without history) and stay NaN. Optional columns ``invoice`` (else a
    basket is a timestamp), ``quantity``, ``value`` and ``country`` are used when present.
    Keyword ``options`` are those of :class:`FeatureBuilder`.
    """
    return FeatureBuilder(interactions, cutoff, **options).transform(candidates)
