"""Tests of companion.data.preprocessing: schema checks, cleaning, encoders and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion import data
from companion.data import preprocessing
from companion.data.preprocessing import IdEncoder


def _lines(rows):
    """Invoice lines in the Online Retail schema from (invoice, code, qty, date, price, cust)."""
    frame = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate",
                                        "UnitPrice", "CustomerID"])
    frame.insert(2, "Description", "THING")
    frame["Country"] = "United Kingdom"
    frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])
    return frame


# --------------------------------------------------------------------------- schema


def test_standardise_columns_accepts_both_schemas(shop):
    frame, _ = shop
    one = preprocessing.standardise_columns(frame)
    two = preprocessing.standardise_columns(frame.rename(columns=data.I_TO_II))
    pd.testing.assert_frame_equal(one, two)
    assert list(one.columns) == list(preprocessing.CANONICAL.values())


def test_missing_column_is_named_with_a_hint(shop):
    frame, _ = shop
    with pytest.raises(ValueError, match=r"'Quantity' \(did you mean 'quantity'\?\)"):
        preprocessing.standardise_columns(frame.rename(columns={"Quantity": "quantity"}))


def test_wrong_dtype_is_named(shop):
    frame, _ = shop
    bad = frame.head(5).assign(Quantity=["1", "2", "three", "4", "5"])
    with pytest.raises(ValueError, match=r"column 'Quantity' must be numeric.*'three'"):
        preprocessing.standardise_columns(bad)


def test_fractional_quantity_is_rejected(shop):
    frame, _ = shop
    with pytest.raises(ValueError, match="'Quantity' must hold whole numbers"):
        preprocessing.standardise_columns(frame.head(3).assign(Quantity=[1.5, 2.0, 3.0]))


def test_unparseable_dates_are_named(shop):
    frame, _ = shop
    bad = frame.head(3).assign(InvoiceDate=["2010-12-01 08:26", "yesterday", "2010-12-02"])
    with pytest.raises(ValueError, match=r"'InvoiceDate' has 1 value\(s\).*'yesterday'"):
        preprocessing.standardise_columns(bad)


def test_date_strings_are_parsed(shop):
    frame, _ = shop
    text = frame.head(3).assign(InvoiceDate=frame["InvoiceDate"].head(3).astype(str))
    out = preprocessing.standardise_columns(text)
    assert pd.api.types.is_datetime64_any_dtype(out["invoice_date"])


def test_numeric_text_column_is_rejected(shop):
    frame, _ = shop
    with pytest.raises(ValueError, match="'StockCode' must hold text"):
        preprocessing.standardise_columns(frame.head(3).assign(StockCode=[1, 2, 3]))


def test_empty_and_non_frames_are_rejected(shop):
    frame, _ = shop
    with pytest.raises(ValueError, match="transactions is empty"):
        preprocessing.standardise_columns(frame.iloc[:0])
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        preprocessing.standardise_columns([1, 2, 3])


def test_missing_values_in_required_column_are_rejected(shop):
    frame, _ = shop
    bad = frame.head(4).copy()
    bad["InvoiceNo"] = bad["InvoiceNo"].astype(object)
    bad.iloc[2, 0] = None
    with pytest.raises(ValueError, match="'InvoiceNo' has 1 missing value"):
        preprocessing.standardise_columns(bad)


# --------------------------------------------------------------------------- cleaning


def test_each_rule_removes_exactly_its_rows():
    raw = _lines([
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850.0),   # kept
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850.0),   # duplicate
        ("536366", " 71053 ", 6, "2010-12-01 08:28", 3.39, 17850.0),  # spaces, kept
        ("536367", "71053", 2, "2010-12-01 09:00", 3.39, None),       # missing customer
        ("C536368", "71053", -2, "2010-12-02 09:00", 3.39, 17850.0),  # cancellation
        ("C536369", "POST", -1, "2010-12-02 09:00", 18.0, 17850.0),   # cancelled postage
        ("536370", "22222", 0, "2010-12-03 09:00", 1.0, 13047.0),     # zero quantity
        ("A536371", "B", 1, "2010-12-03 09:00", -11062.06, 13047.0),  # bad debt
        ("536372", "POST", 1, "2010-12-03 09:00", 18.0, 13047.0),     # postage
        ("536373", "gift_0001_20", 1, "2010-12-03 09:00", 17.0, 13047.0),  # voucher
    ])
    result = preprocessing.clean_transactions(raw)
    report = result.report.set_index("rule")
    assert report.loc["input", "rows_remaining"] == 10
    assert report.loc["strip_whitespace", "rows_modified"] == 1
    assert report.loc["missing_customer", "rows_removed"] == 1
    assert report.loc["cancellations", "rows_removed"] == 2
    assert report.loc["non_positive", "rows_removed"] == 2
    assert report.loc["non_product", "rows_removed"] == 2
    assert report.loc["duplicates", "rows_removed"] == 1
    assert report["rows_remaining"].iloc[-1] == len(result.transactions) == 2
    assert result.transactions["stock_code"].tolist() == ["85123A", "71053"]
    assert result.transactions["customer_id"].dtype == np.int64
    # the postage cancellation is not a product return
    assert result.returns["invoice"].tolist() == ["C536368"]


def test_clean_synthetic_shop_satisfies_every_rule(clean_shop):
    clean = clean_shop.transactions
    assert not clean["customer_id"].isna().any()
    assert not clean["invoice"].str.startswith("C").any()
    assert (clean["quantity"] > 0).all() and (clean["price"] > 0).all()
    assert preprocessing.is_product_code(clean["stock_code"]).all()
    assert not clean.duplicated().any()
    assert (clean["description"].str.strip() == clean["description"]).all()
    assert clean_shop.returns["invoice"].str.startswith("C").all()
    assert (clean_shop.returns["quantity"] < 0).all()


def test_is_product_code():
    codes = pd.Series(["85123A", "POST", "dot", "gift_0001_10", "DCGS0003", "BANK CHARGES",
                       "84970l", "M", "C2"])
    assert preprocessing.is_product_code(codes).tolist() == [
        True, False, False, False, True, False, True, False, False
    ]


# --------------------------------------------------------------------------- interactions


def test_to_interactions_aggregates_lines_of_an_invoice():
    raw = _lines([
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.5, 17850.0),
        ("536365", "85123A", 4, "2010-12-01 08:26", 2.0, 17850.0),
        ("536366", "71053", 1, "2010-12-02 10:00", 3.0, 13047.0),
    ])
    clean = preprocessing.clean_transactions(raw).transactions
    out = preprocessing.to_interactions(clean)
    assert list(out.columns) == ["user_id", "item_id", "timestamp", "invoice", "quantity",
                                 "value"]
    first = out.iloc[0]
    assert (first["user_id"], first["item_id"], first["quantity"]) == (17850, "85123A", 10)
    assert first["value"] == pytest.approx(6 * 2.5 + 4 * 2.0)
    assert len(out) == 2


def test_to_interactions_names_a_missing_column(clean_shop):
    with pytest.raises(ValueError, match="'price'"):
        preprocessing.to_interactions(clean_shop.transactions.drop(columns="price"))


# --------------------------------------------------------------------------- encoder


def test_id_encoder_is_contiguous_and_invertible():
    ids = ["b", "a", "c", "a", "b"]
    enc = IdEncoder().fit(ids)
    codes = enc.transform(ids)
    assert codes.tolist() == [1, 0, 2, 0, 1]
    assert len(enc) == 3
    assert enc.inverse_transform(codes).tolist() == ids
    assert IdEncoder().fit_transform([30, 10, 20]).tolist() == [2, 0, 1]


def test_id_encoder_unknown_ids():
    enc = IdEncoder().fit([1, 2, 3])
    with pytest.raises(ValueError, match=r"not seen during fit, e\.g\. \[7\]"):
        enc.transform([1, 7])
    lenient = IdEncoder(handle_unknown="use_unknown").fit([1, 2, 3])
    assert lenient.transform([3, 7, 1]).tolist() == [2, IdEncoder.UNKNOWN, 0]


def test_id_encoder_bad_input():
    with pytest.raises(ValueError, match="handle_unknown"):
        IdEncoder(handle_unknown="ignore")
    with pytest.raises(RuntimeError, match="not fitted"):
        IdEncoder().transform([1])
    with pytest.raises(ValueError, match="missing value"):
        IdEncoder().fit([1.0, np.nan])
    with pytest.raises(ValueError, match="no ids"):
        IdEncoder().fit([])
    enc = IdEncoder().fit(["x", "y"])
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        enc.inverse_transform([0, 2])
    with pytest.raises(ValueError, match="integers"):
        enc.inverse_transform(np.array([0.5]))


# --------------------------------------------------------------------------- splits


def test_split_by_time_partitions_without_leakage(interactions):
    split = preprocessing.split_by_time(interactions, "2011-09-01", validation_days=30)
    assert len(split.train) + len(split.validation) + len(split.test) == len(interactions)
    assert split.train["timestamp"].max() < pd.Timestamp("2011-08-02")
    assert split.validation["timestamp"].min() >= pd.Timestamp("2011-08-02")
    assert split.test["timestamp"].min() >= pd.Timestamp("2011-09-01")
    preprocessing.check_no_future_leakage(split)
    sizes = split.sizes()
    assert sizes.loc["train", "rows"] == len(split.train)


def test_split_by_time_test_window(interactions):
    split = preprocessing.split_by_time(interactions, "2011-06-01", test_days=30)
    assert split.test["timestamp"].max() < pd.Timestamp("2011-07-01")
    assert len(split.train) + len(split.test) < len(interactions)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cutoff": "2030-01-01"}, "outside the data"),
        ({"cutoff": "1999-01-01"}, "outside the data"),
        ({"cutoff": "garbage"}, "not a valid date"),
        ({"cutoff": "2011-06-01", "validation_days": 4000}, "no training data"),
        ({"cutoff": "2011-06-01", "validation_days": 0}, "validation_days"),
        ({"cutoff": "2011-06-01", "test_days": -3}, "test_days"),
    ],
)
def test_split_by_time_rejects_bad_cutoffs(interactions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        preprocessing.split_by_time(interactions, **kwargs)


def test_leave_last_basket_out_is_leak_free_per_user(interactions):
    split = preprocessing.leave_last_basket_out(interactions, validation=True)
    preprocessing.check_no_future_leakage(split, per_user=True)
    assert split.test.groupby("user_id")["timestamp"].nunique().eq(1).all()
    assert split.validation.groupby("user_id")["timestamp"].nunique().eq(1).all()
    last = interactions.groupby("user_id")["timestamp"].max()
    held = split.test.groupby("user_id")["timestamp"].first()
    assert (held == last.reindex(held.index)).all()
    baskets = interactions.groupby("user_id")["timestamp"].nunique()
    too_few = baskets[baskets < 3].index
    assert not split.test["user_id"].isin(too_few).any()
    assert len(split.train) + len(split.validation) + len(split.test) == len(interactions)


def _events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def test_split_by_time_edges_by_hand():
    frame = _events([(1, "a", "2011-01-01 00:00:00"), (1, "b", "2011-02-28 23:59:59"),
                     (2, "a", "2011-03-01 00:00:00"),    # exactly the validation start
                     (2, "b", "2011-03-30 23:59:59"),
                     (3, "a", "2011-03-31 00:00:00"),    # exactly the test start
                     (3, "b", "2011-04-09 23:59:59"),
                     (4, "a", "2011-04-10 00:00:00"),    # exactly the test end
                     (4, "b", "2011-05-01 00:00:00")])
    split = preprocessing.split_by_time(frame, "2011-03-31", validation_days=30, test_days=10)
    parts = [split.train, split.validation, split.test]
    assert [p["user_id"].tolist() for p in parts] == [[1, 1], [2, 2], [3, 3]]
    assert all(p.index.tolist() == [0, 1] for p in parts)
    assert all(p.columns.tolist() == ["user_id", "item_id", "timestamp"] for p in parts)
    assert split.description == ("global time split: test from 2011-03-31, validation from "
                                 "2011-03-01, test until 2011-04-10")
    to_end = preprocessing.split_by_time(frame, "2011-03-31")
    assert to_end.train["user_id"].tolist() == [1, 1, 2, 2]
    assert to_end.validation.empty and to_end.test["user_id"].tolist() == [3, 3, 4, 4]
    assert to_end.description == "global time split: test from 2011-03-31"
    preprocessing.check_no_future_leakage(split)
    preprocessing.check_no_future_leakage(to_end)
    # the last moment is a valid test start; a validation window back to the first is not
    last = preprocessing.split_by_time(frame, "2011-05-01")
    assert last.test["item_id"].tolist() == ["b"] and len(last.train) == 7
    with pytest.raises(ValueError, match="before the first interaction"):
        preprocessing.split_by_time(frame, "2011-03-31", validation_days=89)
    assert len(preprocessing.split_by_time(frame, "2011-03-31", validation_days=88).train) == 1
    with pytest.raises(ValueError, match="outside the data"):
        preprocessing.split_by_time(frame, "2011-01-01")


def test_leave_last_basket_out_by_hand():
    frame = _events([(1, "a", "2011-01-01"), (1, "b", "2011-01-05"), (1, "c", "2011-01-09"),
                     (1, "d", "2011-01-09"),             # a basket of two lines
                     (2, "a", "2011-01-02"), (2, "b", "2011-01-03"),
                     (3, "a", "2011-01-04")])
    split = preprocessing.leave_last_basket_out(frame)
    assert split.test[["user_id", "item_id"]].values.tolist() == [[1, "c"], [1, "d"], [2, "b"]]
    assert split.validation.empty and split.train["item_id"].tolist() == ["a", "b", "a", "a"]
    assert split.description == "leave-last-basket-out per user"
    # with a validation basket a user needs three baskets: user 2 stays in train
    split = preprocessing.leave_last_basket_out(frame, validation=True)
    assert split.test[["user_id", "item_id"]].values.tolist() == [[1, "c"], [1, "d"]]
    assert split.validation[["user_id", "item_id"]].values.tolist() == [[1, "b"]]
    assert split.train[["user_id", "item_id"]].values.tolist() == [[1, "a"], [2, "a"],
                                                                     [2, "b"], [3, "a"]]
    assert split.test.index.tolist() == [0, 1] and split.validation.index.tolist() == [0]
    for part in (split.train, split.validation, split.test):
        assert part.columns.tolist() == ["user_id", "item_id", "timestamp"]
    assert split.description.endswith("with the previous basket for validation")
    preprocessing.check_no_future_leakage(split, per_user=True)


def test_leakage_check_by_hand():
    train = _events([(1, "a", "2011-01-01"), (2, "a", "2011-01-05")])
    later = _events([(1, "b", "2011-01-03"), (2, "b", "2011-01-06")])
    same = preprocessing.Split(train, later.iloc[:0], later, "")
    # globally, user 2's training day comes after user 1's test day
    with pytest.raises(ValueError, match="a part ends at 2011-01-05 00:00:00 but the next "
                                         "starts at 2011-01-03"):
        preprocessing.check_no_future_leakage(same)
    preprocessing.check_no_future_leakage(same, per_user=True)
    # a shared instant is a leak too, globally and per user, in validation as in test
    tie = _events([(1, "b", "2011-01-05")])
    with pytest.raises(ValueError, match="leakage"):
        preprocessing.check_no_future_leakage(preprocessing.Split(train, tie, tie.iloc[:0], ""))
    with pytest.raises(ValueError, match=r"leakage: 1 user\(s\) .* e\.g\. user 2"):
        preprocessing.check_no_future_leakage(
            preprocessing.Split(train, later.iloc[:0], _events([(2, "b", "2011-01-05")]), ""),
            per_user=True)
    with pytest.raises(ValueError, match="leakage"):
        preprocessing.check_no_future_leakage(
            preprocessing.Split(train, _events([(2, "b", "2011-01-09")]),
                                _events([(1, "b", "2011-01-07")]), ""))
    with pytest.raises(ValueError, match="leakage: 1 user"):
        preprocessing.check_no_future_leakage(
            preprocessing.Split(train, _events([(1, "b", "2011-01-01")]), later.iloc[:0], ""),
            per_user=True)


def test_leakage_check_catches_leaks(interactions):
    split = preprocessing.split_by_time(interactions, "2011-09-01")
    leaky = preprocessing.Split(pd.concat([split.train, split.test.head(5)]),
                                split.validation, split.test, "leaky")
    with pytest.raises(ValueError, match="leakage"):
        preprocessing.check_no_future_leakage(leaky)
    with pytest.raises(ValueError, match="leakage: .* user"):
        preprocessing.check_no_future_leakage(leaky, per_user=True)


def test_random_split_would_leak(interactions):
    """The reason the book never splits at random: the check flags it."""
    shuffled = interactions.sample(frac=1.0, random_state=0)
    cut = int(0.8 * len(shuffled))
    random_split = preprocessing.Split(shuffled.iloc[:cut], shuffled.iloc[:0],
                                       shuffled.iloc[cut:], "random")
    with pytest.raises(ValueError, match="leakage"):
        preprocessing.check_no_future_leakage(random_split)


def test_splitters_reject_bad_frames(interactions):
    with pytest.raises(ValueError, match="'timestamp'"):
        preprocessing.leave_last_basket_out(interactions.drop(columns="timestamp"))
    with pytest.raises(ValueError, match="interactions is empty"):
        preprocessing.split_by_time(interactions.iloc[:0], "2011-01-01")


def test_iqr_rule():
    values = pd.Series([1, 2, 3, 4, 5, 6, 7, 8, 100.0])
    low, high = preprocessing.iqr_bounds(values)
    assert (low, high) == (-3.0, 13.0)  # Q1 = 3, Q3 = 7
    assert preprocessing.iqr_outliers(values).tolist() == [False] * 8 + [True]
    with pytest.raises(ValueError, match="non-missing"):
        preprocessing.iqr_bounds(pd.Series([np.nan]))
    with pytest.raises(ValueError, match="k must be positive"):
        preprocessing.iqr_bounds(values, k=0)


def _sessions(n=6):
    rows = {c: [1] * n for c in data.SHOPPERS_SCHEMA}
    rows.update({"Month": ["Feb", "Nov"] * (n // 2), "VisitorType": ["New_Visitor"] * n,
                 "Weekend": [True, False] * (n // 2), "Revenue": [False, True] * (n // 2),
                 "ProductRelated_Duration": [0.0, 10.0] * (n // 2)})
    return pd.DataFrame(rows)


def test_shoppers_features():
    X, y = preprocessing.shoppers_features(_sessions())
    assert y.tolist() == [0, 1] * 3
    assert X["log1p_ProductRelated_Duration"].tolist()[:2] == [0.0, pytest.approx(np.log(11))]
    assert {"Month_Feb", "Month_Nov", "Weekend"} <= set(X.columns)
    assert X.dtypes.eq(float).all()
    with pytest.raises(ValueError, match="'Month' has unknown values"):
        preprocessing.shoppers_features(_sessions().assign(Month="Jan"))
    with pytest.raises(ValueError, match="'Revenue'"):
        preprocessing.shoppers_features(_sessions().drop(columns="Revenue"))


def test_product_descriptions_and_countries():
    raw = _lines([
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850.0),
        ("536366", "85123A", 6, "2010-12-02 08:26", 2.55, 17850.0),
        ("536367", "71053", 6, "2010-12-03 08:26", 3.39, 13047.0),
    ])
    raw["Description"] = pd.array(["OLD NAME", "NEW NAME", None], dtype="string")
    raw["Country"] = ["France", "Germany", "EIRE"]
    clean = preprocessing.clean_transactions(raw).transactions
    desc = preprocessing.product_descriptions(clean)
    assert desc.to_dict() == {"71053": "", "85123A": "NEW NAME"}
    countries = preprocessing.customer_countries(clean)
    assert countries.to_dict() == {13047: "EIRE", 17850: "Germany"}
    with pytest.raises(ValueError, match="'description'"):
        preprocessing.product_descriptions(clean.drop(columns="description"))
    with pytest.raises(ValueError, match="'country'"):
        preprocessing.customer_countries(clean.drop(columns="country"))


def test_stratified_split_sizes_balance_and_seed():
    X = pd.DataFrame({"row": np.arange(200)})
    y = np.r_[np.ones(50, dtype=int), np.zeros(150, dtype=int)]
    parts = preprocessing.stratified_split(X, y, sizes=(0.5, 0.3, 0.2), seed=1)
    assert list(parts) == ["train", "validation", "test"]
    assert [len(p[0]) for p in parts.values()] == [100, 60, 40]
    for X_part, y_part in parts.values():
        # a quarter positive in every part, and every row keeps its own label
        assert y_part.mean() == 0.25
        assert np.array_equal(y[X_part["row"].to_numpy()], y_part)
    rows = np.concatenate([p[0]["row"].to_numpy() for p in parts.values()])
    assert sorted(rows) == list(range(200))
    # the seed fixes the split, and another seed changes it
    again = preprocessing.stratified_split(X, y, sizes=(0.5, 0.3, 0.2), seed=1)
    assert again["validation"][0].equals(parts["validation"][0])
    other = preprocessing.stratified_split(X, y, sizes=(0.5, 0.3, 0.2), seed=2)
    assert not other["validation"][0].equals(parts["validation"][0])
    assert [len(p[0]) for p in preprocessing.stratified_split(X, y).values()] == [120, 40, 40]
    for sizes in ((0.5, 0.5, 0.0), (0.6, 0.4), (0.5, 0.3, 0.3)):
        with pytest.raises(ValueError, match="three positive shares summing to 1"):
            preprocessing.stratified_split(X, y, sizes=sizes)
    with pytest.raises(ValueError, match="X has 200 rows but y has 199"):
        preprocessing.stratified_split(X, y[:-1])
