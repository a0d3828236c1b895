"""The companion's import structure: one-way floors, no cycles, no private names shared,
and no long module without a reason.

Every ``import`` of a companion module is read from the source (function-level imports
included, since they are edges too), so the checks need nothing installed. The floors,
from the bottom: the helpers ``_checks``, ``_optional``, ``_compat``, ``cache`` and
``exceptions``; then
``data``, ``foundations``, ``recsys``, ``retention``, ``apps`` and ``ops``; on top the
modules for readers and the command line (``shop``, ``cli``, ``book``, ``plotting``). A
module may import from its own floor or a lower one, never from a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "companion"
FLOORS = ["helpers", "data", "foundations", "recsys", "retention", "apps", "ops", "top"]
HELPERS = {"_checks", "_optional", "_compat", "cache", "exceptions"}


def module_names(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, str]]:
    """``(module, imported name)`` for every import of a companion module in ``path``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("companion")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.startswith("companion"):
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    out.append((full, "") if full in known else (source, alias.name))
    return out


def floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"  # the package itself re-exports for readers
    if parts[1] in FLOORS:
        return parts[1]
    return "helpers" if parts[1] in HELPERS else "top"


def graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Module -> imported modules, and every ``(module, source, name)`` of a private name
    imported from another module."""
    names = module_names(root)
    edges, private = {}, []
    for name, path in names.items():
        edges[name] = set()
        for source, imported in imports_of(name, path, set(names)):
            while source not in names and "." in source:
                source = source.rsplit(".", 1)[0]
            if source != name:
                edges[name].add(source)
            if imported.startswith("_") and not imported.startswith("__"):
                private.append((name, source, imported))
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    rank = {name: i for i, name in enumerate(FLOORS)}
    return sorted((m, t) for m, targets in edges.items() for t in targets
                  if rank[floor(t)] > rank[floor(m)])


def test_no_cycles():
    edges, _ = graph()
    assert not cycles(edges)


def test_every_import_points_to_the_same_floor_or_below():
    edges, _ = graph()
    assert not upward(edges)


def test_no_private_name_is_imported_from_another_module():
    _, private = graph()
    assert not private, private


def test_every_subpackage_sits_on_a_floor():
    names = module_names()
    packages = {n.split(".")[1] for n in names if n.count(".") >= 1}
    assert packages - HELPERS - {"shop", "cli", "book", "plotting", "__main__"} <= set(FLOORS)


def test_every_package_is_in_the_wheel():
    # setuptools lists the packages by hand (pyproject.toml): a new subpackage left out
    # would be missing from the wheel
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT.parent).parts) for p in ROOT.rglob("__init__.py")}
    assert listed == found


#: a module longer than this says at the top of its docstring why it is one module
LONG_MODULE = 650


def long_modules_without_a_reason(root: Path = ROOT) -> list[str]:
    out = []
    for name, path in module_names(root).items():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > LONG_MODULE:
            doc = ast.get_docstring(ast.parse(source)) or ""
            if "**Why one module.**" not in doc:
                out.append(name)
    return out


def test_every_long_module_says_why_it_is_one():
    assert not long_modules_without_a_reason()


@pytest.fixture
def bad_package(tmp_path):
    """A small package with a cycle, an upward import and a private import."""
    pkg = tmp_path / "companion"
    for folder in ("", "data", "recsys"):
        (pkg / folder).mkdir(parents=True, exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from companion.recsys import b\n")
    (pkg / "recsys" / "b.py").write_text(
        "def f():\n    from companion.data.a import _hidden\n")
    (pkg / "recsys" / "long.py").write_text('"""Many ideas."""\n' + "x = 1\n" * 700)
    return pkg


def test_the_checks_catch_each_defect(bad_package):
    edges, private = graph(bad_package)
    assert cycles(edges) == [["companion.data.a", "companion.recsys.b"]]
    assert upward(edges) == [("companion.data.a", "companion.recsys.b")]
    assert private == [("companion.recsys.b", "companion.data.a", "_hidden")]
    assert long_modules_without_a_reason(bad_package) == ["companion.recsys.long"]
