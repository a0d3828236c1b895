"""Next-basket baselines (TIFU-KNN, UP-CF@r) on hand-computed cases, and the rolling-origin
evaluation: split logic, driver, averaging and paired intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.recsys import baselines as rec
from companion.recsys import experiments, ranking

DAY = pd.Timestamp("2011-01-03")


def _frame(histories: dict[int, list[str]]) -> pd.DataFrame:
    """Interactions from ``{user: ["ab", "c", ...]}``: one basket (invoice) per string,
    oldest first, one item per letter; baskets are a day apart."""
    rows = []
    for user, baskets in histories.items():
        for number, basket in enumerate(baskets):
            for item in basket:
                rows.append((user, item, DAY + pd.Timedelta(days=number), f"{user}-{number}"))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice"])


# three users; items a..d; user 1 has 3 baskets, user 2 one, user 3 two
TIFU_DATA = _frame({1: ["a", "ab", "c"], 2: ["bd"], 3: ["d", "ad"]})
# by hand with group_size m=2 and both decays 1/2 (see the class docstring's formula):
# user 1: 3 >= m baskets: groups [a] and [ab, c] (the newer group holds the extra basket);
#   basket weights 1/4, 1/2, 1; group weights 1/2, 1; v = (1/2 (a/4) + (ab/2 + c)/2) / 2
# user 2: 1 < m basket: its own group with weight (1/2)^(m-1) = 1/2; v = (bd / 2) / 1
# user 3: 2 = m baskets: groups [d], [ad]; v = (1/2 (d/2) + ad) / 2
TIFU_VECTORS = {1: [0.1875, 0.125, 0.25, 0.0], 2: [0.0, 0.5, 0.0, 0.5],
                3: [0.5, 0.0, 0.0, 0.625]}


def test_tifu_vectors_by_hand():
    model = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5, alpha=0.5)
    model.fit(TIFU_DATA)
    assert list(model.items_) == ["a", "b", "c", "d"]
    vectors = model.vectors_.toarray()
    for code, user in enumerate(model.user_encoder_.classes_):
        assert vectors[code] == pytest.approx(TIFU_VECTORS[user], abs=1e-12)


def test_tifu_scores_and_ranking_by_hand():
    model = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5, alpha=0.5)
    model.fit(TIFU_DATA)
    # squared distances: d(1,2) = 0.48828125 < d(2,3) = 0.515625 < d(1,3) = 0.56640625,
    # so the nearest other user is 2 for users 1 and 3, and 1 for user 2
    codes = model.user_encoder_.transform(np.array([1, 2, 3]))
    near = model.user_encoder_.classes_.to_numpy()[model.nearest_users(codes)[:, 0]]
    assert list(near) == [2, 1, 2]
    scores = model.score(np.array([1, 2, 3]))
    v = {u: np.array(x) for u, x in TIFU_VECTORS.items()}
    expected = np.array([0.5 * v[1] + 0.5 * v[2], 0.5 * v[2] + 0.5 * v[1],
                         0.5 * v[3] + 0.5 * v[2]])
    assert scores == pytest.approx(expected, abs=1e-7)
    assert scores[0] == pytest.approx([0.09375, 0.3125, 0.125, 0.25], abs=1e-7)
    top = model.recommend(np.array([1, 3]), k=2, exclude_seen=False)
    assert list(top[0]) == ["b", "d"]
    assert top[1][0] == "d" and top[1][1] in {"a", "b"}  # a and b tie at 0.25 for user 3
    assert list(model.recommend(np.array([1]), k=1, exclude_seen=True)[0]) == ["d"]


def test_tifu_group_edge_cases():
    # one group: the decayed baskets are averaged; group_size 4 > 3 baskets: each basket is
    # its own group, the newest weighs group_decay^(4-3)
    one = rec.TIFUKNN(neighbours=1, group_size=1, within_decay=0.5, group_decay=0.5).fit(TIFU_DATA)
    assert one.vectors_.toarray()[0] == pytest.approx([1 / 4, 1 / 6, 1 / 3, 0.0])
    many = rec.TIFUKNN(neighbours=1, group_size=4, within_decay=0.5, group_decay=0.5).fit(TIFU_DATA)
    # (1/8 * a/4 + 1/4 * ab/2 + 1/2 * c) / 3
    assert many.vectors_.toarray()[0] == pytest.approx([0.15625 / 3, 0.125 / 3, 0.5 / 3, 0.0])
    # a single basket with group_size 1 is the basket itself
    assert one.vectors_.toarray()[1] == pytest.approx([0.0, 1.0, 0.0, 1.0])
    # 5 baskets in m=2 groups: the older group holds 2 baskets, the newer 3
    five = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5).fit(
        _frame({1: ["p", "q", "r", "s", "t"], 2: ["p"]}))
    assert five.vectors_.toarray()[0] == pytest.approx([1 / 128, 1 / 64, 1 / 24, 1 / 12, 1 / 6])


def test_tifu_alpha_and_neighbour_cap():
    own = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5, alpha=1.0)
    assert own.fit(TIFU_DATA).score(np.array([3]))[0] == pytest.approx(TIFU_VECTORS[3])
    # k above the number of other users: all of them (2) are neighbours
    capped = rec.TIFUKNN(neighbours=50, group_size=2, within_decay=0.5, group_decay=0.5, alpha=0.0)
    capped.fit(TIFU_DATA)
    assert capped.nearest_users(np.array([0])).shape == (1, 2)
    mean = (np.array(TIFU_VECTORS[2]) + np.array(TIFU_VECTORS[3])) / 2
    assert capped.score(np.array([1]))[0] == pytest.approx(mean)
    # a shop with a single customer has no neighbours
    alone = rec.TIFUKNN(alpha=0.5).fit(_frame({1: ["ab", "b"]}))
    assert alone.nearest_users(np.array([0])).shape == (1, 0)
    assert np.isfinite(alone.score(np.array([1]))).all()


def test_baskets_without_invoice_are_timestamps():
    with_invoice = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5).fit(
        TIFU_DATA)
    without = rec.TIFUKNN(neighbours=1, group_size=2, within_decay=0.5, group_decay=0.5).fit(
        TIFU_DATA.drop(columns="invoice"))
    assert (with_invoice.vectors_ != without.vectors_).nnz == 0


# UP-CF: items a..e; whole-history item sets I1={a,b,c}, I2={b,d}, I3={a,c,d,e}
UPCF_DATA = _frame({1: ["a", "ab", "c"], 2: ["bd"], 3: ["d", "acde"]})


def test_upcf_scores_by_hand():
    # asymmetry 1/2 is the plain cosine: w12 = 1/sqrt(6), w13 = 2/sqrt(12), w23 = 1/sqrt(8);
    # squared (locality 2): 1/6, 1/3, 1/8. Popularity over the last 2 baskets:
    # p1 = (a, b, c) / 2, p2 = (b, d), p3 = d + (a, c, e) / 2.
    model = rec.UPCF(recency=2, asymmetry=0.5, locality=2, neighbours=1).fit(UPCF_DATA)
    assert list(model.items_) == ["a", "b", "c", "d", "e"]
    assert model.popularity_r_.toarray() == pytest.approx(np.array(
        [[0.5, 0.5, 0.5, 0, 0], [0, 1, 0, 1, 0], [0.5, 0, 0.5, 1, 0.5]]))
    sim = model.similarity(np.array([0, 1, 2]))
    assert sim == pytest.approx(np.array([[1, 6 ** -0.5, 2 / 12 ** 0.5],
                                          [6 ** -0.5, 1, 8 ** -0.5],
                                          [2 / 12 ** 0.5, 8 ** -0.5, 1]]))
    # one neighbour: 1 -> 3, 2 -> 1, 3 -> 1; s_u = p_u + w^2 p_neighbour
    scores = model.score(np.array([1, 2, 3]))
    assert scores[0] == pytest.approx([2 / 3, 1 / 2, 2 / 3, 1 / 3, 1 / 6])
    assert scores[1] == pytest.approx([1 / 12, 13 / 12, 1 / 12, 1, 0])
    assert scores[2] == pytest.approx([2 / 3, 1 / 6, 2 / 3, 1, 1 / 2])
    top = model.recommend(np.array([2]), k=2, exclude_seen=False)[0]
    assert list(top) == ["b", "d"]
    assert list(model.recommend(np.array([1]), k=2, exclude_seen=True)[0]) == ["d", "e"]
    # every neighbour: s_1 = p1 + p2 / 6 + p3 / 3
    full = rec.UPCF(recency=2, asymmetry=0.5, locality=2, neighbours=None).fit(UPCF_DATA)
    assert full.score(np.array([1]))[0] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1 / 2, 1 / 6])


def test_upcf_recency_and_asymmetry():
    # all baskets: B_ui / B_u
    model = rec.UPCF(recency=None, asymmetry=1.0, locality=1, neighbours=1).fit(UPCF_DATA)
    assert model.popularity_r_.toarray()[0] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0, 0])
    # asymmetry 1: w_uv = |I_u & I_v| / |I_u|, so w13 = 2/3 but w31 = 2/4
    sim = model.similarity(np.array([0, 2]))
    assert sim[0, 2] == pytest.approx(2 / 3) and sim[1, 0] == pytest.approx(1 / 2)
    # recency 1: the last basket only
    last = rec.UPCF(recency=1, neighbours=1).fit(UPCF_DATA)
    assert last.popularity_r_.toarray()[2] == pytest.approx([1, 0, 1, 1, 1])


@pytest.mark.parametrize("model, match", [
    (rec.TIFUKNN(neighbours=0), "neighbours must be >= 1, got 0"),
    (rec.TIFUKNN(group_size=0), "group_size must be >= 1, got 0"),
    (rec.TIFUKNN(within_decay=1.5), r"within_decay must be in \(0, 1\], got 1.5"),
    (rec.TIFUKNN(group_decay=0.0), r"group_decay must be in \(0, 1\], got 0.0"),
    (rec.TIFUKNN(alpha=-0.1), r"alpha must be in \[0, 1\], got -0.1"),
    (rec.UPCF(recency=0), "recency must be >= 1, got 0"),
    (rec.UPCF(neighbours=0), "neighbours must be >= 1, got 0"),
    (rec.UPCF(asymmetry=2.0), r"asymmetry must be in \[0, 1\], got 2.0"),
    (rec.UPCF(locality=0), "locality must be a positive number, got 0"),
])
def test_bad_parameters(model, match):
    with pytest.raises(ValueError, match=match):
        model.fit(TIFU_DATA)


def test_bad_parameter_types():
    with pytest.raises(TypeError, match="neighbours must be an integer, got float"):
        rec.TIFUKNN(neighbours=2.5).fit(TIFU_DATA)
    with pytest.raises(TypeError, match="alpha must be a number, got str"):
        rec.TIFUKNN(alpha="0.5").fit(TIFU_DATA)


def test_unknown_users_get_popularity():
    for model in (rec.TIFUKNN(neighbours=1), rec.UPCF(neighbours=1)):
        model.fit(UPCF_DATA)
        scores = model.score(np.array([99]))[0]
        popularity = model.popularity_ / model.popularity_.max()
        assert scores == pytest.approx(popularity)


# ------------------------------------------------------------------------ rolling origin


def _dated_frame() -> pd.DataFrame:
    """Every purchase's item id is its date, so a truth set shows where it was read from."""
    days = pd.date_range("2011-01-01", "2011-04-30", freq="D")
    rows = [(user, str(day.date()), day + pd.Timedelta(hours=user), f"{user}-{day.date()}")
            for day in days for user in (1, 2, 3) if (day.day + user) % 3 == 0]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "invoice"])


