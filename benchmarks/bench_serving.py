"""Load test of the recommendation service (127.0.0.1 only), bounded in count and time.

Fits the service's default model (repeat-buy + item-kNN) on the data directory (or the
synthetic shop), saves it as an artifact, serves it from a subprocess on a free port of
127.0.0.1 and measures latency p50/p95/p99 and throughput at several concurrency levels,
over HTTP and in process (the same ``recommend`` without the web layer). With
``--two-tower`` it also times the two-tower scorers: NumPy on precomputed vectors, the
Keras model, the SavedModel and TFLite, and the exact top-10 over the catalogue.

    python benchmarks/bench_serving.py [--requests 1000] [--levels 1 4 16] [--two-tower]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from companion import data, export, preprocessing, serving


def timed(fn, arg, repeat: int) -> float:
    """Mean milliseconds per call of ``fn(arg)`` after one warm-up call."""
    fn(arg)
    start = time.perf_counter()
    for _ in range(repeat):
        fn(arg)
    return (time.perf_counter() - start) / repeat * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per level")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic shop")
    parser.add_argument("--two-tower", action="store_true", help="also time the scorers")
    args = parser.parse_args(argv)

    shop = data.load_shop(version="II", source="synthetic" if args.synthetic else "auto",
                          download=False)
    transactions = preprocessing.clean_transactions(shop.transactions).transactions
    interactions = preprocessing.to_interactions(transactions)
    print(f"data: {'Online Retail II' if shop.is_real else 'synthetic shop'}, "
          f"{len(interactions):,} interactions", flush=True)
    model = serving.default_model().fit(interactions)
    customers = [int(c) for c in interactions["user_id"].unique()]
    with tempfile.TemporaryDirectory() as tmp:
        path = export.save(model, Path(tmp) / "blend", data=interactions, name="blend")
        service = serving.RecommendationService.from_artifact(path)
        rows = {}
        with serving.serve_in_subprocess(path) as url:
            for c in args.levels:
                rows["HTTP", c] = serving.load_test(
                    lambda: serving.HttpRequester(url), customers, concurrency=c,
                    requests=args.requests, max_seconds=args.max_seconds)
        for c in args.levels:
            rows["in process", c] = serving.load_test(
                lambda: lambda customer: service.recommend([customer], k=10), customers,
                concurrency=c, requests=args.requests, max_seconds=args.max_seconds)
    table = pd.DataFrame(rows).T.drop(columns=["concurrency", "first failure"])
    table = table.astype(float).astype({"requests": int, "failed": int})
    table.index.names = ["path", "clients"]
    print("\nlatency of GET /recommend/{customer}?k=10 (ms) and throughput (requests/s)")
    print(table.round(2).to_string())
    failed = int(table["failed"].sum())

    if args.two_tower:
        from companion import deep

        text = preprocessing.product_descriptions(transactions)
        countries = preprocessing.customer_countries(transactions)
        tt = deep.TwoTower(dim=32, item_text=text, user_context=countries,
                           half_life_days=30, epochs=1, seed=0).fit(interactions)
        with tempfile.TemporaryDirectory() as tmp:
            art = export.export_serving(tt, Path(tmp) / "tt", data=interactions)
            saved = export.load(art).model
            lite = export.TFLiteScorer(export.to_tflite(art))
            keras_scorer = export.scorer_model(tt)
            u, v, ctx = tt.user_vectors_, tt.item_vectors_, tt.context_
            scorers = {"NumPy (vectors)": lambda x: u[x] @ v.T,
                       "Keras model call": lambda x: np.asarray(keras_scorer([x, ctx[x]])),
                       "SavedModel": saved._score,
                       "TFLite": lambda x: lite(x, ctx[x])}
            one, batch = np.array([5], np.int32), np.arange(256, dtype=np.int32)
            speed = pd.DataFrame({n: {"1 customer (ms)": timed(f, one, 200),
                                      "256 customers (ms)": timed(f, batch, 20)}
                                  for n, f in scorers.items()}).T
        scores = u[one] @ v.T
        print(f"\ntwo-tower scorers ({tt.n_items_} items)")
        print(speed.round(3).to_string())
        print(f"exact top-10 over {tt.n_items_} items: "
              f"{timed(lambda s: export.top_k(s, 10), scores, 1000):.4f} ms per customer")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
