"""Multi-armed and contextual bandits, logged ad data and off-policy evaluation.

An ad server that learns while it serves is a bandit: at each visit it picks one of
``n_arms`` ads, sees whether that ad converted, and never learns what the others would
have done. This module holds

* the policies: :class:`EpsilonGreedy`, :class:`ThompsonSampling` (Beta-Bernoulli),
  :class:`LinUCB` (disjoint linear UCB on a context vector) and :class:`FixedArm`;
* :func:`run_online`, which plays a policy against a full reward matrix (every arm's
  reward known for every event, as only a simulator or a reconstructed log gives);
* a known randomised logging policy (:func:`log_policy`) and the off-policy estimators
  :func:`replay` (Li et al. 2011), :func:`ips` and :func:`snips`;
* :func:`visit_log`, which builds visits, contexts and per-category rewards from real
  Online Retail purchases.

Rewards are 0/1. Contexts are rows of a float matrix; context-free policies ignore them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_positive_int

#: Keyword rules that turn Online Retail descriptions into ad categories ("arms").
AD_CATEGORIES: dict[str, str] = {
    "christmas": r"CHRISTMAS|XMAS|ADVENT|BAUBLE|REINDEER|SANTA",
    "bags": r"\bBAG\b|SHOPPER|PURSE",
    "lights": r"T-LIGHT|CANDLE|LANTERN|TEALIGHT|LIGHTS",
    "baking": r"CAKE|BAKING|CUPCAKE",
    "mugs & cups": r"\bMUG\b|TEACUP|\bCUPS?\b",
    "cards & wrap": r"CARD|WRAP|PAPER|STICKER",
    "garden": r"GARDEN|PLANT|BIRD|WATERING",
}

EU_COUNTRIES = ("Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Switzerland",
                "Portugal", "Italy", "Austria", "Denmark", "Sweden", "Finland", "Norway",
                "Poland", "Greece", "Cyprus", "Malta", "Lithuania", "Iceland",
                "Czech Republic", "Channel Islands")


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

def _rewards(rewards: object) -> np.ndarray:
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] < 2:
        raise ValueError(f"rewards must be an (events, arms) matrix with at least 2 arms, "
                         f"got shape {r.shape}.")
    if not np.isin(r, (0.0, 1.0)).all():
        raise ValueError("rewards must be 0/1; found other values such as "
                         f"{r[~np.isin(r, (0.0, 1.0))][:3].tolist()}.")
    return r


def _contexts(contexts: object, n: int) -> np.ndarray:
    if contexts is None:
        return np.ones((n, 1))
    x = np.asarray(contexts, dtype=float)
    if x.ndim != 2 or len(x) != n:
        raise ValueError(f"contexts must be a matrix with {n} rows, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("contexts hold NaN or infinite values.")
    return x


def _probabilities(probs: object, n: int, k: int, name: str) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = np.broadcast_to(p, (n, len(p)))
    if p.shape != (n, k):
        raise ValueError(f"{name} must have shape ({n}, {k}) or ({k},), got {p.shape}.")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0):
        raise ValueError(f"{name} must be non-negative and sum to 1 over the arms.")
    return p


# --------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------

class _Policy:
    """Base class: ``select`` an arm for a context, then ``update`` with its reward."""

    def __init__(self, n_arms: int) -> None:
        self.n_arms = check_positive_int(n_arms, name="n_arms", minimum=2)
        self.reset()

    def reset(self) -> None:  # pragma: no cover - overridden
        """Forget everything learned."""

    def select(self, x: np.ndarray, rng: np.random.Generator) -> int:  # pragma: no cover
        raise NotImplementedError

    def update(self, arm: int, reward: float, x: np.ndarray) -> None:
        """Learn from the reward of the arm that was shown."""

    def _check_arm(self, arm: int) -> int:
        if not 0 <= int(arm) < self.n_arms:
            raise ValueError(f"arm must be in [0, {self.n_arms}), got {arm}.")
        return int(arm)


class FixedArm(_Policy):
    """Always show the same arm (the baseline every learner is compared with)."""

    def __init__(self, n_arms: int, arm: int) -> None:
        super().__init__(n_arms)
        self.arm = self._check_arm(arm)

    def select(self, x: np.ndarray, rng: np.random.Generator) -> int:
        return self.arm


class EpsilonGreedy(_Policy):
    """Show the arm with the best mean reward so far; with probability ``epsilon``, a
    uniformly random arm. Untried arms are tried first."""

    def __init__(self, n_arms: int, epsilon: float = 0.1) -> None:
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}.")
        self.epsilon = float(epsilon)
        super().__init__(n_arms)

    def reset(self) -> None:
        self.counts = np.zeros(self.n_arms)
        self.sums = np.zeros(self.n_arms)

    def select(self, x: np.ndarray, rng: np.random.Generator) -> int:
        if rng.random() < self.epsilon:
            return int(rng.integers(self.n_arms))
        untried = np.flatnonzero(self.counts == 0)
        if len(untried):
            return int(untried[0])
        return int(np.argmax(self.sums / self.counts))

    def update(self, arm: int, reward: float, x: np.ndarray) -> None:
        self.counts[arm] += 1
        self.sums[arm] += reward


class ThompsonSampling(_Policy):
    """Beta-Bernoulli Thompson sampling: draw each arm's rate from its posterior
    Beta(prior_a + successes, prior_b + failures) and show the arm with the largest
    draw (Chapelle and Li 2011)."""

    def __init__(self, n_arms: int, prior_a: float = 1.0, prior_b: float = 1.0) -> None:
        if prior_a <= 0 or prior_b <= 0:
            raise ValueError(f"prior_a and prior_b must be positive, got {prior_a}, {prior_b}.")
        self.prior_a, self.prior_b = float(prior_a), float(prior_b)
        super().__init__(n_arms)

    def reset(self) -> None:
        self.a = np.full(self.n_arms, self.prior_a)
        self.b = np.full(self.n_arms, self.prior_b)

    def select(self, x: np.ndarray, rng: np.random.Generator) -> int:
        return int(np.argmax(rng.beta(self.a, self.b)))

    def update(self, arm: int, reward: float, x: np.ndarray) -> None:
        self.a[arm] += reward
        self.b[arm] += 1 - reward


class LinUCB(_Policy):
    """Disjoint LinUCB (Li et al. 2010): per arm a ridge regression of the reward on the
    context ``x``; show the arm maximising ``theta_a' x + alpha * sqrt(x' A_a^-1 x)``.

    ``A_a^-1`` is kept up to date with the Sherman-Morrison formula, so a step costs
    O(arms * dim^2).
    """

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, ridge: float = 1.0) -> None:
        self.dim = check_positive_int(dim, name="dim")
        if alpha < 0 or ridge <= 0:
            raise ValueError(f"alpha must be >= 0 and ridge > 0, got {alpha}, {ridge}.")
        self.alpha, self.ridge = float(alpha), float(ridge)
        super().__init__(n_arms)

    def reset(self) -> None:
        self.A_inv = np.tile(np.eye(self.dim) / self.ridge, (self.n_arms, 1, 1))
        self.b = np.zeros((self.n_arms, self.dim))
        self.theta = np.zeros((self.n_arms, self.dim))

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float).ravel()
        if len(x) != self.dim:
            raise ValueError(f"context has {len(x)} features, LinUCB expects {self.dim}.")
        return x

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Upper confidence bound of every arm for context ``x``."""
        x = self._x(x)
        width = np.sqrt(np.maximum(np.einsum("kde,d,e->k", self.A_inv, x, x), 0.0))
        return self.theta @ x + self.alpha * width

    def select(self, x: np.ndarray, rng: np.random.Generator) -> int:
        return int(np.argmax(self.scores(x)))

    def update(self, arm: int, reward: float, x: np.ndarray) -> None:
        x = self._x(x)
        a_inv = self.A_inv[arm]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[arm] += reward * x
        self.theta[arm] = a_inv @ self.b[arm]


