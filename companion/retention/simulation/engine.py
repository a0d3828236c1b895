"""The weekly simulation of a shop under one policy (:func:`simulate`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion.retention.simulation.assumptions import Assumptions
from companion.retention.simulation.hazard import NEWCOMER_AFTER, WEEKS_PER_YEAR, HazardState
from companion.retention.simulation.policies import Policy
from companion.retention.simulation.world import ShopWorld


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
    package docstring for the mechanism and
    :class:`~companion.retention.simulation.assumptions.Assumptions` for the parameters.
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
            logs_frames.append(as_interactions(world, logs_lines[-1]))
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


def as_interactions(world: ShopWorld, lines: pd.DataFrame) -> pd.DataFrame:
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


def _last_visit(active: np.ndarray) -> np.ndarray:
    n_weeks = active.shape[1]
    if n_weeks == 0:
        return np.full(active.shape[0], -1)
    last = n_weeks - 1 - np.argmax(active[:, ::-1], axis=1)
    return np.where(active.any(axis=1), last, -1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
