"""stats: t-tests, confidence intervals, Holm and the seeds-needed power search against published values."""
from __future__ import annotations

import math
import statistics

import pytest

from ablations.reporting import stats

# Student's sleep data (Cushny & Peebles, via Student 1908; R's `sleep`): extra hours of sleep under two drugs,
# the same ten patients. R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9,
# p-value = 0.002833, 95 % CI [-2.4598858, -0.7001142]; Welch (unpaired): t = -1.8608, df = 17.776,
# p-value = 0.07939, 95 % CI [-3.3654832, 0.2054832].
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_on_the_sleep_data_matches_r():
    t = stats.compare(DRUG1, DRUG2, range(10), range(10))
    assert t.test == stats.PAIRED and t.n == 10
    assert t.delta == pytest.approx(-1.58)
    assert t.p == pytest.approx(0.002833, abs=1e-6)
    assert (t.ci_low, t.ci_high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    assert t.delta / (t.sd / math.sqrt(10)) == pytest.approx(-4.0621, abs=1e-4)


def test_welch_when_the_seeds_differ_matches_r():
    for seeds in ((range(10), None), (range(10), range(1, 11))):
        t = stats.compare(DRUG1, DRUG2, *seeds)
        assert t.test == stats.WELCH
        assert t.p == pytest.approx(0.07939, abs=1e-5)
        assert (t.ci_low, t.ci_high) == pytest.approx((-3.3654832, 0.2054832), abs=1e-6)


def test_too_few_seeds_and_constant_differences():
    one = stats.compare([1.0], [2.0], [0], [0])
    assert one.test == stats.NONE and math.isnan(one.p) and one.delta == -1.0
    same = stats.compare([1.0, 2.0], [1.0, 2.0], [0, 1], [0, 1])
    assert same.p == 1.0 and (same.ci_low, same.ci_high) == (0.0, 0.0)
    shifted = stats.compare([2.0, 3.0], [1.0, 2.0], [0, 1], [0, 1])  # every seed +1: no spread, t infinite
    assert shifted.p == 0.0 and shifted.delta == 1.0


def test_holm_matches_r_p_adjust():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # R: p.adjust(c(0.2, 0.6, 0.9), "holm") -> 0.6 1.0 1.0 (capped at 1, monotone)
    assert stats.holm([0.2, 0.6, 0.9]) == pytest.approx([0.6, 1.0, 1.0])
    out = stats.holm([0.01, math.nan, 0.02])  # NaN (no test) is neither adjusted nor counted in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_seeds_needed_matches_the_textbook_power_tables():
    # Cohen (1988) / G*Power: d = 0.5, alpha 0.05 two-sided, power 0.8 -> 34 pairs (paired), 64 per group (two groups)
    assert stats.seeds_needed(0.5, 1.0, paired=True) == 34
    assert stats.seeds_needed(0.5, math.sqrt(2.0), paired=False) == 64  # sd of a one-seed difference: sqrt(2) sigma
    assert stats.power(34, 0.5, 1.0) >= 0.8 > stats.power(33, 0.5, 1.0)
    assert stats.seeds_needed(0.8, 1.0) == 15  # G*Power, d = 0.8, paired
    assert stats.seeds_needed(0.0, 1.0) is None and stats.seeds_needed(1e-4, 1.0) is None  # beyond MAX_SEEDS
    assert stats.seeds_needed(1.0, 0.0) == 2
    assert not any(math.isnan(stats.power(n, 0.5, 1.0)) for n in (500, 5000))  # scipy's nct tail NaNs are handled


def test_holm_family_and_verdicts():
    better = stats.compare([1.0, 1.1, 0.9, 1.0], [2.0, 2.2, 1.9, 2.1], range(4), range(4))
    noise = stats.compare([2.0, 1.0, 3.0, 2.0], [2.1, 2.9, 1.2, 2.0], range(4), range(4))
    worse = stats.compare([3.0, 3.2, 2.9, 3.1], [2.0, 2.2, 1.9, 2.1], range(4), range(4))
    tests = stats.with_holm([better, noise, worse], min_effect=0.3)
    assert [stats.verdict(t) for t in tests] == ["better", "n.s.", "worse"]
    assert all(t.p_holm >= t.p for t in tests) and tests[1].effect == 0.3
    assert tests[0].seeds_needed is not None and tests[1].seeds_needed > tests[0].seeds_needed
    own = stats.with_holm([noise])[0]  # without min_effect: the arm's own |Δ|
    assert own.effect == pytest.approx(abs(noise.delta))


def test_mean_ci():
    low, high = stats.mean_ci(DRUG2)  # mean 2.33 ± t(0.975, 9) = 2.262157 (printed tables) x s / sqrt(10)
    half = 2.262157 * statistics.stdev(DRUG2) / math.sqrt(10)
    assert (low, high) == pytest.approx((2.33 - half, 2.33 + half), abs=1e-5)
    assert all(math.isnan(v) for v in stats.mean_ci([1.0]))
