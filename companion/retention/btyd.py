"""Buy-till-you-die: the BG/NBD model of repeat buying and dropout, fitted by maximum likelihood.

The BG/NBD model of Fader, Hardie and Lee (2005), "Counting your customers the easy way",
describes each customer by two hidden numbers:

* while alive, they buy as a Poisson process with rate :math:`\\lambda`, and
  :math:`\\lambda \\sim \\mathrm{Gamma}(r, \\alpha)` across customers;
* right after each purchase they drop out for good with probability :math:`p`, and
  :math:`p \\sim \\mathrm{Beta}(a, b)` across customers.

A customer's history is summarised by three numbers measured from their first purchase:
``frequency`` :math:`x` (repeat purchases), ``recency`` :math:`t_x` (time of the last
purchase) and ``age`` :math:`T` (time to the end of the observation), so that
:math:`0 \\le t_x \\le T` and :math:`t_x = 0` when :math:`x = 0`. Its likelihood is

.. math::

    L(r, \\alpha, a, b \\mid x, t_x, T) = \\frac{B(a, b + x)}{B(a, b)}
    \\frac{\\Gamma(r + x)\\, \\alpha^r}{\\Gamma(r)}
    \\Big[(\\alpha + T)^{-(r + x)}
          + \\delta_{x > 0} \\frac{a}{b + x - 1} (\\alpha + t_x)^{-(r + x)}\\Big].

Two quantities follow in closed form. The probability that the customer is still alive at
:math:`T` is

.. math::

    P(\\text{alive} \\mid x, t_x, T) = \\Big[1 + \\delta_{x > 0} \\frac{a}{b + x - 1}
    \\Big(\\frac{\\alpha + T}{\\alpha + t_x}\\Big)^{r + x}\\Big]^{-1},

and, because a live customer's posterior rate is :math:`\\mathrm{Gamma}(r + x, \\alpha + T)`
and a customer who has dropped out never buys again, the probability of no purchase in the
next :math:`\\tau` is

.. math::

    P(X(T, T + \\tau) = 0 \\mid x, t_x, T) = 1 - P(\\text{alive})
    + P(\\text{alive}) \\Big(\\frac{\\alpha + T}{\\alpha + T + \\tau}\\Big)^{r + x}
    = \\frac{L(x, t_x, T + \\tau)}{L(x, t_x, T)}.

The last form says the same thing differently: "no purchase until :math:`T + \\tau`" is the
history :math:`(x, t_x)` observed for longer. Time is in whatever unit the inputs use;
:func:`rfm_summary` measures it in days and counts distinct purchase days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from companion._checks import check_positive_int, check_timestamp
from companion.exceptions import not_fitted

PARAMETERS = ("r", "alpha", "a", "b")


def check_summary(frequency, recency, age) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``(x, t_x, T)`` arrays and return them as float arrays.

    Raises ``ValueError`` naming the first offending customer (by position) when the
    arrays are empty, of unequal lengths, not finite, negative, fractional in ``frequency``,
    have ``recency > age``, ``age <= 0``, or ``recency > 0`` with no repeat purchase.
    """
    arrays = []
    for name, values in (("frequency", frequency), ("recency", recency), ("age", age)):
        arr = np.asarray(values, dtype=float).ravel()
        if arr.size == 0:
            raise ValueError(f"{name} is empty: the BG/NBD model needs at least one customer.")
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must be finite; customer {i} has {arr[i]}.")
        if (arr < 0).any():
            i = int(np.flatnonzero(arr < 0)[0])
            raise ValueError(f"{name} must be >= 0; customer {i} has {arr[i]}.")
        arrays.append(arr)
    x, t_x, big_t = arrays
    if not len(x) == len(t_x) == len(big_t):
        raise ValueError(f"frequency, recency and age must have equal lengths, got "
                         f"{len(x)}, {len(t_x)} and {len(big_t)}.")
    if (x != np.round(x)).any():
        i = int(np.flatnonzero(x != np.round(x))[0])
        raise ValueError(f"frequency must count purchases; customer {i} has {x[i]}.")
    checks = ((big_t <= 0, "age must be > 0"),
              (t_x > big_t * (1 + 1e-12), "recency must not exceed age"),
              ((x == 0) & (t_x > 0), "recency must be 0 when frequency is 0"))
    for mask, message in checks:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise ValueError(f"{message}; customer {i} has frequency={x[i]:g}, "
                             f"recency={t_x[i]:g}, age={big_t[i]:g}.")
    return x, t_x, big_t


