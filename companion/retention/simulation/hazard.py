"""When customers come back: weekly activity, and the return hazard fitted to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_timestamp
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
            "recent": edge_labels(RECENT_EDGES),
            "earlier": [*edge_labels(EARLIER_EDGES), "unknown"],
            "season": [str(w) for w in range(WEEKS_PER_YEAR)],
            "newcomer": [*gap_labels(), "not a newcomer"],
        }
        rows = [("intercept", "", self.intercept)]
        for part in _HAZARD_PARTS:
            rows += [(part, label, float(v)) for label, v in zip(labels[part], getattr(self, part),
                                                                 strict=True)]
        rows += [(name, "", v) for name, v in self.extra.items()]
        return pd.DataFrame(rows, columns=["term", "bin", "effect"])


def edge_labels(edges: Sequence[int]) -> list[str]:
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
