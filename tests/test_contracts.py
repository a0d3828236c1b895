"""Each kind of model keeps one written contract, checked here on every class of the kind.

The contracts are the numbered lists in the docstrings of
:class:`companion.recsys.baselines.Recommender` (recommenders) and of
``companion.retention.churn.ChurnModel`` (churn classifiers). The classes are found, not
listed: every companion module is imported and the base class's subclasses are walked, so
a new class is checked as soon as it exists. A public class that implements the kind's
scoring method is concrete; private classes (a leading underscore) and classes that leave
the scoring method to a subclass (``KerasRecommender``) are skipped. A concrete class with
no factory below fails every test, with a message that asks for one.

Each factory builds a small, fast model for the seeded synthetic shop of ``conftest.py``;
each model is fitted once per module (a second time for the seed point), so that the Keras
models stay cheap.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import importlib  # noqa: E402
import inspect  # noqa: E402
import pkgutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import companion  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.exceptions import NotFittedError  # noqa: E402
from companion.ops import compression, export  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import content, deep, federated, twostage  # noqa: E402
from companion.retention import churn, explain  # noqa: E402


def _import_companion() -> None:
    """Import every companion module, so that every class of each kind exists."""
    for info in pkgutil.walk_packages(companion.__path__, "companion."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


_import_companion()


def _subclasses(base: type) -> list[type]:
    out, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def _concrete(base: type, implements: str) -> list[type]:
    """Public subclasses of ``base`` defined in the companion that implement ``implements``
    (they, or a parent below ``base``, define it), sorted by module and name."""
    found = {cls for cls in _subclasses(base)
             if cls.__module__.startswith("companion.")
             and not cls.__name__.startswith("_")
             and getattr(cls, implements, None) is not getattr(base, implements, None)}
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


def _name(cls: type) -> str:
    return cls.__name__


RECOMMENDERS = _concrete(rec.Recommender, "_score")
CHURN_MODELS = _concrete(churn.ChurnModel, "predict_proba")


# ------------------------------------------------------------------------------ the data


@pytest.fixture(scope="module")
def world(interactions, clean_shop):
    """The synthetic shop's interactions and what the content models read."""
    frame = interactions
    unit = (frame["value"] / frame["quantity"]).groupby(frame["item_id"]).median()
    users = np.sort(frame["user_id"].unique())
    return {"train": frame,
            "desc": preprocessing.product_descriptions(clean_shop.transactions),
            "country": preprocessing.customer_countries(clean_shop.transactions),
            "price": unit.clip(lower=0.01),
            "clients": pd.Series(np.where(users % 3 == 0, "north", "south"), index=users)}


def _generators() -> dict[str, rec.Recommender]:
    return {"repeat-buy": rec.RepeatBuy(half_life_days=60),
            "item-kNN": rec.ItemKNN(neighbours=20, shrinkage=5.0),
            "recent popularity": rec.Popularity(window_days=30)}


