"""Figures shared by the chapters. Every function draws on an Axes and returns it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: The stages of the closed loop of chapter 2, in order.
LOOP_STAGES = (
    "Data\n(logs, orders)",
    "Training\n(model fit)",
    "Evaluation\n(offline metrics)",
    "Deployment\n(serving)",
    "User feedback\n(clicks, purchases,\nreturns, churn)",
)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_closed_loop(stages: tuple[str, ...] = LOOP_STAGES, ax: Axes | None = None) -> Axes:
    """Draw the data → training → evaluation → deployment → feedback loop as a cycle."""
    if len(stages) < 2:
        raise ValueError(f"a loop needs at least 2 stages, got {len(stages)}.")
    ax = _axes(ax, (6.5, 5.5))
    n = len(stages)
    angles = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    xy = np.c_[np.cos(angles), np.sin(angles)] * 1.0
    colours = plt.cm.tab10(np.arange(n))
    for (x, y), label, colour in zip(xy, stages, colours, strict=True):
        ax.add_patch(FancyBboxPatch((x - 0.36, y - 0.17), 0.72, 0.34,
                                    boxstyle="round,pad=0.03", fc=colour, alpha=0.25,
                                    ec=colour, lw=1.5))
        ax.text(x, y, label, ha="center", va="center", fontsize=9)
    for i in range(n):
        a, b = angles[i], angles[(i + 1) % n]
        if b > a:
            b -= 2 * np.pi
        start = np.array([np.cos(a - 0.32), np.sin(a - 0.32)])
        end = np.array([np.cos(b + 0.32), np.sin(b + 0.32)])
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle="arc3,rad=-0.25",
                                     arrowstyle="-|>", mutation_scale=16, lw=1.4, color="0.3"))
    ax.text(0, 0, "retention\n(the goal)", ha="center", va="center", fontsize=11,
            fontweight="bold")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def plot_monthly_activity(monthly: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Stacked bars of new and returning customers per month (from ``monthly_activity``)."""
    missing = {"new_customers", "returning_customers"} - set(monthly.columns)
    if missing:
        raise ValueError(f"monthly is missing column(s) {sorted(missing)}.")
    ax = _axes(ax, (9, 3.8))
    labels = [str(p) for p in monthly.index]
    x = np.arange(len(labels))
    ax.bar(x, monthly["returning_customers"], label="returning customers", color="tab:blue")
    ax.bar(x, monthly["new_customers"], bottom=monthly["returning_customers"],
           label="new customers", color="tab:orange")
    ax.set_xticks(x, labels, rotation=90, fontsize=8)
    ax.set_ylabel("customers who bought")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_cohort_heatmap(matrix: pd.DataFrame, ax: Axes | None = None,
                        annotate: bool = True) -> Axes:
    """Heatmap of a cohort retention matrix (from ``cohort_retention``), age 0 left out."""
    ax = _axes(ax, (10, 7))
    shown = matrix.drop(columns=0, errors="ignore")
    values = shown.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", aspect="auto",
                      vmin=0, vmax=np.nanmax(values) if np.isfinite(values).any() else 1)
    ax.set_xticks(np.arange(shown.shape[1]), shown.columns, fontsize=8)
    ax.set_yticks(np.arange(shown.shape[0]), [str(c) for c in shown.index], fontsize=8)
    ax.set_xlabel("months since first purchase")
    ax.set_ylabel("cohort (month of first purchase)")
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.6 * np.nanmax(values) else "black")
    ax.figure.colorbar(image, ax=ax, label="share of cohort who bought")
    return ax


