"""The simulated shop, calibrated to the real one (:class:`ShopWorld`, :func:`calibrate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int, check_timestamp
from companion.data.preprocessing import check_interactions
from companion.retention.simulation.choice import Choice, fit_choice_coefficients, item_seasonality
from companion.retention.simulation.hazard import (
    WEEKS_PER_YEAR,
    Hazard,
    fit_hazard,
    weekly_activity,
)


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
    """Fit :class:`~companion.retention.simulation.choice.Choice` on a sample of real
    customer-weeks of ``weeks``."""
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
    beta, ll, ll0 = fit_choice_coefficients(features, chosen, available)
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