# --------------------------------------------------------------------------------------
# Playing and logging
# --------------------------------------------------------------------------------------

@dataclass
class Trace:
    """What a policy did: the ``events`` it acted on, the ``arms`` it chose and the 0/1
    ``rewards`` it got (all aligned; stored compactly)."""

    events: np.ndarray
    arms: np.ndarray
    rewards: np.ndarray

    @property
    def value(self) -> float:
        """Mean reward per event (NaN if no event)."""
        return float(self.rewards.mean()) if len(self.rewards) else float("nan")


def run_online(policy: _Policy, rewards: object, contexts: object = None, *,
               seed: int = 0) -> Trace:
    """Play ``policy`` on every event of a full reward matrix, revealing only the reward of
    the arm it chooses (the ground truth that a logged-data estimator tries to recover)."""
    r = _rewards(rewards)
    x = _contexts(contexts, len(r))
    if r.shape[1] != policy.n_arms:
        raise ValueError(f"rewards have {r.shape[1]} arms, the policy {policy.n_arms}.")
    policy.reset()
    rng = np.random.default_rng(seed)
    arms = np.empty(len(r), dtype=int)
    for t in range(len(r)):
        a = policy.select(x[t], rng)
        arms[t] = a
        policy.update(a, r[t, a], x[t])
    return Trace(np.arange(len(r), dtype=np.int32), arms.astype(np.int16),
                 r[np.arange(len(r)), arms].astype(np.int8))


