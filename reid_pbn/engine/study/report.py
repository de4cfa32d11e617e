"""A study's rendered results: ``results.md``, ``results.csv`` and the plots, from its records.

Statistics come from :mod:`reid_pbn.evaluation.stats` and the drawing from
:mod:`reid_pbn.evaluation.study_report`; this module only maps a study's records onto them.
Values are shown in percent (records hold fractions).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from ...evaluation.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Comparison, compare_methods
from ...evaluation.study_report import markdown_table, plot_comparison, plot_strength, write_csv
from .cell import METRICS
from .config import GroupSpec, Study
from .store import record_key

__all__ = ["comparisons", "current_records", "render_study"]

logger = logging.getLogger("reid_pbn")

PLOT_METRIC = "mAP"


def current_records(study: Study, records: Sequence[dict]) -> list[dict]:
    """The records of this study's cells made with their current config, in run order.

    Args:
        study: the study.
        records: records read from ``cells.jsonl``.

    Returns:
        One record per cell that has one with a matching config hash.
    """
    by_key = {record_key(r): r for r in records}
    out = []
    for cell in study.cells:
        r = by_key.get(cell.key)
        if r is not None and r.get("config_hash") == cell.config_hash:
            out.append(r)
    return out


def comparisons(
    study: Study,
    records: Sequence[dict],
    metrics: Sequence[str] = METRICS,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[Comparison]:
    """Statistics of every (group, target, metric), values in percent.

    Args:
        study: the study.
        records: its current records (:func:`current_records`).
        metrics: metrics to compare.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the intervals.

    Returns:
        The comparisons, by group, then metric, then target.
    """
    out = []
    for group in study.groups:
        recs = [r for r in records if r["group"] == group.name]
        refs = [m.label for m in group.methods if m.definition.reference]
        for metric in metrics:
            for target in group.targets:
                values = {m.label: {} for m in group.methods}
                for r in recs:
                    v = r.get("targets", {}).get(target, {}).get(metric)
                    if r["method"] in values and v is not None:
                        values[r["method"]][int(r["seed"])] = 100.0 * float(v)
                out.append(compare_methods(values, group.baseline, group=group.name,
                                           target=target, metric=metric, references=refs,
                                           n_resamples=n_resamples, confidence=confidence))
    return out


def render_study(
    study: Study,
    records: Sequence[dict],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``plots/*.png`` into the study folder.

    Args:
        study: the study.
        records: records read from ``cells.jsonl`` (those of other configs are ignored).
        n_resamples: bootstrap resamples.
        confidence: confidence level of the intervals.

    Returns:
        ``{"markdown": path, "csv": path}`` plus ``"plot:<group>/<target>"`` and
        ``"strength:<group>/<family>"`` entries.
    """
    out = Path(study.output_dir)
    plots = out / "plots"
    recs = current_records(study, records)
    if len(recs) < len(records):
        logger.warning("%d record(s) in cells.jsonl belong to other cells or configs; not shown",
                       len(records) - len(recs))
    comps = comparisons(study, recs, n_resamples=n_resamples, confidence=confidence)
    files: dict[str, Path] = {"csv": write_csv(comps, out / "results.csv")}
    md = [_intro(study, recs, n_resamples, confidence)]
    for group in study.groups:
        md += _group_section(study, group, recs, comps, plots, files)
    md += ["", "## Cost", "", _cost_table(study, recs), ""]
    files["markdown"] = out / "results.md"
    files["markdown"].write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    logger.info("Results of %d cells written to %s", len(recs), out)
    return files


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)


def _family(target: str) -> tuple[str, float] | None:
    base, at, value = target.partition("@")
    if not at:
        return None
    try:
        return base, float(value)
    except ValueError:
        return None


def _group_section(study: Study, group: GroupSpec, recs: Sequence[dict],
                   comps: Sequence[Comparison], plots: Path, files: dict) -> list[str]:
    """The Markdown lines of one group (tables per metric, plots); adds the plots to ``files``."""
    out = Path(study.output_dir)
    done = sum(1 for r in recs if r["group"] == group.name)
    total = sum(1 for c in study.cells if c.group.name == group.name)
    md = ["", f"## Group `{group.name}`: trained on {' + '.join(group.sources)} "
          f"(baseline {group.baseline})", "",
          f"Methods: {', '.join(m.label for m in group.methods)}. Cells recorded: "
          f"{done} of {total}."]
    for metric in METRICS:
        table = [c for c in comps if c.group == group.name and c.metric == metric]
        md += ["", f"### {metric}", "", markdown_table(table)]
    strength = _strength_plots(study, group, list(comps), plots)
    if strength:
        md += ["", f"### {PLOT_METRIC} against shift strength", ""]
    for family, path in strength.items():
        files[f"strength:{group.name}/{family}"] = path
        md += [f"![{family}: {PLOT_METRIC} vs strength]({path.relative_to(out)})", ""]
    md += ["", f"### {PLOT_METRIC} per seed, per target", ""]
    for c in comps:
        if c.group == group.name and c.metric == PLOT_METRIC and any(
                r.summary.n for r in c.methods):
            path = plot_comparison(c, plots / f"{_safe(group.name)}_{_safe(c.target)}.png")
            files[f"plot:{group.name}/{c.target}"] = path
            md += [f"![{c.target}]({path.relative_to(out)})", ""]
    return md