#: class -> a small unfitted instance for the world
FACTORIES = {
    rec.Popularity: lambda w: rec.Popularity(window_days=90),
    rec.RepeatBuy: lambda w: rec.RepeatBuy(half_life_days=60),
    rec.ItemKNN: lambda w: rec.ItemKNN(neighbours=20, shrinkage=5.0),
    rec.EASE: lambda w: rec.EASE(l2=50.0),
    rec.TIFUKNN: lambda w: rec.TIFUKNN(neighbours=5, group_size=3, alpha=0.5),
    rec.UPCF: lambda w: rec.UPCF(recency=5, locality=2.0, neighbours=20),
    rec.Blend: lambda w: rec.Blend(rec.EASE(l2=50.0), weight=0.5),
    deep.MatrixFactorization: lambda w: deep.MatrixFactorization(dim=8, epochs=2,
                                                                 batch_size=512),
    deep.NeuMF: lambda w: deep.NeuMF(dim=4, hidden=(8,), negatives=1, epochs=1,
                                     batch_size=1024),
    deep.TwoTower: lambda w: deep.TwoTower(dim=8, item_text=w["desc"],
                                           user_context=w["country"], epochs=2,
                                           batch_size=256),
    deep.SASRec: lambda w: deep.SASRec(dim=8, blocks=1, heads=1, max_len=10, negatives=10,
                                       epochs=1, batch_size=64),
    deep.SourceLSTM: lambda w: deep.SourceLSTM(dim=4, units=4, epochs=1, batch_size=1024),
    content.ContentRecommender: lambda w: content.ContentRecommender(w["desc"],
                                                                     half_life_days=90),
    content.WordPopularity: lambda w: content.WordPopularity(w["desc"]),
    content.PriceMatch: lambda w: content.PriceMatch(w["price"]),
    content.Hybrid: lambda w: content.Hybrid(rec.EASE(l2=50.0),
                                             content.ContentRecommender(w["desc"]),
                                             neighbours=5),
    federated.FactorMF: lambda w: federated.FactorMF(dim=8, epochs=2),
    federated.FederatedMF: lambda w: federated.FederatedMF(w["clients"], rounds=2,
                                                           local_epochs=1, dim=8),
    federated.LocalMF: lambda w: federated.LocalMF(w["clients"], dim=8, epochs=2),
    twostage.TwoStageRecommender: lambda w: twostage.TwoStageRecommender(
        _generators(), n=10, horizon_days=30, seed=0),
    compression.HistoryMLP: lambda w: compression.HistoryMLP(dim=8, hidden=(8,), epochs=1),
    compression.DistilledMF: lambda w: compression.DistilledMF(dim=4, epochs=1),
}


def _factor_scorer(world, fitted, tmp):
    model = fitted(federated.FactorMF)
    return compression.FactorScorer(model, model.user_factors_, model.item_factors_.T,
                                     model.item_bias_)


def _serving(world, fitted, tmp):
    path = export.export_serving(fitted(deep.TwoTower), tmp / "serving", data=world["train"])
    return export.load(path).model


#: scorers made from an already fitted model (they cannot be refitted): class -> a
#: function of (world, fitted, tmp folder) that builds one, with ``fitted(cls)`` the
#: module's fitted model of a class
WRAPPERS = {
    compression.FactorScorer: _factor_scorer,
    export.ServingRecommender: _serving,
}

FITTABLE = [cls for cls in RECOMMENDERS if cls not in WRAPPERS]


def _no_factory(cls: type, kind: str, where: str) -> str:
    return (f"{cls.__module__}.{cls.__qualname__} is a {kind} without a factory in "
            f"tests/test_contracts.py: add a small, fast instance of it to {where}, so that "
            "it is checked against the contract.")


class _Fitted:
    """Each recommender class fitted once on the world (built lazily, kept for the module)."""

    def __init__(self, world, tmp):
        self.world, self.tmp, self.records = world, tmp, {}

    def record(self, cls: type) -> dict:
        if cls not in self.records:
            if cls in WRAPPERS:
                model = WRAPPERS[cls](self.world, self, self.tmp)
                self.records[cls] = {"model": model}
            else:
                model = make(cls, self.world)
                frame = self.world["train"].copy()
                before = frame.copy()
                returned = model.fit(frame)
                self.records[cls] = {"model": model, "returned": returned, "frame": frame,
                                     "before": before}
        return self.records[cls]

    def __call__(self, cls: type) -> rec.Recommender:
        return self.record(cls)["model"]


def build(cls: type, world, factories: dict, kind: str, where: str):
    """A new unfitted instance of ``cls`` from its factory (fails without one)."""
    if cls not in factories:
        pytest.fail(_no_factory(cls, kind, where))
    model = factories[cls](world)
    assert type(model) is cls, f"the factory of {cls.__name__} builds a {type(model).__name__}"
    return model


def make(cls: type, world) -> rec.Recommender:
    return build(cls, world, FACTORIES, "recommender", "FACTORIES (or WRAPPERS)")


@pytest.fixture(scope="module")
def fitted(world, tmp_path_factory):
    return _Fitted(world, tmp_path_factory.mktemp("contracts"))


def _users(world, n: int = 12) -> np.ndarray:
    return np.sort(world["train"]["user_id"].unique())[:n]


