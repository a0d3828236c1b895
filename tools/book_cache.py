"""Hand the chapters nbval has executed to the book build's jupyter-cache.

``make test`` used to execute every chapter twice: nbval runs it, then the strict
``jupyter-book build`` (``execute_notebooks: cache``, empty cache in CI) runs it again.
With ``pytest --book-cache`` (see ``book/conftest.py``), once nbval has executed a chapter
and every one of its cells passed, the executed notebook is stored in the book's
jupyter-cache in the form myst-nb itself would have stored, so the build finds a cache hit
and executes nothing.

The stored notebook equals myst-nb's by construction:

* it is read from the chapter by myst-nb's own reader (``create_nb_reader``) with the
  MyST and myst-nb configuration jupyter-book derives from ``_config.yml``, so its code
  cells, their metadata and the kernelspec (all that jupyter-cache hashes) are the ones
  the build hashes, and the code nbval ran is checked to be that code, cell by cell;
* the kernel messages nbval received for each cell are replayed through
  ``nbclient.NotebookClient.process_message``, the code jupyter-cache executes notebooks
  with, so outputs come out as nbclient makes them: streams unmerged (myst-nb merges them
  when rendering), ``display_data`` metadata such as glue's ``scrapbook`` kept, images,
  errors of ``raises-exception`` cells, display updates and widget state;
* execution counts run 1, 2, ... over executed cells, as nbclient numbers them (nbval sends
  cells with ``store_history=False``, so the kernel's own count does not advance);
* ``language_info`` is the kernel's ``kernel_info`` reply, as nbclient takes it;
* the record's ``execution_seconds`` is nbval's wall time for the notebook (kernel start to
  last cell), so per-chapter execution times read from the cache stay meaningful; the
  record's data also says ``"executed_by": "nbval"``.

Whatever does not fit (a cell failed or was skipped, the code nbval ran differs from what
myst-nb reads, a chapter the build would not take from the cache, ...) raises
:class:`HandoffError` and nothing is stored: the build then executes that chapter itself,
as before, only slower.
"""

from __future__ import annotations

import copy
import dataclasses as dc
import re
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
import yaml

EXECUTED_BY = "nbval"


class HandoffError(Exception):
    """nbval's execution of a chapter cannot stand in for the book build's."""


@dc.dataclass(frozen=True)
class BookSettings:
    """What the book build needs from ``_config.yml`` to read and cache a chapter."""

    root: Path
    cache_path: Path
    md_config: Any  # myst_parser.config.main.MdParserConfig
    nb_config: Any  # myst_nb.core.config.NbParserConfig


def book_settings(root: Path | str) -> BookSettings:
    """Read the book's configuration the way ``jupyter-book build`` does.

    ``root`` is the folder holding ``_config.yml``, from which ``make`` runs the build;
    a relative ``execute.cache`` is taken relative to it, as the build takes it relative to
    its working directory. Raises :class:`HandoffError` unless the book executes notebooks
    through the cache.
    """
    from jupyter_book.config import get_final_config
    from myst_nb.core.config import NbParserConfig
    from myst_parser.config.main import MdParserConfig

    root = Path(root).resolve()
    path = root / "_config.yml"
    if not path.is_file():
        raise HandoffError(f"no _config.yml in {root}")
    user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # a dict (not the path) so that jupyter-book does not add extension paths to sys.path
    sphinx, _ = get_final_config(user_yaml=user, cli_config={"latex_individualpages": False},
                                 sourcedir=root, validate=False)
    md_config = MdParserConfig(**_prefixed(sphinx, "myst_", MdParserConfig))
    nb_config = NbParserConfig(**_prefixed(sphinx, "nb_", NbParserConfig))
    if nb_config.execution_mode != "cache":
        raise HandoffError(f"the book executes with mode {nb_config.execution_mode!r}, "
                           "not 'cache'")
    if nb_config.execution_in_temp:
        raise HandoffError("the book executes in a temporary folder, nbval in book/")
    cache = Path(nb_config.execution_cache_path or "_build/.jupyter_cache")
    cache = cache if cache.is_absolute() else root / cache
    return BookSettings(root=root, cache_path=cache, md_config=md_config, nb_config=nb_config)


