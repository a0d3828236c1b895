"""Week-by-week refits, warm-start updates and frozen models."""

from __future__ import annotations

import numpy as np
import pytest

from companion import data
from companion.data import preprocessing
from companion.recsys import baselines as rec
from companion.recsys.incremental import weekly_updates


@pytest.fixture(scope="module")
def interactions():
    frame = data.synthetic_shop(n_customers=150, n_products=80, months=8, seed=4)
    clean = preprocessing.clean_transactions(frame).transactions
    return preprocessing.to_interactions(clean)


def test_exact_update_matches_refit(interactions):
    start = interactions["timestamp"].max().normalize() - np.timedelta64(21, "D")
    models = {"refit": (lambda: rec.ItemKNN(neighbours=500), "refit"),
              "update": (lambda: rec.ItemKNN(neighbours=500), "update"),
              "frozen": (lambda: rec.ItemKNN(neighbours=500), "frozen")}
    table, per_user = weekly_updates(interactions, start, 3, models)
    assert len(table) == 9 and set(table["week"]) == {1, 2, 3}
    wide = table.pivot(index="week", columns="model", values="NDCG")
    np.testing.assert_allclose(wide["refit"], wide["update"], atol=1e-9)
    assert wide.loc[1, "frozen"] == wide.loc[1, "refit"]  # the same model in week 1
    assert (table["seconds"] >= 0).all()
    assert per_user["refit"].index.names == ["week", "user_id"]
    assert len(per_user["refit"]) == table.query("model == 'refit'")["users"].sum()


def test_bad_input_is_named(interactions):
    start = interactions["timestamp"].max().normalize() - np.timedelta64(21, "D")
    knn = (lambda: rec.ItemKNN(), "refit")
    with pytest.raises(ValueError, match="mode of 'x'"):
        weekly_updates(interactions, start, 1, {"x": (rec.ItemKNN, "sometimes")})
    with pytest.raises(ValueError, match="past the last"):
        weekly_updates(interactions, start, 10, {"x": knn})
    with pytest.raises(ValueError, match="before start"):
        weekly_updates(interactions, "2000-01-01", 1, {"x": knn})
    with pytest.raises(ValueError, match="at least one"):
        weekly_updates(interactions, start, 1, {})
    with pytest.raises(ValueError, match="pair"):
        weekly_updates(interactions, start, 1, {"x": rec.ItemKNN})
