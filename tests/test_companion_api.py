"""The docstring fixes of book/_ext/companion_api.py: escapes only where RST needs them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))

from companion_api import _notes_after_sections  # noqa: E402


def _fixed(*lines: str) -> list[str]:
    lines = list(lines)
    _notes_after_sections(None, "function", "f", None, None, lines)
    return lines


def test_literals_in_a_list_are_left_alone():
    line = "Columns (``InvoiceNo``, ``UnitPrice``, ``Customer ID``...), in order."
    assert _fixed(line) == [line]


def test_a_literal_glued_to_a_word_is_ended():
    assert _fixed("The ``metric``@k and ``k``-th.") == ["The ``metric``\\ @k and ``k``-th."]


def test_bars_are_escaped_in_prose_only():
    got = _fixed("Share of |relevant| items, :math:`|B_u|` and ``a|b|c``.", "",
                 ".. math::", "", "   \\frac{|a|}{|C_c|}", "", "After |x|.")
    assert got == ["Share of \\|relevant\\| items, :math:`|B_u|` and ``a|b|c``.", "",
                   ".. math::", "", "   \\frac{|a|}{|C_c|}", "", "After \\|x\\|."]


def test_prose_after_a_section_becomes_notes():
    got = _fixed("Parameters", "----------", "k : int", "    How many.",
                 "This function is slow on large inputs and says so here.")
    assert got[4:6] == ["Notes", "-----"]


def test_every_public_function_and_class_is_in_its_modules_all():
    # autodoc documents a module's __all__ only: a public name left out of it is missing
    # from the API page, and a :func: reference to it breaks the strict build
    import importlib
    import inspect
    import pkgutil

    import companion

    missing = {}
    for info in pkgutil.walk_packages(companion.__path__, "companion."):
        if info.name.endswith(("__main__", "_compat")):
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is None:
            continue
        public = [n for n, o in vars(module).items()
                  if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
                  and o.__module__ == module.__name__]
        if set(public) - set(names):
            missing[info.name] = sorted(set(public) - set(names))
    assert not missing, missing