@dataclass
class Log:
    """A log from a randomised policy: the ``arms`` shown, their ``rewards`` and the
    ``propensity`` with which each was shown."""

    arms: np.ndarray
    rewards: np.ndarray
    propensity: np.ndarray


def log_policy(rewards: object, probabilities: object, *, seed: int = 0) -> Log:
    """Log a randomised policy with known arm ``probabilities`` (a vector, or one row per
    event) on a full reward matrix: only the shown arm's reward is kept."""
    r = _rewards(rewards)
    p = _probabilities(probabilities, len(r), r.shape[1], "probabilities")
    rng = np.random.default_rng(seed)
    u = rng.random(len(r))[:, None]
    arms = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), r.shape[1] - 1)
    idx = np.arange(len(r))
    return Log(arms, r[idx, arms], p[idx, arms])


def greedy_logging(n_arms: int, favourite: int, explore: float) -> np.ndarray:
    """Arm probabilities of an incumbent that shows ``favourite`` with probability
    ``1 - explore`` and spreads ``explore`` uniformly over the other arms."""
    check_positive_int(n_arms, name="n_arms", minimum=2)
    if not 0 < explore < 1:
        raise ValueError(f"explore must be in (0, 1), got {explore}.")
    if not 0 <= favourite < n_arms:
        raise ValueError(f"favourite must be in [0, {n_arms}), got {favourite}.")
    p = np.full(n_arms, explore / (n_arms - 1))
    p[favourite] = 1 - explore
    return p


def replay(policy: _Policy, log: Log, contexts: object = None, *, seed: int = 0) -> Trace:
    """Li et al.'s (2011) replay estimator: walk the log in order; where the policy picks
    the logged arm, it sees the logged reward and learns; other events are discarded.

    Unbiased for the policy's per-event value only when the log was drawn uniformly at
    random; it keeps about ``1 / n_arms`` of the events.
    """
    n = len(log.arms)
    x = _contexts(contexts, n)
    policy.reset()
    rng = np.random.default_rng(seed)
    events, arms, rewards = [], [], []
    for t in range(n):
        a = policy.select(x[t], rng)
        if a == log.arms[t]:
            policy.update(a, log.rewards[t], x[t])
            events.append(t)
            arms.append(a)
            rewards.append(log.rewards[t])
    return Trace(np.asarray(events, dtype=np.int32), np.asarray(arms, dtype=np.int16),
                 np.asarray(rewards, dtype=np.int8))


def _target(target: object, log: Log) -> np.ndarray:
    """Probability the target policy gives to the logged arm, per event."""
    t = np.asarray(target)
    n = len(log.arms)
    if t.ndim == 1 and len(t) == n and np.issubdtype(t.dtype, np.integer):
        return (t == log.arms).astype(float)
    k = t.shape[-1] if t.ndim else 0
    p = _probabilities(t, n, k, "target")
    if log.arms.max() >= k:
        raise ValueError(f"the log shows arm {log.arms.max()}, the target has {k} arms.")
    return p[np.arange(n), log.arms]


