"""tools/ci_data.py: which data a CI run uses, said on the run's summary page."""

from __future__ import annotations

import pytest

from companion import data
from tools import ci_data


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No data folder and an empty cache; a GitHub step summary file."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    return tmp_path


def test_missing_files_are_reported_with_what_the_book_falls_back_to(nowhere, capsys):
    assert ci_data.main(["--no-download"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC shop" in out
    warnings = [line for line in out.splitlines() if line.startswith("::warning::")]
    assert len(warnings) == len(data.DATASETS)
    assert any("online_shoppers_intention.csv" in w and "no synthetic stand-in" in w
               for w in warnings)
    summary = (nowhere / "summary.md").read_text()
    for spec in data.DATASETS.values():
        assert f"`{spec.filename}` | missing" in summary
    assert (nowhere / "output").read_text() == "real=false\n"
    # the book's deployment demands the real data
    assert ci_data.main(["--no-download", "--require-real"]) == 1
    assert "::error::online_retail.parquet" in capsys.readouterr().out


def test_a_file_that_is_not_the_uci_file_is_not_taken_for_real(nowhere, monkeypatch):
    folder = nowhere / "data"
    folder.mkdir()
    (folder / "online_shoppers_intention.csv").write_text("Revenue\nTrue\n")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folder))
    found = ci_data.check("online_shoppers", download=False)
    assert not found.real
    assert str(folder / "online_shoppers_intention.csv") in found.problem


def test_verdict_names_the_data_in_use():
    real = [ci_data.Found(key, spec.filename, f"/d/{spec.filename}")
            for key, spec in data.DATASETS.items()]
    assert "real UCI data" in ci_data.summary(real)
    no_sessions = [f if f.key != "online_shoppers" else
                   ci_data.Found(f.key, f.filename, None, "a | b") for f in real]
    text = ci_data.summary(no_sessions)
    assert "real Online Retail data, but a UCI file is missing" in text
    assert "a \\| b" in text  # a bar in a message does not break the table
    no_shop = [f if f.key != "online_retail" else ci_data.Found(f.key, f.filename, None, "x")
               for f in real]
    assert "SYNTHETIC shop" in ci_data.summary(no_shop)


def test_the_real_files_are_found_and_verified(tmp_path, monkeypatch, capsys):
    try:
        for key in data.DATASETS:
            data.locate(key, download=False)
    except FileNotFoundError:
        pytest.skip("the UCI files are not in COMPANION_DATA_DIR or the cache")
    found = [ci_data.check(key, download=False) for key in data.DATASETS]
    assert all(item.real for item in found), [item.problem for item in found]
    assert "This run uses the real UCI data" in ci_data.summary(found)
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    assert ci_data.main(["--no-download", "--require-real"]) == 0
    assert "::" not in capsys.readouterr().out  # no warning, no error
    assert (tmp_path / "output").read_text() == "real=true\n"
