"""Study statistics against hand computations: means, standard deviations, paired differences,
bootstrap intervals (against scipy's own bootstrap, within Monte Carlo error) and Wilcoxon
p-values (equal to scipy's); rendering writes tables, CSV and PNGs."""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats as scipy_stats

from reid_pbn.evaluation.stats import (
    NOTE_ALL_ZERO,
    NOTE_FEW_SEEDS,
    NOTE_NO_SHARED,
    bootstrap_mean_ci,
    compare_methods,
    paired_difference,
    summarize,
    wilcoxon_test,
)
from reid_pbn.evaluation.study_report import (
    CSV_COLUMNS,
    markdown_table,
    plot_comparison,
    plot_strength,
    write_csv,
)

METHOD = {0: 10.0, 1: 12.0, 2: 11.0, 3: 15.0}
BASELINE = {0: 9.0, 1: 12.5, 2: 10.0, 3: 13.0, 4: 20.0}  # seed 4 has no partner


def test_summary_mean_and_sample_std_by_hand():
    s = summarize(METHOD)
    assert s.seeds == (0, 1, 2, 3) and s.values == (10.0, 12.0, 11.0, 15.0) and s.n == 4
    assert s.mean == pytest.approx(12.0)
    # deviations -2, 0, -1, 3: squares sum to 14, over n - 1 = 3
    assert s.std == pytest.approx(math.sqrt(14 / 3))
    assert s.ci_low < s.mean < s.ci_high


def test_summary_of_one_value_has_no_spread():
    s = summarize({7: 3.0})
    assert s.mean == 3.0 and math.isnan(s.std) and math.isnan(s.ci_low)


def test_paired_difference_uses_shared_seeds_only():
    d = paired_difference(METHOD, BASELINE)
    assert d.seeds == (0, 1, 2, 3)
    assert d.diffs == (1.0, -0.5, 1.0, 2.0)
    assert d.mean_diff == pytest.approx(0.875)
    assert d.p_value == scipy_stats.wilcoxon([1.0, -0.5, 1.0, 2.0]).pvalue
    assert d.note == ""


def test_wilcoxon_exact_p_by_hand_and_equal_to_scipy():
    diffs = np.arange(1.0, 11.0)  # all ten positive: only the all-plus sign pattern is as extreme
    p, note = wilcoxon_test(diffs)
    assert p == pytest.approx(2 / 2**10) and note == ""
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.normal(0.3, 1.0, size=10)
        assert wilcoxon_test(x)[0] == scipy_stats.wilcoxon(x).pvalue


def test_degenerate_differences_say_so():
    p, note = wilcoxon_test([0.0, 0.0, 0.0])
    assert p == 1.0 and note == NOTE_ALL_ZERO
    p, note = wilcoxon_test([0.4])
    assert math.isnan(p) and note == NOTE_FEW_SEEDS
    one = paired_difference({0: 2.0}, {0: 1.5})
    assert one.mean_diff == 0.5 and math.isnan(one.ci_low) and math.isnan(one.p_value)
    assert one.note == NOTE_FEW_SEEDS
    none = paired_difference({0: 2.0}, {1: 1.5})
    assert none.n == 0 and math.isnan(none.mean_diff) and none.note == NOTE_NO_SHARED
    zero = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert zero.mean_diff == 0.0 and zero.p_value == 1.0 and zero.note == NOTE_ALL_ZERO
    assert zero.ci_low == zero.ci_high == 0.0


def test_bootstrap_of_two_values_by_hand():
    # Resampled means of (0, 1) are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and
    # 97.5 % quantiles are 0 and 1.
    assert bootstrap_mean_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_interval_matches_scipy_within_monte_carlo_error():
    x = np.array([1.2, -0.4, 0.8, 2.1, 0.3, 1.7, -0.9, 0.6, 1.1, 0.2])
    lo, hi = bootstrap_mean_ci(x, n_resamples=20_000, seed=1)
    ref = scipy_stats.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile",
                                confidence_level=0.95, random_state=np.random.default_rng(99))
    width = hi - lo
    # The standard error of a 2.5 % bootstrap quantile with 20k resamples is about 0.5 % of
    # the interval's width; 4 % is several standard errors of the difference.
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.04 * width)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.04 * width)
    # And close to the normal approximation mean +- 1.96 * sd_pop / sqrt(n).
    half = 1.96 * x.std(ddof=0) / math.sqrt(x.size)
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), abs=0.15 * width)
    # Seeded: the same seed gives the same interval.
    assert bootstrap_mean_ci(x, n_resamples=20_000, seed=1) == (lo, hi)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.0)


def _comparison(target="SyntheticB"):
    values = {"BN": BASELINE, "PBN": METHOD, "untrained": {0: 1.0, 1: 1.5}}
    return compare_methods(values, "BN", group="single", target=target, metric="mAP",
                           references=("untrained",))


def test_compare_methods_roles():
    c = _comparison()
    by = {r.method: r for r in c.methods}
    assert by["BN"].vs_baseline is None and not by["BN"].reference
    assert by["untrained"].vs_baseline is None and by["untrained"].reference
    assert by["PBN"].vs_baseline.mean_diff == pytest.approx(0.875)
    assert by["BN"].summary.mean == pytest.approx(np.mean(list(BASELINE.values())))


def test_markdown_and_csv_hold_the_numbers(tmp_path):
    comps = [_comparison("SyntheticB"), _comparison("SyntheticC")]
    md = markdown_table(comps)
    assert md.count("\n") == 1 + 2 * 3  # header, separator, 3 methods x 2 targets
    assert "| SyntheticB | BN (baseline) | 5 | 12.90 ± " in md
    assert "+0.88 [" in md and "reference" in md
    path = write_csv(comps, tmp_path / "r.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 6
    pbn = next(r for r in rows if r["method"] == "PBN" and r["target"] == "SyntheticC")
    assert float(pbn["mean_diff"]) == pytest.approx(0.875) and pbn["n_paired"] == "4"
    assert float(pbn["std"]) == pytest.approx(math.sqrt(14 / 3), rel=1e-5)
    assert pbn["seeds"] == "0 1 2 3" and pbn["role"] == "method"


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and min(im.size) > 100


def test_plots_write_pngs(tmp_path):
    assert _is_png(plot_comparison(_comparison(), tmp_path / "c.png"))
    curves = {m: [(s, summarize({0: v + s, 1: v - s, 2: v})) for s in (0.0, 0.33, 0.67, 1.0)]
              for m, v in (("BN", 50.0), ("PBN", 52.0))}
    assert _is_png(plot_strength(curves, tmp_path / "s.png", title="t", zero_label="A test"))


@pytest.mark.parametrize("module", ["stats.py", "study_report.py"])
def test_statistics_stay_on_the_evaluation_floor(module):
    src = Path(__file__).resolve().parents[2] / "reid_pbn" / "evaluation" / module
    for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            name = "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            name = ",".join(a.name for a in node.names)
        else:
            continue
        for banned in ("engine", "data", "modeling", "torch"):
            assert banned not in name.split(".") and not name.startswith(f"reid_pbn.{banned}"), \
                f"{module} imports {name}"
