"""Recommendations from a history given at request time (a basket or session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.ops import export
from companion.recsys import baselines as rec

MODELS = {
    "popularity": lambda: rec.Popularity(window_days=60),
    "repeat-buy": lambda: rec.RepeatBuy(half_life_days=60),
    "item-kNN": lambda: rec.ItemKNN(neighbours=30),
    "EASE": lambda: rec.EASE(l2=50.0),
    "TIFU-KNN": lambda: rec.TIFUKNN(neighbours=20, group_size=3),
    "UP-CF@r": lambda: rec.UPCF(recency=3, neighbours=20),
    "UP-CF@r, all users": lambda: rec.UPCF(recency=3, neighbours=None),
    "blend item-kNN": lambda: rec.Blend(rec.ItemKNN(), weight=4.0),
    "blend EASE": lambda: rec.Blend(rec.EASE(l2=50.0), weight=0.5),
    "blend on popularity": lambda: rec.Blend(rec.ItemKNN(), base=rec.Popularity(30)),
}


class NoHistory(rec.Recommender):
    """A model that scores only the customers it was fitted on."""

    def _fit(self, frame, counts):
        self.scores_ = np.asarray(counts.sum(axis=0)).ravel().astype(np.float32)

    def _score(self, users):
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).copy()


@pytest.fixture(scope="module")
def fitted(interactions):
    return {name: make().fit(interactions) for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def customer(interactions):
    counts = interactions["user_id"].value_counts()
    return int(counts.index[len(counts) // 2])  # a customer with a middling history


@pytest.fixture(scope="module")
def basket(interactions, customer):
    """Three products the customer never bought and one the catalogue does not have."""
    bought = set(interactions.loc[interactions["user_id"] == customer, "item_id"])
    others = [i for i in interactions["item_id"].value_counts().index if i not in bought]
    return [others[3], others[10], others[10], others[40], "NOT-IN-CATALOGUE"]


def with_basket(interactions: pd.DataFrame, user, items) -> pd.DataFrame:
    """The interactions plus one newest invoice of ``items`` for ``user``, at the last
    timestamp of the data (so no other purchase ages)."""
    extra = pd.DataFrame({"user_id": user, "item_id": pd.Series(items, dtype=object),
                          "timestamp": interactions["timestamp"].max(),
                          "invoice": "zz-request-basket", "quantity": 1})
    extra = extra.groupby(["user_id", "item_id", "timestamp", "invoice"],
                          as_index=False)["quantity"].sum()
    extra["value"] = 1.0
    return pd.concat([interactions, extra[interactions.columns]], ignore_index=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_empty_history_is_the_fitted_answer(fitted, name, customer):
    model = fitted[name]
    assert model.supports_history
    np.testing.assert_array_equal(model.score_history([], user_id=customer),
                                  model.score([customer])[0])
    for exclude in (False, True):
        assert list(model.recommend_from_history([], 10, exclude, user_id=customer)) == \
            list(model.recommend([customer], 10, exclude_seen=exclude)[0])
    # no customer, or one the model has never seen: the popularity answer
    unknown = list(model.recommend([-12345], 10)[0])
    assert list(model.recommend_from_history([], 10)) == unknown
    assert list(model.recommend_from_history(["NOT-IN-CATALOGUE"], 10,
                                             user_id=-12345)) == unknown


@pytest.mark.parametrize("name", ["repeat-buy", "TIFU-KNN", "UP-CF@r",
                                  "UP-CF@r, all users"])
@pytest.mark.parametrize("known", [True, False])
def test_history_scores_as_a_refit_with_that_basket(interactions, fitted, name, known,
                                                     customer, basket):
    """Repeat-buy, TIFU-KNN and UP-CF@r score a customer from their own purchases and
    other customers' fixed vectors, so the basket given now must score exactly as a refit
    on the data with that basket added as the customer's newest invoice would."""
    model = fitted[name]
    user = customer if known else 10**9  # 10**9: a new visitor
    real = [i for i in basket if i != "NOT-IN-CATALOGUE"]
    refit = MODELS[name]().fit(with_basket(interactions, user, real))
    expected = refit.score([user])[0][refit.item_encoder_.transform(model.items_)]
    got = model.score_history(basket, user_id=customer if known else None)
    # repeat-buy's popularity tie-break (1e-6) moves with the added customer
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 if name == "repeat-buy"
                               else 1e-6)


