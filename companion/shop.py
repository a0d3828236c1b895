"""A shop's own order export, end to end: read, validate, clean, report, recommend, score churn.

This is the logic behind the command line (``python -m companion``, see
:mod:`companion.cli`); every step is an ordinary function, so a shop can call it from
Python as well.

An orders file is a CSV (``.csv``, ``.csv.gz``, ``.csv.zip``, ``.tsv``, ``.txt``) or
parquet (``.parquet``, ``.pq``) file with one row per order line. Its columns are mapped
onto the companion's schema, the snake-case names of
:data:`companion.data.preprocessing.CANONICAL`:

========================  =========  ==========================================
column                    required   meaning
========================  =========  ==========================================
``invoice``               yes        order (invoice) number
``stock_code``            yes        product id (any text)
``quantity``              yes        units (whole numbers; negative for returns)
``invoice_date``          yes        date and time of the order
``price``                 yes        unit price
``customer_id``           yes        customer id, any text (lines without one are dropped)
``description``           no         product name
``country``               no         customer's country
========================  =========  ==========================================

Files in either UCI Online Retail schema (``InvoiceNo``/``Invoice``, ``CustomerID``/
``Customer ID`` ...) or with the snake-case names are recognised without a mapping;
other names are mapped with ``columns={"customer_id": "Kunde", ...}``
(``--columns customer_id=Kunde,...`` on the command line).

Exports as shops have them:

* **CSV dialects.** The encoding (UTF-8 with or without a byte-order mark, UTF-16 with
  one, else Windows-1252/Latin-1), the delimiter (comma, semicolon, tab or bar) and the
  decimal mark (``2.55`` or ``2,55``, with thousands separators) are sniffed; each can be
  forced (:func:`load_orders` arguments ``encoding``, ``delimiter``, ``decimal``).
* **Time zones.** Timestamps with a UTC offset (``2011-06-01T10:26:00+01:00``, mixed
  offsets across summer time included) are converted to one zone, UTC unless
  ``timezone`` names another (an IANA name such as ``"Europe/London"``), and kept without
  a zone from then on. Timestamps without an offset are taken as they stand.
* **Ids.** Customer and product ids may be any text (e-mail addresses, UUIDs). Customer
  ids are encoded to integers inside (:class:`CustomerIds`) and decoded in every output,
  so they come out as the file gives them; whole-number ids stay numbers (``17850``).
* **Returns.** ``returns="cancel-prefix"`` (the UCI convention: invoices starting with
  ``C``), ``"negative-quantity"`` (refunds as negative quantities on ordinary orders) or
  ``"status-column"`` (a status column, ``status_column``, whose value is one of
  ``refund_status``). The refund lines found become the returns table
  (:attr:`companion.data.preprocessing.CleanResult.returns`) that after-sales
  (:mod:`companion.retention.aftersales`) and churn features (:mod:`companion.retention.churn`) use.

Every error is one line naming the file, the column, the row (counted as a spreadsheet
shows the file: the header is row 1, the first order line row 2) and the value. Outputs
are written to a temporary file next to the target and renamed into place, so a failed
run never leaves a half-written file.

**Why one module.** It is one pipeline over one object: a shop's export, read through one
column map and reported through one kind of error (file, column, row, value). Each section
(CSV dialect, columns, values, orders, commands) feeds the next, and nothing outside the
command line uses a section on its own.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_positive_int
from companion._compat import renamed_argument
from companion.data import RETAIL_I_SCHEMA, RETAIL_II_SCHEMA
from companion.data.preprocessing import (
    CANONICAL,
    CleanResult,
    IdEncoder,
    clean_transactions,
    to_interactions,
)

#: The companion's column names (snake case), in the order of the Online Retail II schema.
COLUMNS: tuple[str, ...] = tuple(CANONICAL.values())
#: Columns an orders file may lack (descriptions are then missing, the country "unknown").
OPTIONAL_COLUMNS: tuple[str, ...] = ("description", "country")
#: File suffixes read as CSV and as parquet.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Delimiters the CSV sniffer tries, and their names in messages.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}
#: How an export marks returns (see the module docstring).
RETURN_CONVENTIONS = ("cancel-prefix", "negative-quantity", "status-column")

_TO_II = {v: k for k, v in CANONICAL.items()}  # snake case -> Online Retail II names
_RECOMMENDERS = ("blend", "tifu-knn", "item-knn", "repeat-buy", "popularity")
#: A time of day followed by a UTC offset (``Z``, ``+01``, ``+0100``, ``+01:00``).
_OFFSET = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$",
                     re.IGNORECASE)
#: Whole-number customer ids (``17850``, or ``17850.0`` and ``17850,0`` as a float column
#: writes them), without leading zeros and short enough for 64-bit integers.
_WHOLE_ID = re.compile(r"^(?:0|[1-9]\d{0,17})(?:[.,]0+)?$")
_SPACES = re.compile(r"[\s\u00a0\u202f']")


class OrdersFileError(ValueError):
    """An orders file cannot be read or does not hold valid order lines."""


def parse_column_mapping(text: str | None) -> dict[str, str]:
    """Parse ``"customer_id=Kunde,invoice_date=Datum"`` into ``{"customer_id": "Kunde", ...}``.

    Keys are the companion's column names (:data:`COLUMNS`), values the file's column names.
    An empty or missing text gives an empty mapping.
    """
    if text is None or not text.strip():
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise OrdersFileError(
                f"column mapping entry {part.strip()!r} has no '='; write it as "
                f"companion_name=file_column, e.g. customer_id=CustomerID.")
        ours, theirs = (s.strip() for s in part.split("=", 1))
        if ours not in COLUMNS:
            raise OrdersFileError(
                f"column mapping names unknown column {ours!r}; the companion's columns are "
                f"{list(COLUMNS)}.")
        if not theirs:
            raise OrdersFileError(f"column mapping for {ours!r} names no file column.")
        if ours in mapping:
            raise OrdersFileError(f"column mapping names {ours!r} twice.")
        mapping[ours] = theirs
    return mapping


def orders_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``"csv"`` or ``"parquet"``: ``fmt`` if given, else from the file's suffix."""
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise OrdersFileError(f"unknown format {fmt!r}; use 'csv' or 'parquet'.")
        return fmt
    name = Path(path).name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise OrdersFileError(
        f"{path}: unknown file format (suffix {Path(path).suffix!r}); orders files are CSV "
        f"({', '.join(CSV_SUFFIXES)}) or parquet ({', '.join(PARQUET_SUFFIXES)}), "
        "or pass --format.")


