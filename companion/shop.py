"""A shop's own order export, end to end: read, validate, clean, report, recommend, score churn.

This is the logic behind the command line (``python -m companion``, see
:mod:`companion.cli`); every step is an ordinary function, so a shop can call it from
Python as well.

An orders file is a CSV (``.csv``, ``.csv.gz``, ``.tsv``) or parquet (``.parquet``,
``.pq``) file with one row per order line. Its columns are mapped onto the companion's
schema, the snake-case names of :data:`companion.preprocessing.CANONICAL`:

========================  =========  ==========================================
column                    required   meaning
========================  =========  ==========================================
``invoice``               yes        order (invoice) number; ``C...`` = cancellation
``stock_code``            yes        product id
``quantity``              yes        units (whole numbers; negative for returns)
``invoice_date``          yes        date and time of the order
``price``                 yes        unit price
``customer_id``           yes        customer number (lines without one are dropped)
``description``           no         product name
``country``               no         customer's country
========================  =========  ==========================================

Files in either UCI Online Retail schema (``InvoiceNo``/``Invoice``, ``CustomerID``/
``Customer ID`` ...) or with the snake-case names are recognised without a mapping;
other names are mapped with ``columns={"customer_id": "Kunde", ...}``
(``--columns customer_id=Kunde,...`` on the command line).

Every error names the file, the column and offending values. Outputs are written to a
temporary file next to the target and renamed into place, so a failed run never leaves a
half-written file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_positive_int
from companion.data import RETAIL_I_SCHEMA, RETAIL_II_SCHEMA
from companion.preprocessing import CANONICAL, CleanResult, clean_transactions, to_interactions

#: The companion's column names (snake case), in the order of the Online Retail II schema.
COLUMNS: tuple[str, ...] = tuple(CANONICAL.values())
#: Columns an orders file may lack (descriptions are then missing, the country "unknown").
OPTIONAL_COLUMNS: tuple[str, ...] = ("description", "country")
#: File suffixes read as CSV and as parquet.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")

_TO_II = {v: k for k, v in CANONICAL.items()}  # snake case -> Online Retail II names
_RECOMMENDERS = ("blend", "tifu-knn", "item-knn", "repeat-buy", "popularity")


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


def read_table(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV or parquet file as it is (all CSV columns as text), with clear errors."""
    path = Path(path)
    kind = orders_format(path, fmt)
    if not path.exists():
        raise OrdersFileError(f"{path}: no such file.")
    if path.is_dir():
        raise OrdersFileError(f"{path}: is a folder, not an orders file.")
    if path.stat().st_size == 0:
        raise OrdersFileError(f"{path}: the file is empty (0 bytes).")
    try:
        if kind == "csv":
            sep = "\t" if path.name.lower().endswith((".tsv", ".txt")) else ","
            frame = pd.read_csv(path, sep=sep, dtype="string", keep_default_na=True)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise OrdersFileError(f"{path}: the file is empty (no header, no rows).") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OrdersFileError(f"{path}: cannot be read as {kind}: {first}") from None
    if frame.empty:
        raise OrdersFileError(
            f"{path}: has no order lines (columns {list(map(str, frame.columns))}, 0 rows).")
    return frame