def ips(target: object, log: Log) -> float:
    """Inverse-propensity estimate of a fixed target policy's per-event value.

    ``target`` is either the arm the target policy picks at each event (a deterministic
    policy, integer vector) or its arm probabilities (per event, or one vector).
    """
    if (log.propensity <= 0).any():
        raise ValueError("the log has zero propensities; IPS is undefined there.")
    return float(np.mean(_target(target, log) / log.propensity * log.rewards))


def snips(target: object, log: Log) -> float:
    """Self-normalised IPS: the weighted mean reward, weights divided by their sum."""
    if (log.propensity <= 0).any():
        raise ValueError("the log has zero propensities; SNIPS is undefined there.")
    w = _target(target, log) / log.propensity
    return float((w * log.rewards).sum() / w.sum()) if w.sum() > 0 else float("nan")


def replay_fixed(target: object, log: Log) -> float:
    """Replay estimate of a fixed (non-learning) policy: the mean logged reward over the
    events where the target's arm equals the logged arm."""
    match = _target(target, log) == 1
    return float(log.rewards[match].mean()) if match.any() else float("nan")


def effective_sample_size(target: object, log: Log) -> float:
    """Kish's effective sample size of the importance weights, (sum w)^2 / sum w^2."""
    w = _target(target, log) / log.propensity
    return float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0


def policy_value(target: object, rewards: object) -> float:
    """True per-event value of a fixed policy on a full reward matrix."""
    r = _rewards(rewards)
    t = np.asarray(target)
    if t.ndim == 1 and len(t) == len(r) and np.issubdtype(t.dtype, np.integer):
        return float(r[np.arange(len(r)), t].mean())
    p = _probabilities(t, len(r), r.shape[1], "target")
    return float((p * r).sum(axis=1).mean())


def cumulative_regret(trace: Trace, rewards: object, arm: int) -> np.ndarray:
    """Running sum of ``rewards[t, arm] - trace reward`` over the trace's events: the
    regret against always showing ``arm`` on the same events."""
    r = _rewards(rewards)
    return np.cumsum(r[trace.events, arm] - trace.rewards.astype(float))


# --------------------------------------------------------------------------------------
# Visits and rewards from real purchases
# --------------------------------------------------------------------------------------

@dataclass
class VisitLog:
    """Visits (one per invoice) with full per-category rewards and leak-free contexts.

    Attributes
    ----------
    visits
        One row per visit, in time order: ``invoice``, ``customer_id``, ``timestamp``,
        ``country_group``.
    rewards
        (visits, arms) 0/1 matrix: whether the visit's basket holds a product of the arm's
        category.
    contexts
        (visits, features) float matrix built only from what was known before the visit.
    arms, features
        Names of the columns of ``rewards`` and ``contexts``.
    """

    visits: pd.DataFrame
    rewards: np.ndarray
    contexts: np.ndarray
    arms: list[str]
    features: list[str]


def categorise(descriptions: pd.Series, categories: Mapping[str, str] = AD_CATEGORIES
               ) -> pd.DataFrame:
    """0/1 frame: which keyword category (regular expression) each description matches.
    A product can match several categories or none."""
    if not categories:
        raise ValueError("categories must name at least one category.")
    text = descriptions.fillna("").astype(str).str.upper()
    out = {}
    for name, pattern in categories.items():
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"category {name!r} has a bad pattern {pattern!r}: {err}") from None
        out[name] = text.str.contains(pattern, regex=True).astype(bool)
    return pd.DataFrame(out, index=descriptions.index)


