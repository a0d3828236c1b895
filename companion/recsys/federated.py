"""A NumPy factor model trained by SGD, centrally, by federated averaging, or locally.

:class:`FactorMF` is matrix factorisation with item biases trained by the BPR loss
(Rendle et al., 2009) with minibatch SGD and one uniformly sampled negative per positive.
It follows the :mod:`companion.recsys.baselines` protocol and can be updated with new
interactions (:meth:`companion.recsys.baselines.Recommender.partial_fit`): new customers and
products get fresh factors, and a few epochs run over the new pairs plus a replay sample
of old ones.

:class:`FederatedMF` trains the same model by **federated averaging** (FedAvg, McMahan et
al., 2017). Every customer belongs to one client (a country, or a group of customers
standing for devices). Each round, every client starts from the server's item factors,
runs ``local_epochs`` of SGD on its own purchases only, and sends back the change of its
item parameters; the server adds the clients' changes weighted by their numbers of
training pairs. User factors never leave their client. With ``clip_norm`` each client's
change is scaled to an L2 norm of at most ``clip_norm``, and with ``noise_multiplier``
``z`` the server adds Gaussian noise of standard deviation ``z * clip_norm * max(w)`` to the
weighted sum (``w`` the client weights), the sensitivity of that sum to any one client's
change: the Gaussian mechanism of DP-FedAvg (McMahan et al., 2018; Abadi et al., 2016).
No privacy budget (epsilon) is computed here; that needs an accountant.

:class:`LocalMF` is the other extreme: every client trains its own model on its own
purchases and never shares anything.

With one client, one local epoch and no clipping, federated training performs exactly the
SGD steps of central training on the same data in the same order (a unit test checks it).

:func:`transfer_study` and :func:`federated_study` are chapter 8's two studies with these
models: pre-training on an earlier year, and central against federated against local
training, with clipped and noised client updates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from companion._checks import check_positive_int
from companion.data.preprocessing import Split, check_interactions
from companion.recsys.baselines import Recommender

__all__ = ["FactorMF", "FederatedMF", "LocalMF", "bpr_epoch", "clip_update", "aggregate",
           "client_weights", "transfer_study", "federated_study"]


def _rng(seed: int, epoch: int, client: int = 0) -> np.random.Generator:
    """The generator of one local epoch of one client (client 0 is central training)."""
    return np.random.default_rng([seed, epoch, client])


def bpr_epoch(user_f: np.ndarray, item_f: np.ndarray, item_b: np.ndarray, users: np.ndarray,
              items: np.ndarray, rng: np.random.Generator, *, learning_rate: float,
              l2: float, batch_size: int) -> float:
    """One epoch of minibatch BPR-SGD, updating the three arrays in place.

    The pairs ``(users[n], items[n])`` are visited in an order drawn from ``rng``; each gets
    one negative item drawn uniformly from the catalogue. Returns the mean BPR loss.
    """
    n = len(users)
    if n == 0:
        return float("nan")
    order = rng.permutation(n)
    negatives = rng.integers(0, item_f.shape[0], n)
    total = 0.0
    for lo in range(0, n, batch_size):
        idx = order[lo:lo + batch_size]
        u, i, j = users[idx], items[idx], negatives[idx]
        pu, qi, qj = user_f[u], item_f[i], item_f[j]
        x = np.einsum("nd,nd->n", pu, qi - qj) + item_b[i] - item_b[j]
        g = 1.0 / (1.0 + np.exp(np.clip(x, -30, 30)))  # sigmoid(-x)
        total += float(np.logaddexp(0.0, -x).sum())
        np.add.at(user_f, u, learning_rate * (g[:, None] * (qi - qj) - l2 * pu))
        np.add.at(item_f, i, learning_rate * (g[:, None] * pu - l2 * qi))
        np.add.at(item_f, j, learning_rate * (-g[:, None] * pu - l2 * qj))
        np.add.at(item_b, i, learning_rate * (g - l2 * item_b[i]))
        np.add.at(item_b, j, learning_rate * (-g - l2 * item_b[j]))
    return total / n


def client_weights(sizes: Sequence[float]) -> np.ndarray:
    """FedAvg weights: each client's share of the training pairs."""
    sizes = np.asarray(sizes, dtype=float)
    if sizes.ndim != 1 or len(sizes) == 0:
        raise ValueError("sizes must be a non-empty 1-D sequence of client sizes.")
    if (sizes < 0).any() or not np.isfinite(sizes).all():
        raise ValueError(f"client sizes must be finite and non-negative, got {sizes.min()}.")
    if sizes.sum() <= 0:
        raise ValueError("client sizes sum to zero; no client has training data.")
    return sizes / sizes.sum()