def map_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None = None, *,
                source: str = "orders") -> pd.DataFrame:
    """Rename a raw orders frame to the Online Retail II names, ready for cleaning.

    ``columns`` maps the companion's names to the file's; without it a file in either
    Online Retail schema or with the snake-case names is recognised. Optional columns
    (:data:`OPTIONAL_COLUMNS`) that are absent are added: ``Description`` as missing values,
    ``Country`` as ``"unknown"``. Raises
    :class:`OrdersFileError` naming ``source`` and every missing column.
    """
    columns = dict(columns or {})
    present = [str(c) for c in frame.columns]
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
    out = pd.DataFrame({_TO_II[ours]: frame[theirs] for ours, theirs in columns.items()})
    if "description" not in columns:
        out["Description"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if "country" not in columns:
        out["Country"] = pd.Series("unknown", index=frame.index, dtype="string")
    return out[list(RETAIL_II_SCHEMA)]


def check_orders(raw: pd.DataFrame, *, source: str = "orders") -> pd.DataFrame:
    """Check the kinds of a mapped orders frame (dates, numbers) and return it coerced.

    Raises :class:`OrdersFileError` naming ``source``, the column and offending values.
    """
    try:
        return check_frame(raw, RETAIL_II_SCHEMA, name=source,
                           allow_missing=("Description", "Customer ID"))
    except (ValueError, TypeError) as err:
        raise OrdersFileError(str(err)) from None


def load_orders(path: str | os.PathLike, *, columns: Mapping[str, str] | None = None,
                fmt: str | None = None) -> pd.DataFrame:
    """Read, map and check an orders file; raw lines in the Online Retail II schema."""
    source = f"orders file '{path}'"
    frame = read_table(path, fmt)
    return check_orders(map_columns(frame, columns, source=source), source=source)


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


def validate(raw: pd.DataFrame, *, source: str = "orders") -> Validation:
    """Summarise checked raw lines (from :func:`load_orders`) and flag what cleaning drops."""
    customers = raw["Customer ID"]
    invoice = raw["Invoice"].astype("string")
    cancelled = invoice.str.strip().str.upper().str.startswith("C").fillna(False)
    summary = pd.Series({
        "first order": str(raw["InvoiceDate"].min()),
        "last order": str(raw["InvoiceDate"].max()),
        "invoices": int(invoice.nunique()),
        "customers": int(customers.nunique()),
        "products": int(raw["StockCode"].nunique()),
        "lines without customer": int(customers.isna().sum()),
        "cancellation lines": int(cancelled.sum()),
    })
    warnings = []
    if customers.isna().all():
        warnings.append("no line has a customer id: nothing is left after cleaning.")
    elif customers.isna().mean() > 0.5:
        warnings.append(f"{customers.isna().mean():.0%} of lines have no customer id.")
    if raw["Description"].isna().all():
        warnings.append("no product descriptions (column 'description' absent or empty).")
    kinds = {c: str(raw[c].dtype) for c in raw.columns}
    return Validation(source, len(raw), kinds, summary, warnings)


def clean(raw: pd.DataFrame, *, source: str = "orders") -> tuple[CleanResult, pd.DataFrame]:
    """Clean checked raw lines and build the interactions table.

    Raises :class:`OrdersFileError` if no purchase line survives cleaning.
    """
    result = clean_transactions(raw)
    if result.transactions.empty:
        raise OrdersFileError(
            f"{source}: no purchase line is left after cleaning (lines need a customer id, "
            "positive quantity and price, and a product code).")
    return result, to_interactions(result.transactions)


def retention_summary(interactions: pd.DataFrame, *, horizon_days: int = 90) -> pd.Series:
    """Headline retention numbers of an interactions table.

    Customers, invoices, the repeat-purchase rate
    (:func:`companion.behaviour.repeat_purchase_rate`), the size-weighted cohort retention
    after 1, 3 and 6 months (:func:`companion.behaviour.retention_curve`), and the share of
    customers active in the ``horizon_days`` before the last ``horizon_days`` who bought
    nothing in the last ones (observed churn).
    """
    from companion.behaviour import cohort_retention, repeat_purchase_rate, retention_curve

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


def report_text(result: CleanResult, summary: pd.Series, *, source: str = "orders") -> str:
    """Cleaning report and retention summary as Markdown."""
    cleaning = result.report.to_markdown(index=False) if _has_tabulate() else \
        result.report.to_string(index=False)
    rows = []
    for key, value in summary.items():
        if isinstance(value, float):
            value = "n/a" if np.isnan(value) else f"{value:.1%}"  # rates and shares
        rows.append(f"| {key} | {value} |")
    return "\n".join([
        f"# Report on {source}", "", "## Cleaning", "", cleaning, "",
        "## Retention", "", "| measure | value |", "|---|---|", *rows, "",
    ])


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
    from companion import recommenders as rec

    if name not in _RECOMMENDERS:
        raise ValueError(f"model must be one of {list(_RECOMMENDERS)}, got {name!r}.")
    return {
        "blend": lambda: rec.Blend(rec.ItemKNN(neighbours=200, shrinkage=20.0), weight=1.0),
        "tifu-knn": lambda: rec.TIFUKNN(k=100, alpha=0.2, group_size=3),
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
               as_of: object | None = None) -> pd.DataFrame:
    """BG/NBD churn risk of every customer (:func:`companion.btyd.churn_probability`).

    The model is fitted on purchases strictly before ``as_of`` (default: the day after the
    last purchase). Returns ``customer_id, frequency, recency_days, age_days, p_alive,
    p_churn`` sorted by ``p_churn`` (highest risk first), where ``p_churn`` is the
    probability of no purchase in the next ``horizon_days``.
    """
    from companion.btyd import churn_probability, rfm_summary

    horizon_days = check_positive_int(horizon_days, name="horizon_days")
    if as_of is None:
        as_of = interactions["timestamp"].max().normalize() + pd.Timedelta(days=1)
    summary = rfm_summary(interactions, as_of)
    scores = churn_probability(interactions, as_of, horizon_days)
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
