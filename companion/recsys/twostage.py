"""Two-stage recommendation: cheap candidate generators, then a learned ranker.

Stage one (:class:`CandidateGenerator`) takes the union of several fitted recommenders'
top ``n`` items per customer: the customer's own past items, next-basket models, a
co-purchase model and what is selling now. Stage two scores each (customer, candidate)
pair from features computed strictly before a cutoff (:func:`ranker_features`) with a
learned ranker: gradient-boosted trees with the LambdaRank objective
(:class:`LightGBMRanker`, Burges 2010; Ke et al. 2017) or a Keras MLP trained with a
listwise softmax loss (:class:`KerasListwiseRanker`).

:class:`TwoStageRecommender` follows the recommender protocol of
:mod:`companion.recsys.baselines`. ``fit(interactions)`` learns the ranker from the last
``label_days`` of ``interactions``: generators and features use only the data before that
label window, the labels are what each customer bought in it. It then refits the
generators on all of ``interactions`` for recommending. One ranker is trained per task:
``recommend(..., exclude_seen=False)`` ranks every item (re-purchases included, the
"all" task of :mod:`companion.recsys.ranking`), ``exclude_seen=True`` ranks only items the
customer never bought ("new"), with candidates and labels restricted to such items.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp
from companion._optional import require
from companion.data.preprocessing import check_interactions
from companion.recsys import baselines as rec

TASKS = ("all", "new")

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

_CHUNK = 1024  # customers scored at once
_CACHED_LISTS = 8  # feature frames kept by TwoStageRecommender.features
HALF_LIVES = (14.0, 60.0, 365.0)  # days, of the decayed counts
#: candidates per generator tried by :func:`rolling_two_stage`, per task
N_GRID = {"all": (10, 20), "new": (20, 50)}


def default_generators() -> dict[str, rec.Recommender]:
    """Unfitted stage-one generators: the customer's own past items (repeat-buy), two
    next-basket models (TIFU-KNN, UP-CF@r), co-purchase (item-kNN) and what sold in the
    last two weeks. The parameters are values that the baselines' tuning of chapter 5.6
    chose on the validation window of the first test window (September 2011) of the real
    data, for one task or the other."""
    return {
        "repeat-buy": rec.RepeatBuy(half_life_days=180),
        "TIFU-KNN": rec.TIFUKNN(k=100, alpha=0.2, group_size=3),
        "UP-CF@r": rec.UPCF(recency=5, asymmetry=0.75, locality=10),
        "item-kNN": rec.ItemKNN(neighbours=200, shrinkage=20.0),
        "recent popularity": rec.Popularity(window_days=14),
    }


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


def _cutoff_of(frame: pd.DataFrame) -> pd.Timestamp:
    """The default cutoff after ``frame``: midnight after its last interaction."""
    return frame["timestamp"].max().normalize() + pd.Timedelta(days=1)


# ------------------------------------------------------------------------- stage one


def _check_n(n: object, names: Sequence[str], what: str = "n") -> dict[str, int]:
    """``n`` (one positive int, or a mapping generator name -> int) as a full mapping."""
    if isinstance(n, Mapping):
        unknown = set(n) - set(names)
        missing = set(names) - set(n)
        if unknown or missing:
            raise ValueError(f"{what} names generators {sorted(unknown)} that do not exist "
                             f"and misses {sorted(missing)}.")
        return {name: check_positive_int(n[name], name=f"{what}[{name!r}]") for name in names}
    return dict.fromkeys(names, check_positive_int(n, name=what))


class CandidateGenerator:
    """Union of several recommenders' top-``n`` items per customer.

    Parameters
    ----------
    generators
        Name -> unfitted recommender (:func:`default_generators` if None). They are
        copied, so the templates stay unfitted.
    n
        Items taken from each generator per customer: one number or a mapping name -> n.

    Items tied with a customer's lowest score of a generator are never taken from it
    (they carry no signal, for example the items a next-basket model gives zero). Every
    generator scores every candidate: the output has each generator's score and its rank
    in that generator's top ``n`` (``n + 1`` when outside it).
    """

    def __init__(self, generators: Mapping[str, rec.Recommender] | None = None,
                 n: int | Mapping[str, int] = 50) -> None:
        self.generators = generators
        self.n = n

    def _check(self) -> tuple[dict[str, rec.Recommender], dict[str, int]]:
        generators = default_generators() if self.generators is None else self.generators
        if not isinstance(generators, Mapping) or not generators:
            raise ValueError("generators must be a non-empty mapping name -> recommender.")
        for name, model in generators.items():
            if not isinstance(model, rec.Recommender):
                raise TypeError(f"generator {name!r} must be a Recommender, got "
                                f"{type(model).__name__}.")
            if name.endswith((" score", " rank")) or name == "generators":
                raise ValueError(f"generator name {name!r} would clash with the feature "
                                 "columns; rename it.")
        return dict(generators), _check_n(self.n, list(generators))

    def fit(self, interactions: pd.DataFrame) -> CandidateGenerator:
        """Fit a copy of every generator on ``interactions``; returns ``self``."""
        generators, self.n_ = self._check()
        frame = check_interactions(interactions)
        self.models_ = {name: copy.deepcopy(model).fit(frame)
                        for name, model in generators.items()}
        first = next(iter(self.models_.values()))
        for name, model in self.models_.items():
            if not np.array_equal(model.items_, first.items_):
                raise ValueError(f"generator {name!r} has a different catalogue from the "
                                 "others; generators must score the training items.")
        self.reference_ = first
        return self

    @property
    def items_(self) -> np.ndarray:
        """Item ids in the generators' column order."""
        if not hasattr(self, "models_"):
            raise RuntimeError("this CandidateGenerator is not fitted yet; call fit first.")
        return self.reference_.items_

    def candidates(self, user_ids, exclude_seen: bool = False,
                   n: int | Mapping[str, int] | None = None) -> pd.DataFrame:
        """Candidates of each customer: columns ``user_id``, ``item_id``, ``"<name>
        score"`` and ``"<name> rank"`` for every generator, and ``generators`` (how many
        generators proposed the item). With ``exclude_seen`` the customer's past items
        are never candidates. ``n`` overrides the fitted ``n``. Rows are grouped by
        customer (in the order given), items in catalogue order."""
        task = "new" if exclude_seen else "all"
        return self.candidates_by_task({task: user_ids}, None if n is None else {task: n})[task]

    def candidates_by_task(self, users: Mapping[str, object],
                           n: Mapping[str, int | Mapping[str, int]] | None = None
                           ) -> dict[str, pd.DataFrame]:
        """:meth:`candidates` for several tasks at once (``"all"``: past items allowed,
        ``"new"``: excluded), scoring each customer once: ``users`` maps task -> user ids,
        ``n`` task -> ``n``."""
        if not hasattr(self, "models_"):
            raise RuntimeError("this CandidateGenerator is not fitted yet; call fit first.")
        if not isinstance(users, Mapping) or not users:
            raise ValueError("users must be a non-empty mapping task -> user ids.")
        sizes = {}
        for task in users:
            check_in(task, TASKS, name="task")
            sizes[task] = _check_n(self.n_ if n is None or task not in n else n[task],
                                   list(self.models_))
        wanted = {task: np.asarray(ids) for task, ids in users.items()}
        for task, ids in wanted.items():
            if ids.ndim != 1 or not len(ids):
                raise ValueError(f"user ids for {task!r} must be a non-empty 1-D array.")
        union = pd.unique(np.concatenate(list(wanted.values())))
        codes = self.reference_._codes(union)
        parts: dict[str, list[pd.DataFrame]] = {task: [] for task in wanted}
        for lo in range(0, len(union), _CHUNK):
            chunk = union[lo:lo + _CHUNK]
            part = codes[lo:lo + _CHUNK]
            scores = {name: model.score_codes(part) for name, model in self.models_.items()}
            for task, ids in wanted.items():
                rows = pd.Index(chunk).get_indexer(ids)
                rows = np.sort(rows[rows >= 0])
                if len(rows) == len(chunk):  # every customer of the chunk: no copy
                    parts[task].append(self._top(chunk, part, scores, task == "new",
                                                 sizes[task]))
                elif len(rows):
                    parts[task].append(self._top(chunk[rows], part[rows],
                                                 {k: v[rows] for k, v in scores.items()},
                                                 task == "new", sizes[task]))
        out = {}
        for task, ids in wanted.items():
            frame = pd.concat(parts[task], ignore_index=True)
            position = pd.Series(np.arange(len(ids)), index=ids)
            order = np.argsort(position.reindex(frame["user_id"]).to_numpy(), kind="stable")
            out[task] = frame.iloc[order].reset_index(drop=True)
        return out

    def _top(self, ids, codes, scores, exclude_seen, sizes) -> pd.DataFrame:
        n_items = len(self.items_)
        if exclude_seen:
            known = np.flatnonzero(codes >= 0)
            sub = self.reference_.seen_[codes[known]]
            seen = (np.repeat(known, np.diff(sub.indptr)), sub.indices)
            scores = {name: s.copy() for name, s in scores.items()}
            for s in scores.values():
                s[seen] = -np.inf
        mask = np.zeros((len(ids), n_items), dtype=bool)
        ranks = {}
        for name, s in scores.items():
            n = min(sizes[name], n_items)
            top = _top_n(s, n)
            top_scores = np.take_along_axis(s, top, axis=1)
            floor = np.min(np.where(np.isfinite(s), s, np.inf), axis=1, keepdims=True)
            keep = np.isfinite(top_scores) & (top_scores > floor)
            rows = np.broadcast_to(np.arange(len(ids))[:, None], top.shape)
            rank = np.full(s.shape, sizes[name] + 1, dtype=np.int32)
            rank[rows[keep], top[keep]] = np.broadcast_to(np.arange(1, n + 1), top.shape)[keep]
            ranks[name] = rank
            mask[rows[keep], top[keep]] = True
        row, col = np.nonzero(mask)
        frame = {"user_id": ids[row], "item_id": self.items_[col]}
        for name in self.models_:
            frame[f"{name} score"] = np.nan_to_num(scores[name][row, col].astype(np.float64))
            frame[f"{name} rank"] = ranks[name][row, col]
        frame["generators"] = sum((ranks[name][row, col] <= sizes[name]).astype(np.int32)
                                  for name in self.models_)
        return pd.DataFrame(frame)


