"""Open the book in JupyterLab, with every MyST chapter opening as a notebook (``make lab``).

What it does, in order:

1. makes JupyterLab open ``.md`` files with the Jupytext notebook viewer, by writing
   ``share/jupyter/lab/settings/overrides.json`` inside this environment (``sys.prefix``),
   so that nothing outside the project's virtual environment changes;
2. sets ``COMPANION_DATA_DIR`` for the server and its kernels: kept if already set, else
   ``../shared/data`` beside the repository when that folder exists (otherwise the
   companion falls back to its download cache, see ``companion.data``);
3. puts this environment's ``bin`` first on ``PATH``, so that the ``python3`` kernel spec
   (``python -m ipykernel_launcher``) starts this environment's Python with the companion;
4. starts ``jupyter lab`` in the repository, opened on ``book/``. Extra arguments are
   passed on (``python tools/lab.py --no-browser --port 8899``). Run as root (in a
   container, or a root shell), it adds ``--allow-root``, without which JupyterLab refuses
   to start.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "COMPANION_DATA_DIR"
#: JupyterLab setting that opens Markdown and MyST files as Jupytext notebooks.
DEFAULT_VIEWERS = {"@jupyterlab/docmanager-extension:plugin": {
    "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}


def overrides_path(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Where JupyterLab reads setting overrides for the environment at ``prefix``."""
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def write_overrides(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Merge :data:`DEFAULT_VIEWERS` into the environment's ``overrides.json``; its path."""
    path = overrides_path(prefix)
    settings = {}
    if path.exists():
        try:
            settings = json.loads(path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path} is not valid JSON ({err}); fix or remove it.") from None
    for plugin, values in DEFAULT_VIEWERS.items():
        current = settings.setdefault(plugin, {})
        current.setdefault("defaultViewers", {}).update(values["defaultViewers"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def data_dir(environ: dict[str, str] | None = None, root: Path = ROOT) -> str | None:
    """The data folder for the kernels: ``$COMPANION_DATA_DIR``, else ``../shared/data``."""
    environ = os.environ if environ is None else environ
    if environ.get(DATA_DIR_ENV):
        return environ[DATA_DIR_ENV]
    shared = root.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def lab_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``jupyter lab`` runs in (data folder, this Python first on PATH)."""
    env = dict(os.environ if environ is None else environ)
    folder = data_dir(env)
    if folder:
        env[DATA_DIR_ENV] = folder
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def running_as_root() -> bool:
    """Whether this process runs as root (never on systems without ``os.geteuid``)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_command(extra: Sequence[str] = (), *, as_root: bool | None = None) -> list[str]:
    """The ``jupyter lab`` command line, opened on the repository with ``book/`` shown.

    ``as_root`` (default: :func:`running_as_root`) adds ``--allow-root``, which JupyterLab
    demands before it starts as root; it is not repeated when ``extra`` already has it.
    """
    as_root = running_as_root() if as_root is None else as_root
    root_flag = ["--allow-root"] if as_root and "--allow-root" not in extra else []
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT}",
            f"--FileContentsManager.preferred_dir={ROOT / 'book'}", *root_flag, *extra]


def main(argv: Sequence[str] | None = None) -> int:
    """Configure and start JupyterLab (replaces this process)."""
    try:
        import jupyterlab  # noqa: F401
        import jupytext  # noqa: F401
    except ImportError as err:
        print(f"tools/lab.py: {err.name} is not installed; run `make lab`, which installs "
              "JupyterLab and Jupytext into .venv.", file=sys.stderr)
        return 2
    path = write_overrides()
    env = lab_environment()
    print(f"Markdown chapters open as notebooks ({path}).", file=sys.stderr)
    print(f"{DATA_DIR_ENV}={env.get(DATA_DIR_ENV, '(unset: the companion uses its cache)')}",
          file=sys.stderr)
    command = lab_command(sys.argv[1:] if argv is None else argv)
    if "--allow-root" in command and running_as_root():
        print("Running as root: JupyterLab is started with --allow-root.", file=sys.stderr)
    os.chdir(ROOT)
    os.execve(command[0], command, env)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