def test_rolling_tasks_never_read_the_future():
    frame = _dated_frame()
    windows = [("2011-03-01", "2011-03-15"), ("2011-03-15", "2011-04-01"),
               ("2011-04-01", "2011-05-01")]
    origins = experiments.rolling_tasks(frame, windows)
    assert [o.name for o in origins] == ["2011-03-01..2011-03-15", "2011-03-15..2011-04-01",
                                         "2011-04-01..2011-05-01"]
    for origin, (start, end) in zip(origins, windows, strict=True):
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        assert origin.validation_start == start - (end - start)
        val, test = origin.validation, origin.test
        assert val.train["timestamp"].max() < origin.validation_start
        assert test.train["timestamp"].max() < start
        assert len(test.train) > len(val.train)
        for task, low, high in ((val, origin.validation_start, start), (test, start, end)):
            for items in task.truth["all"]:
                dates = pd.to_datetime(sorted(items))
                assert low.normalize() <= dates.min() and dates.max() < high
        # the validation window ends where the test window starts
        val_days = pd.to_datetime(sorted(set().union(*val.truth["all"])))
        test_days = pd.to_datetime(sorted(set().union(*test.truth["all"])))
        assert val_days.max() < start <= test_days.min()
    # two equal, contiguous windows: the second's validation window is the first test window
    a, b = experiments.rolling_tasks(frame, [("2011-03-01", "2011-03-15"),
                                             ("2011-03-15", "2011-03-29")])
    assert b.validation_start == a.test_start
    assert set(b.validation.truth["all"].index) == set(a.test.truth["all"].index)


