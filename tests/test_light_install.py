"""The wheel without extras is the light core, and the command line runs on it.

The wheel is built, installed with no extras into a fresh virtual environment outside the
repository, and its console script runs ``validate``, ``report``, ``recommend`` and
``churn`` on a synthetic shop's export, from a folder outside the repository (so the
checkout's package cannot be imported) and with no ``PYTHONPATH``. The outputs must equal
those of this environment, which has every extra. pip resolves the core's dependencies
from the package index, pinned by a constraints file to the versions installed here (so
its cache serves them, and the numbers are computed by the same code).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pandas as pd
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from companion import _optional, cli, data

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = [re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in PROJECT["dependencies"]]
#: import names of every optional package; none may be in the light environment
OPTIONAL = sorted({p for packages in _optional.EXTRAS.values() for p in packages})
#: distributions that would bring them (tensorflow-cpu is the old core's TensorFlow)
HEAVY = ["tensorflow", "tensorflow-cpu", "keras", "lightgbm", "fastapi", "uvicorn", "httpx",
         "optuna", "pyspark", "openpyxl"]
#: the modules that cannot be imported at all without an extra, and that extra
NEED_AN_EXTRA = {"ops.compression": "deep", "recsys.deep": "deep", "retention.explain": "deep",
                 "foundations.mlp": "deep"}
MESSAGE = re.compile(r"^ModuleNotFoundError: (companion[.\w]+) needs the '(\w+)' extra "
                     r"\((\w+) is not installed\): pip install \"retention-companion\[\2\]\"$")


def _env() -> dict[str, str]:
    """This environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _run(args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel, install it with no extras into a fresh venv; the venv's paths."""
    work = tmp_path_factory.mktemp("light")
    assert ROOT not in work.parents
    # build from a copy of the sources: tests/test_package_build.py may build in the
    # checkout at the same time (pytest-xdist), and both would write its build/ folder
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "companion", src / "companion",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _ok(_run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
              work / "dist", src], cwd=work))
    (wheel,) = (work / "dist").glob("*.whl")
    venv = work / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work))
    python = venv / "bin" / "python"
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{name}=={importlib.metadata.version(name)}\n"
                                   for name in CORE))
    # this environment's pip installs into the venv (--python), which needs no pip of its own
    _ok(_run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
              "--no-compile", "--disable-pip-version-check", "--constraint", constraints,
              wheel], cwd=work, timeout=600))
    return {"work": work, "wheel": wheel, "python": python,
            "script": venv / "bin" / "retention-companion"}


@pytest.fixture(scope="module")
def orders(light) -> Path:
    """A synthetic shop's order export, as a shop would hand it over."""
    path = light["work"] / "orders.csv"
    data.synthetic_shop(n_customers=120, n_products=80, months=12, seed=3).to_csv(
        path, index=False)
    return path


def test_wheel_requires_only_the_core(light):
    with zipfile.ZipFile(light["wheel"]) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(name).decode())
    unconditional = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in unconditional}
    assert names == {n.lower() for n in CORE}
    assert not names & set(HEAVY)
    assert set(_optional.EXTRAS) <= set(metadata.get_all("Provides-Extra"))


def test_light_environment_has_no_extra(light):
    code = ("import importlib.metadata as m, importlib.util as u, json, sys, companion; "
            f"print(json.dumps({{'importable': [p for p in {OPTIONAL!r} if u.find_spec(p)], "
            "'installed': sorted(d.metadata['Name'].lower() for d in m.distributions()), "
            "'companion': companion.__file__}))")
    found = json.loads(_ok(_run([light["python"], "-c", code], cwd=light["work"])).stdout)
    assert found["importable"] == []
    assert not set(found["installed"]) & set(HEAVY), found["installed"]
    assert {n.lower() for n in CORE} <= set(found["installed"])
    venv = light["python"].parents[1]
    assert Path(found["companion"]).is_relative_to(venv), found["companion"]


