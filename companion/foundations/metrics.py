"""Classification and regression metrics, written out so that each formula is visible.

Every function checks its input (equal lengths, finite values, binary labels) and is
tested against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _binary(y_true: object, other: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    o = np.asarray(other, dtype=float)
    if t.ndim != 1 or o.ndim != 1:
        raise ValueError(f"y_true and {name} must be 1-D, got shapes {t.shape} and {o.shape}.")
    if t.shape != o.shape:
        raise ValueError(f"y_true has {t.size} values but {name} has {o.size}.")
    if t.size == 0:
        raise ValueError("y_true is empty.")
    if t.dtype == bool:
        t = t.astype(int)
    t = t.astype(float)
    if not np.all(np.isfinite(o)) or not np.all(np.isfinite(t)):
        raise ValueError(f"y_true or {name} contains NaN or infinite values.")
    bad = ~np.isin(t, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"y_true must hold 0/1 labels, got {np.unique(t[bad])[:5].tolist()}.")
    return t, o


def confusion_counts(y_true: object, y_pred: object) -> dict[str, int]:
    """True and false positives and negatives of 0/1 predictions."""
    t, p = _binary(y_true, y_pred, "y_pred")
    if not np.isin(p, (0.0, 1.0)).all():
        raise ValueError("y_pred must hold 0/1 predictions; threshold the scores first.")
    return {
        "tp": int(np.sum((t == 1) & (p == 1))),
        "fp": int(np.sum((t == 0) & (p == 1))),
        "tn": int(np.sum((t == 0) & (p == 0))),
        "fn": int(np.sum((t == 1) & (p == 0))),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def accuracy(y_true: object, y_pred: object) -> float:
    r""":math:`(TP + TN) / n`."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"] + c["tn"], sum(c.values()))


def precision(y_true: object, y_pred: object) -> float:
    r""":math:`TP / (TP + FP)`, 0 when nothing is predicted positive."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"], c["tp"] + c["fp"])


def recall(y_true: object, y_pred: object) -> float:
    r""":math:`TP / (TP + FN)`, 0 when there are no positives."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def f1(y_true: object, y_pred: object) -> float:
    r"""Harmonic mean of precision and recall, :math:`2TP / (2TP + FP + FN)`."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def roc_curve(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold.

    Returns ``fpr, tpr, thresholds`` with thresholds decreasing; the curve starts at
    (0, 0) with threshold ``inf``.
    """
    t, s = _binary(y_true, y_score, "y_score")
    pos, neg = t.sum(), (1 - t).sum()
    if pos == 0 or neg == 0:
        raise ValueError("the ROC curve needs both positive and negative examples.")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]  # last index of each score
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos], np.r_[np.inf, s[last]]


def roc_auc(y_true: object, y_score: object) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a
    random negative, ties counting one half (the Mann-Whitney statistic)."""
    t, s = _binary(y_true, y_score, "y_score")
    pos, neg = t.sum(), (1 - t).sum()
    if pos == 0 or neg == 0:
        raise ValueError("ROC-AUC needs both positive and negative examples.")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[t == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y_true: object, y_score: object) -> float:
    r"""Area under the precision-recall curve as a step function,
    :math:`\sum_k (R_k - R_{k-1}) P_k` over score thresholds (scikit-learn's definition)."""
    t, _ = _binary(y_true, y_score, "y_score")
    if t.sum() == 0:
        raise ValueError("average precision needs at least one positive example.")
    prec, rec = precision_recall_curve(y_true, y_score)
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def precision_recall_curve(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, from the highest down."""
    t, s = _binary(y_true, y_score, "y_score")
    if t.sum() == 0:
        raise ValueError("the precision-recall curve needs at least one positive example.")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]
    tps = np.cumsum(t)[last]
    return tps / (last + 1), tps / t.sum()


def log_loss(y_true: object, y_prob: object, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of predicted probabilities."""
    t, p = _binary(y_true, y_prob, "y_prob")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1].")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def brier_score(y_true: object, y_prob: object) -> float:
    """Mean squared difference between predicted probability and outcome."""
    t, p = _binary(y_true, y_prob, "y_prob")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1].")
    return float(np.mean((p - t) ** 2))


def classification_report(y_true: object, y_score: object, threshold: float = 0.5) -> dict:
    """Threshold metrics at ``threshold`` plus ROC-AUC and average precision."""
    t, s = _binary(y_true, y_score, "y_score")
    pred = (s >= threshold).astype(float)
    return {
        "accuracy": accuracy(t, pred),
        "precision": precision(t, pred),
        "recall": recall(t, pred),
        "F1": f1(t, pred),
        "ROC-AUC": roc_auc(t, s),
        "PR-AUC": average_precision(t, s),
    }


# --------------------------------------------------------------------------- regression


def _pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}.")
    if t.size == 0 or not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true and y_pred must be non-empty and finite.")
    return t, p


def rmse(y_true: object, y_pred: object) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def r2(y_true: object, y_pred: object) -> float:
    r"""Coefficient of determination :math:`1 - SS_{res}/SS_{tot}`."""
    t, p = _pair(y_true, y_pred)
    ss_tot = np.sum((t - t.mean()) ** 2)
    if ss_tot == 0:
        raise ValueError("R^2 is undefined when y_true is constant.")
    return float(1 - np.sum((t - p) ** 2) / ss_tot)