def _bought(world) -> dict:
    return {u: set(g) for u, g in world["train"].groupby("user_id")["item_id"]}


UNKNOWN = np.array([-1, -2, 10**9])


# ------------------------------------------------------------------------------ recommenders


def test_the_kinds_are_found():
    """The discovery finds the classes the contract is written for (and skips the bases)."""
    assert {rec.Popularity, deep.TwoTower, twostage.TwoStageRecommender,
            compression.FactorScorer} <= set(RECOMMENDERS)
    assert deep.KerasRecommender not in RECOMMENDERS
    assert not any(cls.__name__.startswith("_") for cls in RECOMMENDERS)
    assert {churn.LogisticRFM, churn.Ensemble, explain.FeatureMLP} <= set(CHURN_MODELS)


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_every_recommender_has_a_factory(cls):
    if cls not in FACTORIES and cls not in WRAPPERS:
        pytest.fail(_no_factory(cls, "recommender", "FACTORIES (or WRAPPERS)"))
    if cls in WRAPPERS:
        # a wrapper is exempt from the points about fit only because it cannot be fitted
        assert cls._fit is rec.Recommender._fit and cls.fit is rec.Recommender.fit, (
            f"{cls.__name__} implements fit: give it a factory in FACTORIES instead")


@pytest.mark.parametrize("cls", FITTABLE, ids=_name)
def test_1_fit_returns_self_and_leaves_the_frame(fitted, cls):
    record = fitted.record(cls)
    assert record["returned"] is record["model"]
    pd.testing.assert_frame_equal(record["frame"], record["before"])


@pytest.mark.parametrize("cls", FITTABLE, ids=_name)
def test_2_unfitted_raises(world, cls):
    model = make(cls, world)
    users = _users(world, 2)
    calls = {"score": lambda: model.score(users),
             "recommend": lambda: model.recommend(users, k=3),
             "recommend_from_history": lambda: model.recommend_from_history(["x"], k=3),
             "partial_fit": lambda: model.partial_fit(world["train"].head(5)),
             "items_": lambda: model.items_}
    for name, call in calls.items():
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
        assert not hasattr(model, "seen_"), f"{name} before fit changed the model"


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_3_scores_are_finite_and_aligned_with_items(world, fitted, cls):
    model = fitted(cls)
    items = model.items_
    assert items.ndim == 1 and len(pd.unique(items)) == len(items)
    users = np.r_[_users(world), UNKNOWN[:1]]
    scores = model.score(users)
    assert scores.shape == (len(users), len(items))
    assert np.issubdtype(scores.dtype, np.floating) and np.isfinite(scores).all()
    assert model.score(users[:0]).shape == (0, len(items))
    top = model.recommend(users, k=5, exclude_seen=False)
    column = pd.Index(items).get_indexer(top.ravel()).reshape(top.shape)
    assert (column >= 0).all()
    chosen = np.take_along_axis(scores, column, axis=1)
    assert (np.diff(chosen, axis=1) <= 1e-6).all(), "recommend is not best first"
    rest = scores.copy()
    np.put_along_axis(rest, column, -np.inf, axis=1)
    assert (chosen[:, -1] >= rest.max(axis=1) - 1e-6).all(), (
        "recommend(exclude_seen=False) left out an item of higher score")


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_4_recommend_gives_k_distinct_catalogue_items(world, fitted, cls):
    model = fitted(cls)
    users = np.r_[_users(world), UNKNOWN[:1]]
    catalogue = set(model.items_)
    for exclude_seen in (False, True):
        top = model.recommend(users, k=7, exclude_seen=exclude_seen)
        assert top.shape == (len(users), 7)
        assert set(top.ravel()) <= catalogue
        assert all(len(set(row)) == 7 for row in top), "an item twice in one list"
    assert model.recommend(users[:0], k=3).shape == (0, 3)
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        model.recommend(users[:1], k=len(catalogue) + 1)


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_5_exclude_seen_never_returns_bought_items(world, fitted, cls):
    model = fitted(cls)
    users = _users(world)
    bought = _bought(world)
    top = model.recommend(users, k=10, exclude_seen=True)
    for user, row in zip(users, top, strict=True):
        assert not set(row) & bought[user], f"customer {user} got an item already bought"
    # a list longer than what the customer has not bought ends with bought items
    heavy = max(bought, key=lambda u: len(bought[u]))
    fresh = set(model.items_) - bought[heavy]
    row = model.recommend(np.array([heavy]), k=len(fresh) + 2, exclude_seen=True)[0]
    assert set(row[:len(fresh)]) == fresh and set(row[len(fresh):]) <= bought[heavy]
    assert len(set(row)) == len(row)


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_6_unknown_customers_get_popularity(fitted, cls):
    model = fitted(cls)
    popularity = model.popularity_ / max(float(model.popularity_.max()), 1.0)
    scores = model.score(UNKNOWN)
    np.testing.assert_allclose(scores, np.broadcast_to(popularity, scores.shape), rtol=1e-6)
    top = model.recommend(UNKNOWN, k=5, exclude_seen=True)
    column = pd.Index(model.items_).get_indexer(top.ravel()).reshape(top.shape)
    others = np.ones((len(UNKNOWN), len(popularity)), dtype=bool)
    np.put_along_axis(others, column, False, axis=1)
    for row in range(len(UNKNOWN)):
        assert popularity[column[row]].min() >= popularity[others[row]].max()


