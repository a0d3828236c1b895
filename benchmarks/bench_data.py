"""Time and peak memory of the data layer on the real data (or the synthetic shop).

Usage: python benchmarks/bench_data.py
Prints one row per step: wall time in seconds and peak traced Python memory in MiB.
"""

from __future__ import annotations

import time
import tracemalloc

import pandas as pd

from companion import data
from companion.data import preprocessing
from companion.retention import behaviour


def measure(label: str, fn, rows: list[dict]):
    """Run ``fn`` twice: once timed, once under tracemalloc for its peak memory."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    frame = getattr(result, "transactions", result)
    rows.append({"step": label, "seconds": round(seconds, 2), "peak MiB": round(peak, 1),
                 "rows out": len(frame)})
    return result


def main() -> None:
    rows: list[dict] = []
    shop = measure("load_shop('II')", lambda: data.load_shop("II", download=False), rows)
    clean = measure("clean_transactions", lambda: preprocessing.clean_transactions(
        shop.transactions), rows)
    inter = measure("to_interactions", lambda: preprocessing.to_interactions(
        clean.transactions), rows)
    measure("split_by_time", lambda: preprocessing.split_by_time(
        inter, inter["timestamp"].quantile(0.8), validation_days=30).train, rows)
    measure("leave_last_basket_out", lambda: preprocessing.leave_last_basket_out(
        inter).train, rows)
    measure("cohort_retention", lambda: behaviour.cohort_retention(inter), rows)
    measure("synthetic_shop(400, 300)", lambda: data.synthetic_shop(400, 300), rows)
    print(f"data: {shop.source}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
