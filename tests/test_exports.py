"""Order exports as shops have them, end to end through ``python -m companion``.

The synthetic shop is written as other platforms export orders: timestamps with the UTC
offsets of London (two in one file, across summer time), customers by e-mail address,
products by text ids, refunds as negative quantities or a status column, semicolons and
decimal commas, Latin-1, a byte-order mark, and all of these at once under other column
names. Every command runs on each file, and its outputs are checked against the same
commands on the plain UCI-style CSV, id by id, through the renaming.
"""

from __future__ import annotations

import codecs
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from companion import cli, data, shop
from companion.data import preprocessing

ZONE = "Europe/London"
COMMANDS = ("validate", "report", "recommend", "churn")


@pytest.fixture(scope="module")
def raw():
    return data.synthetic_shop(n_customers=120, n_products=80, months=12, seed=3)


@pytest.fixture(scope="module")
def cleaned(raw):
    return preprocessing.clean_transactions(raw)


def run(argv, capsys):
    """Run the command line in this process; ``capsys`` may be a function returning the
    two ``StringIO`` that stdout and stderr are redirected to."""
    code = cli.main([str(a) for a in argv] + ["--no-progress"])
    if callable(capsys):
        out, err = (buffer.getvalue() for buffer in capsys())
        for buffer in capsys():
            buffer.seek(0)
            buffer.truncate()
        return code, out, err
    out, err = capsys.readouterr()
    return code, out, err


def email(customer: float) -> object:
    return pd.NA if pd.isna(customer) else f"shopper.{int(customer)}@example.com"


def text_products(codes: pd.Series) -> pd.Series:
    """Text product ids; postage, fees and the like keep their codes, which cleaning
    knows. The common prefix keeps the ids' order."""
    codes = pd.Series(codes, dtype="string")
    return codes.where(~preprocessing.is_product_code(codes), "café-crème-" + codes)


def export(raw: pd.DataFrame, *, offsets: bool = False, emails: bool = False,
           products: bool = False, refunds: str = "cancel-prefix") -> pd.DataFrame:
    """The synthetic shop's lines as another platform would export them."""
    out = raw.copy()
    if offsets:  # the shop's wall-clock times, with London's offset of the day
        local = out["InvoiceDate"].dt.tz_localize(ZONE)
        out["InvoiceDate"] = local.map(lambda t: t.isoformat())
    if emails:
        out["CustomerID"] = out["CustomerID"].map(email).astype("string")
    if products:
        out["StockCode"] = text_products(out["StockCode"])
    cancel = out["InvoiceNo"].str.startswith("C")
    if refunds == "negative-quantity":  # refunds on ordinary order numbers
        out.loc[cancel, "InvoiceNo"] = out.loc[cancel, "InvoiceNo"].str[1:]
    elif refunds == "status-column":  # positive quantities, marked by a status
        out.loc[cancel, "InvoiceNo"] = out.loc[cancel, "InvoiceNo"].str[1:]
        out.loc[cancel, "Quantity"] = -out.loc[cancel, "Quantity"]
        out["Status"] = np.where(cancel, "Refunded", "completed")
    return out


#: name -> (export options, to_csv options, extra command-line options)
CASES = {
    "plain": ({}, {}, []),
    "mixed offsets": ({"offsets": True}, {}, ["--timezone", ZONE]),
    "e-mail customers": ({"emails": True}, {}, []),
    "negative-quantity refunds": ({"refunds": "negative-quantity"}, {},
                                  ["--returns", "negative-quantity"]),
    "status-column refunds": ({"refunds": "status-column"}, {},
                              ["--status-column", "Status", "--refund-status", "refunded"]),
    "semicolon, decimal comma": ({}, {"sep": ";", "decimal": ","}, []),
    "latin-1, text products": ({"products": True}, {"encoding": "latin-1"}, []),
    "utf-8 with BOM, tabs": ({"emails": True, "products": True},
                             {"encoding": "utf-8-sig", "sep": "\t"}, []),
    "all at once": ({"offsets": True, "emails": True, "products": True,
                     "refunds": "negative-quantity"},
                    {"sep": ";", "decimal": ",", "encoding": "latin-1"},
                    ["--returns", "negative-quantity", "--timezone", ZONE,
                     "--columns", "invoice=Bestellung,stock_code=Artikel,"
                     "description=Bezeichnung,quantity=Menge,invoice_date=Zeitpunkt,"
                     "price=Einzelpreis,customer_id=Kunde,country=Land"]),
}
GERMAN = {"InvoiceNo": "Bestellung", "StockCode": "Artikel", "Description": "Bezeichnung",
          "Quantity": "Menge", "InvoiceDate": "Zeitpunkt", "UnitPrice": "Einzelpreis",
          "CustomerID": "Kunde", "Country": "Land"}


