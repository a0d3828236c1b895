"""Mutation score of the code whose errors would silently change the book's numbers.

Usage: nice -n 15 python benchmarks/mutation_score.py [--module NAME ...] [--report]
                                                     [--survivors] [--max-children N]

mutmut (settings in ``[tool.mutmut]`` of pyproject.toml) copies ``companion/`` to
``mutants/``, makes every small change it knows to each function (``<`` for ``<=``, ``+ 1``
for ``+``, a dropped argument, a changed constant...) and runs the tests against each of these
*mutants*. A mutant is *killed* when a test fails, and *survives* when every test still passes:
then the tests would not notice that error. Only the functions of :data:`SCOPE` are run:
metrics, the ranking evaluation protocol, evaluation, the splits, the churn labels and
features, the simulator's churn measure and the off-policy estimators. A first pass records
which tests execute each function; each mutant is then run against those tests only
(from the test files named in ``pytest_add_cli_args_test_selection``), fastest first,
stopping at the first failure.

The table gives, per module, the mutants, how many were killed (a test failed or, counted
apart as ``timeout``, ran out of time), how many survived, how many no test executed, and the
score: killed and timed-out over all mutants. ``--survivors`` lists the surviving mutants
(``mutmut show NAME`` prints one's change). A full run removes ``mutants/`` first; with
``--module`` only those modules are rerun and the others' last results are kept. ``--report``
prints the table of the last run without running anything.

The whole run takes about an hour on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

#: module -> functions mutated (``None``: every function; ``Class.method`` for methods)
SCOPE: dict[str, list[str] | None] = {
    "foundations.metrics": None,
    "recsys.ranking": None,
    "foundations.evaluation": None,
    "data.preprocessing": ["stratified_split", "split_by_time", "leave_last_basket_out",
                           "check_no_future_leakage"],
    "retention.churn": ["inter_purchase_days", "_check_window", "active_customers",
                        "churn_labels", "churn_features", "_return_features",
                        "activity_sequences", "ChurnData.select", "churn_dataset",
                        "training_cutoffs", "stack_churn_data", "stacked_churn_dataset",
                        "pool_sequences"],
    "retention.simulation.measures": ["churn_rate"],
    "apps.bandits": ["replay", "_target", "ips", "snips", "replay_fixed", "effective_sample_size"],
}

#: mutmut's exit codes of a mutant's test run, grouped as the table reports them
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          24: "timeout", -24: "timeout", 36: "timeout", 152: "timeout", 255: "timeout",
          None: "not run"}
COLUMNS = ["killed", "timeout", "survived", "no tests", "other", "not run"]


def _key(function: str) -> str:
    """mutmut's name of a function (``x_name``) or method (``xǁClassǁname``)."""
    if "." in function:
        cls, name = function.split(".")
        return f"x\u01c1{cls}\u01c1{name}"
    return f"x_{function}"


def patterns(modules) -> list[str]:
    """Glob patterns of the mutant names of ``modules`` (as ``mutmut run`` accepts them)."""
    out = []
    for module in modules:
        functions = SCOPE[module]
        if functions is None:
            out.append(f"companion.{module}.*")
        else:
            out += [f"companion.{module}.{_key(f)}__mutmut_*" for f in functions]
    return out


def _in_scope(module: str, name: str) -> bool:
    functions = SCOPE[module]
    key = name.split(".", 2)[2].rsplit("__mutmut_", 1)[0]
    return functions is None or key in {_key(f) for f in functions}


def results(module: str) -> dict[str, str]:
    """Status of each in-scope mutant of ``module`` from the last run (empty if none)."""
    meta = ROOT / "mutants" / "companion" / f"{module.replace('.', '/')}.py.meta"
    if not meta.is_file():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "other") for name, code in codes.items()
            if _in_scope(module, name)}


def score_table(modules) -> pd.DataFrame:
    """One row per module: mutants, the count of each status and the score."""
    rows = {}
    for module in modules:
        status = pd.Series(results(module), dtype=object)
        counts = status.value_counts().reindex(COLUMNS, fill_value=0)
        rows[module] = {"mutants": len(status), **counts.to_dict()}
    table = pd.DataFrame(rows).T.astype(int)
    table.loc["total"] = table.sum()
    run = table["mutants"] - table["not run"]
    table["score"] = ((table["killed"] + table["timeout"]) / run.where(run > 0)).round(3)
    return table.loc[:, (table != 0).any() | (table.columns == "survived")]


def run(modules, max_children: int, fresh: bool) -> None:
    if shutil.which("mutmut") is None:
        sys.exit("mutmut is not installed: pip install -e '.[test]'")
    if fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    env = dict(os.environ)
    # the tests must import the mutated copy in mutants/, never this checkout
    env.pop("PYTHONPATH", None)
    cmd = ["mutmut", "run", "--max-children", str(max_children), *patterns(modules)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {done.returncode}: {' '.join(cmd)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", nargs="+", choices=list(SCOPE),
                        help="rerun only these modules (default: all, from scratch)")
    parser.add_argument("--report", action="store_true",
                        help="print the last run's table without running mutmut")
    parser.add_argument("--survivors", action="store_true",
                        help="also list the surviving mutants")
    parser.add_argument("--max-children", type=int, default=1,
                        help="mutants tested in parallel (default 1)")
    args = parser.parse_args()
    if not args.report:
        run(args.module or list(SCOPE), args.max_children, fresh=args.module is None)
    with pd.option_context("display.width", 120):
        print(score_table(list(SCOPE)).to_string())
    if args.survivors:
        for module in args.module or SCOPE:
            status = results(module)
            names = sorted((n for n, s in status.items() if s in ("survived", "no tests", "other")),
                           key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1])))
            for name in names:
                print(f"{status[name]:9s} {name}")


if __name__ == "__main__":
    main()
