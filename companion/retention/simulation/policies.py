"""What customers are shown: the policies a simulation compares."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion.retention.simulation.world import ShopWorld


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
