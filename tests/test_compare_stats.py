"""Statistics of the comparison against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from fedlearn.compare.stats import bootstrap_interval, holm, paired, summarize

# Student's t with 2 degrees of freedom in closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2)),
# so the two-sided p is 1 - |t| / sqrt(2 + t^2) and the 97.5% quantile is
# (2p - 1) / sqrt(2 p (1 - p)) at p = 0.975.
T2_975 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)


def test_summary_by_hand() -> None:
    s = summarize([0.80, 0.82, 0.84, None, float("nan")])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.82), pytest.approx(0.02))
    assert s.values == (0.80, 0.82, 0.84)
    assert s.ci_low is None and s.ci_high is None  # 3 seeds: per-seed values, no interval
    one = summarize([0.5])
    assert one.std == 0.0 and one.ci_low is None
    assert summarize([None]) is None


def test_paired_t_by_hand() -> None:
    a, b = [0.80, 0.82, 0.84], [0.70, 0.74, 0.72]
    p = paired(a, b)
    # d = 0.10, 0.08, 0.12: mean 0.10, sd 0.02, t = 0.10 / (0.02 / sqrt 3) = 5 sqrt 3.
    t = 5 * math.sqrt(3)
    assert (p.n, p.diff, p.t) == (3, pytest.approx(0.10), pytest.approx(t))
    assert p.p_t == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # 0.01307
    half = T2_975 * 0.02 / math.sqrt(3)
    assert (p.ci_low, p.ci_high) == (pytest.approx(0.10 - half), pytest.approx(0.10 + half))
    assert p.p_wilcoxon is None  # 3 pairs: no Wilcoxon
    assert paired([0.5], [0.4]) is None
    # Identical differences: no spread, the t statistic is infinite or undefined.
    assert paired([0.5, 0.6], [0.4, 0.5]).p_t == 0.0
    assert paired([0.5, 0.6], [0.5, 0.6]).p_t == 1.0


def test_wilcoxon_from_six_pairs_by_hand() -> None:
    base = [0.5] * 6
    # All six differences positive: exact two-sided p = 2 / 2^6.
    up = paired([0.51, 0.52, 0.53, 0.54, 0.55, 0.56], base)
    assert up.p_wilcoxon == pytest.approx(2 / 64)
    # The smallest difference negative: W- = 1, P(W <= 1) = 2 / 64, two-sided 4 / 64.
    mixed = paired([0.49, 0.52, 0.53, 0.54, 0.55, 0.56], base)
    assert mixed.p_wilcoxon == pytest.approx(4 / 64)
    assert paired([0.51, 0.52, 0.53, 0.54, 0.55], [0.5] * 5).p_wilcoxon is None
    d = np.array([0.49, 0.52, 0.53, 0.54, 0.55, 0.56]) - 0.5
    assert mixed.p_t == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04 (m = 3): 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 0.04).
    assert holm([0.01, 0.04, 0.03, None]) == [
        pytest.approx(0.03),
        pytest.approx(0.06),
        pytest.approx(0.06),
        None,
    ]
    assert holm([0.6, 0.5]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_bootstrap_interval_stays_within_zero_one() -> None:
    accs = [0.99, 1.0, 1.0, 0.97, 1.0]
    s = summarize(accs)
    # A Student-t interval here would end above 1; the percentile bootstrap cannot.
    t_high = s.mean + sps.t.ppf(0.975, 4) * s.std / math.sqrt(5)
    assert t_high > 1.0
    assert min(accs) <= s.ci_low <= s.mean <= s.ci_high <= 1.0
    assert bootstrap_interval(accs) == (s.ci_low, s.ci_high)  # seeded: reproducible
    assert bootstrap_interval([0.4] * 6) == (0.4, 0.4)