@pytest.mark.parametrize("cls", FITTABLE, ids=_name)
def test_7_get_params_rebuilds_an_unfitted_model(fitted, cls):
    model = fitted(cls)
    params = model.get_params()
    renamed = getattr(cls, "RENAMED", {})  # old argument names, kept for one release
    names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
             and n not in renamed]
    assert sorted(params) == sorted(names), "get_params must return every constructor argument"
    assert set(renamed.values()) <= set(names), "a renamed argument must name its new name"
    clone = cls(**params)
    assert type(clone) is cls
    assert all(clone.get_params()[n] is params[n] for n in names)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        clone.score(UNKNOWN[:1])


@pytest.mark.parametrize("cls", FITTABLE, ids=_name)
def test_8_same_seed_same_recommendations(world, fitted, cls):
    model = fitted(cls)
    again = make(cls, world).fit(world["train"].copy())
    users = np.r_[_users(world), UNKNOWN[:1]]
    for exclude_seen in (False, True):
        np.testing.assert_array_equal(again.recommend(users, k=10, exclude_seen=exclude_seen),
                                      model.recommend(users, k=10, exclude_seen=exclude_seen))


@pytest.mark.parametrize("cls", RECOMMENDERS, ids=_name)
def test_9_request_time_histories(world, fitted, cls):
    model = fitted(cls)
    user = _users(world, 1)[0]
    history = list(model.items_[:2])
    if not model.supports_history:
        with pytest.raises(NotImplementedError):
            model.recommend_from_history(history, k=5)
        return
    scores = model.score_history(history, user_id=user)
    assert scores.shape == (len(model.items_),) and np.isfinite(scores).all()
    np.testing.assert_allclose(model.score_history([], user_id=user), model.score([user])[0],
                               rtol=1e-5, atol=1e-6)
    top = model.recommend_from_history(history, k=5, user_id=user)
    assert len(top) == 5 == len(set(top)) and set(top) <= set(model.items_)
    assert not set(top) & (set(history) | _bought(world)[user])


@pytest.mark.parametrize("cls", FITTABLE, ids=_name)
def test_10_partial_fit_learns_or_leaves_the_model(world, fitted, cls):
    """Last: it may update the module's fitted model."""
    model = fitted(cls)
    user = _users(world, 1)[0]
    item = model.recommend(np.array([user]), k=1, exclude_seen=True)[0, 0]
    train = world["train"]
    new = train[train["user_id"] == user].tail(1).assign(
        item_id=pd.array([item], dtype=train["item_id"].dtype), invoice="contract-1",
        timestamp=train["timestamp"].max() + pd.Timedelta(days=1))
    items, seen = model.items_.copy(), model.seen_.copy()
    before = model.recommend(_users(world), k=5)
    try:
        returned = model.partial_fit(new)
    except NotImplementedError:
        assert (model.seen_ != seen).nnz == 0, "a refused partial_fit changed the model"
        np.testing.assert_array_equal(model.items_, items)
        np.testing.assert_array_equal(model.recommend(_users(world), k=5), before)
        return
    assert returned is model
    np.testing.assert_array_equal(model.items_[:len(items)], items)
    assert item not in model.recommend(np.array([user]), k=10, exclude_seen=True)[0]


