"""The Spark path gives the same tables and metrics as the pandas path (synthetic shop)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.data import preprocessing
from companion.ops import spark as cs
from companion.recsys import baselines as rec
from companion.recsys import experiments, ranking
from companion.retention import churn

KEYS = ["user_id", "item_id", "timestamp", "invoice"]


# ------------------------------------------------------------- no Spark needed


def test_import_does_not_need_pyspark():
    import subprocess
    import sys

    code = ("import sys; sys.modules['pyspark'] = None; import companion.ops.spark as cs; "
            "assert cs.java_major('openjdk version \"17.0.1\"') == 17")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("line, major", [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_392"', 8),
    ('openjdk version "21" 2023-09-19', 21),
    ("nonsense", None),
    (None, None),
])
def test_java_major(line, major):
    assert cs.java_major(line) == major


def test_compare_tables_finds_differences():
    a = pd.DataFrame({"k": [1, 2, 3], "x": [1.0, 2.0, 3.0], "s": ["a", "b", None]})
    b = a.iloc[::-1].copy()
    assert cs.compare_tables(a, b, keys=["k"])["equal"]
    b.loc[b["k"] == 2, "x"] = 2.5
    out = cs.compare_tables(a, b, keys=["k"])
    assert not out["equal"] and out["mismatched"] == 1 and out["max_abs_diff"] == 0.5
    assert not cs.compare_tables(a, a.iloc[:2], keys=["k"])["equal"]
    with pytest.raises(ValueError, match="only in actual"):
        cs.compare_tables(a, a.assign(y=1), keys=["k"])


def test_replicate_customers(shop):
    raw = shop[0]
    big = cs.replicate_customers(raw, 3)
    assert len(big) == 3 * len(raw)
    known = raw["CustomerID"].dropna()
    assert big["CustomerID"].nunique() == 3 * known.nunique()
    copy = big.iloc[len(raw):2 * len(raw)]
    cancelled = raw["InvoiceNo"].astype(str).str.startswith("C")
    assert copy["InvoiceNo"].astype(str).str.startswith("C").to_numpy().tolist() == \
        cancelled.tolist()
    with pytest.raises(ValueError, match="times"):
        cs.replicate_customers(raw, 0)
    with pytest.raises(ValueError, match="CustomerID"):
        cs.replicate_customers(raw.drop(columns="CustomerID"), 2)


def test_tie_consistent_accepts_tie_orders_and_rejects_wrong_lists(interactions):
    model = rec.Popularity().fit(interactions)
    users = np.sort(interactions["user_id"].unique())[:3]
    top = model.recommend(users, k=5, exclude_seen=False)
    lists = pd.DataFrame([(u, item, r + 1) for u, row in zip(users, top, strict=True)
                          for r, item in enumerate(row)], columns=["user_id", "item_id", "rank"])
    assert cs.tie_consistent(model, lists).all()
    worst = model.items_[np.argsort(model.score(users[:1])[0])[:5]]
    bad = lists.copy()
    bad.loc[bad["user_id"] == users[0], "item_id"] = worst
    assert cs.tie_consistent(model, bad).tolist() == [False, True, True]


# ------------------------------------------------------------- with Spark

needs_java = pytest.mark.skipif(
    cs.java_version() is None, reason="Spark needs a Java runtime (java is not on the PATH)")


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    if cs.java_version() is None:
        pytest.skip("Spark needs a Java runtime (java is not on the PATH)")
    with cs.spark_session("companion-tests", shuffle_partitions=2) as session:
        yield session


@pytest.fixture(scope="module")
def both(spark, shop, clean_shop, interactions):
    """The pandas results and the Spark results of the same pipeline."""
    raw = cs.from_pandas(spark, shop[0])
    clean = cs.clean_transactions(raw)
    inter = cs.to_interactions(clean.transactions).cache()
    return clean, inter


@needs_java
def test_cleaning_report_and_tables_match(both, clean_shop):
    clean, _ = both
    pd.testing.assert_frame_equal(clean.report, clean_shop.report, check_dtype=False)
    for part in ("transactions", "returns"):
        expected = getattr(clean_shop, part)
        got = cs.to_pandas(getattr(clean, part))
        assert cs.compare_tables(expected, got, keys=list(expected.columns))["equal"], part


@needs_java
def test_cleaning_strips_and_counts_like_pandas(spark):
    raw = pd.DataFrame({
        "Invoice": [" 1", "1", "C2", "3", "4", "5", "5"],
        "StockCode": ["A ", "A", "A", "POST", "B", "gift_0001_10", "B"],
        "Description": ["x", "x", None, "p", "b", "g", "b"],
        "Quantity": [1, 1, -1, 1, 0, 1, 2],
        "InvoiceDate": pd.to_datetime(["2011-01-01"] * 7),
        "Price": [1.0] * 7,
        "Customer ID": [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, np.nan],
        "Country": ["UK\u00a0", "UK", "UK", "UK", "UK", "UK", "UK"],
    })
    expected = preprocessing.clean_transactions(raw)
    got = cs.clean_transactions(cs.from_pandas(spark, raw))
    pd.testing.assert_frame_equal(got.report, expected.report, check_dtype=False)
    assert got.report.set_index("rule").loc["duplicates", "rows_removed"] == 1
    assert cs.compare_tables(expected.returns, cs.to_pandas(got.returns),
                             keys=list(expected.returns.columns))["equal"]


@needs_java
def test_clean_rejects_missing_columns(spark, shop):
    raw = cs.from_pandas(spark, shop[0].head(20).drop(columns="UnitPrice"))
    with pytest.raises(ValueError, match="Price"):
        cs.clean_transactions(raw)


@needs_java
def test_interactions_and_split_match(both, interactions):
    _, inter = both
    assert cs.compare_tables(interactions, cs.to_pandas(inter), keys=KEYS)["equal"]
    split = experiments.last_days_split(interactions, 30)
    spark_split = cs.last_days_split(inter, 30)
    assert spark_split.description == split.description
    for part in ("train", "validation", "test"):
        got = cs.to_pandas(getattr(spark_split, part))
        assert cs.compare_tables(getattr(split, part), got, keys=KEYS)["equal"], part
    with pytest.raises(ValueError, match="outside the data"):
        cs.split_by_time(inter, "2030-01-01")


@needs_java
def test_rfm_and_churn_features_match(both, interactions, clean_shop):
    clean, inter = both
    cutoff = "2011-09-01"
    features = churn.churn_features(interactions, cutoff, returns=clean_shop.returns)
    got = cs.to_pandas(cs.churn_features(inter, cutoff, returns=clean.returns))
    result = cs.compare_tables(features.reset_index(), got, keys=["user_id"])
    assert result["equal"], result
    labels = churn.churn_labels(interactions, cutoff, horizon_days=60).reset_index()
    got = cs.to_pandas(cs.churn_labels(inter, cutoff, horizon_days=60))
    assert cs.compare_tables(labels, got, keys=["user_id"])["equal"]
    with pytest.raises(ValueError, match="too long"):
        cs.churn_labels(inter, cutoff, horizon_days=400)


@needs_java
@pytest.mark.parametrize("name", ["popularity", "repeat-buy"])
def test_recommenders_rank_like_pandas_and_score_the_same(both, interactions, name):
    _, inter = both
    split = experiments.last_days_split(interactions, 30)
    task = ranking.RankingTask.from_time_split(split, "test")
    model = (rec.Popularity() if name == "popularity" else rec.RepeatBuy()).fit(task.train)
    expected = ranking.evaluate(model, task, k=10, tasks=("all",))["all"]

    spark_split = cs.last_days_split(inter, 30)
    train = spark_split.train.unionByName(spark_split.validation)
    truth = cs.window_truth(train, spark_split.test)
    top = (cs.popularity_top_k if name == "popularity" else cs.repeat_buy_top_k)(train, truth)
    lists = cs.to_pandas(top)
    assert cs.tie_consistent(model, lists).all()
    metrics = cs.to_pandas(cs.ranking_metrics(top, truth), ["user_id"]).set_index("user_id")
    assert metrics.index.tolist() == expected.index.tolist()
    # the metric Spark computes is ranking's metric on the same lists, for every user
    wide = lists.pivot(index="user_id", columns="rank", values="item_id").sort_index()
    hits = ranking.hits_matrix(wide.to_numpy(), task.truth["all"])
    again = ranking.metrics_from_hits(hits, task.truth["all"].map(len).to_numpy())
    for col in ("Recall", "NDCG", "HitRate"):
        np.testing.assert_allclose(metrics[col].to_numpy(), again[col].to_numpy(),
                                   rtol=1e-12)
    # lists differ from pandas' only in how tied items are ordered: means stay close
    assert abs(metrics["NDCG"].mean() - expected["NDCG"].mean()) < 0.02


def test_scale_shop_fractions_and_errors(shop):
    raw = shop[0]
    half = cs.scale_shop(raw, 0.5)
    share = half["CustomerID"].nunique() / raw["CustomerID"].nunique()
    assert 0.35 < share < 0.65
    assert set(half["CustomerID"].dropna()) <= set(raw["CustomerID"].dropna())
    assert len(cs.scale_shop(raw, 2)) == 2 * len(raw)
    with pytest.raises(ValueError, match="whole numbers"):
        cs.scale_shop(raw, 1.5)
    with pytest.raises(ValueError, match="positive"):
        cs.scale_shop(raw, 0)


@needs_java
def test_compare_engines_times_and_compares_both_paths(spark, shop):
    from companion.ops import scale_out

    out = scale_out.compare_engines(shop[0], [1], spark=spark)
    timing = out["timing"]
    assert list(timing["size"]) == [1] and timing.loc[0, "raw rows"] == len(shop[0])
    assert bool(timing.loc[0, "same features and users"])
    table_rows = [name for name in out["checks"].index if "valid" not in name]
    assert out["checks"].loc[table_rows, "equal"].all()
    report = out["report"]
    assert (report["rows_removed pandas"] == report["rows_removed Spark"]).all()
    assert {"user_id", "churned"} <= set(out["features"].columns)
    assert set(out["means"].index.get_level_values("path")) == {"pandas", "Spark"}
    assert spark.range(3).count() == 3  # a session it was given is left running
    with pytest.raises(ValueError, match="tables_at"):
        scale_out.compare_engines(shop[0], [2], spark=spark)