def _prefixed(config: dict, prefix: str, cls: type) -> dict:
    names = {field.name for field in dc.fields(cls)}
    return {key[len(prefix):]: value for key, value in config.items()
            if key.startswith(prefix) and key[len(prefix):] in names}


def read_notebook(path: Path | str, settings: BookSettings) -> tuple[nbformat.NotebookNode,
                                                                     dict | None]:
    """A chapter as the book build reads it before matching it in the cache.

    Follows ``myst_nb.sphinx_.Parser.parse``: myst-nb's reader for the file, then the
    kernel-name aliases. Returns the notebook and the reader format myst-nb records.
    """
    from myst_nb.core.read import create_nb_reader

    path = Path(path).resolve()
    text = path.read_text(encoding="utf-8-sig")  # Sphinx's default source_encoding
    reader = create_nb_reader(str(path), settings.md_config, settings.nb_config, text)
    if reader is None:
        raise HandoffError(f"myst-nb does not read {path.name} as a notebook")
    notebook = reader.read(text)
    kernelspec = notebook.metadata.get("kernelspec", {})
    name = kernelspec.get("name")
    if name is not None:
        for pattern, alias in settings.nb_config.kernel_rgx_aliases.items():
            if re.fullmatch(pattern, name):
                kernelspec["name"] = alias
                break
    return notebook, reader.read_fmt


def check_executes_from_cache(path: Path | str, notebook: nbformat.NotebookNode,
                              settings: BookSettings) -> None:
    """Raise :class:`HandoffError` if the build would not take this chapter from the cache."""
    config = settings.nb_config
    overrides = notebook.metadata.get(config.metadata_key, {})
    mode = overrides.get("execution_mode", config.execution_mode)
    if mode != "cache" or overrides.get("execution_in_temp"):
        raise HandoffError(f"the chapter's {config.metadata_key} metadata changes how it runs")
    posix = PurePosixPath(Path(path).resolve().as_posix())
    for pattern in config.execution_excludepatterns:
        if posix.match(pattern):
            raise HandoffError(f"the book does not execute it (pattern {pattern!r})")


@dc.dataclass
class CellRun:
    """One ``execute_request`` nbval sent, and the iopub messages it received for it."""

    source: str
    msg_id: str
    messages: list[dict] = dc.field(default_factory=list)
    passed: bool = False


class KernelRecorder:
    """Record what nbval sends to one notebook's kernel and the iopub messages it reads.

    :meth:`attach` wraps the ``execute_cell_input`` and ``get_message`` methods of nbval's
    ``RunningKernel`` (nbval 0.11), which every cell execution and every iopub read go
    through, and asks the kernel for its ``language_info``.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.runs: list[CellRun] = []
        self.language_info: dict | None = None
        self._by_id: dict[str, CellRun] = {}

    def attach(self, kernel: Any, timeout: float = 30.0) -> None:
        execute, get_message = kernel.execute_cell_input, kernel.get_message

        def execute_cell_input(cell_input, allow_stdin=None):
            msg_id = execute(cell_input, allow_stdin=allow_stdin)
            self.sent(cell_input, msg_id)
            return msg_id

        def get_message_recorded(stream, timeout=None):
            msg = get_message(stream, timeout=timeout)
            if stream == "iopub":
                self.received(msg)
            return msg

        kernel.execute_cell_input = execute_cell_input
        kernel.get_message = get_message_recorded
        self.language_info = kernel_language_info(kernel.kc, timeout)

    def sent(self, source: str, msg_id: str) -> None:
        run = CellRun(source, msg_id)
        self.runs.append(run)
        self._by_id[msg_id] = run

    def received(self, msg: dict) -> None:
        run = self._by_id.get(msg.get("parent_header", {}).get("msg_id"))
        if run is not None:
            run.messages.append(msg)

    def cell_passed(self, source: str) -> None:
        """nbval's test of the cell just executed passed."""
        if self.runs and self.runs[-1].source == source:
            self.runs[-1].passed = True

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def kernel_language_info(client: Any, timeout: float = 30.0) -> dict:
    """``language_info`` from a ``kernel_info`` request, as nbclient records it."""
    msg_id = client.kernel_info()
    deadline = time.monotonic() + timeout
    while True:
        msg = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            info = msg["content"].get("language_info")
            if not info:
                raise HandoffError("the kernel's kernel_info reply has no language_info")
            return info


