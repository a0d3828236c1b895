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


def test_allow_root_is_added_only_as_root(monkeypatch):
    flag = "--allow-root"
    assert flag in lab.lab_command(as_root=True)
    assert flag not in lab.lab_command(as_root=False)
    # given by the user as well: passed once, and the user's options stay last
    command = lab.lab_command([flag, "--no-browser"], as_root=True)
    assert command.count(flag) == 1 and command[-2:] == [flag, "--no-browser"]
    # the default asks the operating system who runs it
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert lab.running_as_root() and flag in lab.lab_command()
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    assert not lab.running_as_root() and flag not in lab.lab_command()
    monkeypatch.delattr(os, "geteuid", raising=False)  # Windows has no user ids
    assert not lab.running_as_root()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_jupyterlab_starts_with_the_make_lab_command(tmp_path):
    """Start the server the way `make lab` does (as root, too), check it answers, stop it."""
    pytest.importorskip("jupyterlab", reason="installed by `make lab`, not by `make install`")
    import subprocess
    import time
    import urllib.request

    port, token = _free_port(), "make-lab-test"
    options = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               f"--IdentityProvider.token={token}"]
    env = lab.lab_environment({"PATH": os.environ.get("PATH", ""),
                               "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                               "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "c"),
                               "JUPYTER_DATA_DIR": str(tmp_path / "d"),
                               "JUPYTER_RUNTIME_DIR": str(tmp_path / "r")})
    log = tmp_path / "lab.log"
    if lab.running_as_root():
        # without the flag JupyterLab refuses root, which is what `make lab` ran into
        refused = subprocess.run(lab.lab_command(options, as_root=False), env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        assert "--allow-root" in refused.stderr, refused.stderr[-2000:]
    with log.open("w") as out:
        server = subprocess.Popen(lab.lab_command(options), env=env, cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/status?token={token}"
        deadline, status = time.monotonic() + 120, None
        while status is None and server.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    status = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert status is not None, log.read_text()[-3000:]
        assert "started" in status
    finally:
        server.terminate()
        server.wait(timeout=60)
