"""Rendering of study statistics: Markdown tables, a CSV file and plots.

Inputs are the :class:`~reid_pbn.evaluation.stats.Comparison` objects of
:mod:`reid_pbn.evaluation.stats`; values are shown in the unit they carry (the study passes
percent). Every plot is drawn on matplotlib's Agg canvas (no display needed) and written as PNG.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .stats import Comparison, MethodResult, PairedDifference, SeedSummary

__all__ = [
    "CSV_COLUMNS",
    "format_p",
    "markdown_table",
    "plot_comparison",
    "plot_strength",
    "write_csv",
]

#: Columns of :func:`write_csv`, one row per (group, target, metric, method).
CSV_COLUMNS = (
    "group", "target", "metric", "method", "role", "n", "mean", "std", "ci_low", "ci_high",
    "baseline", "n_paired", "mean_diff", "diff_ci_low", "diff_ci_high", "p_value", "note",
    "seeds",
)


def format_p(p: float) -> str:
    """A p-value for a table: three significant digits, "n/a" for nan."""
    if math.isnan(p):
        return "n/a"
    return f"{p:.3g}"


def markdown_table(comparisons: Sequence[Comparison], decimals: int = 2) -> str:
    """One Markdown table of several comparisons (typically one group and metric, all targets).

    Rows are (target, method); columns: seeds, mean ± std, the interval of the mean, the mean
    paired difference to the baseline with its interval, and the Wilcoxon p-value (bold below
    ``1 - confidence``).

    Args:
        comparisons: the comparisons, in display order.
        decimals: decimals of the values.

    Returns:
        The table, without a trailing newline ("" for no comparisons).
    """
    if not comparisons:
        return ""
    conf = comparisons[0].methods[0].summary.confidence if comparisons[0].methods else 0.95
    pct = f"{100 * conf:g} %"
    head = (f"| target | method | n | mean ± std | {pct} CI of mean | "
            f"Δ vs baseline [{pct} CI] | p (Wilcoxon) |")
    lines = [head, "|---|---|--:|--:|--:|--:|--:|"]
    for c in comparisons:
        for i, r in enumerate(c.methods):
            s = r.summary
            diff, p = _diff_cells(r, decimals)
            name = f"{r.method} (baseline)" if r.method == c.baseline else r.method
            lines.append(
                f"| {c.target if i == 0 else ''} | {name} | {s.n} | {_mean_std(s, decimals)} | "
                f"{_interval(s.ci_low, s.ci_high, decimals)} | {diff} | {p} |"
            )
    return "\n".join(lines)


def write_csv(comparisons: Sequence[Comparison], path: str | os.PathLike) -> Path:
    """Write every (group, target, metric, method) with its statistics as one CSV row.

    Args:
        comparisons: the comparisons.
        path: output file (its folder is created).

    Returns:
        The path. Columns are :data:`CSV_COLUMNS`; nan is written as an empty cell and
        ``seeds`` as space-separated integers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for c in comparisons:
            for r in c.methods:
                s, d = r.summary, r.vs_baseline
                role = ("reference" if r.reference else
                        "baseline" if r.method == c.baseline else "method")
                paired: tuple = ("", "", "", "", "", "") if d is None else (
                    d.n, d.mean_diff, d.ci_low, d.ci_high, d.p_value, d.note)
                row = (c.group, c.target, c.metric, r.method, role, s.n, s.mean, s.std,
                       s.ci_low, s.ci_high, c.baseline, *paired,
                       " ".join(str(x) for x in s.seeds))
                writer.writerow([_csv_value(v) for v in row])
    return path


