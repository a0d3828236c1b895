"""The hand-over of nbval's executed chapters to the book build's jupyter-cache.

A tiny MyST notebook and the iopub messages a kernel sends for it stand in for a chapter
and nbval's run of it (no kernel is started). ``tools/book_cache.py`` must turn them into
the notebook myst-nb would have cached, such that myst-nb's own cache client finds it.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
from pathlib import Path

import pytest

from tools import book_cache

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
title: tiny
execute:
  execute_notebooks: {mode}
  cache: "_build/.jupyter_cache"
parse:
  myst_enable_extensions: [colon_fence, dollarmath]
"""

CHAPTER = """\
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

# Tiny

```{code-cell} ipython3
:tags: [remove-cell]

from myst_nb import glue
```

The answer is {glue:text}`answer`.

```{code-cell} ipython3
print("a")
print("b")
glue("answer", 42, display=False)
6 * 7
```

```{code-cell} ipython3
```

```{code-cell} ipython3
from IPython.display import Image
Image(b"png")
```

```{code-cell} ipython3
done = True
```
"""

LANGUAGE_INFO = {"name": "python", "version": "3.11.0", "mimetype": "text/x-python",
                 "codemirror_mode": {"name": "ipython", "version": 3},
                 "pygments_lexer": "ipython3", "nbconvert_exporter": "python",
                 "file_extension": ".py"}
GLUE = {"output_type": "display_data",
        "data": {"application/papermill.record/text/plain": "42"},
        "metadata": {"scrapbook": {"name": "answer",
                                   "mime_prefix": "application/papermill.record/"}}}

_ids = itertools.count()


def _msg(parent: str, msg_type: str, content: dict) -> dict:
    return {"header": {"msg_id": f"m{next(_ids)}", "msg_type": msg_type},
            "parent_header": {"msg_id": parent}, "msg_type": msg_type,
            "content": content, "metadata": {}, "buffers": []}


def _outputs_as_messages(parent: str, source: str, outputs: list[dict]) -> list[dict]:
    """What ipykernel publishes for one cell run with store_history=False."""
    msgs = [_msg(parent, "status", {"execution_state": "busy"}),
            _msg(parent, "execute_input", {"code": source, "execution_count": 1})]
    for out in outputs:
        content = {k: v for k, v in out.items() if k != "output_type"}
        if out["output_type"] == "execute_result":
            content["execution_count"] = 0  # as ipykernel 7 sends it without history
        msgs.append(_msg(parent, out["output_type"], content))
    msgs.append(_msg(parent, "status", {"execution_state": "idle"}))
    return msgs


def _outputs(source: str) -> list[dict]:
    if source.startswith("print"):
        return [{"output_type": "stream", "name": "stdout", "text": "a\n"},
                {"output_type": "stream", "name": "stdout", "text": "b\n"},
                GLUE,
                {"output_type": "execute_result", "data": {"text/plain": "42"},
                 "metadata": {}}]
    if "Image" in source:
        return [{"output_type": "execute_result",
                 "data": {"image/png": "cG5n\n", "text/plain": "<IPython.core.display.Image>"},
                 "metadata": {}}]
    return []


@pytest.fixture()
def book(tmp_path):
    (tmp_path / "_config.yml").write_text(CONFIG.format(mode="cache"), encoding="utf-8")
    (tmp_path / "chapter.md").write_text(CHAPTER, encoding="utf-8")
    return tmp_path


@pytest.fixture()
def settings(book):
    return book_cache.book_settings(book)


def _recorded(notebook, fail: int | None = None) -> book_cache.KernelRecorder:
    """A recorder as nbval leaves it after running every code cell of ``notebook``."""
    recorder = book_cache.KernelRecorder()
    recorder.language_info = LANGUAGE_INFO
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code):
        msg_id = f"exec{number}"
        recorder.sent(cell.source, msg_id)
        for msg in _outputs_as_messages(msg_id, cell.source, _outputs(cell.source)):
            recorder.received(msg)
        recorder.received(_msg("someone-else", "status", {"execution_state": "idle"}))
        if number != fail:
            recorder.cell_passed(cell.source)
    return recorder


class _Logger:
    def __init__(self):
        self.messages = []

    def __getattr__(self, level):
        return lambda msg, *args, **kwargs: self.messages.append((level, msg))


def test_book_settings_follow_the_books_config():
    settings = book_cache.book_settings(ROOT)
    assert settings.cache_path == ROOT / "_build" / ".jupyter_cache"
    assert settings.nb_config.execution_mode == "cache"
    assert {"colon_fence", "dollarmath"} <= set(settings.md_config.enable_extensions)


def test_book_settings_refuse_a_book_that_does_not_cache(tmp_path):
    (tmp_path / "_config.yml").write_text(CONFIG.format(mode="force"), encoding="utf-8")
    with pytest.raises(book_cache.HandoffError, match="'force'"):
        book_cache.book_settings(tmp_path)


def test_replayed_outputs_take_nbclients_form(book, settings):
    notebook, read_fmt = book_cache.read_notebook(book / "chapter.md", settings)
    assert read_fmt == {"type": "plugin", "name": "myst_nb_md"}
    executed = book_cache.executed_notebook(notebook, _recorded(notebook).runs, LANGUAGE_INFO)

    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == [1, 2, None, 3, 4]  # empty one not run
    printed = code[1].outputs
    # streams stay separate (myst-nb merges them when rendering), glue keeps its metadata
    assert [o.output_type for o in printed] == ["stream", "stream", "display_data",
                                                "execute_result"]
    assert printed[2].metadata["scrapbook"]["name"] == "answer"
    assert printed[3].execution_count == 2
    assert code[2].outputs == []
    assert code[3].outputs[0].data["image/png"] == "cG5n\n"
    assert executed.metadata.language_info == LANGUAGE_INFO
    assert all(not cell.get("outputs") for cell in notebook.cells)  # input left alone


