"""Two-stage recommender: candidates, leakage-free features, rankers, the protocol."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import ranking  # noqa: E402
from companion.recsys import twostage as ts  # noqa: E402

CUTOFF = pd.Timestamp("2011-09-01")


def small_generators() -> dict[str, rec.Recommender]:
    return {"repeat-buy": rec.RepeatBuy(half_life_days=60),
            "TIFU-KNN": rec.TIFUKNN(neighbours=10, group_size=3, alpha=0.5),
            "item-kNN": rec.ItemKNN(neighbours=20, shrinkage=5.0),
            "recent popularity": rec.Popularity(window_days=30)}


@pytest.fixture(scope="module")
def frame(interactions):
    """The synthetic shop's interactions with a country per customer."""
    countries = np.where(interactions["user_id"] % 5 == 0, "France", "United Kingdom")
    return interactions.assign(country=countries)


@pytest.fixture(scope="module")
def model(frame):
    return ts.TwoStageRecommender(small_generators(), n=10, horizon_days=30, seed=0).fit(
        frame[frame["timestamp"] < CUTOFF], cutoff=CUTOFF)


# ------------------------------------------------------------------------- features


def _tiny() -> pd.DataFrame:
    rows = [(1, "a", "2011-01-01", "i1", 2, 4.0), (1, "a", "2011-01-11", "i2", 1, 2.0),
            (1, "b", "2011-01-11", "i2", 3, 3.0), (2, "b", "2011-01-05", "i3", 1, 1.0),
            (2, "c", "2011-01-20", "i4", 1, 5.0)]
    out = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice",
                                      "quantity", "value"])
    return out.assign(timestamp=pd.to_datetime(out["timestamp"]))


def test_features_by_hand():
    cands = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": ["a", "c", "a", "b"]})
    f = ts.ranker_features(_tiny(), cands, "2011-01-21", shrinkage=0.0).set_index(
        ["user_id", "item_id"])
    a = f.loc[(1, "a")]
    assert a["days since bought"] == 10 and a["invoices since bought"] == 0
    assert a["invoices with item"] == 2 and a["quantity"] == 3 and a["value"] == 6
    assert a["decayed count 14d"] == pytest.approx(0.5 ** (20 / 14) + 0.5 ** (10 / 14))
    assert a["item interval"] == 10 and a["due ratio"] == 1 and a["share of invoices"] == 1
    assert a["invoices"] == 2 and a["tenure"] == 20 and a["days since last invoice"] == 10
    assert a["invoice gap"] == 10 and a["basket size"] == 1.5 and a["distinct items"] == 2
    assert a["repeat share"] == pytest.approx(1 / 3)
    assert a["buyers 7d"] == 0 and a["buyers 30d"] == 1 and a["repurchase rate"] == 1
    assert a["price"] == 2 and a["item age"] == 20
    assert a["days to Christmas"] == 338 and a["month"] == 1
    never = f.loc[(1, "c")]
    assert np.isnan(never["days since bought"]) and never["invoices with item"] == 0
    assert never["buyers 7d"] == 1 and never["repurchase rate"] == 0
    # customer 2's recent items are b and c; a was bought by customer 1 only, b by both
    other = f.loc[(2, "a")]
    assert other["co-purchase max"] == pytest.approx(1 / np.sqrt(2))
    assert other["co-purchase mean"] == pytest.approx(1 / np.sqrt(2) / 2)
    assert f.loc[(2, "b"), "invoices since bought"] == 1
    assert np.isnan(f.loc[(2, "b"), "item interval"])
    groups = ts.feature_groups(f.columns)
    assert set(groups) == {"pair", "item", "customer", "co-purchase", "season", "generators"}
    assert groups["generators"] == []