def _log_terms(params, x, t_x, big_t):
    """The two log terms inside the bracket of the likelihood, and the common log factor."""
    from scipy.special import betaln, gammaln

    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    log_a3 = betaln(a, b + x) - (r + x) * np.log(alpha + big_t)
    # a / (b + x - 1) * B(a, b + x) = B(a + 1, b + x - 1); only used where x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        log_a4 = np.where(x > 0, betaln(a + 1, np.maximum(b + x - 1, 1e-300))
                          - (r + x) * np.log(alpha + t_x), -np.inf)
    return common, log_a3, log_a4


def _log_likelihood_and_gradient(params, x, t_x, big_t):
    """Per-customer log-likelihood and its gradient in the log-parameters, shape (n, 4)."""
    from scipy.special import digamma

    r, alpha, a, b = params
    common, log_a3, log_a4 = _log_terms(params, x, t_x, big_t)
    total = np.logaddexp(log_a3, log_a4)
    w3, w4 = np.exp(log_a3 - total), np.exp(log_a4 - total)
    repeat = x > 0
    ln3, ln4 = np.log(alpha + big_t), np.log(alpha + t_x)
    d_abx = digamma(a + b + x)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * ln3 - w4 * ln4
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + big_t) + w4 / (alpha + t_x))
    d_a = (-(digamma(a) - digamma(a + b)) + w3 * (digamma(a) - d_abx)
           + np.where(repeat, w4 * (digamma(a + 1) - d_abx), 0.0))
    with np.errstate(invalid="ignore"):
        d_b4 = np.where(repeat, w4 * (digamma(np.maximum(b + x - 1, 1e-300)) - d_abx), 0.0)
    d_b = -(digamma(b) - digamma(a + b)) + w3 * (digamma(b + x) - d_abx) + d_b4
    grad = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b], axis=1)
    return common + total, grad


def log_likelihood(params, frequency, recency, age) -> np.ndarray:
    """Log-likelihood of each customer under BG/NBD ``params = (r, alpha, a, b)``."""
    x, t_x, big_t = check_summary(frequency, recency, age)
    params = _check_params(params)
    common, log_a3, log_a4 = _log_terms(params, x, t_x, big_t)
    return common + np.logaddexp(log_a3, log_a4)


def _check_params(params) -> np.ndarray:
    values = np.asarray(params, dtype=float).ravel()
    if values.shape != (4,) or not np.all(np.isfinite(values)) or (values <= 0).any():
        raise ValueError(f"params must be four positive numbers (r, alpha, a, b), got {params}.")
    return values