def clip_update(update: np.ndarray, clip_norm: float | None) -> np.ndarray:
    """``update`` scaled so that its L2 norm is at most ``clip_norm`` (None: unchanged)."""
    update = np.asarray(update, dtype=float)
    if clip_norm is None:
        return update
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm}.")
    norm = float(np.linalg.norm(update))
    return update * min(1.0, clip_norm / norm) if norm > 0 else update


def aggregate(updates: Sequence[np.ndarray], weights: Sequence[float], *,
              clip_norm: float | None = None, noise_multiplier: float = 0.0,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """The server step: ``sum_k w_k clip(update_k)`` plus Gaussian noise.

    The noise has standard deviation ``noise_multiplier * clip_norm * max(w)`` in every
    coordinate, the L2 sensitivity of the weighted sum to one client's clipped update.
    Noise needs a ``clip_norm`` (without clipping the sensitivity is unbounded).
    """
    weights = np.asarray(weights, dtype=float)
    if len(updates) == 0 or len(updates) != len(weights):
        raise ValueError(f"need one weight per update, got {len(updates)} updates and "
                         f"{len(weights)} weights.")
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must be non-negative and sum to 1, got sum "
                         f"{weights.sum():.4f}.")
    shapes = {np.shape(u) for u in updates}
    if len(shapes) != 1:
        raise ValueError(f"all updates must have the same shape, got {sorted(shapes)}.")
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}.")
    if noise_multiplier > 0 and clip_norm is None:
        raise ValueError("noise_multiplier > 0 needs a clip_norm to bound the sensitivity.")
    total = sum(w * clip_update(u, clip_norm) for w, u in zip(weights, updates, strict=True))
    if noise_multiplier > 0:
        if rng is None:
            raise ValueError("noise needs a random generator (rng).")
        total = total + rng.normal(0.0, noise_multiplier * clip_norm * weights.max(),
                                   np.shape(total))
    return total