def _top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of each row's ``n`` best scores, best first, ties broken by column
    (so that the top ``m < n`` is always the start of the top ``n``)."""
    nth = -np.partition(-scores, n - 1, axis=1)[:, n - 1:n]
    above = scores > nth
    tied = scores == nth
    need = n - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    top = np.nonzero(chosen)[1].reshape(len(scores), n)  # in column order
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def restrict_candidates(candidates: pd.DataFrame, n: int | Mapping[str, int]) -> pd.DataFrame:
    """The candidates that a :class:`CandidateGenerator` with a smaller ``n`` would give.

    Keeps the rows that some generator ranks within its top ``n`` and caps the rank
    columns at ``n + 1`` (and recounts ``generators``), so the result equals building the
    candidates with ``n`` directly. ``n`` must not exceed the ``n`` they were built with.
    """
    names = [c[:-len(" rank")] for c in candidates.columns if c.endswith(" rank")]
    if not names:
        raise ValueError("candidates have no '<generator> rank' columns.")
    sizes = _check_n(n, names)
    out = candidates.copy()
    inside = np.zeros(len(out), dtype=bool)
    count = np.zeros(len(out), dtype=np.int32)
    for name in names:
        rank = out[f"{name} rank"].to_numpy()
        if len(rank) and sizes[name] >= rank.max():
            raise ValueError(f"n[{name!r}]={sizes[name]} exceeds the n these candidates were "
                             f"built with ({int(rank.max()) - 1} at most).")
        within = rank <= sizes[name]
        inside |= within
        count += within
        out[f"{name} rank"] = np.minimum(rank, sizes[name] + 1)
    out["generators"] = count
    return out[inside].reset_index(drop=True)


def candidate_recall(candidates: pd.DataFrame, truth: pd.Series) -> pd.Series:
    """Per customer of ``truth`` (user id -> set of relevant item ids): the share of the
    relevant items that are among the candidates (0 for a customer without candidates)."""
    check_frame(candidates, {"user_id": "integer", "item_id": "string"}, name="candidates")
    if not isinstance(truth, pd.Series) or truth.empty:
        raise ValueError("truth must be a non-empty Series user id -> set of item ids.")
    pairs = pd.MultiIndex.from_arrays([candidates["user_id"],
                                       candidates["item_id"].astype(object)])
    relevant = truth.explode().dropna()
    hit = pd.MultiIndex.from_arrays([relevant.index, relevant.to_numpy(dtype=object)]).isin(pairs)
    out = pd.Series(hit.astype(float), index=relevant.index).groupby(level=0).mean()
    return out.reindex(truth.index, fill_value=0.0).rename("candidate recall")


# ------------------------------------------------------------------------- features


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


# ------------------------------------------------------------------------- rankers


def _check_xy(features, labels, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {x.shape}.")
    y = np.asarray(labels, dtype=np.float32)
    q = np.asarray(groups)
    if y.shape != (len(x),) or q.shape != (len(x),):
        raise ValueError(f"labels and groups need one value per row of features ({len(x)}), "
                         f"got shapes {y.shape} and {q.shape}.")
    if len(q) and (np.diff(pd.factorize(q)[0]) < 0).any():
        raise ValueError("rows of a query (groups) must be contiguous.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1.")
    return x, y, q


def _query_sizes(groups: np.ndarray) -> np.ndarray:
    change = np.r_[True, groups[1:] != groups[:-1]]
    starts = np.flatnonzero(change)
    return np.diff(np.r_[starts, len(groups)])


def candidate_ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10
                   ) -> float:
    """Mean NDCG@k over queries with a positive label, ranking each query's rows by
    ``scores`` (the ideal counts only the query's positive rows)."""
    frame = pd.DataFrame({"q": groups, "s": scores, "y": labels})
    frame = frame[frame.groupby("q")["y"].transform("max") > 0]
    if frame.empty:
        return float("nan")
    frame = frame.sort_values(["q", "s"], ascending=[True, False], kind="stable")
    pos = frame.groupby("q").cumcount().to_numpy()
    gain = np.where(pos < k, frame["y"].to_numpy() / np.log2(pos + 2), 0.0)
    dcg = pd.Series(gain).groupby(frame["q"].to_numpy()).sum()
    n_pos = frame.groupby("q")["y"].sum()
    disc = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal = disc[np.minimum(n_pos.to_numpy(), k).astype(int) - 1]
    return float(np.mean(dcg.to_numpy() / ideal))


def _fitted_features(ranker, features) -> np.ndarray:
    """``features`` as float32 after checking that ``ranker`` is fitted and the columns fit."""
    if not hasattr(ranker, "model_"):
        raise RuntimeError(f"this {type(ranker).__name__} is not fitted yet; call fit first.")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(ranker.feature_names_):
        raise ValueError(f"features must have {len(ranker.feature_names_)} columns, got "
                         f"shape {x.shape}.")
    return x


class LightGBMRanker:
    """Gradient-boosted trees with the LambdaRank objective, one query per customer.

    With validation data and ``early_stopping_rounds`` the number of trees is chosen by
    early stopping on the validation NDCG@10 (at most ``n_estimators``);
    ``best_iteration_`` records it. With ``early_stopping_rounds=None`` exactly
    ``n_estimators`` trees are grown and validation data are ignored.
    ``feature_importances_`` is the total gain of each feature's splits, normalised to
    sum to 1. Deterministic for a given ``seed`` and ``n_jobs``.
    """

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 31, min_child_samples: int = 50,
                 colsample_bytree: float = 0.8, early_stopping_rounds: int | None = 20,
                 n_jobs: int = 1, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.seed = seed

    def fit(self, features, labels, groups, validation: tuple | None = None,
            feature_names: Sequence[str] | None = None) -> LightGBMRanker:
        """Fit on rows grouped by query (``groups``: one query id per row, each query's
        rows contiguous); ``validation`` is an optional ``(features, labels, groups)``."""
        lgb = require("lightgbm", "rank")

        check_positive_int(self.n_estimators, name="n_estimators")
        x, y, q = _check_xy(features, labels, groups)
        self.feature_names_ = (list(feature_names) if feature_names is not None
                               else [f"f{j}" for j in range(x.shape[1])])
        if len(self.feature_names_) != x.shape[1]:
            raise ValueError(f"feature_names has {len(self.feature_names_)} names for "
                             f"{x.shape[1]} columns.")
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
            "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.colsample_bytree, "lambdarank_truncation_level": 20,
            "seed": self.seed, "num_threads": self.n_jobs, "deterministic": True,
            "force_row_wise": True, "verbosity": -1}
        train = lgb.Dataset(x, y, group=_query_sizes(q), feature_name=self.feature_names_,
                            free_raw_data=True)
        kwargs = {}
        if self.early_stopping_rounds is not None:
            check_positive_int(self.early_stopping_rounds, name="early_stopping_rounds")
        if validation is not None and self.early_stopping_rounds is not None:
            vx, vy, vq = _check_xy(*validation)
            if vx.shape[1] != x.shape[1]:
                raise ValueError(f"validation features have {vx.shape[1]} columns, the "
                                 f"training features {x.shape[1]}.")
            kwargs = {"valid_sets": [lgb.Dataset(vx, vy, group=_query_sizes(vq),
                                                 reference=train)],
                      "callbacks": [lgb.early_stopping(self.early_stopping_rounds,
                                                       verbose=False)]}
        self.model_ = lgb.train(params, train, num_boost_round=self.n_estimators, **kwargs)
        best = self.model_.best_iteration
        self.best_iteration_ = int(best) if best and best > 0 else self.n_estimators
        gain = self.model_.feature_importance("gain", iteration=self.best_iteration_)
        self.feature_importances_ = gain / max(gain.sum(), 1e-12)
        return self

    def predict(self, features) -> np.ndarray:
        """Scores of each row (higher is better)."""
        x = _fitted_features(self, features)
        return self.model_.predict(x, num_iteration=self.best_iteration_)


