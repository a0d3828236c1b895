"""Rules every rendered page of the book must pass, checked on its HTML.

The same rules read the built pages (``tools/check_book.py``, in ``make test``) and the
DOM that headless Chromium dumps after MathJax ran (``tools/check_render.py``). Only the
page's article is read, not the theme's navigation. A page fails on:

* **raw TeX or Markdown** in the text a reader sees: ``$$``, ``\\beta_``, ``\\text{``,
  ``{cite}``, ``{glue:``, ``**bold**`` (maths, code and signatures are left out);
* **NaN in a table** (``NaN``, ``<NA>``, ``NaT``, ``None``) or a **cut-off table** (a cell
  that is only ``...``), in the tables executed cells print;
* a **wide table**: more than :data:`MAX_COLUMNS` columns, index columns included;
* an **integer shown as a float**: a table column whose every value is a whole number
  written with a decimal point (``646582.0``, ``10.000000``);
* **output shows** a traceback, a warning, standard error, a memory address
  (``0x7f3a...``) or an absolute local path;
* a **figure without a caption** (an image not inside a captioned figure), or **alt text**
  that is a file name rather than a description;
* a **code line over 80** characters in a code cell or code block;
* a local **link does not resolve**: a missing file, or an anchor the target lacks.

Usage: ``python tools/page_rules.py [HTML_ROOT]`` (default ``_build/html``): checks the
pages of ``_toc.yml``, prints the problems, exit status 1 if there is any.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 80

RAW_TEX = [(re.compile(r"\$\$"), "raw TeX"),
           (re.compile(r"\\(?:text|mathrm|frac|sum|beta|alpha|gamma|lambda|theta|"
                       r"mathbb|operatorname|left|right)\b"), "raw TeX"),
           (re.compile(r"\\[A-Za-z]+[_{]"), "raw TeX"),
           (re.compile(r"\{(?:cite|glue|ref|numref|doc|eq)(?::[a-z]+)?\}`"),
            "raw Markdown"),
           (re.compile(r"\*\*[A-Za-z][^*]*\*\*"), "raw Markdown")]
MISSING_CELLS = {"NaN", "nan", "<NA>", "NaT", "None"}
#: the most columns (index columns included) a table may have before it overflows the
#: text column; a wider one is split, transposed or drawn as a figure
MAX_COLUMNS = 8
CUT_CELLS = {"...", "…"}
# how pandas writes a whole number stored as a float: "3.0", "646582.0", "10.000000"
# (companion.book.table_html shows whole-number columns as integers, and a float column
# to four significant digits, so "67.00" from 67.0012 is a float, not this defect)
FLOAT_INTEGER = re.compile(r"^-?\d{1,3}(?:,?\d{3})*\.(?:0|0{6})$")
OUTPUT_DEFECTS = [
    (re.compile(r"Traceback \(most recent call last\)"), "a traceback"),
    (re.compile(r"\b[A-Z][A-Za-z]*Warning\b"), "a warning"),
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "a memory address"),
    (re.compile(r"(?<![\w.~-])/(?:home|root|tmp|work|Users|usr|opt|var|mnt)/[\w.-]"),
     "an absolute local path"),
    (re.compile(r"site-packages|[A-Za-z]:\\\\"), "an absolute local path"),
]
SKIP_TEXT = ("script", "style", "pre", "code", "kbd", "mjx-container", "svg", "math")
SKIP_CLASSES = {"math", "highlight", "cell_input", "pre", "sig", "MathJax", "cell_output"}
IMAGE_NAME = re.compile(r"\.(?:png|svg|jpe?g|gif)$", re.I)


@dataclass(frozen=True)
class Problem:
    page: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.rule}: {self.detail}"


def article(soup: BeautifulSoup) -> Tag:
    return (soup.select_one("article.bd-article") or soup.select_one("main")
            or soup.body or soup)


def _skipped(node: NavigableString) -> bool:
    for parent in node.parents:
        if parent.name in SKIP_TEXT:
            return True
        if SKIP_CLASSES & set(parent.get("class") or []):
            return True
    return False


def _short(text: str, at: int = 0, width: int = 60) -> str:
    start = max(0, at - width // 2)
    return " ".join(text[start:start + width].split())


def raw_markup(body: Tag) -> list[tuple[str, str]]:
    found = []
    for node in body.find_all(string=True):
        if isinstance(node, NavigableString) and not _skipped(node):
            for pattern, rule in RAW_TEX:
                match = pattern.search(str(node))
                if match:
                    found.append((rule, _short(str(node), match.start())))
                    break
    return found


def _column_labels(table: Tag) -> list[str]:
    """The header row that names the most columns (pandas adds a row of index names)."""
    rows = [[th.get_text(strip=True) for th in row.find_all("th")]
            for row in table.select("thead tr")]
    return max(rows, key=lambda row: sum(map(bool, row)), default=[])


def table_defects(body: Tag) -> list[tuple[str, str]]:
    found = []
    for table in body.select("table.dataframe"):
        columns: dict[int, list[str]] = {}
        for row in table.select("tbody tr"):
            for k, cell in enumerate(row.find_all("td")):
                columns.setdefault(k, []).append(cell.get_text(strip=True))
        heads = _column_labels(table)
        width = max((len(row.find_all(["th", "td"])) for row in table.select("tr")),
                    default=0)
        if width > MAX_COLUMNS:
            found.append(("wide table", f"{width} columns: "
                          f"{', '.join(filter(None, heads))[:60]}"))
        offset = max(len(heads) - len(columns), 0)  # header cells over the index columns
        for k, values in columns.items():
            label = heads[k + offset] if k + offset < len(heads) else f"column {k + 1}"
            bad = sorted({v for v in values if v in MISSING_CELLS})
            if bad:
                found.append(("NaN in a table", f"{label!r} shows {bad[0]}"))
            if any(v in CUT_CELLS for v in values):
                found.append(("cut-off table", f"{label!r} is cut off with ..."))
            shown = [v for v in values if v not in MISSING_CELLS | {"", "–", "-"}]
            if shown and all(FLOAT_INTEGER.match(v) for v in shown):
                found.append(("integer shown as a float", f"{label!r} shows {shown[0]}"))
    return found


def _local_roots() -> list[str]:
    """This checkout's folder and the user's home: wherever they are, an output that
    names them shows the build machine's paths."""
    roots = {str(ROOT), str(Path.home())}
    return sorted(r for r in roots if len(r) > 1)