def write(raw: pd.DataFrame, folder: Path, name: str) -> Path:
    kinds, csv_options, _ = CASES[name]
    frame = export(raw, **kinds)
    if name == "all at once":
        frame = frame.rename(columns=GERMAN)
    path = folder / (name.replace(" ", "_").replace(",", "") + ".csv")
    frame.to_csv(path, index=False, **csv_options)
    return path


def outputs(path: Path, folder: Path, options: list[str], capsys) -> dict[str, object]:
    """Run the four commands on ``path``; their stdout or output files."""
    got = {}
    for command in COMMANDS:
        target = folder / f"{path.stem}.{command}.{'md' if command == 'report' else 'csv'}"
        argv = [command, path, *options]
        if command != "validate":
            argv += ["-o", target]
        if command == "recommend":
            argv += ["-k", 5]
        code, out, err = run(argv, capsys)
        assert code == 0, (command, err)
        if command == "validate":
            got[command] = out
        elif command == "report":
            got[command] = target.read_text(encoding="utf-8")
        else:
            got[command] = pd.read_csv(target, dtype={"customer_id": "string",
                                                      "stock_code": "string"},
                                       keep_default_na=False)
    return got


def summary(text: str) -> dict[str, str]:
    """The ``key  value`` lines of ``validate``'s output."""
    out = {}
    for line in text.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("  warning"):
            key, value = line[2:26].strip(), line[26:].strip()
            out[key] = value
    return out


@pytest.fixture(scope="module")
def expected(raw, tmp_path_factory):
    """The four commands' outputs on the plain UCI-style CSV."""
    folder = tmp_path_factory.mktemp("reference")
    path = write(raw, folder, "plain")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):  # capsys is per test
        return outputs(path, folder, [], lambda: (stdout, stderr))


def as_reference(table: pd.DataFrame, kinds: dict) -> pd.DataFrame:
    """An output table with its ids renamed back to the plain file's."""
    table = table.copy()
    if kinds.get("emails"):
        back = {email(c): str(int(c)) for c in range(10_000, 20_000)}
        assert table["customer_id"].isin(list(back)).all()
        table["customer_id"] = table["customer_id"].map(back).astype("string")
    if kinds.get("products") and "stock_code" in table:
        assert table["stock_code"].str.startswith("café-crème-").all()  # real products
        table["stock_code"] = table["stock_code"].str.removeprefix("café-crème-")
    return table


