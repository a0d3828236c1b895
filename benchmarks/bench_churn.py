"""Fit and predict time of every churn model of chapter 6 on the real (or synthetic) shop.

Usage: python benchmarks/bench_churn.py [--cutoff 2011-09-01]

The model is trained at ``cutoff - 90 days`` and predicts every active customer at
``cutoff``. Peak RSS is the whole process's (data loading included), read after each model.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd  # noqa: E402

from companion import churn, data, metrics, preprocessing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cutoff", default="2011-09-01")
    args = parser.parse_args()
    shop = data.load_shop(version="II")
    clean = preprocessing.clean_transactions(shop.transactions)
    inter = preprocessing.to_interactions(clean.transactions)
    cut = pd.Timestamp(args.cutoff)
    start = time.perf_counter()
    train = churn.churn_dataset(inter, cut - pd.Timedelta(days=90), returns=clean.returns)
    test = churn.churn_dataset(inter, cut, returns=clean.returns)
    print(f"data: {shop.source}; datasets built in {time.perf_counter() - start:.2f} s; "
          f"{len(train)} training and {len(test)} test customers")
    rows = []
    for model in (churn.RecencyRule(), churn.LogisticRFM(), churn.GradientBoosting(),
                  churn.SequenceChurn()):
        t0 = time.perf_counter()
        model.fit(train)
        t1 = time.perf_counter()
        proba = model.predict_proba(test)
        t2 = time.perf_counter()
        rows.append({"model": type(model).__name__, "fit s": round(t1 - t0, 2),
                     "predict s": round(t2 - t1, 3),
                     "ROC-AUC": round(metrics.roc_auc(test.labels.to_numpy(), proba), 4),
                     "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