def plot_retention_curves(matrix: pd.DataFrame, cohorts: list | None = None,
                          average: pd.Series | None = None, ax: Axes | None = None) -> Axes:
    """Retention against months since first purchase, one line per chosen cohort."""
    ax = _axes(ax, (8, 4))
    chosen = list(matrix.index) if cohorts is None else cohorts
    unknown = [c for c in chosen if c not in matrix.index]
    if unknown:
        raise ValueError(f"cohorts {unknown} are not in the matrix.")
    for cohort in chosen:
        row = matrix.loc[cohort].dropna()
        ax.plot(row.index, row.to_numpy(), marker=".", lw=1, alpha=0.8, label=str(cohort))
    if average is not None:
        ax.plot(average.index, average.to_numpy(), color="black", lw=2.5,
                label="all cohorts (weighted)")
    ax.set_xlabel("months since first purchase")
    ax.set_ylabel("share of cohort who bought")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, ncols=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_outlier_rule(values: pd.Series, bounds: tuple[float, float], *, label: str,
                      ax: Axes | None = None) -> Axes:
    """Histogram of positive ``values`` on a log axis, with the kept range shaded."""
    series = pd.Series(values, dtype=float)
    series = series[series > 0]
    if series.empty:
        raise ValueError("plot_outlier_rule needs positive values.")
    ax = _axes(ax, (7, 3.2))
    bins = np.logspace(np.log10(series.min()), np.log10(series.max()), 60)
    ax.hist(series, bins=bins, color="0.6")
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = bounds
    ax.axvspan(max(low, series.min()), high, color="tab:green", alpha=0.15,
               label="kept by the IQR rule")
    ax.axvline(high, color="tab:red", lw=1.5, label=f"upper fence = {high:g}")
    ax.set_xlabel(label)
    ax.set_ylabel("lines")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_layer_stats(results: dict[str, pd.DataFrame], axes=None):
    """Activation and gradient spread per layer, one line per initialisation scheme.

    ``results`` maps a label to a frame from :func:`companion.foundations.nn.signal_propagation`.
    Returns the two Axes (activations, gradients), both on a log scale.
    """
    if not results:
        raise ValueError("results is empty.")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for label, frame in results.items():
        for ax, column in zip(axes, ("activation std", "gradient std"), strict=True):
            ax.plot(frame.index, frame[column], marker=".", label=label)
    for ax, title in zip(axes, ("forward: activations", "backward: gradients"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel("standard deviation")
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    axes[1].legend(fontsize=8, frameon=False)
    return axes


def plot_losses(curves: dict[str, tuple], x: np.ndarray, *, xlabel: str, axes=None):
    """Loss values and gradients against one variable (an error or a margin).

    ``curves`` maps a name to ``(values, gradients)``, arrays as long as ``x``.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for name, (values, grads) in curves.items():
        if len(values) != len(x) or len(grads) != len(x):
            raise ValueError(f"curve {name!r} does not have {len(x)} points.")
        axes[0].plot(x, values, label=name)
        axes[1].plot(x, grads, label=name)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("gradient")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.axhline(0, color="0.8", lw=0.8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=8, frameon=False)
    return axes


def plot_trajectories(loss, paths: dict[str, np.ndarray], *, ax: Axes | None = None,
                      limits: tuple[float, float, float, float] | None = None) -> Axes:
    """Contours of a 2-D ``loss(w0, w1)`` (vectorised) with optimiser paths on top."""
    if not paths:
        raise ValueError("paths is empty.")
    ax = _axes(ax, (6.5, 5))
    points = np.vstack(list(paths.values()))
    if limits is None:
        lo, hi = points.min(axis=0), points.max(axis=0)
        pad = 0.15 * (hi - lo + 1e-9)
        limits = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    g0, g1 = np.meshgrid(np.linspace(limits[0], limits[1], 200),
                         np.linspace(limits[2], limits[3], 200))
    values = loss(g0, g1)
    levels = np.quantile(values, np.linspace(0.002, 0.9, 18))
    ax.contour(g0, g1, values, levels=np.unique(levels), colors="0.75", linewidths=0.8)
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], marker=".", ms=3, lw=1.2, label=name)
    ax.set_xlabel("$w_0$")
    ax.set_ylabel("$w_1$")
    ax.legend(fontsize=8, frameon=False)
    return ax


def plot_training_curves(histories: dict[str, dict], *, metric: str = "loss",
                         ax: Axes | None = None) -> Axes:
    """Training (dashed) and validation (solid) curves of several Keras histories."""
    if not histories:
        raise ValueError("histories is empty.")
    ax = _axes(ax, (7.5, 3.8))
    for i, (name, hist) in enumerate(histories.items()):
        if metric not in hist:
            raise ValueError(f"history {name!r} has no {metric!r}; it has {sorted(hist)}.")
        colour = plt.cm.tab10(i)
        epochs = np.arange(1, len(hist[metric]) + 1)
        ax.plot(epochs, hist[metric], ls="--", color=colour, lw=1)
        if f"val_{metric}" in hist:
            ax.plot(epochs, hist[f"val_{metric}"], color=colour, lw=1.8, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (dashed: train, solid: validation)")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_roc_pr(y_true, scores: dict[str, np.ndarray], axes=None):
    """ROC curves (left) and precision-recall curves (right) of several models."""
    from companion.foundations import metrics

    if not scores:
        raise ValueError("scores is empty.")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    base = float(np.mean(y_true))
    for name, score in scores.items():
        fpr, tpr, _ = metrics.roc_curve(y_true, score)
        axes[0].plot(fpr, tpr, label=f"{name} (AUC {metrics.roc_auc(y_true, score):.3f})")
        prec, rec = metrics.precision_recall_curve(y_true, score)
        axes[1].step(rec, prec, where="post",
                     label=f"{name} (AP {metrics.average_precision(y_true, score):.3f})")
    axes[0].plot([0, 1], [0, 1], ls=":", color="0.5", label="chance")
    axes[1].axhline(base, ls=":", color="0.5", label=f"base rate {base:.3f}")
    axes[0].set(xlabel="false-positive rate", ylabel="true-positive rate (recall)")
    axes[1].set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for ax in axes:
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    return axes


def plot_model_comparison(summaries: dict[str, pd.DataFrame], metric: str = "NDCG",
                          axes=None):
    """Horizontal bars of ``metric`` with 95% intervals, one panel per task.

    ``summaries`` maps a model name to the frame returned by
    :func:`companion.recsys.ranking.summarise`.
    """
    if not summaries:
        raise ValueError("summaries is empty.")
    tasks = list(next(iter(summaries.values())).index)
    if axes is None:
        _, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 0.45 * len(summaries)
                                                        + 1.2), layout="constrained")
    axes = np.atleast_1d(axes)
    names = list(summaries)
    for ax, task in zip(axes, tasks, strict=True):
        mean = np.array([summaries[m].loc[task, metric] for m in names], dtype=float)
        low = np.array([summaries[m].loc[task, f"{metric} low"] for m in names], dtype=float)
        high = np.array([summaries[m].loc[task, f"{metric} high"] for m in names], dtype=float)
        y = np.arange(len(names))
        ax.barh(y, mean, xerr=[mean - low, high - mean], color="tab:blue", alpha=0.8,
                capsize=3)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_title(f"task: {task}", fontsize=10)
        ax.set_xlabel(f"{metric}@10 (95% CI)")
        ax.spines[["top", "right"]].set_visible(False)
    return axes


def plot_rfm_segments(rfm: pd.DataFrame, segments: pd.Series, axes=None):
    """Recency against frequency coloured by segment (left) and segment sizes (right)."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained",
                               gridspec_kw={"width_ratios": [3, 2]})
    order = segments.value_counts().index
    colours = dict(zip(order, plt.get_cmap("tab10").colors, strict=False))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.25, 0.25, len(rfm))
    for name in order:
        mask = (segments == name).to_numpy()
        axes[0].scatter(rfm["recency_days"].to_numpy()[mask],
                        rfm["frequency"].to_numpy()[mask] + jitter[mask],
                        s=4, alpha=0.5, color=colours[name], label=name)
    axes[0].set(xlabel="days since last purchase", ylabel="invoices (jittered)", yscale="log")
    axes[0].legend(fontsize=8, frameon=False, markerscale=3)
    sizes = segments.value_counts()
    axes[1].barh(sizes.index, sizes.to_numpy(), color=[colours[n] for n in sizes.index])
    axes[1].invert_yaxis()
    axes[1].set_xlabel("customers")
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return axes


