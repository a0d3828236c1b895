"""Validation search for the two-tower model's recency half-life (chapter 5).

Usage: python benchmarks/tune_recency.py [--half-lives none,14,30,60,180]

Trains the chapter's two-tower model on the training part with early stopping on the
validation window, once per half-life (seed 0), and prints validation NDCG@10 on both
tasks and of the blend with recent popularity on *new*. The test window is not read.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep, experiments, ranking  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--half-lives", default="none,14,30,60,180")
    args = parser.parse_args()
    shop = data.load_shop(version="II")
    tx = preprocessing.clean_transactions(shop.transactions).transactions
    split = experiments.last_days_split(preprocessing.to_interactions(tx), window_days=30)
    validation = ranking.RankingTask.from_time_split(split, "validation")
    text = preprocessing.product_descriptions(tx)
    countries = preprocessing.customer_countries(tx)
    recent = rec.Popularity(window_days=14).fit(validation.train)
    rows = []
    for value in args.half_lives.split(","):
        half_life = None if value == "none" else float(value)
        start = time.perf_counter()
        model = deep.TwoTower(item_text=text, user_context=countries, epochs=6, patience=1,
                              half_life_days=half_life, seed=0)
        model.fit(validation.train, validation=split.validation)
        scores = ranking.evaluate(model, validation)
        blend = rec.Blend(model, weight=0.5, base=recent).fit(validation.train)
        rows.append({"half-life days": value, "epochs": model.best_epoch_,
                     "all": scores["all"]["NDCG"].mean(), "new": scores["new"]["NDCG"].mean(),
                     "blend new (w=0.5)": ranking.evaluate(blend, validation, tasks=("new",))[
                         "new"]["NDCG"].mean(),
                     "seconds": time.perf_counter() - start})
    print(f"data: {shop.source}; validation NDCG@10")
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
