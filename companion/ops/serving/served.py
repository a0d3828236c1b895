"""One served model: its version and the answers precomputed when it is loaded."""

import json
import os
import time
from pathlib import Path

import numpy as np

from companion.ops import export
from companion.ops.serving.config import DEFAULT_PRECOMPUTE, MAX_K
from companion.recsys import baselines as rec


class Served:
    """One served model with its version and precomputed answers; never changed after it
    is built (a reload builds a new one).

    ``top`` and ``top_unseen`` hold, for each precomputed customer (row ``rows[id]``), the
    codes of the :data:`~companion.ops.serving.config.MAX_K` best items without and with the
    items the customer bought, exactly as ``model.recommend(ids, MAX_K, exclude_seen=...)``
    orders them; an answer for ``k`` items is their first ``k``. ``fallback[k]`` holds the
    popularity answer for customers the model does not know, as ``model.recommend`` gives it
    for that ``k``."""

    def __init__(self, model: rec.Recommender, version: dict, source: str = "",
                 artifact: str | os.PathLike | None = None, generation: int = 0,
                 precompute: int = DEFAULT_PRECOMPUTE) -> None:
        model._check_fitted()
        self.model = model
        self.version = version
        self.source = source
        self.artifact = Path(artifact) if artifact is not None else None
        self.generation = generation
        self.loaded_at = time.time()
        self.version_id = export.version_id(version)
        self.version_json = json.dumps(self.version_id)
        users = model.user_encoder_.classes_
        self.int_ids = users.dtype.kind in "iu"
        self.n_customers = len(users)
        self.n_items = len(model.item_encoder_)
        self.supports_history = bool(getattr(model, "supports_history", False))
        items = model.items_
        self.item_values = [plain_value(v) for v in items]
        self.item_json = [json.dumps(v) for v in self.item_values]
        self.depth = min(MAX_K, self.n_items)
        pop = model.score_codes(np.array([-1], dtype=np.int64))
        self.fallback = [None] + [rec._top_k(pop, k)[0].tolist()
                                  for k in range(1, self.depth + 1)]
        self._precompute(model, users, precompute)

    def _precompute(self, model: rec.Recommender, users, limit: int) -> None:
        n = self.n_customers
        if limit < 0:
            raise ValueError(f"precompute must be >= 0, got {limit}.")
        codes = np.arange(n, dtype=np.int64)
        if limit < n:  # the most active customers (most distinct items bought)
            activity = np.diff(model.seen_.indptr)[:n]
            codes = np.sort(np.argsort(-activity, kind="stable")[:limit])
        self.top = np.empty((len(codes), self.depth), dtype=np.int32)
        self.top_unseen = np.empty((len(codes), self.depth), dtype=np.int32)
        for lo in range(0, len(codes), rec._CHUNK):
            part = codes[lo:lo + rec._CHUNK]
            scores = model.score_codes(part)
            self.top[lo:lo + len(part)] = rec._top_k(scores, self.depth)
            sub = model.seen_[part]
            scores[np.repeat(np.arange(len(part)), np.diff(sub.indptr)), sub.indices] = -np.inf
            self.top_unseen[lo:lo + len(part)] = rec._top_k(scores, self.depth)
        ids = users.to_numpy()[codes].tolist()
        self.rows = dict(zip(ids, range(len(codes)), strict=True))
        self.complete = len(codes) == n  # every known customer is precomputed

    def lookup(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool] | None:
        """``(item codes, fallback)`` without calling the model, or None when the model
        must be called (:meth:`compute`)."""
        row = self.rows.get(customer)
        if row is not None:
            table = self.top_unseen if exclude_seen else self.top
            return table[row, :k].tolist(), False
        if self.complete:
            return self.fallback[k], True
        return None

    def compute(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool]:
        """``(item codes, fallback)`` from the model (customers beyond the precomputed)."""
        code = int(self.model.user_encoder_.transform(
            np.asarray([customer], dtype=np.int64 if self.int_ids else object))[0])
        if code < 0:
            return self.fallback[k], True
        scores = self.model.score_codes(np.array([code]))
        if exclude_seen:
            scores[0, self.model.seen_[code].indices] = -np.inf
        return rec._top_k(scores, k)[0].tolist(), False

    def answer(self, customer: object, k: int, exclude_seen: bool) -> tuple[list, bool]:
        found = self.lookup(customer, k, exclude_seen)
        return found if found is not None else self.compute(customer, k, exclude_seen)

    def customer_json(self, customer: object) -> str:
        return str(customer) if self.int_ids else json.dumps(customer)

    def one_json(self, customer: object, k: int, codes: list, fallback: bool) -> bytes:
        """The body of ``GET /recommend/{customer}``, written without a JSON encoder."""
        items = ",".join([self.item_json[c] for c in codes])
        return (f'{{"version":{self.version_json},"k":{k},'
                f'"customer":{self.customer_json(customer)},"items":[{items}],'
                f'"fallback":{"true" if fallback else "false"}}}').encode()


def plain_value(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