class FactorMF(Recommender):
    """BPR matrix factorisation with item biases, trained by NumPy minibatch SGD.

    Parameters
    ----------
    dim
        Number of latent factors.
    epochs
        Passes over the distinct (customer, product) pairs of the training data.
    learning_rate, l2, batch_size
        SGD step, L2 penalty per step, pairs per minibatch.
    update_epochs, replay
        For ``partial_fit``: epochs over the new pairs plus ``replay`` times as many
        old pairs drawn at random (0: new pairs only).
    init_scale
        Standard deviation of the initial factors.
    seed
        Seeds initialisation, order and negatives.
    """

    def __init__(self, dim: int = 32, epochs: int = 20, learning_rate: float = 0.05,
                 l2: float = 0.005, batch_size: int = 256, update_epochs: int = 3,
                 replay: float = 1.0, init_scale: float = 0.1, seed: int = 0) -> None:
        self.dim, self.epochs, self.learning_rate, self.l2 = dim, epochs, learning_rate, l2
        self.batch_size, self.update_epochs, self.replay = batch_size, update_epochs, replay
        self.init_scale, self.seed = init_scale, seed

    def _check_params(self) -> None:
        check_positive_int(self.dim, name="dim")
        check_positive_int(self.epochs, name="epochs", minimum=0)
        check_positive_int(self.batch_size, name="batch_size")
        for name in ("learning_rate", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}.")

    def _init(self, n_users: int, n_items: int) -> None:
        rng = np.random.default_rng([self.seed, 1 << 20])
        self.user_factors_ = (self.init_scale * rng.standard_normal((n_users, self.dim))
                              ).astype(np.float64)
        self.item_factors_ = (self.init_scale * rng.standard_normal((n_items, self.dim))
                              ).astype(np.float64)
        self.item_bias_ = np.zeros(n_items)

    def _pairs(self, counts: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        coo = sp.csr_matrix(counts).tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64)

    def _epoch(self, users, items, epoch: int, client: int = 0, item_f=None, item_b=None):
        return bpr_epoch(self.user_factors_,
                         self.item_factors_ if item_f is None else item_f,
                         self.item_bias_ if item_b is None else item_b, users, items,
                         _rng(self.seed, epoch, client), learning_rate=self.learning_rate,
                         l2=self.l2, batch_size=self.batch_size)

    def _fit(self, frame, counts):
        self._check_params()
        self._init(*counts.shape)
        users, items = self._pairs(counts)
        self.history_ = [self._epoch(users, items, e) for e in range(self.epochs)]
        self.n_updates_ = 0

    def warm_start(self, user_factors: pd.DataFrame | None = None,
                   item_factors: pd.DataFrame | None = None,
                   item_bias: pd.Series | None = None) -> FactorMF:
        """Transfer: initialise the next :meth:`fit` with given factors for the ids they
        share (frames indexed by id, ``dim`` columns); other ids start at random."""
        for name, frame in (("user_factors", user_factors), ("item_factors", item_factors)):
            if frame is not None and frame.shape[1] != self.dim:
                raise ValueError(f"{name} has {frame.shape[1]} columns, expected dim="
                                 f"{self.dim}.")
        self._warm = (user_factors, item_factors, item_bias)
        return self

    def fit(self, interactions: pd.DataFrame) -> FactorMF:
        warm = self.__dict__.pop("_warm", None)
        if warm is None:
            return super().fit(interactions)
        epochs = self.epochs
        self.epochs = 0  # fit only sets up encoders and random factors
        try:
            super().fit(interactions)
        finally:
            self.epochs = epochs
        user_f, item_f, item_b = warm
        for source, target, classes in ((user_f, self.user_factors_, self.user_encoder_),
                                        (item_f, self.item_factors_, self.item_encoder_)):
            if source is not None:
                shared = classes.classes_.isin(source.index)
                target[shared] = source.reindex(classes.classes_[shared]).to_numpy()
        if item_b is not None:
            shared = self.item_encoder_.classes_.isin(item_b.index)
            self.item_bias_[shared] = item_b.reindex(
                self.item_encoder_.classes_[shared]).to_numpy()
        users, items = self._pairs(self.seen_)
        self.history_ = [self._epoch(users, items, e) for e in range(self.epochs)]
        return self

    def _grow(self, n_users: int, n_items: int) -> None:
        rng = np.random.default_rng([self.seed, 1 << 21, self.n_updates_])
        extra_u = n_users - len(self.user_factors_)
        extra_i = n_items - len(self.item_factors_)
        self.user_factors_ = np.vstack([self.user_factors_, self.init_scale
                                        * rng.standard_normal((extra_u, self.dim))])
        self.item_factors_ = np.vstack([self.item_factors_, self.init_scale
                                        * rng.standard_normal((extra_i, self.dim))])
        self.item_bias_ = np.concatenate([self.item_bias_, np.zeros(extra_i)])

    def _partial_fit(self, frame, counts):
        """Warm start: new ids get fresh factors; ``update_epochs`` epochs over the new
        pairs plus ``replay`` times as many old pairs drawn at random."""
        check_positive_int(self.update_epochs, name="update_epochs")
        if not self.replay >= 0:
            raise ValueError(f"replay must be >= 0, got {self.replay}.")
        self._grow(*counts.shape)
        self.n_updates_ += 1
        users, items = self._pairs(counts)
        rng = np.random.default_rng([self.seed, 1 << 22, self.n_updates_])
        old_u, old_i = self._pairs(self.seen_)
        n_old = min(len(old_u), int(round(self.replay * len(users))))
        pick = rng.choice(len(old_u), n_old, replace=False)
        users = np.concatenate([users, old_u[pick]])
        items = np.concatenate([items, old_i[pick]])
        for e in range(self.update_epochs):
            self._epoch(users, items, (1 << 23) + 1000 * self.n_updates_ + e)

    def _score(self, users):
        return (self.user_factors_[users] @ self.item_factors_.T
                + self.item_bias_).astype(np.float32)

    def item_table(self) -> tuple[pd.DataFrame, pd.Series]:
        """Item factors (indexed by item id) and item biases, e.g. for transfer."""
        self._check_fitted()
        ids = self.item_encoder_.classes_
        return pd.DataFrame(self.item_factors_, index=ids), pd.Series(self.item_bias_, ids)

    def user_table(self) -> pd.DataFrame:
        """User factors indexed by user id."""
        self._check_fitted()
        return pd.DataFrame(self.user_factors_, index=self.user_encoder_.classes_)


