"""Fail on an ``assert`` in a chapter that no executed code could make fail.

Every chapter (``book/*.md``, a MyST notebook) checks its claims with asserts. An assert
whose operands are all literals, or names that the same cell defines only from literals,
tests nothing the book computed: ``a = 3; b = a * 2; assert b > 5`` holds whatever the
data and the companion do. This tool parses each chapter's code cells with :mod:`ast` and
reports such asserts with file, line and source; exit status 1 if there is any.

What counts as literal, within one cell (a name's value is literal when *every*
assignment to it in the cell is; the greatest such set is taken, so ``rate = rate / 2``
in a loop keeps a literal ``rate`` literal):

* constants, and containers, operators, comparisons, f-strings, subscripts, slices,
  attributes and comprehensions made only of literals;
* names assigned (plainly, augmented, by unpacking, as ``for`` targets or with ``:=``)
  only from literal values, transitively: ``b = a`` is literal when ``a`` is;
* calls of pure functions with literal arguments: Python's pure builtins (``len``,
  ``sum``, ``int``, ``sorted`` ...), ``math``, ``statistics``, ``operator``, NumPy (not
  ``numpy.random`` nor its file readers), pandas constructors and operations (not
  ``read_*``), ``scipy.stats`` and ``scipy.special``; methods of literal values
  (``"a".replace("a", "b")``, ``df.sum()`` for a frame typed into the cell); and functions
  or lambdas defined in the same cell whose results are literal when their parameters
  are.

A name stops being literal when the cell changes it from something that is not: an item
or attribute assignment (``table.loc[i] = f(data)``) or a method call with a non-literal
argument (``rows.append(f(data))``). An assignment under an ``if``, ``while``, ``for``,
``with`` or ``try`` also depends on what decides whether it runs, its test, iterable,
context or tried statements: ``n += 1`` in a loop over data is not literal, nor is a flag
set to ``True`` in an ``except`` clause. Anything else (a name from another cell, a call of
the companion or of any other function, a file read, a random draw) is not literal, so
``x = f(data); assert x > 5`` passes.

Usage: ``python tools/check_asserts.py [chapter.md ...]`` (default: every ``book/*.md``).
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

FENCE = re.compile(r"^(?P<ticks>`{3,})\{code-cell\}")

PURE_BUILTINS = frozenset({
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "chr", "complex", "dict",
    "divmod", "enumerate", "filter", "float", "format", "frozenset", "hex", "int",
    "isinstance", "len", "list", "map", "max", "min", "oct", "ord", "pow", "range", "repr",
    "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "type", "zip",
})
# Modules (and their members) whose functions compute only from their arguments.
PURE_MODULES = ("math", "cmath", "statistics", "operator", "fractions", "decimal",
                "numpy", "pandas", "scipy.stats", "scipy.special")
# ... except these members, which read files, draw random numbers or touch the system.
IMPURE_MEMBERS = ("numpy.random", "numpy.load", "numpy.loadtxt", "numpy.genfromtxt",
                  "numpy.fromfile", "numpy.memmap", "numpy.fromregex", "numpy.save",
                  "numpy.savez", "numpy.savetxt", "pandas.read_", "pandas.io",
                  "pandas.HDFStore", "pandas.ExcelFile", "pandas.ExcelWriter",
                  "scipy.stats.qmc")
CONVENTIONAL = {"np": "numpy", "pd": "pandas", "math": "math"}


def is_pure_path(path: str) -> bool:
    """Whether a dotted name (``numpy.log``) is a pure module or one of its members.

    An entry of ``IMPURE_MEMBERS`` ending in ``_`` is a prefix (``pandas.read_csv``);
    any other names a member and everything under it.
    """
    def under(prefix: str) -> bool:
        if prefix.endswith("_"):
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + ".")

    return any(map(under, PURE_MODULES)) and not any(map(under, IMPURE_MEMBERS))


@dataclass(frozen=True)
class Cell:
    """One code cell: its source and the file line of its first source line."""

    path: Path
    first_line: int
    source: str


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    source: str

    def __str__(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: assert cannot fail (literal operands): {self.source}"


def code_cells(path: Path) -> list[Cell]:
    """The ``{code-cell}`` blocks of a MyST notebook, without their option lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    cells: list[Cell] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        ticks = match["ticks"]
        i += 1
        # options: ":key: value" lines, or a "---" YAML block, directly after the fence
        if i < len(lines) and lines[i].strip() == "---":
            i += 1
            while i < len(lines) and lines[i].strip() != "---":
                i += 1
            i += 1
        else:
            while i < len(lines) and lines[i].startswith(":"):
                i += 1
        start = i
        while i < len(lines) and lines[i].rstrip() != ticks:
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}:{start}: code cell not closed by {ticks}")
        body = lines[start:i]
        # IPython magics and shell escapes are not Python; keep the line count
        body = ["" if re.match(r"^\s*[%!]", line) else line for line in body]
        cells.append(Cell(path, start + 1, "\n".join(body)))
        i += 1
    return cells