class KerasListwiseRanker:
    """An MLP scoring each candidate, trained with a listwise softmax cross-entropy.

    For a customer with candidates ``1..m``, scores ``s_j`` and labels ``y_j``, the loss is
    ``-sum_j (y_j / sum y) log softmax(s)_j``: the softmax over the customer's candidates
    should put its mass on what they bought (ListNet's top-one loss with binary labels).
    Features are turned into ``sign(x) log(1 + |x|)``, standardised on the training rows
    (missing values become 0 after standardising, with an indicator column per feature
    that had any) and clipped to [-5, 5]. Customers without a positive candidate carry no
    signal and are left out of training. With validation data the number of epochs is
    chosen by early stopping on its NDCG@10 (``patience``); ``best_epoch_`` records it.
    """

    def __init__(self, hidden: Sequence[int] = (64, 32), dropout: float = 0.1,
                 epochs: int = 15, patience: int = 2, batch_size: int = 128,
                 learning_rate: float = 1e-3, seed: int = 0) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed

    def _transform(self, x: np.ndarray) -> np.ndarray:
        z = np.sign(x) * np.log1p(np.abs(x))
        z = (z - self.mean_) / self.scale_
        missing = np.isnan(z[:, self.indicators_]).astype(np.float32)
        z = np.clip(np.nan_to_num(z, nan=0.0), -5.0, 5.0)
        return np.hstack([z, missing]).astype(np.float32)

    def _lists(self, x: np.ndarray, y: np.ndarray, q: np.ndarray, positive_only: bool):
        sizes = _query_sizes(q)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        if positive_only:
            keep = np.add.reduceat(y, starts) > 0 if len(y) else np.zeros(0, bool)
            sizes, starts = sizes[keep], starts[keep]
        width = int(sizes.max()) if len(sizes) else 1
        xs = np.zeros((len(sizes), width, x.shape[1]), dtype=np.float32)
        ys = np.full((len(sizes), width), -1.0, dtype=np.float32)
        for row, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            xs[row, :size] = x[start:start + size]
            ys[row, :size] = y[start:start + size]
        return xs, ys

    def fit(self, features, labels, groups, validation: tuple | None = None,
            feature_names: Sequence[str] | None = None) -> KerasListwiseRanker:
        """Fit on rows grouped by query, as :meth:`LightGBMRanker.fit`."""
        keras = require("keras", "deep")

        from companion.foundations.keras_helpers import seed_everything

        check_positive_int(self.epochs, name="epochs")
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.patience, name="patience")
        x, y, q = _check_xy(features, labels, groups)
        self.feature_names_ = (list(feature_names) if feature_names is not None
                               else [f"f{j}" for j in range(x.shape[1])])
        seed_everything(self.seed)
        z = np.sign(x) * np.log1p(np.abs(x))
        present = ~np.isnan(z)
        count = np.maximum(present.sum(axis=0), 1)
        self.mean_ = np.where(present, z, 0.0).sum(axis=0) / count
        scale = np.sqrt(np.where(present, (z - self.mean_) ** 2, 0.0).sum(axis=0) / count)
        self.scale_ = np.where(scale > 1e-9, scale, 1.0)
        self.indicators_ = np.flatnonzero(np.isnan(x).any(axis=0))
        xs, ys = self._lists(self._transform(x), y, q, positive_only=True)
        if not len(xs):
            raise ValueError("no query has a positive label; nothing to learn.")
        inputs = keras.Input(shape=(None, xs.shape[2]))
        h = inputs
        for units in self.hidden:
            h = keras.layers.Dense(units, activation="relu")(h)
            if self.dropout:
                h = keras.layers.Dropout(self.dropout)(h)
        out = keras.layers.Reshape((-1,))(keras.layers.Dense(1)(h))
        self.model_ = keras.Model(inputs, out)
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                            loss=_softmax_list_loss)
        val = None
        if validation is not None:
            vx, vy, vq = _check_xy(*validation)
            val = (self._transform(vx), vy, vq)
        ranker = self
        self.history_ = []
        state = {"best": -np.inf, "weights": None, "waited": 0}

        class EarlyStopping(keras.callbacks.Callback):
            """Scores the validation lists after each epoch, keeps the best weights."""

            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", np.nan))}
                if val is not None:
                    score = candidate_ndcg(ranker._predict_z(val[0], val[2]), val[1], val[2])
                    row["validation NDCG@10"] = score
                    if score > state["best"]:
                        state.update(best=score, weights=self.model.get_weights(), waited=0)
                        ranker.best_epoch_ = epoch + 1
                    else:
                        state["waited"] += 1
                        self.model.stop_training = state["waited"] >= ranker.patience
                ranker.history_.append(row)

        self.model_.fit(xs, ys, batch_size=self.batch_size, epochs=self.epochs, verbose=0,
                        shuffle=True, callbacks=[EarlyStopping()])
        if state["weights"] is not None:
            self.model_.set_weights(state["weights"])
        else:
            self.best_epoch_ = len(self.history_)
        return self

    def _predict_z(self, z: np.ndarray, q: np.ndarray) -> np.ndarray:
        xs, _ = self._lists(z, np.zeros(len(z), np.float32), q, positive_only=False)
        scores = self.model_.predict(xs, batch_size=256, verbose=0)
        sizes = _query_sizes(q)
        mask = np.arange(scores.shape[1])[None, :] < sizes[:, None]
        return scores[mask].astype(np.float64)

    def predict(self, features, groups=None) -> np.ndarray:
        """Scores of each row. The MLP scores rows independently, so ``groups`` is
        optional (rows are then scored in blocks)."""
        x = _fitted_features(self, features)
        z = self._transform(x)
        q = np.arange(len(z)) // 256 if groups is None else np.asarray(groups)
        return self._predict_z(z, q)