class BetaGeo:
    """The BG/NBD model, fitted by maximum likelihood on log-parameters.

    Parameters
    ----------
    penalty
        Optional L2 penalty on the log-parameters (0, the default, is plain maximum
        likelihood, as in the paper).
    """

    def __init__(self, penalty: float = 0.0) -> None:
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}.")
        self.penalty = penalty

    def fit(self, frequency, recency, age) -> BetaGeo:
        """Maximise the total log-likelihood; sets ``params_`` and ``log_likelihood_``.

        L-BFGS-B on the log-parameters with the analytic gradient, each kept within
        ``[1e-6, 1e6]``: where the data cannot identify dropout (a short window in which
        nobody seems to leave) the maximum lies on that boundary, with ``a`` near 0.
        """
        from scipy.optimize import minimize

        x, t_x, big_t = check_summary(frequency, recency, age)
        # collapse identical histories: the likelihood depends only on (x, t_x, T)
        unique, counts = np.unique(np.stack([x, t_x, big_t], axis=1), axis=0,
                                   return_counts=True)
        weights = counts / len(x)
        ux, ut, uT = unique.T

        def loss(theta):
            ll, grad = _log_likelihood_and_gradient(np.exp(theta), ux, ut, uT)
            return (-float(weights @ ll) + self.penalty * float(theta @ theta),
                    -(weights @ grad) + 2 * self.penalty * theta)

        bounds = [(np.log(1e-6), np.log(1e6))] * 4
        best = None
        for start in ([0.0, np.log(np.mean(big_t)), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]):
            res = minimize(loss, np.array(start), jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        if best is None:
            raise RuntimeError("the BG/NBD likelihood could not be maximised from any start.")
        self.params_ = pd.Series(np.exp(best.x), index=list(PARAMETERS), name="BG/NBD")
        self.log_likelihood_ = float(
            log_likelihood(self.params_.to_numpy(), x, t_x, big_t).sum())
        self.n_customers_ = len(x)
        return self

    def _fitted(self) -> np.ndarray:
        if not hasattr(self, "params_"):
            raise not_fitted(self)
        return self.params_.to_numpy()

    def p_alive(self, frequency, recency, age) -> np.ndarray:
        """Probability that each customer has not dropped out by ``age``."""
        r, alpha, a, b = self._fitted()
        x, t_x, big_t = check_summary(frequency, recency, age)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
                        + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)))
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0))), 1.0)

    def p_no_purchase(self, horizon: float, frequency, recency, age) -> np.ndarray:
        """Probability of no purchase in ``(age, age + horizon]``: the churn probability.

        ``1 - P(alive) + P(alive) * ((alpha + T) / (alpha + T + horizon)) ** (r + x)``.
        """
        if not np.isfinite(horizon) or horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}.")
        r, alpha, _, _ = self._fitted()
        x, t_x, big_t = check_summary(frequency, recency, age)
        alive = self.p_alive(x, t_x, big_t)
        quiet = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + horizon)))
        return 1.0 - alive + alive * quiet

    def __repr__(self) -> str:
        return f"BetaGeo(penalty={self.penalty})"


