"""A retention simulator calibrated to the real shop: does a better recommender bring
customers back?

Observational purchase logs cannot answer that question: they hold no record of what each
customer was shown, so the effect of a slate on the customer's return cannot be separated
from who the customer is. The simulator makes the mechanism explicit and measurable.

The simulated shop (a :class:`ShopWorld`) runs in weeks.

* **Who visits.** A customer who has bought before returns in week ``t`` with probability
  ``sigmoid(a_u + s_t + f(gap) + relevance_effect * R_u)``: a customer's own propensity
  ``a_u``, the season ``s_t`` (week of the year), a decreasing function ``f`` of the weeks
  since the last purchase, and ``R_u``, the relevance of the slates the customer saw on
  recent visits. ``a_u``, ``s_t`` and ``f`` are fitted by penalised maximum likelihood on a
  real period (:func:`fit_hazard`); new customers arrive in the weeks in which real
  customers made their first purchase. A visit here is a week with a purchase, because
  the logs record nothing else.
* **What they buy.** A visitor buys a basket whose size is drawn from their own real
  weekly baskets. The items are drawn without replacement from a multinomial logit over
  the available catalogue: taste (the dot product of customer and product vectors of a
  factor model fitted on the real purchases), the product's popularity and season, how
  often the customer bought it before, and a boost for products on the slate. The
  coefficients are fitted by maximum likelihood on the real baskets (:func:`fit_choice`).
* **What they see.** A policy (a recommender retrained every ``retrain_weeks`` on the
  logs, the simulated ones included: the feedback loop) shows each visitor a slate of
  ``slate_size`` products. The share of the slate the customer bought is that visit's
  relevance; ``R_u`` is its exponentially weighted average over visits.

The parameters that the data cannot identify are collected in :class:`Assumptions`, each
with a value and a reason. Randomness uses common random numbers: the draws that decide
who visits and how much they buy depend only on the seed, the week and the customer, not
on the policy, so two policies differ only through what they show; with
``relevance_effect=0`` every policy produces exactly the same visits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions

#: left edges (in weeks) of the bins of the time since the last purchase
GAP_EDGES = (1, 2, 3, 4, 5, 7, 9, 13, 17, 27, 53)
WEEKS_PER_YEAR = 52


def gap_bin(gap: np.ndarray) -> np.ndarray:
    """Index of each gap (weeks since the last purchase, >= 1) in :data:`GAP_EDGES`."""
    gap = np.asarray(gap)
    if (gap < 1).any():
        raise ValueError(f"gaps must be at least one week, got minimum {gap.min()}.")
    return np.searchsorted(np.asarray(GAP_EDGES), gap, side="right") - 1


def gap_labels() -> list[str]:
    """Readable labels of the gap bins ("1", "2", ..., "5-6", ..., "53+")."""
    out = []
    for lo, hi in zip(GAP_EDGES, (*GAP_EDGES[1:], None), strict=True):
        out.append(f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"))
    return out


# ----------------------------------------------------------------------------- assumptions


@dataclass(frozen=True)
class Assumptions:
    """What the simulator assumes where the data say nothing, with the reason for each value.

    Attributes
    ----------
    slate_size
        Products shown per visit: 10, the length of the top-10 lists chapter 5 evaluates.
    relevance_effect
        How strongly experienced relevance raises the weekly log-odds of returning
        (``gamma``). Purchase logs without exposure logs cannot identify it. The default 0.5
        means that a customer who bought every product of their recent slates (``R = 1``)
        returns each week with ``exp(0.5) = 1.65`` times the odds of one who saw none, and
        one wanted product in ten (``R = 0.1``) raises the odds by 5%. It was chosen so that
        the best policy lowers 90-day churn by a few percentage points, the order of
        magnitude reported for deployed recommenders (Gomez-Uribe and Hunt, 2015; Jannach
        and Jugovac, 2019). The chapter shows how the conclusions move with it.
    relevance_memory
        Weight of the newest visit in the moving average ``R_u`` (0.5: the last visit counts
        as much as all earlier ones together; experiences fade within a few visits).
    exposure_boost
        Added to the log-odds of choosing a product that is on the slate: ``log 2`` (showing a
        product doubles the odds that a visitor picks it). Not identifiable from these logs;
        its size sets how much the slates shape purchases and so the feedback loop.
    retrain_weeks
        Weeks between refits of a learning policy: 4 (monthly, as many shops do).
    history_weeks
        Weeks of logs a policy is refitted on: 52 (chapter 5.5's scaling study found a year
        of history better than two for matrix factorisation; it also bounds the cost).
    """

    slate_size: int = 10
    relevance_effect: float = 0.5
    relevance_memory: float = 0.5
    exposure_boost: float = float(np.log(2.0))
    retrain_weeks: int = 4
    history_weeks: int = 52

    def __post_init__(self) -> None:
        check_positive_int(self.slate_size, name="slate_size")
        check_positive_int(self.retrain_weeks, name="retrain_weeks")
        check_positive_int(self.history_weeks, name="history_weeks")
        for name in ("relevance_effect", "exposure_boost"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not 0 < self.relevance_memory <= 1:
            raise ValueError(f"relevance_memory must be in (0, 1], got "
                             f"{self.relevance_memory!r}.")

    def table(self) -> pd.DataFrame:
        """One row per assumption with its value (for the chapter)."""
        return pd.DataFrame({"value": {f.name: getattr(self, f.name) for f in fields(self)}})


# ------------------------------------------------------------------------- weekly activity


@dataclass
class WeeklyActivity:
    """Purchases grouped by customer and week, on a fixed weekly grid.

    Attributes
    ----------
    origin
        Start of week 0.
    users, items
        Customer ids and item ids (the row and column order of ``counts``).
    visits
        One row per (customer code ``u``, ``week``) with a purchase: the number of distinct
        items and the value bought.
    lines
        One row per (``u``, ``week``, item code ``i``) bought.
    """

    origin: pd.Timestamp
    users: np.ndarray
    items: np.ndarray
    visits: pd.DataFrame
    lines: pd.DataFrame

    @property
    def n_weeks(self) -> int:
        return int(self.visits["week"].max()) + 1

    def active(self, n_weeks: int | None = None) -> np.ndarray:
        """Boolean matrix customers x weeks: whether the customer bought that week."""
        n_weeks = self.n_weeks if n_weeks is None else n_weeks
        out = np.zeros((len(self.users), n_weeks), dtype=bool)
        v = self.visits[self.visits["week"] < n_weeks]
        out[v["u"].to_numpy(), v["week"].to_numpy()] = True
        return out


def weekly_activity(interactions: pd.DataFrame, origin: object | None = None) -> WeeklyActivity:
    """Group interactions into customer-weeks counted from ``origin`` (default: the
    first day of the data)."""
    frame = check_interactions(interactions)
    origin = (frame["timestamp"].min().normalize() if origin is None
              else check_timestamp(origin, name="origin"))
    if frame["timestamp"].min() < origin:
        raise ValueError(f"origin={origin.date()} is after the first interaction "
                         f"({frame['timestamp'].min()}).")
    users, u = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    items, i = np.unique(frame["item_id"].astype(str).to_numpy(), return_inverse=True)
    week = ((frame["timestamp"] - origin).dt.days // 7).to_numpy()
    value = frame["value"].to_numpy(float) if "value" in frame else np.zeros(len(frame))
    lines = (pd.DataFrame({"u": u, "week": week, "i": i, "value": value})
             .groupby(["u", "week", "i"], sort=True)["value"].sum().reset_index())
    visits = (lines.groupby(["u", "week"], sort=True)
              .agg(items=("i", "size"), value=("value", "sum")).reset_index())
    return WeeklyActivity(origin, users, items, visits, lines)


def hazard_panel(active: np.ndarray, weeks: range) -> pd.DataFrame:
    """Customer-weeks at risk of a return: one row per customer and week in ``weeks``
    after the customer's first purchase, with the weeks since the last purchase (``gap``)
    and whether the customer bought (``y``)."""
    active = np.asarray(active, dtype=bool)
    if active.ndim != 2:
        raise ValueError(f"active must be customers x weeks, got shape {active.shape}.")
    n_users, n_weeks = active.shape
    if weeks.start < 1 or weeks.stop > n_weeks:
        raise ValueError(f"weeks {weeks} must lie within 1..{n_weeks - 1}.")
    idx = np.where(active, np.arange(n_weeks), -1)
    last = np.maximum.accumulate(idx, axis=1)  # last active week up to and including w
    cols = np.arange(weeks.start, weeks.stop)
    prev = last[:, cols - 1]  # last purchase strictly before w
    users, pos = np.nonzero(prev >= 0)
    week = cols[pos]
    return pd.DataFrame({"u": users, "week": week, "gap": week - prev[users, pos],
                         "y": active[users, week]})


# ------------------------------------------------------------------------ the return hazard

#: left edges of the bins of visits in the last 13 weeks and in the 13 weeks before those
RECENT_EDGES = (0, 1, 2, 3, 5, 8, 13)
EARLIER_EDGES = (0, 1, 2, 4, 7)


def _bins(values: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), values, side="right") - 1


#: a first purchase counts as a newcomer's if it came at least this many weeks into the data
NEWCOMER_AFTER = 26


@dataclass
class HazardState:
    """What the return model reads about a customer at the start of a week."""

    week: np.ndarray  # index on the weekly grid
    gap: np.ndarray  # weeks since the last purchase (>= 1)
    recent: np.ndarray  # purchase weeks among the last 13
    earlier: np.ndarray  # purchase weeks among the 13 before those (-1: unknown)
    newcomer: np.ndarray  # bought once so far, first purchase after NEWCOMER_AFTER weeks

    @classmethod
    def from_active(cls, active: np.ndarray, users: np.ndarray, week: np.ndarray,
                    last: np.ndarray) -> HazardState:
        """State of ``users`` in ``week`` (arrays) from a customers x weeks matrix."""
        cum = np.concatenate([np.zeros((active.shape[0], 1), np.int32),
                              np.cumsum(active, axis=1, dtype=np.int32)], axis=1)
        w13, w26 = np.maximum(week - 13, 0), np.maximum(week - 26, 0)
        earlier = np.where(week >= 26, cum[users, w13] - cum[users, w26], -1)
        first = active.argmax(axis=1)[users]
        newcomer = (first >= NEWCOMER_AFTER) & (cum[users, week] == 1)
        return cls(week, week - last, cum[users, week] - cum[users, w13], earlier, newcomer)

    def codes(self) -> list[np.ndarray]:
        earlier = np.where(self.earlier < 0, len(EARLIER_EDGES),
                           _bins(np.maximum(self.earlier, 0), EARLIER_EDGES))
        gap = gap_bin(self.gap)
        return [gap, _bins(self.recent, RECENT_EDGES), earlier,
                np.asarray(self.week) % WEEKS_PER_YEAR,
                np.where(self.newcomer, gap, len(GAP_EDGES))]


_HAZARD_SIZES = (len(GAP_EDGES), len(RECENT_EDGES), len(EARLIER_EDGES) + 1, WEEKS_PER_YEAR,
                 len(GAP_EDGES) + 1)
_HAZARD_PARTS = ("gap", "recent", "earlier", "season", "newcomer")


@dataclass
class Hazard:
    """Weekly return model:
    ``logit p = intercept + gap + recent + earlier + season + newcomer``.

    Each term is an effect per bin: weeks since the last purchase (:data:`GAP_EDGES`),
    purchase weeks among the last 13 (:data:`RECENT_EDGES`), among the 13 before those
    (:data:`EARLIER_EDGES`, last entry: unknown because the data start later), the week of
    the year, and, for newcomers (one purchase so far, made at least
    :data:`NEWCOMER_AFTER` weeks into the data), an extra effect per gap bin (the last
    entry, for everyone else, is the reference). ``extra`` holds coefficients of extra
    columns (the relevance effect when it is estimated from simulated logs).
    """

    intercept: float
    gap: np.ndarray
    recent: np.ndarray
    earlier: np.ndarray
    season: np.ndarray
    newcomer: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)

    def logit(self, state: HazardState) -> np.ndarray:
        """Log-odds of a purchase in the state's week, before any relevance term."""
        gap, recent, earlier, season, newcomer = state.codes()
        return (self.intercept + self.gap[gap] + self.recent[recent] + self.earlier[earlier]
                + self.season[season] + self.newcomer[newcomer])

    def table(self) -> pd.DataFrame:
        """The effects as a long table (term, bin, effect) for the chapter."""
        labels = {
            "gap": gap_labels(),
            "recent": _edge_labels(RECENT_EDGES),
            "earlier": [*_edge_labels(EARLIER_EDGES), "unknown"],
            "season": [str(w) for w in range(WEEKS_PER_YEAR)],
            "newcomer": [*gap_labels(), "not a newcomer"],
        }
        rows = [("intercept", "", self.intercept)]
        for part in _HAZARD_PARTS:
            rows += [(part, label, float(v)) for label, v in zip(labels[part], getattr(self, part),
                                                                 strict=True)]
        rows += [(name, "", v) for name, v in self.extra.items()]
        return pd.DataFrame(rows, columns=["term", "bin", "effect"])