def _softmax_list_loss(y_true, y_pred):
    """Softmax cross-entropy over each padded list; label -1 marks padding."""
    keras = require("keras", "deep")
    ops = require("keras.ops", "deep")

    mask = ops.greater_equal(y_true, 0.0)
    logits = ops.where(mask, y_pred, -1e9)
    target = ops.where(mask, y_true, 0.0)
    target = target / ops.maximum(ops.sum(target, axis=-1, keepdims=True), 1e-9)
    log_p = keras.ops.log_softmax(logits, axis=-1)
    return -ops.sum(target * ops.where(mask, log_p, 0.0), axis=-1)


# ------------------------------------------------------------------------- two stages


def ndcg_at_k(ranked: pd.DataFrame, truth: pd.Series, k: int = 10) -> pd.Series:
    """NDCG@k of each customer of ``truth`` (user id -> set of relevant items) for the
    ranked candidates ``ranked`` (``user_id``, ``item_id``, best first within a customer).

    The ideal counts every relevant item, among the candidates or not, as
    :mod:`companion.recsys.ranking` does, so the value is comparable with a full-catalogue
    evaluation of the same top ``k``; a customer without candidates scores 0.
    """
    check_positive_int(k, name="k")
    top = ranked.groupby("user_id", sort=False).head(k)
    position = top.groupby("user_id", sort=False).cumcount().to_numpy()
    relevant = truth.explode()
    pairs = pd.MultiIndex.from_arrays([relevant.index, relevant.to_numpy(dtype=object)])
    hit = pd.MultiIndex.from_arrays([top["user_id"],
                                     top["item_id"].to_numpy(dtype=object)]).isin(pairs)
    dcg = pd.Series(hit / np.log2(position + 2), index=top["user_id"].to_numpy())
    dcg = dcg.groupby(level=0).sum().reindex(truth.index, fill_value=0.0)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal = discounts[np.minimum(truth.map(len).to_numpy(), k) - 1]
    return (dcg / ideal).rename("NDCG")


@dataclass
class Examples:
    """Candidates with features and labels at one cutoff, for one task."""

    frame: pd.DataFrame
    cutoff: pd.Timestamp
    task: str
    truth: pd.Series  # user id -> set of relevant item ids

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.frame.columns if c not in ("user_id", "item_id", "label")]

    def recall(self) -> float:
        """Share of the relevant items (over all customers) that are candidates."""
        return float(self.frame["label"].sum() / self.truth.map(len).sum())

    def restrict(self, n: int | Mapping[str, int]) -> Examples:
        """These examples as candidates built with a smaller ``n`` would give them."""
        return Examples(restrict_candidates(self.frame, n), self.cutoff, self.task, self.truth)


def _labelled(frame: pd.DataFrame, truth: pd.Series, cutoff: pd.Timestamp, task: str
              ) -> Examples:
    """Add the 0/1 ``label`` (item in the customer's truth set) to a feature frame."""
    relevant = truth.explode()
    pairs = pd.MultiIndex.from_arrays([relevant.index, relevant.to_numpy(dtype=object)])
    label = pd.MultiIndex.from_arrays([frame["user_id"],
                                       frame["item_id"].to_numpy(dtype=object)]).isin(pairs)
    return Examples(frame.assign(label=label.astype(np.float32)), cutoff, task, truth)


def _query_ids(part: pd.DataFrame) -> np.ndarray:
    """One id per (``query`` = cutoff number, customer) of a stacked example frame."""
    return pd.factorize(pd.MultiIndex.from_arrays([part["query"], part["user_id"]]))[0]