@pytest.mark.parametrize("name", list(CASES))
def test_commands_on_each_export(name, raw, cleaned, expected, tmp_path, capsys):
    kinds, csv_options, options = CASES[name]
    path = write(raw, tmp_path, name)
    got = outputs(path, tmp_path, options, capsys)
    info = summary(got["validate"])

    # validate: how the file was read, and the counts of the raw lines
    assert info["customers"] == str(raw["CustomerID"].nunique())
    assert info["products"] == str(raw["StockCode"].nunique())
    assert info["lines without customer"] == str(int(raw["CustomerID"].isna().sum()))
    assert info["refund lines"] == str(int(raw["InvoiceNo"].str.startswith("C").sum()))
    assert f"{len(raw):,} order lines" in got["validate"]
    sep = {";": "semicolon", "\t": "tab"}.get(csv_options.get("sep", ","), "comma")
    assert f"{sep}-separated" in info["read as"]
    assert f"decimal mark '{csv_options.get('decimal', '.')}'" in info["read as"]
    encoding = {"latin-1": "cp1252", "utf-8-sig": "utf-8-sig"}.get(
        csv_options.get("encoding"), "utf-8")
    assert f"encoding {encoding}" in info["read as"]
    assert info["customer ids"] == ("text" if kinds.get("emails") else "whole numbers")
    if kinds.get("offsets"):
        assert info["times"] == f"offsets +00:00, +01:00 converted to {ZONE}"
    else:
        assert info["times"].startswith("no UTC offsets")
    assert info["first order"] == str(raw["InvoiceDate"].min())  # in the shop's zone

    # report: the same cleaning and retention; refunds, however marked, are the returns
    report = got["report"]
    returns = len(cleaned.returns)
    assert f"| refund lines | {returns} |" in report
    rule = "cancellations" if kinds.get("refunds", "cancel-prefix") == "cancel-prefix" \
        else "refunds"
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in report.splitlines()
             if line.startswith("|")]
    assert [rule, "refund lines, set aside as returns" if rule == "refunds" else
            "cancellation (C) invoices, set aside as returns", str(returns), "0"] in [
        c[:4] for c in cells]
    assert report.split("## Retention")[1] == expected["report"].split("## Retention")[1]

    # recommend and churn: the same tables, ids as the file gives them
    for command in ("recommend", "churn"):
        table = got[command]
        if kinds.get("emails"):
            assert table["customer_id"].str.fullmatch(r"shopper\.\d+@example\.com").all()
        back = as_reference(table, kinds)
        key = ["customer_id", "rank"] if command == "recommend" else ["customer_id"]
        pd.testing.assert_frame_equal(
            back.sort_values(key).reset_index(drop=True),
            expected[command].sort_values(key).reset_index(drop=True))
    assert set(got["churn"]["customer_id"]) == set(got["recommend"]["customer_id"])
    assert got["recommend"]["customer_id"].nunique() == cleaned.transactions[
        "customer_id"].nunique()


def test_numeric_ids_come_out_as_numbers(expected, cleaned):
    for command in ("recommend", "churn"):
        ids = expected[command]["customer_id"]
        assert ids.str.fullmatch(r"\d{5}").all()  # 17850, not 17850.0
        assert set(ids) == {str(c) for c in cleaned.transactions["customer_id"]}


def test_forced_dialect(raw, tmp_path, capsys):
    path = tmp_path / "orders.txt"
    raw.to_csv(path, index=False, sep="\t")
    for spelling in ("tab", "\\t", "\t"):
        code, out, err = run(["validate", path, "--delimiter", spelling, "--encoding",
                              "latin-1", "--decimal", "."], capsys)
        assert code == 0, err
        assert "encoding iso8859-1, tab-separated, decimal mark '.'" in out
    code, _, err = run(["validate", path, "--delimiter", ";"], capsys)
    assert code == 2 and "missing required column(s)" in err
    code, _, err = run(["validate", path, "--delimiter", "ab"], capsys)
    assert code == 2 and "delimiter must be one character" in err


def test_cli_knows_every_return_convention():
    assert cli._RETURNS == shop.RETURN_CONVENTIONS


def test_offsets_converted_to_utc_by_default(raw, tmp_path, capsys):
    path = write(raw, tmp_path, "mixed offsets")
    code, out, err = run(["validate", path], capsys)
    assert code == 0, err
    info = summary(out)
    assert info["times"] == "offsets +00:00, +01:00 converted to UTC"
    utc = raw["InvoiceDate"].dt.tz_localize(ZONE).dt.tz_convert("UTC").dt.tz_localize(None)
    assert info["first order"] == str(utc.min())
    assert info["last order"] == str(utc.max())
    summer = raw["InvoiceDate"].dt.month.between(4, 9)
    assert (raw["InvoiceDate"][summer] - utc[summer] == pd.Timedelta(hours=1)).all()


def test_refunds_as_negative_quantities_need_the_option(raw, tmp_path, capsys):
    path = write(raw, tmp_path, "negative-quantity refunds")
    code, out, err = run(["validate", path], capsys)
    assert code == 0, err
    refunds = int(raw["InvoiceNo"].str.startswith("C").sum())
    assert summary(out)["refund lines"] == "0"
    with_customer = int((raw["InvoiceNo"].str.startswith("C")
                         & raw["CustomerID"].notna()).sum())
    assert f"warning: {with_customer:,} lines of customers have a negative quantity" in out
    assert "--returns negative-quantity" in out
    code, out, _ = run(["validate", path, "--returns", "negative-quantity"], capsys)
    assert code == 0 and summary(out)["refund lines"] == str(refunds)
    assert "warning" not in out


