"""``tools/check_asserts.py``: asserts in chapters that no executed code could make fail.

Each rule is shown catching its case and letting a real assert through, on small MyST
chapters written to a temporary folder; the last test runs the tool over the book.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import check_asserts

ROOT = Path(__file__).resolve().parents[1]

HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

"""


def chapter(tmp_path: Path, *cells: str, name: str = "ch.md") -> Path:
    """A MyST notebook with the given code cells, one paragraph between each."""
    parts = [HEADER]
    for cell in cells:
        parts.append("```{code-cell} ipython3\n" + textwrap.dedent(cell).strip("\n")
                     + "\n```\n\nSome prose.\n\n")
    path = tmp_path / name
    path.write_text("".join(parts), encoding="utf-8")
    return path


def flagged(tmp_path: Path, *cells: str) -> list[str]:
    return [f.source for f in check_asserts.check_chapter(chapter(tmp_path, *cells))]


IMPORTS = """\
import math

import numpy as np
import pandas as pd
from scipy.stats import norm

from companion.foundations import metrics
"""

CANNOT_FAIL = {
    "literal operands": "assert 2 + 2 == 4",
    "a bare constant": "assert True",
    "a name from literals": "limit = 0.5\nassert limit < 1",
    "transitive, the issue's example": "a = 3\nb = a * 2\nassert b > 5",
    "a name copied from a literal name": "a = 'x'\nb = a\nassert b == 'x'",
    "unpacking": "lo, hi = 1, 2\nassert lo < hi",
    "an f-string": "n = 3\ns = f'{n} rows'\nassert s.startswith('3')",
    "a string method of a literal": (
        "src = 'def deep(): pass'\nother = 'def wide(): pass'\n"
        "assert src.replace('deep', 'wide') == other"),
    "a pure builtin": "rows = [1, 2, 3]\nassert len(rows) == 3",
    "a comprehension over a literal table": (
        "table = [('a', 'ok'), ('b', 'bad')]\n"
        "n_bad = sum(1 for _, verdict in table if verdict == 'bad')\nassert n_bad == 1"),
    "a loop over a literal": "n = 0\nfor _ in range(3):\n    n += 1\nassert n == 3",
    "math and scipy.stats on literals": (
        "z = norm.ppf(0.975) + norm.ppf(0.8)\nn = math.ceil(z**2 / 0.01**2)\n"
        "assert n > 1000"),
    "a frame typed into the cell": (
        "books = pd.DataFrame([('A', 'correct'), ('B', 'wrong')],\n"
        "                     columns=['book', 'verdict']).set_index('book')\n"
        "n_wrong = int((books['verdict'] != 'correct').sum())\nassert n_wrong == 1"),
    "numpy on literals": "x = np.array([1.0, 2.0])\nassert np.log(x).max() < 1",
    "a function of the cell applied to literals": (
        "def halve(rate, factor):\n    rate /= factor\n    return rate\n\n\n"
        "rate = 1e-3\nfor _ in range(40):\n    rate = halve(rate, factor=2)\n"
        "assert rate < 1e-14"),
    "a lambda on literals": "double = lambda v: 2 * v\nassert double(3) == 6",
    "a method call with literal arguments": "rows = []\nrows.append(4)\nassert rows == [4]",
    "an item set to a literal": "d = {}\nd['k'] = 1\nassert d['k'] == 1",
    "an assert inside a function, on literals": (
        "def check():\n    limit = 3\n    assert limit > 2\n\n\ncheck()"),
}

