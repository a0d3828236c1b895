"""The page rules of ``tools/page_rules.py`` and the figure alt text of the book's
Sphinx extension: each rule is shown catching its defect on a small page, and a clean
page passes them all."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from docutils import nodes

from tools import page_rules

ROOT = Path(__file__).resolve().parents[1]


def _companion_book():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        return importlib.import_module("companion_book")
    finally:
        sys.path.pop(0)


def test_a_captioned_figure_gets_its_caption_as_alt_text():
    ext = _companion_book()
    doc = nodes.section()
    figure = nodes.figure()
    figure += nodes.image(uri="_images/abc.png", alt="_images/abc.png")
    figure += nodes.caption(text="NDCG@10 of the baselines,\n with intervals.")
    kept = nodes.figure()
    kept += nodes.image(uri="b.png", alt="A bar chart of five models")
    kept += nodes.caption(text="Something else.")
    bare = nodes.image(uri="c.png")
    doc += [figure, kept, bare]
    assert ext.caption_as_alt(None, doc) == 1
    assert figure.children[0]["alt"] == "NDCG@10 of the baselines, with intervals."
    assert kept.children[0]["alt"] == "A bar chart of five models"
    assert "alt" not in bare


CLEAN = """
<html><body><main><article class="bd-article">
<h1>A page<a class="headerlink" href="#a-page">#</a></h1>
<section id="a-page">
<p>Maths: <span class="math notranslate nohighlight">\\(\\beta_{\\text{a}}\\)</span>,
and a <a class="reference internal" href="#a-page">link</a>.</p>
<div class="math notranslate nohighlight">\\[\\sum_i x_i\\]</div>
<div class="cell docutils container">
<div class="cell_input docutils container"><div class="highlight"><pre>x = 1
</pre></div></div>
<div class="cell_output docutils container">
<div class="output text_html"><table class="dataframe"><thead><tr><th></th><th>n</th>
<th>NDCG</th></tr></thead><tbody><tr><th>a</th><td>1,234</td><td>0.1234</td></tr>
<tr><th>b</th><td>3</td><td>–</td></tr></tbody></table></div>
<figure class="align-default" id="fig-a"><img alt="Bars of NDCG per model"
src="../_images/a.png" /><figcaption><p>Fig. 1 NDCG.</p></figcaption></figure>
</div></div>
</section></article></main></body></html>
"""


def check(html: str, tmp_path: Path, name: str = "page.html") -> list[str]:
    page = tmp_path / "book" / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html, encoding="utf-8")
    return [str(p) for p in page_rules.check_page(page, tmp_path)]


def test_a_clean_page_passes(tmp_path):
    assert check(CLEAN, tmp_path) == []


@pytest.mark.parametrize("defect, old, new", [
    ("raw TeX", "and a <a", "and $$x$$ a <a"),
    ("raw TeX", "and a <a", "and \\beta_{1} a <a"),
    ("raw TeX", "and a <a", "and \\text{earlier} a <a"),
    ("raw Markdown", "and a <a", "and {cite}`kang2018` a <a"),
    ("raw Markdown", "and a <a", "and **bold** a <a"),
    ("NaN in a table", "<td>–</td>", "<td>NaN</td>"),
    ("NaN in a table", "<td>–</td>", "<td>&lt;NA&gt;</td>"),
    ("cut-off table", "<td>–</td>", "<td>...</td>"),
    ("wide table", "<th>NDCG</th></tr>", "<th>NDCG</th>" + "<th>c</th>" * 6 + "</tr>"),
    ("integer shown as a float",
     "<td>1,234</td><td>0.1234</td></tr>\n<tr><th>b</th><td>3</td>",
     "<td>1234.0</td><td>0.1234</td></tr>\n<tr><th>b</th><td>3.0</td>"),
    ("output shows", "<div class=\"output text_html\">",
     "<div class=\"output stderr\"><pre>2 rows dropped</pre></div>"
     "<div class=\"output text_html\">"),
    ("output shows", "<div class=\"output text_html\">",
     "<div class=\"output text_plain\"><pre>Traceback (most recent call last)</pre></div>"
     "<div class=\"output text_html\">"),
    ("output shows", "<div class=\"output text_html\">",
     "<div class=\"output text_plain\"><pre>&lt;Model at 0x7f3a2b1c9d40&gt;</pre></div>"
     "<div class=\"output text_html\">"),
    ("output shows", "<div class=\"output text_html\">",
     f"<div class=\"output text_plain\"><pre>read {ROOT / 'shop.csv'}</pre></div>"
     "<div class=\"output text_html\">"),
    ("figure without a caption", "<figure class=\"align-default\" id=\"fig-a\">",
     "<img alt=\"x\" src=\"../_images/b.png\" /><figure class=\"align-default\" "
     "id=\"fig-a\">"),
    ("alt text", "alt=\"Bars of NDCG per model\"", "alt=\"../_images/a.png\""),
    ("code line over 80", "<pre>x = 1\n", "<pre>x = " + "1 + " * 20 + "1\n"),
    ("link does not resolve", "href=\"#a-page\">link", "href=\"#nowhere\">link"),
    ("link does not resolve", "href=\"#a-page\">link", "href=\"other.html\">link"),
])
def test_each_rule_catches_its_defect(tmp_path, defect, old, new):
    assert old in CLEAN
    problems = check(CLEAN.replace(old, new, 1), tmp_path)
    assert len(problems) == 1 and defect in problems[0], problems


def test_a_link_to_another_page_and_its_anchor_resolves(tmp_path):
    check(CLEAN, tmp_path, "other.html")
    linked = CLEAN.replace('href="#a-page">link', 'href="other.html#fig-a">link')
    assert check(linked, tmp_path) == []
    broken = CLEAN.replace('href="#a-page">link', 'href="other.html#gone">link')
    assert "link does not resolve" in check(broken, tmp_path)[0]


def test_pandas_fixed_point_floats_are_caught_but_four_digit_floats_are_not(tmp_path):
    table = CLEAN.replace("<td>1,234</td>", "<td>10.000000</td>").replace(
        "<td>3</td>", "<td>2.000000</td>")
    assert "integer shown as a float" in check(table, tmp_path)[0]
    rounded = CLEAN.replace("<td>1,234</td>", "<td>67.00</td>").replace(
        "<td>3</td>", "<td>12.00</td>")
    assert check(rounded, tmp_path) == []


def test_a_float_column_may_show_whole_numbers_with_decimals(tmp_path):
    mixed = CLEAN.replace("<td>0.1234</td>", "<td>2.0</td>").replace(
        "<td>–</td>", "<td>2.5</td>")
    assert check(mixed, tmp_path) == []