def _message_copy(msg: dict) -> dict:
    """A copy nbclient may change (it renames update_display_data in the header)."""
    return {**msg, "header": dict(msg.get("header", {})),
            "content": copy.deepcopy(msg.get("content", {}))}


def executed_notebook(notebook: nbformat.NotebookNode, runs: Sequence[CellRun],
                      language_info: dict | None) -> nbformat.NotebookNode:
    """The notebook as nbclient would have executed it, from nbval's recorded messages.

    ``notebook`` is the chapter as myst-nb reads it; ``runs`` are nbval's executions, one
    per code cell in order. Raises :class:`HandoffError` if they do not correspond or a
    cell did not pass.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionComplete

    nb = copy.deepcopy(notebook)
    code = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if len(runs) != len(code):
        raise HandoffError(f"nbval executed {len(runs)} code cells, myst-nb reads {len(code)}")
    for number, ((_, cell), run) in enumerate(zip(code, runs, strict=True)):
        if run.source != cell.source:
            raise HandoffError(f"code cell {number} differs between what nbval ran and what "
                               "myst-nb reads")
        if not run.passed:
            raise HandoffError(f"code cell {number} did not pass under nbval")
    if not language_info:
        raise HandoffError("the kernel's language_info is unknown")

    # As jupyter-cache runs nbclient: record_timing off, other options at their defaults
    # (no stream coalescing, widget state stored, cells tagged skip-execution not run).
    client = NotebookClient(nb, record_timing=False)
    count = 0
    for number, ((index, cell), run) in enumerate(zip(code, runs, strict=True)):
        if not cell.source.strip():
            continue  # nbclient does not send empty cells
        if client.skip_cells_with_tag in cell.metadata.get("tags", []):
            raise HandoffError(f"code cell {number} is tagged {client.skip_cells_with_tag!r}: "
                               "the build would not run it, nbval did")
        count += 1
        cell.outputs = []
        client.clear_before_next_output = False
        for msg in run.messages:
            msg = _message_copy(msg)
            if msg.get("msg_type") == "execute_result":
                msg["content"]["execution_count"] = count
            try:
                client.process_message(msg, cell, index)
            except CellExecutionComplete:
                break
        else:
            raise HandoffError(f"code cell {number}: the kernel's idle message was not recorded")
        cell.execution_count = count
    client.set_widgets_metadata()
    nb.metadata["language_info"] = copy.deepcopy(language_info)
    return nb


def store(path: Path | str, executed: nbformat.NotebookNode, seconds: float,
          settings: BookSettings, read_fmt: dict | None = None) -> int:
    """Cache an executed chapter as myst-nb does after executing it; return the record id.

    Then checks that the chapter, read again from disk as the build reads it, matches the
    new record; if not (the file changed meanwhile), the record is removed again.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.cache.db import NbProjectRecord

    path = Path(path).resolve()
    cache = get_cache(str(settings.cache_path))
    if read_fmt is not None:
        stage = cache.add_nb_to_project(str(path), read_data=read_fmt)
    else:
        stage = cache.add_nb_to_project(str(path))
    NbProjectRecord.remove_tracebacks([stage.pk], cache.db)
    record = cache.cache_notebook_bundle(
        CacheBundleIn(executed, stage.uri,
                      data={"execution_seconds": seconds, "executed_by": EXECUTED_BY}),
        check_validity=False, overwrite=True)
    current, _ = read_notebook(path, settings)
    try:
        matched = cache.match_cache_notebook(current).pk
    except KeyError:
        matched = None
    if matched != record.pk:
        cache.remove_cache(record.pk)
        raise HandoffError("the chapter as read now does not match what nbval executed")
    return record.pk


def hand_over(path: Path | str, recorder: KernelRecorder,
              settings: BookSettings) -> tuple[int, float]:
    """Store nbval's execution of the chapter at ``path``.

    Returns the cache record id and the execution seconds stored with it.
    """
    seconds = recorder.seconds()
    notebook, read_fmt = read_notebook(path, settings)
    check_executes_from_cache(path, notebook, settings)
    executed = executed_notebook(notebook, recorder.runs, recorder.language_info)
    return store(path, executed, seconds, settings, read_fmt), seconds