def visit_log(transactions: pd.DataFrame, start: object,
              categories: Mapping[str, str] = AD_CATEGORIES) -> VisitLog:
    """Turn clean purchase lines into an ad log with full rewards.

    Each invoice on or after ``start`` is a visit. The reward of arm ``a`` is 1 when the
    basket contains a product of category ``a``. The context of a visit uses the
    customer's earlier invoices only (any since the start of the data): an intercept, the
    country group (UK, rest of Europe, elsewhere), the season (sine and cosine of the day
    of the year), a new-customer flag, log(1 + earlier visits), and for every category
    the share of the customer's earlier visits that contained it.
    """
    frame = check_frame(transactions, {"invoice": "string", "customer_id": "integer",
                                       "invoice_date": "datetime", "country": "string"},
                        name="transactions")
    if "description" not in frame.columns:
        raise ValueError("transactions is missing column 'description'.")
    start = pd.Timestamp(start)
    lines = categorise(frame["description"], categories)
    arms = list(lines.columns)
    baskets = lines.groupby(frame["invoice"].to_numpy()).any()
    meta = frame.groupby("invoice").agg(customer_id=("customer_id", "first"),
                                        timestamp=("invoice_date", "min"),
                                        country=("country", "first"))
    visits = meta.join(baskets).sort_values(["timestamp", "customer_id"], kind="stable")
    if (visits["timestamp"] >= start).sum() == 0:
        raise ValueError(f"no invoice on or after start={start.date()}.")
    by = visits.groupby("customer_id", sort=False)
    prior = by.cumcount().to_numpy().astype(float)
    shares = []
    for arm in arms:
        before = by[arm].cumsum().to_numpy() - visits[arm].to_numpy()
        shares.append(np.divide(before, prior, out=np.zeros_like(prior), where=prior > 0))
    country = visits["country"].astype(str)
    group = np.where(country == "United Kingdom", "UK",
                     np.where(country.isin(EU_COUNTRIES), "Europe", "elsewhere"))
    day = visits["timestamp"].dt.day_of_year.to_numpy() / 365.25 * 2 * np.pi
    x = np.column_stack([np.ones(len(visits)), group == "Europe", group == "elsewhere",
                         np.sin(day), np.cos(day), prior == 0, np.log1p(prior) / 3,
                         *shares]).astype(float)
    keep = (visits["timestamp"] >= start).to_numpy()
    out = visits.loc[keep, ["customer_id", "timestamp"]].assign(
        country_group=group[keep]).reset_index(names="invoice").reset_index(drop=True)
    features = ["intercept", "Europe", "elsewhere", "season sin", "season cos", "new",
                "log visits"] + [f"share {a}" for a in arms]
    return VisitLog(out, visits.loc[keep, arms].to_numpy(dtype=float), x[keep], arms,
                    features)


def replay_runs(rewards: object, contexts: object, policies: Mapping[str, object],
                logging: object, *, fixed_arm: int, fixed_name: str,
                seeds: object = range(10)) -> dict[tuple[str, int], Trace]:
    """Replay every policy on logs drawn with several seeds (chapter 6.5's replay check).

    For each seed ``s`` of ``seeds``, a log is drawn from ``rewards`` with the arm
    probabilities ``logging`` (:func:`log_policy`, seed ``100 + s``); each policy of
    ``policies`` is made afresh and replayed on it (:func:`replay`, seed ``s``), and so is
    :class:`FixedArm` on ``fixed_arm``, under the name ``fixed_name``.

    Parameters
    ----------
    rewards
        The full 0/1 reward matrix, events x arms.
    contexts
        The context matrix (one row per event), or None.
    policies
        Name -> a function of no argument that makes a fresh policy.
    logging
        Arm probabilities of the logging policy (a vector, or one row per event).
    fixed_arm, fixed_name
        The arm of the fixed policy replayed beside them, and its name.
    seeds
        The seeds of the logs.

    Returns
    -------
    dict
        ``(name, seed) -> Trace`` of every replay.
    """
    r = _rewards(rewards)
    if not isinstance(policies, Mapping) or not all(callable(m) for m in policies.values()):
        raise TypeError("policies must map names to functions that make a policy.")
    if not 0 <= fixed_arm < r.shape[1]:
        raise ValueError(f"fixed_arm must be in [0, {r.shape[1]}), got {fixed_arm}.")
    if fixed_name in policies:
        raise ValueError(f"fixed_name {fixed_name!r} is also the name of a policy.")
    out = {}
    for s in seeds:
        logged = log_policy(rewards, logging, seed=100 + s)
        for name, make in policies.items():
            out[(name, s)] = replay(make(), logged, contexts, seed=s)
        out[(fixed_name, s)] = replay(FixedArm(r.shape[1], fixed_arm), logged, contexts)
    return out
