"""Sphinx extension for the book: offline MathJax and .ipynb downloads.

* MathJax 3 is served from the book's own ``_static/mathjax`` folder, copied from the
  ``django-static-mathjax`` package, so maths typesets with no network and no CDN.
* Every executed chapter is offered as an ``.ipynb`` in the page's download menu, so a
  reader can open it in Jupyter. When myst-nb takes a chapter from the jupyter-cache (as
  the build does for every chapter nbval has handed over, see ``tools/book_cache.py``), it
  renders the cached outputs but writes the notebook without them to
  ``_build/jupyter_execute``; :func:`keep_cached_outputs` makes it write the executed one.
* A figure's image gets its caption as alt text (:func:`caption_as_alt`), so that a screen
  reader reads what the figure shows, not the file name of a generated PNG.
"""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

MATHJAX_ENTRY = "mathjax/tex-chtml.js"


def mathjax_source() -> Path:
    """Folder of the MathJax 3 ES5 build shipped by django-static-mathjax."""
    try:
        root = Path(str(importlib.resources.files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ExtensionError(
            "offline maths needs the package django-static-mathjax: pip install -e '.[book]'"
        ) from err
    if not (root / "tex-chtml.js").is_file():
        raise ExtensionError(f"MathJax not found at {root}; reinstall django-static-mathjax.")
    return root


def _config_inited(app: Sphinx, config) -> None:
    mathjax_source()
    config.mathjax_path = MATHJAX_ENTRY


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax"
        shutil.copytree(mathjax_source(), target, dirs_exist_ok=True)


def _offer_ipynb(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def keep_cached_outputs() -> None:
    """Make myst-nb write the executed notebook when it takes a chapter from the cache.

    On a cache hit myst-nb 1.x (``NotebookClientCache.start_client``) merges the cached
    outputs into a copy of the notebook and renders that copy, but then writes the original,
    output-less notebook to ``_build/jupyter_execute/<page>.ipynb``, the file offered for
    download. Copy the merged notebook back into the original, so both agree.
    """
    try:
        from myst_nb.core.execute.cache import NotebookClientCache
    except ImportError:  # pragma: no cover - another myst-nb layout: nothing to patch
        return
    start = NotebookClientCache.start_client
    if getattr(start, "keeps_cached_outputs", False):
        return

    def start_client(self) -> None:
        notebook = getattr(self, "_notebook", None)
        start(self)
        merged = getattr(self, "_notebook", None)
        if notebook is not None and merged is not None and merged is not notebook:
            notebook.clear()  # taken from the cache: the original gets the outputs
            notebook.update(merged)
            self._notebook = notebook

    start_client.keeps_cached_outputs = True
    NotebookClientCache.start_client = start_client


def _is_file_name(alt: str, uri: str) -> bool:
    return not alt.strip() or alt == uri or alt.lower().endswith(
        (".png", ".svg", ".jpg", ".jpeg", ".gif"))


def caption_as_alt(app: Sphinx | None, doctree: nodes.Node, docname: str = "") -> int:
    """Give each captioned figure's images the caption as alt text, unless an author
    wrote one. Returns how many images were changed."""
    changed = 0
    for figure in doctree.findall(nodes.figure):
        caption = next(iter(figure.findall(nodes.caption)), None)
        if caption is None:
            continue
        text = " ".join(caption.astext().split())
        for image in figure.findall(nodes.image):
            if _is_file_name(image.get("alt", ""), image.get("uri", "")):
                image["alt"] = text
                changed += 1
    return changed


def setup(app: Sphinx) -> dict:
    keep_cached_outputs()
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("html-page-context", _offer_ipynb, priority=400)
    app.connect("build-finished", _copy_mathjax)
    app.connect("doctree-resolved", caption_as_alt)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