def _client_codes(model: Recommender, clients: pd.Series) -> tuple[np.ndarray, list]:
    """Client number of every encoded user, and the sorted client names."""
    if not isinstance(clients, pd.Series):
        raise TypeError(f"clients must be a Series user_id -> client, got "
                        f"{type(clients).__name__}.")
    ids = model.user_encoder_.classes_
    found = clients.reindex(ids)
    missing = ids[found.isna().to_numpy()]
    if len(missing):
        raise ValueError(f"{len(missing)} customers have no client in clients, e.g. "
                         f"{list(missing[:3])}.")
    names = sorted(found.astype(str).unique())
    return np.searchsorted(names, found.astype(str).to_numpy()), names


class FederatedMF(FactorMF):
    """:class:`FactorMF` trained by federated averaging over ``clients``.

    Parameters
    ----------
    clients
        Series mapping every training customer id to a client name.
    rounds, local_epochs
        Communication rounds, and epochs each client runs per round.
    clip_norm, noise_multiplier
        Client-update clipping and server noise (see :func:`aggregate`); ``None`` and 0
        switch them off.
    Other parameters as :class:`FactorMF` (``epochs`` is unused).
    """

    def __init__(self, clients: pd.Series | None = None, rounds: int = 10,
                 local_epochs: int = 2, clip_norm: float | None = None,
                 noise_multiplier: float = 0.0, dim: int = 32, learning_rate: float = 0.05,
                 l2: float = 0.005, batch_size: int = 256, init_scale: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(dim=dim, learning_rate=learning_rate, l2=l2, batch_size=batch_size,
                         init_scale=init_scale, seed=seed)
        self.clients, self.rounds, self.local_epochs = clients, rounds, local_epochs
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier

    def _fit(self, frame, counts):
        self._check_params()
        check_positive_int(self.rounds, name="rounds")
        check_positive_int(self.local_epochs, name="local_epochs")
        if self.clients is None:
            raise ValueError("FederatedMF needs clients (a Series user_id -> client).")
        self._init(*counts.shape)
        owner, self.client_names_ = _client_codes(self, self.clients)
        users, items = self._pairs(counts)
        by_client = [np.flatnonzero(owner[users] == k) for k in range(len(self.client_names_))]
        weights = client_weights([len(idx) for idx in by_client])
        server = np.random.default_rng([self.seed, 1 << 24])
        self.history_ = []
        for r in range(self.rounds):
            updates = []
            for k, idx in enumerate(by_client):
                item_f, item_b = self.item_factors_.copy(), self.item_bias_.copy()
                for e in range(self.local_epochs):
                    self._epoch(users[idx], items[idx], r * self.local_epochs + e, k,
                                item_f, item_b)
                updates.append(np.column_stack([item_f - self.item_factors_,
                                                item_b - self.item_bias_]))
            step = aggregate(updates, weights, clip_norm=self.clip_norm,
                             noise_multiplier=self.noise_multiplier, rng=server)
            self.item_factors_ = self.item_factors_ + step[:, :-1]
            self.item_bias_ = self.item_bias_ + step[:, -1]
            self.history_.append({"round": r + 1, "update norm": float(np.linalg.norm(step)),
                                  "client norms": [float(np.linalg.norm(u)) for u in updates]})
        self.weights_ = pd.Series(weights, index=self.client_names_, name="weight")

    # FactorMF's warm start does not apply: with the base class's update step,
    # partial_fit raises NotImplementedError before it changes anything
    _partial_fit = Recommender._partial_fit


class LocalMF(FactorMF):
    """Local-only training: each client fits :class:`FactorMF` on its own purchases and
    ranks the whole catalogue with its own item factors (products it never sold keep
    their random start)."""

    def __init__(self, clients: pd.Series | None = None, dim: int = 32, epochs: int = 20,
                 learning_rate: float = 0.05, l2: float = 0.005, batch_size: int = 256,
                 init_scale: float = 0.1, seed: int = 0) -> None:
        super().__init__(dim=dim, epochs=epochs, learning_rate=learning_rate, l2=l2,
                         batch_size=batch_size, init_scale=init_scale, seed=seed)
        self.clients = clients

    def _fit(self, frame, counts):
        self._check_params()
        if self.clients is None:
            raise ValueError("LocalMF needs clients (a Series user_id -> client).")
        self._init(*counts.shape)
        self.owner_, self.client_names_ = _client_codes(self, self.clients)
        users, items = self._pairs(counts)
        start_f, start_b = self.item_factors_, self.item_bias_
        self.client_items_, self.client_bias_ = [], []
        for k in range(len(self.client_names_)):
            idx = np.flatnonzero(self.owner_[users] == k)
            item_f, item_b = start_f.copy(), start_b.copy()
            for e in range(self.epochs):
                self._epoch(users[idx], items[idx], e, k, item_f, item_b)
            self.client_items_.append(item_f)
            self.client_bias_.append(item_b)

    # FactorMF's warm start does not apply: with the base class's update step,
    # partial_fit raises NotImplementedError before it changes anything
    _partial_fit = Recommender._partial_fit

    def _score(self, users):
        out = np.empty((len(users), len(self.item_bias_)), dtype=np.float32)
        for k in np.unique(self.owner_[users]):
            rows = np.flatnonzero(self.owner_[users] == k)
            out[rows] = (self.user_factors_[users[rows]] @ self.client_items_[k].T
                         + self.client_bias_[k])
        return out


# ----------------------------------------------------------------------------- studies


def _check_study(split: object, params: object) -> None:
    if not isinstance(split, Split):
        raise TypeError(f"split must be a Split, got {type(split).__name__}.")
    if split.test.empty:
        raise ValueError("split.test is empty: there is no test window to score.")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of FactorMF settings, got "
                        f"{type(params).__name__}.")


