"""Helpers for the book's notebooks."""

from __future__ import annotations

import numpy as np


def glue(name: str, value: object) -> object:
    """Store ``value`` under ``name`` for the prose (``{glue:text}`name```) and return it.

    NumPy scalars are turned into Python numbers first, so that format specs such as
    ``:.1%`` work in the text. Nothing is displayed in the cell.
    """
    from myst_nb import glue as _glue

    if isinstance(value, np.generic):
        value = value.item()
    _glue(name, value, display=False)
    return value
