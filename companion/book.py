"""Helpers for the book's notebooks: glued numbers and the one way tables are shown.

:func:`glue` stores a value for the prose. :func:`table_html` renders a frame as every
table of the book is rendered: integers as integers with thousands separators, other
numbers to a few significant digits (the same number of decimals down a column), times to
three significant digits, a dash for a missing value, and every row and column shown.
:func:`use_book_tables` makes IPython render each displayed frame or Series that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

MISSING = "–"
#: column names that hold durations (shown to three significant digits)
TIME_WORDS = ("second", "latency", "time (s)", " ms", "(ms)")


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


def _is_integral(values: np.ndarray) -> bool:
    return bool(len(values)) and bool(np.all(np.abs(values) < 1e15)) and bool(
        np.all(values == np.round(values)))


def _decimals(largest: float, digits: int) -> int:
    """Decimals that give ``largest`` about ``digits`` significant digits (0 to 8)."""
    if largest == 0 or not math.isfinite(largest):
        return 0
    return int(min(8, max(0, digits - 1 - math.floor(math.log10(largest)))))


def format_number(value: object, *, digits: int = 4) -> str:
    """One value as the book shows it; see :func:`number_formatter` for columns."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return MISSING
    if value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if value == round(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.{_decimals(abs(value), digits)}f}"
    return str(value)


def format_index(value: object) -> str:
    """An index label: a float to at most six significant digits (``0.3``, not
    ``0.30000000000000004``), a whole number without a decimal point."""
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return f"{int(value):,}" if value == round(value) else f"{float(value):.6g}"
    return format_number(value)


def number_formatter(values: pd.Series, *, digits: int = 4,
                     is_time: bool = False) -> Callable[[object], str] | None:
    """The formatter of one column: ``None`` leaves a non-numeric column as it is.

    A numeric column whose values are all whole numbers is shown as integers; otherwise
    every value gets the decimals that give the column's largest magnitude ``digits``
    significant digits (three for a column of times), so that the decimals line up.
    """
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_datetime64_any_dtype(values):
        times = values.dropna()
        if len(times) and (times == times.dt.normalize()).all():
            return lambda v: v.strftime("%Y-%m-%d")  # dates, not midnights
        return None
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        finite = numbers[np.isfinite(numbers)]
        if _is_integral(finite):
            return lambda v: format_number(int(v)) if math.isfinite(v) else str(v)
        largest = float(np.max(np.abs(finite))) if len(finite) else 0.0
        sig = 3 if is_time else digits
        decimals = _decimals(largest, sig)

        def column_format(v: float) -> str:
            if not math.isfinite(v):
                return str(v)
            if v != 0 and abs(v) < 0.5 * 10.0 ** -decimals:  # would show as 0
                return f"{v:.{sig - 1}e}" if abs(v) < 1e-6 else \
                    f"{v:.{_decimals(abs(v), sig)}f}"
            return f"{v:,.{decimals}f}"

        return column_format
    if values.dtype == object:
        return lambda v: format_number(v, digits=digits)
    return None


def _is_time_column(label: object) -> bool:
    text = " ".join(map(str, label)) if isinstance(label, tuple) else str(label)
    return any(word in text.lower() for word in TIME_WORDS)


def table_html(frame: pd.DataFrame | pd.Series, *, digits: int = 4) -> str:
    """HTML of ``frame`` as the book shows tables (a Series becomes one column).

    Nothing is cut off: every row and column is shown. A float index (a grid of
    weights, say) is formatted like a column; a default index (0, 1, 2, ... without a
    name) says nothing and is left out.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame(name=frame.name if frame.name is not None else "value")
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"table_html expects a DataFrame or Series, got "
                        f"{type(frame).__name__}.")
    formatters = [number_formatter(frame.iloc[:, k], digits=digits,
                                   is_time=_is_time_column(label))
                  for k, label in enumerate(frame.columns)]
    if not isinstance(frame.index, pd.MultiIndex) and pd.api.types.is_float_dtype(
            frame.index):
        frame = frame.set_axis([format_index(v) for v in frame.index], axis=0)
    shown = pd.DataFrame(
        {k: [MISSING if _is_missing(v) else (fmt or str)(v)
             for v in frame.iloc[:, k]] for k, fmt in enumerate(formatters)},
        index=frame.index)
    shown.columns = frame.columns
    plain = (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None
             and frame.index.start == 0 and frame.index.step == 1)
    return shown.to_html(max_rows=None, max_cols=None, show_dimensions=False,
                         border=0, notebook=True, index=not plain)


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array in a cell is not missing
        return False


def use_book_tables() -> bool:
    """Render every DataFrame and Series displayed in this IPython session by
    :func:`table_html`. Returns False (and does nothing) outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    html = shell.display_formatter.formatters["text/html"]
    html.for_type(pd.DataFrame, _display_html)
    html.for_type(pd.Series, _display_html)
    return True


#: frames longer than this are left to pandas' own (cut-off) display: a data set shown by
#: mistake must not turn into a page of a million rows
MAX_ROWS = 1000


def _display_html(frame: pd.DataFrame | pd.Series) -> str:
    if len(frame) > MAX_ROWS:  # pandas' display, cut off by its display options
        return (frame.to_frame() if isinstance(frame, pd.Series) else frame)._repr_html_()
    return table_html(frame)
