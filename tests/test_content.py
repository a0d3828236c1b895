"""Tests of companion.recsys.content on the seeded synthetic shop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.recsys import baselines as rec
from companion.recsys import content


@pytest.fixture(scope="module")
def catalogue(shop):
    """Stock code -> description and price, from the shop's hidden product table."""
    products = shop[1].products.set_index("StockCode")
    return products


@pytest.fixture(scope="module")
def cold_split(interactions, catalogue):
    """Hide a fifth of the products (those of a fixed random draw) from training: they
    play the products launched in the last two months."""
    rng = np.random.default_rng(0)
    items = np.sort(interactions["item_id"].unique())
    hidden = set(rng.choice(items, size=len(items) // 5, replace=False))
    start = interactions["timestamp"].max() - pd.Timedelta(days=60)
    before = interactions[(interactions["timestamp"] < start)
                          & ~interactions["item_id"].isin(hidden)]
    after = interactions[interactions["timestamp"] >= start]
    return pd.concat([before, after], ignore_index=True), start, hidden


def test_product_catalogue_reads_nothing_after_until(clean_shop):
    lines = clean_shop.transactions
    cutoff = lines["invoice_date"].quantile(0.7)
    until = lines["invoice_date"].quantile(0.85)
    cat = content.product_catalogue(lines, cutoff, until)
    later = lines["invoice_date"] >= until
    altered = lines.copy()
    altered.loc[later, "description"] = "CHANGED"
    altered.loc[later, "price"] = 999.0
    pd.testing.assert_frame_equal(cat, content.product_catalogue(altered, cutoff, until))
    assert (cat["first_sold"] < until).all()
    with pytest.raises(ValueError, match="before cutoff"):
        content.product_catalogue(lines, until, cutoff)
    with pytest.raises(ValueError, match="description"):
        content.product_catalogue(lines.drop(columns="description"), cutoff)


def test_content_model_beats_random_on_cold_products(cold_split, catalogue):
    frame, start, hidden = cold_split
    task = content.cold_start_task(frame, start)
    assert set(task.candidates) <= hidden and len(task.candidates) >= 10
    text = catalogue["Description"].str.strip()
    random = content.random_cold(task, k=5)
    tfidf = content.ContentRecommender(text).fit(task.train)
    scores = content.evaluate_cold(tfidf, task, k=5)
    assert scores["NDCG"].mean() > random["NDCG"].mean() + 0.05
    # the task uses nothing after the window's first day for training
    assert task.train["timestamp"].max() < start
    # a collaborative model cannot score the cold products
    with pytest.raises(ValueError, match="cannot score"):
        content.evaluate_cold(rec.Popularity().fit(task.train), task)


def test_text_encoder_learns_categories_and_is_deterministic(cold_split, catalogue):
    frame, start, _ = cold_split
    task = content.cold_start_task(frame, start)
    text = catalogue["Description"].str.strip()
    vectors = []
    for _ in range(2):
        encoder = content.TextEncoder(dim=16, epochs=3, pairs_per_epoch=8192, batch_size=256,
                                      pairs="customer", seed=3)
        model = content.ContentRecommender(text, encoder=encoder).fit(task.train)
        vectors.append(model.item_vectors_)
    np.testing.assert_array_equal(vectors[0], vectors[1])
    random = content.random_cold(task, k=5)
    assert content.evaluate_cold(model, task, k=5)["NDCG"].mean() > random["NDCG"].mean()
    # products of one category sit closer together than products of different ones
    codes = model.item_encoder_.transform(catalogue.index)
    sim = vectors[0][codes] @ vectors[0][codes].T
    same = catalogue["category"].to_numpy()[:, None] == catalogue["category"].to_numpy()[None]
    off = ~np.eye(len(same), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.03


def test_cold_start_task_ignores_the_future(cold_split):
    frame, start, _ = cold_split
    end = start + pd.Timedelta(days=30)
    task = content.cold_start_task(frame, start, end)
    later = frame[frame["timestamp"] >= end].assign(item_id="NEW-ITEM")
    altered = pd.concat([frame[frame["timestamp"] < end], later])
    again = content.cold_start_task(altered, start, end)
    np.testing.assert_array_equal(task.candidates, again.candidates)
    pd.testing.assert_series_equal(task.truth, again.truth)
    with pytest.raises(ValueError, match="must be after"):
        content.cold_start_task(frame, end, start)


def test_hybrid_backs_off_to_content_for_cold_products(cold_split, catalogue):
    frame, start, hidden = cold_split
    train = frame[frame["timestamp"] < start]
    text = catalogue["Description"].str.strip()
    collab = rec.EASE(l2=50.0).fit(train)
    model = content.ContentRecommender(text).fit(train)
    alone = content.Hybrid(collab, model, weight=0.0).fit(train)
    mixed = content.Hybrid(collab, model, weight=1.5).fit(train)
    users = train["user_id"].unique()[:20]
    top_alone = alone.recommend(users, k=10, exclude_seen=True)
    top_mixed = mixed.recommend(users, k=10, exclude_seen=True)
    assert not np.isin(top_alone, list(hidden)).any()
    assert np.isin(top_mixed, list(hidden)).any()
    # on products with purchases the hybrid keeps the collaborative order
    warm = alone.score(users)[:, alone.warm_]
    order = np.argsort(-collab.score(users), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(np.argsort(-warm, axis=1, kind="stable")[:, :5], order)
    with pytest.raises(ValueError, match="weight"):
        content.Hybrid(collab, model, weight=-1.0).fit(train)


def test_baselines_for_new_products(cold_split, catalogue):
    frame, start, _ = cold_split
    task = content.cold_start_task(frame, start)
    text = catalogue["Description"].str.strip()
    words = content.WordPopularity(text).fit(task.train)
    assert np.isfinite(words.score(task.users()[:3])).all()
    price = content.PriceMatch(catalogue["UnitPrice"]).fit(task.train)
    assert content.evaluate_cold(price, task)["NDCG"].between(0, 1).all()
    with pytest.raises(ValueError, match="positive"):
        content.PriceMatch(catalogue["UnitPrice"] * 0).fit(task.train)
    with pytest.raises(TypeError, match="Series"):
        content.ContentRecommender(list(text)).fit(task.train)
    with pytest.raises(ValueError, match="duplicate"):
        content.ContentRecommender(pd.concat([text, text])).fit(task.train)


@pytest.fixture(scope="module")
def baskets(clean_shop, interactions):
    contexts = content.basket_contexts(clean_shop.transactions)
    start = interactions["timestamp"].max() - pd.Timedelta(days=45)
    return contexts, content.basket_task(interactions, contexts, start)


def test_basket_contexts_and_task(baskets, clean_shop, interactions):
    contexts, task = baskets
    assert set(content.CONTEXT_FEATURES) <= set(contexts.columns)
    assert contexts["weeks_to_christmas"].between(0, 13).all()
    christmas_eve = contexts["timestamp"].dt.strftime("%m-%d") == "12-24"
    assert (contexts.loc[christmas_eve, "weeks_to_christmas"] == 0).all()
    assert task.train["timestamp"].max() < task.baskets["timestamp"].min()
    assert task.baskets["user_id"].isin(set(task.train["user_id"])).all()
    first = task.baskets.iloc[0]
    assert first["new"] <= first["all"]
    with pytest.raises(ValueError, match="invoice"):
        content.basket_task(interactions.drop(columns="invoice"), contexts,
                            task.baskets["timestamp"].min())


def test_context_models_ignore_the_future(baskets, interactions):
    contexts, task = baskets
    start = task.baskets["timestamp"].min()
    later = interactions["timestamp"] >= start
    altered = interactions.copy()
    altered.loc[later, "item_id"] = altered.loc[later, "item_id"].sample(
        frac=1.0, random_state=1).to_numpy()
    again = content.basket_task(altered, contexts, start)
    pd.testing.assert_frame_equal(task.train, again.train)
    first = content.ContextPopularity().fit(task.train, task.contexts)
    second = content.ContextPopularity().fit(again.train, again.contexts)
    np.testing.assert_array_equal(first.score_baskets(task.baskets),
                                  second.score_baskets(task.baskets))


def test_context_popularity_reads_the_season(baskets):
    contexts, task = baskets
    model = content.ContextPopularity(("month",), alpha=5.0).fit(task.train, task.contexts)
    december = task.baskets.iloc[:1].assign(month=12)
    june = task.baskets.iloc[:1].assign(month=6)
    assert not np.allclose(model.score_baskets(december), model.score_baskets(june))
    result = content.evaluate_baskets(model, task, k=10)
    assert set(result) == {"all", "new"}
    assert len(content.per_customer(result["all"])) == result["all"]["user_id"].nunique()
    with pytest.raises(ValueError, match="context feature"):
        content.ContextPopularity(("colour",)).fit(task.train, task.contexts)


def test_context_two_tower_with_and_without_context(baskets):
    contexts, task = baskets
    scores = {}
    for features in ((), content.CONTEXT_FEATURES):
        runs = [content.ContextTwoTower(features, dim=8, epochs=2, batch_size=128,
                                        lines_per_epoch=4096, seed=1)
                .fit(task.train, task.contexts).score_baskets(task.baskets)
                for _ in range(2)]
        np.testing.assert_array_equal(runs[0], runs[1])
        scores[features] = runs[0]
    assert scores[()].shape == scores[content.CONTEXT_FEATURES].shape
    model = content.ContextTwoTower((), dim=8, epochs=3, batch_size=128, lines_per_epoch=4096,
                                    seed=1).fit(task.train, task.contexts, validation=task)
    assert 1 <= model.best_epoch_ <= 3
    popular = rec.Popularity().fit(task.train)
    assert content.evaluate_baskets(model, task)["all"]["NDCG"].mean() > \
        0.5 * content.evaluate_baskets(popular, task)["all"]["NDCG"].mean()
    stranger = task.baskets.iloc[:1].assign(user_id=-5)
    with pytest.raises(ValueError, match="unseen"):
        model.score_baskets(stranger)


def test_simulate_launches(interactions):
    start = interactions["timestamp"].quantile(0.8)
    launched = content.simulate_launches(interactions, [start], share=0.2, seed=0)
    task = content.cold_start_task(launched, start)
    assert len(task.candidates) > 0
    assert (launched["timestamp"] >= start).sum() == (interactions["timestamp"] >= start).sum()
    with pytest.raises(ValueError, match="share"):
        content.simulate_launches(interactions, [start], share=1.5)