def training_examples(interactions: pd.DataFrame, cutoff: object, label_days: int,
                      generators: Mapping[str, rec.Recommender] | None = None,
                      n: int | Mapping = 50, *, tasks: Sequence[str] = TASKS,
                      feature_options: Mapping | None = None, required: bool = True
                      ) -> dict[str, Examples]:
    """Labelled candidates at ``cutoff`` for each task, reading nothing after
    ``cutoff + label_days``.

    The generators are fitted on the interactions before ``cutoff`` and the features read
    only those; the customers are those with a history before the cutoff and a purchase
    (a purchase of an item new to them, for ``"new"``) in ``[cutoff, cutoff +
    label_days)``, and a candidate's label is whether it is one of those purchases. ``n``
    is one number, a mapping generator -> number, or a mapping task -> either. With
    ``required=False`` a task without customers is left out instead of raising.
    """
    from companion.recsys.ranking import RankingTask

    frame = check_interactions(interactions)
    cutoff = check_timestamp(cutoff, name="cutoff")
    check_positive_int(label_days, name="label_days")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for task in tasks:
        check_in(task, TASKS, name="task")
    end = cutoff + pd.Timedelta(days=label_days)
    history = frame[frame["timestamp"] < cutoff]
    window = frame[(frame["timestamp"] >= cutoff) & (frame["timestamp"] < end)]
    if history.empty or window.empty:
        if not required:
            return {}
        raise ValueError(f"training examples at {cutoff.date()} need interactions before it "
                         f"and in the {label_days} days after it.")
    try:
        truth = RankingTask.from_split(history, window).truth
    except ValueError as err:
        if required:
            raise ValueError(f"training examples at {cutoff.date()}: {err}") from err
        return {}
    sizes = n if isinstance(n, Mapping) and set(n) <= set(TASKS) else dict.fromkeys(tasks, n)
    missing = [task for task in tasks if task not in sizes]
    if missing:
        raise ValueError(f"n has no entry for task(s) {missing}.")
    wanted = {}
    for task in tasks:
        if truth[task].empty:
            if required:
                raise ValueError(f"no customer has a {task!r} purchase in the label window "
                                 f"from {cutoff.date()}.")
            continue
        wanted[task] = truth[task].index.to_numpy()
    if not wanted:
        return {}
    generator = CandidateGenerator(generators, 1).fit(history)
    cands = generator.candidates_by_task(wanted, {task: sizes[task] for task in wanted})
    builder = FeatureBuilder(history, cutoff, **(feature_options or {}))
    return {task: _labelled(builder.transform(cands[task]), truth[task], cutoff, task)
            for task in wanted}


