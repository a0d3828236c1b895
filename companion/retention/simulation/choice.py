"""What a visitor buys: the multinomial logit over the catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


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


def fit_choice_coefficients(features: list[np.ndarray], chosen: list[np.ndarray],
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
