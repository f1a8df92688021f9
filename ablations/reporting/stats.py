"""Is an arm's difference from its baseline more than seed noise? t-tests, Holm, and the seeds needed to tell.

The paper reports single runs (Sec. 6); with a handful of seeds the question is whether a Δ is real. Per arm
against its baseline: a paired t-test on the per-seed differences when both ran the same seeds (a seed fixes
the data split and order for both, so pairing removes that share of the noise), Welch's t-test otherwise;
the 95 % confidence interval of the difference in means from the same t distribution; Holm's step-down
correction over the arms that share one baseline; and, from the observed spread, the number of seeds at
which a two-sided test at the same alpha detects a given Δ with 80 % power (noncentral t). The tests and
intervals are scipy's; only Holm's few lines and the power search are ours.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000  # the power search stops here: "more than 10 000" is answer enough

PAIRED, WELCH, NONE = "paired t", "Welch t", "–"


@dataclass(frozen=True)
class Test:
    """One arm against its baseline on one metric (units of the inputs, e.g. percentage points of error).

    ``p_holm`` is filled by ``holm`` over the arms of one baseline; ``seeds_needed`` counts seeds per arm
    (pairs for the paired test) and is ``None`` when no finite number reaches the power.
    """

    test: str  # PAIRED, WELCH or NONE (fewer than two seeds on a side)
    n: int  # seeds (pairs) of the arm
    n_base: int
    delta: float  # arm mean - baseline mean
    ci_low: float
    ci_high: float
    p: float
    sd: float  # SD of the per-seed differences (paired) or of the difference's two-sample spread (Welch)
    p_holm: float = math.nan
    effect: float = math.nan  # the Δ the power refers to (observed |Δ| unless the user named one)
    seeds_needed: int | None = None

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


def compare(arm: Sequence[float], base: Sequence[float], arm_seeds: Sequence[int] | None = None,
            base_seeds: Sequence[int] | None = None, alpha: float = ALPHA) -> Test:
    """Test ``arm`` against ``base``: paired by seed if both ran the same seeds, else Welch.

    Args:
        arm, base: one value per seed (same order as the seeds).
        arm_seeds, base_seeds: the seeds; ``None`` means "not known to match" (Welch).
        alpha: 1 - the confidence level of the interval.
    """
    a, b = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)
    paired = arm_seeds is not None and base_seeds is not None and list(arm_seeds) == list(base_seeds)
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if paired and len(a) >= 2:
        diff = a - b
        sd = float(diff.std(ddof=1))
        if sd == 0.0:  # every seed moved by the same amount: scipy's t is undefined (0/0) or infinite
            return Test(PAIRED, len(a), len(b), delta, delta, delta, 1.0 if delta == 0 else 0.0, 0.0)
        res = st.ttest_rel(a, b)
        ci = res.confidence_interval(1 - alpha)
        return Test(PAIRED, len(a), len(b), delta, float(ci.low), float(ci.high), float(res.pvalue), sd)
    if len(a) >= 2 and len(b) >= 2:
        sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
        if sd == 0.0:
            return Test(WELCH, len(a), len(b), delta, delta, delta, 1.0 if delta == 0 else 0.0, 0.0)
        res = st.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(1 - alpha)
        return Test(WELCH, len(a), len(b), delta, float(ci.low), float(ci.high), float(res.pvalue), sd)
    return Test(NONE, len(a), len(b), delta, math.nan, math.nan, math.nan, math.nan)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order; NaNs stay NaN and are not counted.

    Sorted ascending, the i-th smallest of m p-values is multiplied by m - i (i from 0), made monotone by a
    running maximum and capped at 1; reject where the adjusted value is below alpha.
    """
    index = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(index, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def power(n: int, effect: float, sd: float, paired: bool = True, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test with ``n`` seeds per arm to detect a true Δ of ``effect`` (noncentral t).

    Paired: one-sample test of n differences of SD ``sd``: df = n - 1, noncentrality Δ/sd·√n. Unpaired:
    equal n per arm and ``sd`` = √(s_arm² + s_base²), the spread of a one-seed difference: df = 2n - 2,
    noncentrality Δ/sd·√n (the pooled-variance test that Welch's reduces to at equal n and variances).
    """
    if n < 2:
        return 0.0
    df = n - 1 if paired else 2 * n - 2
    nc = abs(effect) / sd * math.sqrt(n)
    crit = st.t.ppf(1 - alpha / 2, df)
    if nc - crit > 10:  # scipy's nct returns NaN far in the tail; there the power is 1 to ~1e-15
        return 1.0
    upper = st.nct.sf(crit, df, nc)
    lower = st.nct.cdf(-crit, df, nc)  # rejections of the wrong sign: NaN only where it is below ~1e-30
    return float(upper + (0.0 if math.isnan(lower) else lower))


def seeds_needed(effect: float, sd: float, paired: bool = True, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest seeds per arm (≥ 2) whose test reaches ``target`` power for ``effect``; None past ``MAX_SEEDS``.

    ``sd`` is the observed SD of the per-seed differences (paired) or √(s_arm² + s_base²) (unpaired).
    A zero ``sd`` with a non-zero effect needs the minimum, 2; a zero effect is never detected.
    """
    if math.isnan(effect) or math.isnan(sd) or effect == 0:
        return None
    if sd == 0:
        return 2
    hi = 2  # power grows with n: double to a bound, then bisect for the first n that reaches the target
    while power(hi, effect, sd, paired, alpha) < target:
        if hi >= MAX_SEEDS:
            return None
        hi = min(2 * hi, MAX_SEEDS)
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if power(mid, effect, sd, paired, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def with_holm(tests: Sequence[Test], min_effect: float | None = None) -> list[Test]:
    """``tests`` (the arms of one baseline) with Holm-adjusted p-values and the seeds needed filled in.

    Args:
        tests: one per arm, all against the same baseline.
        min_effect: the Δ the seeds-needed count refers to (same units); ``None`` uses each arm's observed |Δ|.
    """
    import dataclasses

    adjusted = holm([t.p for t in tests])
    out = []
    for t, p_holm in zip(tests, adjusted):
        effect = abs(min_effect) if min_effect is not None else abs(t.delta)
        needed = seeds_needed(effect, t.sd, paired=t.test == PAIRED) if t.test != NONE else None
        out.append(dataclasses.replace(t, p_holm=p_holm, effect=effect, seeds_needed=needed))
    return out


def verdict(t: Test | None, lower_is_better: bool = True) -> str:
    """``better``, ``worse`` or ``n.s.`` (not significant after Holm, or no test possible)."""
    if t is None or math.isnan(t.p_holm) or not t.significant:
        return "n.s."
    return "better" if (t.delta < 0) == lower_is_better else "worse"


def mean_ci(values: Sequence[float], alpha: float = ALPHA) -> tuple[float, float]:
    """The 1 - alpha confidence interval of the mean of ``values`` (t distribution); NaNs below two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if x.std(ddof=1) == 0:
        return float(x.mean()), float(x.mean())
    low, high = st.t.interval(1 - alpha, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    return float(low), float(high)
