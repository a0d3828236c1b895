"""The pandas path against the Spark path (local[2]) as the shop grows.

Usage: python benchmarks/bench_spark.py [--sizes 1 2 4 10] [--cores 2]

The real raw lines (Online Retail II, or the synthetic shop when the data are absent) are
replicated under new customer ids to 1x, 2x, ... the shop. For each size both paths read
the parquet file and run the same pipeline (cleaning, interactions, time split, churn
features and labels, popularity and repeat-buy with per-user NDCG@10). Prints one row per
size: wall and CPU seconds of each path, CPU microseconds per raw row, and whether both
paths gave the same results. Needs pyspark and a Java runtime (17+).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd

from companion import data
from companion.ops import spark as cs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 2, 4, 10])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--full-jit", action="store_true",
                        help="let the JVM use its optimising C2 compiler too")
    args = parser.parse_args()
    shop = data.load_shop("II", download=False)
    print(shop.note)
    start = time.perf_counter()
    with cs.spark_session("bench-spark", cores=args.cores, shuffle_partitions=2 * args.cores,
                          driver_memory=args.driver_memory,
                          quick_jit=not args.full_jit) as spark, \
            tempfile.TemporaryDirectory() as folder:
        print(f"Spark session started in {time.perf_counter() - start:.1f} s "
              f"(pyspark {spark.version}, {cs.java_version()})")
        table, _ = cs.time_pipelines(
            shop.transactions, args.sizes, spark, folder, progress=False,
            on_row=lambda row: print({k: round(v, 2) if isinstance(v, float) else v
                                      for k, v in row.items()}, flush=True))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(2).to_string(index=False))
    slope = {}
    for path in ("pandas", "Spark"):
        fit = pd.Series(table[f"{path} CPU s"].to_numpy(), index=table["raw rows"])
        if len(fit) > 1:  # marginal CPU cost per extra million raw rows
            slope[path] = (fit.iloc[-1] - fit.iloc[0]) / (fit.index[-1] - fit.index[0]) * 1e6
    if slope:
        print("marginal CPU s per million raw rows:",
              ", ".join(f"{k} {v:.1f}" for k, v in slope.items()))


if __name__ == "__main__":
    main()
