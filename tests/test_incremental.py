"""Warm-start updates: IdEncoder.extend and Recommender.partial_fit."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.data.preprocessing import IdEncoder  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep  # noqa: E402


@pytest.fixture(scope="module")
def halves():
    frame = data.synthetic_shop(n_customers=160, n_products=90, months=12, seed=5)
    clean = preprocessing.clean_transactions(frame)
    interactions = preprocessing.to_interactions(clean.transactions)
    cut = interactions["timestamp"].quantile(0.7)
    late = interactions[interactions["timestamp"] >= cut]
    # a few products first sold in the later part, so that updates meet new items
    held = late["item_id"].drop_duplicates().iloc[:5]
    early = interactions[(interactions["timestamp"] < cut) & ~interactions["item_id"].isin(held)]
    interactions = pd.concat([early, late], ignore_index=True)
    desc = preprocessing.product_descriptions(clean.transactions)
    return interactions, early, late, desc


def test_id_encoder_extend_keeps_codes():
    enc = IdEncoder().fit([30, 10, 20])
    new = enc.extend([20, 40, 5, 40])
    assert new.tolist() == [3, 4]
    assert enc.transform([10, 20, 30, 40, 5]).tolist() == [0, 1, 2, 3, 4]
    assert enc.extend([10]).tolist() == []
    with pytest.raises(ValueError, match="missing"):
        enc.extend([1, None])
    with pytest.raises(RuntimeError, match="not fitted"):
        IdEncoder().extend([1])


def test_item_knn_update_equals_refit(halves):
    everything, early, late, _ = halves
    # every neighbour kept: pruning breaks ties by column order, which differs after an update
    full = rec.ItemKNN(neighbours=500, shrinkage=5.0).fit(everything)
    updated = rec.ItemKNN(neighbours=500, shrinkage=5.0).fit(early).partial_fit(late)
    users = everything["user_id"].unique()
    expected = pd.DataFrame(full.score(users), columns=full.items_)[updated.items_].to_numpy()
    np.testing.assert_allclose(updated.score(users), expected, atol=1e-5)
    # the seen matrix counts every purchase, as after a fit on all the data
    assert updated.seen_.sum() == full.seen_.sum()


def test_item_knn_update_on_known_items_is_in_place_and_equals_refit(halves):
    everything, early, late, _ = halves
    late = late[late["item_id"].isin(early["item_id"])]  # no new item: counts kept in place
    model = rec.ItemKNN(neighbours=500, shrinkage=5.0).fit(early)
    counts = model.co_
    model.partial_fit(late)
    assert model.co_ is counts
    full = rec.ItemKNN(neighbours=500, shrinkage=5.0).fit(pd.concat([early, late]))
    full_co = pd.DataFrame(full.co_, index=full.items_, columns=full.items_)
    expected = full_co.loc[model.items_, model.items_].to_numpy()
    np.testing.assert_array_equal(model.co_, expected)


def test_models_without_updates_say_so(halves):
    _, early, late, _ = halves
    with pytest.raises(NotImplementedError, match="EASE cannot be updated"):
        rec.EASE(l2=10.0).fit(early).partial_fit(late)
    with pytest.raises(RuntimeError, match="not fitted"):
        rec.ItemKNN().partial_fit(late)


def test_two_tower_warm_start(halves):
    everything, early, late, desc = halves
    model = deep.TwoTower(dim=8, item_text=desc, epochs=2, batch_size=128, spare_users=200,
                          spare_items=100, seed=0).fit(early)
    copy = pickle.loads(pickle.dumps(model))  # a copy keeps its towers tied to the model
    np.testing.assert_allclose(copy.score(early["user_id"].unique()[:4]),
                               model.score(early["user_id"].unique()[:4]), atol=1e-6)
    before = copy.model_.get_weights()[0].copy()
    copy.partial_fit(late, epochs=1)
    assert len(copy.user_encoder_) == everything["user_id"].nunique()
    assert len(copy.item_encoder_) == everything["item_id"].nunique()
    assert not np.allclose(copy.model_.get_weights()[0], before)  # it trained
    again = pickle.loads(pickle.dumps(model)).partial_fit(late, epochs=1)
    users = everything["user_id"].unique()
    np.testing.assert_allclose(copy.score(users), again.score(users), atol=1e-6)
    tight = deep.TwoTower(dim=8, item_text=desc, epochs=1, batch_size=128, seed=0).fit(early)
    if late["user_id"].isin(early["user_id"]).all():
        pytest.skip("no new customer in the later part")
    with pytest.raises(ValueError, match="spare_users"):
        tight.partial_fit(late)


def test_blend_accepts_a_reordered_catalogue(halves):
    everything, early, late, desc = halves
    model = rec.ItemKNN(neighbours=500, shrinkage=5.0).fit(early).partial_fit(late)
    assert not np.array_equal(model.items_, np.sort(model.items_))
    blend = rec.Blend(model, weight=0.5, base=rec.RepeatBuy(60)).fit(everything)
    reference = rec.Blend(rec.ItemKNN(neighbours=500, shrinkage=5.0), weight=0.5,
                          base=rec.RepeatBuy(60)).fit(everything)
    users = everything["user_id"].unique()[:20]
    np.testing.assert_allclose(blend.score(users), reference.score(users), atol=1e-5)
    with pytest.raises(ValueError, match="does not know"):
        rec.Blend(rec.ItemKNN().fit(early), base=rec.RepeatBuy(60)).fit(everything)
