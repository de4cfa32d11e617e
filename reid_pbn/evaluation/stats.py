"""Paired statistics of a multi-seed study: does a method beat the baseline, by how much, and
with what confidence.

In a study every method is trained once per seed, and a method and the baseline trained with the
same seed share initialization (where the architectures match), sampling order and augmentation
draws. The per-seed *difference* to the baseline then cancels what the seed alone does, so it
is far less noisy than comparing two means. This module computes, for values keyed by seed:

* :func:`summarize` - mean, standard deviation (ddof=1) and a bootstrap confidence interval of
  the mean over seeds;
* :func:`paired_difference` - the mean paired difference on the seeds both sides share, its
  bootstrap confidence interval (percentile method) and the two-sided Wilcoxon signed-rank
  p-value (``scipy.stats.wilcoxon``);
* :func:`compare_methods` - both for every method of one (group, target, metric).

The functions are unit-agnostic (the study passes percent) and deterministic: the bootstrap
draws from a seeded ``numpy.random.Generator``. Rendering (Markdown, CSV, plots) lives in
:mod:`reid_pbn.evaluation.study_report`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "Comparison",
    "MethodResult",
    "PairedDifference",
    "SeedSummary",
    "bootstrap_mean_ci",
    "compare_methods",
    "paired_difference",
    "summarize",
    "wilcoxon_test",
]

#: Bootstrap resamples; the Monte Carlo error of a 95 % percentile bound is then well below the
#: spread of the values (about 1 % of the interval's width).
DEFAULT_RESAMPLES = 10_000
#: Confidence level of the intervals.
DEFAULT_CONFIDENCE = 0.95

NOTE_FEW_SEEDS = "fewer than 2 paired seeds: no interval, no test"
NOTE_ALL_ZERO = "all paired differences are zero"
NOTE_NO_SHARED = "no seed shared with the baseline"


@dataclass(frozen=True)
class SeedSummary:
    """One metric of one method over seeds.

    Attributes:
        seeds: the seeds, ascending.
        values: the values in the order of ``seeds``.
        mean: mean over seeds (nan without values).
        std: sample standard deviation (ddof=1; nan with fewer than 2 values).
        ci_low: lower bound of the bootstrap confidence interval of the mean (nan below 2).
        ci_high: upper bound of that interval.
        confidence: the interval's confidence level.
    """

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.seeds)


@dataclass(frozen=True)
class PairedDifference:
    """Method minus baseline on the seeds both have.

    Attributes:
        seeds: the shared seeds, ascending.
        diffs: method value minus baseline value per shared seed.
        mean_diff: mean of ``diffs`` (nan without shared seeds).
        ci_low: lower bound of the bootstrap confidence interval of the mean difference
            (percentile method; nan with fewer than 2 shared seeds).
        ci_high: upper bound of that interval.
        confidence: the interval's confidence level.
        p_value: two-sided Wilcoxon signed-rank p-value (nan with fewer than 2 shared seeds,
            1.0 when every difference is zero).
        note: why the interval or the p-value is degenerate, else "".
    """

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    note: str

    @property
    def n(self) -> int:
        """Number of shared seeds."""
        return len(self.seeds)


@dataclass(frozen=True)
class MethodResult:
    """A method's summary and, unless it is the baseline or a reference, its paired difference.

    Attributes:
        method: the method's name.
        summary: its values over seeds.
        vs_baseline: method minus baseline, or None for the baseline and reference methods.
        reference: the method is a reference row (e.g. an untrained network), not a contender.
    """

    method: str
    summary: SeedSummary
    vs_baseline: PairedDifference | None
    reference: bool = False


@dataclass(frozen=True)
class Comparison:
    """Every method of one (group, target, metric) against the group's baseline.

    Attributes:
        group: the study group (a set of sources and methods).
        target: the evaluated data set.
        metric: the metric's name (e.g. ``"mAP"``).
        baseline: the baseline method's name.
        methods: one result per method, in the study's order.
    """

    group: str
    target: str
    metric: str
    baseline: str
    methods: tuple[MethodResult, ...]


def summarize(
    values: Mapping[int, float],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> SeedSummary:
    """Mean, standard deviation and bootstrap interval of the mean of per-seed values.

    Args:
        values: ``{seed: value}``.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the interval, in (0, 1).
        seed: seed of the bootstrap's random generator.

    Returns:
        The summary; ``std`` and the interval are nan with fewer than 2 values.
    """
    seeds = tuple(sorted(int(s) for s in values))
    x = np.array([float(values[s]) for s in seeds], dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=1)) if x.size >= 2 else math.nan
    lo, hi = (bootstrap_mean_ci(x, n_resamples=n_resamples, confidence=confidence, seed=seed)
              if x.size >= 2 else (math.nan, math.nan))
    return SeedSummary(seeds, tuple(x.tolist()), mean, std, lo, hi, confidence)


def paired_difference(
    method: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """Method minus baseline, paired by seed: mean, bootstrap interval and Wilcoxon p-value.

    Only seeds present on both sides count; a seed that one side lacks carries no pairing.

    Args:
        method: ``{seed: value}`` of the method.
        baseline: ``{seed: value}`` of the baseline.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the interval, in (0, 1).
        seed: seed of the bootstrap's random generator.

    Returns:
        The paired difference; see :class:`PairedDifference` for the degenerate cases.
    """
    shared = tuple(sorted(set(int(s) for s in method) & set(int(s) for s in baseline)))
    d = np.array([float(method[s]) - float(baseline[s]) for s in shared], dtype=np.float64)
    if d.size == 0:
        return PairedDifference((), (), math.nan, math.nan, math.nan, confidence, math.nan,
                                NOTE_NO_SHARED)
    p, note = wilcoxon_test(d)
    lo, hi = (bootstrap_mean_ci(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
              if d.size >= 2 else (math.nan, math.nan))
    return PairedDifference(shared, tuple(d.tolist()), float(d.mean()), lo, hi, confidence, p,
                            note)


def bootstrap_mean_ci(
    x: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Draws ``n_resamples`` samples of ``len(x)`` values with replacement, takes each one's mean,
    and returns the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those
    means.

    Args:
        x: the values (at least one).
        n_resamples: number of bootstrap samples.
        confidence: confidence level, in (0, 1).
        seed: seed of the ``numpy.random.Generator``; the same seed gives the same interval.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: no values, a non-positive ``n_resamples`` or a confidence outside (0, 1).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    # Chunks bound the index matrix's memory when there are many values.
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def wilcoxon_test(diffs: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank test of paired differences against zero.

    ``scipy.stats.wilcoxon`` with its defaults (zero differences dropped, exact distribution
    for small samples without ties). Two cases scipy does not answer cleanly are decided here
    and explained in the note.

    Args:
        diffs: the paired differences.

    Returns:
        ``(p_value, note)``: nan and a note with fewer than 2 differences; 1.0 and a note when
        all differences are zero; else scipy's p-value and "".
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size < 2:
        return math.nan, NOTE_FEW_SEEDS
    if np.all(d == 0):
        return 1.0, NOTE_ALL_ZERO
    with warnings.catch_warnings():
        # scipy warns when zeros or ties force the normal approximation; the p-value stands.
        warnings.simplefilter("ignore", category=UserWarning)
        return float(_scipy_stats.wilcoxon(d).pvalue), ""


def compare_methods(
    values: Mapping[str, Mapping[int, float]],
    baseline: str,
    *,
    group: str,
    target: str,
    metric: str,
    references: Sequence[str] = (),
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    """Summaries of every method and paired differences to the baseline.

    Args:
        values: ``{method: {seed: value}}`` in display order.
        baseline: the baseline's name (a key of ``values``; when it has no values every
            difference has the "no seed shared" note).
        group: the study group, kept in the result.
        target: the data set, kept in the result.
        metric: the metric's name, kept in the result.
        references: methods shown for reference only (no paired difference).
        n_resamples: bootstrap resamples.
        confidence: confidence level of the intervals.
        seed: seed of the bootstrap's random generator (the same for every method, so the
            report is reproducible).

    Returns:
        The comparison.
    """
    base = values.get(baseline, {})
    results = []
    for name, per_seed in values.items():
        summary = summarize(per_seed, n_resamples=n_resamples, confidence=confidence, seed=seed)
        is_ref = name in references
        diff = None if name == baseline or is_ref else paired_difference(
            per_seed, base, n_resamples=n_resamples, confidence=confidence, seed=seed)
        results.append(MethodResult(name, summary, diff, reference=is_ref))
    return Comparison(group, target, metric, baseline, tuple(results))