# ------------------------------------------------------------------------- churn classifiers


@pytest.fixture(scope="module")
def churn_world(interactions):
    return {"interactions": interactions,
            "train": churn.churn_dataset(interactions, "2011-07-01", 60),
            "test": churn.churn_dataset(interactions, "2011-09-01", 60)}


#: class -> a small unfitted churn model
CHURN_FACTORIES = {
    churn.RecencyRule: lambda w: churn.RecencyRule(),
    churn.LogisticRFM: lambda w: churn.LogisticRFM(C=1.0),
    churn.GradientBoosting: lambda w: churn.GradientBoosting(max_iter=20, seed=0),
    churn.SequenceChurn: lambda w: churn.SequenceChurn(units=4, hidden=4, epochs=2, pool=4,
                                                       seed=0),
    churn.BetaGeoChurn: lambda w: churn.BetaGeoChurn(w["interactions"]),
    churn.Ensemble: lambda w: churn.Ensemble({"RFM": churn.LogisticRFM(),
                                              "recency": churn.RecencyRule()}),
    explain.FeatureMLP: lambda w: explain.FeatureMLP(hidden=4, epochs=2, seed=0),
}


def make_churn(cls: type, world):
    return build(cls, world, CHURN_FACTORIES, "churn model", "CHURN_FACTORIES")


@pytest.fixture(scope="module")
def churn_fitted(churn_world):
    cache = {}

    def get(cls):
        if cls not in cache:
            data = churn_world["train"]
            before = (data.features.copy(), data.labels.copy(), data.sequences.copy())
            model = make_churn(cls, churn_world)
            cache[cls] = {"model": model, "returned": model.fit(data), "before": before}
        return cache[cls]

    return get


@pytest.mark.parametrize("cls", CHURN_MODELS, ids=_name)
def test_churn_1_fit_returns_self_and_leaves_the_data(churn_world, churn_fitted, cls):
    record = churn_fitted(cls)
    assert record["returned"] is record["model"]
    data = churn_world["train"]
    features, labels, sequences = record["before"]
    pd.testing.assert_frame_equal(data.features, features)
    pd.testing.assert_series_equal(data.labels, labels)
    np.testing.assert_array_equal(data.sequences, sequences)


@pytest.mark.parametrize("cls", CHURN_MODELS, ids=_name)
def test_churn_2_unfitted_and_wrong_input_raise(churn_world, cls):
    model = make_churn(cls, churn_world)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        model.predict_proba(churn_world["test"])
    with pytest.raises(TypeError, match="ChurnData"):
        model.fit(churn_world["train"].features)


@pytest.mark.parametrize("cls", CHURN_MODELS, ids=_name)
def test_churn_3_probabilities(churn_world, churn_fitted, cls):
    model = churn_fitted(cls)["model"]
    test = churn_world["test"]
    proba = model.predict_proba(test)
    assert isinstance(proba, np.ndarray) and proba.shape == (len(test),)
    assert np.issubdtype(proba.dtype, np.floating) and np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()
    with pytest.raises(TypeError, match="ChurnData"):
        model.predict_proba(test.features)


@pytest.mark.parametrize("cls", CHURN_MODELS, ids=_name)
def test_churn_4_same_seed_same_probabilities(churn_world, churn_fitted, cls):
    model = churn_fitted(cls)["model"]
    again = make_churn(cls, churn_world).fit(churn_world["train"])
    test = churn_world["test"]
    np.testing.assert_allclose(again.predict_proba(test), model.predict_proba(test),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", CHURN_MODELS, ids=_name)
def test_every_churn_model_has_a_factory(cls):
    assert cls in CHURN_FACTORIES, _no_factory(cls, "churn model", "CHURN_FACTORIES")
