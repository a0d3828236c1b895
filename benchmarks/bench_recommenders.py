"""Fit time, recommend time and peak memory of every recommender on the chapter-5 split.

Usage: python benchmarks/bench_recommenders.py [--epochs N] [--models name,name,...]

Recommend time is for the top 10 of every customer evaluated on the test window (the
"all" task), with seen items allowed. For the two-stage models (chapter 5.6) that includes
stage one (every generator scores the customers), the candidates' features and the
ranking; their fit trains the rankers for both tasks on the last 30 days before the test
window and refits the generators. Each model runs in its own process, so that "peak
RSS" is that process's peak resident memory (data loading included, TensorFlow's buffers
included) and "fit+recommend MiB" its growth during fit and recommend.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep, ranking, twostage  # noqa: E402


def models(epochs: int, desc: pd.Series, country: pd.Series) -> dict:
    return {
        "popularity": lambda: rec.Popularity(),
        "recent popularity": lambda: rec.Popularity(window_days=30),
        "repeat-buy": lambda: rec.RepeatBuy(half_life_days=60),
        "item-kNN": lambda: rec.ItemKNN(neighbours=200, shrinkage=20),
        "EASE": lambda: rec.EASE(l2=400),
        "TIFU-KNN": lambda: rec.TIFUKNN(neighbours=100, alpha=0.2, group_size=3),
        "UP-CF@r": lambda: rec.UPCF(recency=5, asymmetry=0.75, locality=10),
        "MF (BPR)": lambda: deep.MatrixFactorization(epochs=epochs),
        "NeuMF": lambda: deep.NeuMF(epochs=epochs),
        "two-tower": lambda: deep.TwoTower(item_text=desc, user_context=country, epochs=epochs,
                                           batch_size=2048),
        "SASRec": lambda: deep.SASRec(dim=32, blocks=1, max_len=30, negatives=100,
                                      batch_size=256, windows_per_user=3, epochs=epochs),
        "source LSTM": lambda: deep.SourceLSTM(epochs=epochs),
        "two-stage LightGBM": lambda: twostage.TwoStageRecommender(
            n={"all": 20, "new": 50}, horizon_days=30),
        "two-stage Keras": lambda: twostage.TwoStageRecommender(
            n={"all": 20, "new": 50}, horizon_days=30, ranker="keras"),
    }


def split_data():
    shop = data.load_shop("II", download=False)
    clean = preprocessing.clean_transactions(shop.transactions)
    interactions = preprocessing.to_interactions(clean.transactions)
    end = interactions["timestamp"].max().normalize() + pd.Timedelta(days=1)
    split = preprocessing.split_by_time(interactions, end - pd.Timedelta(days=30),
                                        validation_days=30)
    task = ranking.RankingTask.from_time_split(split, "test")
    desc = preprocessing.product_descriptions(clean.transactions)
    country = preprocessing.customer_countries(clean.transactions)
    return shop, task, desc, country


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(name: str, epochs: int) -> dict:
    shop, task, desc, country = split_data()
    users = task.users("all")
    factory = models(epochs, desc, country)[name]
    before = _rss_mib()
    start = time.perf_counter()
    model = factory().fit(task.train)
    fit_s = time.perf_counter() - start
    model.recommend(users[:10], k=10, exclude_seen=False)  # warm up
    start = time.perf_counter()
    model.recommend(users, k=10, exclude_seen=False)
    rec_s = time.perf_counter() - start
    return {"model": name, "fit s": round(fit_s, 2), "epochs": getattr(model, "epochs", None),
            f"recommend {len(users)} users, s": round(rec_s, 3),
            "peak RSS MiB": round(_rss_mib()), "fit+recommend MiB": round(_rss_mib() - before),
            "data": shop.source, "train rows": len(task.train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default="")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.epochs)))
        return
    wanted = [m for m in args.models.split(",") if m] or list(models(1, None, None))
    rows = []
    for name in wanted:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--epochs",
                              str(args.epochs)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\ndata: {table['data'].iloc[0]}; {table['train rows'].iloc[0]:,} training "
          f"interactions; Keras models trained for {args.epochs} epochs")
    print(table.drop(columns=["data", "train rows"]).to_string(index=False))


if __name__ == "__main__":
    main()