def _strength_plots(study: Study, group: GroupSpec, comps: list[Comparison], plots: Path) -> dict:
    """One mAP-vs-strength plot per shift family of the group."""
    by_target = {c.target: c for c in comps
                 if c.group == group.name and c.metric == PLOT_METRIC}
    families: dict[str, list[tuple[float, str]]] = {}
    for t in group.targets:
        fam = _family(t)
        if fam is not None:
            families.setdefault(fam[0], []).append((fam[1], t))
    refs = [m.label for m in group.methods if m.definition.reference]
    files = {}
    for family, points in families.items():
        if study.strength_zero in by_target and all(s != 0.0 for s, _ in points):
            points = [(0.0, study.strength_zero), *points]
        curves = {}
        for i, m in enumerate(group.methods):
            pts = [(s, by_target[t].methods[i].summary) for s, t in points]
            if any(p.n for _, p in pts):
                curves[m.label] = [(s, p) for s, p in pts if p.n]
        title = f"{family} - group {group.name}: {PLOT_METRIC} vs shift strength"
        zero = (f"{study.strength_zero} test split" if study.strength_zero in by_target
                else None)
        files[family] = plot_strength(curves, plots / f"{_safe(group.name)}_strength_"
                                      f"{_safe(family)}.png", title=title, metric=PLOT_METRIC,
                                      zero_label=zero, references=refs)
    return files


def _cost_table(study: Study, records: Sequence[dict]) -> str:
    lines = ["| group | method | cells | wall time per cell (s) | training (s) | evaluation (s) |",
             "|---|---|--:|--:|--:|--:|"]
    for group in study.groups:
        for m in group.methods:
            recs = [r for r in records if r["group"] == group.name and r["method"] == m.label]
            if not recs:
                continue

            def mean(key: str, rs: list = recs) -> str:
                vals = [float(r[key]) for r in rs if r.get(key) is not None]
                return f"{sum(vals) / len(vals):.1f}" if vals else "n/a"

            lines.append(f"| {group.name} | {m.label} | {len(recs)} | {mean('wall_time_s')} | "
                         f"{mean('train_s')} | {mean('eval_s')} |")
    return "\n".join(lines)


def _intro(study: Study, records: Sequence[dict], n_resamples: int, confidence: float) -> str:
    pct = f"{100 * confidence:g} %"
    seeds = ", ".join(str(s) for s in study.seeds)
    hosts = sorted({str(r.get("host")) for r in records})
    threads = sorted({int(r["num_threads"]) for r in records if r.get("num_threads")})
    return "\n".join([
        f"# Study `{study.name}`: results",
        "",
        f"Rendered by `tools/dg_study.py` from `cells.jsonl`: **{len(records)} of "
        f"{len(study.cells)} cells** recorded (seeds {seeds}). Study config: "
        f"`{study.path}`. Hosts: {', '.join(hosts) or 'n/a'}; torch threads per cell: "
        f"{', '.join(map(str, threads)) or 'n/a'}.",
        "",
        "How to read the tables: every number is a percentage. *mean ± std* is over seeds "
        f"(sample standard deviation); *CI of mean* is a {pct} percentile bootstrap interval "
        f"({n_resamples:,} resamples). *Δ vs baseline* is the mean, over the seeds both share, "
        "of (method − baseline) trained with the same seed (same initialization where the "
        "architectures match, same sampling order and augmentation draws), with its "
        f"{pct} bootstrap interval; *p* is the two-sided Wilcoxon signed-rank test of those "
        f"paired differences (bold below {1 - confidence:g}). An interval that contains 0 "
        "means no significant difference at that level. With n paired seeds the smallest "
        "possible p is 2 / 2^n (0.002 for 10 seeds; with 5 or fewer, p cannot fall below 0.05). "
        "Reference rows (*untrained*: the network at initialization, not trained) are not "
        "compared.",
    ])
