"""Stage one of the two-stage recommender: candidates from several fitted recommenders.

:class:`~companion.recsys.twostage.CandidateGenerator` takes the union of each generator's
top ``n`` items per customer (:func:`~companion.recsys.twostage.default_generators` are the
book's five); :func:`~companion.recsys.twostage.restrict_candidates` keeps the top ``n`` of
each, and :func:`~companion.recsys.twostage.candidate_recall` measures how much of what
customers bought the candidates hold (the ceiling of stage two).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_in, check_positive_int
from companion.data.preprocessing import check_interactions
from companion.exceptions import not_fitted
from companion.recsys import baselines as rec

__all__ = ["TASKS", "default_generators", "check_n", "CandidateGenerator",
           "restrict_candidates", "candidate_recall"]

TASKS = ("all", "new")


_CHUNK = 1024  # customers scored at once


def default_generators() -> dict[str, rec.Recommender]:
    """Unfitted stage-one generators: the customer's own past items (repeat-buy), two
    next-basket models (TIFU-KNN, UP-CF@r), co-purchase (item-kNN) and what sold in the
    last two weeks. The parameters are values that the baselines' tuning of chapter 5.6
    chose on the validation window of the first test window (September 2011) of the real
    data, for one task or the other."""
    return {
        "repeat-buy": rec.RepeatBuy(half_life_days=180),
        "TIFU-KNN": rec.TIFUKNN(neighbours=100, alpha=0.2, group_size=3),
        "UP-CF@r": rec.UPCF(recency=5, asymmetry=0.75, locality=10),
        "item-kNN": rec.ItemKNN(neighbours=200, shrinkage=20.0),
        "recent popularity": rec.Popularity(window_days=14),
    }


def check_n(n: object, names: Sequence[str], what: str = "n") -> dict[str, int]:
    """``n`` (one positive int, or a mapping generator name -> int) as a full mapping.

    Raises ``ValueError`` naming the generators a mapping adds or misses, and the value that
    is not a positive integer.
    """
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
        return dict(generators), check_n(self.n, list(generators))

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
            raise not_fitted(self)
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
            raise not_fitted(self)
        if not isinstance(users, Mapping) or not users:
            raise ValueError("users must be a non-empty mapping task -> user ids.")
        sizes = {}
        for task in users:
            check_in(task, TASKS, name="task")
            sizes[task] = check_n(self.n_ if n is None or task not in n else n[task],
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
    sizes = check_n(n, names)
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