def _edge_labels(edges: Sequence[int]) -> list[str]:
    out = []
    for lo, hi in zip(edges, (*edges[1:], None), strict=True):
        out.append(f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"))
    return out


def _one_hot(codes: list[np.ndarray]) -> sp.csr_matrix:
    n = len(codes[0])
    rows = np.arange(n)
    return sp.hstack([sp.csr_matrix((np.ones(n), (rows, c)), shape=(n, size))
                      for c, size in zip(codes, _HAZARD_SIZES, strict=True)], format="csr")


def fit_hazard(active: np.ndarray, weeks: range, *, C: float = 10.0,
               extra: np.ndarray | None = None, extra_names: Sequence[str] = ()) -> Hazard:
    """Fit :class:`Hazard` by L2-penalised maximum likelihood on customer-weeks.

    ``active`` is customers x weeks (:meth:`WeeklyActivity.active`); every week in
    ``weeks`` after a customer's first purchase is one observation. Without ``extra``
    columns the observations are pooled into cells of identical features (binomial
    counts), which gives the same estimate in a fraction of the time. ``extra`` is an
    array aligned with :func:`hazard_panel`'s rows (for example the relevance ``R`` of
    simulated customers).
    """
    from sklearn.linear_model import LogisticRegression

    if not C > 0:
        raise ValueError(f"C must be positive, got {C!r}.")
    panel = hazard_panel(active, weeks)
    if panel.empty or panel["y"].nunique() < 2:
        raise ValueError("the panel needs weeks with and without purchases; widen `weeks`.")
    state = HazardState.from_active(active, panel["u"].to_numpy(), panel["week"].to_numpy(),
                                    panel["week"].to_numpy() - panel["gap"].to_numpy())
    codes = state.codes()
    y = panel["y"].to_numpy().astype(float)
    model = LogisticRegression(C=C, max_iter=5000, tol=1e-9)
    if extra is None:
        key = np.ravel_multi_index(codes, _HAZARD_SIZES)
        cells, inverse = np.unique(key, return_inverse=True)
        n = np.bincount(inverse).astype(float)
        hits = np.bincount(inverse, weights=y)
        design = _one_hot(list(np.unravel_index(cells, _HAZARD_SIZES)))
        both = sp.vstack([design, design], format="csr")
        label = np.r_[np.ones(len(cells)), np.zeros(len(cells))]
        weight = np.r_[hits, n - hits]
        keep = weight > 0
        model.fit(both[keep], label[keep], sample_weight=weight[keep])
    else:
        extra = np.asarray(extra, dtype=float).reshape(len(panel), -1)
        if extra.shape[1] != len(extra_names):
            raise ValueError(f"extra has {extra.shape[1]} column(s) but {len(extra_names)} "
                             "name(s) were given.")
        design = sp.hstack([_one_hot(codes), sp.csr_matrix(extra)], format="csr")
        model.fit(design, y.astype(int))
    coef = model.coef_[0]
    parts, lo = {}, 0
    for name, size in zip(_HAZARD_PARTS, _HAZARD_SIZES, strict=True):
        parts[name] = coef[lo:lo + size].copy()
        lo += size
    seen = np.bincount(codes[3], minlength=WEEKS_PER_YEAR) > 0
    parts["season"][~seen] = parts["season"][seen].mean()
    extras = {name: float(c) for name, c in zip(extra_names, coef[lo:], strict=True)}
    return Hazard(float(model.intercept_[0]), **parts, extra=extras)


# ------------------------------------------------------------------------ the choice model


@dataclass
class Choice:
    """Coefficients of the multinomial logit that picks the items of a basket.

    The utility of item ``i`` for customer ``u`` in week ``t`` is
    ``taste * (x_u . v_i) + popularity * log(buyers_i) + season * s_i(month)
    + repeat * log(1 + n_ui) (+ exposure_boost if i is on the slate)``, where ``x_u`` and
    ``v_i`` are the factor model's vectors, ``buyers_i`` the item's distinct buyers in the
    fit period, ``s_i`` its monthly seasonality and ``n_ui`` how often ``u`` bought ``i``
    before. The first three are maximum-likelihood estimates; ``repeat`` is then set so
    that baskets drawn without replacement match the real ``repeat_share`` of the sampled
    visits (the likelihood treats a basket's items as independent draws).
    """

    taste: float
    popularity: float
    season: float
    repeat: float
    log_likelihood: float = float("nan")
    baseline_log_likelihood: float = float("nan")
    repeat_share: float = float("nan")

    def table(self) -> pd.DataFrame:
        names = ("taste", "popularity", "season", "repeat")
        return pd.DataFrame({"coefficient": {n: getattr(self, n) for n in names}})


def item_seasonality(months: np.ndarray, items: np.ndarray, n_items: int,
                     shrink: float = 5.0) -> np.ndarray:
    """Log ratio of each item's sales in each calendar month to its average month.

    ``months`` (0-11) and ``items`` (codes) describe purchase lines. Counts are shrunk
    towards the item's average by ``shrink`` pseudo-purchases per month, so rarely sold
    items get a flat profile. Returns ``(n_items, 12)``.
    """
    counts = np.zeros((n_items, 12))
    np.add.at(counts, (items, months), 1.0)
    mean = counts.sum(axis=1, keepdims=True) / 12
    return np.log((counts + shrink) / (mean + shrink))


def _fit_choice_coefficients(features: list[np.ndarray], chosen: list[np.ndarray],
                             available: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Maximum likelihood of the basket logit (items treated as independent draws).

    ``features``: four arrays (visits x items); ``chosen``: item codes per visit;
    ``available``: visits x items mask. Returns the coefficients, the log-likelihood and
    the log-likelihood of the popularity-only model (the other coefficients at zero).
    """
    from scipy.optimize import minimize

    stack = np.stack([np.where(available, f, 0.0) for f in features])
    sizes = np.array([len(c) for c in chosen], dtype=float)
    rows = np.repeat(np.arange(len(chosen)), sizes.astype(int))
    chosen_sum = stack[:, rows, np.concatenate(chosen)].sum(axis=1)
    mask = np.where(available, 0.0, -np.inf)

    def objective(beta, free=slice(None)):
        full = np.zeros(4)
        full[free] = beta
        util = np.tensordot(full, stack, axes=1) + mask
        top = util.max(axis=1, keepdims=True)
        prob = np.exp(util - top)
        total = prob.sum(axis=1, keepdims=True)
        lse = (np.log(total) + top)[:, 0]
        prob /= total
        expected = np.einsum("kvi,vi->kv", stack, prob)
        ll = full @ chosen_sum - sizes @ lse
        grad = chosen_sum - expected @ sizes
        return -ll, -grad[free]

    res = minimize(objective, np.array([0.0, 1.0, 0.0, 0.0]), jac=True, method="L-BFGS-B")
    ref = minimize(objective, np.array([1.0]), args=(slice(1, 2),), jac=True,
                   method="L-BFGS-B")
    if not (res.success and ref.success):
        raise RuntimeError(f"the choice model did not converge: {res.message}")
    return res.x, float(-res.fun), float(-ref.fun)


# ------------------------------------------------------------------------------- the world


@dataclass
class ShopWorld:
    """Everything the simulator knows about the shop, calibrated on real purchases.

    Customers and weeks follow the real data: a customer enters a simulation in the week
    of their first real purchase, and starts with their real history before the
    simulation's first week. Items are the products sold in the fit period, each on sale
    between its first and last real sale.
    """

    origin: pd.Timestamp
    users: np.ndarray
    items: np.ndarray
    first_week: np.ndarray
    real_active: np.ndarray
    real: pd.DataFrame  # compact real interactions: u, i (world code), timestamp, value ...
    taste: np.ndarray
    item_vectors: np.ndarray
    log_popularity: np.ndarray
    item_season: np.ndarray
    available_from: np.ndarray
    available_until: np.ndarray
    hazard: Hazard
    choice: Choice
    basket_sizes: np.ndarray  # concatenated per customer
    basket_offsets: np.ndarray  # customer u's sizes: basket_sizes[offsets[u]:offsets[u+1]]
    basket_pool: np.ndarray  # sizes for customers without their own
    item_value: np.ndarray
    value_scale: np.ndarray
    fit_weeks: tuple[int, int]
    month_of_week: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def date(self, week: int) -> pd.Timestamp:
        """First day of a week of the grid."""
        return self.origin + pd.Timedelta(weeks=int(week))

    def week_of(self, date: object) -> int:
        """The week of the grid that holds ``date``."""
        return int((check_timestamp(date, name="date") - self.origin).days // 7)

    def history(self, start: int) -> pd.DataFrame:
        """Real interactions before week ``start`` in the companion's interactions schema
        (products outside the world's catalogue left out)."""
        part = self.real[self.real["week"] < start]
        return pd.DataFrame({
            "user_id": self.users[part["u"].to_numpy()],
            "item_id": self.items[part["i"].to_numpy()],
            "timestamp": part["timestamp"].to_numpy(),
            "invoice": part["invoice"].to_numpy(),
            "quantity": part["quantity"].to_numpy(),
            "value": part["value"].to_numpy(),
        })

    def summary(self) -> pd.DataFrame:
        """Sizes and periods, for the chapter."""
        lo, hi = self.fit_weeks
        return pd.DataFrame({"value": {
            "customers": self.n_users,
            "products": self.n_items,
            "fit period": f"{self.date(lo).date()} to "
                          f"{(self.date(hi) - pd.Timedelta(days=1)).date()}",
            "taste dimensions": self.taste.shape[1],
        }})


def _taste_factors(lines: pd.DataFrame, n_users: int, n_items: int, dim: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """PureSVD (Cremonesi et al., 2010): a truncated SVD of the customers x items matrix
    of log purchase counts; customer vectors are ``X V``, item vectors ``V``."""
    from scipy.sparse.linalg import svds

    counts = sp.csr_matrix((np.ones(len(lines)), (lines["u"], lines["i"])),
                           shape=(n_users, n_items))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(min(counts.shape))
    _, _, vt = svds(counts, k=dim, v0=v0, random_state=seed)
    vectors = vt.T[:, ::-1].copy()
    # fix the sign of each factor so that results do not depend on the solver
    vectors *= np.sign(vectors.sum(axis=0, keepdims=True) + 1e-12)
    return np.asarray(counts @ vectors, dtype=np.float32), vectors.astype(np.float32)


def calibrate(interactions: pd.DataFrame, *, fit_weeks: tuple[int, int] = (13, 65),
              dim: int = 32, choice_visits: int = 1500, seed: int = 0) -> ShopWorld:
    """Build a :class:`ShopWorld` from real interactions.

    Parameters
    ----------
    interactions
        The real purchases (:func:`companion.data.preprocessing.to_interactions`).
    fit_weeks
        ``(first, end)`` weeks of the grid (week 0 starts on the first day of the data)
        on which the behaviour is fitted. The default, weeks 13 to 64, is March 2010 to
        February 2011 on Online Retail II + Online Retail: a whole year, so that every week
        of the season is seen once, starting a quarter after the data so that the last 13
        weeks of each customer are observed.
    dim
        Dimensions of the taste factors.
    choice_visits
        Real customer-weeks sampled from the fit period to fit the choice model.
    seed
        Seed of the sampling and of the taste vectors given to customers without history.
    """
    frame = check_interactions(interactions)
    check_positive_int(dim, name="dim")
    lo, hi = fit_weeks
    activity = weekly_activity(frame)
    if not 13 <= lo < hi <= activity.n_weeks:
        raise ValueError(f"fit_weeks={fit_weeks} must satisfy 13 <= first < end <= "
                         f"{activity.n_weeks} (the weeks in the data).")
    if hi - lo < WEEKS_PER_YEAR:
        raise ValueError(f"fit_weeks={fit_weeks} spans {hi - lo} weeks; the season needs "
                         f"{WEEKS_PER_YEAR}.")
    rng = np.random.default_rng(seed)
    active = activity.active()
    n_users = len(activity.users)
    first_week = active.argmax(axis=1)

    # the catalogue: items sold before the end of the fit period
    lines = activity.lines
    fit_lines = lines[lines["week"] < hi]
    world_items = np.unique(fit_lines["i"].to_numpy())
    code = np.full(len(activity.items), -1)
    code[world_items] = np.arange(len(world_items))
    lines = lines.assign(i=code[lines["i"].to_numpy()])
    lines = lines[lines["i"] >= 0]
    fit_lines = lines[lines["week"] < hi]
    n_items = len(world_items)
    span = lines.groupby("i")["week"].agg(["min", "max"])

    # tastes, popularity, season
    taste, vectors = _taste_factors(fit_lines, n_users, n_items, dim, seed)
    known = np.zeros(n_users, dtype=bool)
    known[fit_lines["u"].unique()] = True
    donors = np.flatnonzero(known)
    taste[~known] = taste[rng.choice(donors, size=(~known).sum())]
    buyers = fit_lines.groupby("i")["u"].nunique().reindex(range(n_items), fill_value=0)
    log_pop = np.log1p(buyers.to_numpy(float))
    weeks_all = np.arange(active.shape[1] + 2 * WEEKS_PER_YEAR)
    month_of_week = (activity.origin + pd.to_timedelta(weeks_all * 7 + 3, unit="D")).month - 1
    month_of_week = month_of_week.to_numpy()
    season = item_seasonality(month_of_week[fit_lines["week"].to_numpy()],
                              fit_lines["i"].to_numpy(), n_items)

    # return hazard
    hazard = fit_hazard(active[:, :hi], range(lo, hi))

    # baskets and values
    visits = activity.visits[activity.visits["week"] < hi].sort_values(["u", "week"])
    sizes = visits["items"].to_numpy(np.int32)
    offsets = np.searchsorted(visits["u"].to_numpy(), np.arange(n_users + 1))
    firsts = visits.drop_duplicates("u")
    pool = firsts.loc[firsts["week"] >= lo, "items"].to_numpy(np.int32)
    item_value = (fit_lines.groupby("i")["value"].median()
                  .reindex(range(n_items)).fillna(fit_lines["value"].median()).to_numpy())
    ratio = fit_lines["value"].to_numpy() / np.maximum(item_value[fit_lines["i"]], 1e-9)
    scale = (pd.Series(ratio).groupby(fit_lines["u"].to_numpy()).median()
             .reindex(range(n_users)).fillna(1.0).clip(0.05, 50).to_numpy())

    # compact real interactions for the policies' training data
    real = frame.assign(
        u=np.searchsorted(activity.users, frame["user_id"].to_numpy()),
        i=code[np.searchsorted(activity.items, frame["item_id"].astype(str).to_numpy())],
        week=((frame["timestamp"] - activity.origin).dt.days // 7).to_numpy())
    real = real.loc[real["i"] >= 0, ["u", "i", "week", "timestamp", "invoice", "quantity",
                                      "value"]].reset_index(drop=True)

    world = ShopWorld(
        origin=activity.origin, users=activity.users, items=activity.items[world_items],
        first_week=first_week, real_active=active, real=real, taste=taste,
        item_vectors=vectors, log_popularity=log_pop, item_season=season,
        available_from=span["min"].reindex(range(n_items)).to_numpy(),
        available_until=span["max"].reindex(range(n_items)).to_numpy(), hazard=hazard,
        choice=Choice(0.0, 0.0, 0.0, 0.0), basket_sizes=sizes, basket_offsets=offsets,
        basket_pool=pool, item_value=item_value, value_scale=scale, fit_weeks=(lo, hi),
        month_of_week=month_of_week)
    world.choice = _fit_choice(world, fit_lines, range(lo, hi), choice_visits, rng)
    return world


def _fit_choice(world: ShopWorld, lines: pd.DataFrame, weeks: range, n_visits: int,
                rng: np.random.Generator) -> Choice:
    """Fit :class:`Choice` on a sample of real customer-weeks of ``weeks``."""
    in_weeks = lines[(lines["week"] >= weeks.start) & (lines["week"] < weeks.stop)]
    visits = in_weeks[["u", "week"]].drop_duplicates().to_numpy()
    take = rng.choice(len(visits), size=min(n_visits, len(visits)), replace=False)
    visits = visits[np.sort(take)]
    users, weeks_v = visits[:, 0], visits[:, 1]
    # purchase counts of each sampled customer before the sampled week
    sample = pd.DataFrame({"u": users, "until": weeks_v, "row": np.arange(len(users))})
    history = lines.merge(sample, on="u")
    before = history[history["week"] < history["until"]]
    counts = sp.csr_matrix((np.ones(len(before)), (before["row"], before["i"])),
                           shape=(len(users), world.n_items)).toarray()
    now = history[history["week"] == history["until"]]
    chosen = [g.to_numpy() for _, g in now.groupby("row")["i"]]
    features = [world.taste[users] @ world.item_vectors.T,
                np.broadcast_to(world.log_popularity, counts.shape),
                world.item_season[:, world.month_of_week[weeks_v]].T,
                np.log1p(counts)]
    available = ((world.available_from[None, :] <= weeks_v[:, None])
                 & (world.available_until[None, :] >= weeks_v[:, None]))
    beta, ll, ll0 = _fit_choice_coefficients(features, chosen, available)
    # Baskets are drawn without replacement, which the likelihood above ignores; with a
    # customer's favourites taken first, fewer draws land on past items than the
    # with-replacement fit implies. Re-set the repeat coefficient so that baskets drawn
    # as the simulator draws them reproduce the real repeat share of these visits.
    repeat_real = np.mean(np.concatenate([counts[row, c] > 0
                                          for row, c in enumerate(chosen)]))
    sizes = np.array([len(c) for c in chosen])
    noise = -np.log(rng.standard_exponential(size=counts.shape))
    fixed = sum(b * f for b, f in zip(beta[:3], features[:3], strict=True))
    fixed = np.where(available, fixed + noise, -np.inf)

    def excess(repeat: float) -> float:
        util = fixed + repeat * features[3]
        top = np.argsort(-util, axis=1)
        drawn = np.concatenate([top[row, :n] for row, n in enumerate(sizes)])
        rows = np.repeat(np.arange(len(sizes)), sizes)
        return float(np.mean(counts[rows, drawn] > 0) - repeat_real)

    from scipy.optimize import brentq

    beta[3] = brentq(excess, 0.0, 10.0, xtol=1e-3)
    return Choice(*map(float, beta), log_likelihood=ll, baseline_log_likelihood=ll0,
                  repeat_share=float(repeat_real))


def _last_visit(active: np.ndarray) -> np.ndarray:
    n_weeks = active.shape[1]
    if n_weeks == 0:
        return np.full(active.shape[0], -1)
    last = n_weeks - 1 - np.argmax(active[:, ::-1], axis=1)
    return np.where(active.any(axis=1), last, -1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------- policies


class Policy:
    """What a simulated shop shows its visitors. Subclasses implement :meth:`slates`.

    ``learns`` policies are refitted on the logs every ``retrain_weeks`` (the feedback
    loop); :meth:`fit` receives interactions in the companion's schema, real history first
    and then the simulated purchases.
    """

    name = "policy"
    learns = False
    shows = True

    def reset(self, world: ShopWorld, seed: int) -> None:
        """Called once before a simulation."""
        self.world_ = world
        self.rng_ = np.random.default_rng([seed, 7])

    def fit(self, history: pd.DataFrame) -> None:
        """Refit on the logs (learning policies only)."""

    def slates(self, users: np.ndarray, k: int, available: np.ndarray) -> np.ndarray:
        """World item codes shown to each customer code in ``users``: ``(len(users), k)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NoRecommendations(Policy):
    """Shows nothing: the organic shop."""

    name = "no recommendations"
    shows = False

    def slates(self, users, k, available):
        return np.full((len(users), 0), -1, dtype=np.int64)


class RandomSlates(Policy):
    """``k`` products drawn uniformly from those on sale, for every visit."""

    name = "random"

    def slates(self, users, k, available):
        on_sale = np.flatnonzero(available)
        keys = self.rng_.random((len(users), len(on_sale)))
        return on_sale[np.argpartition(keys, k - 1, axis=1)[:, :k]]


class RecommenderPolicy(Policy):
    """Top-``k`` of a :mod:`companion.recsys.baselines` model refitted on the logs.

    Every refit fits ``factory()`` on the whole log, unless ``incremental``: then the
    model is fitted once (or copied from ``initial``, a model already fitted on the log the
    first refit receives) and afterwards updated with
    :meth:`~companion.recsys.baselines.Recommender.partial_fit` on the rows logged since the
    last refit. ``wrap`` turns the fitted model into the recommender that is shown (for
    example a :class:`~companion.recsys.baselines.Blend` with repeat-buy), fitted on the whole
    log at every refit. The best ``k`` products on sale are shown, re-purchases allowed (as
    on chapter 5's *all* task).
    """

    learns = True

    def __init__(self, name: str, factory: Callable[[], object], *, incremental: bool = False,
                 initial: object | None = None, epochs: int = 1,
                 wrap: Callable[[object], object] | None = None) -> None:
        self.name, self.factory, self.incremental = name, factory, incremental
        self.initial, self.epochs, self.wrap = initial, epochs, wrap
        if initial is not None and not incremental:
            raise ValueError("initial is only used by an incremental policy.")

    def reset(self, world, seed):
        super().reset(world, seed)
        self.model_, self.seen_until_ = None, None

    def fit(self, history):
        import pickle

        if self.model_ is None:
            if self.initial is not None:
                self.model_ = pickle.loads(pickle.dumps(self.initial))  # a fresh copy
            else:
                self.model_ = self.factory().fit(history)
        elif self.incremental:
            fresh = history[history["timestamp"] > self.seen_until_]
            if len(fresh):
                kwargs = {"epochs": self.epochs} if getattr(self.model_, "uses_keras",
                                                            False) else {}
                self.model_.partial_fit(fresh, **kwargs)
        else:
            self.model_ = self.factory().fit(history)
        self.seen_until_ = history["timestamp"].max()
        self.scorer_ = self.wrap(self.model_).fit(history) if self.wrap else self.model_
        self.columns_ = pd.Index(self.world_.items).get_indexer(self.scorer_.items_)

    def __repr__(self) -> str:
        return (f"RecommenderPolicy({self.name!r}, {self.factory!r}, incremental="
                f"{self.incremental}, initial={self.initial!r}, epochs={self.epochs}, "
                f"wrap={self.wrap!r})")

    def slates(self, users, k, available):
        scores = np.full((len(users), self.world_.n_items), -np.inf, dtype=np.float32)
        known = self.columns_ >= 0
        scores[:, self.columns_[known]] = self.scorer_.score(self.world_.users[users])[:, known]
        scores[:, ~available] = -np.inf
        return _top_k(scores, k)


class Exploration(Policy):
    """A policy whose last ``slots`` places go to products from the long tail.

    The tail is every product on sale outside the ``head`` most-bought products of the
    logs at the last refit; the tail products are drawn uniformly. This trades some
    relevance now for exposure of products the feedback loop would never show.
    """

    learns = True

    def __init__(self, policy: Policy, slots: int = 2, head: int = 500) -> None:
        self.policy, self.slots, self.head = policy, slots, head
        self.name = f"{policy.name} + exploration"

    def __repr__(self) -> str:
        return f"Exploration({self.policy!r}, slots={self.slots}, head={self.head})"

    def reset(self, world, seed):
        super().reset(world, seed)
        check_positive_int(self.slots, name="slots")
        self.policy.reset(world, seed)
        self.tail_ = np.ones(world.n_items, dtype=bool)

    def fit(self, history):
        self.policy.fit(history)
        counts = history["item_id"].value_counts()
        head = pd.Index(self.world_.items).get_indexer(counts.index[:self.head])
        self.tail_ = np.ones(self.world_.n_items, dtype=bool)
        self.tail_[head[head >= 0]] = False

    def slates(self, users, k, available):
        if self.slots >= k:
            raise ValueError(f"slots={self.slots} must be smaller than the slate ({k}).")
        base = self.policy.slates(users, k, available)
        pool = np.flatnonzero(available & self.tail_)
        if len(pool) < self.slots:
            return base
        out = base.copy()
        for row in range(len(users)):
            picks = self.rng_.choice(np.setdiff1d(pool, base[row, :k - self.slots]),
                                     size=self.slots, replace=False)
            out[row, k - self.slots:] = picks
        return out


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


# ----------------------------------------------------------------------------- simulation


@dataclass
class SimulationResult:
    """Logs of one simulated run.

    ``active`` is customers x weeks (real before ``start``, simulated after); ``visits``
    has one row per simulated visit (``week``, customer code ``u``, ``items`` bought,
    ``value``, ``hits``: items bought from the slate, ``relevance``: the customer's ``R``
    after the visit); ``lines`` one row per item bought (``week``, ``u``, ``i``,
    ``shown``: whether it was on the slate, ``repeat``: whether the customer had bought it
    before); ``shown`` the slates, one row per visit.
    """

    policy: str
    seed: int
    start: int
    weeks: int
    assumptions: Assumptions
    active: np.ndarray
    visits: pd.DataFrame
    lines: pd.DataFrame
    shown: np.ndarray
    fit_seconds: list[float] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.weeks


def simulate(world: ShopWorld, policy: Policy, *, start: int, weeks: int = 52,
             assumptions: Assumptions | None = None, seed: int = 0,
             progress: bool = False) -> SimulationResult:
    """Run the shop from week ``start`` for ``weeks`` weeks under ``policy``.

    Customers begin with their real history before ``start``; customers whose first real
    purchase falls inside the run arrive in that week. A learning policy is fitted on the
    last ``assumptions.history_weeks`` weeks of the log (real weeks first, then simulated
    ones) before the first week and every ``assumptions.retrain_weeks`` weeks after. See the
    module docstring for the mechanism and :class:`Assumptions` for the parameters.
    """
    from tqdm.auto import tqdm

    assumptions = Assumptions() if assumptions is None else assumptions
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a companion.retention.simulation.Policy, got "
                        f"{type(policy).__name__}.")
    check_positive_int(weeks, name="weeks")
    if not WEEKS_PER_YEAR <= start <= world.real_active.shape[1]:
        raise ValueError(f"start={start} must lie between week 52 and the last week of the "
                         f"data ({world.real_active.shape[1]}).")
    k, gamma, memory = assumptions.slate_size, assumptions.relevance_effect, \
        assumptions.relevance_memory
    choice = world.choice
    end = start + weeks
    active = np.zeros((world.n_users, end), dtype=bool)
    active[:, :start] = world.real_active[:, :start]
    last = _last_visit(active[:, :start])
    visits_so_far = active[:, :start].sum(axis=1)
    counts = np.zeros((world.n_users, world.n_items), dtype=np.int16)
    before = world.real[world.real["week"] < start]
    np.add.at(counts, (before["u"].to_numpy(), before["i"].to_numpy()), 1)
    relevance = np.zeros(world.n_users)
    base = (choice.popularity * world.log_popularity).astype(np.float32)
    season = np.ascontiguousarray((choice.season * world.item_season.T).astype(np.float32))
    repeat_utility = (choice.repeat * np.log1p(np.arange(np.iinfo(np.int16).max + 1))
                      ).astype(np.float32)
    history = world.history(start)
    policy.reset(world, seed)
    fit_seconds: list[float] = []
    logs_visits, logs_lines, logs_shown, logs_frames = [], [], [], []

    def refit(week: int) -> None:
        if not policy.learns:
            return
        tick = time.perf_counter()
        log = pd.concat([history, *logs_frames], ignore_index=True)
        oldest = world.date(week - assumptions.history_weeks)
        policy.fit(log[log["timestamp"] >= oldest].reset_index(drop=True))
        fit_seconds.append(time.perf_counter() - tick)

    refit(start)
    for w in tqdm(range(start, end), desc=policy.name, disable=not progress, leave=False):
        if w > start and (w - start) % assumptions.retrain_weeks == 0:
            refit(w)
        # who comes back
        u_rand = np.random.default_rng([seed, 0, w]).random(world.n_users)
        present = np.flatnonzero(last >= 0)
        state = HazardState(np.full(len(present), w), w - last[present],
                            active[present, w - 13:w].sum(axis=1),
                            active[present, w - 26:w - 13].sum(axis=1),
                            (world.first_week[present] >= NEWCOMER_AFTER)
                            & (visits_so_far[present] == 1))
        logit = world.hazard.logit(state) + gamma * relevance[present]
        visitors = present[u_rand[present] < _sigmoid(logit)]
        visitors = np.union1d(visitors, np.flatnonzero(world.first_week == w))
        if len(visitors) == 0:
            continue
        available = (world.available_from <= w) & (world.available_until >= w)
        on_sale = np.flatnonzero(available)
        # what they see
        slate = policy.slates(visitors, k, available) if policy.shows else \
            np.full((len(visitors), 0), -1, dtype=np.int64)
        # what they buy, among the products on sale
        util = world.taste[visitors] @ (choice.taste * world.item_vectors[on_sale].T)
        util += (base + season[world.month_of_week[w]])[on_sale]
        util += repeat_utility[counts[np.ix_(visitors, on_sale)]]
        on_slate = np.zeros(util.shape, dtype=bool)
        if slate.shape[1]:
            position = np.full(world.n_items, -1)
            position[on_sale] = np.arange(len(on_sale))
            np.put_along_axis(on_slate, position[slate], True, axis=1)
            util[on_slate] += np.float32(assumptions.exposure_boost)
        rng = np.random.default_rng([seed, 1, w])
        sizes = _basket_sizes(world, visitors, rng.random(world.n_users)[visitors])
        sizes = np.minimum(sizes, len(on_sale))
        # Gumbel-top-n: the n best of utility + Gumbel noise are a draw without replacement
        noise = rng.standard_exponential(size=util.shape, dtype=np.float32)
        util -= np.log(np.maximum(noise, np.finfo(np.float32).tiny))
        n_max = int(sizes.max())
        top = np.argpartition(-util, n_max - 1, axis=1)[:, :n_max]
        order = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(util, top, axis=1), axis=1), axis=1)
        keep = np.arange(n_max)[None, :] < sizes[:, None]
        rows = np.repeat(visitors, sizes)
        shown_bought = on_slate[np.repeat(np.arange(len(visitors)), sizes), order[keep]]
        items = on_sale[order[keep]]
        repeat = counts[rows, items] > 0
        value = world.item_value[items] * world.value_scale[rows]
        counts[rows, items] += 1
        hits = np.bincount(np.repeat(np.arange(len(visitors)), sizes), weights=shown_bought,
                           minlength=len(visitors))
        if slate.shape[1]:
            relevance[visitors] = (1 - memory) * relevance[visitors] + memory * hits / k
        active[visitors, w] = True
        last[visitors] = w
        visits_so_far[visitors] += 1
        logs_visits.append(pd.DataFrame({
            "week": w, "u": visitors, "items": sizes,
            "value": np.bincount(np.repeat(np.arange(len(visitors)), sizes), weights=value,
                                 minlength=len(visitors)),
            "hits": hits.astype(int), "relevance": relevance[visitors]}))
        logs_lines.append(pd.DataFrame({"week": np.full(len(rows), w, dtype=np.int16),
                                        "u": rows.astype(np.int32), "i": items.astype(np.int32),
                                        "value": value.astype(np.float32),
                                        "shown": shown_bought, "repeat": repeat}))
        if policy.learns:
            logs_frames.append(_as_interactions(world, logs_lines[-1]))
        logs_shown.append(slate.astype(np.int32) if slate.shape[1]
                          else np.full((len(visitors), 0), -1, np.int32))
    return SimulationResult(
        policy.name, seed, start, weeks, assumptions, active,
        pd.concat(logs_visits, ignore_index=True),
        pd.concat(logs_lines, ignore_index=True),
        np.vstack(logs_shown) if logs_shown else np.empty((0, 0), np.int32), fit_seconds)


def _basket_sizes(world: ShopWorld, users: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    lo, hi = world.basket_offsets[users], world.basket_offsets[users + 1]
    own = hi > lo
    out = np.empty(len(users), dtype=np.int64)
    pick = lo + np.floor(uniform * (hi - lo)).astype(np.int64)
    out[own] = world.basket_sizes[pick[own]]
    pool = world.basket_pool
    out[~own] = pool[np.floor(uniform[~own] * len(pool)).astype(np.int64)]
    return np.maximum(out, 1)


def _as_interactions(world: ShopWorld, lines: pd.DataFrame) -> pd.DataFrame:
    """Simulated purchase lines in the companion's interactions schema."""
    week = lines["week"].to_numpy().astype(np.int64)
    users = lines["u"].to_numpy()
    return pd.DataFrame({
        "user_id": world.users[users],
        "item_id": world.items[lines["i"].to_numpy()],
        "timestamp": world.origin + pd.to_timedelta(week * 7 * 24 + 12, unit="h"),
        "invoice": "S" + pd.Series(week).astype(str) + "-" + pd.Series(users).astype(str),
        "quantity": 1,
        "value": lines["value"].to_numpy(float),
    })


# -------------------------------------------------------------------------------- metrics


def churn_rate(active: np.ndarray, cutoff: int, *, horizon: int = 13,
               lookback: int = 52) -> tuple[float, int]:
    """Share of customers with a purchase in the ``lookback`` weeks before week ``cutoff``
    and none in the ``horizon`` weeks from it (90 days is about 13 weeks), and how many
    customers that share is taken over."""
    if not lookback <= cutoff <= active.shape[1] - horizon:
        raise ValueError(f"cutoff={cutoff} needs {lookback} weeks before it and {horizon} "
                         f"after it within the {active.shape[1]} weeks given.")
    at_risk = active[:, cutoff - lookback:cutoff].any(axis=1)
    churned = ~active[at_risk][:, cutoff:cutoff + horizon].any(axis=1)
    return float(churned.mean()), int(at_risk.sum())


def gap_histogram(active: np.ndarray, start: int, end: int,
                  edges: Sequence[int] = (1, 2, 3, 4, 6, 9, 14, 27, 53)) -> pd.Series:
    """Share of the gaps between consecutive purchase weeks, for purchases in weeks
    ``start`` to ``end`` (a gap is counted in the week of its second purchase), by bin
    of ``edges`` (weeks)."""
    users, weeks = np.nonzero(active[:, :end])
    order = np.lexsort((weeks, users))
    users, weeks = users[order], weeks[order]
    same = users[1:] == users[:-1]
    gaps = (weeks[1:] - weeks[:-1])[same & (weeks[1:] >= start)]
    bins = np.searchsorted(np.asarray(edges), gaps, side="right") - 1
    labels = _edge_labels(edges)
    counts = np.bincount(bins, minlength=len(edges))
    return pd.Series(counts / max(counts.sum(), 1), index=labels, name="share of gaps")


def cohort_retention(active: np.ndarray, first_week: np.ndarray, start: int, end: int,
                     months: int = 6, weeks_per_month: int = 4) -> pd.Series:
    """Share of new customers who buy again in each month after the month they arrived,
    pooled over the monthly cohorts that arrived in ``[start, end)`` and can be followed
    for ``months`` months."""
    span = months * weeks_per_month
    rows = []
    for lo in range(start, end - span - weeks_per_month + 1, weeks_per_month):
        cohort = (first_week >= lo) & (first_week < lo + weeks_per_month)
        if not cohort.any():
            continue
        part = active[cohort]
        base = lo + weeks_per_month
        rows.append([part[:, base + m * weeks_per_month:base + (m + 1) * weeks_per_month]
                     .any(axis=1).sum() for m in range(months)] + [cohort.sum()])
    if not rows:
        raise ValueError(f"no cohort in weeks {start} to {end} can be followed for {months} "
                         "months.")
    table = np.array(rows, dtype=float)
    return pd.Series(table[:, :-1].sum(axis=0) / table[:, -1].sum(),
                     index=pd.RangeIndex(1, months + 1, name="months after arrival"),
                     name="retained")


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; near 1: one takes all)."""
    x = np.sort(np.asarray(values, dtype=float))
    if (x < 0).any():
        raise ValueError("gini needs non-negative values.")
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def real_lines(world: ShopWorld, start: int, end: int) -> pd.DataFrame:
    """The real purchases of weeks ``start`` to ``end`` as simulated lines are logged:
    one row per customer, week and product, with ``repeat`` (bought in an earlier week)."""
    lines = world.real[["u", "week", "i", "value"]]
    lines = lines.groupby(["u", "week", "i"], sort=False)["value"].sum().reset_index()
    first = lines.groupby(["u", "i"])["week"].transform("min")
    lines = lines.assign(repeat=lines["week"] > first)
    return lines[(lines["week"] >= start) & (lines["week"] < end)].reset_index(drop=True)


def behaviour_statistics(world: ShopWorld, active: np.ndarray, lines: pd.DataFrame,
                         start: int, end: int, cutoff: int) -> dict[str, object]:
    """The statistics the calibration compares, for real or simulated logs of weeks
    ``start`` to ``end``: churn at week ``cutoff``, gap distribution, cohort retention,
    repeat share, visits and items per visit."""
    period = active[:, start:end]
    churn, _ = churn_rate(active, cutoff)
    return {
        "90-day churn": churn,
        "repeat share": float(lines["repeat"].mean()),
        "visits": int(period.sum()),
        "customers with a visit": int(period.any(axis=1).sum()),
        "items per visit": float(len(lines) / max(period.sum(), 1)),
        "gaps": gap_histogram(active, start, end),
        "cohorts": cohort_retention(active, world.first_week, start, end),
    }


def calibration_table(real: dict, simulated: Sequence[dict]) -> pd.DataFrame:
    """Real against simulated statistics: the simulated mean over seeds and a 95%
    prediction interval for one run (``mean +- t * sd * sqrt(1 + 1/n)``), the range in
    which the real value should fall if the simulator describes the shop."""
    from scipy.stats import t as student

    rows = {}
    n = len(simulated)
    if n < 2:
        raise ValueError("calibration_table needs at least two simulated runs.")
    scale = student.ppf(0.975, n - 1) * np.sqrt(1 + 1 / n)
    for key, value in real.items():
        if isinstance(value, pd.Series):
            items = [(f"{key}: {label}", value[label], [s[key][label] for s in simulated])
                     for label in value.index]
        else:
            items = [(key, value, [s[key] for s in simulated])]
        for name, real_value, sims in items:
            sims = np.asarray(sims, dtype=float)
            mean, sd = sims.mean(), sims.std(ddof=1)
            rows[name] = {"real": float(real_value), "simulated": mean,
                          "low": mean - scale * sd, "high": mean + scale * sd}
    table = pd.DataFrame(rows).T
    table["inside"] = (table["real"] >= table["low"]) & (table["real"] <= table["high"])
    return table


def run_summary(world: ShopWorld, result: SimulationResult, cutoff: int,
                months: int = 13) -> dict[str, object]:
    """What the chapter reports for one run: churn at ``cutoff``, purchases, revenue,
    relevance, and month-by-month retention, coverage and concentration."""
    start, end = result.start, result.end
    present = world.first_week < end
    base = result.active[:, start - WEEKS_PER_YEAR:start].any(axis=1)
    churn, _ = churn_rate(result.active, cutoff)
    month = (result.lines["week"].to_numpy() - start) // 4
    shown_month = (result.visits["week"].to_numpy() - start) // 4
    retention, coverage, concentration = [], [], []
    for m in range(months):
        weeks = slice(start + 4 * m, min(start + 4 * (m + 1), end))
        retention.append(float(result.active[base, weeks].any(axis=1).mean()))
        on_sale = ((world.available_from <= start + 4 * m)
                   & (world.available_until >= start + 4 * m)).sum()
        shown = result.shown[shown_month == m]
        coverage.append(len(np.unique(shown[shown >= 0])) / on_sale if shown.size else 0.0)
        bought = np.bincount(result.lines["i"].to_numpy()[month == m], minlength=world.n_items)
        concentration.append(gini(bought))
    visits = result.visits
    k = result.assumptions.slate_size
    return {
        "90-day churn": churn,
        "visits per customer": len(visits) / present.sum(),
        "items per customer": len(result.lines) / present.sum(),
        "revenue per customer": float(visits["value"].sum() / present.sum()),
        "slate precision": float(visits["hits"].mean() / k) if result.shown.size else 0.0,
        "coverage": float(np.mean(coverage)),
        "gini": float(np.mean(concentration)),
        "retention curve": retention,
        "coverage curve": coverage,
        "gini curve": concentration,
        "fit seconds": float(np.sum(result.fit_seconds)),
    }


def estimate_relevance_effect(world: ShopWorld, result: SimulationResult) -> float:
    """Estimate the relevance effect back from simulated logs, as an analyst with exposure
    logs could: the return model refitted on the run's weeks with each customer's
    relevance ``R`` as an extra column. Logs of real shops without
    records of what was shown offer no such column."""
    start, end = result.start, result.end
    panel = hazard_panel(result.active, range(start, end))
    visits = result.visits.sort_values(["u", "week"])
    key_v = visits["u"].to_numpy() * (end + 1) + visits["week"].to_numpy()
    key_p = panel["u"].to_numpy() * (end + 1) + panel["week"].to_numpy()
    pos = np.searchsorted(key_v, key_p) - 1  # the customer's last simulated visit before
    valid = (pos >= 0) & (visits["u"].to_numpy()[np.maximum(pos, 0)] == panel["u"].to_numpy())
    relevance = np.where(valid, visits["relevance"].to_numpy()[np.maximum(pos, 0)], 0.0)
    hazard = fit_hazard(result.active, range(start, end), extra=relevance,
                        extra_names=["relevance"])
    return hazard.extra["relevance"]


# ------------------------------------------------------------- many runs and offline metrics


class BlendWith:
    """``wrap`` for :class:`RecommenderPolicy`: blend the fitted model with a fresh
    ``base_factory()`` (see :class:`companion.recsys.baselines.Blend`); picklable, so that runs
    can go to worker processes."""

    def __init__(self, base_factory: Callable[[], object], weight: float) -> None:
        self.base_factory, self.weight = base_factory, weight

    def __call__(self, model):
        from companion.recsys.baselines import Blend

        return Blend(model, weight=self.weight, base=self.base_factory())

    def __repr__(self) -> str:
        return f"BlendWith({self.base_factory!r}, weight={self.weight!r})"


def logged_interactions(world: ShopWorld, result: SimulationResult) -> pd.DataFrame:
    """The log a shop would hold after a run: real purchases before the run, then the
    simulated ones, in the companion's interactions schema."""
    return pd.concat([world.history(result.start), _as_interactions(world, result.lines)],
                     ignore_index=True)


def final_window_task(world: ShopWorld, result: SimulationResult, *, test_weeks: int = 4,
                      history_weeks: int | None = None):
    """Chapter 5's protocol on a run's log: the last ``test_weeks`` weeks are the test
    window, the ``history_weeks`` before them (default: the run's) the training data."""
    from companion.recsys.ranking import RankingTask

    history_weeks = (result.assumptions.history_weeks if history_weeks is None
                     else history_weeks)
    log = logged_interactions(world, result)
    cut = world.date(result.end - test_weeks)
    train = log[(log["timestamp"] < cut)
                & (log["timestamp"] >= cut - pd.Timedelta(weeks=history_weeks))]
    return RankingTask.from_split(train, log[log["timestamp"] >= cut],
                                  f"simulated log of {result.policy!r}, seed {result.seed}")


def offline_ndcg(model, task, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k of a fitted recommender on both tasks of ``task``."""
    from companion.recsys import ranking

    return {name: float(frame["NDCG"].mean())
            for name, frame in ranking.evaluate(model, task, k=k).items()}


def own_log_summary(world: ShopWorld, result: SimulationResult, policy: Policy,
                    cutoff: int) -> dict[str, object]:
    """:func:`run_summary` plus the offline NDCG@10 of the policy's last model on the
    weeks of its own log that it was not trained on (the weeks after its last refit)."""
    summary = run_summary(world, result, cutoff)
    if getattr(policy, "scorer_", None) is not None:
        last_refit = result.start + (result.weeks - 1) // result.assumptions.retrain_weeks \
            * result.assumptions.retrain_weeks
        task = final_window_task(world, result, test_weeks=result.end - last_refit)
        summary.update({f"own-log NDCG {k}": v
                        for k, v in offline_ndcg(policy.scorer_, task).items()})
    return summary


_WORLD: ShopWorld | None = None


def _load_world(path: str) -> None:
    import pickle

    global _WORLD
    with open(path, "rb") as fh:
        _WORLD = pickle.load(fh)


def _run_one(job):
    policy, seed, start, weeks, assumptions, summarise = job
    result = simulate(_WORLD, policy, start=start, weeks=weeks, assumptions=assumptions,
                      seed=seed)
    return summarise(_WORLD, result, policy)


def simulate_many(world: ShopWorld, policies: Sequence[Policy], seeds: Sequence[int], *,
                  start: int, weeks: int = 52, assumptions: Assumptions | None = None,
                  summarise: Callable[[ShopWorld, SimulationResult, Policy], object],
                  processes: int = 1, progress: bool = True) -> dict[tuple[str, int], object]:
    """Run every policy with every seed and keep ``summarise(world, result, policy)`` of
    each run, keyed by ``(policy name, seed)``.

    With ``processes > 1`` the runs are shared among that many worker processes (started
    fresh, so policies and ``summarise`` must be picklable: no lambdas); results do not
    depend on the number of processes.
    """
    import pickle
    import tempfile

    from tqdm.auto import tqdm

    check_positive_int(processes, name="processes")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique, got {names}.")
    jobs = [(policy, seed, start, weeks, assumptions, summarise)
            for policy in policies for seed in seeds]
    keys = [(policy.name, seed) for policy in policies for seed in seeds]
    bar = tqdm(total=len(jobs), desc="simulations", disable=not progress, leave=False)
    out = {}
    if processes == 1:
        global _WORLD
        previous, _WORLD = _WORLD, world
        try:
            for key, job in zip(keys, jobs, strict=True):
                out[key] = _run_one(job)
                bar.update()
        finally:
            _WORLD = previous
        bar.close()
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/world.pkl"
        with open(path, "wb") as fh:
            pickle.dump(world, fh)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_load_world,
                                 initargs=(path,)) as pool:
            futures = {pool.submit(_run_one, job): key
                       for key, job in zip(keys, jobs, strict=True)}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update()
    bar.close()
    return {key: out[key] for key in keys}


# ------------------------------------------------------------------- tables for the chapter


def calibration_runs(world: ShopWorld, *, start: int, end: int, cutoffs: Sequence[int],
                     seeds: Sequence[int], processes: int = 1) -> tuple[dict, list[dict]]:
    """Real and simulated (no recommendations, one run per seed) statistics of weeks
    ``start`` to ``end``, for :func:`calibration_table`. The simulations start from the
    real state at ``start``; 90-day churn is measured at each of ``cutoffs``."""
    summarise = _CheckSummary(start, end, tuple(cutoffs))
    runs = simulate_many(world, [NoRecommendations()], seeds, start=start, weeks=end - start,
                         summarise=summarise, processes=processes, progress=False)
    real = summarise.statistics(world, world.real_active, real_lines(world, start, end))
    return real, [runs["no recommendations", seed] for seed in seeds]


class _CheckSummary:
    def __init__(self, start: int, end: int, cutoffs: tuple[int, ...]) -> None:
        self.start, self.end, self.cutoffs = start, end, cutoffs

    def statistics(self, world, active, lines):
        out = behaviour_statistics(world, active, lines, self.start, self.end,
                                   self.cutoffs[-1])
        del out["90-day churn"]
        for cutoff in self.cutoffs:
            out[f"90-day churn from {world.date(cutoff).date()}"] = churn_rate(active,
                                                                              cutoff)[0]
        return out

    def __call__(self, world, result, policy):
        return self.statistics(world, result.active, result.lines)


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import t as student

    values = np.asarray(values, dtype=float)
    mean = values.mean()
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = student.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def policy_table(summaries: dict[tuple[str, int], dict], metrics: Sequence[str], *,
                 baseline: str | None = None) -> pd.DataFrame:
    """Mean of each metric over seeds with a 95% t-interval (``metric low``/``high``), and
    with ``baseline`` the paired difference to it (``metric vs baseline``, same seeds)."""
    policies = list(dict.fromkeys(name for name, _ in summaries))
    rows = {}
    for name in policies:
        seeds = sorted(s for n, s in summaries if n == name)
        row = {"seeds": len(seeds)}
        for metric in metrics:
            values = np.array([summaries[name, s][metric] for s in seeds], dtype=float)
            row[metric], row[f"{metric} low"], row[f"{metric} high"] = _interval(values)
            if baseline is not None and name != baseline:
                base = np.array([summaries[baseline, s][metric] for s in seeds], dtype=float)
                diff = _interval(values - base)
                row[f"{metric} vs {baseline}"] = diff[0]
                row[f"{metric} vs {baseline} low"], row[f"{metric} vs {baseline} high"] = \
                    diff[1], diff[2]
        rows[name] = row
    return pd.DataFrame(rows).T


def curve_table(summaries: dict[tuple[str, int], dict], curve: str) -> pd.DataFrame:
    """A month-by-month curve (``"retention curve"`` ...) per policy: mean, low and high
    over seeds, long format (policy, month, mean, low, high)."""
    rows = []
    for name in dict.fromkeys(n for n, _ in summaries):
        values = np.array([summaries[name, s][curve] for n, s in summaries if n == name])
        for month in range(values.shape[1]):
            mean, low, high = _interval(values[:, month])
            rows.append((name, month + 1, mean, low, high))
    return pd.DataFrame(rows, columns=["policy", "month", "mean", "low", "high"])


def organic_offline_ndcg(world: ShopWorld, factories: dict[str, Callable[[], object]], *,
                         start: int, weeks: int = 52, seed: int = 0,
                         test_weeks: int = 4) -> pd.DataFrame:
    """Offline NDCG@10 of each recommender with chapter 5's protocol on the log of the
    shop *without* recommendations (the last ``test_weeks`` weeks are the test window): the
    evaluation a shop can run before it deploys anything."""
    result = simulate(world, NoRecommendations(), start=start, weeks=weeks, seed=seed)
    task = final_window_task(world, result, test_weeks=test_weeks)
    return pd.DataFrame({name: offline_ndcg(factory().fit(task.train), task)
                         for name, factory in factories.items()}).T
