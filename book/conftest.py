"""Let nbval test the book's MyST Markdown notebooks directly.

nbval only collects ``.ipynb`` files. Here every ``book/*.md`` that carries a jupytext
kernelspec header is collected as a notebook, read through jupytext. Run with
``pytest --nbval-lax --nbval-current-env book``.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import jupytext
import nbformat
from nbval import plugin as nbval_plugin


def _is_notebook(path: Path) -> bool:
    if path.suffix != ".md" or path.name.startswith("_"):
        return False
    head = path.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head


class MystNotebook(nbval_plugin.IPyNbFile):
    """An nbval notebook whose cells come from a MyST Markdown file."""

    def collect(self):
        shim = types.SimpleNamespace(
            **{k: getattr(nbformat, k) for k in dir(nbformat) if not k.startswith("__")}
        )
        shim.read = lambda path, as_version=4: jupytext.read(path, as_version=as_version)
        with _patched(nbval_plugin, "nbformat", shim):
            yield from super().collect()


@contextlib.contextmanager
def _patched(module, name, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and _is_notebook(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None
