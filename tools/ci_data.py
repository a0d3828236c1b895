"""Fetch the book's UCI data for a CI run and say which data the run will use.

``python tools/ci_data.py [--require-real] [--no-download]``

For each file of :data:`companion.data.DATASETS` it looks where the companion looks
(``COMPANION_DATA_DIR``, then the user cache), downloads UCI's archive into the cache when
the file is missing (unless ``--no-download``), and verifies it (schema, row count, column
totals). It prints a Markdown table of what was found, and appends it to the file named by
``GITHUB_STEP_SUMMARY`` when that is set, so that a GitHub Actions run says on its summary
page whether its numbers come from the real data or from the synthetic shop. Under
``GITHUB_OUTPUT`` it sets the step output ``real`` to ``true`` or ``false``.

What a missing file means for the book: without the two Online Retail files,
``data.load_shop`` falls back to the seeded synthetic shop and every page that uses it says
so; the Online Shoppers file has no synthetic stand-in, so the chapters that read it fail.
A missing file is reported as a GitHub warning and the exit status is 0, unless
``--require-real`` is given (the book's deployment uses it): then it is an error, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from companion import data

#: What each data set's absence costs the book.
FALLBACK = {
    "online_retail": "the chapters use the synthetic shop (data.load_shop)",
    "online_retail_II_2009_2010": "the chapters use the synthetic shop (data.load_shop)",
    "online_shoppers": "no synthetic stand-in: chapters that read it fail",
}


@dataclass(frozen=True)
class Found:
    """One data set: its file name, where it was found (None if not) and why not."""

    key: str
    filename: str
    path: str | None
    problem: str | None = None

    @property
    def real(self) -> bool:
        return self.path is not None and self.problem is None


def check(key: str, *, download: bool = True) -> Found:
    """Locate (and if allowed download) data set ``key`` and verify its contents."""
    spec = data.DATASETS[key]
    try:
        path = data.locate(key, download=download)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        data.verify_frame(frame, spec, source=str(path))
    except (OSError, ValueError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Found(key, spec.filename, None, problem)
    return Found(key, spec.filename, str(path))


def summary(found: Sequence[Found]) -> str:
    """A Markdown report: one row per data set, and a line saying which data the run uses."""
    rows = ["| file | data | where, or what went wrong |", "|---|---|---|"]
    for item in found:
        if item.real:
            rows.append(f"| `{item.filename}` | real (UCI) | `{item.path}` |")
        else:
            problem = str(item.problem).replace("|", "\\|")
            rows.append(f"| `{item.filename}` | missing: {FALLBACK[item.key]} | {problem} |")
    shop = [item for item in found if item.key.startswith("online_retail")]
    if all(item.real for item in found):
        verdict = "This run uses the real UCI data (CC BY 4.0)."
    elif all(item.real for item in shop):
        verdict = "The shop is the real Online Retail data, but a UCI file is missing."
    else:
        verdict = ("**The chapters run on the SYNTHETIC shop**: the real Online Retail data "
                   "could not be had.")
    return "\n".join(["### Data", "", verdict, "", *rows, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-real", action="store_true",
                        help="exit with status 1 unless every UCI file is found and valid")
    parser.add_argument("--no-download", action="store_true",
                        help="look in COMPANION_DATA_DIR and the cache only")
    args = parser.parse_args(argv)
    found = [check(key, download=not args.no_download) for key in data.DATASETS]
    report = summary(found)
    print(report)
    real = all(item.real for item in found)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as out:
            out.write(report + "\n")
    if os.environ.get("GITHUB_OUTPUT"):  # the step's output `real`, read by later steps
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
            out.write(f"real={str(real).lower()}\n")
    level = "error" if args.require_real else "warning"
    for item in found:
        if not item.real:
            # a workflow command: GitHub shows it as an annotation on the run
            print(f"::{level}::{item.filename}: {item.problem}; {FALLBACK[item.key]}")
    return 1 if args.require_real and not real else 0


if __name__ == "__main__":
    sys.exit(main())