@dataclass
class Binding:
    """How a name gets a value: from expressions, or opaquely (import, def, with ...).

    ``exprs`` holds the value's expressions and the guards that decide whether the
    assignment runs (an ``if`` test, a loop's iterable, a ``try`` body): ``n += 1`` in a
    loop over data is not literal. ``mutation`` marks a change to an existing value (an
    item or attribute assignment, a method call), which alone does not define a name.
    """

    exprs: list[ast.expr] = field(default_factory=list)
    opaque: bool = False
    module: str | None = None            # an import: the dotted path it names
    function: ast.AST | None = None      # a def in this scope
    mutation: bool = False


# A guard that is never literal: a try body whose statements may raise by themselves.
MAY_RAISE = ast.Name(id="<may raise>", ctx=ast.Load())


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _arg_names(args: ast.arguments) -> list[str]:
    every = args.posonlyargs + args.args + args.kwonlyargs
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    return [a.arg for a in every]


def _try_guards(body: list[ast.stmt]) -> list[ast.expr]:
    """What decides how far a ``try`` body gets: its expressions, and a guard that is
    never literal if it holds a statement that may raise without one (an import)."""
    guards: list[ast.expr] = []
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Raise, ast.Assert, ast.Delete)):
            guards.append(MAY_RAISE)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                guards.append(child)
            elif isinstance(child, (ast.stmt, ast.excepthandler, ast.withitem)):
                stack.append(child)
    return guards


