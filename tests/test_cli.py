"""End-to-end tests of ``python -m companion`` on CSV and parquet exports of the synthetic shop."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from companion import __version__, cli, data, shop
from companion.data import preprocessing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw():
    return data.synthetic_shop(n_customers=120, n_products=80, months=12, seed=3)


@pytest.fixture(scope="module")
def orders(tmp_path_factory, raw):
    """The synthetic shop exported as CSV, as a shop would hand it over."""
    path = tmp_path_factory.mktemp("orders") / "orders.csv"
    raw.to_csv(path, index=False)
    return path


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ parsing stays light


def test_help_imports_nothing_heavy():
    code = ("import sys; from companion.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'pandas', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_python_m_companion_runs(orders, tmp_path):
    help_ = subprocess.run([sys.executable, "-m", "companion", "--help"], capture_output=True,
                           text=True, cwd=ROOT)
    assert help_.returncode == 0
    for command in ("validate", "report", "recommend", "churn", "serve"):
        assert command in help_.stdout
    target = tmp_path / "churn.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "companion", "churn", str(orders), "-o",
                           str(target), "--no-progress"], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert target.is_file()
    bad = subprocess.run([sys.executable, "-m", "companion", "validate",
                          str(tmp_path / "nothing.csv")], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2
    assert "nothing.csv" in bad.stderr and "no such file" in bad.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["frobnicate"], ["recommend", "orders.csv"]):  # no -o for recommend
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2
    capsys.readouterr()


# ------------------------------------------------------------------------- good files


def test_validate_summarises(orders, raw, capsys):
    code, out, err = run(["validate", orders, "--no-progress"], capsys)
    assert code == 0, err
    assert f"{len(raw):,} order lines" in out
    assert f"customers                {raw['CustomerID'].nunique()}" in out
    assert "lines without customer" in out


def test_report_matches_companion_functions(orders, raw, tmp_path, capsys):
    target = tmp_path / "report.md"
    code, out, err = run(["report", orders, "-o", target, "--no-progress"], capsys)
    assert code == 0, err
    text = target.read_text()
    cleaned = preprocessing.clean_transactions(raw)
    for rule, removed in zip(cleaned.report["rule"], cleaned.report["rows_removed"],
                             strict=True):
        assert any(rule in line and f" {removed} " in line for line in text.splitlines())
    inter = preprocessing.to_interactions(cleaned.transactions)
    from companion.retention.behaviour import repeat_purchase_rate

    assert f"| repeat-purchase rate | {repeat_purchase_rate(inter):.1%} |" in text
    assert listing(tmp_path) == ["report.md"]
    code, out, _ = run(["report", orders, "--no-progress"], capsys)  # to stdout
    assert code == 0 and out.strip() == text.strip()


@pytest.mark.parametrize("model", ["blend", "tifu-knn", "popularity"])
def test_recommend_writes_top_k(orders, raw, tmp_path, capsys, model):
    target = tmp_path / "top.csv"
    code, _, err = run(["recommend", orders, "-o", target, "-k", 5, "--model", model,
                        "--no-progress"], capsys)
    assert code == 0, err
    top = pd.read_csv(target, dtype={"stock_code": "string"})
    assert list(top.columns) == ["customer_id", "rank", "stock_code"]
    cleaned = preprocessing.clean_transactions(raw).transactions
    assert set(top["customer_id"]) == set(cleaned["customer_id"])
    assert (top.groupby("customer_id").size() == 5).all()
    assert all(ranks == [1, 2, 3, 4, 5] for ranks in top.groupby("customer_id")["rank"]
               .apply(list))
    assert not top.duplicated(["customer_id", "stock_code"]).any()
    assert set(top["stock_code"]) <= set(cleaned["stock_code"])
    assert listing(tmp_path) == ["top.csv"]


def test_recommend_exclude_seen(orders, raw, tmp_path, capsys):
    target = tmp_path / "new.csv"
    code, _, err = run(["recommend", orders, "-o", target, "-k", 3, "--exclude-seen",
                        "--no-progress"], capsys)
    assert code == 0, err
    top = pd.read_csv(target, dtype={"stock_code": "string"})
    bought = preprocessing.clean_transactions(raw).transactions
    pairs = set(zip(bought["customer_id"], bought["stock_code"], strict=True))
    assert not any(p in pairs for p in zip(top["customer_id"], top["stock_code"],
                                           strict=True))


def test_churn_scores_every_customer(orders, raw, tmp_path, capsys):
    target = tmp_path / "churn.csv"
    code, _, err = run(["churn", orders, "-o", target, "--horizon-days", 60,
                        "--no-progress"], capsys)
    assert code == 0, err
    risk = pd.read_csv(target)
    cleaned = preprocessing.clean_transactions(raw).transactions
    assert set(risk["customer_id"]) == set(cleaned["customer_id"])
    assert risk["p_churn"].between(0, 1).all() and risk["p_alive"].between(0, 1).all()
    assert (np.diff(risk["p_churn"]) <= 1e-9).all()  # riskiest first
    assert (risk["p_churn"] >= 1 - risk["p_alive"] - 1e-6).all()  # dead now => no purchase


def test_column_mapping_and_parquet(raw, tmp_path, capsys):
    renamed = raw.rename(columns={"CustomerID": "Kunde", "InvoiceDate": "Datum",
                                  "InvoiceNo": "Beleg"}).drop(columns=["Country"])
    path = tmp_path / "export.parquet"
    renamed.to_parquet(path)
    code, _, err = run(["validate", path, "--no-progress"], capsys)
    assert code == 2 and "customer_id" in err and "export.parquet" in err
    mapping = "customer_id=Kunde, invoice_date=Datum,invoice=Beleg,stock_code=StockCode,"\
              "quantity=Quantity,price=UnitPrice,description=Description"
    code, out, err = run(["validate", path, "--columns", mapping, "--no-progress"], capsys)
    assert code == 0, err
    target = tmp_path / "churn.csv"
    code, _, err = run(["churn", path, "--columns", mapping, "-o", target,
                        "--no-progress"], capsys)
    assert code == 0, err
    reference = shop.churn_risk(preprocessing.to_interactions(
        preprocessing.clean_transactions(raw).transactions))
    got = pd.read_csv(target)
    np.testing.assert_allclose(got["p_churn"], reference["p_churn"], rtol=1e-5, atol=1e-9)


def test_snake_case_names_need_no_mapping(raw, tmp_path, capsys):
    snake = raw.rename(columns=data.I_TO_II).rename(columns=preprocessing.CANONICAL)
    path = tmp_path / "snake.csv"
    snake.to_csv(path, index=False)
    code, out, err = run(["validate", path, "--no-progress"], capsys)
    assert code == 0, err


# -------------------------------------------------------------------------- bad files


def bad_files(raw: pd.DataFrame, folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """Each bad file and the words its error message must contain."""
    out = {}
    path = folder / "no_customer.csv"
    raw.drop(columns=["CustomerID"]).to_csv(path, index=False)
    out["missing column"] = path, ["no_customer.csv", "customer_id", "missing"]
    path = folder / "bad_dates.csv"
    frame = raw.astype({"InvoiceDate": "string"})
    frame.loc[5, "InvoiceDate"] = "31/02/2011 25:61"
    frame.to_csv(path, index=False)
    out["bad dates"] = path, ["bad_dates.csv", "InvoiceDate", "31/02/2011 25:61"]
    path = folder / "empty.csv"
    path.write_bytes(b"")
    out["empty file"] = path, ["empty.csv", "empty"]
    path = folder / "header_only.csv"
    raw.head(0).to_csv(path, index=False)
    out["header only"] = path, ["header_only.csv", "no order lines"]
    path = folder / "orders.xlsx"
    path.write_bytes(b"PK\x03\x04")
    out["unknown format"] = path, ["orders.xlsx", "unknown file format"]
    path = folder / "text_quantity.csv"
    frame = raw.astype({"Quantity": "string"})
    frame.loc[7, "Quantity"] = "twelve"
    frame.to_csv(path, index=False)
    out["text in numbers"] = path, ["text_quantity.csv", "Quantity", "twelve"]
    path = folder / "garbage.parquet"
    path.write_bytes(b"not a parquet file at all")
    out["corrupt parquet"] = path, ["garbage.parquet", "cannot be read as parquet"]
    path = folder / "no_customers.csv"
    raw.assign(CustomerID=np.nan).to_csv(path, index=False)
    out["no customer ids"] = path, ["no_customers.csv", "no purchase line is left"]
    return out


@pytest.mark.parametrize("command", ["validate", "report", "recommend", "churn"])
def test_bad_files_exit_2_and_write_nothing(raw, tmp_path, capsys, command):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = bad_files(raw, inputs)
    before = listing(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for case, (path, words) in cases.items():
        if command == "validate" and case == "no customer ids":
            continue  # validate only warns: the file itself is well formed
        argv = [command, path, "--no-progress"]
        if command != "validate":
            argv += ["-o", out_dir / "result.csv"]
        code, _, err = run(argv, capsys)
        assert code == 2, (case, err)
        assert err.count("\n") == 1, (case, err)  # one line, no traceback
        assert err.startswith(f"python -m companion {command}: error:"), (case, err)
        for word in words:
            assert word in err, (case, word, err)
        assert listing(out_dir) == [], case
    assert listing(inputs) == before


def test_validate_warns_when_no_customer_ids(raw, tmp_path, capsys):
    path = bad_files(raw, tmp_path)["no customer ids"][0]
    code, out, _ = run(["validate", path, "--no-progress"], capsys)
    assert code == 0 and "warning: no line has a customer id" in out


def test_bad_column_mapping(orders, tmp_path, capsys):
    for mapping, words in [("customer_id", ["no '='"]),
                           ("client=CustomerID", ["unknown column 'client'"]),
                           ("customer_id=Client", ["Client", "does not have"])]:
        code, _, err = run(["validate", orders, "--columns", mapping, "--no-progress"],
                           capsys)
        assert code == 2
        for word in words:
            assert word in err, (mapping, err)


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "top.csv"
    target.write_text("old\n")

    def explode(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        shop.write_atomic(target, explode)
    assert target.read_text() == "old\n"
    assert listing(tmp_path) == ["top.csv"]
    with pytest.raises(shop.OrdersFileError, match="does not exist"):
        shop.write_text("x", tmp_path / "missing" / "report.md")


def test_output_folder_missing_exits_2(orders, tmp_path, capsys):
    code, _, err = run(["churn", orders, "-o", tmp_path / "nope" / "churn.csv",
                        "--no-progress"], capsys)
    assert code == 2 and "nope" in err


# ---------------------------------------------------------------------------- serve


def test_serve_is_wired_to_companion_serving(capsys):
    if importlib.util.find_spec("companion.ops.serving") is None:
        with pytest.raises(SystemExit) as stop:
            cli.main(["serve", "--help"])
        assert stop.value.code == 2
        assert "no companion.ops.serving module" in capsys.readouterr().err
    else:
        serving = pytest.importorskip("companion.ops.serving")
        assert callable(serving.add_arguments) and callable(serving.run)
        with pytest.raises(SystemExit) as stop:
            cli.main(["serve", "--help"])
        assert stop.value.code == 0
        assert "python -m companion serve" in capsys.readouterr().out


def test_version_in_step_with_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = project.get("version")
    if version is None:  # dynamic: read from companion.__version__
        assert "version" in project.get("dynamic", [])
        return
    assert version == __version__
