"""Tests of companion.recsys.content_studies: the studies of chapters 6.4 and 8."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.recsys import content, content_studies, experiments, ranking


@pytest.fixture(scope="module")
def launched(interactions):
    """The synthetic shop with products launched in its validation and test windows."""
    split = experiments.last_days_split(interactions, window_days=30)
    starts = [split.validation["timestamp"].min().normalize(),
              split.test["timestamp"].min().normalize()]
    frame = content.simulate_launches(interactions, starts, share=0.1, seed=0)
    return frame, experiments.last_days_split(frame, window_days=30), starts


def test_collaborative_blend_is_chapter_fives_blend(interactions):
    model = content_studies.collaborative_blend(interactions, 60)
    assert model.half_life_days == 60 and model.weight == 4.0
    assert model.recommend(interactions["user_id"].unique()[:3], k=5).shape == (3, 5)


def test_cold_study_chooses_on_validation_and_scores_test_once(launched, clean_shop):
    frame, split, (val_start, test_start) = launched
    end = frame["timestamp"].max() + pd.Timedelta(seconds=1)
    lines = clean_shop.transactions
    cold = {"validation": content.cold_start_task(frame, val_start, test_start),
            "test": content.cold_start_task(frame, test_start)}
    catalogues = {"validation": content.product_catalogue(lines, val_start, test_start),
                  "test": content.product_catalogue(lines, test_start, end)}
    validation = ranking.RankingTask.from_time_split(split, "validation")
    test = ranking.RankingTask.from_time_split(split, "test")
    out = content_studies.cold_study(cold, catalogues, validation, test, weights=(0.0, 1.0),
                                     encoder_dim=4, encoder_epochs=1, pairs_per_epoch=512)
    choice = out["choice"]
    grid = out["grid"]
    assert choice["half-life"] == max(content_studies.COLD_HALF_LIVES,
                                      key=lambda h: grid[f"TF-IDF, half-life {h}"])
    assert choice["neighbours"] == max(content_studies.TEXT_NEIGHBOURS,
                                       key=lambda k: grid[f"text neighbours {k}"])
    assert choice["blend half-life"] == max(out["blend"], key=out["blend"].get)
    assert choice["encoder epochs"] == 1 and len(out["encoder history"]) == 1
    assert set(out["test"]) == {"random", "word popularity", "price match", "TF-IDF profile",
                                "learned encoder profile",
                                "collaborative via text neighbours"}
    for frame_ in out["test"].values():  # every model scored on the same customers
        assert frame_.index.equals(cold["test"].truth.index)
        assert frame_["NDCG"].between(0, 1).all()
    assert out["encoder parameters"] > 0
    hybrid = out["hybrid"]
    assert list(hybrid["grid"].index) == [0.0, 1.0]
    for task in ("all", "new"):
        assert hybrid["weights"][task] == hybrid["grid"][task].idxmax()
        assert hybrid["test"][task].index.equals(test.truth[task].index)
    with pytest.raises(ValueError, match="cold"):
        content_studies.cold_study({"test": cold["test"]}, catalogues, validation, test)
    with pytest.raises(TypeError, match="test"):
        content_studies.cold_study(cold, catalogues, validation, split.test)


def test_context_study_picks_the_best_context_set(clean_shop, interactions):
    contexts = content.basket_contexts(clean_shop.transactions)
    last = interactions["timestamp"].max().normalize()
    val_start, test_start = last - pd.Timedelta(days=60), last - pd.Timedelta(days=30)
    baskets = {"validation": content.basket_task(interactions, contexts, val_start,
                                                 test_start),
               "test": content.basket_task(interactions, contexts, test_start)}
    sets = {"none": (), "hour and weekday": ("hour", "weekday")}
    out = content_studies.context_study(baskets, sets, epochs=1)
    assert set(out["grid"]) == set(sets)
    means = {name: np.mean(list(v.values())) for name, v in out["grid"].items()}
    assert out["context set"] == max(means, key=means.get)
    assert out["epochs"] == {"two-tower without context": 1, "two-tower with context": 1}
    assert set(out["test"]) == {"popularity", "recent popularity (14 days)", "repeat-buy",
                                f"context-only popularity ({out['context set']})",
                                "two-tower without context", "two-tower with context"}
    n_baskets = len(baskets["test"].baskets)
    for frames in out["test"].values():
        assert len(frames["all"]) == n_baskets
    with pytest.raises(ValueError, match="context_sets"):
        content_studies.context_study(baskets, {})


def test_multimodal_study_scores_the_same_customers(launched, clean_shop):
    frame, split, (_, test_start) = launched
    out = content_studies.multimodal_study(frame, clean_shop.transactions, split, seed=1)
    cold = content.cold_start_task(frame, test_start)
    assert out["cold"]["ids"].index.equals(cold.truth.index)
    assert out["cold"]["text + ids"].index.equals(cold.truth.index)
    test = ranking.RankingTask.from_time_split(split, "test")
    assert out["new"]["ids"].index.equals(test.truth["new"].index)
    assert out["new"]["text + ids"].index.equals(out["new"]["ids"].index)
    # the random order's expected NDCG does not depend on the seed by much
    again = content_studies.multimodal_study(frame, clean_shop.transactions, split, seed=2)
    assert again["cold"]["ids"].mean() == pytest.approx(out["cold"]["ids"].mean(), abs=0.05)
    assert not again["cold"]["ids"].equals(out["cold"]["ids"])
    with pytest.raises(TypeError, match="Split"):
        content_studies.multimodal_study(frame, clean_shop.transactions, frame)
