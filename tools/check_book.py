"""Check that the built book has an HTML page for every entry of ``_toc.yml``.

Also checks that executed pages hold no error output, that every figure a chapter draws
(``plt.show()``) appears as an image, that MathJax is served locally, and that every page
passes the rules of :mod:`tools.page_rules` (no raw TeX, no NaN or cut-off tables, no
integers shown as floats, clean outputs, captioned figures with alt text, code lines of
at most 80 characters, links that resolve).
Exit status 1 with a list of problems if anything is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import page_rules  # noqa: E402

HTML = ROOT / "_build" / "html"


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` entry of a jupyter-book table of contents, root first."""
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def main() -> int:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    problems = []
    pages = toc_files(toc)
    for entry in pages:
        page = HTML / f"{Path(entry).with_suffix('')}.html"
        if not page.is_file():
            problems.append(f"missing page {page.relative_to(ROOT)} for toc entry {entry!r}")
            continue
        text = page.read_text(encoding="utf-8")
        source = ROOT / f"{entry}.md"
        if source.is_file():
            wanted = source.read_text(encoding="utf-8").count("plt.show()")
            shown = text.count("<img")
            if shown < wanted:
                problems.append(f"{page.relative_to(ROOT)} shows {shown} images but its source "
                                f"draws {wanted} figures (is matplotlib's inline backend on?)")
        if "output stderr" in text and "Traceback" in text:
            problems.append(f"{page.relative_to(ROOT)} shows a traceback")
        if "cdn.jsdelivr.net/npm/mathjax" in text:
            problems.append(f"{page.relative_to(ROOT)} loads MathJax from a CDN")
        problems += [str(problem) for problem in page_rules.check_html(text, page, HTML)]
    if not (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append("_build/html/_static/mathjax/tex-chtml.js is missing: maths needs it")
    if problems:
        print("book check FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"book check passed: {len(pages)} pages present, MathJax served locally, "
          "page rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
