"""``companion.book``: the one way the book shows a table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from companion import book


def cells(html: str) -> list[str]:
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html)


def column(html: str, frame: pd.DataFrame, label: str) -> list[str]:
    values = cells(html)
    plain = isinstance(frame.index, pd.RangeIndex) and frame.index.name is None \
        and frame.index.start == 0  # a default index is not shown
    width = frame.shape[1] + (not plain)
    k = list(frame.columns).index(label) + (not plain)
    return [values[width * (r + 1) + k] for r in range(len(frame))]


def test_integers_stay_integers_even_when_stored_as_floats():
    frame = pd.DataFrame({"parameters": [646582.0, 12.0], "seeds": [3, 1],
                          "slate_size": [10.0, 10.0]})
    html = book.table_html(frame)
    assert column(html, frame, "parameters") == ["646,582", "12"]
    assert column(html, frame, "seeds") == ["3", "1"]
    assert column(html, frame, "slate_size") == ["10", "10"]
    assert ".0<" not in html


def test_a_column_of_metrics_gets_four_significant_digits_and_lines_up():
    frame = pd.DataFrame({"NDCG@10": [0.0512345, 0.123456, 0.1]})
    assert column(book.table_html(frame), frame, "NDCG@10") == ["0.0512", "0.1235",
                                                                 "0.1000"]
    assert column(book.table_html(frame, digits=2), frame, "NDCG@10") == [
        "0.05", "0.12", "0.10"]


def test_times_get_three_significant_digits_and_small_values_do_not_vanish():
    frame = pd.DataFrame({"fit seconds": [153.2345, 0.0234], "p99 latency": [0.51, 1.2]})
    html = book.table_html(frame)
    assert column(html, frame, "fit seconds") == ["153", "0.0234"]
    assert column(html, frame, "p99 latency") == ["0.51", "1.20"]


def test_missing_values_are_a_dash_and_nothing_is_cut_off():
    frame = pd.DataFrame({"x": np.arange(300, dtype=float) + 0.5, "y": None,
                          **{f"c{k}": 1 for k in range(40)}})
    frame.loc[3, "x"] = np.nan
    with pd.option_context("display.max_rows", 10, "display.max_columns", 5):
        html = book.table_html(frame)
    assert "NaN" not in html and "None" not in html and "..." not in html
    assert column(html, frame, "x")[3] == book.MISSING
    assert len(cells(html)) == (len(frame) + 1) * frame.shape[1]  # no index column


def test_a_series_is_one_column_and_a_float_index_reads_plainly():
    series = pd.Series([1.5, 2.25], index=[0.1, 0.30000000000000004], name="weight")
    html = book.table_html(series)
    assert cells(html) == ["", "weight", "0.1", "1.500", "0.3", "2.250"]
    assert "dtype" not in html
    assert "value" in book.table_html(pd.Series([1, 2]))


def test_mixed_text_columns_format_their_numbers():
    frame = pd.DataFrame({"what": [0.123456789, "n/a", 4.0, None]})
    assert column(book.table_html(frame), frame, "what") == ["0.1235", "n/a", "4",
                                                              book.MISSING]


def test_format_number_and_bad_input():
    assert book.format_number(1234567) == "1,234,567"
    assert book.format_number(np.float64(2.0)) == "2"
    assert book.format_number(0.000123456) == "0.0001235"
    assert book.format_number(float("nan")) == book.MISSING
    assert book.format_number(True) == "True"
    with pytest.raises(TypeError, match="DataFrame or Series"):
        book.table_html([1, 2])


def test_use_book_tables_does_nothing_outside_ipython():
    assert book.use_book_tables() is False


def test_use_book_tables_routes_frames_and_series_through_the_formatter():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert book.use_book_tables() is True
        data, _ = shell.display_formatter.format(pd.Series([646582.0], name="n"))
        assert "646,582" in data["text/html"]
        data, _ = shell.display_formatter.format(pd.DataFrame({"x": [np.nan, 1.5]}))
        assert book.MISSING in data["text/html"] and "NaN" not in data["text/html"]
        # a whole data set shown by mistake keeps pandas' cut-off display
        data, _ = shell.display_formatter.format(
            pd.DataFrame({"x": np.arange(book.MAX_ROWS + 1)}))
        assert "..." in data["text/html"] and "rows" in data["text/html"]
    finally:
        InteractiveShell.clear_instance()


def test_dates_are_shown_without_midnight():
    frame = pd.DataFrame({"day": pd.to_datetime(["2011-10-01", "2011-12-09"]),
                          "at": pd.to_datetime(["2011-10-01 10:30", "2011-12-09 00:00"])})
    html = book.table_html(frame)
    assert column(html, frame, "day") == ["2011-10-01", "2011-12-09"]
    assert column(html, frame, "at")[0] == "2011-10-01 10:30:00"


def test_a_default_index_is_left_out_and_a_meaningful_one_kept():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]})
    html = book.table_html(frame)
    assert "<th>0</th>" not in html and "<th>a</th>" in html
    named = book.table_html(frame.rename_axis("trial"))
    assert "trial" in named and "<th>0</th>" in named
    assert "<th>1</th>" in book.table_html(frame.set_axis([1, 2], axis=0))
