"""The content and context studies of chapters 6.4 and 8, built on :mod:`.content`.

:func:`cold_study` compares content models on the products nobody has bought yet, and
tunes the hybrid of collaborative and text scores; :func:`context_study` asks whether a
basket's context (hour, weekday, season, country) helps to rank its products;
:func:`multimodal_study` is chapter 8's short rerun of the text-and-ids question. Each
chooses its settings on a validation window, then refits once before the test window.
They return plain data (numbers, per-customer frames), so that
:func:`companion.cache.memoise` can store them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from companion._checks import check_positive_int
from companion.data.preprocessing import Split
from companion.recsys import baselines as rec
from companion.recsys import content, ranking

#: the profile half-lives (days; None: no decay) tried by :func:`cold_study`
COLD_HALF_LIVES = (None, 30, 180)
#: the half-lives of the collaborative blend tried by :func:`cold_study`
BLEND_HALF_LIVES = (60, 180)
#: the numbers of text neighbours tried by :func:`cold_study`
TEXT_NEIGHBOURS = (10, 30)


def _check_parts(parts: object, kind: type, name: str) -> None:
    if not isinstance(parts, Mapping) or set(parts) != {"validation", "test"}:
        got = sorted(parts) if isinstance(parts, Mapping) else type(parts).__name__
        raise ValueError(f"{name} must map 'validation' and 'test' to a "
                         f"{kind.__name__}, got {got}.")
    for part, value in parts.items():
        if not isinstance(value, kind):
            raise TypeError(f"{name}[{part!r}] must be a {kind.__name__}, "
                            f"got {type(value).__name__}.")


def _check_task(task: object, name: str) -> None:
    if not isinstance(task, ranking.RankingTask):
        raise TypeError(f"{name} must be a RankingTask, got {type(task).__name__}.")


def collaborative_blend(train: pd.DataFrame, half_life: float) -> rec.Blend:
    """Chapter 5's repeat-buy and EASE blend (EASE at L2 400, weight 4), fitted on ``train``,
    with repeat purchases decayed by a ``half_life`` in days."""
    model = rec.Blend(rec.EASE(l2=400.0), weight=4.0, half_life_days=half_life)
    return model.fit(train)


def cold_study(cold: Mapping[str, content.ColdStartTask],
               catalogues: Mapping[str, pd.DataFrame], validation: ranking.RankingTask,
               test: ranking.RankingTask, *, weights: Sequence[float] = (0.0, 1.0, 1.1, 1.2,
                                                                          1.5),
               encoder_dim: int = 32, encoder_epochs: int = 4,
               pairs_per_epoch: int = 100_000, seed: int = 0) -> dict:
    """Chapter 6.4's cold-start study: content models on products nobody has bought yet.

    On the validation cold task it chooses the profile half-life of the TF-IDF content
    model (among :data:`COLD_HALF_LIVES`), the epochs of a :class:`.text.TextEncoder`
    (early stopping), the half-life of the collaborative blend (on chapter 5's
    ``validation`` task) and the number of text neighbours of the
    :class:`.recommenders.Hybrid`. Then it refits every model on all data before the test
    window and scores it once on the test cold task: random order, word popularity,
    price match, TF-IDF profile, learned encoder profile and collaborative via text
    neighbours. Last, the hybrid's weight on the text part is chosen per task among
    ``weights`` on ``validation`` and the hybrid is scored on ``test``.

    Parameters
    ----------
    cold
        ``{"validation": task, "test": task}``, :func:`.coldstart.cold_start_task` of each
        window.
    catalogues
        ``{"validation": frame, "test": frame}``, :func:`.catalogue.product_catalogue` of
        each window (``description`` and ``price`` of every product).
    validation, test
        Chapter 5's ranking tasks of the same windows, for the blend and the hybrid.
    weights
        The hybrid weights tried on ``validation``.
    encoder_dim, encoder_epochs, pairs_per_epoch
        Size, most epochs and co-purchase pairs per epoch of the text encoder.
    seed
        Seed of the text encoder and of the random order.

    Returns
    -------
    dict
        ``grid`` (validation NDCG@10 of each setting tried), ``blend`` (validation NDCG@10
        of each blend half-life), ``choice`` (the settings chosen), ``encoder history``,
        ``test`` (model -> per-customer metrics on the test cold task), ``encoder
        parameters`` and ``hybrid`` (``grid``, ``weights``, ``collaborative alone`` and
        ``test``: per-customer metrics of the hybrid on each task).
    """
    _check_parts(cold, content.ColdStartTask, "cold")
    if not isinstance(catalogues, Mapping) or set(catalogues) != set(cold):
        raise ValueError("catalogues must map 'validation' and 'test' to a product "
                         "catalogue.")
    _check_task(validation, "validation")
    _check_task(test, "test")
    weights = tuple(weights)
    if not weights:
        raise ValueError("weights must hold at least one hybrid weight.")
    check_positive_int(encoder_epochs, name="encoder_epochs")
    val, tst = cold["validation"], cold["test"]
    text = {p: catalogues[p]["description"] for p in cold}
    out = {"grid": {}}
    # content profile half-life, on the validation cold task
    for h in COLD_HALF_LIVES:
        model = content.ContentRecommender(text["validation"], half_life_days=h)
        out["grid"][f"TF-IDF, half-life {h}"] = content.evaluate_cold(
            model.fit(val.train), val)["NDCG"].mean()
    half = max(COLD_HALF_LIVES, key=lambda h: out["grid"][f"TF-IDF, half-life {h}"])

    def val_score(encoder):
        model = content.ContentRecommender(text["validation"], encoder, half)
        return content.evaluate_cold(model.fit(val.train), val)["NDCG"].mean()

    encoder = dict(dim=encoder_dim, pairs="customer", learning_rate=1e-3,
                   pairs_per_epoch=pairs_per_epoch, seed=seed)
    tuned = content.TextEncoder(epochs=encoder_epochs, patience=1, **encoder).fit(
        text["validation"], val.train, validation=val_score)
    # the blend for the collaborative part, on chapter 5's validation task
    blends = {h: collaborative_blend(validation.train, h) for h in BLEND_HALF_LIVES}
    out["blend"] = {h: ranking.evaluate(b, validation, tasks=("all",))["all"][
        "NDCG"].mean() for h, b in blends.items()}
    blend_half = max(out["blend"], key=out["blend"].get)
    tfidf_val = content.ContentRecommender(text["validation"], half_life_days=half)
    tfidf_val.fit(val.train)
    for k in TEXT_NEIGHBOURS:
        hybrid = content.Hybrid(blends[blend_half], tfidf_val, neighbours=k)
        out["grid"][f"text neighbours {k}"] = content.evaluate_cold(
            hybrid.fit(val.train), val)["NDCG"].mean()
    neighbours = max(TEXT_NEIGHBOURS, key=lambda k: out["grid"][f"text neighbours {k}"])
    out["choice"] = {"half-life": half, "encoder epochs": tuned.best_epoch_,
                     "blend half-life": blend_half, "neighbours": neighbours}
    out["encoder history"] = pd.DataFrame(tuned.history_)
    # test: refit on everything before the test window, score once
    collab = collaborative_blend(tst.train, blend_half)
    tfidf = content.ContentRecommender(text["test"], half_life_days=half).fit(tst.train)
    learned = content.TextEncoder(epochs=tuned.best_epoch_, **encoder)
    models = {
        "word popularity": content.WordPopularity(text["test"]),
        "price match": content.PriceMatch(catalogues["test"]["price"]),
        "TF-IDF profile": tfidf,
        "learned encoder profile": content.ContentRecommender(text["test"], learned,
                                                              half),
        "collaborative via text neighbours": content.Hybrid(collab, tfidf,
                                                             neighbours=neighbours),
    }
    out["test"] = {"random": content.random_cold(tst, seed=seed)}
    for name, model in models.items():
        out["test"][name] = content.evaluate_cold(model.fit(tst.train), tst)
    out["encoder parameters"] = models["learned encoder profile"].encoder_.n_parameters()
    # the hybrid of the next section: its weight on validation, then one test run
    grid = {}
    for w in weights:
        model = content.Hybrid(blends[blend_half], tfidf_val, weight=w,
                               neighbours=neighbours)
        result = ranking.evaluate(model.fit(validation.train), validation)
        grid[w] = {task: frame["NDCG"].mean() for task, frame in result.items()}
    grid = pd.DataFrame(grid).T
    chosen = {task: float(grid[task].idxmax()) for task in ("all", "new")}
    out["hybrid"] = {"grid": grid, "weights": chosen,
                     "collaborative alone": ranking.evaluate(collab, test), "test": {}}
    for task, w in chosen.items():
        model = content.Hybrid(collab, tfidf, weight=w, neighbours=neighbours)
        out["hybrid"]["test"].update(ranking.evaluate(model.fit(test.train), test,
                                                      tasks=(task,)))
    return out


def context_study(baskets: Mapping[str, content.BasketTask],
                  context_sets: Mapping[str, Sequence[str]], *, epochs: int = 6,
                  seed: int = 0) -> dict:
    """Chapter 6.4's context study: does a basket's context help to rank its products?

    On the validation baskets it chooses the context set of
    :class:`.context.ContextPopularity` among ``context_sets``, and the epochs of the
    :class:`.context.ContextTwoTower` with and without the five context features (early
    stopping, at most ``epochs``). Every model is then refitted on all data before the
    test window and scored on its baskets, beside popularity, recent popularity (14 days)
    and repeat-buy (half-life 180 days).

    Parameters
    ----------
    baskets
        ``{"validation": task, "test": task}``, :func:`.context.basket_task` of each
        window.
    context_sets
        Name -> the context features of one :class:`.context.ContextPopularity`.
    epochs
        The most epochs of the two-tower models on validation.
    seed
        Seed of the two-tower models.

    Returns
    -------
    dict
        ``grid`` (context set -> validation NDCG@10 per task), ``context set`` (the one
        chosen), ``curves`` and ``epochs`` (the two-tower models' validation histories and
        chosen epochs) and ``test`` (model -> task -> per-basket metrics).
    """
    _check_parts(baskets, content.BasketTask, "baskets")
    if not isinstance(context_sets, Mapping) or not context_sets:
        raise ValueError("context_sets must map at least one name to context features.")
    check_positive_int(epochs, name="epochs")
    val, tst = baskets["validation"], baskets["test"]
    out = {"grid": {}, "curves": {}, "epochs": {}, "test": {}}
    for name, feats in context_sets.items():
        model = content.ContextPopularity(feats).fit(val.train, val.contexts)
        out["grid"][name] = {task: f["NDCG"].mean()
                             for task, f in content.evaluate_baskets(model, val).items()}
    best = max(out["grid"], key=lambda n: np.mean(list(out["grid"][n].values())))
    out["context set"] = best
    variants = {"two-tower without context": (),
                "two-tower with context": content.CONTEXT_FEATURES}
    for name, feats in variants.items():
        model = content.ContextTwoTower(feats, epochs=epochs, patience=1, seed=seed)
        model.fit(val.train, val.contexts, validation=val)
        out["curves"][name] = pd.DataFrame(model.history_)
        out["epochs"][name] = model.best_epoch_
    models = {
        "popularity": rec.Popularity().fit(tst.train),
        "recent popularity (14 days)": rec.Popularity(window_days=14).fit(tst.train),
        "repeat-buy": rec.RepeatBuy(half_life_days=180).fit(tst.train),
        f"context-only popularity ({best})": content.ContextPopularity(
            context_sets[best]).fit(tst.train, tst.contexts),
    }
    for name, feats in variants.items():
        models[name] = content.ContextTwoTower(
            feats, epochs=out["epochs"][name], seed=seed).fit(tst.train, tst.contexts)
    for name, model in models.items():
        out["test"][name] = content.evaluate_baskets(model, tst)
    return out


def multimodal_study(interactions: pd.DataFrame, transactions: pd.DataFrame, split: Split,
                     *, seed: int = 0) -> dict:
    """Chapter 8's multi-modal summary: text and ids against ids alone.

    *Ids alone* is item-based neighbours; *text and ids* is a :class:`.recommenders.Hybrid` of
    those neighbours and TF-IDF of the descriptions, with weight 1. Both are scored on the
    test window of ``split``: on chapter 5's *new* task over the whole catalogue, and on
    the cold-start task of the products first sold in the window, where ids alone amount
    to a random order.

    Parameters
    ----------
    interactions
        The interactions ``split`` was made from (their last time stamp ends the window).
    transactions
        Cleaned transaction lines of the same period, for the product descriptions.
    split
        Train / validation / test split of ``interactions``; its test window is used.
    seed
        Seed of the random order.

    Returns
    -------
    dict
        ``{"new": {"ids": ndcg, "text + ids": ndcg}, "cold": {...}}``: per-customer
        NDCG@10 of each model on each task.
    """
    if not isinstance(split, Split):
        raise TypeError(f"split must be a Split, got {type(split).__name__}.")
    if split.test.empty:
        raise ValueError("split.test is empty: there is no test window to score.")
    test = ranking.RankingTask.from_time_split(split, "test")
    end = interactions["timestamp"].max() + pd.Timedelta(seconds=1)
    start = split.test["timestamp"].min().normalize()
    text = content.product_catalogue(transactions, start, end)["description"]
    cold = content.cold_start_task(interactions, start)

    def hybrid(train):
        ids = rec.ItemKNN().fit(train)
        both = content.Hybrid(ids, content.ContentRecommender(text), weight=1.0)
        return ids, both.fit(train)

    def ndcg(model, name):
        return ranking.evaluate(model, test, tasks=(name,))[name]["NDCG"]

    ids, both = hybrid(test.train)
    _, both_cold = hybrid(cold.train)
    return {"new": {"ids": ndcg(ids, "new"), "text + ids": ndcg(both, "new")},
            "cold": {"ids": content.random_cold(cold, seed=seed)["NDCG"],
                     "text + ids": content.evaluate_cold(both_cold, cold)["NDCG"]}}
