"""Load test of the recommendation service with wrk, on 127.0.0.1 only, bounded in time.

Fits the service's default model (repeat-buy + item-kNN) on the data directory (or the
synthetic shop), saves it as an artifact and serves it from a subprocess on a free port
of 127.0.0.1, once per server variant:

* ``model call, h11 + asyncio``: ``--precompute 0``, every request calls the model (in a
  worker thread), with uvicorn's pure-Python HTTP parser and event loop;
* ``precomputed, h11 + asyncio``: top lists computed at load, answered from the event loop;
* ``precomputed``: the default, the same with httptools and uvloop (when installed);
* ``precomputed, N workers``: the same in ``--workers N`` processes;
* ``precomputed, no access log`` (``--variants no-log``): without the JSON access log.

For each variant wrk (Debian and Ubuntu: ``apt-get install wrk``) sends
``GET /recommend/{customer}?k=10`` for random known customers (seeded) over 1, 8 and 32
keep-alive connections for ``--seconds`` each, after a warm-up, and the table gives the
throughput, the latency percentiles p50, p95 and p99 that wrk records, the errors and
the server's CPU time per request (all its processes, from /proc), which shows what a
request costs even when other programs share the CPUs and blur the latencies. The same
``recommend`` is then timed in process, without HTTP. ``--history`` adds rows for
``POST /recommend`` with a basket of five products. ``--url`` measures a service that is
already running instead (127.0.0.1 only), for example an older version. ``--repeat``
runs each cell several times and reports the medians, which steadies the tail latencies
on a machine shared with other work.

    python benchmarks/bench_serving.py [--seconds 10] [--repeat 1] [--levels 1 8 32]
        [--workers 2] [--variants model-call h11 precomputed workers] [--history]
        [--url http://127.0.0.1:8000] [--two-tower]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from companion import data
from companion.data import preprocessing
from companion.ops import export, serving

#: server variants: name in the table and options of ``python -m companion.ops.serving``
VARIANTS = {
    "model-call": ("model call, h11 + asyncio", ["--precompute", "0", "--http", "h11",
                                                 "--loop", "asyncio"]),
    "h11": ("precomputed, h11 + asyncio", ["--http", "h11", "--loop", "asyncio"]),
    "precomputed": ("precomputed", []),
    "workers": ("precomputed, {n} workers", ["--workers", "{n}"]),
    "no-log": ("precomputed, no access log", ["--no-access-log"]),
}
DEFAULT_VARIANTS = ["model-call", "h11", "precomputed", "workers"]

LUA = r"""
local ids = {%(ids)s}
local baskets = {%(baskets)s}
local history = %(history)s
math.randomseed(%(seed)d)
request = function()
  if history then
    local body = '{"history": ' .. baskets[math.random(#baskets)] .. ', "k": 10}'
    return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", "/recommend/" .. ids[math.random(#ids)] .. "?k=10")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%.4f %%.4f %%.4f\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
"""


def timed(fn, arg, repeat: int) -> float:
    """Mean milliseconds per call of ``fn(arg)`` after one warm-up call."""
    fn(arg)
    start = time.perf_counter()
    for _ in range(repeat):
        fn(arg)
    return (time.perf_counter() - start) / repeat * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants alive now."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / tick
        todo.extend(children.get(current, []))
    return total


def wrk(url: str, script: Path, connections: int, seconds: float, server_pid: int | None
        ) -> dict:
    """One wrk run; returns throughput, latency percentiles (ms), errors, CPU ms/request."""
    threads = max(1, min(connections, os.cpu_count() or 1))
    before = cpu_seconds(server_pid) if server_pid else None
    load = os.getloadavg()[0]
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
                          "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    found = re.search(r"^RESULT (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)$", out.stdout, re.M)
    if found is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    n, errors, micros = (int(v) for v in found.groups()[:3])
    p50, p95, p99 = (float(v) for v in found.groups()[3:])
    row = {"requests/s": n / (micros / 1e6), "p50 ms": p50, "p95 ms": p95, "p99 ms": p99,
           "requests": n, "errors": errors, "load avg": load}
    if before is not None:
        row["server CPU ms/request"] = (cpu_seconds(server_pid) - before) / max(n, 1) * 1000
    return row


def lua_script(folder: Path, customers, baskets, history: bool, seed: int = 0) -> Path:
    path = folder / ("history.lua" if history else "get.lua")
    quoted = ",".join(f'"{c}"' for c in customers)
    bodies = ",".join("'[" + ",".join(f'"{i}"' for i in b) + "]'" for b in baskets)
    path.write_text(LUA % {"ids": quoted, "baskets": bodies, "seed": seed,
                           "history": "true" if history else "false"})
    return path


def check_local(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"--url must point at 127.0.0.1 (this machine), got {url}.")
    return url


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--repeat", type=int, default=1,
                        help="wrk runs per cell; the table gives their medians")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent connections")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        choices=list(VARIANTS))
    parser.add_argument("--workers", type=int, default=2, help="for the workers variant")
    parser.add_argument("--url", default=None,
                        help="measure this running service (127.0.0.1) instead")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic shop")
    parser.add_argument("--history", action="store_true",
                        help="also load POST /recommend with a basket of five products")
    parser.add_argument("--in-process-requests", type=int, default=2000)
    parser.add_argument("--two-tower", action="store_true", help="also time the scorers")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install wrk).", file=sys.stderr)
        return 2

    shop = data.load_shop(version="II", source="synthetic" if args.synthetic else "auto",
                          download=False)
    transactions = preprocessing.clean_transactions(shop.transactions).transactions
    interactions = preprocessing.to_interactions(transactions)
    rng = np.random.default_rng(0)
    customers = interactions["user_id"].unique()
    invoices = interactions.groupby("invoice")["item_id"].apply(list)
    invoices = invoices[invoices.str.len() >= 5]
    baskets = [list(invoices.iloc[i][:5]) for i in rng.choice(len(invoices), 500)]
    fast = [m for m in ("httptools", "uvloop") if importlib.util.find_spec(m) is not None]
    print(f"data: {'Online Retail II' if shop.is_real else 'synthetic shop'}, "
          f"{len(interactions):,} interactions, {len(customers):,} customers; installed: "
          f"{', '.join(fast) or 'neither httptools nor uvloop'}; {os.cpu_count()} CPUs",
          flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        get_lua = lua_script(tmp, customers, baskets, history=False)
        post_lua = lua_script(tmp, customers, baskets, history=True)
        scripts = [("GET", get_lua)] + ([("POST history", post_lua)] if args.history else [])
        model = serving.default_model().fit(interactions)
        path = export.save(model, tmp / "blend", data=interactions, name="blend")
        targets = ([("running service", None, check_local(args.url))] if args.url else
                   [(VARIANTS[v][0].format(n=args.workers),
                     [o.format(n=args.workers) for o in VARIANTS[v][1]], None)
                    for v in args.variants])
        for name, extra, url in targets:
            with (serving.serve_in_subprocess(path, options=extra, timeout=300)
                  if url is None else _running(url)) as base:
                pid = _server_pid(base)
                wrk(base, get_lua, 8, 2.0, None)  # warm-up
                for what, script in scripts:
                    for c in args.levels:
                        runs = pd.DataFrame([wrk(base, script, c, args.seconds, pid)
                                             for _ in range(args.repeat)])
                        rows[name, what, c] = runs.median().to_dict()
                        print(f"  {name}, {what}, {c} connections: "
                              f"{rows[name, what, c]['requests/s']:.0f} requests/s, p99 "
                              f"{rows[name, what, c]['p99 ms']:.1f} ms", flush=True)
        ids = [int(c) for c in customers]
        for name, precompute in (("in process, precomputed", serving.DEFAULT_PRECOMPUTE),
                                 ("in process, model call", 0)):
            service = serving.RecommendationService.from_artifact(path, precompute=precompute)
            result = serving.load_test(
                lambda s=service: lambda customer: s.recommend([customer], k=10), ids,
                concurrency=1, requests=args.in_process_requests, max_seconds=30)
            rows[name, "GET", 1] = {"requests/s": result["throughput"],
                                    "p50 ms": result["p50 ms"], "p95 ms": result["p95 ms"],
                                    "p99 ms": result["p99 ms"],
                                    "requests": result["requests"],
                                    "errors": result["failed"], "load avg": os.getloadavg()[0]}
    table = pd.DataFrame(rows).T
    table.index.names = ["server", "request", "connections"]
    table = table.astype(float).astype({"requests": int, "errors": int})
    print("\nGET /recommend/{customer}?k=10 (and POST /recommend with a history): wrk "
          "latency (ms), throughput (requests/s), server CPU per request (ms)")
    print(table.round(2).to_string())

    if args.two_tower:
        two_tower(transactions, interactions)
    return 1 if int(table["errors"].sum()) else 0


class _running:
    """A context manager that yields an already running service's URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        return None


def _server_pid(url: str) -> int | None:
    """The pid of the process listening on the URL's port (from /proc/net/tcp)."""
    port = urlsplit(url).port
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    owners = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    owners.append(int(entry.name))
                    break
        except OSError:
            continue
    return min(owners) if owners else None  # the parent of several workers comes first


def two_tower(transactions, interactions) -> None:
    """Time the two-tower scorers: NumPy on precomputed vectors, the Keras model, the
    SavedModel and TFLite, and the exact top-10 over the catalogue."""
    from companion.recsys import deep

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


if __name__ == "__main__":
    sys.exit(main())