CAN_FAIL = {
    "a call of the companion": "x = metrics.ndcg_at_k([1], [1], 1)\nassert x > 0.5",
    "the issue's passing example": "x = f(data)\nassert x > 5",
    "a name from another cell": "assert n_rows > 0",
    "a literal compared with a name from another cell": "limit = 3\nassert n_rows > limit",
    "a loop over data": "n = 0\nfor _ in rows_from_data:\n    n += 1\nassert n == 3",
    "a branch on data": "if shop.is_real:\n    k = 1\nelse:\n    k = 2\nassert k == 1",
    "an exception raised or not": (
        "try:\n    raw.fillna(raw.mean())\n    failed = False\nexcept TypeError:\n"
        "    failed = True\nassert failed"),
    "an import that may fail": (
        "try:\n    from sklearn.model_selection import compare_models\n    exists = True\n"
        "except ImportError:\n    exists = False\nassert not exists"),
    "a literal name changed by a method call": (
        "rows = []\nrows.append(measure(data))\nassert len(rows) == 1"),
    "a literal name with an item from data": "d = {}\nd['k'] = f(x)\nassert d['k'] > 0",
    "a method of a name from another cell": "table.round(4)\nassert table.max() < 1",
    "a file read": "t = pd.read_csv('orders.csv')\nassert len(t) > 0",
    "a random draw": "x = np.random.default_rng(0).normal(size=9)\nassert x.mean() < 1",
    "a function of the cell that calls the companion": (
        "def score(k):\n    return metrics.ndcg_at_k([1], [1], k)\n\n\nassert score(1) > 0"),
    "a comprehension over data": "k = sum(1 for r in rows if r > 0)\nassert k == 2",
    "a parameter inside a function": "def check(v):\n    assert v > 2\n\n\ncheck(f(x))",
}


@pytest.mark.parametrize("source", CANNOT_FAIL.values(), ids=CANNOT_FAIL.keys())
def test_flags_an_assert_that_cannot_fail(tmp_path, source):
    found = flagged(tmp_path, IMPORTS, source)
    assert len(found) == 1 and found[0].startswith("assert ")


@pytest.mark.parametrize("source", CAN_FAIL.values(), ids=CAN_FAIL.keys())
def test_passes_an_assert_executed_code_can_fail(tmp_path, source):
    assert flagged(tmp_path, IMPORTS, source) == []


def test_names_are_resolved_per_cell(tmp_path):
    """A name typed as a literal in one cell is a measured value in the next."""
    assert flagged(tmp_path, "n = 3", "assert n == 3") == []
    assert flagged(tmp_path, "n = load()", "n = 3\nassert n == 3") == ["assert n == 3"]


def test_reports_file_line_and_source(tmp_path, capsys):
    path = chapter(tmp_path, "x = f(data)\nassert x > 0",
                   "limit = 3\n\nassert limit > 2, 'never fails'")
    assert check_asserts.main([str(path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(out) == 1
    file, line, message = out[0].split(":", 2)
    assert file == str(path) and lines[int(line) - 1] == "assert limit > 2, 'never fails'"
    assert "assert limit > 2" in message


def test_skips_cell_options_and_magics(tmp_path):
    path = tmp_path / "opts.md"
    path.write_text(HEADER + "```{code-cell} ipython3\n:tags: [remove-cell]\n\n%matplotlib "
                    "inline\nlimit = 1\nassert limit == 1\n```\n", encoding="utf-8")
    (found,) = check_asserts.check_chapter(path)
    assert path.read_text(encoding="utf-8").splitlines()[found.line - 1] == found.source


def test_a_clean_chapter_exits_zero(tmp_path, capsys):
    assert check_asserts.main([str(chapter(tmp_path, "x = f(data)\nassert x > 0"))]) == 0
    assert capsys.readouterr().out == ""


def test_an_unclosed_cell_is_an_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "broken.md"
    path.write_text(HEADER + "```{code-cell} ipython3\nassert x\n", encoding="utf-8")
    assert check_asserts.main([str(path)]) == 1
    assert "broken.md" in capsys.readouterr().err


def test_a_cell_that_does_not_parse_is_an_error_naming_file_and_line(tmp_path, capsys):
    path = chapter(tmp_path, "x = (", name="syntax.md")
    assert check_asserts.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "syntax.md:" in err and "does not parse" in err


def test_the_book_has_no_assert_that_cannot_fail():
    done = subprocess.run([sys.executable, "tools/check_asserts.py"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
