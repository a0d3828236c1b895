"""``companion._optional.require``: one line naming the extra, and the table of extras."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from companion import _optional
from companion._optional import require

ROOT = Path(__file__).resolve().parents[1]


def _package(root, name: str, body: str = "") -> None:
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text(body)


def test_returns_the_module(tmp_path, monkeypatch):
    _package(tmp_path, "lightcore_present", "VALUE = 7\n")
    (tmp_path / "lightcore_present" / "sub.py").write_text("VALUE = 8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert require("lightcore_present", "deep").VALUE == 7
    assert require("lightcore_present.sub", "deep").VALUE == 8


def test_a_missing_package_is_one_line_naming_the_extra():
    with pytest.raises(ModuleNotFoundError) as caught:
        require("lightcore_absent.layers", "rank")
    assert str(caught.value) == (
        f"{__name__} needs the 'rank' extra (lightcore_absent is not installed): "
        'pip install "retention-companion[rank]"')
    assert caught.value.name == "lightcore_absent"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ModuleNotFoundError, match="needs the 'tune' extra"):
        require("lightcore_absent", "tune", load=False)


def test_check_only_does_not_import(tmp_path, monkeypatch):
    _package(tmp_path, "lightcore_heavy", "raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert require("lightcore_heavy", "deep", load=False) is None
    assert "lightcore_heavy" not in sys.modules
    with pytest.raises(RuntimeError, match="imported"):
        require("lightcore_heavy", "deep")


def test_a_package_blocked_in_sys_modules_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightcore_blocked", None)
    for load in (True, False):
        with pytest.raises(ModuleNotFoundError, match="lightcore_blocked is not installed"):
            require("lightcore_blocked", "serve", load=load)


def test_a_missing_package_of_the_same_extra_is_named(tmp_path, monkeypatch):
    """Keras without TensorFlow: the message names TensorFlow and the 'deep' extra."""
    _package(tmp_path, "lightcore_front", "import lightcore_backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_optional.EXTRAS, "deep", ("lightcore_front", "lightcore_backend"))
    with pytest.raises(ModuleNotFoundError, match=r"^\S+ needs the 'deep' extra "
                       r"\(lightcore_backend is not installed\)"):
        require("lightcore_front", "deep")


def test_any_other_import_error_is_raised_unchanged(tmp_path, monkeypatch):
    _package(tmp_path, "lightcore_broken", "import lightcore_unrelated\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("lightcore_broken", "deep")
    assert str(caught.value) == "No module named 'lightcore_unrelated'"


def test_unknown_extra():
    with pytest.raises(ValueError, match="unknown extra 'gpu'"):
        require("numpy", "gpu")


def test_extras_table_matches_pyproject():
    """Every extra of the table is declared with exactly its packages, none of which is in
    the core; the distributions' names are also their import names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requirements}

    declared = project["optional-dependencies"]
    for extra, packages in _optional.EXTRAS.items():
        assert names(declared[extra]) == set(packages), extra
        assert not names(project["dependencies"]) & set(packages), extra
    assert names(project["dependencies"]) == {"numpy", "pandas", "pyarrow", "scikit-learn",
                                              "scipy", "matplotlib", "tqdm"}