# ----------------------------------------------------------------------------- CSV dialect


def _file_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz, .zip, .bz2 or .xz."""
    name = path.name.lower()
    if name.endswith(".gz"):
        with gzip.open(path) as handle:
            return handle.read()
    if name.endswith(".bz2"):
        return bz2.decompress(path.read_bytes())
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise ValueError(f"the zip archive must hold exactly one file, it holds "
                                 f"{len(members)}: {members[:5]}")
            return archive.read(members[0])
    return path.read_bytes()


def sniff_encoding(data: bytes, encoding: str | None = None, *, source: str = "orders"
                   ) -> str:
    """The encoding of a CSV file's bytes, checked by decoding them all.

    Without ``encoding`` it is sniffed: a byte-order mark says UTF-8 (``utf-8-sig``) or
    UTF-16; else UTF-8 if every byte decodes as UTF-8; else Windows-1252 (Latin-1 with
    the euro sign and typographic quotes, what "ANSI" exports are); else Latin-1, which
    decodes any byte. A given encoding that fails raises :class:`OrdersFileError` naming
    the row and the byte.
    """
    if encoding is None:
        if data.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        else:
            for candidate in ("utf-8", "cp1252"):
                try:
                    data.decode(candidate)
                except UnicodeDecodeError:
                    continue
                return candidate
            return "latin-1"
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise OrdersFileError(f"unknown encoding {encoding!r}; use e.g. utf-8, latin-1 "
                              "or cp1252, or leave it out to sniff it.") from None
    if encoding == "utf-8" and data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"  # the same encoding; the mark is not part of the header
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        row = data.count(b"\n", 0, err.start) + 1
        raise OrdersFileError(
            f"{source}, row {row}: byte {data[err.start:err.start + 1]!r} cannot be decoded "
            f"as {encoding}; pass another --encoding, or leave it out to sniff it."
        ) from None
    return encoding


def sniff_delimiter(text: str, *, lines: int = 50, complete: bool = True) -> str:
    """The delimiter of a CSV text (or its start) among :data:`DELIMITERS`.

    The one that splits the first ``lines`` lines into the same number of fields, the
    most fields if several do; a comma if none splits the header. ``complete=False``
    says ``text`` is the start of a file, whose last line may be cut short.
    """
    head = text.splitlines()
    if not complete:
        head = head[:-1]
    head = [line for line in head[:lines + 1] if line.strip()]
    if not head:
        return ","
    best, best_score = ",", (False, 1)
    for delimiter in DELIMITERS:
        widths = [len(row) for row in csv.reader(head, delimiter=delimiter)]
        score = (widths[0] > 1 and len(set(widths)) == 1, widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _decimal_evidence(value: str) -> str | None:
    """The decimal mark a number written as ``value`` must use, or None if it could be
    either (``1,250``) or has none (``12``)."""
    text = _SPACES.sub("", value).lstrip("+-")
    last = max(text.rfind("."), text.rfind(","))
    if last < 0:
        return None
    mark = text[last]
    other = "," if mark == "." else "."
    if other in text[:last]:
        return mark  # 1.234,56 or 1,234.56
    if text.count(mark) > 1:
        return other  # 1.234.567: thousands
    if len(text) - last - 1 != 3:
        return mark  # 2,55 or 0.5
    return None


def sniff_decimal(columns: Mapping[str, pd.Series], delimiter: str = ",", *,
                  source: str = "orders") -> str:
    """The decimal mark (``"."`` or ``","``) of the numbers in ``columns``.

    ``columns`` maps a column name (for messages) to its text values. Values that can
    only be read one way decide (``2,55``, ``1.234,50``, ``0.5``); if none does, a
    semicolon-separated file is taken to use decimal commas and any other file decimal
    points. Values that disagree raise :class:`OrdersFileError` naming both.
    """
    seen: dict[str, tuple[str, int, str]] = {}
    for name, values in columns.items():
        if pd.api.types.is_numeric_dtype(values):
            continue
        codes, uniques = pd.factorize(values)
        for code, value in enumerate(uniques):
            mark = _decimal_evidence(str(value))
            if mark is not None and mark not in seen:
                row = int(np.flatnonzero(codes == code)[0]) + 2
                seen[mark] = (name, row, str(value))
            if len(seen) == 2:
                (a, (ca, ra, va)), (b, (cb, rb, vb)) = sorted(seen.items())
                raise OrdersFileError(
                    f"{source}: numbers use both decimal marks: column '{ca}', row {ra}: "
                    f"{va!r} ({a!r}) and column '{cb}', row {rb}: {vb!r} ({b!r}); "
                    "pass --decimal to say which is meant.")
    if seen:
        return next(iter(seen))
    return "," if delimiter == ";" else "."


@dataclass
class Table:
    """A file read as it is (CSV columns all as text) and how it was read."""

    frame: pd.DataFrame
    format: str
    encoding: str | None = None
    delimiter: str | None = None

    def describe(self) -> str:
        """``"csv, encoding utf-8, semicolon-separated"``, or the format's name."""
        if self.format != "csv":
            return self.format
        return (f"csv, encoding {self.encoding}, "
                f"{DELIMITERS.get(self.delimiter, repr(self.delimiter))}-separated")


