"""The two-stage recommender: generators, features and a ranker per task, behind the
recommender protocol.

:func:`~companion.recsys.twostage.training_examples` labels the candidates of a cutoff with
what each customer bought in the next ``horizon_days``;
:class:`~companion.recsys.twostage.TwoStageRecommender` fits generators and rankers and
recommends like every :class:`companion.recsys.baselines.Recommender`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from companion._checks import check_in, check_positive_int, check_timestamp
from companion._compat import renamed_argument
from companion.data.preprocessing import check_interactions
from companion.recsys import baselines as rec
from companion.recsys.ranking import metrics_from_hits
from companion.recsys.twostage.candidates import (
    TASKS,
    CandidateGenerator,
    check_n,
    restrict_candidates,
)
from companion.recsys.twostage.features import (
    FEATURE_GROUPS,
    FeatureBuilder,
    feature_groups,
)
from companion.recsys.twostage.rankers import KerasListwiseRanker, LightGBMRanker

__all__ = ["ndcg_at_k", "Examples", "training_examples", "TwoStageRecommender"]

_CACHED_LISTS = 8  # feature frames kept by TwoStageRecommender.features


def _cutoff_of(frame: pd.DataFrame) -> pd.Timestamp:
    """The default cutoff after ``frame``: midnight after its last interaction."""
    return frame["timestamp"].max().normalize() + pd.Timedelta(days=1)


def ndcg_at_k(ranked: pd.DataFrame, truth: pd.Series, k: int = 10) -> pd.Series:
    """NDCG@k of each customer of ``truth`` (user id -> non-empty set of relevant items)
    for the ranked candidates ``ranked`` (``user_id``, ``item_id``, best first within a
    customer).

    The hits of each customer's top ``k`` are scored by
    :func:`companion.recsys.ranking.metrics_from_hits`, whose ideal counts every relevant
    item, among the candidates or not, so the value is comparable with a full-catalogue
    evaluation of the same top ``k``; a customer without candidates scores 0.
    """
    check_positive_int(k, name="k")
    top = ranked.groupby("user_id", sort=False).head(k)
    position = top.groupby("user_id", sort=False).cumcount().to_numpy()
    relevant = truth.explode()
    pairs = pd.MultiIndex.from_arrays([relevant.index, relevant.to_numpy(dtype=object)])
    hit = pd.MultiIndex.from_arrays([top["user_id"],
                                     top["item_id"].to_numpy(dtype=object)]).isin(pairs)
    row = pd.Index(truth.index).get_indexer(top["user_id"])
    known = row >= 0
    hits = np.zeros((len(truth), k))
    hits[row[known], position[known]] = hit[known]
    ndcg = metrics_from_hits(hits, truth.map(len).to_numpy())["NDCG"].to_numpy()
    return pd.Series(ndcg, index=truth.index, name="NDCG")


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


def training_examples(interactions: pd.DataFrame, cutoff: object,
                      horizon_days: int | None = None,
                      generators: Mapping[str, rec.Recommender] | None = None,
                      n: int | Mapping = 50, *, tasks: Sequence[str] = TASKS,
                      feature_options: Mapping | None = None, required: bool = True,
                      label_days: int | None = None) -> dict[str, Examples]:
    """Labelled candidates at ``cutoff`` for each task, reading nothing after
    ``cutoff + horizon_days``.

    The generators are fitted on the interactions before ``cutoff`` and the features read
    only those; the customers are those with a history before the cutoff and a purchase
    (a purchase of an item new to them, for ``"new"``) in ``[cutoff, cutoff +
    horizon_days)``, and a candidate's label is whether it is one of those purchases. ``n``
    is one number, a mapping generator -> number, or a mapping task -> either. With
    ``required=False`` a task without customers is left out instead of raising.
    ``label_days`` is the old name of ``horizon_days`` (it works for one release, with a
    warning).
    """
    from companion.recsys.ranking import RankingTask

    horizon_days = renamed_argument("training_examples", "label_days", "horizon_days",
                                    label_days, horizon_days, required=True)

    frame = check_interactions(interactions)
    cutoff = check_timestamp(cutoff, name="cutoff")
    check_positive_int(horizon_days, name="horizon_days")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for task in tasks:
        check_in(task, TASKS, name="task")
    end = cutoff + pd.Timedelta(days=horizon_days)
    history = frame[frame["timestamp"] < cutoff]
    window = frame[(frame["timestamp"] >= cutoff) & (frame["timestamp"] < end)]
    if history.empty or window.empty:
        if not required:
            return {}
        raise ValueError(f"training examples at {cutoff.date()} need interactions before it "
                         f"and in the {horizon_days} days after it.")
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
    cutoff ``horizon_days`` before the end of the data (the end is midnight after the last
    interaction, or the ``cutoff`` given to :meth:`fit`), and at ``label_cutoffs - 1``
    earlier cutoffs, each ``horizon_days`` before the next: the generators are fitted on the
    data before a label cutoff, the features read only that data, and a candidate's label
    is whether the customer bought it in the ``horizon_days`` after it (customers with a
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
    horizon_days
        Length of the label window in days (use the horizon you recommend for; the same
        name as the churn horizon). ``label_days`` before 0.2.0: the old name still works
        for one release, with a warning.
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

    #: old argument name -> new name (the old one works in 0.2.x, with a warning)
    RENAMED = {"label_days": "horizon_days"}

    def __init__(self, generators: Mapping[str, rec.Recommender] | None = None,
                 n: int | Mapping[str, int | Mapping[str, int]] = 50,
                 ranker: object = "lightgbm", horizon_days: int = 30, label_cutoffs: int = 1,
                 tasks: Sequence[str] = TASKS, drop_groups: Sequence[str] = (),
                 validation_share: float = 0.2, feature_options: Mapping | None = None,
                 seed: int = 0, *, label_days: int | None = None) -> None:
        self.generators = generators
        self.n = n
        self.ranker = ranker
        self.horizon_days = renamed_argument("TwoStageRecommender", "label_days",
                                             "horizon_days", label_days, horizon_days, 30)
        self.label_cutoffs = label_cutoffs
        self.tasks = tasks
        self.drop_groups = drop_groups
        self.validation_share = validation_share
        self.feature_options = feature_options
        self.seed = seed

    # -- configuration -----------------------------------------------------------------
    def _check_params(self) -> None:
        check_positive_int(self.horizon_days, name="horizon_days")
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
            self.n_ = {task: check_n(self.n[task], list(generators), f"n[{task!r}]")
                       for task in self.tasks_}
        else:
            self.n_ = dict.fromkeys(self.tasks_, check_n(self.n, list(generators)))
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
        self.label_cutoffs_ = [self.cutoff_ - pd.Timedelta(days=self.horizon_days * j)
                               for j in range(1, self.label_cutoffs + 1)]
        for number, cutoff in enumerate(self.label_cutoffs_):
            data = plain[plain["timestamp"] < cutoff + pd.Timedelta(days=self.horizon_days)]
            for task, examples in training_examples(
                    data, cutoff, self.horizon_days, self.generators, self.n_,
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