def output_defects(body: Tag) -> list[tuple[str, str]]:
    found = []
    roots = _local_roots()
    for output in body.select("div.cell_output"):
        if output.select("div.stderr, div.output.stderr"):
            found.append(("output shows", "standard error"))
        text = output.get_text(" ")
        for pattern, what in OUTPUT_DEFECTS:
            match = pattern.search(text)
            if match:
                found.append(("output shows", f"{what}: {_short(text, match.start())}"))
                break
        else:
            for root in roots:
                if root in text:
                    found.append(("output shows", "an absolute local path: "
                                  f"{_short(text, text.index(root))}"))
                    break
    return found


def figure_defects(body: Tag) -> list[tuple[str, str]]:
    found = []
    for image in body.find_all("img"):
        src = image.get("src", "")
        figure = image.find_parent("figure")
        if figure is None or figure.find("figcaption") is None:
            found.append(("figure without a caption", Path(src).name))
        alt = (image.get("alt") or "").strip()
        if not alt or alt == src or IMAGE_NAME.search(alt):
            found.append(("alt text", f"{Path(src).name} has alt text {alt!r}"))
    return found


def code_defects(body: Tag) -> list[tuple[str, str]]:
    found = []
    for pre in body.select("div.highlight pre"):
        if pre.find_parent("div", class_="cell_output"):
            continue
        for line in pre.get_text().splitlines():
            if len(line) > WIDTH:
                found.append(("code line over 80", f"{len(line)} characters: "
                                                   f"{line[:50].strip()}..."))
    return found


@lru_cache(maxsize=256)
def _ids(path: Path) -> frozenset[str]:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return frozenset(tag["id"] for tag in soup.find_all(id=True))


def link_defects(body: Tag, page: Path, root: Path, ids: frozenset[str]) -> list[
        tuple[str, str]]:
    found = []
    for anchor in body.find_all("a", href=True):
        href = anchor["href"]
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        fragment = unquote(parts.fragment)
        if not parts.path:
            if fragment and fragment not in ids:
                found.append(("link does not resolve", f"{href} (no such anchor)"))
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or root.resolve() not in target.parents:
            found.append(("link does not resolve", f"{href} (no such file)"))
        elif fragment and target.suffix == ".html" and fragment not in _ids(target):
            found.append(("link does not resolve", f"{href} (no such anchor)"))
    return found


def check_html(html: str, page: Path, root: Path) -> list[Problem]:
    """Every problem of one page's HTML; ``page`` locates its relative links."""
    soup = BeautifulSoup(html, "html.parser")
    body = article(soup)
    ids = frozenset(tag["id"] for tag in soup.find_all(id=True))
    try:
        name = page.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        name = page.name
    found = (raw_markup(body) + table_defects(body) + output_defects(body)
             + figure_defects(body) + code_defects(body)
             + link_defects(body, page, root, ids))
    return [Problem(name, rule, detail) for rule, detail in found]


def check_page(page: Path, root: Path) -> list[Problem]:
    return check_html(page.read_text(encoding="utf-8"), page, root)


def main(argv: list[str] | None = None) -> int:
    import yaml

    sys.path.insert(0, str(ROOT))
    from tools.check_book import toc_files

    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else ROOT / "_build" / "html"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    problems = []
    for entry in toc_files(toc):
        page = root / f"{Path(entry).with_suffix('')}.html"
        if page.is_file():
            problems += check_page(page, root)
    for problem in problems:
        print(problem)
    print(f"page rules: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
