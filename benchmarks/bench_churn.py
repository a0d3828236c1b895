"""Fit and predict time of every churn model of chapter 6 on the real (or synthetic) shop.

Usage: python benchmarks/bench_churn.py [--cutoff 2011-09-01] [--variants]

Single-cutoff models are trained at ``cutoff - 90 days``; stacked models on every month start
from a year before ``cutoff`` to 90 days before it
(:func:`companion.retention.churn.training_cutoffs`);
BG/NBD is fitted on the purchases before ``cutoff`` itself (it needs no labels). All predict
every active customer at ``cutoff``. The ensemble is the equal-weight mean of the stacked
models' probabilities (its time is the sum of theirs). Peak RSS is the whole process's (data
loading included), read after each model.

``--cutoff 2011-03-01`` is the validation cutoff on which the stacked GRU's settings
(:data:`companion.retention.churn.STACKED_SEQUENCE_PARAMS`) and the ensemble were chosen: its labels
end before both test cutoffs of the chapter. ``--variants`` adds the weekly (unpooled) GRU
and the default-rate pooled GRU on the stacked data, the alternatives compared there.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.foundations import metrics  # noqa: E402
from companion.retention import churn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cutoff", default="2011-09-01")
    parser.add_argument("--variants", action="store_true",
                        help="also time the GRU variants compared on the validation cutoff")
    args = parser.parse_args()
    shop = data.load_shop(version="II")
    clean = preprocessing.clean_transactions(shop.transactions)
    inter = preprocessing.to_interactions(clean.transactions)
    cut = pd.Timestamp(args.cutoff)
    start = time.perf_counter()
    train = churn.churn_dataset(inter, cut - pd.Timedelta(days=90), returns=clean.returns)
    test = churn.churn_dataset(inter, cut, returns=clean.returns)
    t_single = time.perf_counter() - start
    start = time.perf_counter()
    cuts = churn.training_cutoffs(cut, 90)
    stacked = churn.stacked_churn_dataset(inter, cuts, 90, test_cutoff=cut, returns=clean.returns)
    t_stacked = time.perf_counter() - start
    print(f"data: {shop.source}; single-cutoff datasets built in {t_single:.2f} s "
          f"({len(train)} training and {len(test)} test customers); {len(cuts)} stacked "
          f"cutoffs ({cuts[0].date()} to {cuts[-1].date()}) built in {t_stacked:.2f} s "
          f"({len(stacked)} rows)")
    runs = [("single", churn.RecencyRule(), train), ("single", churn.LogisticRFM(), train),
            ("single", churn.GradientBoosting(), train), ("single", churn.SequenceChurn(), train),
            ("labels-free", churn.BetaGeoChurn(inter), stacked),
            ("stacked", churn.LogisticRFM(), stacked),
            ("stacked", churn.GradientBoosting(), stacked),
            ("stacked", churn.SequenceChurn(**churn.STACKED_SEQUENCE_PARAMS), stacked)]
    if args.variants:
        runs += [("stacked, weekly", churn.SequenceChurn(batch_size=512), stacked),
                 ("stacked, default rate", churn.SequenceChurn(pool=4, batch_size=512),
                  stacked)]
    y = test.labels.to_numpy()
    rows, members = [], {}
    for training, model, data_set in runs:
        t0 = time.perf_counter()
        model.fit(data_set)
        t1 = time.perf_counter()
        proba = model.predict_proba(test)
        t2 = time.perf_counter()
        name = type(model).__name__
        if training in ("labels-free", "stacked"):
            members[name] = (proba, t1 - t0, t2 - t1)
        rows.append({"model": name, "training": training, "fit s": round(t1 - t0, 2),
                     "predict s": round(t2 - t1, 3),
                     "ROC-AUC": round(metrics.roc_auc(y, proba), 4),
                     "Brier": round(metrics.brier_score(y, proba), 4),
                     "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})
    proba = churn.blend({k: v[0] for k, v in members.items()})
    rows.append({"model": "Ensemble", "training": "stacked + labels-free",
                 "fit s": round(sum(v[1] for v in members.values()), 2),
                 "predict s": round(sum(v[2] for v in members.values()), 3),
                 "ROC-AUC": round(metrics.roc_auc(y, proba), 4),
                 "Brier": round(metrics.brier_score(y, proba), 4),
                 "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    assert np.isfinite(table["ROC-AUC"]).all()


if __name__ == "__main__":
    main()