def plot_gap_distribution(days: pd.Series, quantiles=(0.5, 0.75, 0.9), ax: Axes | None = None
                          ) -> Axes:
    """Histogram of days between purchases (log x axis) with quantile lines."""
    ax = _axes(ax, (7, 3.5))
    values = np.asarray(days, dtype=float)
    values = values[values > 0]
    bins = np.logspace(np.log10(max(values.min(), 0.01)), np.log10(values.max()), 60)
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    for q, style in zip(quantiles, (":", "--", "-."), strict=False):
        v = np.quantile(np.asarray(days, dtype=float), q)
        ax.axvline(v, color="black", ls=style, label=f"{q:.0%} of gaps < {v:.0f} days")
    ax.set(xscale="log", xlabel="days between consecutive invoices", ylabel="gaps")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_calibration(y_true, probas: dict[str, np.ndarray], bins: int = 10,
                     ax: Axes | None = None) -> Axes:
    """Reliability diagram: mean predicted probability against observed rate per bin."""
    ax = _axes(ax, (5, 4.5))
    y = np.asarray(y_true, dtype=float)
    for name, p in probas.items():
        p = np.asarray(p, dtype=float)
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        frame = pd.DataFrame({"bin": idx, "p": p, "y": y}).groupby("bin").mean()
        ax.plot(frame["p"], frame["y"], marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], ls=":", color="0.5", label="perfect calibration")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_gains(y_true, probas: dict[str, np.ndarray], ax: Axes | None = None) -> Axes:
    """Cumulative gains: share of churners reached against share of customers targeted."""
    ax = _axes(ax, (5, 4.5))
    y = np.asarray(y_true, dtype=float)
    share = np.arange(1, len(y) + 1) / len(y)
    for name, p in probas.items():
        order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
        ax.plot(share, np.cumsum(y[order]) / y.sum(), label=name)
    ax.plot(share, np.minimum(share / y.mean(), 1.0), ls="--", color="0.3", label="perfect")
    ax.plot([0, 1], [0, 1], ls=":", color="0.5", label="random")
    ax.set(xlabel="share of customers targeted (highest risk first)",
           ylabel="share of churners reached")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_embedding_map(points: np.ndarray, groups: pd.Series, ax: Axes | None = None) -> Axes:
    """2-D points (for example PCA of customer embeddings) coloured by group."""
    ax = _axes(ax, (6, 5))
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(groups):
        raise ValueError(f"points must have shape ({len(groups)}, 2), got {points.shape}.")
    for name in sorted(pd.unique(groups), key=str):
        mask = (groups == name).to_numpy()
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.5, label=str(name))
    ax.set(xlabel="component 1", ylabel="component 2")
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_scaling(table: pd.DataFrame, x: str, y: str = "validation NDCG@10", *,
                 by: str = "model", logx: bool = True, ax: Axes | None = None) -> Axes:
    """``y`` against ``x`` with one line per value of ``by`` (a scaling study)."""
    ax = _axes(ax, (5.5, 4))
    for name, part in table.groupby(by, sort=False):
        part = part.sort_values(x)
        ax.plot(part[x], part[y], marker="o", label=str(name))
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=y)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_paired_margins(margins: pd.DataFrame, *, target: float | None = None,
                        xlabel: str = "difference in ROC-AUC (95% paired interval)",
                        ax: Axes | None = None) -> Axes:
    """Paired differences with their intervals, one row each, against zero (and a target).

    ``margins`` has columns ``difference``, ``low`` and ``high``; its index labels the rows.
    """
    missing = [c for c in ("difference", "low", "high") if c not in margins.columns]
    if missing:
        raise ValueError(f"margins lacks the column(s) {missing}.")
    ax = _axes(ax, (6.5, 0.5 * len(margins) + 1.2))
    labels = [" | ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in margins.index]
    y = np.arange(len(margins))
    diff = margins["difference"].to_numpy(dtype=float)
    err = [diff - margins["low"].to_numpy(dtype=float),
           margins["high"].to_numpy(dtype=float) - diff]
    ax.errorbar(diff, y, xerr=err, fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0.0, color="0.3", lw=1)
    if target is not None:
        ax.axvline(target, color="tab:red", lw=1, ls="--", label=f"target {target:+.2f}")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


# ------------------------------------------------------------------ the retention simulator


def plot_simulator_fit(real: dict, simulated: list[dict], axes=None):
    """Real against simulated shop, side by side: gaps between purchases, 90-day churn at
    each cutoff, cohort retention, and the other scalar statistics as simulated / real.

    ``real`` and each entry of ``simulated`` are dictionaries as returned by
    :func:`companion.retention.simulation.tables.calibration_runs`.
    """
    if not simulated:
        raise ValueError("simulated is empty.")
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    gaps = pd.DataFrame([s["gaps"] for s in simulated])
    x = np.arange(len(real["gaps"]))
    ax = axes[0]
    ax.bar(x - 0.2, real["gaps"].to_numpy(), width=0.4, label="real", color="0.35")
    ax.bar(x + 0.2, gaps.mean().to_numpy(), width=0.4, yerr=gaps.std(ddof=1).to_numpy(),
           label="simulated", color="tab:orange", capsize=2)
    ax.set_xticks(x, real["gaps"].index, rotation=45)
    ax.set(xlabel="weeks between purchases", ylabel="share of gaps")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    cohorts = pd.DataFrame([s["cohorts"] for s in simulated])
    ax.plot(real["cohorts"].index, real["cohorts"].to_numpy(), "o-", color="0.35", label="real")
    ax.plot(cohorts.columns, cohorts.mean().to_numpy(), "o-", color="tab:orange",
            label="simulated")
    ax.fill_between(cohorts.columns, cohorts.min().to_numpy(), cohorts.max().to_numpy(),
                    color="tab:orange", alpha=0.25)
    ax.set(xlabel="months after the first purchase", ylabel="share buying in that month",
           ylim=(0, None))
    ax.legend(frameon=False, fontsize=8)
    ax = axes[2]
    scalars = [k for k, v in real.items() if not isinstance(v, pd.Series)]
    ratio = pd.DataFrame([{k: s[k] / real[k] for k in scalars} for s in simulated])
    y = np.arange(len(scalars))
    ax.errorbar(ratio.mean().to_numpy(), y, xerr=ratio.std(ddof=1).to_numpy(), fmt="o",
                color="tab:orange", capsize=3)
    ax.axvline(1.0, color="0.35", lw=1)
    ax.set_yticks(y, scalars, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("simulated / real")
    for a in axes:
        a.spines[["top", "right"]].set_visible(False)
    return axes


def plot_policy_curves(table: pd.DataFrame, *, ylabel: str, colors: dict | None = None,
                       ax: Axes | None = None) -> Axes:
    """One line per policy with its 95% band over seeds, from
    :func:`companion.retention.simulation.tables.curve_table`; ``colors`` maps policy names
    to colours (so that a policy keeps its colour across figures)."""
    missing = [c for c in ("policy", "month", "mean", "low", "high") if c not in table]
    if missing:
        raise ValueError(f"table lacks the column(s) {missing}.")
    ax = _axes(ax, (6.5, 4))
    for name, part in table.groupby("policy", sort=False):
        color = None if colors is None else colors.get(name)
        line, = ax.plot(part["month"], part["mean"], marker=".", label=name, color=color)
        ax.fill_between(part["month"], part["low"], part["high"], color=line.get_color(),
                        alpha=0.2)
    ax.set(xlabel="simulated month", ylabel=ylabel)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_metric_link(x: pd.Series, y: pd.DataFrame, *, xlabel: str, ylabel: str,
                     colors: dict | None = None, ax: Axes | None = None) -> Axes:
    """Each policy's offline metric ``x`` against an outcome ``y`` (columns ``mean``, ``low``,
    ``high``), with the outcome's interval; policies are told apart by colour and marker
    in the legend."""
    ax = _axes(ax, (6, 4))
    names = [n for n in x.index if n in y.index]
    if not names:
        raise ValueError("x and y share no policy.")
    markers = "osD^vP*X"
    for k, name in enumerate(names):
        mean = float(y.loc[name, "mean"])
        err = [[mean - float(y.loc[name, "low"])], [float(y.loc[name, "high"]) - mean]]
        ax.errorbar(float(x.loc[name]), mean, yerr=err, fmt=markers[k % len(markers)],
                    capsize=3, label=name,
                    color=None if colors is None else colors.get(name))
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return ax
