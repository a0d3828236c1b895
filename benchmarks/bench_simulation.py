"""Cost of the retention simulator of chapter 6.3: calibration, and one simulated year per
policy (time, the share spent refitting the policy, visits simulated per second, peak RSS).

Usage: python benchmarks/bench_simulation.py [--policies name,name,...] [--weeks N]

Each policy runs in its own process, so that "peak RSS" is that process's peak resident
memory (the world and TensorFlow included). CPU seconds are the process's user + system
time, which other work on the machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd  # noqa: E402

from companion import data  # noqa: E402
from companion.data import preprocessing  # noqa: E402
from companion.recsys import baselines as rec  # noqa: E402
from companion.recsys import deep  # noqa: E402
from companion.retention import simulation as sim  # noqa: E402

POLICIES = ("no recommendations", "random", "popularity", "repeat-buy", "item-kNN",
            "two-tower + repeat-buy")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _policy(name: str, world: sim.ShopWorld, transactions: pd.DataFrame, start: int):
    repeat_buy = functools.partial(rec.RepeatBuy, half_life_days=180)
    if name == "no recommendations":
        return sim.NoRecommendations()
    if name == "random":
        return sim.RandomSlates()
    if name == "popularity":
        return sim.RecommenderPolicy(name, functools.partial(rec.Popularity, window_days=14))
    if name == "repeat-buy":
        return sim.RecommenderPolicy(name, repeat_buy)
    if name == "item-kNN":
        return sim.RecommenderPolicy(name, functools.partial(rec.ItemKNN, neighbours=200,
                                                             shrinkage=20.0), incremental=True)
    history = world.history(start)
    model = deep.TwoTower(item_text=preprocessing.product_descriptions(transactions),
                          user_context=preprocessing.customer_countries(transactions),
                          half_life_days=30, epochs=3, seed=0,
                          spare_users=world.n_users - history["user_id"].nunique(),
                          spare_items=world.n_items - history["item_id"].nunique())
    tick = time.perf_counter()
    model.fit(history)
    print(f"  (two-tower initial fit: {time.perf_counter() - tick:.1f} s)", file=sys.stderr)
    return sim.RecommenderPolicy(name, None, incremental=True, initial=model,
                                 wrap=sim.BlendWith(repeat_buy, 0.5))


def run_one(world_path: str, name: str, weeks: int) -> dict:
    with open(world_path, "rb") as fh:
        world = pickle.load(fh)
    shop = data.load_shop("II", download=False)
    transactions = preprocessing.clean_transactions(shop.transactions).transactions
    start = world.week_of("2010-12-01")
    policy = _policy(name, world, transactions, start)
    cpu, wall = _cpu(), time.perf_counter()
    result = sim.simulate(world, policy, start=start, weeks=weeks, seed=0)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {"policy": name, "wall s": wall, "CPU s": cpu, "refit s": sum(result.fit_seconds),
            "visits": len(result.visits), "visits per s": len(result.visits) / wall,
            "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.weeks)))
        return
    shop = data.load_shop("II", download=False)
    interactions = preprocessing.to_interactions(
        preprocessing.clean_transactions(shop.transactions).transactions)
    cpu, wall = _cpu(), time.perf_counter()
    world = sim.calibrate(interactions)
    print(f"calibration: {time.perf_counter() - wall:.1f} s wall, {_cpu() - cpu:.1f} s CPU; "
          f"{world.n_users:,} customers, {world.n_items:,} products")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "world.pkl")
        with open(path, "wb") as fh:
            pickle.dump(world, fh)
        for name in args.policies.split(","):
            out = subprocess.run([sys.executable, __file__, "--weeks", str(args.weeks),
                                  "--child", path, name], capture_output=True, text=True,
                                 check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = pd.DataFrame(rows).set_index("policy")
    print(table.round({"wall s": 1, "CPU s": 1, "refit s": 1, "visits per s": 0,
                       "peak RSS MiB": 0}).to_string())


if __name__ == "__main__":
    main()