def test_refunds_feed_after_sales(raw, cleaned, tmp_path):
    """The returns table from negative quantities is the one from ``C`` invoices."""
    from companion.retention import aftersales

    path = write(raw, tmp_path, "all at once")
    columns = shop.parse_column_mapping(CASES["all at once"][2][-1])
    orders = shop.load_orders(path, columns=columns, returns="negative-quantity",
                              timezone=ZONE)
    result, _ = shop.clean(orders)
    ids = orders.customers
    got = result.returns.assign(customer_id=ids.decode(result.returns["customer_id"]))
    want = cleaned.returns
    assert len(got) == len(want) and (got["quantity"] < 0).all()
    assert list(got["customer_id"]) == [email(c) for c in want["customer_id"]]
    assert list(got["stock_code"]) == list(text_products(want["stock_code"]))
    rates = aftersales.return_rates(result.transactions, result.returns, by="customer_id")
    reference = aftersales.return_rates(cleaned.transactions, cleaned.returns,
                                        by="customer_id")
    assert rates["units_returned"].sum() == reference["units_returned"].sum() > 0


def test_parquet_with_zone_aware_times_and_text_ids(raw, expected, tmp_path, capsys):
    frame = export(raw, emails=True)
    frame["InvoiceDate"] = frame["InvoiceDate"].dt.tz_localize(ZONE)
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path)
    code, out, err = run(["validate", path], capsys)
    assert code == 0, err
    assert summary(out)["times"] == "offsets +00:00, +01:00 converted to UTC"
    target = tmp_path / "churn.csv"
    code, _, err = run(["churn", path, "-o", target, "--timezone", ZONE], capsys)
    assert code == 0, err
    churn = pd.read_csv(target, dtype={"customer_id": "string"})
    back = as_reference(churn, {"emails": True}).sort_values("customer_id")
    pd.testing.assert_frame_equal(
        back.reset_index(drop=True),
        expected["churn"].sort_values("customer_id").reset_index(drop=True))


# ------------------------------------------------------------------------ the sniffers


def test_sniff_delimiter():
    assert shop.sniff_delimiter("a;b;c\n1,5;2;x, y\n3,5;4;z\n") == ";"
    assert shop.sniff_delimiter('a,b,c\n"1;2",3,4\n5,6,7\n') == ","
    assert shop.sniff_delimiter("a\tb\n1\t2\n") == "\t"
    assert shop.sniff_delimiter("a|b|c\n1|2|3\n") == "|"
    assert shop.sniff_delimiter("single\n1\n2\n") == ","


@pytest.mark.parametrize(("values", "mark"), [
    (["1,25", "3"], ","), (["1.234,50"], ","), (["1.234.567"], ","),
    (["0.5", "12"], "."), (["1,234.50"], "."), (["2", "1,250"], "."),
])
def test_sniff_decimal(values, mark):
    assert shop.sniff_decimal({"Price": pd.Series(values, dtype="string")}) == mark


def test_sniff_decimal_semicolon_default_and_conflict():
    ambiguous = {"Price": pd.Series(["1,250", "3"], dtype="string")}
    assert shop.sniff_decimal(ambiguous, ";") == ","
    both = {"Price": pd.Series(["1,25", "3", "0.5"], dtype="string")}
    with pytest.raises(shop.OrdersFileError, match=r"row 2: '1,25'.*row 4: '0.5'"):
        shop.sniff_decimal(both, source="orders file 'x.csv'")


def test_sniff_encoding():
    text = "Menge;Preis\n1;Crème brûlée\n"
    assert shop.sniff_encoding(text.encode("utf-8")) == "utf-8"
    assert shop.sniff_encoding(codecs.BOM_UTF8 + text.encode("utf-8")) == "utf-8-sig"
    assert shop.sniff_encoding(text.encode("latin-1")) == "cp1252"
    assert shop.sniff_encoding("a\n€ 5\n".encode("cp1252")) == "cp1252"
    assert shop.sniff_encoding(b"a\n\x81\n") == "latin-1"  # no cp1252 character
    assert shop.sniff_encoding(text.encode("utf-16")) == "utf-16"
    with pytest.raises(shop.OrdersFileError, match=r"row 2: byte b'\\xe8'.*utf-8"):
        shop.sniff_encoding(text.encode("latin-1"), "utf-8")
    with pytest.raises(shop.OrdersFileError, match="unknown encoding 'klingon'"):
        shop.sniff_encoding(b"a", "klingon")


