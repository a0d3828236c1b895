"""Tests of companion.data: the synthetic shop, the loaders and the verified download."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import io
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion._checks import check_frame

# --------------------------------------------------------------------------- synthetic


def test_synthetic_shop_has_the_online_retail_schema(shop):
    frame, _ = shop
    assert list(frame.columns) == list(data.RETAIL_I_SCHEMA)
    checked = check_frame(frame, data.RETAIL_I_SCHEMA, allow_missing=("CustomerID",))
    assert checked["Quantity"].dtype == np.int64
    assert frame["InvoiceDate"].is_monotonic_increasing


def test_synthetic_shop_schema_ii_renames_columns():
    frame = data.synthetic_shop(30, 40, months=2, seed=1, schema="II")
    assert list(frame.columns) == list(data.RETAIL_II_SCHEMA)


def test_synthetic_shop_is_reproducible():
    a = data.synthetic_shop(40, 40, months=3, seed=3)
    b = data.synthetic_shop(40, 40, months=3, seed=3)
    c = data.synthetic_shop(40, 40, months=3, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_synthetic_shop_has_a_long_tail(clean_shop):
    counts = clean_shop.transactions["stock_code"].value_counts()
    top = counts.iloc[: max(1, len(counts) // 10)].sum()
    assert top / counts.sum() > 0.3  # the top tenth of products sells far over a tenth


def test_synthetic_shop_has_repeat_buying(interactions):
    baskets = interactions.groupby(["user_id", "item_id"])["invoice"].nunique()
    assert (baskets > 1).mean() > 0.1


def test_synthetic_shop_has_cancellations(shop):
    frame, _ = shop
    cancels = frame[frame["InvoiceNo"].str.startswith("C")]
    assert len(cancels) > 0
    assert (cancels["Quantity"] < 0).all()


def test_synthetic_shop_has_seasonality(shop):
    frame, _ = shop
    per_month = frame.groupby(frame["InvoiceDate"].dt.month)["InvoiceNo"].nunique()
    assert per_month[11] > 1.5 * per_month[5]


def test_churned_customers_stop_buying(shop):
    frame, truth = shop
    churned = truth.customers.dropna(subset=["churn_date"])
    assert 0 < len(churned) < len(truth.customers)
    sales = frame[~frame["InvoiceNo"].str.startswith("C")].merge(
        churned, on="CustomerID", suffixes=("", "_truth")
    )
    assert len(sales) > 0
    assert (sales["InvoiceDate"] < sales["churn_date"] + pd.Timedelta(days=1)).all()


def test_customer_tastes_show_in_purchases(shop, clean_shop):
    _, truth = shop
    lines = clean_shop.transactions.merge(
        truth.products[["StockCode", "category"]], left_on="stock_code", right_on="StockCode"
    )
    top = lines.groupby("customer_id")["category"].agg(lambda s: s.value_counts().index[0])
    fav = truth.customers.set_index("CustomerID")["favourite_category"]
    agree = (top == fav.reindex(top.index)).mean()
    assert agree > 0.6


def test_dirty_rows_are_present_only_when_asked(shop):
    frame, _ = shop
    assert frame["CustomerID"].isna().any()
    assert (frame["StockCode"] == "POST").any()
    assert (frame["UnitPrice"] == 0).any()
    assert frame.duplicated().any()
    assert frame["Description"].str.endswith(" ").any()
    tidy = data.synthetic_shop(60, 40, months=3, seed=2, dirty=False)
    assert not tidy["CustomerID"].isna().any()
    assert not (tidy["StockCode"] == "POST").any()
    assert not tidy.duplicated().any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_customers": 1}, ValueError, "n_customers"),
        ({"n_products": 3}, ValueError, "n_products"),
        ({"months": 0}, ValueError, "months"),
        ({"schema": "III"}, ValueError, "schema"),
        ({"start": "not a date"}, ValueError, "start"),
        ({"n_customers": 2.5}, TypeError, "n_customers"),
    ],
)
def test_synthetic_shop_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.synthetic_shop(**kwargs)


# --------------------------------------------------------------------------- real data


def test_load_online_retail_i_matches_the_readme(real_dir):
    frame = data.load_online_retail("I", data_dir=real_dir, download=False)
    assert frame.shape == (541_909, 8)
    assert frame["CustomerID"].nunique() == 4_372
    assert frame["StockCode"].nunique() == 4_070
    assert frame["Quantity"].sum() == 5_176_450


def test_load_online_retail_ii_takes_the_overlap_once(real_dir):
    frame = data.load_online_retail("II", data_dir=real_dir, download=False)
    assert frame.shape == (1_044_847, 8)
    assert list(frame.columns) == list(data.RETAIL_II_SCHEMA)
    assert frame["Customer ID"].nunique() == 5_942
    assert frame["StockCode"].nunique() == 5_305
    assert frame["InvoiceDate"].min() == pd.Timestamp("2009-12-01 07:45:00")
    assert frame["InvoiceDate"].max() == pd.Timestamp("2011-12-09 12:50:00")
    recent = data.load_online_retail("I", data_dir=real_dir, download=False)
    overlap = (frame["InvoiceDate"] >= "2010-12-01") & (frame["InvoiceDate"] < "2010-12-10")
    overlap_i = (recent["InvoiceDate"] >= "2010-12-01") & (recent["InvoiceDate"] < "2010-12-10")
    assert overlap.sum() == overlap_i.sum() == 22_523


def test_load_online_shoppers_matches_the_readme(real_dir):
    frame = data.load_online_shoppers(data_dir=real_dir, download=False)
    assert frame.shape == (12_330, 18)
    assert frame["Revenue"].sum() == 1_908
    assert frame["Weekend"].dtype == bool
    assert (frame["VisitorType"] == "Returning_Visitor").sum() == 10_551


def test_data_dir_env_var_is_used(real_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(real_dir))
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    assert data.locate("online_shoppers", download=False) == real_dir / (
        "online_shoppers_intention.csv"
    )


def test_load_shop_uses_real_data_when_found(real_dir):
    shop = data.load_shop("I", data_dir=real_dir, download=False)
    assert shop.is_real
    assert len(shop.transactions) == 541_909
    assert "real UCI Online Retail" in shop._repr_markdown_()


# --------------------------------------------------------------------------- fallback


def test_locate_names_every_place_it_looked(no_data_env):
    with pytest.raises(FileNotFoundError, match="online_retail.parquet") as info:
        data.locate("online_retail", data_dir=no_data_env / "mine", download=False)
    assert "mine" in str(info.value) and "cache" in str(info.value)


def test_locate_rejects_unknown_keys():
    with pytest.raises(ValueError, match="dataset"):
        data.locate("no_such_data")


def test_load_shop_falls_back_to_the_synthetic_shop(no_data_env):
    shop = data.load_shop("I", download=False)
    assert shop.source == "synthetic" and not shop.is_real
    assert "SYNTHETIC" in shop._repr_markdown_()
    assert "online_retail.parquet" in shop.note
    assert list(shop.transactions.columns) == list(data.RETAIL_I_SCHEMA)


def test_load_shop_real_raises_when_nothing_is_found(no_data_env):
    with pytest.raises(FileNotFoundError):
        data.load_shop("II", source="real", download=False)


def test_load_shop_synthetic_ii_spans_two_years():
    shop = data.load_shop("II", source="synthetic")
    dates = shop.transactions["InvoiceDate"]
    assert list(shop.transactions.columns) == list(data.RETAIL_II_SCHEMA)
    assert dates.min() < pd.Timestamp("2010-01-01") and dates.max() > pd.Timestamp("2011-06-01")


def test_load_shop_rejects_bad_source():
    with pytest.raises(ValueError, match="source"):
        data.load_shop(source="web")


def test_verify_frame_checks_rows_and_totals():
    spec = dataclasses.replace(data.DATASETS["online_shoppers"], rows=2,
                               column_sums={"ProductRelated": 3})
    frame = pd.read_csv(io.StringIO(_SHOPPERS_CSV))
    assert len(data.verify_frame(frame, spec, source="x")) == 2
    with pytest.raises(ValueError, match="has 1 rows"):
        data.verify_frame(frame.iloc[:1], spec, source="x")
    with pytest.raises(ValueError, match="'ProductRelated' sums to"):
        data.verify_frame(frame.assign(ProductRelated=[5, 5]), spec, source="x")


# --------------------------------------------------------------------------- download

_SHOPPERS_CSV = (
    ",".join(data.SHOPPERS_SCHEMA) + "\r\n"
    "0,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,FALSE,FALSE\r\n"
    "0,0,0,0,2,64,0,0.1,0,0,Feb,2,2,1,2,New_Visitor,TRUE,TRUE\r\n"
)


def _xlsx(frame: pd.DataFrame, sheet: str) -> bytes:
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name=sheet, index=False)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving the files of a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def small_shop():
    """A small Online Retail II-shaped year and an Online Retail-shaped year."""
    older = data.synthetic_shop(20, 30, start="2009-12-01", months=13, seed=5, schema="II",
                                dirty=False)
    recent = data.synthetic_shop(20, 30, start="2010-12-01", months=12, seed=6, dirty=False)
    return older, recent


def _spec(key: str, url: str, frame: pd.DataFrame, **changes) -> data.RemoteFile:
    base = data.DATASETS[key]
    fields = {"url": url, "rows": len(frame), "column_sums": {"Quantity": frame["Quantity"].sum()}}
    fields.update(changes)
    return dataclasses.replace(base, **fields)


def test_download_dataset_converts_and_verifies(server, small_shop, tmp_path):
    root, base = server
    older, _ = small_shop
    (root / "retail2.zip").write_bytes(
        _zip({"online_retail_II.xlsx": _xlsx(older, "Year 2009-2010")})
    )
    spec = _spec("online_retail_II_2009_2010", f"{base}/retail2.zip", older)
    path = data.download_dataset(spec, directory=tmp_path / "cache")
    assert path.name == "online_retail_II_2009_2010.parquet"
    loaded = pd.read_parquet(path)
    pd.testing.assert_frame_equal(
        loaded.reset_index(drop=True), older.reset_index(drop=True), check_dtype=False
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]


def test_download_keeps_the_csv_as_shipped(server, tmp_path):
    root, base = server
    (root / "shoppers.zip").write_bytes(
        _zip({"sub/online_shoppers_intention.csv": _SHOPPERS_CSV.encode()})
    )
    spec = dataclasses.replace(data.DATASETS["online_shoppers"], url=f"{base}/shoppers.zip",
                               rows=2, column_sums={})
    path = data.download_dataset(spec, directory=tmp_path)
    assert path.read_bytes() == _SHOPPERS_CSV.encode()


@pytest.mark.parametrize(
    ("payload", "changes", "match"),
    [
        (b"this is not a zip file", {}, "not a zip archive"),
        ("wrong_member", {}, "has no member"),
        ("good", {"rows": 3}, "must have 3\\."),
        ("good", {"column_sums": {"Quantity": -1.0}}, "sums to"),
        ("good", {"sha256": "0" * 64}, "sha256"),
    ],
)
def test_download_rejects_bad_archives_and_leaves_nothing(
    server, small_shop, tmp_path, payload, changes, match
):
    root, base = server
    older, _ = small_shop
    if payload == "good":
        payload = _zip({"online_retail_II.xlsx": _xlsx(older, "Year 2009-2010")})
    elif payload == "wrong_member":
        payload = _zip({"something_else.xlsx": b"x"})
    (root / "bad.zip").write_bytes(payload)
    spec = _spec("online_retail_II_2009_2010", f"{base}/bad.zip", older, **changes)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=match):
        data.download_dataset(spec, directory=cache)
    assert list(cache.iterdir()) == []


def test_download_reports_an_unreachable_server(server, tmp_path):
    _, base = server
    spec = dataclasses.replace(data.DATASETS["online_shoppers"], url=f"{base}/missing.zip")
    with pytest.raises(OSError, match="could not download"):
        data.download_dataset(spec, directory=tmp_path)


def test_load_online_retail_ii_downloads_into_the_cache(
    server, small_shop, monkeypatch, no_data_env
):
    root, base = server
    older, recent = small_shop
    (root / "352.zip").write_bytes(_zip({"Online Retail.xlsx": _xlsx(recent, "Online Retail")}))
    (root / "502.zip").write_bytes(
        _zip({"online_retail_II.xlsx": _two_sheets(older, recent)})
    )
    specs = dict(data.DATASETS)
    specs["online_retail"] = _spec("online_retail", f"{base}/352.zip", recent)
    specs["online_retail_II_2009_2010"] = _spec(
        "online_retail_II_2009_2010", f"{base}/502.zip", older
    )
    monkeypatch.setattr(data.sources, "DATASETS", specs)
    frame = data.load_online_retail("II")
    expected = len(older[older["InvoiceDate"] < "2010-12-01"]) + len(recent)
    assert len(frame) == expected
    assert frame["InvoiceDate"].is_monotonic_increasing
    cached = sorted(p.name for p in data.cache_dir().iterdir())
    assert cached == ["online_retail.parquet", "online_retail_II_2009_2010.parquet"]
    # The second call reads the cache: the server is no longer needed.
    for archive in root.iterdir():
        archive.unlink()
    assert len(data.load_online_retail("II")) == expected


def _two_sheets(older: pd.DataFrame, recent: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        older.to_excel(writer, sheet_name="Year 2009-2010", index=False)
        recent.rename(columns=data.I_TO_II).to_excel(writer, sheet_name="Year 2010-2011",
                                                      index=False)
    return buffer.getvalue()