def _alter_future(frame: pd.DataFrame, cutoff: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """Every event on or after ``cutoff`` changed (items, quantities, countries) plus new
    events after it, some of them exactly at the cutoff."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    late = out["timestamp"] >= cutoff
    out.loc[late, "item_id"] = rng.permutation(out.loc[late, "item_id"].to_numpy())
    out.loc[late, "quantity"] = out.loc[late, "quantity"] * 7
    out.loc[late, "value"] = out.loc[late, "value"] + 100.0
    out.loc[late, "country"] = "Japan"
    extra = frame[frame["timestamp"] < cutoff].sample(200, random_state=seed)
    extra = extra.assign(timestamp=cutoff + pd.to_timedelta(rng.integers(0, 90, 200),
                                                            unit="D"),
                         invoice="future")
    return pd.concat([out, extra], ignore_index=True)


def test_features_never_read_the_future(frame):
    before = frame[frame["timestamp"] < CUTOFF]
    cands = ts.CandidateGenerator(small_generators(), n=10).fit(before).candidates(
        before["user_id"].unique()[:40])
    plain = ts.ranker_features(frame, cands, CUTOFF)
    altered = ts.ranker_features(_alter_future(frame, CUTOFF), cands, CUTOFF)
    pd.testing.assert_frame_equal(plain, altered)
    assert plain["home country"].isin([0.0, 1.0]).all()
    assert (plain["home country"] == 0).any() and (plain["home country"] == 1).any()


def test_training_examples_read_nothing_after_the_label_window(frame):
    args = (CUTOFF - pd.Timedelta(days=30), 30, small_generators(), 10)
    plain = ts.training_examples(frame, *args)
    altered = ts.training_examples(_alter_future(frame, CUTOFF), *args)
    for task in ts.TASKS:
        pd.testing.assert_frame_equal(plain[task].frame, altered[task].frame)
        assert plain[task].truth.equals(altered[task].truth)
        assert plain[task].frame["label"].sum() > 0
    # altering the label window changes the labels (and customers), never the features
    early = ts.training_examples(_alter_future(frame, args[0]), *args)
    assert not plain["all"].truth.equals(early["all"].truth)
    features = plain["all"].feature_names
    keys = ["user_id", "item_id"]
    both = plain["all"].frame.merge(early["all"].frame, on=keys, suffixes=("", " early"))
    assert len(both) > 100
    for column in features:
        np.testing.assert_array_equal(both[column].to_numpy(),
                                      both[f"{column} early"].to_numpy(), err_msg=column)


# ------------------------------------------------------------------------- candidates


def test_candidates_hold_every_generators_top_n(frame):
    before = frame[frame["timestamp"] < CUTOFF]
    stage = ts.CandidateGenerator(small_generators(), n=8).fit(before)
    users = np.sort(before["user_id"].unique())[:30]
    for exclude_seen in (False, True):
        cands = stage.candidates(users, exclude_seen=exclude_seen)
        assert list(pd.unique(cands["user_id"])) == list(users)
        assert not cands.duplicated(["user_id", "item_id"]).any()
        for name, model in stage.models_.items():
            scores = model.score(users)
            if exclude_seen:
                seen = model.seen_[model._codes(users)].toarray() > 0
                scores[seen] = -np.inf
            for row, user in enumerate(users):
                mine = cands[cands["user_id"] == user].set_index("item_id")
                s = pd.Series(scores[row], index=model.items_)
                eighth = np.sort(s.to_numpy())[::-1][7]
                must = set(s.index[(s > eighth) & (s > s.min())])
                assert must <= set(mine.index[mine[f"{name} rank"] <= 8])
                assert np.allclose(mine[f"{name} score"],
                                   np.nan_to_num(s.reindex(mine.index).to_numpy()))
            if exclude_seen:
                bought = before.groupby("user_id")["item_id"].apply(set)
                assert not any(item in bought[user] for user, item in
                               zip(cands["user_id"], cands["item_id"], strict=True))
        assert (cands["generators"] >= 1).all()
        assert (cands["generators"] == sum((cands[f"{g} rank"] <= 8).astype(int)
                                           for g in stage.models_)).all()


def test_restricting_candidates_equals_a_smaller_n(frame):
    before = frame[frame["timestamp"] < CUTOFF]
    users = before["user_id"].unique()[:25]
    big = ts.CandidateGenerator(small_generators(), n=12).fit(before)
    small = ts.CandidateGenerator(small_generators(), n=5).fit(before)
    for exclude_seen in (False, True):
        cut = ts.restrict_candidates(big.candidates(users, exclude_seen), 5)
        pd.testing.assert_frame_equal(cut, small.candidates(users, exclude_seen))
    with pytest.raises(ValueError, match="exceeds the n these candidates were built with"):
        ts.restrict_candidates(small.candidates(users), 6)


def test_candidate_recall():
    cands = pd.DataFrame({"user_id": [1, 1, 2], "item_id": ["a", "b", "a"]})
    truth = pd.Series({1: {"a", "c"}, 2: {"b"}, 3: {"a"}})
    assert ts.candidate_recall(cands, truth).tolist() == [0.5, 0.0, 0.0]


# ------------------------------------------------------------------------- rankers


def _planted(seed: int, queries: int = 200, size: int = 20):
    """Queries whose relevant rows have a larger first feature (the others are noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(queries * size, 5)).astype(np.float32)
    x[rng.random(len(x)) < 0.1, 3] = np.nan
    y = (x[:, 0] + 0.5 * rng.normal(size=len(x)) > 1.2).astype(np.float32)
    return x, y, np.repeat(np.arange(queries), size)


@pytest.mark.parametrize("make, queries", [
    (lambda: ts.LightGBMRanker(n_estimators=60), 200),
    (lambda: ts.KerasListwiseRanker(epochs=4, patience=2), 100)], ids=["lightgbm", "keras"])
def test_rankers_learn_a_planted_signal_and_are_deterministic(make, queries):
    train, valid, test = _planted(0, queries), _planted(1, queries=40), _planted(2)
    first = make().fit(*train, validation=valid)
    scores = first.predict(test[0])
    learned = ts.candidate_ndcg(scores, test[1], test[2])
    random = ts.candidate_ndcg(np.random.default_rng(3).random(len(scores)), test[1], test[2])
    assert learned > random + 0.3
    again = make().fit(*train, validation=valid)
    np.testing.assert_allclose(again.predict(test[0]), scores, rtol=1e-6)
    with pytest.raises(ValueError, match="must have 5 columns"):
        first.predict(test[0][:, :4])


def test_ranker_input_errors():
    x, y, q = _planted(0, queries=5)
    ranker = ts.LightGBMRanker()
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        ranker.fit(x, y * 2, q)
    with pytest.raises(ValueError, match="must be contiguous"):
        ranker.fit(x, y, np.r_[q[1:], q[:1]])
    with pytest.raises(ValueError, match="one value per row"):
        ranker.fit(x, y[:-1], q)
    with pytest.raises(RuntimeError, match="not fitted"):
        ts.KerasListwiseRanker().predict(x)
    with pytest.raises(ValueError, match="no query has a positive label"):
        ts.KerasListwiseRanker(epochs=1).fit(x, np.zeros_like(y), q)


# ------------------------------------------------------------------------- two stages


def test_two_stage_follows_the_protocol(model, frame):
    test = ranking.RankingTask.from_split(
        frame[frame["timestamp"] < CUTOFF],
        frame[(frame["timestamp"] >= CUTOFF) & (frame["timestamp"] < CUTOFF
                                                + pd.Timedelta(days=30))])
    users = test.users("all")
    top = model.recommend(users, k=10, exclude_seen=False)
    assert top.shape == (len(users), 10)
    assert all(len(set(row)) == 10 for row in top)
    new = model.recommend(users, k=10, exclude_seen=True)
    bought = frame[frame["timestamp"] < CUTOFF].groupby("user_id")["item_id"].apply(set)
    assert not any(item in bought[u] for u, row in zip(users, new, strict=True) for item in row)
    # an unknown customer gets the popularity ranking
    popular = rec.Popularity().fit(frame[frame["timestamp"] < CUTOFF])
    assert (model.recommend([-5], k=5, exclude_seen=False)
            == popular.recommend([-5], k=5, exclude_seen=False)).all()
    assert model.score(users[:3]).shape == (3, len(model.items_))
    twice = model.recommend(np.r_[users[:3], users[:3]], k=5, exclude_seen=False)
    assert (twice[:3] == twice[3:]).all() and (twice[:3] == top[:3, :5]).all()
    result = ranking.evaluate(model, test)
    assert set(result) == {"all", "new"} and result["all"]["NDCG"].mean() > 0
    # the training examples come from the label window before the cutoff
    examples = model.examples_["all"][0]
    assert examples.cutoff == CUTOFF - pd.Timedelta(days=30)
    assert 0 < examples.recall() <= 1
    assert set(model.validation_ndcg_) == {"all", "new"}
    gain = model.feature_importance("all")
    assert gain.sum() == pytest.approx(1.0) and (gain >= 0).all()


def test_with_ranker_shares_stage_one_and_is_deterministic(model, frame):
    users = np.sort(frame.loc[frame["timestamp"] < CUTOFF, "user_id"].unique())[:40]
    again = ts.TwoStageRecommender(small_generators(), n=10, horizon_days=30, seed=0).fit(
        frame[frame["timestamp"] < CUTOFF], cutoff=CUTOFF)
    assert (again.recommend(users, 10, False) == model.recommend(users, 10, False)).all()
    assert again.validation_ndcg_ == model.validation_ndcg_
    smaller = model.with_ranker(n=4, drop_groups=["season", "customer"])
    assert smaller.generator_ is model.generator_ and smaller._cache is model._cache
    assert "tenure" not in smaller.rankers_["all"].feature_names_
    assert smaller.features(users, "all")["generators"].ge(1).all()
    assert len(smaller.features(users, "all")) < len(model.features(users, "all"))
    with pytest.raises(ValueError, match="exceeds the n the model was fitted with"):
        model.with_ranker(n=11)
    only_new = model.with_ranker(tasks=["new"])
    assert set(only_new.rankers_) == {"new"}
    with pytest.raises(ValueError, match="fitted without the task"):
        only_new.with_ranker(tasks=["all"])


def test_stacked_label_cutoffs(frame):
    stacked = ts.TwoStageRecommender(small_generators(), n=5, horizon_days=30, label_cutoffs=3,
                                     tasks=["all"]).fit(frame[frame["timestamp"] < CUTOFF],
                                                        cutoff=CUTOFF)
    cutoffs = [ex.cutoff for ex in stacked.examples_["all"]]
    assert cutoffs == [CUTOFF - pd.Timedelta(days=30 * j) for j in (1, 2, 3)]
    with pytest.raises(ValueError, match="no ranker for exclude_seen=True"):
        stacked.recommend([stacked.user_encoder_.classes_[0]], 5, exclude_seen=True)


@pytest.mark.parametrize("params, error, match", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"n": {"all": 5}}, ValueError, r"n has no entry for task\(s\) \['new'\]"),
    ({"tasks": ["old"]}, ValueError, "task must be one of"),
    ({"drop_groups": ["colour"]}, ValueError, "drop_groups entry must be one of"),
    ({"drop_groups": "pair"}, TypeError, "not a string"),
    ({"ranker": 3}, TypeError, "ranker must be 'lightgbm', 'keras' or an object"),
    ({"ranker": "xgboost"}, ValueError, "ranker must be one of"),
    ({"validation_share": 1.5}, ValueError, r"validation_share must be in \(0, 1\)"),
    ({"horizon_days": 400}, ValueError, "need interactions before it"),
    ({"generators": {"x": "EASE"}}, TypeError, "generator 'x' must be a Recommender"),
    ({"generators": {}}, ValueError, "non-empty mapping"),
    ({"generators": {"x rank": rec.Popularity()}}, ValueError, "would clash"),
])
def test_two_stage_errors(frame, params, error, match):
    base = {"generators": small_generators(), "n": 5, "horizon_days": 30}
    with pytest.raises(error, match=match):
        ts.TwoStageRecommender(**{**base, **params}).fit(frame[frame["timestamp"] < CUTOFF],
                                                         cutoff=CUTOFF)