def test_numbers_with_separators():
    values = pd.Series(["1.234,5", "2,55", " 7 ", "-3,0"], dtype="string")
    got = shop._numbers(values, decimal=",", integer=False, source="s", column="Preis")
    assert got.tolist() == [1234.5, 2.55, 7.0, -3.0]
    values = pd.Series(["1,234.5", "2.55"], dtype="string")
    got = shop._numbers(values, decimal=".", integer=False, source="s", column="Price")
    assert got.tolist() == [1234.5, 2.55]
    with pytest.raises(shop.OrdersFileError, match=r"column 'Price', row 3: '2,5' is not "
                                                   r"a number \(decimal mark '\.'"):
        shop._numbers(pd.Series(["1", "2,5"], dtype="string"), decimal=".", integer=False,
                      source="s", column="Price")


def test_customer_ids():
    numeric = shop.CustomerIds(pd.Series(["17850.0", " 12346 ", None], dtype="string"))
    assert numeric.numeric and numeric.codes.tolist() == [17850, 12346, pd.NA]
    assert numeric.decode([17850]).tolist() == [17850]
    floats = shop.CustomerIds(pd.Series([17850.0, np.nan]))
    assert floats.numeric and floats.decode([17850]).tolist() == [17850]
    text = shop.CustomerIds(pd.Series(["b@x.org", "00123", "a@x.org", "", "b@x.org"],
                                      dtype="string"))
    assert not text.numeric
    codes = text.codes
    assert codes.isna().tolist() == [False, False, False, True, False]
    assert codes[0] == codes[4] and codes.nunique() == 3
    assert text.decode(codes.dropna().astype(int)).tolist() == [
        "b@x.org", "00123", "a@x.org", "b@x.org"]  # leading zeros kept
    table = pd.DataFrame({"customer_id": codes.dropna().astype(int).to_numpy()})
    assert text.restore(table)["customer_id"].tolist()[1] == "00123"


def test_parse_timestamps_mixed_offsets_and_zones():
    values = pd.Series(["2011-01-15T10:00:00+00:00", "2011-07-15 10:00:00+01:00",
                        "2011-07-15T09:00:00Z", "2011-07-15 10:00:00+0200",
                        "15/07/2011 10:00 +01", "2011-07-15 12:00"], dtype="string")
    utc, offsets = shop.parse_timestamps(values)
    assert offsets == ["+00:00", "+01:00", "+02:00"]
    assert [str(t) for t in utc] == ["2011-01-15 10:00:00", "2011-07-15 09:00:00",
                                     "2011-07-15 09:00:00", "2011-07-15 08:00:00",
                                     "2011-07-15 09:00:00",
                                     "2011-07-15 12:00:00"]  # no offset: as it stands
    local, _ = shop.parse_timestamps(values, timezone="Europe/Berlin")
    assert str(local[1]) == "2011-07-15 11:00:00" and str(local[0]) == "2011-01-15 11:00:00"
    assert str(local[5]) == "2011-07-15 12:00:00"
    with pytest.raises(shop.OrdersFileError, match="unknown time zone 'Mars/Olympus'"):
        shop.parse_timestamps(values, timezone="Mars/Olympus")
    gaps = pd.Series(["2011-01-15T10:00:00+00:00", None, "2011-02-30T10:00:00+00:00"],
                     dtype="string")
    with pytest.raises(shop.OrdersFileError, match=r"'Datum', row 3: an empty value where a "
                                                   r"date is needed \(2 rows in all\)"):
        shop.parse_timestamps(gaps, column="Datum")
    with pytest.raises(shop.OrdersFileError, match=r"'Datum', row 4: '2011-02-30T10:00:00"
                                                   r"\+00:00' is not a date"):
        shop.parse_timestamps(gaps.fillna("2011-01-15T10:00:00+00:00"), column="Datum")