class TwoStageRecommender(rec.Recommender):
    """Candidates from several recommenders, re-ranked by a learned ranker.

    ``fit(interactions)`` builds training examples (:func:`training_examples`) at the label
    cutoff ``label_days`` before the end of the data (the end is midnight after the last
    interaction, or the ``cutoff`` given to :meth:`fit`), and at ``label_cutoffs - 1``
    earlier cutoffs, each ``label_days`` before the next: the generators are fitted on the
    data before a label cutoff, the features read only that data, and a candidate's label
    is whether the customer bought it in the ``label_days`` after it (customers with a
    history before the label cutoff and a purchase after it are the training queries; a
    customer is one query per cutoff). Earlier cutoffs without enough data are skipped. A
    share
    ``validation_share`` of those customers, drawn with ``seed``, is held out to choose
    the number of trees or epochs, and its NDCG@10 (every relevant item in the ideal) is
    kept in ``validation_ndcg_``. Then the generators are refitted on all of
    ``interactions`` and recommending builds candidates and features at the end of the
    data. One ranker is trained per task in ``tasks``: ``"all"`` (candidates and labels
    include the customer's past items) serves ``recommend(exclude_seen=False)``, ``"new"``
    (past items excluded) serves ``exclude_seen=True``.

    Parameters
    ----------
    generators
        Stage one, see :class:`CandidateGenerator`.
    n
        Items per generator and customer: one number, or a mapping task -> number (or
        task -> mapping generator -> number).
    ranker
        ``"lightgbm"`` (:class:`LightGBMRanker`), ``"keras"``
        (:class:`KerasListwiseRanker`) or an unfitted ranker object with their ``fit``
        and ``predict`` methods; or a mapping task -> one of those.
    label_days
        Length of the label window (use the horizon you recommend for).
    label_cutoffs
        Number of label windows stacked into the training data (more data, more time).
    tasks
        Which rankers to train.
    drop_groups
        Feature groups (see :func:`feature_groups`) left out of the ranker.
    validation_share
        Share of the training customers held out for early stopping.
    feature_options
        Keyword arguments of :func:`ranker_features`.
    seed
        Seed of the held-out draw and of the ranker.

    Customers without history get the popularity ranking; customers with fewer than ``k``
    candidates get their list filled with the most popular other items.
    """

    def __init__(self, generators: Mapping[str, rec.Recommender] | None = None,
                 n: int | Mapping[str, int | Mapping[str, int]] = 50,
                 ranker: object = "lightgbm", label_days: int = 30, label_cutoffs: int = 1,
                 tasks: Sequence[str] = TASKS, drop_groups: Sequence[str] = (),
                 validation_share: float = 0.2, feature_options: Mapping | None = None,
                 seed: int = 0) -> None:
        self.generators = generators
        self.n = n
        self.ranker = ranker
        self.label_days = label_days
        self.label_cutoffs = label_cutoffs
        self.tasks = tasks
        self.drop_groups = drop_groups
        self.validation_share = validation_share
        self.feature_options = feature_options
        self.seed = seed

    # -- configuration -----------------------------------------------------------------
    def _check_params(self) -> None:
        check_positive_int(self.label_days, name="label_days")
        check_positive_int(self.label_cutoffs, name="label_cutoffs")
        tasks = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        if not tasks:
            raise ValueError("tasks is empty; use 'all', 'new' or both.")
        for task in tasks:
            check_in(task, TASKS, name="task")
        self.tasks_ = tuple(dict.fromkeys(tasks))
        if (isinstance(self.validation_share, bool)
                or not isinstance(self.validation_share, int | float)
                or not 0 < self.validation_share < 1):
            raise ValueError(f"validation_share must be in (0, 1), got "
                             f"{self.validation_share!r}.")
        groups = list(FEATURE_GROUPS) + ["generators"]
        if isinstance(self.drop_groups, str):
            raise TypeError("drop_groups must be a list of group names, not a string.")
        for group in self.drop_groups:
            check_in(group, groups, name="drop_groups entry")
        rankers = self.ranker if isinstance(self.ranker, Mapping) else {
            task: self.ranker for task in self.tasks_}
        missing = set(self.tasks_) - set(rankers)
        if missing:
            raise ValueError(f"ranker has no entry for task(s) {sorted(missing)}.")
        for ranker in rankers.values():
            if isinstance(ranker, str):
                check_in(ranker, ("lightgbm", "keras"), name="ranker")
            elif not (hasattr(ranker, "fit") and hasattr(ranker, "predict")):
                raise TypeError("ranker must be 'lightgbm', 'keras' or an object with fit "
                                f"and predict, got {type(ranker).__name__}.")
        generators, _ = CandidateGenerator(self.generators, 1)._check()
        if isinstance(self.n, Mapping) and set(self.n) <= set(TASKS):
            missing = set(self.tasks_) - set(self.n)
            if missing:
                raise ValueError(f"n has no entry for task(s) {sorted(missing)}.")
            self.n_ = {task: _check_n(self.n[task], list(generators), f"n[{task!r}]")
                       for task in self.tasks_}
        else:
            self.n_ = dict.fromkeys(self.tasks_, _check_n(self.n, list(generators)))
        if isinstance(self.feature_options, str) or not isinstance(
                self.feature_options or {}, Mapping):
            raise TypeError("feature_options must be a mapping of ranker_features options.")

    def _new_ranker(self, task: str):
        ranker = self.ranker[task] if isinstance(self.ranker, Mapping) else self.ranker
        if isinstance(ranker, str) and ranker == "lightgbm":
            return LightGBMRanker(seed=self.seed)
        if isinstance(ranker, str) and ranker == "keras":
            return KerasListwiseRanker(seed=self.seed)
        return copy.deepcopy(ranker)

    def _columns(self, names: Sequence[str]) -> list[str]:
        groups = feature_groups(names)
        dropped = {c for g in self.drop_groups for c in groups[g]}
        return [c for c in names if c not in dropped]

    # -- fitting -----------------------------------------------------------------------
    def fit(self, interactions: pd.DataFrame, cutoff: object | None = None
            ) -> TwoStageRecommender:
        """Learn from ``interactions``; ``cutoff`` (default: midnight after the last
        interaction) is when recommendations are made, all data must be before it."""
        frame = check_interactions(interactions)
        self._check_params()
        self.cutoff_ = (_cutoff_of(frame) if cutoff is None
                        else check_timestamp(cutoff, name="cutoff"))
        if frame["timestamp"].max() >= self.cutoff_:
            raise ValueError(f"interactions run to {frame['timestamp'].max()}, on or after "
                             f"the cutoff {self.cutoff_}.")
        return super().fit(frame)

    def _fit(self, frame, counts):
        plain = frame.drop(columns=["u", "i"])
        self.examples_ = {task: [] for task in self.tasks_}
        self.label_cutoffs_ = [self.cutoff_ - pd.Timedelta(days=self.label_days * j)
                               for j in range(1, self.label_cutoffs + 1)]
        for number, cutoff in enumerate(self.label_cutoffs_):
            data = plain[plain["timestamp"] < cutoff + pd.Timedelta(days=self.label_days)]
            for task, examples in training_examples(
                    data, cutoff, self.label_days, self.generators, self.n_,
                    tasks=self.tasks_, feature_options=self.feature_options,
                    required=(number == 0)).items():
                self.examples_[task].append(examples)
        self.built_n_ = dict(self.n_)
        self._train_rankers()
        self.generator_ = CandidateGenerator(self.generators, 1).fit(plain)
        self.builder_ = FeatureBuilder(plain, self.cutoff_, **(self.feature_options or {}))
        self._cache = {}

    def _train_rankers(self) -> None:
        self.rankers_, self.validation_ndcg_ = {}, {}
        for task in self.tasks_:
            parts = [ex if self.n_[task] == self.built_n_[task] else ex.restrict(self.n_[task])
                     for ex in self.examples_[task]]
            frame = pd.concat([ex.frame.assign(query=number) for number, ex in
                               enumerate(parts)], ignore_index=True)
            names = self._columns(parts[0].feature_names)
            customers = np.unique(np.concatenate([ex.truth.index.to_numpy() for ex in parts]))
            size = min(max(1, int(round(self.validation_share * len(customers)))),
                       len(customers) - 1)
            held = np.random.default_rng(self.seed).choice(customers, size=size, replace=False) \
                if size > 0 else np.array([], dtype=customers.dtype)
            is_val = frame["user_id"].isin(held).to_numpy()
            fit_part, val_part = (frame[~is_val], frame[is_val]) if is_val.any() \
                else (frame, frame)
            if not fit_part["label"].any():
                raise ValueError(f"no training customer has a relevant item among the "
                                 f"{task!r} candidates; raise n or add data.")
            ranker = self._new_ranker(task)
            ranker.fit(fit_part[names].to_numpy(np.float32), fit_part["label"].to_numpy(),
                       _query_ids(fit_part),
                       validation=(val_part[names].to_numpy(np.float32),
                                   val_part["label"].to_numpy(), _query_ids(val_part)),
                       feature_names=names)
            self.rankers_[task] = ranker
            scores = ranker.predict(val_part[names].to_numpy(np.float32))
            values = []
            for number, ex in enumerate(parts):
                mine = (val_part["query"] == number).to_numpy()
                scored = val_part.loc[mine, ["user_id", "item_id"]].assign(score=scores[mine])
                scored = scored.sort_values(["user_id", "score"], ascending=[True, False],
                                            kind="stable")
                truth = ex.truth[ex.truth.index.isin(held)] if is_val.any() else ex.truth
                if len(truth):
                    values.append(ndcg_at_k(scored, truth))
            self.validation_ndcg_[task] = float(pd.concat(values).mean())

    def with_ranker(self, ranker: object | None = None,
                    drop_groups: Sequence[str] | None = None,
                    n: int | Mapping | None = None,
                    tasks: Sequence[str] | None = None) -> TwoStageRecommender:
        """A copy that shares this model's generators, training examples and feature cache
        but trains new rankers: ``ranker``, ``drop_groups``, ``n`` and ``tasks`` as in the
        constructor (None keeps this model's; ``n`` may not exceed the fitted ``n`` and
        ``tasks`` must be among the fitted ones). Cheap: nothing of stage one is
        recomputed."""
        self._check_fitted()
        other = copy.copy(self)
        if ranker is not None:
            other.ranker = ranker
        if drop_groups is not None:
            other.drop_groups = tuple(drop_groups)
        if n is not None:
            other.n = n
        if tasks is not None:
            other.tasks = tasks
        other._check_params()
        extra = set(other.tasks_) - set(self.tasks_)
        if extra:
            raise ValueError(f"this model was fitted without the task(s) {sorted(extra)}.")
        for task in other.tasks_:
            for name, size in other.n_[task].items():
                if size > self.built_n_[task][name]:
                    raise ValueError(f"n={size} for {name!r} on {task!r} exceeds the n the "
                                     f"model was fitted with ({self.built_n_[task][name]}).")
        other._train_rankers()
        return other

    # -- recommending ------------------------------------------------------------------
    def features(self, user_ids, task: str) -> pd.DataFrame:
        """Candidates and features at the end of the training data for ``task``, for
        the customers ``user_ids`` (distinct ids; the most recent lists of customers are
        cached and shared with the models :meth:`with_ranker` makes)."""
        self._check_fitted()
        check_in(task, self.tasks_, name="task")
        ids = np.asarray(user_ids)
        if len(pd.unique(ids)) != len(ids):
            raise ValueError("user_ids must be distinct.")
        key = (task, ids.dtype.str, ids.tobytes())
        if key not in self._cache:
            while len(self._cache) >= _CACHED_LISTS:
                self._cache.pop(next(iter(self._cache)))
            cands = self.generator_.candidates(ids, exclude_seen=(task == "new"),
                                               n=self.built_n_[task])
            self._cache[key] = self.builder_.transform(cands)
        frame = self._cache[key]
        if self.n_[task] != self.built_n_[task]:
            frame = restrict_candidates(frame, self.n_[task])
        return frame

    def ranked(self, user_ids, task: str) -> pd.DataFrame:
        """Each customer's candidates with the ranker's ``score``, best first, customers
        in the order given."""
        ids = np.asarray(user_ids)
        frame = self.features(ids, task)
        names = self._columns([c for c in frame.columns if c not in ("user_id", "item_id")])
        scores = self.rankers_[task].predict(frame[names].to_numpy(np.float32))
        position = pd.Series(np.arange(len(ids)), index=ids).reindex(frame["user_id"])
        out = frame[["user_id", "item_id"]].assign(score=scores,
                                                    position=position.to_numpy())
        return out.sort_values(["position", "score"], ascending=[True, False],
                               kind="stable").drop(columns="position").reset_index(drop=True)

    def recommend(self, user_ids, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """The top ``k`` items per customer: the ranker's order over the candidates, then
        the most popular other items (past ones, with ``exclude_seen``, only when fewer
        than ``k`` others are left, and then last)."""
        check_positive_int(k, name="k")
        self._check_fitted()
        task = "new" if exclude_seen else "all"
        if task not in self.rankers_:
            raise ValueError(f"this model has no ranker for exclude_seen={exclude_seen} (the "
                             f"{task!r} task); fit it with tasks including {task!r}.")
        n_items = len(self.item_encoder_)
        if k > n_items:
            raise ValueError(f"k={k} exceeds the catalogue of {n_items} items.")
        ids = np.asarray(user_ids)
        codes = self._codes(ids)
        out = np.empty((len(ids), k), dtype=self.items_.dtype)
        known = codes >= 0
        if (~known).any():  # the protocol's popularity ranking for unknown customers
            out[~known] = super().recommend(ids[~known], k, exclude_seen)
        if not known.any():
            return out
        ranked = self.ranked(pd.unique(ids[known]), task)
        top = ranked.groupby("user_id", sort=False).head(k)
        lists = dict(iter(top.groupby("user_id", sort=False)["item_id"]))
        popular = self.items_[np.argsort(-self.popularity_, kind="stable")]
        seen = self.seen_
        for row in np.flatnonzero(known):
            items = list(lists[ids[row]]) if ids[row] in lists else []
            if len(items) < k:
                taken = set(items)
                if exclude_seen:
                    code = codes[row]
                    taken |= set(self.items_[seen.indices[seen.indptr[code]:
                                                          seen.indptr[code + 1]]])
                extra = [item for item in popular[:k + len(taken)] if item not in taken]
                items += extra[:k - len(items)]
            if len(items) < k:  # fewer than k items not bought: the bought ones last
                chosen = set(items)
                items += [item for item in popular if item not in chosen][:k - len(items)]
            out[row] = items
        return out

    def _score(self, users):
        """Catalogue scores for the protocol: the candidates above every other item, in
        the ranker's order (the ``"all"`` ranker if trained), the rest by popularity."""
        task = "all" if "all" in self.rankers_ else "new"
        ids = self.user_encoder_.classes_.to_numpy()[users]
        ranked = self.ranked(ids, task)
        out = np.broadcast_to(self.popularity_ / max(float(self.popularity_.max()), 1.0),
                              (len(users), len(self.items_))).astype(np.float32).copy()
        rows = pd.Series(np.arange(len(ids)), index=ids).reindex(ranked["user_id"]).to_numpy()
        cols = self.item_encoder_.transform(ranked["item_id"].to_numpy(dtype=object))
        position = ranked.groupby("user_id", sort=False).cumcount().to_numpy()
        out[rows, cols] = 2.0 + 1.0 / (1.0 + position)
        return out

    def feature_importance(self, task: str) -> pd.Series:
        """Normalised gain of each feature in the ``task`` ranker (LightGBM only)."""
        self._check_fitted()
        check_in(task, self.rankers_, name="task")
        ranker = self.rankers_[task]
        if not hasattr(ranker, "feature_importances_"):
            raise ValueError(f"the {type(ranker).__name__} has no feature importances.")
        return pd.Series(ranker.feature_importances_, index=ranker.feature_names_,
                         name="gain").sort_values(ascending=False, kind="stable")


# ------------------------------------------------------------------------- rolling origin


@dataclass
class TwoStageResult:
    """What :func:`rolling_two_stage` measured; parts are keyed by window name first.

    ``per_user[window][model][task]`` are per-customer test metrics (as
    :func:`companion.recsys.ranking.evaluate` returns them) of the LightGBM and Keras rankers,
    ``ablation[window][group][task]`` those of the LightGBM ranker retrained without a
    feature group, ``recall`` the candidate recall on the test windows, ``tuning`` the
    validation NDCG@10 of each ``n`` (held-out customers of the training cutoff),
    ``chosen_n[window][task]`` the ``n`` kept, ``importance[window][task]`` the
    LightGBM gain of each feature, ``training`` the size of the training data and the
    rankers' trees and epochs, ``seconds`` CPU and wall times.
    """

    windows: list[str]
    per_user: dict[str, dict[str, dict[str, pd.DataFrame]]]
    ablation: dict[str, dict[str, dict[str, pd.DataFrame]]]
    recall: pd.DataFrame
    tuning: pd.DataFrame
    chosen_n: dict[str, dict[str, int]]
    importance: dict[str, dict[str, pd.Series]]
    training: pd.DataFrame
    seconds: pd.DataFrame

    def importance_table(self) -> pd.DataFrame:
        """Mean normalised gain over windows, one column per task, with each feature's
        group; sorted by the mean over tasks."""
        tasks = list(next(iter(self.importance.values())))
        table = pd.DataFrame({task: pd.concat([self.importance[w][task] for w in self.windows],
                                              axis=1).fillna(0.0).mean(axis=1)
                              for task in tasks}).fillna(0.0)
        groups = feature_groups(table.index)
        table.insert(0, "group", [next(g for g, cols in groups.items() if f in cols)
                                  for f in table.index])
        return table.loc[table[tasks].mean(axis=1).sort_values(ascending=False,
                                                               kind="stable").index]


def rolling_two_stage(interactions: pd.DataFrame, windows: Sequence[tuple[object, object]]
                      | None = None, *, generators: Mapping[str, rec.Recommender] | None = None,
                      n_grid: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
                      keras: bool = True,
                      ablation: bool = True, seed: int = 0, progress: bool = True
                      ) -> TwoStageResult:
    """The two-stage recommender on each test window of a rolling-origin evaluation.

    For each window of :func:`companion.recsys.experiments.rolling_tasks` (default
    :data:`companion.recsys.experiments.ROLLING_WINDOWS`), with test window ``[c, c + L)``:

    1. fit a :class:`TwoStageRecommender` on everything before ``c`` with
       ``label_days = L`` (so its ranker learns from the labels of ``[c - L, c)``, the
       window's validation period, with features and generators from before ``c - L``)
       and, for each task, ``n`` the largest of ``n_grid`` (one list, or a mapping task
       -> list; default :data:`N_GRID`);
    2. for each task pick ``n`` from its grid by the validation NDCG@10 of the held-out
       customers of that training cutoff (:meth:`TwoStageRecommender.with_ranker`);
    3. score it once on the test window; likewise a :class:`KerasListwiseRanker` on the
       same candidates and features (``keras``) and, for the ablation, the LightGBM
       ranker retrained without each feature group, with the number of trees the full
       ranker chose (``ablation``). A group whose features are constant in a task's
       training examples (the season group with one label cutoff, the pair group on
       "new") cannot be split on, so that task's ranker without it is the full ranker
       and is not retrained.

    Nothing of a test window is read before its scoring. Candidate recall is measured
    on the test windows (it is the ceiling of stage two, not a tuning input).
    """
    import time

    from tqdm.auto import tqdm

    from companion.recsys import experiments, ranking

    windows = experiments.ROLLING_WINDOWS if windows is None else windows
    grids = _check_grid(N_GRID if n_grid is None else n_grid)
    origins = experiments.rolling_tasks(interactions, windows)
    groups = list(FEATURE_GROUPS) + ["generators"]
    per_user, abl, importance, chosen = {}, {}, {}, {}
    recall_rows, tuning_rows, training_rows, seconds_rows = [], [], [], []
    steps = 2 + int(keras) + (len(groups) if ablation else 0)
    bar = tqdm(total=len(origins) * steps, desc="two-stage", disable=not progress,
               leave=False)
    depth = max(len(grid) for grid in grids.values())
    for origin in origins:
        w, test = origin.name, origin.test
        label_days = int(np.ceil((origin.test_end - origin.test_start)
                                 / pd.Timedelta(days=1)))
        times: dict[str, float] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        model = TwoStageRecommender(generators, n={t: g[-1] for t, g in grids.items()},
                                    label_days=label_days, seed=seed).fit(
            test.train, cutoff=origin.test_start)
        # variant k uses the k-th smallest n of each task's grid (its largest when shorter)
        variants = {}  # (task, n) -> the model whose ranker for that task used n
        for k in range(depth):
            sizes = {t: g[min(k, len(g) - 1)] for t, g in grids.items()}
            variant = model if k == depth - 1 else model.with_ranker(n=sizes)
            for task, size in sizes.items():
                variants.setdefault((task, size), variant)
        times["fit s"] = time.process_time() - cpu
        times["fit wall s"] = time.perf_counter() - wall
        bar.update()
        chosen[w] = {}
        for task, grid in grids.items():
            for size in grid:
                tuning_rows.append({"window": w, "task": task, "n": size,
                                    "validation NDCG@10":
                                        variants[task, size].validation_ndcg_[task]})
            chosen[w][task] = max(grid, key=lambda size, t=task:
                                  variants[t, size].validation_ndcg_[t])
        final = copy.copy(model)  # each task's ranker from the variant its grid chose
        final.n = dict(chosen[w])
        final._check_params()
        final.rankers_ = {t: variants[t, chosen[w][t]].rankers_[t] for t in TASKS}
        final.validation_ndcg_ = {t: variants[t, chosen[w][t]].validation_ndcg_[t]
                                  for t in TASKS}
        # recommending for every test customer from an empty feature cache (the
        # evaluation below then finds the same customers' features in the cache)
        final._cache.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        final.recommend(test.users("all"), k=10, exclude_seen=False)
        times["recommend s"] = time.process_time() - cpu
        times["recommend wall s"] = time.perf_counter() - wall
        times["customers"] = len(test.users("all"))
        per_user[w] = {"two-stage LightGBM": ranking.evaluate(final, test)}
        importance[w] = {task: final.feature_importance(task) for task in TASKS}
        for task in TASKS:
            frame = model.features(test.users(task), task)
            truth = test.truth[task]
            for size in grids[task]:
                part = frame if size == grids[task][-1] else restrict_candidates(frame, size)
                row = {"window": w, "task": task, "n": size,
                       "candidates per customer": len(part) / len(truth),
                       "candidate recall": _pooled_recall(part, truth)}
                for name in final.generator_.models_:
                    alone = part[part[f"{name} rank"] <= size]
                    row[f"recall {name}"] = _pooled_recall(alone, truth)
                recall_rows.append(row)
            examples = final.examples_[task][0]
            training_rows.append({
                "window": w, "task": task, "label cutoff": examples.cutoff,
                "customers": len(examples.truth), "n": chosen[w][task],
                "rows": int(sum(examples.frame[f"{g} rank"] <= chosen[w][task]
                                for g in final.generator_.models_).astype(bool).sum()),
                "trees": final.rankers_[task].best_iteration_})
        bar.update()
        if keras:
            cpu = time.process_time()
            neural = final.with_ranker("keras")
            per_user[w]["two-stage Keras"] = ranking.evaluate(neural, test)
            times["Keras s"] = time.process_time() - cpu
            for row in training_rows[-len(TASKS):]:
                row["Keras epochs"] = neural.rankers_[row["task"]].best_epoch_
            bar.update()
        if ablation:
            cpu = time.process_time()
            abl[w] = {}
            same_size = {task: LightGBMRanker(n_estimators=final.rankers_[task].best_iteration_,
                                              early_stopping_rounds=None, seed=seed)
                         for task in TASKS}
            constant = {t: _constant_groups(final, t) for t in TASKS}
            for group in groups:
                # a group constant in a task's training examples gives nothing to split
                # on: without it, that task's ranker is the full one
                varying = [t for t in TASKS if group not in constant[t]]
                abl[w][group] = dict(per_user[w]["two-stage LightGBM"])
                if varying:
                    reduced = final.with_ranker(same_size, drop_groups=[group], tasks=varying)
                    abl[w][group].update(ranking.evaluate(reduced, test, tasks=tuple(varying)))
                bar.update()
            times["ablation s"] = time.process_time() - cpu
        seconds_rows.append({"window": w, **times})
    bar.close()
    return TwoStageResult(
        [o.name for o in origins], per_user, abl,
        pd.DataFrame(recall_rows).set_index(["window", "task", "n"]),
        pd.DataFrame(tuning_rows).set_index(["window", "task", "n"]), chosen, importance,
        pd.DataFrame(training_rows).set_index(["window", "task"]),
        pd.DataFrame(seconds_rows).set_index("window"))


def _constant_groups(model: TwoStageRecommender, task: str) -> set[str]:
    """The feature groups whose every feature takes one value (NaN counts as a value) in
    the training examples of ``task``."""
    frames = [ex.frame for ex in model.examples_[task]]
    names = model.examples_[task][0].feature_names
    varies = {c for c in names
              if pd.concat([f[c] for f in frames]).nunique(dropna=False) > 1}
    return {group for group, columns in feature_groups(names).items()
            if not set(columns) & varies}


def _check_grid(n_grid) -> dict[str, list[int]]:
    """``n_grid`` as a mapping task -> sorted distinct positive ints."""
    raw = n_grid if isinstance(n_grid, Mapping) else dict.fromkeys(TASKS, n_grid)
    if set(raw) != set(TASKS):
        raise ValueError(f"n_grid must give a list for each task {list(TASKS)}, got "
                         f"{sorted(raw)}.")
    out = {}
    for task in TASKS:
        if isinstance(raw[task], str) or not len(raw[task]):
            raise ValueError(f"n_grid for {task!r} must be a non-empty list of integers.")
        out[task] = sorted({check_positive_int(v, name="n_grid entry") for v in raw[task]})
    return out


def _pooled_recall(candidates: pd.DataFrame, truth: pd.Series) -> float:
    """Relevant items among the candidates over all relevant items (all customers)."""
    per_customer = candidate_recall(candidates, truth)
    sizes = truth.map(len)
    return float((per_customer * sizes).sum() / sizes.sum())