def test_rolling_tasks_bad_windows():
    frame = _dated_frame()
    with pytest.raises(ValueError, match="non-empty list"):
        experiments.rolling_tasks(frame, [])
    with pytest.raises(ValueError, match="2011-03-15..2011-03-01 ends before it starts"):
        experiments.rolling_tasks(frame, [("2011-03-15", "2011-03-01")])
    with pytest.raises(ValueError, match="starts after the last interaction"):
        experiments.rolling_tasks(frame, [("2012-01-01", "2012-02-01")])
    with pytest.raises(ValueError, match="leaves no training data"):
        experiments.rolling_tasks(frame, [("2011-02-01", "2011-04-01")])
    with pytest.raises(ValueError, match=r"windows\[0\] start='soon' is not a valid date"):
        experiments.rolling_tasks(frame, [("soon", "2011-04-01")])
    with pytest.raises(ValueError, match="not a .start, end. pair"):
        experiments.rolling_tasks(frame, [("2011-03-01",)])


def _per_user(values: dict) -> dict:
    """``{window: {model: {task: [NDCG per customer]}}}`` with customers 0, 1, ... as
    metric frames."""
    out = {}
    for window, models in values.items():
        out[window] = {}
        for model, tasks in models.items():
            out[window][model] = {}
            for task, (customers, ndcg) in tasks.items():
                frame = pd.DataFrame({m: np.asarray(ndcg, float) for m in ranking.METRICS},
                                     index=pd.Index(customers, name="user_id"))
                out[window][model][task] = frame
    return out


