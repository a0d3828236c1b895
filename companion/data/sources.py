"""Loading the book's real e-commerce data, with verified downloads.

Where the files come from, in order:

1. ``data_dir`` if you pass one;
2. the directory named by the environment variable ``COMPANION_DATA_DIR``;
3. the user cache (``COMPANION_CACHE_DIR``, else ``$XDG_CACHE_HOME/companion``, else
   ``~/.cache/companion``);
4. if ``download=True``, UCI's official archives, which are downloaded, converted to the
   same parquet/CSV files in the cache and verified (schema, row count, column totals)
   before use.

:func:`load_shop` adds a last resort: when no real data can be had it returns the seeded
:func:`synthetic_shop` and says so in :attr:`ShopData.source`.

All three data sets are from the UCI Machine Learning Repository under CC BY 4.0; see
:data:`ATTRIBUTION`.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from companion._checks import check_frame, check_in
from companion._optional import require
from companion.data.schema import (
    I_TO_II,
    OVERLAP_START,
    RETAIL_I_SCHEMA,
    RETAIL_II_SCHEMA,
    RETAIL_NULLABLE,
    SHOPPERS_SCHEMA,
)
from companion.data.synthetic import synthetic_shop

DATA_DIR_ENV = "COMPANION_DATA_DIR"
CACHE_DIR_ENV = "COMPANION_CACHE_DIR"

_UCI = "https://archive.ics.uci.edu/static/public"


@dataclass(frozen=True)
class RemoteFile:
    """One data file, where to download it, and how to verify it.

    Attributes
    ----------
    filename
        Name of the file in the data directory or cache.
    url
        Address of the official zip archive that contains it.
    member
        Name of the archive member (matched case-insensitively on its base name).
    schema
        Column kinds the file must have.
    rows
        Exact row count the file must have.
    column_sums
        Exact totals of numeric columns, a content fingerprint checked after download.
    sheet
        Worksheet to read when the member is an Excel workbook.
    sha256
        Checksum of the archive, verified when given.
    """

    filename: str
    url: str
    member: str
    schema: dict[str, str]
    rows: int
    column_sums: dict[str, float] = field(default_factory=dict)
    sheet: str | int | None = None
    sha256: str | None = None
    nullable: tuple[str, ...] = RETAIL_NULLABLE


#: The real data sets the book uses, by key.
DATASETS: dict[str, RemoteFile] = {
    "online_retail": RemoteFile(
        filename="online_retail.parquet",
        url=f"{_UCI}/352/online+retail.zip",
        member="Online Retail.xlsx",
        sheet=0,
        schema=RETAIL_I_SCHEMA,
        rows=541_909,
        column_sums={"Quantity": 5_176_450},
    ),
    "online_retail_II_2009_2010": RemoteFile(
        filename="online_retail_II_2009_2010.parquet",
        url=f"{_UCI}/502/online+retail+ii.zip",
        member="online_retail_II.xlsx",
        sheet="Year 2009-2010",
        schema=RETAIL_II_SCHEMA,
        rows=525_461,
        column_sums={"Quantity": 5_432_041},
    ),
    "online_shoppers": RemoteFile(
        filename="online_shoppers_intention.csv",
        url=f"{_UCI}/468/online+shoppers+purchasing+intention+dataset.zip",
        member="online_shoppers_intention.csv",
        schema=SHOPPERS_SCHEMA,
        rows=12_330,
        column_sums={"ProductRelated": 391_249},
        nullable=(),
    ),
}


def cache_dir() -> Path:
    """Return the user cache directory for downloaded data (it may not exist yet)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "companion"


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for data files, in order of preference."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    dirs.append(cache_dir())
    return dirs


