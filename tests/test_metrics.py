"""companion.foundations.metrics and companion.foundations.evaluation against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from companion.foundations import evaluation, metrics

rng = np.random.default_rng(1)
Y = rng.integers(0, 2, 300)
S = np.round(Y * 0.8 + rng.normal(size=300), 1)  # rounding creates ties
P = 1 / (1 + np.exp(-S))
PRED = (S > 0.3).astype(int)


@pytest.mark.parametrize(
    ("ours", "theirs", "second"),
    [
        (metrics.accuracy, skm.accuracy_score, PRED),
        (metrics.precision, skm.precision_score, PRED),
        (metrics.recall, skm.recall_score, PRED),
        (metrics.f1, skm.f1_score, PRED),
        (metrics.roc_auc, skm.roc_auc_score, S),
        (metrics.average_precision, skm.average_precision_score, S),
        (metrics.log_loss, skm.log_loss, P),
        (metrics.brier_score, skm.brier_score_loss, P),
    ],
)
def test_metrics_match_sklearn(ours, theirs, second):
    assert ours(Y, second) == pytest.approx(theirs(Y, second), rel=1e-10)


def test_roc_curve_matches_sklearn():
    fpr, tpr, thr = metrics.roc_curve(Y, S)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(Y, S, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(Y, S))


def test_regression_metrics_match_sklearn():
    t, p = rng.normal(size=40), rng.normal(size=40)
    assert metrics.rmse(t, p) == pytest.approx(np.sqrt(skm.mean_squared_error(t, p)))
    assert metrics.r2(t, p) == pytest.approx(skm.r2_score(t, p))


def test_confusion_counts_and_zero_division():
    assert metrics.confusion_counts([1, 0, 1, 0], [1, 1, 0, 0]) == {
        "tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert metrics.precision([1, 1], [0, 0]) == 0.0
    assert metrics.accuracy([True, False], [1, 0]) == 1.0


@pytest.mark.parametrize(
    ("fn", "y", "s", "match"),
    [
        (metrics.roc_auc, [0, 1], [0.5], "has 2 values"),
        (metrics.roc_auc, [0, 2], [0.1, 0.2], "0/1 labels"),
        (metrics.roc_auc, [1, 1], [0.1, 0.2], "both positive and negative"),
        (metrics.average_precision, [0, 0], [0.1, 0.2], "at least one positive"),
        (metrics.f1, [0, 1], [0.2, 0.7], "threshold"),
        (metrics.log_loss, [0, 1], [0.2, np.nan], "NaN"),
        (metrics.brier_score, [0, 1], [0.2, 1.5], "probabilities"),
        (metrics.accuracy, [[0, 1]], [[0, 1]], "1-D"),
        (metrics.r2, [1.0, 1.0], [1.0, 2.0], "constant"),
    ],
)
def test_metrics_reject_bad_input(fn, y, s, match):
    with pytest.raises(ValueError, match=match):
        fn(np.asarray(y), np.asarray(s))


def test_classification_report_keys():
    report = metrics.classification_report(Y, P)
    assert set(report) == {"accuracy", "precision", "recall", "F1", "ROC-AUC", "PR-AUC"}


def test_bootstrap_ci_covers_the_estimate_and_shrinks_with_n():
    est, low, high = evaluation.bootstrap_ci(metrics.roc_auc, Y, S, n_boot=300)
    assert low < est < high
    big_y, big_s = np.tile(Y, 10), np.tile(S, 10)
    _, low2, high2 = evaluation.bootstrap_ci(metrics.roc_auc, big_y, big_s, n_boot=300)
    assert high2 - low2 < (high - low) / 2


def test_paired_bootstrap_detects_a_better_model():
    diff, low, high = evaluation.paired_bootstrap(metrics.roc_auc, Y, S, -S + 0 * S, n_boot=200)
    assert diff > 0 and low > 0


def test_comparison_table_and_format():
    table = evaluation.comparison_table(Y, {"a": S, "b": P}, {"AUC": metrics.roc_auc},
                                        n_boot=50)
    assert list(table.columns) == ["AUC", "AUC low", "AUC high"]
    text = evaluation.format_ci(table)
    assert text.loc["a", "AUC"].startswith(f"{metrics.roc_auc(Y, S):.3f} [")


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="equal lengths"):
        evaluation.bootstrap_ci(metrics.roc_auc, Y, S[:10])
    with pytest.raises(ValueError, match="level"):
        evaluation.bootstrap_ci(metrics.roc_auc, Y, S, level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        evaluation.bootstrap_ci(metrics.roc_auc, Y, S, n_boot=1)


def test_precision_recall_curve_matches_sklearn():
    prec, rec = metrics.precision_recall_curve(Y, S)
    sk_prec, sk_rec, _ = skm.precision_recall_curve(Y, S, drop_intermediate=False)
    # scikit-learn lists thresholds from low to high and appends the (1, 0) end point
    np.testing.assert_allclose(prec, sk_prec[:-1][::-1])
    np.testing.assert_allclose(rec, sk_rec[:-1][::-1])
    with pytest.raises(ValueError, match="at least one positive"):
        metrics.precision_recall_curve([0, 0], [0.2, 0.3])


def test_plot_roc_pr():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from companion import plotting

    axes = plotting.plot_roc_pr(Y, {"a": S, "b": P})
    assert len(axes[0].lines) == 3 and "AUC" in axes[0].get_legend().get_texts()[0].get_text()
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_roc_pr(Y, {})


def test_expanding_window_folds_never_train_on_the_future():
    months = np.array(["Feb", "Mar", "Mar", "May", "Nov", "Feb", "Dec", "May"])
    order = ["Feb", "Mar", "May", "Nov", "Dec"]
    folds = evaluation.expanding_window_folds(months, order, min_train_periods=2)
    assert len(folds) == 3
    rank = {m: i for i, m in enumerate(order)}
    for train, test in folds:
        assert max(rank[m] for m in months[train]) < min(rank[m] for m in months[test])
        assert len(set(months[test])) == 1
    assert sorted(months[folds[0][1]]) == ["May", "May"]
    with pytest.raises(ValueError, match="not in order"):
        evaluation.expanding_window_folds(months, ["Feb"])
    with pytest.raises(ValueError, match="more than 5 periods"):
        evaluation.expanding_window_folds(months, order, min_train_periods=5)


def test_log_loss_clips_certain_predictions():
    # probabilities of exactly 0 and 1 are clipped to [eps, 1 - eps]: the loss stays finite
    right = metrics.log_loss([0, 1], [0.0, 1.0])
    assert 0 < right < 1e-14
    wrong = metrics.log_loss([1, 0], [0.0, 1.0])
    assert wrong == pytest.approx(-np.log(1e-15), rel=0.01)
    for bad in ([0.2, 1.5], [-0.1, 0.5]):
        with pytest.raises(ValueError, match="y_prob must be probabilities"):
            metrics.log_loss([0, 1], bad)


def test_classification_report_by_hand():
    y, s = [1, 0, 1, 0], [0.5, 0.2, 0.7, 0.6]
    report = metrics.classification_report(y, s)
    # a score equal to the threshold 0.5 counts as positive: predictions 1, 0, 1, 1
    assert report["accuracy"] == 0.75 and report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == 1.0 and report["F1"] == pytest.approx(0.8)
    # positives 0.5 and 0.7 against negatives 0.2 and 0.6: three pairs of four in order
    assert report["ROC-AUC"] == 0.75
    assert report["PR-AUC"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    high = metrics.classification_report(y, s, threshold=0.65)
    assert high["recall"] == 0.5 and high["precision"] == 1.0


def test_regression_metrics_by_hand():
    assert metrics.rmse([3.0], [1.0]) == 2.0
    assert metrics.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))
    assert metrics.r2([1, 2, 3], [1, 2, 4]) == pytest.approx(0.5)
    for t, p in (([], []), ([1.0, np.nan], [1.0, 2.0]), ([1.0, 2.0], [1.0, np.inf])):
        with pytest.raises(ValueError, match="y_true and y_pred must be non-empty and finite"):
            metrics.rmse(t, p)
    with pytest.raises(ValueError, match=r"y_true has shape \(2,\) but y_pred has shape"):
        metrics.r2([1.0, 2.0], [1.0])


def test_expanding_window_folds_default_order_and_absent_periods():
    periods = np.array([3, 1, 2, 4, 1, 5])
    # by default the periods are sorted and the first three train: 4, then 5, are tested
    expected = [([0, 1, 2, 4], [3]), ([0, 1, 2, 3, 4], [5])]
    folds = evaluation.expanding_window_folds(periods)
    assert [(train.tolist(), test.tolist()) for train, test in folds] == expected
    # a period that the order names but the data lack gives no (empty) fold
    folds = evaluation.expanding_window_folds(periods, [1, 2, 3, 7, 4, 5])
    assert [(train.tolist(), test.tolist()) for train, test in folds] == expected
    with pytest.raises(ValueError, match="min_train_periods must be >= 1"):
        evaluation.expanding_window_folds(periods, min_train_periods=0)


def test_paired_bootstrap_is_the_bootstrap_of_the_difference():
    a, b = S, -S + np.random.default_rng(5).normal(size=S.size)

    def difference(t, x, z):
        return metrics.roc_auc(t, x) - metrics.roc_auc(t, z)

    paired = evaluation.paired_bootstrap(metrics.roc_auc, Y, a, b, n_boot=60, level=0.8, seed=3)
    expected = evaluation.bootstrap_ci(difference, Y, a, b, n_boot=60, level=0.8, seed=3)
    assert paired == expected
    assert paired[0] == pytest.approx(metrics.roc_auc(Y, a) - metrics.roc_auc(Y, b))


def test_format_ci_collapses_only_interval_columns():
    table = pd.DataFrame({"AUC": [0.81234], "AUC low": [0.8], "AUC high": [0.83],
                          "Brier": [0.1], "Brier low": [0.09], "Brier high": [0.11],
                          "users": [40]}, index=["model"])
    text = evaluation.format_ci(table, digits=2)
    assert list(text.columns) == ["AUC", "Brier", "users"]
    assert text.loc["model"].tolist() == ["0.81 [0.80, 0.83]", "0.10 [0.09, 0.11]", 40]
    lone = table.assign(**{"gain": 0.5, "gain low": 0.25})  # no "gain high": kept as is
    assert list(evaluation.format_ci(lone).columns) == ["AUC", "Brier", "users", "gain",
                                                        "gain low"]


def test_roc_curve_by_hand():
    fpr, tpr, thresholds = metrics.roc_curve([0, 1], [0.3, 0.6])
    assert fpr.tolist() == [0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0]
    assert thresholds.tolist() == [np.inf, 0.6, 0.3]
    for y in ([0, 0], [1, 1]):
        with pytest.raises(ValueError, match="the ROC curve needs both positive and negative"):
            metrics.roc_curve(y, [0.3, 0.6])
    assert metrics.roc_auc([0, 1, 0], [0.1, 0.9, 0.5]) == 1.0
    # one positive is enough for the precision-recall curve and its area
    assert metrics.average_precision([0, 1, 0], [0.1, 0.9, 0.5]) == 1.0
    assert metrics.average_precision([1, 0, 0], [0.1, 0.9, 0.5]) == pytest.approx(1 / 3)


def test_bootstrap_ci_resamples_every_row_reproducibly():
    x = np.r_[100.0, np.zeros(9)]
    est, low, high = evaluation.bootstrap_ci(np.mean, x, n_boot=10)
    assert est == 10.0 and low < high
    # the one large value is drawn in some resamples: the upper end is above zero
    assert evaluation.bootstrap_ci(np.mean, x, n_boot=200)[2] > 0
    assert evaluation.bootstrap_ci(np.mean, S, seed=7) == evaluation.bootstrap_ci(np.mean, S,
                                                                                    seed=7)
    assert evaluation.bootstrap_ci(np.mean, S, seed=7) != evaluation.bootstrap_ci(np.mean, S,
                                                                                    seed=8)
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match="level must be in"):
            evaluation.bootstrap_ci(np.mean, S, level=level)


def _failing_on(calls):
    """np.mean that raises ValueError on the given call numbers (call 0 is the estimate)."""
    count = iter(range(10**6))

    def metric(values):
        if next(count) in calls:
            raise ValueError("undefined")
        return float(np.mean(values))

    return metric


def test_bootstrap_ci_needs_half_the_resamples_defined():
    # at least n_boot // 2 resamples must be defined: 5 of 11 or of 10 are enough, 4 of 11 not
    assert len(evaluation.bootstrap_ci(_failing_on(set(range(1, 7))), S, n_boot=11)) == 3
    assert len(evaluation.bootstrap_ci(_failing_on(set(range(1, 6))), S, n_boot=10)) == 3
    with pytest.raises(ValueError, match="undefined on most bootstrap resamples"):
        evaluation.bootstrap_ci(_failing_on(set(range(1, 8))), S, n_boot=11)
    # a resample on which the metric is undefined is skipped, the next ones still count
    y = np.r_[1, np.zeros(9, dtype=int)]
    est, low, high = evaluation.bootstrap_ci(metrics.roc_auc, y, np.arange(10.0), n_boot=50)
    assert low <= est <= high


def test_comparison_table_passes_its_settings_on():
    table = evaluation.comparison_table(Y, {"a": S}, {"AUC": metrics.roc_auc}, n_boot=40, seed=3)
    expected = evaluation.bootstrap_ci(metrics.roc_auc, Y, S, n_boot=40, seed=3)
    assert tuple(table.loc["a"]) == expected


@pytest.mark.parametrize("level", [0.5, 0.95])
def test_bootstrap_ci_has_the_stated_level(level):
    from scipy.stats import norm

    x = np.random.default_rng(2).normal(size=1000)
    est, low, high = evaluation.bootstrap_ci(np.mean, x, n_boot=2000, level=level, seed=1)
    # the mean of 1000 values: the interval is about +-z standard errors around it
    half = norm.ppf((1 + level) / 2) * x.std() / np.sqrt(len(x))
    assert low < est < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_paired_difference_pairs_series_on_the_index_and_drops_missing_units():
    a = pd.Series([0.5, 0.4, 0.9, 0.2], index=["u1", "u2", "u3", "u4"])
    b = pd.Series([0.1, 0.3, 0.4], index=["u3", "u1", "u2"])  # other order, u4 missing
    est, low, high = evaluation.paired_difference(a, b, n_boot=200, seed=1)
    assert est == pytest.approx(np.mean([0.5 - 0.3, 0.4 - 0.4, 0.9 - 0.1]))
    assert low <= est <= high
    # the same differences as an array give the same interval (same resamples)
    assert evaluation.paired_difference(
        np.array([0.2, 0.0, 0.8]), np.zeros(3), n_boot=200, seed=1) == pytest.approx(
        (est, low, high))
    with pytest.raises(ValueError, match="duplicates"):
        evaluation.paired_difference(pd.Series([1.0, 2.0], index=["u", "u"]), b)
    with pytest.raises(ValueError, match="same shape"):
        evaluation.paired_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        evaluation.paired_difference(a, pd.Series([0.0], index=["u1"]))


def test_verdict_reads_the_interval_against_zero():
    words = {"above": "gain", "below": "loss", "neither": "tie"}
    assert evaluation.verdict(0.01, 0.2, **words) == "gain"
    assert evaluation.verdict(-0.2, -0.01, **words) == "loss"
    assert evaluation.verdict(-0.1, 0.1, **words) == "tie"
    assert evaluation.verdict(0.0, 0.1, **words) == "tie"  # touching zero is not a gain
    with pytest.raises(ValueError, match="above its high end"):
        evaluation.verdict(0.2, 0.1, **words)


def test_binary_metrics_take_one_example_refuse_none_and_fractional_labels():
    # one example is enough; no example is an error
    assert metrics.brier_score([1], [0.75]) == pytest.approx(0.0625)
    with pytest.raises(ValueError, match="empty"):
        metrics.brier_score([], [])
    # labels must be 0/1: a 0.5 is not truncated to 0, and booleans count as 0/1
    with pytest.raises(ValueError, match="0/1 labels"):
        metrics.brier_score([0.5, 1.0], [0.2, 0.8])
    assert metrics.log_loss(np.array([True, False]), [0.8, 0.3]) == pytest.approx(
        metrics.log_loss([1, 0], [0.8, 0.3]))