def test_rolling_table_averages_windows_not_customers():
    per_user = _per_user({
        "w1": {"A": {"all": ([1, 2, 3, 4], [1, 0, 0, 0])},
               "B": {"all": ([1, 2, 3, 4], [0, 0, 0, 0])}},
        "w2": {"A": {"all": ([1], [1.0])}, "B": {"all": ([1], [0.5])}},
    })
    table = experiments.rolling_table(per_user)
    assert list(table.index) == ["A", "B"]
    assert list(table.columns) == [("all", "w1"), ("all", "w2"), ("all", "mean")]
    assert table.loc["A"].tolist() == pytest.approx([0.25, 1.0, 0.625])  # pooled: 0.4
    assert table.loc["B"].tolist() == pytest.approx([0.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="metric must be one of"):
        experiments.rolling_table(per_user, "AUC")


def test_rolling_difference():
    per_user = _per_user({
        "w1": {"A": {"all": ([1, 2, 3, 4], [1, 0, 0, 0])},
               "B": {"all": ([1, 2, 3, 4], [0, 0, 0, 0])}},
        "w2": {"A": {"all": ([1], [1.0])}, "B": {"all": ([1], [0.5])}},
    })
    for resample in ("window", "customer"):
        est, low, high = experiments.rolling_difference(per_user, "A", "B", "all",
                                                        resample=resample, seed=1)
        # window means of the differences: 0.25 and 0.5
        assert est == pytest.approx(0.375)
        assert 0.25 <= low <= est <= high <= 0.75
    # per window: window 2's only customer is always drawn, window 1 varies
    est, low, high = experiments.rolling_difference(per_user, "A", "B", "all", seed=1)
    assert low == pytest.approx(0.25) and high > est
    # no difference at all: a degenerate interval
    assert experiments.rolling_difference(per_user, "A", "A", "all") == (0.0, 0.0, 0.0)
    # one customer in every window: nothing to resample
    single = _per_user({w: {"A": {"all": ([7], [x])}, "B": {"all": ([7], [0.0])}}
                        for w, x in (("w1", 0.2), ("w2", 0.4))})
    for resample in ("window", "customer"):
        assert experiments.rolling_difference(single, "A", "B", resample=resample) == \
            pytest.approx((0.3, 0.3, 0.3))


def test_rolling_difference_customer_bootstrap_keeps_customers_together():
    # customer 1 gains 1 in both windows, customer 2 loses 1 in both. Drawn together, both
    # windows of a replicate have the same mean: -1, 0 or 1 with probabilities 1/4, 1/2,
    # 1/4. Drawn per window, the average of two independent means is -1 or 1 with
    # probability 1/16 each, so the 80% interval shrinks to [-0.5, 0.5].
    per_user = _per_user({w: {"A": {"all": ([1, 2], [1.0, 0.0])},
                              "B": {"all": ([1, 2], [0.0, 1.0])}} for w in ("w1", "w2")})
    together = experiments.rolling_difference(per_user, "A", "B", resample="customer",
                                              level=0.8)
    apart = experiments.rolling_difference(per_user, "A", "B", resample="window", level=0.8)
    assert together[0] == apart[0] == 0.0
    assert together[1:] == (-1.0, 1.0)
    assert apart[1:] == (-0.5, 0.5)


def test_rolling_difference_bad_input():
    per_user = _per_user({"w1": {"A": {"all": ([1, 2], [1, 0])},
                                 "B": {"all": ([1, 3], [0, 0])}}})
    with pytest.raises(ValueError, match="different customers"):
        experiments.rolling_difference(per_user, "A", "B")
    with pytest.raises(ValueError, match="no 'all' results for model 'C'"):
        experiments.rolling_difference(per_user, "A", "C")
    with pytest.raises(ValueError, match="resample must be one of"):
        experiments.rolling_difference(per_user, "A", "B", resample="user")
    with pytest.raises(ValueError, match="per_user must be a non-empty dict"):
        experiments.rolling_difference({}, "A", "B")


@pytest.fixture(scope="module")
def shop_interactions():
    frame = data.synthetic_shop(n_customers=200, n_products=120, months=12, seed=5)
    return preprocessing.to_interactions(preprocessing.clean_transactions(frame).transactions)


SMALL_GRIDS = {
    "popularity": (rec.Popularity, {}),
    "repeat-buy": (rec.RepeatBuy, {"half_life_days": [14, 180]}),
    "TIFU-KNN": (rec.TIFUKNN, {"neighbours": [5, 20], "alpha": [0.3]}),
    "UP-CF@r": (rec.UPCF, {"recency": [1, 5], "neighbours": [20]}),
}


def test_rolling_baselines(shop_interactions):
    end = shop_interactions["timestamp"].max().normalize() + pd.Timedelta(days=1)
    windows = [(end - pd.Timedelta(days=60), end - pd.Timedelta(days=30)),
               (end - pd.Timedelta(days=30), end)]
    result = experiments.rolling_baselines(shop_interactions, windows, SMALL_GRIDS,
                                           progress=False)
    assert len(result.windows) == 2
    origins = experiments.rolling_tasks(shop_interactions, windows)
    for origin in origins:
        w = origin.name
        assert set(result.per_user[w]) == set(SMALL_GRIDS)
        assert result.chosen[w]["TIFU-KNN"]["all"]["neighbours"] in (5, 20)
        assert set(result.tuning[w]) == {"repeat-buy", "TIFU-KNN", "UP-CF@r"}
        for task in ("all", "new"):
            frames = [result.per_user[w][m][task] for m in SMALL_GRIDS]
            assert all(f.index.equals(origin.test.truth[task].index) for f in frames)
        assert all(s >= 0 for s in result.seconds[w].values())
    table = result.table()
    assert table.shape == (4, 6)
    assert table[("all", "mean")]["repeat-buy"] > table[("all", "mean")]["popularity"]
    params = result.params_table()
    assert params.loc[(result.windows[0], "popularity"), "all"] == "-"
    # the test windows are used for nothing but the final score
    shuffled = shop_interactions.copy()
    late = shuffled["timestamp"] >= pd.Timestamp(windows[-1][0])
    shuffled.loc[late, "item_id"] = shuffled.loc[late, "item_id"].sample(
        frac=1.0, random_state=0).to_numpy()
    again = experiments.rolling_baselines(shuffled, windows[-1:], SMALL_GRIDS, progress=False)
    assert again.chosen[result.windows[-1]] == result.chosen[result.windows[-1]]