def _read_file(path: Path, spec: RemoteFile) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def verify_frame(frame: pd.DataFrame, spec: RemoteFile, *, source: str) -> pd.DataFrame:
    """Check ``frame`` against ``spec``'s schema, row count and column totals.

    Returns the frame with dtypes coerced. Raises a ValueError naming ``source`` and what
    differs.
    """
    out = check_frame(frame, spec.schema, name=source, allow_missing=spec.nullable)
    if len(out) != spec.rows:
        raise ValueError(
            f"{source} has {len(out):,} rows; {spec.filename} must have {spec.rows:,}."
        )
    for col, expected in spec.column_sums.items():
        total = float(out[col].sum())
        if not np.isclose(total, expected, rtol=0, atol=1e-6 * max(1.0, abs(expected))):
            raise ValueError(
                f"{source} column '{col}' sums to {total:,.2f}; {spec.filename} must sum to "
                f"{expected:,.2f}. The file is not the expected data set."
            )
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, *, timeout: float) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "companion-book"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0) or None
        with target.open("wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
            disable=None,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def _read_member(archive: Path, spec: RemoteFile) -> pd.DataFrame:
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"the download from {spec.url} is not a zip archive.")
    with zipfile.ZipFile(archive) as zf:
        broken = zf.testzip()
        if broken is not None:
            raise ValueError(f"archive member {broken!r} from {spec.url} is corrupt.")
        wanted = spec.member.lower()
        names = [n for n in zf.namelist() if Path(n).name.lower() == wanted]
        if not names:
            raise ValueError(
                f"the archive from {spec.url} has no member {spec.member!r}; "
                f"it has {zf.namelist()}."
            )
        data = zf.read(names[0])
    if wanted.endswith(".xlsx"):
        text_cols = {c: str for c, k in spec.schema.items() if k == "string"}
        frame = pd.read_excel(io.BytesIO(data), sheet_name=spec.sheet, dtype=text_cols)
        # read_excel turns empty cells into NaN and keeps text as object: normalise.
        for col in text_cols:
            frame[col] = frame[col].astype("string")
        return frame
    return pd.read_csv(io.BytesIO(data))


