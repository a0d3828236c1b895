"""environment.yml must list exactly what pyproject.toml installs."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tools.check_book import toc_files

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if p != "-e ."}
    assert listed == wanted, (
        f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: "
        f"{sorted(listed - wanted)}"
    )
    assert "-e ." in pip
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_every_chapter_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(toc_files(toc))
    chapters = {
        f"book/{p.stem}" for p in (ROOT / "book").glob("*.md") if not p.name.startswith("_")
    }
    assert chapters == listed


def test_toc_files_walks_nested_entries():
    toc = {"root": "a", "parts": [{"chapters": [{"file": "b", "sections": [{"file": "c"}]}]}]}
    assert toc_files(toc) == ["a", "b", "c"]


def test_every_public_module_is_in_the_api_reference():
    import re

    page = (ROOT / "book" / "api.md").read_text()
    documented = set(re.findall(r"automodule:: companion\.([\w.]+)", page))
    modules = {".".join(p.relative_to(ROOT / "companion").with_suffix("").parts)
               .removesuffix(".__init__") for p in (ROOT / "companion").rglob("*.py")}
    modules = {m for m in modules if not any(part.startswith("_") for part in m.split("."))}
    assert documented == modules, (
        f"missing from book/api.md: {sorted(modules - documented)}; "
        f"not modules: {sorted(documented - modules)}")
