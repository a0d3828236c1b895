"""Tests of companion.apps.ads: the month split, the DCN-v2 cross layer, the Keras models,
calibration and budgeted targeting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.apps import ads


def sessions(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Synthetic sessions in the Online Shoppers schema; buying depends on page value."""
    rng = np.random.default_rng(seed)
    pages = rng.poisson(10, n)
    value = rng.exponential(5, n) * (rng.random(n) < 0.4)
    p = 1 / (1 + np.exp(-(-2.5 + 0.25 * value)))
    return pd.DataFrame({
        "Administrative": rng.poisson(2, n), "Administrative_Duration": rng.exponential(60, n),
        "Informational": rng.poisson(1, n), "Informational_Duration": rng.exponential(20, n),
        "ProductRelated": pages, "ProductRelated_Duration": pages * rng.exponential(40, n),
        "BounceRates": rng.uniform(0, 0.2, n), "ExitRates": rng.uniform(0, 0.2, n),
        "PageValues": value, "SpecialDay": rng.choice([0.0, 0.4, 1.0], n),
        "Month": rng.choice(list(ads.SHOPPERS_MONTH_ORDER), n),
        "OperatingSystems": rng.integers(1, 4, n), "Browser": rng.integers(1, 4, n),
        "Region": rng.integers(1, 4, n), "TrafficType": rng.integers(1, 4, n),
        "VisitorType": rng.choice(["Returning_Visitor", "New_Visitor"], n),
        "Weekend": rng.random(n) < 0.25, "Revenue": rng.random(n) < p})


def test_month_split_is_ordered_and_drops_month_dummies():
    s = sessions()
    parts = ads.month_split(s)
    assert sum(len(y) for _, y in parts.values()) == len(s)
    assert not any(c.startswith("Month_") for c in parts["train"][0].columns)
    n_test = s["Month"].isin(ads.DEFAULT_SPLIT["test"]).sum()
    assert len(parts["test"][1]) == n_test
    with pytest.raises(ValueError, match="must come after"):
        ads.month_split(s, {"train": ("Nov",), "validation": ("Sep",), "test": ("Dec",)})
    with pytest.raises(ValueError, match="unknown"):
        ads.month_split(s, {"train": ("Jan",), "validation": ("Sep",), "test": ("Dec",)})
    with pytest.raises(ValueError, match="keys"):
        ads.month_split(s, {"train": ("Feb",)})


