"""Loading the book's real e-commerce data, and a synthetic shop with the same schema.

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

from companion._checks import check_frame, check_in, check_positive_int, check_timestamp
from companion._optional import require

DATA_DIR_ENV = "COMPANION_DATA_DIR"
CACHE_DIR_ENV = "COMPANION_CACHE_DIR"

#: Column kinds of UCI Online Retail (dataset 352), as in the original workbook.
RETAIL_I_SCHEMA: dict[str, str] = {
    "InvoiceNo": "string",
    "StockCode": "string",
    "Description": "string",
    "Quantity": "integer",
    "InvoiceDate": "datetime",
    "UnitPrice": "float",
    "CustomerID": "float",
    "Country": "string",
}
#: Column kinds of UCI Online Retail II (dataset 502).
RETAIL_II_SCHEMA: dict[str, str] = {
    "Invoice": "string",
    "StockCode": "string",
    "Description": "string",
    "Quantity": "integer",
    "InvoiceDate": "datetime",
    "Price": "float",
    "Customer ID": "float",
    "Country": "string",
}
#: Renaming from the Online Retail names to the Online Retail II names.
I_TO_II = dict(zip(RETAIL_I_SCHEMA, RETAIL_II_SCHEMA, strict=True))
_RETAIL_NULLABLE = ("Description", "CustomerID", "Customer ID")

#: Column kinds of the Online Shoppers Purchasing Intention data (dataset 468).
SHOPPERS_SCHEMA: dict[str, str] = {
    "Administrative": "integer",
    "Administrative_Duration": "float",
    "Informational": "integer",
    "Informational_Duration": "float",
    "ProductRelated": "integer",
    "ProductRelated_Duration": "float",
    "BounceRates": "float",
    "ExitRates": "float",
    "PageValues": "float",
    "SpecialDay": "float",
    "Month": "string",
    "OperatingSystems": "integer",
    "Browser": "integer",
    "Region": "integer",
    "TrafficType": "integer",
    "VisitorType": "string",
    "Weekend": "bool",
    "Revenue": "bool",
}

#: First day that Online Retail (I) covers; Online Retail II's first sheet overlaps it
#: from this day to 2010-12-09.
OVERLAP_START = pd.Timestamp("2010-12-01")

ATTRIBUTION = (
    "Chen, D. (2015). Online Retail [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C5BW33. CC BY 4.0.\n"
    "Chen, D. (2019). Online Retail II [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C5CG6D. CC BY 4.0.\n"
    "Sakar, C. & Kastro, Y. (2018). Online Shoppers Purchasing Intention Dataset [Dataset]. "
    "UCI Machine Learning Repository. https://doi.org/10.24432/C5F88Q. CC BY 4.0."
)

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
    nullable: tuple[str, ...] = _RETAIL_NULLABLE


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
        :func:`companion.preprocessing.clean_transactions`.
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


# --------------------------------------------------------------------------------------
# The synthetic shop
# --------------------------------------------------------------------------------------

_CATEGORIES = {
    "candles": ("T-LIGHT HOLDER", "CANDLE", "LANTERN", "TEALIGHTS"),
    "kitchen": ("MUG", "CAKE STAND", "TEA TOWEL", "LUNCH BOX"),
    "bags": ("JUMBO BAG", "SHOPPER", "CHARLOTTE BAG", "PURSE"),
    "paper": ("GREETING CARD", "WRAP", "NOTEBOOK", "PARTY BUNTING"),
    "home": ("CUSHION COVER", "CLOCK", "DOORMAT", "PHOTO FRAME"),
    "christmas": ("CHRISTMAS BAUBLE", "ADVENT CALENDAR", "STOCKING", "WREATH"),
    "garden": ("PLANT POT", "WATERING CAN", "BIRD HOUSE", "GARDEN SIGN"),
    "toys": ("SPACEBOY", "DOLLY GIRL", "JIGSAW", "SKIPPING ROPE"),
}
_STYLES = ("WHITE", "RED RETROSPOT", "VINTAGE", "PINK POLKADOT", "REGENCY", "BLUE",
           "HEART", "PAISLEY", "SPOTTY", "GREEN", "SKULL", "FLORAL")
_COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands")
_COUNTRY_P = (0.88, 0.03, 0.03, 0.03, 0.015, 0.015)
_PACK_SIZES = np.array([1, 2, 3, 4, 6, 8, 12, 24, 48])
_PACK_P = np.array([0.12, 0.14, 0.08, 0.1, 0.16, 0.06, 0.22, 0.09, 0.03])


@dataclass
class SyntheticTruth:
    """The hidden variables behind :func:`synthetic_shop`, for tests and teaching.

    Attributes
    ----------
    customers
        One row per customer: ``CustomerID``, ``Country``, ``first_visit``, ``churn_date``
        (``NaT`` for customers who never churn), ``rate`` (baskets per 30 days),
        ``favourite_category`` and ``repeat_prob``.
    products
        One row per product: ``StockCode``, ``Description``, ``category``, ``popularity``
        (the Zipf weight) and ``UnitPrice``.
    tastes
        Array (customers x categories) of each customer's category preferences.
    """

    customers: pd.DataFrame
    products: pd.DataFrame
    tastes: np.ndarray


def synthetic_shop(
    n_customers: int = 400,
    n_products: int = 300,
    *,
    start: str = "2010-12-01",
    months: int = 12,
    seed: int = 0,
    schema: str = "I",
    dirty: bool = True,
    return_truth: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, SyntheticTruth]:
    """Simulate an online giftware shop with the Online Retail schema, offline and seeded.

    The generative story:

    * **Products** fall into eight categories (candles, kitchen, bags, ...). Their
      popularity follows a Zipf law (weight ``1 / rank**1.1``), so a few items sell a lot
      and most sell little: the long tail. Prices are log-normal per category.
    * **Customers** each have a taste over categories (Dirichlet, concentrated on one or
      two), a shopping rate (gamma distributed; a few wholesalers buy often and in bulk),
      a country (mostly the UK) and a first visit spread over the first three quarters of
      the period, which creates monthly cohorts.
    * **Churn**: after a customer-specific lifetime (exponential, mean nine months) a
      customer stops buying for good; a quarter of customers never churn. Customers who
      are about to churn also slow down over their last three months.
    * **Seasonality**: every rate is scaled by ``1 + 0.6 cos(2 pi (month - 11) / 12)``, a
      peak in November, as for a gift shop.
    * **Baskets**: each visit buys ``1 + Poisson`` distinct items; each item is, with the
      customer's repeat probability, a re-purchase drawn from their own history
      (weighted by past counts), and otherwise a new draw: category from taste, product
      from popularity within the category. Quantities come in pack sizes.
    * **Cancellations**: 2% of lines are cancelled a few days later by a ``C`` invoice
      with negative quantity.
    * **Dirt** (``dirty=True``): 8% of baskets come from guests without a customer id,
      5% of baskets carry a ``POST`` postage line, 0.3% of lines have a zero price,
      0.5% of lines are exact duplicates, and a fifth of descriptions carry stray spaces.

    Parameters
    ----------
    n_customers, n_products
        Size of the shop.
    start, months
        First day and length of the simulated period.
    seed
        Seed of the random generator; the same seed gives the same shop.
    schema
        ``"I"`` for the Online Retail column names, ``"II"`` for Online Retail II names.
    dirty
        Add the rows that cleaning rules exist for.
    return_truth
        Also return the hidden variables as a :class:`SyntheticTruth`.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, SyntheticTruth)
        Invoice lines sorted by date, with the dtypes of the real files.
    """
    check_positive_int(n_customers, name="n_customers", minimum=2)
    check_positive_int(n_products, name="n_products", minimum=len(_CATEGORIES))
    check_positive_int(months, name="months")
    check_in(schema, ("I", "II"), name="schema")
    t0 = check_timestamp(start, name="start").normalize()
    t1 = t0 + pd.DateOffset(months=months)
    span_days = (t1 - t0).days
    rng = np.random.default_rng(seed)
    cats = list(_CATEGORIES)
    n_cat = len(cats)

    # Products: category, Zipf popularity, price, unique stock codes and descriptions.
    prod_cat = np.arange(n_products) % n_cat
    rng.shuffle(prod_cat)
    popularity = 1.0 / (rng.permutation(n_products) + 1.0) ** 1.1
    cat_price = rng.uniform(0.6, 4.0, n_cat)
    price = np.round(cat_price[prod_cat] * rng.lognormal(0.0, 0.45, n_products), 2)
    price = np.maximum(price, 0.19)
    codes = 20000 + rng.choice(70000, size=n_products, replace=False)
    suffix = rng.choice(["", "", "", "A", "B", "C"], size=n_products)
    stock = np.array([f"{c}{s}" for c, s in zip(codes, suffix, strict=True)])
    desc = []
    seen_desc: set[str] = set()
    for j in range(n_products):
        nouns = _CATEGORIES[cats[prod_cat[j]]]
        text = f"{rng.choice(_STYLES)} {rng.choice(nouns)}"
        while text in seen_desc:
            text = f"{text} {rng.choice(('SMALL', 'LARGE', 'SET OF 3', 'MINI', 'XL'))}"
        seen_desc.add(text)
        desc.append(text)
    desc = np.array(desc, dtype=object)
    by_cat = [np.flatnonzero(prod_cat == k) for k in range(n_cat)]
    cat_p = [popularity[idx] / popularity[idx].sum() for idx in by_cat]

    # Customers.
    tastes = rng.dirichlet(np.full(n_cat, 0.25), size=n_customers)
    rate = rng.gamma(1.2, 1.0, n_customers)  # baskets per 30 days
    wholesaler = rng.random(n_customers) < 0.1
    rate[wholesaler] *= 3
    first = rng.uniform(0, 0.75 * span_days, n_customers)
    lifetime = rng.exponential(270.0, n_customers)
    never = rng.random(n_customers) < 0.25
    churn_day = np.where(never, np.inf, first + lifetime)
    repeat_prob = rng.beta(4, 4, n_customers)
    country = rng.choice(_COUNTRIES, p=_COUNTRY_P, size=n_customers)
    customer_ids = 12346 + rng.choice(6000, size=n_customers, replace=False)

    def season(day: np.ndarray) -> np.ndarray:
        month = (t0 + pd.to_timedelta(day, unit="D")).month.to_numpy()
        return 1.0 + 0.6 * np.cos(2 * np.pi * (month - 11) / 12)

    rows: list[tuple] = []  # (day, customer index or -1, product index, quantity)
    basket_days: list[float] = []
    basket_owner: list[int] = []
    for u in range(n_customers):
        end = min(churn_day[u], span_days)
        if end <= first[u]:
            continue
        # Thinning of a Poisson process with rate <= rate*1.6 per 30 days.
        lam_max = rate[u] * 1.6 / 30.0
        n_cand = rng.poisson(lam_max * (end - first[u]))
        cand = np.sort(rng.uniform(first[u], end, n_cand))
        accept = season(cand) / 1.6
        slowing = np.where(end - cand < 90, 0.5, 1.0) if np.isfinite(churn_day[u]) else 1.0
        days = cand[rng.random(n_cand) < accept * slowing]
        if len(days) == 0:
            days = np.array([first[u]])
        history: dict[int, int] = {}
        for day in days:
            size = 1 + rng.poisson(12 if wholesaler[u] else 5)
            chosen: set[int] = set()
            for _ in range(size * 3):
                if len(chosen) >= size:
                    break
                if history and rng.random() < repeat_prob[u]:
                    items = np.fromiter(history, dtype=int)
                    weights = np.fromiter(history.values(), dtype=float)
                    j = int(rng.choice(items, p=weights / weights.sum()))
                else:
                    k = rng.choice(n_cat, p=tastes[u])
                    j = int(rng.choice(by_cat[k], p=cat_p[k]))
                chosen.add(j)
            for j in chosen:
                history[j] = history.get(j, 0) + 1
                qty = int(rng.choice(_PACK_SIZES, p=_PACK_P)) * (4 if wholesaler[u] else 1)
                rows.append((day, u, j, qty))
            basket_days.append(day)
            basket_owner.append(u)

    # Guests: baskets without a customer id.
    n_guest = int(0.08 * len(basket_days)) if dirty else 0
    for day in rng.uniform(0, span_days, n_guest):
        for j in rng.choice(n_products, size=1 + rng.poisson(3), p=popularity / popularity.sum()):
            rows.append((day, -1, int(j), int(rng.choice(_PACK_SIZES, p=_PACK_P))))

    lines = pd.DataFrame(rows, columns=["day", "u", "j", "Quantity"])
    # Whole minutes during shop hours, shared by all lines of a basket.
    lines["day"] = np.floor(lines["day"]) + (8 + (lines["day"] % 1) * 10) / 24
    lines["InvoiceDate"] = (t0 + pd.to_timedelta(lines["day"], unit="D")).dt.floor("min")
    lines = lines.sort_values(["InvoiceDate", "u", "j"], kind="stable").reset_index(drop=True)
    basket_key = lines["InvoiceDate"].astype("int64").astype(str) + "_" + lines["u"].astype(str)
    lines["InvoiceNo"] = (536365 + pd.factorize(basket_key)[0]).astype(str)
    is_guest = lines["u"].to_numpy() < 0
    uidx = np.where(is_guest, 0, lines["u"].to_numpy())
    frame = pd.DataFrame({
        "InvoiceNo": lines["InvoiceNo"],
        "StockCode": stock[lines["j"]],
        "Description": desc[lines["j"]],
        "Quantity": lines["Quantity"].astype("int64"),
        "InvoiceDate": lines["InvoiceDate"],
        "UnitPrice": price[lines["j"]],
        "CustomerID": np.where(is_guest, np.nan, customer_ids[uidx].astype(float)),
        "Country": np.where(is_guest, "United Kingdom", country[uidx]),
    })

    extra = []
    # Cancellations: a C invoice a few days later with the negative quantity.
    cancel = frame[(rng.random(len(frame)) < 0.02) & frame["CustomerID"].notna()].copy()
    cancel["InvoiceDate"] = cancel["InvoiceDate"] + pd.to_timedelta(
        rng.integers(1, 10, len(cancel)), unit="D"
    )
    cancel = cancel[cancel["InvoiceDate"] < t1]
    cancel["Quantity"] = -cancel["Quantity"]
    cancel["InvoiceNo"] = "C" + (600000 + np.arange(len(cancel))).astype(str)
    extra.append(cancel)
    if dirty:
        invoices = frame.drop_duplicates("InvoiceNo")
        post = invoices[rng.random(len(invoices)) < 0.05].copy()
        post["StockCode"], post["Description"] = "POST", "POSTAGE"
        post["Quantity"], post["UnitPrice"] = 1, 18.0
        extra.append(post)
        extra.append(frame.sample(frac=0.005, random_state=seed))  # exact duplicates
        zero = rng.random(len(frame)) < 0.003
        frame.loc[zero, "UnitPrice"] = 0.0
        spaced = rng.random(len(frame)) < 0.2
        frame.loc[spaced, "Description"] = frame.loc[spaced, "Description"] + " "
    frame = pd.concat([frame, *extra], ignore_index=True)
    frame = frame.sort_values("InvoiceDate", kind="stable").reset_index(drop=True)
    frame["InvoiceDate"] = frame["InvoiceDate"].astype("datetime64[us]")
    for col in ("InvoiceNo", "StockCode", "Description", "Country"):
        frame[col] = frame[col].astype("string")
    if schema == "II":
        frame = frame.rename(columns=I_TO_II)
    if not return_truth:
        return frame
    customers = pd.DataFrame({
        "CustomerID": customer_ids,
        "Country": country,
        "first_visit": t0 + pd.to_timedelta(first, unit="D"),
        "churn_date": [
            t0 + pd.Timedelta(days=float(d)) if np.isfinite(d) and d < span_days else pd.NaT
            for d in churn_day
        ],
        "rate": rate,
        "favourite_category": [cats[k] for k in tastes.argmax(axis=1)],
        "repeat_prob": repeat_prob,
    })
    products = pd.DataFrame({
        "StockCode": stock, "Description": desc, "category": [cats[k] for k in prod_cat],
        "popularity": popularity, "UnitPrice": price,
    })
    return frame, SyntheticTruth(customers=customers, products=products, tastes=tastes)


# --------------------------------------------------------------------------------------
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