def test_myst_nb_takes_the_stored_chapter_from_the_cache(book, settings, monkeypatch):
    from myst_nb.core.execute.cache import NotebookClientCache

    path = book / "chapter.md"
    notebook, _ = book_cache.read_notebook(path, settings)
    recorder = _recorded(notebook)
    pk, seconds = book_cache.hand_over(path, recorder, settings)

    # What the build does: read the chapter, open myst-nb's cache client. With path=None a
    # cache miss raises instead of starting a kernel.
    monkeypatch.setattr(NotebookClientCache, "start_client", NotebookClientCache.start_client)
    _companion_book().keep_cached_outputs()
    source, _ = book_cache.read_notebook(path, settings)
    config = settings.nb_config.copy(execution_cache_path=str(settings.cache_path))
    with NotebookClientCache(source, None, config, _Logger()) as client:
        assert client.exec_metadata["runtime"] == pytest.approx(seconds)
        assert client.exec_metadata["succeeded"]
        assert client.glue_data["answer"].data["text/plain"] == "42"
        assert client.notebook.metadata.language_info == LANGUAGE_INFO
    # the notebook written for download has the outputs too
    assert source.cells[3].outputs[0].text == "a\n"

    from jupyter_cache import get_cache

    record = get_cache(str(settings.cache_path)).get_cache_record(pk)
    assert record.data["executed_by"] == "nbval"
    assert record.uri == str(path.resolve())


def test_a_failed_or_mismatched_run_is_refused(book, settings):
    notebook, _ = book_cache.read_notebook(book / "chapter.md", settings)
    with pytest.raises(book_cache.HandoffError, match="cell 1 did not pass"):
        book_cache.executed_notebook(notebook, _recorded(notebook, fail=1).runs, LANGUAGE_INFO)

    runs = _recorded(notebook).runs
    with pytest.raises(book_cache.HandoffError, match="executed 4 code cells"):
        book_cache.executed_notebook(notebook, runs[:4], LANGUAGE_INFO)

    runs[1].source = runs[1].source.replace('"b"', '"c"')
    with pytest.raises(book_cache.HandoffError, match="cell 1 differs"):
        book_cache.executed_notebook(notebook, runs, LANGUAGE_INFO)

    runs = _recorded(notebook).runs
    runs[3].messages.pop()  # the idle message
    with pytest.raises(book_cache.HandoffError, match="idle message"):
        book_cache.executed_notebook(notebook, runs, LANGUAGE_INFO)


def test_a_cell_the_build_would_skip_is_refused(book, settings):
    path = book / "chapter.md"
    path.write_text(CHAPTER.replace("[remove-cell]", "[remove-cell, skip-execution]"),
                    encoding="utf-8")
    notebook, _ = book_cache.read_notebook(path, settings)
    with pytest.raises(book_cache.HandoffError, match="skip-execution"):
        book_cache.executed_notebook(notebook, _recorded(notebook).runs, LANGUAGE_INFO)


def test_a_chapter_edited_meanwhile_is_not_stored(book, settings):
    path = book / "chapter.md"
    notebook, read_fmt = book_cache.read_notebook(path, settings)
    executed = book_cache.executed_notebook(notebook, _recorded(notebook).runs, LANGUAGE_INFO)
    path.write_text(CHAPTER.replace('print("b")', 'print("B")'), encoding="utf-8")
    with pytest.raises(book_cache.HandoffError, match="does not match"):
        book_cache.store(path, executed, 1.0, settings, read_fmt)
    from jupyter_cache import get_cache

    assert get_cache(str(settings.cache_path)).list_cache_records() == []


def test_recorder_wraps_an_nbval_kernel():
    """The recorder relies on these nbval 0.11 internals; fail loudly if they change."""
    from nbval.kernel import RunningKernel
    from nbval.plugin import IPyNbCell, IPyNbFile

    assert "self.kernel.get_message" in inspect.getsource(IPyNbFile.get_kernel_message)
    runtest = inspect.getsource(IPyNbCell.runtest)
    assert "kernel.execute_cell_input" in runtest and "get_kernel_message" in runtest
    assert {"execute_cell_input", "get_message"} <= set(vars(RunningKernel))

    class Client:
        def kernel_info(self):
            return "info"

        def get_shell_msg(self, timeout=None):
            return {"parent_header": {"msg_id": "info"},
                    "content": {"language_info": LANGUAGE_INFO}}

    class Kernel:
        kc = Client()

        def execute_cell_input(self, cell_input, allow_stdin=None):
            return "exec0"

        def get_message(self, stream, timeout=None):
            return _msg("exec0", "stream", {"name": "stdout", "text": "x\n"})

    kernel, recorder = Kernel(), book_cache.KernelRecorder()
    recorder.attach(kernel)
    assert recorder.language_info == LANGUAGE_INFO
    assert kernel.execute_cell_input("print('x')") == "exec0"
    kernel.get_message("iopub")
    kernel.get_message("shell")  # shell replies are not outputs
    recorder.cell_passed("print('x')")
    (run,) = recorder.runs
    assert run.passed and len(run.messages) == 1 and run.source == "print('x')"


def _companion_book():
    spec = importlib.util.spec_from_file_location(
        "companion_book", ROOT / "book" / "_ext" / "companion_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