def download_dataset(
    spec: RemoteFile | str,
    *,
    directory: str | os.PathLike | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download one data set's official archive, verify it and store it as a file.

    The archive is checked (zip integrity, optional sha256), its member converted, and the
    result checked against the schema, the exact row count and the column totals before it
    is written (atomically) to ``directory`` (default: :func:`cache_dir`). Nothing is left
    behind when a check fails.

    Parameters
    ----------
    spec
        A key of :data:`DATASETS` or a :class:`RemoteFile`.
    directory
        Where to store the converted file.
    timeout
        Seconds to wait for the server before giving up.

    Returns
    -------
    pathlib.Path
        The path of the verified file.
    """
    if isinstance(spec, str):
        check_in(spec, DATASETS, name="dataset")
        spec = DATASETS[spec]
    target_dir = Path(directory) if directory is not None else cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    if spec.member.lower().endswith(".xlsx"):
        require("openpyxl", "data", load=False)  # before the download, not after
    target = target_dir / spec.filename
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            _download(spec.url, archive, timeout=timeout)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise OSError(f"could not download {spec.url}: {err}") from err
        if spec.sha256 is not None and _sha256(archive) != spec.sha256:
            raise ValueError(f"the download from {spec.url} does not have sha256 {spec.sha256}.")
        frame = verify_frame(_read_member(archive, spec), spec, source=f"download {spec.url}")
        staged = Path(tmp) / spec.filename
        if staged.suffix == ".parquet":
            frame.to_parquet(staged, index=False)
        else:
            # Keep the CSV byte-for-byte as UCI ships it.
            with zipfile.ZipFile(archive) as zf:
                name = next(n for n in zf.namelist() if Path(n).name.lower() == spec.member.lower())
                staged.write_bytes(zf.read(name))
        shutil.move(staged, target)
    return target


def locate(
    key: str, *, data_dir: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Return the path of data set ``key``, downloading it to the cache if allowed.

    Raises FileNotFoundError naming every place looked at when the file is nowhere and
    ``download`` is False.
    """
    check_in(key, DATASETS, name="dataset")
    spec = DATASETS[key]
    looked = []
    for directory in candidate_dirs(data_dir):
        path = directory / spec.filename
        looked.append(str(path))
        if path.is_file():
            return path
    if not download:
        raise FileNotFoundError(
            f"{spec.filename} was not found; looked at {looked}. Set {DATA_DIR_ENV} to the "
            "folder that holds it, or pass download=True to fetch it from UCI."
        )
    return download_dataset(spec)


def _load(key: str, data_dir, download: bool) -> pd.DataFrame:
    spec = DATASETS[key]
    path = locate(key, data_dir=data_dir, download=download)
    return verify_frame(_read_file(path, spec), spec, source=str(path))


def load_online_retail(
    version: str = "I",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> pd.DataFrame:
    """Load UCI Online Retail, every invoice line of a UK online giftware shop.

    Parameters
    ----------
    version
        ``"I"``: Online Retail, 2010-12-01 to 2011-12-09, 541,909 lines, original column
        names (``InvoiceNo``, ``UnitPrice``, ``CustomerID``...). ``"II"``: December 2009
        to December 2011, 1,044,847 lines with the Online Retail II column names
        (``Invoice``, ``Price``, ``Customer ID``...), built from the first sheet of Online
        Retail II up to 2010-11-30 followed by Online Retail, so that the days the two
        files share are taken once.
    data_dir
        Folder holding the files; see the module docstring for the search order.
    download
        Whether to download UCI's archives when the files are not found.

    Returns
    -------
    pandas.DataFrame
        Raw invoice lines, unchanged apart from dtypes. Clean them with
        :func:`companion.data.preprocessing.clean_transactions`.
    """
    check_in(version, ("I", "II"), name="version")
    recent = _load("online_retail", data_dir, download)
    if version == "I":
        return recent
    older = _load("online_retail_II_2009_2010", data_dir, download)
    older = older[older["InvoiceDate"] < OVERLAP_START]
    return pd.concat([older, recent.rename(columns=I_TO_II)], ignore_index=True)


def load_online_shoppers(
    *, data_dir: str | os.PathLike | None = None, download: bool = True
) -> pd.DataFrame:
    """Load the Online Shoppers Purchasing Intention data: 12,330 web sessions.

    One row per session with page counts and durations, Google-Analytics-style bounce,
    exit and page-value figures, month, technical fields, visitor type, a weekend flag
    and the label ``Revenue`` (the session ended in a purchase). ``Weekend`` and
    ``Revenue`` are booleans.
    """
    frame = _load("online_shoppers", data_dir, download)
    for col in ("Weekend", "Revenue"):
        frame[col] = frame[col].astype(bool)
    return frame

# Real data with a visible fallback
# --------------------------------------------------------------------------------------


@dataclass
class ShopData:
    """Transactions plus a record of where they came from.

    Attributes
    ----------
    transactions
        Raw invoice lines in the Online Retail (``version="I"``) or Online Retail II
        schema.
    source
        ``"real"`` or ``"synthetic"``.
    note
        One sentence for the reader saying which data ran and why.
    """

    transactions: pd.DataFrame
    source: str
    note: str

    @property
    def is_real(self) -> bool:
        """Whether these are the real UCI data."""
        return self.source == "real"

    def _repr_markdown_(self) -> str:
        first = self.transactions["InvoiceDate"].min().date()
        last = self.transactions["InvoiceDate"].max().date()
        flag = "" if self.is_real else "**⚠ SYNTHETIC DATA.** "
        return (f"> {flag}{self.note} {len(self.transactions):,} invoice lines "
                f"from {first} to {last}.")


def load_shop(
    version: str = "II",
    *,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    seed: int = 0,
) -> ShopData:
    """Load the real Online Retail data, or fall back to the synthetic shop.

    Parameters
    ----------
    version
        ``"I"`` or ``"II"``, as in :func:`load_online_retail`.
    source
        ``"real"`` demands the real data (errors propagate); ``"synthetic"`` always
        simulates; ``"auto"`` (default) tries the real data and falls back to
        :func:`synthetic_shop` when it cannot be loaded or downloaded.
    data_dir, download
        Passed to :func:`load_online_retail`.
    seed
        Seed of the synthetic shop.
    """
    check_in(source, ("auto", "real", "synthetic"), name="source")
    check_in(version, ("I", "II"), name="version")
    if source != "synthetic":
        try:
            frame = load_online_retail(version, data_dir=data_dir, download=download)
            name = "Online Retail II" if version == "II" else "Online Retail"
            return ShopData(
                frame, "real", f"These results come from the real UCI {name} data (CC BY 4.0)."
            )
        except (OSError, ValueError) as err:
            if source == "real":
                raise
            reason = str(err).splitlines()[0]
    else:
        reason = "source='synthetic' was requested"
    months = 24 if version == "II" else 12
    start = "2009-12-01" if version == "II" else "2010-12-01"
    frame = synthetic_shop(n_customers=800, n_products=400, start=start, months=months,
                           seed=seed, schema=version)
    return ShopData(
        frame,
        "synthetic",
        "These results come from the SYNTHETIC shop, not real customers, because the real "
        f"data could not be loaded ({reason}). Set {DATA_DIR_ENV} to the folder with the "
        "UCI files to see real numbers.",
    )