def test_input_errors(frame):
    with pytest.raises(ValueError, match="on or after the cutoff"):
        ts.TwoStageRecommender().fit(frame, cutoff=CUTOFF)
    with pytest.raises(RuntimeError, match="not fitted"):
        ts.TwoStageRecommender().recommend([1])
    with pytest.raises(RuntimeError, match="not fitted"):
        ts.CandidateGenerator().candidates([1])
    with pytest.raises(ValueError, match="nothing before the cutoff"):
        ts.ranker_features(frame, pd.DataFrame({"user_id": [1], "item_id": ["a"]}),
                           "2000-01-01")
    with pytest.raises(ValueError, match="candidates is missing column"):
        ts.ranker_features(frame, pd.DataFrame({"user": [1], "item_id": ["a"]}), CUTOFF)
    with pytest.raises(ValueError, match="cutoff='soon' is not a valid date"):
        ts.ranker_features(frame, pd.DataFrame({"user_id": [1], "item_id": ["a"]}), "soon")
    with pytest.raises(ValueError, match=r"n names generators \['x'\]"):
        ts.CandidateGenerator(small_generators(), n={"x": 3}).fit(frame)


def test_ndcg_at_k_scores_hits_against_every_relevant_item():
    ranked = pd.DataFrame({"user_id": [1, 1, 1, 3], "item_id": ["a", "b", "c", "x"]})
    truth = pd.Series({1: {"b", "z"}, 2: {"a"}})  # customer 2 has no candidates
    ndcg = ts.ndcg_at_k(ranked, truth, k=2)
    expected = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert ndcg.loc[1] == pytest.approx(expected) and ndcg.loc[2] == 0
    assert list(ndcg.index) == [1, 2]  # customer 3 is not in the truth
    with pytest.raises(ValueError, match="k"):
        ts.ndcg_at_k(ranked, truth, k=0)
