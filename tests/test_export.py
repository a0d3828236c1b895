"""Export and reload: every model gives identical recommendations after a round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from companion import cache
from companion.data import preprocessing
from companion.ops import export
from companion.recsys import baselines as rec
from companion.recsys import deep

CLASSICAL = [
    lambda: rec.Popularity(window_days=30),
    lambda: rec.RepeatBuy(half_life_days=60),
    lambda: rec.ItemKNN(neighbours=20, shrinkage=5.0),
    lambda: rec.EASE(l2=50.0),
    lambda: rec.TIFUKNN(neighbours=10),
    lambda: rec.UPCF(),
    lambda: rec.Blend(rec.ItemKNN(), weight=4.0),
    lambda: rec.Blend(rec.EASE(l2=50.0), base=rec.Popularity(window_days=30)),
]


def _users(interactions):
    return np.r_[interactions["user_id"].unique(), [-12345]]  # one unknown customer


@pytest.mark.parametrize("factory", CLASSICAL, ids=lambda f: repr(f()))
def test_classical_round_trip(factory, interactions, tmp_path):
    model = factory().fit(interactions)
    path = export.save(model, tmp_path / "model", data=interactions)
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "meta.json"]
    loaded = export.load(path)
    assert type(loaded.model) is type(model) and loaded.kind == "classical"
    assert loaded.version["code"] == cache.code_version()
    assert loaded.version["data"] == cache.fingerprint(interactions)
    users = _users(interactions)
    for exclude in (True, False):
        np.testing.assert_array_equal(model.recommend(users, 10, exclude_seen=exclude),
                                      loaded.model.recommend(users, 10, exclude_seen=exclude))
    np.testing.assert_array_equal(model.score(users), loaded.model.score(users))


def test_arrays_load_without_pickle(interactions, tmp_path):
    path = export.save(rec.Blend(rec.ItemKNN()).fit(interactions), tmp_path / "m",
                       data="abc123")
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype.kind != "O" for key in arrays.files)
    assert export.load(path).version_id.endswith("-abc123")


def test_save_replaces_and_rejects(interactions, tmp_path):
    path = tmp_path / "m"
    export.save(rec.Popularity().fit(interactions), path, data=interactions)
    export.save(rec.RepeatBuy().fit(interactions), path, data=interactions)
    assert type(export.load(path).model) is rec.RepeatBuy
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left
    with pytest.raises(RuntimeError, match="not fitted"):
        export.save(rec.Popularity(), tmp_path / "x", data="abc")
    with pytest.raises(TypeError, match="fingerprint"):
        export.save(rec.Popularity().fit(interactions), tmp_path / "x", data=3)
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        export.load(tmp_path / "missing")
    meta = json.loads((path / "meta.json").read_text())
    meta["model"]["class"] = "os.system"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="os.system"):
        export.load(path)
    meta["format"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 99"):
        export.load(path)


@pytest.fixture(scope="module")
def two_tower(clean_shop, interactions):
    text = preprocessing.product_descriptions(clean_shop.transactions)
    countries = preprocessing.customer_countries(clean_shop.transactions)
    return deep.TwoTower(dim=8, item_text=text, user_context=countries, epochs=2,
                         batch_size=64, seed=0).fit(interactions)


def test_two_tower_keras_and_saved_model(two_tower, interactions, tmp_path):
    users = _users(interactions)
    expected = two_tower.recommend(users, 10, exclude_seen=False)
    path = export.save(two_tower, tmp_path / "tt", data=interactions)
    assert (path / "model.keras").is_file()
    loaded = export.load(path)
    assert loaded.kind == "keras"
    np.testing.assert_array_equal(loaded.model.recommend(users, 10, exclude_seen=False),
                                  expected)
    serving = export.load(export.export_serving(two_tower, tmp_path / "srv", data=interactions))
    assert serving.kind == "saved_model" and (serving.path / "saved_model").is_dir()
    np.testing.assert_array_equal(serving.model.recommend(users, 10, exclude_seen=False),
                                  expected)
    np.testing.assert_allclose(serving.model.score(users), two_tower.score(users), atol=1e-5)
    with pytest.raises(TypeError, match="TwoTower"):
        export.export_serving(rec.Popularity().fit(interactions), tmp_path / "p", data="a")


def test_tflite_agrees(two_tower, interactions, tmp_path):
    path = export.export_serving(two_tower, tmp_path / "srv", data=interactions)
    scorer = export.TFLiteScorer(export.to_tflite(path))
    codes = np.arange(two_tower.n_users_)
    scores = scorer(codes, two_tower.context_[codes])
    reference = two_tower.user_vectors_ @ two_tower.item_vectors_.T
    np.testing.assert_allclose(scores, reference, atol=1e-4)
    assert export.overlap_at_k(export.top_k(scores, 10), export.top_k(reference, 10)) > 0.99
    single = scorer(codes[:1], two_tower.context_[:1])  # resizes the input back to one
    np.testing.assert_allclose(single, reference[:1], atol=1e-4)


def test_helpers():
    scores = np.array([[0.1, 0.5, 0.3], [3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(export.top_k(scores, 2), [[1, 2], [0, 1]])
    assert export.overlap_at_k([[1, 2]], [[2, 3]]) == 0.5
    with pytest.raises(ValueError, match="shape"):
        export.overlap_at_k([[1, 2]], [[1, 2, 3]])


def test_mostly_zero_matrices_are_packed(interactions, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_PACK_MIN", 1)
    model = rec.ItemKNN(neighbours=5).fit(interactions)
    path = export.save(model, tmp_path / "knn", data=interactions)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["model"]["state"]["similarity_"]["kind"] == "packed"
    loaded = export.load(path).model
    assert loaded.similarity_.dtype == model.similarity_.dtype
    np.testing.assert_array_equal(loaded.similarity_, model.similarity_)
    users = _users(interactions)
    np.testing.assert_array_equal(loaded.recommend(users, 10), model.recommend(users, 10))


def test_derived_state_is_recomputed(interactions, tmp_path):
    model = rec.ItemKNN(neighbours=10).fit(interactions)
    path = export.save(model, tmp_path / "knn", data=interactions)
    assert json.loads((path / "meta.json").read_text())["model"]["derived"] == ["co_"]
    loaded = export.load(path).model
    np.testing.assert_array_equal(loaded.co_, model.co_)
    assert loaded.co_.dtype == model.co_.dtype
    later = interactions.assign(timestamp=interactions["timestamp"] + pd.Timedelta(days=400))
    for m in (model, loaded):  # an incremental update works after a reload
        m.partial_fit(later.iloc[:50])
    np.testing.assert_array_equal(loaded.similarity_, model.similarity_)