def test_four_commands_run_and_match_the_full_install(light, orders, tmp_path, capsys):
    """validate, report, recommend and churn, through the installed console script; each
    output equals this environment's (every extra installed)."""
    here, there = tmp_path / "full", light["work"] / "out"
    here.mkdir()
    there.mkdir()

    def commands(folder: Path) -> list[list[str]]:
        return [[command, str(orders), *options, "--no-progress"] for command, options in [
            ("validate", []),
            ("report", ["-o", str(folder / "report.md")]),
            ("recommend", ["-o", str(folder / "top.csv"), "-k", "5"]),
            ("churn", ["-o", str(folder / "churn.csv"), "--horizon-days", "60"]),
        ]]

    for light_args, full_args in zip(commands(there), commands(here), strict=True):
        done = _ok(_run([light["script"], *light_args], cwd=light["work"]))
        assert "Traceback" not in done.stderr, done.stderr
        assert cli.main(full_args) == 0
        full_stdout = capsys.readouterr().out
        if light_args[0] == "validate":
            assert "order lines" in done.stdout
            assert done.stdout == full_stdout
    # without tabulate (no extra brings it) the cleaning table is plain text: compare the
    # retention section, which the report writes itself
    light_report = (there / "report.md").read_text()
    assert "## Retention" in light_report
    assert (light_report.split("## Retention")[1]
            == (here / "report.md").read_text().split("## Retention")[1])
    for name in ("top.csv", "churn.csv"):
        got = pd.read_csv(there / name, dtype={"stock_code": "string"})
        want = pd.read_csv(here / name, dtype={"stock_code": "string"})
        assert len(got) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)


#: calls into modules that import fine, which need an extra: (call, extra, package)
CALLS = [
    ("from companion.ops import automl\n"
     "automl.search(lambda p: 0.0, {'x': ('int', 0, 1)}, n_trials=1)", "tune", "optuna"),
    ("from companion.apps import supply\nsupply.GBMForecaster().fit(None, 0, None)", "rank",
     "lightgbm"),
    ("from companion.retention import churn\nchurn.SequenceChurn().fit(None)", "deep", "keras"),
    # stops before it downloads anything
    ("from companion import data\ndata.download_dataset('online_retail', directory='dl')",
     "data", "openpyxl"),
]
#: run in the light environment: import every module, then make each call of CALLS
PROBE = """
import importlib, json, pkgutil, sys, companion
def line(err):
    return f"{type(err).__name__}: {err}"
imports, calls = {}, []
for m in pkgutil.walk_packages(companion.__path__, "companion."):
    name = m.name.removeprefix("companion.")
    try:
        importlib.import_module(m.name)
        imports[name] = ""
    except ImportError as err:
        imports[name] = line(err)
for call in json.loads(sys.argv[1]):
    try:
        exec(call, {})
        calls.append("no error")
    except ImportError as err:
        calls.append(line(err))
print(json.dumps({"imports": imports, "calls": calls}))
"""


@pytest.fixture(scope="module")
def probe(light) -> dict:
    calls = json.dumps([call for call, _, _ in CALLS])
    return json.loads(_ok(_run([light["python"], "-c", PROBE, calls], cwd=light["work"]))
                      .stdout)


def test_each_module_imports_or_names_its_extra(light, probe):
    """Every module imports without the extras, except those that are nothing without
    one; those stop with one line naming the extra and the command."""
    errors = probe["imports"]
    modules = {".".join(p.relative_to(ROOT / "companion").with_suffix("").parts)
               .removesuffix(".__init__") for p in (ROOT / "companion").rglob("*.py")}
    assert set(errors) - {"__main__"} == modules - {"__init__", "__main__"}
    failed = {m: e for m, e in errors.items() if e}
    assert set(failed) == set(NEED_AN_EXTRA), failed
    for module, line in failed.items():
        match = MESSAGE.match(line)
        assert match, line
        assert match.group(2) == NEED_AN_EXTRA[module]
    done = _run([light["python"], "-c", "import companion.recsys.deep"], cwd=light["work"])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: companion.recsys.deep needs the 'deep' extra (keras is not "
        "installed): pip install \"retention-companion[deep]\"")
    assert "No module named" not in done.stderr


@pytest.mark.parametrize("index", range(len(CALLS)), ids=[c[2] for c in CALLS])
def test_a_call_that_needs_an_extra_names_it(probe, index):
    call, extra, package = CALLS[index]
    match = MESSAGE.match(probe["calls"][index])
    assert match, probe["calls"][index]
    assert match.group(2, 3) == (extra, package)
    words = call.split()
    module = f"{words[1]}.{words[3]}"  # from <package> import <module>
    assert match.group(1) == module or match.group(1).startswith(module + ".")


def test_serve_without_the_extra_is_one_line(light):
    done = _run([light["script"], "serve", "--port", "8123"], cwd=light["work"], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "companion.ops.serving.cli needs the 'serve' extra (fastapi is not installed): "
        "pip install \"retention-companion[serve]\"")