def plot_comparison(
    comparison: Comparison, path: str | os.PathLike, unit: str = "%", decimals: int = 1
) -> Path:
    """Per-seed values (jittered points) and the mean with its confidence interval per method.

    A dashed line marks the baseline's mean; each method's tick label carries its mean paired
    difference to the baseline, the interval and the Wilcoxon p-value.

    Args:
        comparison: one (group, target, metric).
        path: output PNG path.
        unit: unit of the values, shown on the y axis.
        decimals: decimals in the tick labels.

    Returns:
        The PNG path.
    """
    methods = comparison.methods
    fig = Figure(figsize=(max(4.5, 1.9 * len(methods) + 1.5), 4.6))
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0)  # fixed, so re-rendering gives the same picture
    for i, r in enumerate(methods):
        s = r.summary
        colour = f"C{i % 10}"
        if s.n:
            xs = i + jitter.uniform(-0.18, 0.18, size=s.n)
            ax.scatter(xs, s.values, s=18, alpha=0.55, color=colour, linewidths=0)
        if not math.isnan(s.mean):
            err = None
            if not (math.isnan(s.ci_low) or math.isnan(s.ci_high)):
                err = [[s.mean - s.ci_low], [s.ci_high - s.mean]]
            ax.errorbar([i + 0.3], [s.mean], yerr=err, fmt="D", color=colour, ecolor="black",
                        elinewidth=1.4, capsize=5, markersize=6, markeredgecolor="black")
        if r.method == comparison.baseline and not math.isnan(s.mean):
            ax.axhline(s.mean, color="grey", linestyle="--", linewidth=0.9, zorder=0)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_tick_label(r, comparison.baseline, decimals) for r in methods],
                       fontsize=8)
    ax.set_xlim(-0.6, len(methods) - 0.3)
    ax.set_ylabel(f"{comparison.metric} ({unit})")
    n = max((r.summary.n for r in methods), default=0)
    conf = methods[0].summary.confidence if methods else 0.95
    ax.set_title(f"{comparison.target} - {comparison.group}: {comparison.metric} over {n} seeds\n"
                 f"points: seeds; diamond: mean with {100 * conf:g} % bootstrap CI", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_strength(
    curves: Mapping[str, Sequence[tuple[float, SeedSummary]]],
    path: str | os.PathLike,
    *,
    title: str,
    metric: str = "mAP",
    unit: str = "%",
    zero_label: str | None = None,
    references: Sequence[str] = (),
) -> Path:
    """A metric against shift strength, one line per method (mean with confidence interval).

    Args:
        curves: ``{method: [(strength, summary over seeds), ...]}``.
        path: output PNG path.
        title: figure title.
        metric: the metric's name (y axis).
        unit: unit of the values.
        zero_label: what strength 0 is (named on the x axis), e.g. the source's test split.
        references: methods drawn dashed (reference rows such as an untrained network).

    Returns:
        The PNG path.
    """
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    strengths = sorted({s for pts in curves.values() for s, _ in pts})
    span = (max(strengths) - min(strengths)) if len(strengths) > 1 else 1.0
    k = len(curves)
    for i, (method, pts) in enumerate(curves.items()):
        pts = sorted(pts, key=lambda p: p[0])
        # Small horizontal offsets keep the error bars of the methods apart.
        shift = (i - (k - 1) / 2) * 0.012 * span
        xs = [s + shift for s, _ in pts]
        means = [p.mean for _, p in pts]
        lo = [p.mean - p.ci_low if not math.isnan(p.ci_low) else 0.0 for _, p in pts]
        hi = [p.ci_high - p.mean if not math.isnan(p.ci_high) else 0.0 for _, p in pts]
        ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=4, label=method,
                    color=f"C{i % 10}", linewidth=1.5, markersize=5,
                    linestyle="--" if method in references else "-")
    ax.set_xticks(strengths)
    ax.set_xticklabels([f"{s:g}" for s in strengths])
    xlabel = "shift strength"
    if zero_label:
        xlabel += f" (0 = {zero_label})"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _num(v: float, decimals: int, sign: bool = False) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"


def _mean_std(s: SeedSummary, decimals: int) -> str:
    if s.n == 0:
        return "n/a"
    if math.isnan(s.std):  # one seed: no spread to show
        return _num(s.mean, decimals)
    return f"{_num(s.mean, decimals)} ± {_num(s.std, decimals)}"


def _interval(lo: float, hi: float, decimals: int, sign: bool = False) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    return f"[{_num(lo, decimals, sign)}, {_num(hi, decimals, sign)}]"


def _diff_cells(r: MethodResult, decimals: int) -> tuple[str, str]:
    if r.reference:
        return "reference", ""
    d = r.vs_baseline
    if d is None:
        return "baseline", ""
    if d.n == 0:
        return "n/a", f"n/a ({d.note})"
    text = f"{_num(d.mean_diff, decimals, True)} {_interval(d.ci_low, d.ci_high, decimals, True)}"
    p = format_p(d.p_value)
    if d.note:
        p = f"{p} ({d.note})"
    elif d.p_value < 1.0 - d.confidence:
        p = f"**{p}**"  # bold: significant at the interval's level
    return text, p


def _csv_value(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _tick_label(r: MethodResult, baseline: str, decimals: int) -> str:
    d: PairedDifference | None = r.vs_baseline
    if r.reference:
        return f"{r.method}\n(reference)"
    if d is None:
        return f"{r.method}\n(baseline)" if r.method == baseline else r.method
    return (f"{r.method}\nΔ {_num(d.mean_diff, decimals, True)} "
            f"{_interval(d.ci_low, d.ci_high, decimals, True)}\np = {format_p(d.p_value)}")
