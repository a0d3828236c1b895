"""The chapters' code cells fit the page: no line over 80 characters.

At a normal window width the rendered code pane shows about 80 characters; a longer line
scrolls sideways, which a reader of the online book should never have to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import check_asserts

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))
WIDTH = 80


def long_lines(path: Path) -> list[str]:
    """Lines over WIDTH inside code cells: the code and the cell's option lines
    (captions included), which a reader editing the chapter in Jupyter also sees."""
    found, inside = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if check_asserts.FENCE.match(line):
            inside = True
        elif inside and line.rstrip() == "```":
            inside = False
        elif inside and len(line) > WIDTH:
            found.append(f"{path.name}:{number}: {line}")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_lines_fit_80_characters(path):
    assert not long_lines(path), "\n".join(long_lines(path))


def test_a_long_line_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```{code-cell} ipython3\n:tags: [hide-input]\n\nx = 1\n"
                    f"y = {'1 + ' * 30}1\n```\n", encoding="utf-8")
    found = long_lines(page)
    assert len(found) == 1 and found[0].startswith("page.md:7: y = 1 + 1")
    page.write_text("```{code-cell} ipython3\n:mystnb:\n:  figure:\n:    caption: "
                    + "word " * 20 + "\n\nx = 1\n```\n", encoding="utf-8")
    assert [line.split(":")[1] for line in long_lines(page)] == ["4"]