def test_clean_transactions_with_a_refund_mask(raw, cleaned):
    """A mask equal to the ``C`` rule gives the same tables; marked lines are returns."""
    mask = raw["InvoiceNo"].str.startswith("C").to_numpy()
    masked = preprocessing.clean_transactions(raw, refunds=mask)
    pd.testing.assert_frame_equal(masked.transactions, cleaned.transactions)
    pd.testing.assert_frame_equal(masked.returns, cleaned.returns)
    assert masked.report["rule"].tolist() == [
        r if r != "cancellations" else "refunds" for r in cleaned.report["rule"]]
    assert masked.report["rows_removed"].tolist() == cleaned.report["rows_removed"].tolist()
    flipped = raw.assign(Quantity=raw["Quantity"].abs())  # refunds with positive quantities
    again = preprocessing.clean_transactions(flipped, refunds=mask)
    pd.testing.assert_frame_equal(again.returns, cleaned.returns)
    with pytest.raises(ValueError, match="one True/False per line"):
        preprocessing.clean_transactions(raw, refunds=mask[:-1])


# ------------------------------------------------------------------------- bad exports


def bad_exports(raw: pd.DataFrame, folder: Path) -> dict[str, tuple[Path, list, list]]:
    """Each bad export, its options and the words its one-line error must contain."""
    out = {}
    frame = export(raw, offsets=True, emails=True)
    frame.loc[40, "InvoiceDate"] = "2011-06-31T10:00:00+01:00"
    path = folder / "bad_date.csv"
    frame.to_csv(path, index=False)
    out["bad date"] = path, [], ["bad_date.csv", "'InvoiceDate'", "row 42",
                                 "'2011-06-31T10:00:00+01:00'", "not a date"]
    frame = export(raw).rename(columns=GERMAN)
    frame["Einzelpreis"] = frame["Einzelpreis"].astype("string")
    frame.loc[7, "Einzelpreis"] = "zwei"
    path = folder / "bad_price.csv"
    frame.to_csv(path, index=False, sep=";")
    out["bad price"] = path, ["--columns", "price=Einzelpreis,invoice=Bestellung,"
                              "stock_code=Artikel,quantity=Menge,invoice_date=Zeitpunkt,"
                              "customer_id=Kunde"], \
        ["bad_price.csv", "'Einzelpreis'", "row 9", "'zwei'", "not a number"]
    frame = export(raw, products=True)
    path = folder / "latin.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    out["wrong encoding"] = path, ["--encoding", "utf-8"], ["latin.csv", "row 2", "utf-8",
                                                           "cannot be decoded"]
    out["unknown zone"] = path, ["--timezone", "Europe/Atlantis"], ["Europe/Atlantis"]
    out["no status column"] = path, ["--returns", "status-column", "--status-column",
                                     "Status"], ["latin.csv", "'Status'", "does not have"]
    frame = export(raw).astype({"UnitPrice": "string"})
    frame.loc[3, "UnitPrice"] = "1,5"
    path = folder / "both_marks.csv"
    frame.to_csv(path, index=False, sep=";")
    out["both decimal marks"] = path, [], ["both_marks.csv", "both decimal marks",
                                           "'UnitPrice', row 5: '1,5'", "--decimal"]
    frame = export(raw)
    frame.loc[12, "Quantity"] = np.nan
    path = folder / "no_quantity.csv"
    frame.to_csv(path, index=False)
    out["missing number"] = path, [], ["no_quantity.csv", "'Quantity'", "row 14",
                                       "empty value"]
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_exports_exit_2_with_one_line(raw, tmp_path, capsys, command):
    inputs = tmp_path / "in"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for case, (path, options, words) in bad_exports(raw, inputs).items():
        argv = [command, path, *options]
        if command != "validate":
            argv += ["-o", out_dir / "result.csv"]
        code, _, err = run(argv, capsys)
        assert code == 2, (case, err)
        assert err.count("\n") == 1 and err.startswith(
            f"python -m companion {command}: error:"), (case, err)
        for word in words:
            assert word in err, (case, word, err)
        assert list(out_dir.iterdir()) == [], case


def test_status_column_goes_with_its_convention(raw, tmp_path, capsys):
    path = write(raw, tmp_path, "status-column refunds")
    code, _, err = run(["validate", path, "--returns", "negative-quantity",
                        "--status-column", "Status"], capsys)
    assert code == 2 and "--status-column goes with --returns status-column" in err
    code, out, err = run(["validate", path, "--status-column", "Status",
                          "--refund-status", "chargeback"], capsys)
    assert code == 0, err
    assert summary(out)["refund lines"] == "0" and "warning: no line is a refund" in out
