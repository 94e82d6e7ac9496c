"""Statistics over seeds (scipy): summaries, paired tests, Holm-Bonferroni.

Runs with the same seed share their partition, initial model and client sampling
across strategies, so two strategies are compared seed by seed (paired), not as two
independent samples.

- A summary's interval is a bootstrap percentile interval of the mean (it lies within
  the observed values, so an accuracy interval never leaves [0, 1]); with fewer than
  ``BOOTSTRAP_MIN`` seeds there is none and reports show the per-seed values.
- A paired comparison gives the mean difference with its Student-t interval, the
  paired t-test and, from ``WILCOXON_MIN`` pairs on, the Wilcoxon signed-rank test.
  Below that an exact two-sided Wilcoxon p-value cannot go under 0.05 (its smallest
  value is 2 / 2**n: 0.0625 for five pairs), so it is not reported.
- p-values of the comparisons within one block are corrected together (Holm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
BOOTSTRAP_MIN = 5
WILCOXON_MIN = 6
RESAMPLES = 9999


@dataclass
class Summary:
    """Mean, sample std (ddof=1; 0 for one value), the values, and an interval."""

    n: int
    mean: float
    std: float
    values: tuple[float, ...]
    ci_low: float | None = None  # bootstrap percentile interval of the mean (n >= 5)
    ci_high: float | None = None


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def bootstrap_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded: the same values give the same
    interval); a degenerate sample gives its one value twice."""
    xs = np.asarray(values, dtype=np.float64)
    if np.ptp(xs) == 0.0:
        return float(xs[0]), float(xs[0])
    res = sps.bootstrap(
        (xs,),
        np.mean,
        confidence_level=level,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(values: Sequence[float | None], level: float = LEVEL) -> Summary | None:
    """Summary of the finite ``values`` (None when there are none)."""
    xs = _finite(values)
    if not xs:
        return None
    arr = np.asarray(xs)
    std = float(arr.std(ddof=1)) if len(xs) > 1 else 0.0
    out = Summary(len(xs), float(arr.mean()), std, tuple(xs))
    if len(xs) >= BOOTSTRAP_MIN:
        out.ci_low, out.ci_high = bootstrap_interval(xs, level)
    return out


@dataclass
class Paired:
    """``a - b`` over the seeds both have: effect size and tests (two-sided)."""

    n: int
    diff: float  # mean paired difference
    ci_low: float  # Student-t interval of the mean difference
    ci_high: float
    t: float
    p_t: float  # paired t-test
    p_wilcoxon: float | None  # Wilcoxon signed-rank (n >= WILCOXON_MIN)


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Paired | None:
    """Paired comparison of ``a[i]`` with ``b[i]``; None with fewer than 2 pairs.

    When every difference is the same the t statistic is infinite (or 0/0): the
    p-value is then 0 for a nonzero difference and 1 for none.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    if n < 2:
        return None
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        t, p = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
        low = high = mean
    else:
        res = sps.ttest_rel(a, b)
        t, p = float(res.statistic), float(res.pvalue)
        half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    p_w = None
    if n >= WILCOXON_MIN:
        p_w = 1.0 if not np.any(d) else float(sps.wilcoxon(d).pvalue)
    return Paired(n, mean, low, high, t, p, p_w)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None entries are left out of the family).

    Sorted ascending, ``p_(j)`` becomes ``max over i <= j of min(1, (m - i + 1) p_(i))``
    with ``m`` the number of tests: rejecting where the adjusted p is below alpha
    controls the family-wise error rate at alpha.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i]), 1):  # type: ignore[arg-type]
        running = max(running, min(1.0, (m - rank + 1) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out