class Scope:
    """The names one cell (or one function in it) binds, and which of them are literal."""

    def __init__(self, body: list[ast.stmt], parent: Scope | None, imports: dict[str, str],
                 params: list[str] = (), params_literal: bool = False):
        self.parent = parent
        self.imports = imports
        self.bindings: dict[str, list[Binding]] = {}
        for name in params:
            self._bind(name, Binding(opaque=not params_literal))
        self._collect_all(body, [])
        self._sweep(body)
        self.literal: set[str] = set()
        self.pure_functions: set[str] = set()
        self._solve()

    # -- collecting bindings -------------------------------------------------------
    def _bind(self, name: str, binding: Binding) -> None:
        self.bindings.setdefault(name, []).append(binding)

    def _bind_target(self, target: ast.expr, exprs: list[ast.expr]) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, Binding(exprs=list(exprs)))
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._bind_target(elt, exprs)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, exprs)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            # changing an item or attribute of a name changes the name's value
            root = _root_name(target)
            if root is not None:
                parts = list(exprs)
                node = target
                while isinstance(node, (ast.Subscript, ast.Attribute)):
                    if isinstance(node, ast.Subscript):
                        parts.append(node.slice)
                    node = node.value
                self._bind(root, Binding(exprs=parts, mutation=True))

    def _collect_all(self, body: list[ast.stmt], guards: list[ast.expr]) -> None:
        for stmt in body:
            self._collect(stmt, guards)

    def _collect(self, stmt: ast.stmt, guards: list[ast.expr]) -> None:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self._bind_target(target, [stmt.value, *guards])
        elif isinstance(stmt, ast.AugAssign):
            self._bind_target(stmt.target, [stmt.value, *guards])
        elif isinstance(stmt, ast.AnnAssign):
            value = [stmt.value] if stmt.value is not None else []
            self._bind_target(stmt.target, value + guards)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._bind(stmt.name, Binding(function=stmt))
        elif isinstance(stmt, ast.ClassDef):
            self._bind(stmt.name, Binding(opaque=True))
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self._bind(alias.asname, Binding(module=alias.name))
                else:
                    head = alias.name.split(".")[0]
                    self._bind(head, Binding(module=head))
        elif isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                path = f"{stmt.module}.{alias.name}" if stmt.module else alias.name
                self._bind(alias.asname or alias.name, Binding(module=path))
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            if isinstance(func, ast.Attribute):
                # a method call may change its object: rows.append(f(data))
                root = _root_name(func.value)
                if root is not None:
                    args = list(stmt.value.args) + [k.value for k in stmt.value.keywords]
                    self._bind(root, Binding(exprs=args + guards, mutation=True))
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            inner = [stmt.iter, *guards]
            self._bind_target(stmt.target, inner)
            self._collect_all(stmt.body, inner)
            self._collect_all(stmt.orelse, inner)
        elif isinstance(stmt, (ast.While, ast.If)):
            inner = [stmt.test, *guards]
            self._collect_all(stmt.body, inner)
            self._collect_all(stmt.orelse, inner)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            inner = [item.context_expr for item in stmt.items] + guards
            self._collect_all(stmt.body, inner)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            inner = _try_guards(stmt.body) + guards
            self._collect_all(stmt.body, inner)
            for handler in stmt.handlers:
                if handler.name:
                    self._bind(handler.name, Binding(opaque=True))
                self._collect_all(handler.body, inner)
            self._collect_all(stmt.orelse, inner)
            self._collect_all(stmt.finalbody, guards)
        elif isinstance(stmt, ast.Match):
            inner = [stmt.subject, *guards]
            for case in stmt.cases:
                self._collect_all(case.body, inner)

    def _sweep(self, body: list[ast.stmt]) -> None:
        """Walrus targets, and any other stored name not yet seen, in this scope only."""
        stack: list[ast.AST] = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                 ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                                 ast.GeneratorExp)):
                if hasattr(node, "decorator_list"):
                    stack.extend(node.decorator_list)
                continue
            if isinstance(node, ast.NamedExpr):
                self._bind(node.target.id, Binding(exprs=[node.value]))
            elif (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
                  and node.id not in self.bindings):
                self._bind(node.id, Binding(opaque=True))   # with ... as x, match captures
            stack.extend(ast.iter_child_nodes(node))

    # -- solving ----------------------------------------------------------------------
    def _solve(self) -> None:
        """The greatest set of literal names and pure functions consistent with the cell."""
        self.literal = {name for name, binds in self.bindings.items()
                        if all(not b.opaque and b.module is None and b.function is None
                               for b in binds)
                        and any(not b.mutation for b in binds)}
        self.pure_functions = {name for name, binds in self.bindings.items()
                               if len(binds) == 1 and binds[0].function is not None}
        changed = True
        while changed:
            changed = False
            for name in sorted(self.literal):
                if not all(self.is_literal(e) for b in self.bindings[name] for e in b.exprs):
                    self.literal.discard(name)
                    changed = True
            for name in sorted(self.pure_functions):
                if not self._function_is_pure(self.bindings[name][0].function):
                    self.pure_functions.discard(name)
                    changed = True

    def _function_is_pure(self, func: ast.FunctionDef) -> bool:
        """Whether the function returns literals whenever its arguments are literal."""
        inner = Scope(func.body, self, self.imports, _arg_names(func.args), params_literal=True)
        returns: list[ast.expr] = []
        stack: list[ast.AST] = list(func.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                 ast.Lambda)):
                continue
            if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
                return False
            if isinstance(node, ast.Return) and node.value is not None:
                returns.append(node.value)
            stack.extend(ast.iter_child_nodes(node))
        return all(inner.is_literal(value) for value in returns)

    # -- names ----------------------------------------------------------------------
    def _lookup(self, name: str) -> tuple[Scope | None, list[Binding]]:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope, scope.bindings[name]
            scope = scope.parent
        return None, []

    def module_path(self, name: str) -> str | None:
        """The dotted module path a name stands for, if it is an import."""
        scope, binds = self._lookup(name)
        if scope is None:
            return self.imports.get(name, CONVENTIONAL.get(name))
        if binds and all(b.module is not None for b in binds):
            paths = {b.module for b in binds}
            return paths.pop() if len(paths) == 1 else None
        return None

    def _dotted(self, node: ast.expr) -> str | None:
        """``np.linalg.norm`` -> ``numpy.linalg.norm`` when the root is an import."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.module_path(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def _name_is_literal(self, name: str, extra: frozenset[str]) -> bool:
        if name in extra:
            return True
        scope, binds = self._lookup(name)
        if scope is None:
            path = self.module_path(name)
            if path is not None:
                return is_pure_path(path)
            return name in PURE_BUILTINS and hasattr(builtins, name)
        if name in scope.literal or name in scope.pure_functions:
            return True
        path = scope.module_path(name)
        return path is not None and is_pure_path(path)

    # -- expressions ------------------------------------------------------------------
    def is_literal(self, node: ast.AST | None, extra: frozenset[str] = frozenset()) -> bool:
        """Whether an expression's value follows from literals alone."""
        lit = self.is_literal
        if node is None:
            return True
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return self._name_is_literal(node.id, extra)
        if isinstance(node, ast.Attribute):
            path = self._dotted(node)
            if path is not None:
                return is_pure_path(path)
            return lit(node.value, extra)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(lit(e, extra) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(lit(k, extra) for k in node.keys) and \
                all(lit(v, extra) for v in node.values)
        if isinstance(node, (ast.Starred, ast.FormattedValue, ast.NamedExpr)):
            ok = lit(node.value, extra)
            return ok and lit(getattr(node, "format_spec", None), extra)
        if isinstance(node, ast.JoinedStr):
            return all(lit(v, extra) for v in node.values)
        if isinstance(node, ast.BinOp):
            return lit(node.left, extra) and lit(node.right, extra)
        if isinstance(node, ast.UnaryOp):
            return lit(node.operand, extra)
        if isinstance(node, ast.BoolOp):
            return all(lit(v, extra) for v in node.values)
        if isinstance(node, ast.Compare):
            return lit(node.left, extra) and all(lit(c, extra) for c in node.comparators)
        if isinstance(node, ast.IfExp):
            return all(lit(n, extra) for n in (node.test, node.body, node.orelse))
        if isinstance(node, ast.Subscript):
            return lit(node.value, extra) and lit(node.slice, extra)
        if isinstance(node, ast.Slice):
            return all(lit(n, extra) for n in (node.lower, node.upper, node.step))
        if isinstance(node, ast.Call):
            return (self._callee_is_pure(node.func, extra)
                    and all(lit(a, extra) for a in node.args)
                    and all(lit(k.value, extra) for k in node.keywords))
        if isinstance(node, ast.Lambda):
            return lit(node.body, extra | frozenset(_arg_names(node.args)))
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = extra
            for gen in node.generators:
                if not lit(gen.iter, inner):
                    return False
                inner = inner | frozenset(n.id for n in ast.walk(gen.target)
                                          if isinstance(n, ast.Name))
                if not all(lit(cond, inner) for cond in gen.ifs):
                    return False
            if isinstance(node, ast.DictComp):
                return lit(node.key, inner) and lit(node.value, inner)
            return lit(node.elt, inner)
        return False   # await, yield and anything unknown: not provably literal

    def _callee_is_pure(self, func: ast.expr, extra: frozenset[str]) -> bool:
        if isinstance(func, ast.Name):
            return self._name_is_literal(func.id, extra)
        if isinstance(func, ast.Attribute):
            path = self._dotted(func)
            if path is not None:
                return is_pure_path(path)
            return self.is_literal(func.value, extra)   # a method of a literal value
        return self.is_literal(func, extra)


def chapter_imports(cells: list[Cell]) -> dict[str, str]:
    """Import aliases across a chapter's cells: ``np`` -> ``numpy``, ``norm`` ->
    ``scipy.stats.norm``."""
    aliases: dict[str, str] = {}
    for cell in cells:
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        aliases[head] = head
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _asserts_by_scope(tree: ast.Module, cell_scope: Scope, imports: dict[str, str]):
    """Each assert of a cell with the scope its names resolve in."""
    stack: list[tuple[ast.AST, Scope]] = [(stmt, cell_scope) for stmt in tree.body]
    while stack:
        node, scope = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = Scope(node.body, scope, imports, _arg_names(node.args))
            stack.extend((child, inner) for child in node.body)
            continue
        if isinstance(node, ast.Assert):
            yield node, scope
        stack.extend((child, scope) for child in ast.iter_child_nodes(node))


def check_cell(cell: Cell, imports: dict[str, str]) -> list[Finding]:
    """The asserts of one cell whose test is literal."""
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise SyntaxError(f"{cell.path}:{cell.first_line + (exc.lineno or 1) - 1}: "
                          f"code cell does not parse: {exc.msg}") from exc
    scope = Scope(tree.body, None, imports)
    lines = cell.source.splitlines()
    found = []
    for node, owner in _asserts_by_scope(tree, scope, imports):
        if owner.is_literal(node.test):
            text = " ".join(line.strip() for line in
                            lines[node.lineno - 1:(node.end_lineno or node.lineno)])
            found.append(Finding(cell.path, cell.first_line + node.lineno - 1, text))
    return sorted(found, key=lambda f: f.line)


def check_chapter(path: Path) -> list[Finding]:
    cells = code_cells(path)
    imports = chapter_imports(cells)
    return [finding for cell in cells for finding in check_cell(cell, imports)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] if args else sorted(BOOK.glob("*.md"))
    findings: list[Finding] = []
    for path in paths:
        try:
            findings += check_chapter(path)
        except (SyntaxError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} assert(s) that cannot fail: check a value that executed "
              "code computes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