def read_table(path: str | os.PathLike, fmt: str | None = None, *,
               encoding: str | None = None, delimiter: str | None = None) -> Table:
    """Read a CSV or parquet file as it is (all CSV columns as text), with clear errors.

    The encoding and delimiter of a CSV file are sniffed (:func:`sniff_encoding`,
    :func:`sniff_delimiter`) unless given.
    """
    path = Path(path)
    kind = orders_format(path, fmt)
    source = f"orders file '{path}'"
    if not path.exists():
        raise OrdersFileError(f"{path}: no such file.")
    if path.is_dir():
        raise OrdersFileError(f"{path}: is a folder, not an orders file.")
    if path.stat().st_size == 0:
        raise OrdersFileError(f"{path}: the file is empty (0 bytes).")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\"\r\n"):
        raise OrdersFileError(f"delimiter must be one character (not a quote or a line "
                              f"break), got {delimiter!r}.")
    try:
        if kind == "csv":
            raw = _file_bytes(path)
            encoding = sniff_encoding(raw, encoding, source=source)
            if delimiter is None:
                head = raw[:1_000_000].decode(encoding, errors="ignore")
                delimiter = sniff_delimiter(head, complete=len(raw) <= 1_000_000)
            frame = pd.read_csv(io.BytesIO(raw), sep=delimiter, dtype="string",
                                encoding=encoding, keep_default_na=True)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise OrdersFileError(f"{path}: the file is empty (no header, no rows).") from None
    except (pd.errors.ParserError, OSError, ValueError, EOFError,
            zipfile.BadZipFile) as err:
        if isinstance(err, OrdersFileError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OrdersFileError(f"{path}: cannot be read as {kind}: {first}") from None
    if frame.empty:
        raise OrdersFileError(
            f"{path}: has no order lines (columns {list(map(str, frame.columns))}, 0 rows).")
    return Table(frame, kind, encoding, delimiter)


# --------------------------------------------------------------------------------- columns


def resolve_columns(present: Sequence[str], columns: Mapping[str, str] | None = None, *,
                    source: str = "orders") -> dict[str, str]:
    """The file column behind each of the companion's columns (:data:`COLUMNS`).

    ``columns`` maps the companion's names to the file's; without it a file in either
    Online Retail schema or with the snake-case names is recognised. Raises
    :class:`OrdersFileError` naming ``source`` and every missing column.
    """
    columns = dict(columns or {})
    present = [str(c) for c in present]
    absent = [theirs for theirs in columns.values() if theirs not in present]
    if absent:
        raise OrdersFileError(
            f"{source}: the column mapping names column(s) {absent} that the file does not "
            f"have; it has columns {present}.")
    if not columns:
        if "InvoiceNo" in present:  # Online Retail (I)
            ii = dict(zip(RETAIL_I_SCHEMA, RETAIL_II_SCHEMA, strict=True))
            columns = {CANONICAL[ii[c]]: c for c in RETAIL_I_SCHEMA if c in present}
        else:
            columns = {ours: theirs for theirs, ours in CANONICAL.items() if theirs in present}
    for ours in COLUMNS:  # snake-case names, and columns the mapping left out
        if ours not in columns and ours in present:
            columns[ours] = ours
    missing = [c for c in COLUMNS if c not in columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise OrdersFileError(
            f"{source}: missing required column(s) {missing}; the file has columns {present}. "
            "Map your names onto the companion's with --columns, e.g. "
            f"--columns {missing[0]}=<your column>.")
    return columns


def map_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None = None, *,
                source: str = "orders") -> pd.DataFrame:
    """Rename a raw orders frame to the Online Retail II names, ready for cleaning.

    Columns are found by :func:`resolve_columns`. Optional columns
    (:data:`OPTIONAL_COLUMNS`) that are absent are added: ``Description`` as missing values,
    ``Country`` as ``"unknown"``.
    """
    columns = resolve_columns(list(frame.columns), columns, source=source)
    out = pd.DataFrame({_TO_II[ours]: frame[theirs] for ours, theirs in columns.items()})
    if "description" not in columns:
        out["Description"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if "country" not in columns:
        out["Country"] = pd.Series("unknown", index=frame.index, dtype="string")
    return out[list(RETAIL_II_SCHEMA)]


# ---------------------------------------------------------------------------------- values


def _where(source: str, column: str, row: int) -> str:
    return f"{source}, column '{column}', row {row}"


def _first_bad(values: pd.Series, bad: np.ndarray, source: str, column: str, what: str
               ) -> OrdersFileError:
    """An error naming the first row where ``bad`` holds, its value and how many there are."""
    rows = np.flatnonzero(bad)
    value = values.iloc[rows[0]]
    more = f" ({len(rows):,} rows in all)" if len(rows) > 1 else ""
    shown = "an empty value" if pd.isna(value) else repr(str(value).strip())
    return OrdersFileError(f"{_where(source, column, int(rows[0]) + 2)}: {shown} {what}{more}.")


def _text(values: pd.Series, *, source: str, column: str, required: bool) -> pd.Series:
    """A text column as given (cleaning trims spaces later); numbers, as parquet files
    may hold ids, become text, whole numbers without a trailing ``.0``."""
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise OrdersFileError(f"{source}, column '{column}': must hold text, got dtype "
                              f"{values.dtype}.")
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
        whole = numbers.notna() & (np.mod(numbers.fillna(0), 1) == 0)
        text = numbers.astype("string")
        text[whole] = numbers[whole].astype("int64").astype("string")
        values = text.mask(numbers.isna())
    out = values.astype("string")
    if required and out.isna().any():
        raise _first_bad(out, out.isna().to_numpy(), source, column, "where a value is needed")
    return out


def _numbers(values: pd.Series, *, decimal: str, integer: bool, source: str,
             column: str) -> pd.Series:
    """Numbers from text with decimal mark ``decimal`` (thousands separators allowed)."""
    if pd.api.types.is_bool_dtype(values):
        raise OrdersFileError(f"{source}, column '{column}': must hold numbers, got booleans.")
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    else:
        codes, uniques = pd.factorize(values.astype("string"))
        text = pd.Series(uniques, dtype="string").str.replace(_SPACES, "", regex=True)
        thousands = "," if decimal == "." else "."
        grouped = text.str.fullmatch(
            rf"[+-]?\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+(?:{re.escape(decimal)}\d*)?")
        text = text.where(~grouped.fillna(False), text.str.replace(thousands, "", regex=False))
        if decimal == ",":
            text = text.str.replace(",", ".", regex=False)
        parsed = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()
        numbers = pd.Series(np.append(parsed, np.nan)[codes], index=values.index)
        bad = numbers.isna().to_numpy() & values.notna().to_numpy()
        if bad.any():
            raise _first_bad(values, bad, source, column,
                             f"is not a number (decimal mark {decimal!r}; pass --decimal "
                             "if the file uses the other)")
    if numbers.isna().any():
        raise _first_bad(values, numbers.isna().to_numpy(), source, column,
                         "where a number is needed")
    if integer:
        fractional = (np.mod(numbers, 1) != 0).to_numpy()
        if fractional.any():
            raise _first_bad(values, fractional, source, column, "is not a whole number")
        return numbers.astype("int64")
    return numbers


def check_timezone(timezone: str) -> object:
    """The ``zoneinfo.ZoneInfo`` of an IANA time-zone name, or a clear error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise OrdersFileError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'UTC', "
            "'Europe/London' or 'America/New_York'.") from None


def _parse_dates(text: pd.Series) -> pd.Series:
    """Parse text as UTC datetimes: ISO 8601 fast, any other layout value by value."""
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    retry = parsed.isna() & text.notna()
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], utc=True, format="mixed",
                                       errors="coerce")
    return parsed


def parse_timestamps(values: pd.Series, *, timezone: str = "UTC", source: str = "orders",
                     column: str = "InvoiceDate") -> tuple[pd.Series, list[str]]:
    """Dates and times of an orders column, without a time zone, in ``timezone``.

    Values with a UTC offset (``+01:00``, ``+0100``, ``+01``, ``Z``), one offset or
    several, are converted to ``timezone``; values without one are taken as they stand.
    Returns the parsed column and the sorted list of offsets seen. A value that is not a
    date raises :class:`OrdersFileError` naming ``source``, ``column``, row and value.
    """
    zone = check_timezone(timezone)
    if pd.api.types.is_datetime64_any_dtype(values):
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            offsets = sorted({_normal_offset(ts.strftime("%z"))
                              for ts in values.dropna().unique()})
            return values.dt.tz_convert(zone).dt.tz_localize(None), offsets
        return values, []
    if pd.api.types.is_numeric_dtype(values) and values.notna().any():
        raise OrdersFileError(f"{source}, column '{column}': must hold dates, got numbers "
                              f"(dtype {values.dtype}), e.g. row 2: {values.iloc[0]!r}.")
    codes, uniques = pd.factorize(values.astype("string").str.strip().replace("", pd.NA))
    text = pd.Series(uniques, dtype="string")
    found = text.str.extract(_OFFSET)[0]
    aware = found.notna()
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    for mask, convert in ((aware, True), (~aware, False)):
        if mask.any():
            part = _parse_dates(text[mask])
            if convert:
                part = part.dt.tz_convert(zone)
            parsed[mask] = part.dt.tz_localize(None).astype("datetime64[us]")
    bad_codes = np.flatnonzero(parsed.isna().to_numpy())
    bad = np.isin(codes, bad_codes) | (codes < 0)
    if bad.any():
        first = codes[np.flatnonzero(bad)[0]]
        what = "is not a date" if first >= 0 else "where a date is needed"
        raise _first_bad(values, bad, source, column, what)
    out = pd.Series(parsed.to_numpy()[codes], index=values.index)
    offsets = sorted({_normal_offset(o) for o in found.dropna()})
    return out, offsets


def _normal_offset(offset: str) -> str:
    """``Z`` -> ``+00:00``, ``+0100`` and ``+01`` -> ``+01:00``."""
    if offset.upper() == "Z":
        return "+00:00"
    digits = offset[1:].replace(":", "")
    return f"{offset[0]}{digits[:2]}:{digits[2:4] or '00'}"


class CustomerIds:
    """Customer ids as the file gives them, and the integer codes the models use.

    Whole-number ids (``17850``, or ``17850.0`` as float columns write them) are their own
    codes, so they come out as numbers; any other ids (e-mail addresses, UUIDs, numbers
    with leading zeros) are encoded by an :class:`companion.data.preprocessing.IdEncoder` and
    come out as the text given (trimmed of surrounding spaces).

    Attributes
    ----------
    codes
        ``Int64`` codes, missing where the line has no customer id.
    numeric
        Whether the ids are whole numbers (their own codes).
    """

    def __init__(self, values: pd.Series) -> None:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.astype("float64")
            if (np.mod(numbers.dropna(), 1) == 0).all() and (numbers.abs() < 2**62).all():
                self.numeric, self.encoder = True, None
                self.codes = numbers.astype("Int64")
                return
            values = values.astype("string")
        text = values.astype("string").str.strip().replace("", pd.NA)
        known = text.dropna()
        if known.str.fullmatch(_WHOLE_ID).all():
            self.numeric, self.encoder = True, None
            whole = text.str.replace(r"[.,]0+$", "", regex=True)
            self.codes = pd.to_numeric(whole).astype("Int64")
            return
        self.numeric = False
        self.encoder = IdEncoder().fit(known.to_numpy(dtype=object)) if len(known) else None
        codes = np.full(len(text), -1, dtype=np.int64)
        if self.encoder is not None:
            present = text.notna().to_numpy()
            codes[present] = self.encoder.transform(known.to_numpy(dtype=object))
        self.codes = pd.Series(codes, index=text.index).astype("Int64").mask(codes < 0)

    def decode(self, codes: Iterable[int]) -> np.ndarray:
        """The ids as given of ``codes`` (numbers for whole-number ids, else text)."""
        codes = np.asarray(list(codes) if not isinstance(codes, np.ndarray | pd.Series)
                           else codes, dtype=np.int64)
        if self.numeric:
            return codes
        if self.encoder is None:
            raise ValueError("there are no customer ids to decode.")
        return self.encoder.inverse_transform(codes)

    def restore(self, table: pd.DataFrame, column: str = "customer_id") -> pd.DataFrame:
        """``table`` with its ``column`` of codes turned back into the ids as given."""
        return table.assign(**{column: self.decode(table[column])})


# ---------------------------------------------------------------------------------- orders


@dataclass
class Orders:
    """An orders file read and checked by :func:`load_orders`.

    Attributes
    ----------
    lines
        Order lines in the Online Retail II schema, kinds checked; ``Customer ID`` holds
        the integer codes of :attr:`Orders.customers` and ``InvoiceDate`` times without a zone.
    refunds
        True for each line the return convention marks as a refund.
    customers
        The customer ids as given, and their codes.
    source
        The file, for messages.
    read_as
        How the file was read: format and dialect, decimal mark, time zone, returns.
    returns
        The return convention (:data:`RETURN_CONVENTIONS`).
    """

    lines: pd.DataFrame
    refunds: np.ndarray
    customers: CustomerIds
    source: str
    read_as: dict[str, str] = field(default_factory=dict)
    returns: str = "cancel-prefix"


def check_orders(raw: pd.DataFrame, *, source: str = "orders", decimal: str = ".",
                 timezone: str = "UTC", names: Mapping[str, str] | None = None
                 ) -> tuple[pd.DataFrame, CustomerIds, list[str]]:
    """Read the values of a mapped orders frame (from :func:`map_columns`).

    Returns the lines with checked kinds (``Customer ID`` as integer codes), the
    :class:`CustomerIds`, and the UTC offsets seen in the dates. ``names`` maps the Online
    Retail II names to the file's own, for messages. Raises :class:`OrdersFileError`
    naming ``source``, the column, the row and the value.
    """
    names = {c: c for c in RETAIL_II_SCHEMA} | dict(names or {})
    out = pd.DataFrame(index=raw.index)
    for col in ("Invoice", "StockCode", "Description", "Country"):
        out[col] = _text(raw[col], source=source, column=names[col],
                         required=col in ("Invoice", "StockCode", "Country"))
    out["Quantity"] = _numbers(raw["Quantity"], decimal=decimal, integer=True, source=source,
                               column=names["Quantity"])
    out["Price"] = _numbers(raw["Price"], decimal=decimal, integer=False, source=source,
                            column=names["Price"])
    out["InvoiceDate"], offsets = parse_timestamps(
        raw["InvoiceDate"], timezone=timezone, source=source, column=names["InvoiceDate"])
    customers = CustomerIds(raw["Customer ID"])
    out["Customer ID"] = customers.codes
    try:  # a last check of every kind; the steps above already named any bad value
        lines = check_frame(out[list(RETAIL_II_SCHEMA)], RETAIL_II_SCHEMA, name=source,
                            allow_missing=("Description", "Customer ID"))
    except (ValueError, TypeError) as err:
        raise OrdersFileError(str(err)) from None
    return lines, customers, offsets


def refund_mask(lines: pd.DataFrame, returns: str = "cancel-prefix", *,
                status: pd.Series | None = None, refund_status: Iterable[str] = ("refunded",)
                ) -> np.ndarray:
    """True for each refund line under a return convention (:data:`RETURN_CONVENTIONS`).

    ``cancel-prefix``: the invoice starts with ``C``; ``negative-quantity``: the quantity
    is below zero; ``status-column``: ``status`` is one of ``refund_status`` (compared
    without case and surrounding spaces).
    """
    if returns not in RETURN_CONVENTIONS:
        raise OrdersFileError(f"returns must be one of {list(RETURN_CONVENTIONS)}, got "
                              f"{returns!r}.")
    if returns == "cancel-prefix":
        invoice = lines["Invoice"].astype("string").str.strip().str.upper()
        return invoice.str.startswith("C").fillna(False).to_numpy(dtype=bool)
    if returns == "negative-quantity":
        return (lines["Quantity"] < 0).to_numpy(dtype=bool)
    if status is None:
        raise OrdersFileError("returns='status-column' needs the status column's values.")
    wanted = {str(s).strip().casefold() for s in refund_status}
    folded = status.astype("string").str.strip().str.casefold()
    return folded.isin(wanted).fillna(False).to_numpy(dtype=bool)


def load_orders(path: str | os.PathLike, *, columns: Mapping[str, str] | None = None,
                fmt: str | None = None, encoding: str | None = None,
                delimiter: str | None = None, decimal: str | None = None,
                timezone: str = "UTC", returns: str = "cancel-prefix",
                status_column: str | None = None,
                refund_status: Iterable[str] = ("refunded",)) -> Orders:
    """Read, map and check an orders file (see the module docstring for the options).

    ``encoding``, ``delimiter`` and ``decimal`` (``"."`` or ``","``) are sniffed when
    None; ``timezone`` is the zone times with a UTC offset are converted to; ``returns``,
    ``status_column`` and ``refund_status`` say which lines are refunds.
    """
    source = f"orders file '{path}'"
    zone = str(timezone)
    check_timezone(zone)
    if returns not in RETURN_CONVENTIONS:
        raise OrdersFileError(f"returns must be one of {list(RETURN_CONVENTIONS)}, got "
                              f"{returns!r}.")
    if decimal is not None and decimal not in (".", ","):
        raise OrdersFileError(f"decimal must be '.' or ',', got {decimal!r}.")
    refund_status = [str(s) for s in refund_status]
    if returns == "status-column" and not refund_status:
        raise OrdersFileError("returns 'status-column' needs at least one refund status.")
    table = read_table(path, fmt, encoding=encoding, delimiter=delimiter)
    frame = table.frame
    found = resolve_columns(list(frame.columns), columns, source=source)
    status = None
    if returns == "status-column":
        present = [str(c) for c in frame.columns]
        if status_column is None or status_column not in present:
            said = "names no status column" if status_column is None else \
                f"names status column {status_column!r}, which the file does not have"
            raise OrdersFileError(f"{source}: returns 'status-column' {said}; pass "
                                  f"--status-column, one of {present}.")
        status = frame[status_column]
    if decimal is None:
        decimal = sniff_decimal({found[c]: frame[found[c]] for c in ("quantity", "price")},
                                table.delimiter or ",", source=source)
    names = {_TO_II[ours]: theirs for ours, theirs in found.items()}
    lines, customers, offsets = check_orders(
        map_columns(frame, found, source=source), source=source, decimal=decimal,
        timezone=zone, names=names)
    refunds = refund_mask(lines, returns, status=status, refund_status=refund_status)
    conventions = {
        "cancel-prefix": "invoices starting with 'C'",
        "negative-quantity": "negative quantities",
        "status-column": f"column {status_column!r} is {' or '.join(map(repr, refund_status))}",
    }
    read_as = {
        "read as": table.describe() + (f", decimal mark {decimal!r}"
                                       if table.format == "csv" else ""),
        "times": (f"offsets {', '.join(offsets)} converted to {zone}" if offsets
                  else "no UTC offsets (taken as they stand)"),
        "customer ids": "whole numbers" if customers.numeric else "text",
        "returns from": conventions[returns],
    }
    return Orders(lines, refunds, customers, source, read_as, returns)


@dataclass
class Validation:
    """What :func:`validate` found in an orders file."""

    source: str
    rows: int
    columns: dict[str, str]
    summary: pd.Series
    warnings: list[str]

    def to_text(self) -> str:
        """A short plain-text report."""
        lines = [f"{self.source}: OK, {self.rows:,} order lines."]
        lines += [f"  {k:<24} {v}" for k, v in self.summary.items()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def validate(orders: Orders, *, source: str | None = None) -> Validation:
    """Summarise checked orders (from :func:`load_orders`) and flag what cleaning drops."""
    raw = orders.lines
    source = orders.source if source is None else source
    customers = raw["Customer ID"]
    invoice = raw["Invoice"].astype("string")
    refunds = orders.refunds
    summary = pd.Series({
        **orders.read_as,
        "first order": str(raw["InvoiceDate"].min()),
        "last order": str(raw["InvoiceDate"].max()),
        "invoices": int(invoice.nunique()),
        "customers": int(customers.nunique()),
        "products": int(raw["StockCode"].nunique()),
        "lines without customer": int(customers.isna().sum()),
        "refund lines": int(refunds.sum()),
        "refunds with customer": int((refunds & customers.notna().to_numpy()).sum()),
    })
    warnings = []
    if customers.isna().all():
        warnings.append("no line has a customer id: nothing is left after cleaning.")
    elif customers.isna().mean() > 0.5:
        warnings.append(f"{customers.isna().mean():.0%} of lines have no customer id.")
    if raw["Description"].isna().all():
        warnings.append("no product descriptions (column 'description' absent or empty).")
    if orders.returns == "cancel-prefix":
        negative = ((raw["Quantity"] < 0).to_numpy() & ~refunds
                    & customers.notna().to_numpy())
        if negative.any():
            warnings.append(
                f"{int(negative.sum()):,} lines of customers have a negative quantity on an "
                "ordinary invoice; they are dropped, not counted as returns. If the shop "
                "records refunds that way, pass --returns negative-quantity.")
    if not refunds.any() and orders.returns == "status-column":
        warnings.append(f"no line is a refund ({orders.read_as['returns from']}).")
    kinds = {c: str(raw[c].dtype) for c in raw.columns}
    return Validation(source, len(raw), kinds, summary, warnings)


def clean(orders: Orders) -> tuple[CleanResult, pd.DataFrame]:
    """Clean checked orders and build the interactions table.

    Refund lines (:attr:`Orders.refunds`) become the returns table. ``customer_id`` and
    ``user_id`` hold the codes of :attr:`Orders.customers`. Raises
    :class:`OrdersFileError` if no purchase line survives cleaning.
    """
    refunds = None if orders.returns == "cancel-prefix" else orders.refunds
    result = clean_transactions(orders.lines, refunds=refunds)
    if result.transactions.empty:
        raise OrdersFileError(
            f"{orders.source}: no purchase line is left after cleaning (lines need a "
            "customer id, positive quantity and price, and a product code).")
    return result, to_interactions(result.transactions)


def returns_summary(result: CleanResult) -> pd.Series:
    """Refund lines set aside as returns: lines, customers, units and value returned."""
    sold, back = result.transactions, result.returns
    units = back["quantity"].abs()
    value = float((units * back["price"]).sum())
    sales = float((sold["quantity"] * sold["price"]).sum())
    return pd.Series({
        "refund lines": len(back),
        "customers with a refund": int(back["customer_id"].nunique()),
        "units returned": int(units.sum()),
        "units returned per unit sold": float(units.sum() / sold["quantity"].sum()),
        "value returned per value sold": value / sales if sales else float("nan"),
    }, dtype=object)


def retention_summary(interactions: pd.DataFrame, *, horizon_days: int = 90) -> pd.Series:
    """Headline retention numbers of an interactions table.

    Customers, invoices, the repeat-purchase rate
    (:func:`companion.retention.behaviour.repeat_purchase_rate`), the size-weighted cohort
    retention after 1, 3 and 6 months (:func:`companion.retention.behaviour.retention_curve`),
    and the share of customers active in the ``horizon_days`` before the last
    ``horizon_days`` who bought nothing in the last ones (observed churn).
    """
    from companion.retention.behaviour import (
        cohort_retention,
        repeat_purchase_rate,
        retention_curve,
    )

    check_positive_int(horizon_days, name="horizon_days")
    curve = retention_curve(cohort_retention(interactions))
    ts = interactions["timestamp"]
    end = ts.max()
    cut = end - pd.Timedelta(days=horizon_days)
    before = interactions.loc[(ts <= cut) & (ts > cut - pd.Timedelta(days=horizon_days)),
                              "user_id"].unique()
    after = interactions.loc[ts > cut, "user_id"].unique()
    churned = float(np.mean(~np.isin(before, after))) if len(before) else float("nan")
    out = {
        "customers": int(interactions["user_id"].nunique()),
        "invoices": int(interactions["invoice"].nunique()),
        "products": int(interactions["item_id"].nunique()),
        "first purchase": str(ts.min().date()),
        "last purchase": str(end.date()),
        "repeat-purchase rate": float(repeat_purchase_rate(interactions)),
    }
    for month in (1, 3, 6):
        out[f"retention month {month}"] = float(curve.get(month, np.nan))
    out[f"churned in last {horizon_days} days"] = churned
    return pd.Series(out, dtype=object)


def _rows(summary: pd.Series) -> list[str]:
    rows = []
    for key, value in summary.items():
        if isinstance(value, float):
            value = "n/a" if np.isnan(value) else f"{value:.1%}"  # rates and shares
        rows.append(f"| {key} | {value} |")
    return ["| measure | value |", "|---|---|", *rows]


def report_text(result: CleanResult, summary: pd.Series, *, source: str = "orders",
                returns: pd.Series | None = None) -> str:
    """Cleaning report, retention summary and, if given, returns summary as Markdown."""
    cleaning = result.report.to_markdown(index=False) if _has_tabulate() else \
        result.report.to_string(index=False)
    parts = [f"# Report on {source}", "", "## Cleaning", "", cleaning, "",
             "## Retention", "", *_rows(summary), ""]
    if returns is not None:
        parts += ["## Returns", "", *_rows(returns), ""]
    return "\n".join(parts)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def make_recommender(name: str):
    """The recommender behind ``--model``: ``blend`` (repeat-buy + item-kNN, default),
    ``tifu-knn``, ``item-knn``, ``repeat-buy`` or ``popularity``.

    Settings are those the book's chapter 5 tuned on the real shop (item-kNN with 200
    neighbours and shrinkage 20; TIFU-KNN with 100 neighbours, 3 groups, alpha 0.2).
    """
    from companion.recsys import baselines as rec

    if name not in _RECOMMENDERS:
        raise ValueError(f"model must be one of {list(_RECOMMENDERS)}, got {name!r}.")
    return {
        "blend": lambda: rec.Blend(rec.ItemKNN(neighbours=200, shrinkage=20.0), weight=1.0),
        "tifu-knn": lambda: rec.TIFUKNN(neighbours=100, alpha=0.2, group_size=3),
        "item-knn": lambda: rec.ItemKNN(neighbours=200, shrinkage=20.0),
        "repeat-buy": lambda: rec.RepeatBuy(),
        "popularity": lambda: rec.Popularity(),
    }[name]()


def top_k(interactions: pd.DataFrame, *, k: int = 10, model: str = "blend",
          exclude_seen: bool = False, batch: int = 1024,
          progress: Callable[[Iterable], Iterable] | None = None) -> pd.DataFrame:
    """Fit ``model`` on all interactions and list the top ``k`` products of every customer.

    Returns ``customer_id, rank, stock_code`` (rank 1 = best), ``k`` rows per customer. With
    ``exclude_seen`` a customer's past products are left out; by default they may be
    recommended again (repeat purchases are most of what a shop's customers buy).
    ``progress`` wraps the loop over batches of customers (e.g. ``tqdm``).
    """
    k = check_positive_int(k, name="k")
    fitted = make_recommender(model).fit(interactions)
    n_items = len(fitted.item_encoder_)
    if k > n_items:
        raise ValueError(f"k={k} exceeds the {n_items} products in the orders.")
    users = np.sort(interactions["user_id"].unique())
    starts = range(0, len(users), batch)
    parts = []
    for lo in (progress(starts) if progress else starts):
        chunk = users[lo:lo + batch]
        items = fitted.recommend(chunk, k=k, exclude_seen=exclude_seen)
        parts.append(pd.DataFrame({
            "customer_id": np.repeat(chunk, k),
            "rank": np.tile(np.arange(1, k + 1), len(chunk)),
            "stock_code": items.ravel(),
        }))
    return pd.concat(parts, ignore_index=True)


def churn_risk(interactions: pd.DataFrame, *, horizon_days: int = 90,
               cutoff: object | None = None, as_of: object | None = None) -> pd.DataFrame:
    """BG/NBD churn risk of every customer (:func:`companion.retention.btyd.churn_probability`).

    The model is fitted on purchases strictly before ``cutoff`` (default: the day after the
    last purchase; ``as_of`` is its old name, which works for one release, with a
    warning). Returns ``customer_id, frequency, recency_days, age_days, p_alive,
    p_churn`` sorted by ``p_churn`` (highest risk first), where ``p_churn`` is the
    probability of no purchase in the next ``horizon_days``.
    """
    from companion.retention.btyd import churn_probability, rfm_summary

    horizon_days = check_positive_int(horizon_days, name="horizon_days")
    cutoff = renamed_argument("churn_risk", "as_of", "cutoff", as_of, cutoff)
    if cutoff is None:
        cutoff = interactions["timestamp"].max().normalize() + pd.Timedelta(days=1)
    summary = rfm_summary(interactions, cutoff)
    scores = churn_probability(interactions, cutoff, horizon_days)
    out = summary.rename(columns={"recency": "recency_days", "age": "age_days"}).join(scores)
    out = out.reset_index().rename(columns={"user_id": "customer_id"})
    out["frequency"] = out["frequency"].astype(int)
    return out.sort_values(["p_churn", "customer_id"], ascending=[False, True],
                           kind="stable").reset_index(drop=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    If ``write`` fails the temporary file is removed and ``path`` is left as it was (absent
    or untouched), so a failed run leaves nothing half-written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OrdersFileError(f"{path}: the output folder {str(folder)!r} does not exist.")
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, *, float_format: str = "%.6g"
              ) -> Path:
    """Write ``frame`` to CSV through :func:`write_atomic`."""
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False,
                                                       float_format=float_format))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) through :func:`write_atomic`."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