def simulate(params, ages, *, horizon: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Draw ``(frequency, recency, age)`` histories from the BG/NBD process.

    ``ages`` gives each customer's observation length :math:`T`; every customer makes a
    first purchase at time 0. Returns a frame with columns ``frequency``, ``recency``,
    ``age``, ``alive`` (still alive at ``age``), ``rate`` (their :math:`\\lambda`) and
    ``future`` (purchases in ``(age, age + horizon]``, the hold-out period).
    """
    r, alpha, a, b = _check_params(params)
    big_t = np.asarray(ages, dtype=float).ravel()
    if big_t.size == 0 or (big_t <= 0).any() or not np.isfinite(big_t).all():
        raise ValueError("ages must be a non-empty array of positive numbers.")
    if not np.isfinite(horizon) or horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}.")
    rng = np.random.default_rng(seed)
    n = len(big_t)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    now = np.zeros(n)
    active = np.arange(n)
    while active.size:
        now[active] += rng.exponential(1.0 / lam[active])
        active = active[now[active] <= big_t[active] + horizon]
        past = now[active] <= big_t[active]
        x[active[past]] += 1
        t_x[active[past]] = now[active[past]]
        future[active[~past]] += 1
        drop = rng.random(active.size) < p[active]
        alive[active[drop & past]] = False
        active = active[~drop]
    return pd.DataFrame({"frequency": x, "recency": t_x, "age": big_t, "alive": alive,
                         "rate": lam, "future": future})


def rfm_summary(interactions: pd.DataFrame, cutoff: object) -> pd.DataFrame:
    """BG/NBD inputs of every customer with a purchase strictly before ``cutoff``, in days.

    A purchase is a distinct calendar day with at least one invoice (several invoices on
    one day count once, as in Fader, Hardie and Lee's CDNOW data). ``frequency`` counts
    repeat purchase days, ``recency`` is the days from the first to the last purchase day
    and ``age`` the days from the first purchase day to ``cutoff``.
    """
    from companion.data.preprocessing import check_order_interactions

    frame = check_order_interactions(interactions)
    cut = check_timestamp(cutoff, name="cutoff")
    past = frame[frame["timestamp"] < cut]
    if past.empty:
        raise ValueError(f"no interaction lies before cutoff={cut.date()}.")
    days = past.assign(day=past["timestamp"].dt.normalize())[["user_id", "day"]]
    days = days.drop_duplicates()
    grouped = days.groupby("user_id")["day"]
    first, last = grouped.min(), grouped.max()
    out = pd.DataFrame({
        "frequency": (grouped.size() - 1).astype(float),
        "recency": (last - first).dt.days.astype(float),
        "age": (cut - first).dt.total_seconds() / 86400,
    })
    out.index.name = "user_id"
    return out


def churn_probability(interactions: pd.DataFrame, cutoff: object, horizon_days: int,
                      customers: pd.Index | None = None, *, model: BetaGeo | None = None
                      ) -> pd.DataFrame:
    """Fit BG/NBD on every customer seen before ``cutoff`` and score ``customers``.

    Returns a frame indexed like ``customers`` (default: everyone seen before the cutoff)
    with ``p_alive`` and ``p_churn`` (no purchase in the next ``horizon_days``); the
    fitted model is in ``frame.attrs["model"]``. Pass a fitted ``model`` to skip fitting.
    """
    check_positive_int(horizon_days, name="horizon_days")
    summary = rfm_summary(interactions, cutoff)
    if model is None:
        model = BetaGeo().fit(summary["frequency"], summary["recency"], summary["age"])
    if customers is None:
        customers = summary.index
    unknown = pd.Index(customers).difference(summary.index)
    if len(unknown):
        raise ValueError(f"{len(unknown)} customer(s) have no purchase before the cutoff, "
                         f"e.g. {list(unknown[:3])}.")
    rows = summary.loc[customers]
    args = rows["frequency"], rows["recency"], rows["age"]
    out = pd.DataFrame({"p_alive": model.p_alive(*args),
                        "p_churn": model.p_no_purchase(float(horizon_days), *args)},
                       index=rows.index)
    out.attrs["model"] = model
    return out


def ranking_ceiling(params, ages, horizon: float, *, active_days: float | None = None,
                    seed: int = 0) -> pd.Series:
    """How well churn can be ranked if customers behave exactly as BG/NBD says.

    Simulates customers with the given ``ages`` from BG/NBD ``params``, keeps those whose
    last purchase lies within ``active_days`` of the end of their history (all if None),
    and scores "no purchase in the next ``horizon``" two ways: by the model's posterior
    from the history (:meth:`BetaGeo.p_no_purchase`, the best any model of the history can
    do when the model is true) and by an oracle that knows each customer's hidden rate and
    whether they are alive (``exp(-rate * horizon)`` if alive, else 1). Purchases are
    random even for the oracle, so its ROC-AUC is below 1: the ceiling that the randomness
    of buying itself puts on ranking churners.
    """
    from companion.foundations import metrics

    sim = simulate(params, ages, horizon=horizon, seed=seed)
    if active_days is not None:
        sim = sim[sim["age"] - sim["recency"] <= active_days]
    if sim.empty:
        raise ValueError("no simulated customer is active; raise active_days.")
    model = BetaGeo()
    model.params_ = pd.Series(_check_params(params), index=list(PARAMETERS))
    y = (sim["future"] == 0).to_numpy()
    posterior = model.p_no_purchase(horizon, sim["frequency"], sim["recency"], sim["age"])
    oracle = np.where(sim["alive"], np.exp(-sim["rate"] * horizon), 1.0)
    return pd.Series({"customers": len(sim), "base rate": float(y.mean()),
                      "BG/NBD ROC-AUC": metrics.roc_auc(y, posterior),
                      "oracle ROC-AUC": metrics.roc_auc(y, oracle)})