@pytest.mark.parametrize("name", ["item-kNN", "EASE"])
def test_a_visitor_with_a_customers_items_scores_as_that_customer(fitted, interactions,
                                                                   name, customer):
    model = fitted[name]
    items = list(interactions.loc[interactions["user_id"] == customer, "item_id"])
    np.testing.assert_allclose(model.score_history(items), model.score([customer])[0],
                               rtol=1e-6, atol=1e-7)


def test_blend_follows_its_parts(interactions, customer, basket):
    """A blend of UP-CF@r (scored exactly as a refit) and repeat-buy scores a history as
    the blend refitted with it would, to repeat-buy's tie-break."""
    make = lambda: rec.Blend(rec.UPCF(recency=3, neighbours=None), weight=2.0)  # noqa: E731
    model = make().fit(interactions)
    real = [i for i in basket if i != "NOT-IN-CATALOGUE"]
    refit = make().fit(with_basket(interactions, customer, real))
    expected = refit.score([customer])[0][refit.item_encoder_.transform(model.items_)]
    np.testing.assert_allclose(model.score_history(basket, user_id=customer), expected,
                               atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_exclude_seen_and_the_model_is_not_changed(fitted, interactions, name, customer,
                                                   basket):
    model = fitted[name]
    before = model.recommend(interactions["user_id"].unique()[:20], 10)
    seen = model.seen_.copy()
    bought = set(interactions.loc[interactions["user_id"] == customer, "item_id"])
    top = model.recommend_from_history(basket, 20, exclude_seen=True, user_id=customer)
    assert len(top) == len(set(top)) == 20
    assert not (set(top) & (set(basket) | bought))
    anonymous = model.recommend_from_history(basket, 20, exclude_seen=True)
    assert not set(anonymous) & set(basket)
    np.testing.assert_array_equal(model.recommend(interactions["user_id"].unique()[:20], 10),
                                  before)
    assert (model.seen_ != seen).nnz == 0


def test_repeat_buy_puts_the_basket_first(fitted, basket):
    top = fitted["repeat-buy"].recommend_from_history(basket, 3, exclude_seen=False)
    assert set(top) == set(basket[:4])  # three products, one of them given twice


def test_history_codes_match_ids_to_the_catalogue(fitted, interactions):
    model = fitted["item-kNN"]
    items = model.items_
    digits = next(i for i in items if str(i).isdigit())  # a stock code like "40307"
    codes, unknown = model.history_codes([items[0], int(digits), "nope", None, "nope",
                                          items[0], 2.5, True])
    assert list(codes) == [0, list(items).index(digits), 0]
    assert unknown == ["nope", None, 2.5, True]
    with pytest.raises(TypeError, match="history must be a sequence"):
        model.history_codes("85123A")
    with pytest.raises(TypeError, match="history must be a sequence"):
        model.history_codes(17)
    # whole numbers, however given, match the stock code's text
    codes, unknown = model.history_codes(np.array([int(digits), float(digits)]))
    assert list(codes) == [list(items).index(digits)] * 2 and unknown == []

def test_models_that_cannot_say_so(interactions):
    plain = NoHistory().fit(interactions)
    assert not plain.supports_history
    with pytest.raises(NotImplementedError, match="NoHistory cannot score a history"):
        plain.recommend_from_history(["x"], 5)
    blend = rec.Blend(NoHistory()).fit(interactions)
    assert not blend.supports_history
    with pytest.raises(NotImplementedError, match="Blend cannot score a history"):
        blend.score_history([])
    model = rec.ItemKNN().fit(interactions)
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        model.recommend_from_history([], k=len(model.items_) + 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.recommend_from_history([], k=0)


def test_next_basket_models_need_their_baskets_for_a_known_customer(interactions, customer,
                                                                    basket, tmp_path):
    model = rec.TIFUKNN(neighbours=20, group_size=3).fit(interactions)
    loaded = export.load(export.save(model, tmp_path / "tifu", data=interactions)).model
    np.testing.assert_array_equal(loaded.score_history(basket, user_id=customer),
                                  model.score_history(basket, user_id=customer))
    del loaded.baskets_  # as in a model saved by an older version
    with pytest.raises(ValueError, match="refit it"):
        loaded.score_history(basket, user_id=customer)
    np.testing.assert_array_equal(loaded.score_history(basket), model.score_history(basket))