def transfer_study(earlier: pd.DataFrame, split: Split, params: dict) -> dict:
    """Chapter 8's transfer study: does a year of older history help a factor model?

    A :class:`FactorMF` pre-trained on ``earlier`` hands its factors to a model of the
    period of ``split`` (:meth:`FactorMF.warm_start`), which then trains on everything
    before the test window as usual. Three models, all with ``params``: the later period
    alone, pre-trained and fine-tuned (customer and product factors), and pre-trained
    products only. Customers back after a gap (a history in ``earlier``, none in the
    training part) are scored apart: alone, a model can only show them the best sellers;
    with transfer, their pre-trained factors are scored against the fine-tuned products.

    Parameters
    ----------
    earlier
        Interactions of the earlier period, all before ``split``'s training part.
    split
        Train / validation / test split of the later period; its test window is scored.
    params
        Settings of every :class:`FactorMF`.

    Returns
    -------
    dict
        Model -> ``{"all": ndcg, "new": ndcg}`` (per-customer NDCG@10 on the test
        window), and ``returning``: model -> per-customer NDCG@10 of the customers back
        after a gap.
    """
    from companion.recsys import ranking

    _check_study(split, params)
    check_interactions(earlier, name="earlier")
    test = ranking.RankingTask.from_time_split(split, "test")
    train = test.train
    if earlier["timestamp"].max() >= train["timestamp"].min():
        raise ValueError("earlier must end before the training part of split begins; "
                         f"it ends {earlier['timestamp'].max()}.")

    def ndcg(model, name):
        return ranking.evaluate(model, test, tasks=(name,))[name]["NDCG"]

    pre = FactorMF(**params).fit(earlier)
    items, bias = pre.item_table()
    alone = FactorMF(**params).fit(train)
    tuned = FactorMF(**params).warm_start(pre.user_table(), items, bias).fit(train)
    items_only = FactorMF(**params).warm_start(None, items, bias).fit(train)
    out = {name: {t: ndcg(m, t) for t in ("all", "new")} for name, m in
           [("second year alone", alone), ("pre-trained, fine-tuned", tuned),
            ("pre-trained items only", items_only)]}
    # customers back after a year away: no second-year order before the test window,
    # but a first-year history. Alone, a model can only show them the best sellers.
    back = split.test[~split.test["user_id"].isin(set(train["user_id"]))
                      & split.test["user_id"].isin(set(earlier["user_id"]))]
    truth = back.groupby("user_id")["item_id"].agg(set)
    user_f = pre.user_table().reindex(truth.index).to_numpy()
    scores = user_f @ tuned.item_factors_.T + tuned.item_bias_
    top = np.argsort(-scores, axis=1)[:, :10]
    recs = {"second year alone": alone.recommend(truth.index, k=10,
                                                 exclude_seen=False),
            "pre-trained, fine-tuned": tuned.items_[top]}
    sizes = truth.map(len).to_numpy()
    out["returning"] = {
        name: pd.Series(ranking.metrics_from_hits(ranking.hits_matrix(r, truth),
                                                  sizes)["NDCG"].to_numpy(),
                        index=truth.index)
        for name, r in recs.items()}
    return out


