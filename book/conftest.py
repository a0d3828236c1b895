"""Let nbval test the book's MyST Markdown notebooks directly.

nbval only collects ``.ipynb`` files. Here every ``book/*.md`` that carries a jupytext
kernelspec header is collected as a notebook, read through jupytext. Run with
``pytest --nbval-lax --nbval-current-env book``.

With ``--book-cache`` (as ``make nbval`` runs it), each chapter whose cells all pass is
stored, executed, in the book's jupyter-cache (``execute.cache`` in ``_config.yml``), in
the form myst-nb would store it, so that the book build that follows takes it from the
cache instead of executing it again (see ``tools/book_cache.py``). A chapter that cannot be
handed over is simply executed by the build, as without the option.
"""

from __future__ import annotations

import contextlib
import sys
import types
import warnings
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbval import plugin as nbval_plugin

ROOT = Path(__file__).resolve().parents[1]
_handoff_report: list[str] = []


def _is_notebook(path: Path) -> bool:
    if path.suffix != ".md" or path.name.startswith("_"):
        return False
    head = path.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head


def _book_cache():
    """``tools.book_cache``, imported when the hand-over is asked for."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools import book_cache

    return book_cache


class MystNotebook(nbval_plugin.IPyNbFile):
    """An nbval notebook whose cells come from a MyST Markdown file."""

    recorder = None

    def collect(self):
        shim = types.SimpleNamespace(
            **{k: getattr(nbformat, k) for k in dir(nbformat) if not k.startswith("__")}
        )
        shim.read = lambda path, as_version=4: jupytext.read(path, as_version=as_version)
        with _patched(nbval_plugin, "nbformat", shim):
            yield from super().collect()

    def setup(self):
        handoff = self.config.getoption("book_cache", default=False)
        recorder = _book_cache().KernelRecorder() if handoff else None
        super().setup()
        if recorder is not None:
            try:
                recorder.attach(self.kernel)
            except Exception as err:  # the build then executes the chapter itself
                self._report(f"not stored: recording failed ({type(err).__name__}: {err})")
            else:
                self.recorder = recorder

    def teardown(self):
        try:
            if self.recorder is not None:
                self._hand_over()
        finally:
            super().teardown()

    def _hand_over(self) -> None:
        book_cache = _book_cache()
        try:
            settings = book_cache.book_settings(ROOT)
            pk, seconds = book_cache.hand_over(self.path, self.recorder, settings)
        except book_cache.HandoffError as err:
            self._report(f"not stored: {err}")
        except Exception as err:  # never fail the tests over the cache
            self._report(f"not stored: {type(err).__name__}: {err}")
        else:
            _handoff_report.append(f"{self.path.name}: stored as cache record {pk} "
                                   f"({seconds:.1f} s under nbval)")

    def _report(self, message: str) -> None:
        _handoff_report.append(f"{self.path.name}: {message}; the book build will execute it")
        warnings.warn(f"book cache: {self.path.name}: {message}", stacklevel=2)


@contextlib.contextmanager
def _patched(module, name, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def pytest_addoption(parser):
    parser.getgroup("nbval").addoption(
        "--book-cache", action="store_true", default=False,
        help="store each notebook whose cells all pass, executed, in the book's "
             "jupyter-cache (_config.yml execute.cache) for jupyter-book build to reuse")


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and _is_notebook(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    recorder = getattr(item.parent, "recorder", None)
    if report.when == "call" and report.passed and recorder is not None:
        recorder.cell_passed(item.cell.source)
    return report


def pytest_terminal_summary(terminalreporter):
    if _handoff_report:
        terminalreporter.section("book cache (nbval -> jupyter-book build)")
        for line in _handoff_report:
            terminalreporter.write_line(line)
