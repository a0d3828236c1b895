"""Input checks shared by the companion modules.

Every public function validates what it is given and raises an error that names the
offending column, value or file, in the style of scikit-learn's messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

#: Column kinds understood by :func:`check_frame`.
KINDS = ("string", "integer", "float", "number", "bool", "datetime")


def _examples(values: Iterable[object], n: int = 3) -> str:
    shown = [repr(v) for v in list(values)[:n]]
    return ", ".join(shown)


def check_frame(
    frame: object,
    schema: Mapping[str, str],
    *,
    name: str = "frame",
    allow_missing: Iterable[str] = (),
) -> pd.DataFrame:
    """Validate ``frame`` against ``schema`` and return a copy with coerced dtypes.

    Parameters
    ----------
    frame
        The object to check; it must be a non-empty :class:`pandas.DataFrame`.
    schema
        Mapping from column name to one of :data:`KINDS`.
    name
        What the frame is, used in error messages ("transactions", "interactions", ...).
    allow_missing
        Columns that may hold missing values. Every other column must be complete.

    Returns
    -------
    pandas.DataFrame
        A copy holding the schema's columns (others are kept after them), with date
        strings parsed, numbers stored as numbers and strings as the pandas string dtype.

    Raises
    ------
    TypeError
        If ``frame`` is not a DataFrame.
    ValueError
        If it is empty, lacks a column, or a column cannot be read as its kind. The
        message names the column and shows offending values.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}.")
    if frame.empty:
        raise ValueError(f"{name} is empty: it has no rows.")
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        hints = []
        present = [str(c) for c in frame.columns]
        lowered = {c.lower().replace(" ", "").replace("_", ""): c for c in present}
        for col in missing:
            key = col.lower().replace(" ", "").replace("_", "")
            close = [lowered[key]] if key in lowered else difflib.get_close_matches(
                col, present, n=1, cutoff=0.6
            )
            if close:
                hints.append(f"'{col}' (did you mean '{close[0]}'?)")
            else:
                hints.append(f"'{col}'")
        raise ValueError(
            f"{name} is missing column(s) {', '.join(hints)}; "
            f"it has columns {present}."
        )
    allow = set(allow_missing)
    out = frame.copy()
    for col, kind in schema.items():
        if kind not in KINDS:
            raise ValueError(f"unknown column kind {kind!r} for column '{col}'")
        out[col] = _coerce(out[col], kind, col, name)
        if col not in allow and out[col].isna().any():
            bad = out.index[out[col].isna()]
            raise ValueError(
                f"{name} column '{col}' has {len(bad)} missing value(s) "
                f"(first at index {_examples(bad)}); it must be complete."
            )
    return out


def _coerce(series: pd.Series, kind: str, col: str, name: str) -> pd.Series:
    where = f"{name} column '{col}'"
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            return series
        if pd.api.types.is_numeric_dtype(series) and not series.isna().all():
            raise ValueError(
                f"{where} must hold dates, got numeric dtype {series.dtype}."
            )
        parsed = pd.to_datetime(series, errors="coerce", format="mixed")
        bad = series[parsed.isna() & series.notna()]
        if len(bad):
            raise ValueError(
                f"{where} has {len(bad)} value(s) that cannot be parsed as dates, "
                f"e.g. {_examples(bad.unique())}."
            )
        return parsed
    if kind in ("integer", "float", "number"):
        if pd.api.types.is_bool_dtype(series):
            raise ValueError(f"{where} must be numeric, got booleans.")
        if pd.api.types.is_numeric_dtype(series):
            values = series
        else:
            values = pd.to_numeric(series, errors="coerce")
            bad = series[values.isna() & series.notna()]
            if len(bad):
                raise ValueError(
                    f"{where} must be numeric; {len(bad)} value(s) are not, "
                    f"e.g. {_examples(bad.unique())}."
                )
        if kind == "integer":
            finite = values.dropna()
            if len(finite) and not np.all(np.mod(finite.to_numpy(dtype=float), 1) == 0):
                bad = finite[np.mod(finite.to_numpy(dtype=float), 1) != 0]
                raise ValueError(
                    f"{where} must hold whole numbers, e.g. {_examples(bad.unique())} are not."
                )
            if values.isna().any():
                return values.astype("Int64")
            return values.astype("int64")
        if kind == "float":
            return values.astype("float64")
        return values
    if kind == "bool":
        if pd.api.types.is_bool_dtype(series):
            return series
        mapping = {"true": True, "false": False, "1": True, "0": False}
        lowered = series.astype("string").str.strip().str.lower()
        bad = series[~lowered.isin(list(mapping)) & series.notna()]
        if len(bad):
            raise ValueError(
                f"{where} must be boolean (TRUE/FALSE); got e.g. {_examples(bad.unique())}."
            )
        return lowered.map(mapping).astype("boolean")
    # string
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        raise ValueError(f"{where} must hold text, got dtype {series.dtype}.")
    if isinstance(series.dtype, pd.StringDtype) or pd.api.types.infer_dtype(
            series, skipna=True) in ("string", "empty"):
        return series.astype("string")
    non_str = series[series.notna() & ~series.map(lambda v: isinstance(v, str))]
    if len(non_str):
        raise ValueError(
            f"{where} must hold text; {len(non_str)} value(s) are not strings, "
            f"e.g. {_examples(non_str.unique())}."
        )
    return series.astype("string")


def check_timestamp(value: object, *, name: str) -> pd.Timestamp:
    """Parse ``value`` as a :class:`pandas.Timestamp` or raise a ValueError naming it."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={value!r} is not a valid date.") from err
    if pd.isna(ts):
        raise ValueError(f"{name}={value!r} is not a valid date.")
    return ts


def check_in(value: object, allowed: Iterable[object], *, name: str) -> None:
    """Raise a ValueError if ``value`` is not one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def check_positive_int(value: object, *, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)
