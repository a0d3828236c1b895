"""Wall time of every command of ``python -m companion`` on an export of realistic size.

Usage: python benchmarks/bench_cli_exports.py [--version II] [--folder DIR] [--repeat 1]

The real Online Retail II data (the synthetic shop when it is absent) is written twice:

* ``uci.csv``: as the UCI files have it (numeric customer ids, times without an offset,
  returns as ``C`` invoices, comma-separated UTF-8);
* ``export.csv``: as another platform would export the same orders: its own column names,
  customers by e-mail address, ISO 8601 times with the UTC offset of London (+00:00 in
  winter, +01:00 in summer), refunds as negative quantities on ordinary order numbers,
  semicolons and decimal commas, Windows-1252.

Each command (``validate``, ``report``, ``recommend``, ``churn``) runs as a fresh process
on both files, ``--repeat`` times, and the table gives the fastest wall time and the CPU
time (user + system) of that run, start-up and imports included; on a shared machine the
CPU time is the steadier of the two. ``--compare DIR`` also runs the commands on
``uci.csv`` with the companion of another checkout (``PYTHONPATH=DIR``), e.g. before a
change. The churn scores of the two files are checked equal customer by customer,
through the e-mail mapping.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from companion import data

MAPPING = ("invoice=order_id,stock_code=sku,description=product_name,quantity=qty,"
           "invoice_date=created_at,price=unit_price,customer_id=customer_email,"
           "country=country")


def as_platform_export(raw: pd.DataFrame) -> pd.DataFrame:
    """Online Retail II lines as another platform exports them (see the module docstring)."""
    local = raw["InvoiceDate"].dt.tz_localize("Europe/London", ambiguous=False,
                                              nonexistent="shift_forward")
    invoice = raw["Invoice"].astype("string")
    email = raw["Customer ID"].map(lambda v: pd.NA if pd.isna(v) else
                                   f"customer.{int(v)}@example.com")
    return pd.DataFrame({
        "order_id": invoice.str.removeprefix("C"),
        "sku": raw["StockCode"],
        "product_name": raw["Description"],
        "qty": raw["Quantity"],
        "created_at": local.map(lambda t: t.isoformat()),
        "unit_price": raw["Price"],
        "customer_email": email,
        "country": raw["Country"],
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=("I", "II"), default="II")
    parser.add_argument("--folder", default=None, help="where to write the files "
                        "(default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--compare", default=None, metavar="DIR",
                        help="also time uci.csv with the companion found in DIR")
    args = parser.parse_args()
    shop = data.load_shop(version=args.version, download=False)
    raw = shop.transactions
    if "InvoiceNo" in raw.columns:
        raw = raw.rename(columns=data.I_TO_II)
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_cli_"))
    uci, export = folder / "uci.csv", folder / "export.csv"
    raw.to_csv(uci, index=False)
    as_platform_export(raw).to_csv(export, index=False, sep=";", decimal=",",
                                   encoding="cp1252", errors="replace")
    print(f"data: {shop.source}; {len(raw):,} lines; uci.csv {uci.stat().st_size / 1e6:.1f} "
          f"MB, export.csv {export.stat().st_size / 1e6:.1f} MB, in {folder}")
    options = {
        "uci.csv": [str(uci)],
        "export.csv": [str(export), "--columns", MAPPING, "--returns", "negative-quantity"],
    }
    outputs = {"report": ["-o", "report.md"], "recommend": ["-o", "top10.csv"],
               "churn": ["-o", "churn.csv"], "validate": []}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = {name: (argv, env) for name, argv in options.items()}
    if args.compare:
        runs[f"uci.csv ({Path(args.compare).name})"] = (
            options["uci.csv"], {**env, "PYTHONPATH": str(Path(args.compare).resolve())})
    rows = []
    for command, out in outputs.items():
        row = {"command": command}
        for name, (argv, run_env) in runs.items():
            stem = name.replace(" ", "_").replace("(", "").replace(")", "")
            target = [out[0], str(folder / f"{stem}.{out[1]}")] if out else []
            best = (float("inf"), float("inf"))
            for _ in range(args.repeat):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "companion", command, *argv,
                                       *target, "--no-progress"], capture_output=True,
                                      text=True, env=run_env)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                if done.returncode != 0:
                    raise SystemExit(f"{command} on {name} failed: {done.stderr.strip()}")
                best = min(best, (wall, cpu))
            row[f"{name} wall (s)"], row[f"{name} CPU (s)"] = best
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.2f"))
    plain = pd.read_csv(folder / "uci.csv.churn.csv")
    mailed = pd.read_csv(folder / "export.csv.churn.csv")
    plain["customer_id"] = [f"customer.{v}@example.com" for v in plain["customer_id"]]
    joined = plain.merge(mailed, on="customer_id", suffixes=("_uci", "_export"))
    assert len(joined) == len(plain) == len(mailed), (len(joined), len(plain), len(mailed))
    gap = float(np.max(np.abs(joined["p_churn_uci"] - joined["p_churn_export"])))
    print(f"churn scores of {len(joined):,} customers, uci.csv against export.csv: largest "
          f"difference {gap:.2g} (times in UTC shift by up to an hour)")


if __name__ == "__main__":
    main()
