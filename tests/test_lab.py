"""Every chapter opens in Jupyter as a notebook on a kernel this environment has (`make lab`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tools import lab

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md")
                  if "\nkernelspec:" in p.read_text(encoding="utf-8")[:2000])


def test_there_are_chapters():
    assert len(CHAPTERS) >= 10
    assert ROOT / "book" / "05_recommenders.md" in CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_as_a_notebook_on_an_existing_kernel(path):
    import jupytext
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager

    notebook = jupytext.read(path)
    nbformat.validate(notebook)
    assert any(cell.cell_type == "code" for cell in notebook.cells), path.name
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    name = notebook.metadata["kernelspec"]["name"]
    spec = KernelSpecManager().get_kernel_spec(name)  # raises NoSuchKernel if absent
    assert spec.language == "python"
    # the kernel's Python, found the way `make lab` starts it, is this environment's
    env = lab.lab_environment({"PATH": os.environ.get("PATH", "")})
    exe = spec.argv[0]
    found = exe if os.path.isabs(exe) else shutil.which(exe, path=env["PATH"])
    assert found, f"{path.name}: kernel {name!r} runs {exe!r}, which is not on PATH"
    assert Path(found).parent == Path(sys.executable).parent, (path.name, found)


def test_overrides_make_markdown_open_as_notebooks(tmp_path):
    target = lab.overrides_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "x"},
                                  "@jupyterlab/docmanager-extension:plugin": {
                                      "defaultViewers": {"python": "Editor"}}}))
    assert lab.write_overrides(tmp_path) == target
    settings = json.loads(target.read_text())
    viewers = settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers == {"python": "Editor", "markdown": "Jupytext Notebook",
                       "myst": "Jupytext Notebook"}
    assert settings["@jupyterlab/apputils-extension:themes"] == {"theme": "x"}
    lab.write_overrides(tmp_path)  # idempotent
    assert json.loads(target.read_text()) == settings
    target.write_text("{not json")
    with pytest.raises(SystemExit, match="not valid JSON"):
        lab.write_overrides(tmp_path)


def test_data_dir_and_environment(tmp_path):
    assert lab.data_dir({"COMPANION_DATA_DIR": "/somewhere"}) == "/somewhere"
    repo = tmp_path / "repo"
    repo.mkdir()
    assert lab.data_dir({}, root=repo) is None
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert lab.data_dir({}, root=repo) == str(tmp_path / "shared" / "data")
    env = lab.lab_environment({"PATH": "/usr/bin", "COMPANION_DATA_DIR": "/d"})
    assert env["COMPANION_DATA_DIR"] == "/d"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_lab_command_opens_the_book():
    command = lab.lab_command(["--no-browser"])
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--FileContentsManager.preferred_dir={ROOT / 'book'}" in command
    assert command[-1] == "--no-browser"


def test_jupyterlab_with_jupytext_is_installed_for_make_lab():
    pytest.importorskip("jupyterlab", reason="installed by `make lab`, not by `make install`")
    import jupytext

    assert jupytext.__version__ >= "1.16"