def federated_study(split: Split, clients: pd.Series, params: dict, fed_params: dict,
                    noise: Sequence[float] = (0.0, 0.01, 0.1, 1.0)) -> dict:
    """Chapter 8's federated study: central, federated and local training, then privacy.

    Every model is fitted on everything before the test window of ``split`` and scored on
    it: :class:`FactorMF` (central, ``params``), :class:`FederatedMF` (``fed_params``),
    :class:`LocalMF` (``params``), federated averaging with client updates clipped at the
    largest norm of the plain run, and clipped at the median norm with Gaussian noise of
    each multiplier in ``noise``.

    Parameters
    ----------
    split
        Train / validation / test split; its test window is scored.
    clients
        Customer id -> client (for example the customer's country).
    params
        Settings of the central and local models.
    fed_params
        Settings of the federated models (rounds, local epochs, and the SGD settings).
    noise
        Noise multipliers of the private runs.

    Returns
    -------
    dict
        ``ndcg`` (model -> task -> per-customer NDCG@10), ``norms`` (round x client norm
        of the plain run's updates), ``weights`` (client weights) and ``clip`` (the
        ``largest`` and ``median`` update norms).
    """
    from companion.recsys import ranking

    _check_study(split, params)
    if not isinstance(fed_params, dict):
        raise TypeError(f"fed_params must be a dict, got {type(fed_params).__name__}.")
    if not isinstance(clients, pd.Series):
        raise TypeError(f"clients must be a pandas Series, got {type(clients).__name__}.")
    test = ranking.RankingTask.from_time_split(split, "test")
    train = test.train

    def score(model):
        result = ranking.evaluate(model.fit(train), test)
        return {task: frame["NDCG"] for task, frame in result.items()}

    out = {"ndcg": {"central": score(FactorMF(**params))}}
    fedavg = FederatedMF(clients, **fed_params)
    out["ndcg"]["federated (FedAvg)"] = score(fedavg)
    out["ndcg"]["local only"] = score(LocalMF(clients, **params))
    norms = pd.DataFrame([h["client norms"] for h in fedavg.history_],
                         columns=fedavg.client_names_)
    out["norms"], out["weights"] = norms, fedavg.weights_
    largest, median = float(norms.to_numpy().max()), float(np.median(norms))
    out["clip"] = {"largest": largest, "median": median}
    model = FederatedMF(clients, clip_norm=largest, **fed_params)
    out["ndcg"]["clipped at the largest norm"] = score(model)
    for z in noise:
        model = FederatedMF(clients, clip_norm=median, noise_multiplier=z,
                            **fed_params)
        out["ndcg"][f"clipped at the median, noise {z:g}"] = score(model)
    return out