def test_cross_layer_shapes_and_identity():
    import keras

    cross = ads.cross_layer_class()(kernel_initializer="zeros")
    x0 = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    xl = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(cross([x0, xl]))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, xl, atol=1e-6)  # W = 0, b = 0: the identity on x_l
    w = np.random.default_rng(2).normal(size=(4, 4)).astype("float32")
    bias = np.arange(4, dtype="float32")
    cross.dense.set_weights([w, bias])
    out = keras.ops.convert_to_numpy(cross([x0, xl]))
    np.testing.assert_allclose(out, x0 * (xl @ w + bias) + xl, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same width"):
        ads.cross_layer_class()()([x0, xl[:, :3]])


def test_dcn_and_wide_deep_learn_the_signal():
    s = sessions(1500)
    parts = ads.month_split(s)
    (X, y), val, (X_te, y_te) = parts["train"], parts["validation"], parts["test"]
    from companion.foundations.metrics import roc_auc

    for kind in ("dcn", "wide_deep"):
        net = ads.TabularNet(kind, epochs=30, seed=0).fit(X, y, validation=val)
        p = net.predict_proba(X_te)
        assert p.shape == (len(y_te),) and ((p > 0) & (p < 1)).all()
        assert roc_auc(y_te, p) > 0.7, kind
    with pytest.raises(ValueError, match="kind"):
        ads.TabularNet("mlp")
    with pytest.raises(RuntimeError, match="not fitted"):
        ads.TabularNet("dcn").predict_proba(X)
    with pytest.raises(ValueError, match="missing columns"):
        net.predict_proba(X.drop(columns="PageValues" if "PageValues" in X else X.columns[0]))


def test_ece_and_calibration_fix_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.01, 0.6, 20000)
    y = (rng.random(len(p_true)) < p_true).astype(int)
    skewed = p_true ** 2  # ranks the same, probabilities too low
    assert ads.expected_calibration_error(y, p_true) < 0.02
    assert ads.expected_calibration_error(y, skewed) > 0.1
    for method in ("platt", "isotonic"):
        cal = ads.Calibrator(method).fit(skewed[:10000], y[:10000])
        fixed = cal.transform(skewed[10000:])
        assert ads.expected_calibration_error(y[10000:], fixed) < 0.03, method
    with pytest.raises(ValueError, match="method"):
        ads.Calibrator("beta")
    with pytest.raises(ValueError, match="probabilities"):
        ads.expected_calibration_error([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="equal length"):
        ads.expected_calibration_error([0, 1], [0.5])


def test_budget_table_counts_conversions_in_the_top_share():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    perfect = y.astype(float)
    table = ads.budget_table(y, {"perfect": perfect}, budgets=(0.1, 0.2, 0.5))
    assert table.loc["perfect", "10%"] == 1000 and table.loc["perfect", "20%"] == 1000
    assert table.loc["perfect", "50%"] == 400
    assert (table.loc["random"] == 200).all()
    assert ads.top_share_rate(0.2)(y, perfect) == 1000
    with pytest.raises(ValueError, match="budgets"):
        ads.budget_table(y, {"a": perfect}, budgets=(0,))
    with pytest.raises(ValueError, match="shape"):
        ads.budget_table(y, {"a": perfect[:3]})


def test_targeting_study_tunes_each_family_on_validation():
    parts = ads.month_split(sessions(1200))
    grids = {"logistic regression": [{"C": 0.1}, {"C": 1.0}],
             "LightGBM": [{"num_leaves": 3}]}
    out = ads.targeting_study(parts, grids=grids, progress=False)
    assert set(out["test"]) == set(grids)
    lr = out["grid"][out["grid"]["model"] == "logistic regression"]
    assert out["best"]["logistic regression"]["validation log loss"] == pytest.approx(
        lr["validation log loss"].min())
    assert len(out["test"]["LightGBM"]) == len(parts["test"][1])


def test_ab_test_size_matches_the_textbook_formula_and_reaches_its_power():
    # 10% against 15%, two-sided 5% level, power 80%: (1.96 + 0.84)^2 * 0.2175 / 0.0025
    assert ads.ab_test_size(0.10, 0.5) == 683
    n = ads.ab_test_size(0.2, 0.25, power=0.8)
    assert ads.ab_test_power(0.2, 0.25, n) >= 0.8 > ads.ab_test_power(0.2, 0.25, n - 1)
    # simulated experiments of that size reject the null hypothesis 80% of the time
    rng = np.random.default_rng(0)
    a, b = rng.binomial(n, 0.2, 4000) / n, rng.binomial(n, 0.25, 4000) / n
    z = (b - a) / np.sqrt((a * (1 - a) + b * (1 - b)) / n)
    assert abs((np.abs(z) > 1.959964).mean() - 0.8) < 0.03
    # smaller lifts, rarer events and more power all need more units
    assert ads.ab_test_size(0.2, 0.1) > n
    assert ads.ab_test_size(0.02, 0.25) > n
    assert ads.ab_test_size(0.2, 0.25, power=0.9) > n
    assert ads.ab_test_size(0.2, -0.25) > 0   # a drop is detected too


def test_ab_test_size_rejects_impossible_rates():
    with pytest.raises(ValueError, match="base_rate"):
        ads.ab_test_size(0.0, 0.1)
    with pytest.raises(ValueError, match="lift"):
        ads.ab_test_size(0.6, 1.0)
    with pytest.raises(ValueError, match="lift"):
        ads.ab_test_size(0.2, 0.0)
    with pytest.raises(ValueError, match="power"):
        ads.ab_test_size(0.2, 0.1, power=1.0)
    with pytest.raises(ValueError, match="per_arm"):
        ads.ab_test_power(0.2, 0.1, 0)
