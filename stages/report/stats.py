"""Statistics for the report: an exact sign test with an order-statistic interval for the
median difference, an approximate interval for the mean, and Holm's adjustment.

Prompts are the unit of comparison: two variants of one prompt (original vs upsampled, the
first vs the chosen Socratic prompt on fresh seeds) are a pair, and the question is whether
one variant tends to score higher than the other.

Why the median and the sign test: real per-prompt differences are often skewed (a judge's
1-10 scores, clamped CLIPScores, a few prompts that change a lot), and no interval for a
mean holds its level over every distribution at small n (a sign-flip interval for the mean
flagged 9-15% of skewed no-effect comparisons at n = 10). The sign test counts prompts
helped against prompts hurt: with no effect each non-tied prompt is as likely to go either
way, so the binomial null is exact at any n and for any shape. The interval for the median
difference is [d(k), d(n+1-k)] of the sorted differences, with k from the same binomial, so
it covers the median with probability at least 95% whatever the shape (more on discrete
scores, where ends land on tied values). Both read the differences after one tie tolerance
(`TIE_TOL`): a difference within it is a tie, counts neither as helped nor as hurt, and is
zero in the interval, so the test and the interval cannot disagree by rounding noise. With 5
pairs or fewer no sign test reaches 5% and the interval is unbounded.

The mean difference is shown as a description, with a bootstrap-t interval that is
approximate (it assumes roughly symmetric differences) and never decides a colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ALPHA = 0.05
TIE_TOL = 1e-6                # |b - a| at most this is a tie, in the test and the interval alike
DEFAULT_RESAMPLES = 10_000    # bootstrap resamples of the mean's approximate interval
APPROXIMATE = "approximate, assumes roughly symmetric differences"


@dataclass(frozen=True)
class PairedResult:
    n: int                # pairs with both values
    helped: int           # b > a + TIE_TOL
    hurt: int             # b < a - TIE_TOL
    tied: int
    median_diff: float    # median of b - a (ties as 0); NaN without pairs
    ci_low: float         # order-statistic interval of the median; -inf/+inf when n is too small
    ci_high: float
    level: float          # the interval's exact level for continuous differences (>= 95%)
    p_value: float        # exact two-sided sign test, ties dropped (1.0 when every pair ties)
    mean_diff: float      # description only
    mean_low: float       # bootstrap-t interval of the mean: APPROXIMATE; NaN when not estimable
    mean_high: float
    spread: float         # max - min of the differences (0: every difference is the same)

    @property
    def n_eff(self) -> int:
        """Pairs the sign test uses: ties dropped."""
        return self.helped + self.hurt

    def share(self, count: int) -> float:
        return count / self.n if self.n else math.nan

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)

    @property
    def estimable(self) -> bool:
        """False when every difference is the same: there is no spread to estimate from, and a
        zero-width interval would read as certainty."""
        return self.n > 1 and self.spread > TIE_TOL

    @property
    def excludes_zero(self) -> str:
        """'up' or 'down' when the median interval lies wholly on one side of 0, else ''."""
        if not self.bounded:
            return ""
        return "up" if self.ci_low > 0 else "down" if self.ci_high < 0 else ""


@dataclass(frozen=True)
class MeanCI:
    mean: float
    ci_low: float         # NaN for fewer than two values
    ci_high: float
    n: int


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


@lru_cache(maxsize=4096)
def binom_cdf_half(n: int) -> np.ndarray:
    """P(Bin(n, 1/2) <= k) for k = 0..n, exact (integer sums, one division each)."""
    total, acc, out = 2 ** n, 0, []
    for k in range(n + 1):
        acc += math.comb(n, k)
        out.append(acc / total)
    return np.array(out)


def sign_test_p(helped: int, hurt: int) -> float:
    """Exact two-sided sign test of 'helped and hurt are equally likely' (ties already out)."""
    n = helped + hurt
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom_cdf_half(n)[min(helped, hurt)]))


def order_rank(n: int, alpha: float = ALPHA) -> int:
    """The k of the interval [d(k), d(n+1-k)] (1-based): the largest k with
    P(Bin(n, 1/2) <= k - 1) <= alpha / 2; 0 when there is none (n too small)."""
    if n < 1:
        return 0
    cdf = binom_cdf_half(n)
    ok = np.flatnonzero(cdf[: (n + 1) // 2] <= alpha / 2 + 1e-15)
    return int(ok[-1]) + 1 if ok.size else 0


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs with which the sign test can reach `alpha` (6 for 5%)."""
    n = 1
    while 2.0 / 2 ** n > alpha:
        n += 1
    return n


def snap(diff: np.ndarray, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Differences with ties (|d| <= tie_tol) set to exactly 0."""
    return np.where(np.abs(diff) <= tie_tol, 0.0, diff)


def median_interval(sorted_diff: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray, float]:
    """(low, high, level) of the order-statistic interval for the median, over the last axis
    of already sorted and snapped differences (a 2-D array gives one interval per row)."""
    n = sorted_diff.shape[-1]
    k = order_rank(n, alpha)
    if k == 0:
        shape = sorted_diff.shape[:-1]
        return np.full(shape, -np.inf), np.full(shape, np.inf), 1.0
    level = 1 - 2 * float(binom_cdf_half(n)[k - 1])
    return sorted_diff[..., k - 1], sorted_diff[..., n - k], level


def bootstrap_t(x: np.ndarray, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                seed: int = 0) -> tuple[float, float]:
    """Bootstrap-t interval of the mean (seeded); NaN when the values have no spread.
    Resamples without spread (all one value: likely at small n) are left out: their t would be
    0/0, or a rounding residue of 1e-17 would make it 1e15 and the interval absurd."""
    n = x.size
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or sd <= TIE_TOL:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mean, se = float(x.mean()), sd / math.sqrt(n)
    t_stats = np.empty(resamples)
    step = max(1, 2_000_000 // n)
    for start in range(0, resamples, step):
        sample = x[rng.integers(0, n, size=(min(step, resamples - start), n))]
        s = sample.std(axis=1, ddof=1)
        s[s <= TIE_TOL] = np.nan     # a resample without spread (all one value, up to rounding) has no t
        with np.errstate(divide="ignore", invalid="ignore"):
            t_stats[start:start + len(s)] = (sample.mean(axis=1) - mean) / (s / math.sqrt(n))
    t_stats = t_stats[np.isfinite(t_stats)]
    lo_q, hi_q = np.quantile(t_stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean - float(hi_q) * se, mean - float(lo_q) * se


def paired_test(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                tie_tol: float = TIE_TOL) -> PairedResult:
    """Sign test, median interval and the mean's approximate interval for b - a. Pairs where
    either value is missing (NaN) are dropped. `resamples`: the bootstrap-t's resamples (0: no
    interval for the mean)."""
    _check_confidence(confidence)
    a_arr = np.asarray(a, dtype=np.float64).reshape(-1)
    b_arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples need equal lengths, got {a_arr.size} and {b_arr.size}")
    diff = snap((b_arr - a_arr)[np.isfinite(a_arr) & np.isfinite(b_arr)], tie_tol)
    n = int(diff.size)
    if n == 0:
        nan = math.nan
        return PairedResult(0, 0, 0, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    helped, hurt = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    ordered = np.sort(diff)
    low, high, level = median_interval(ordered, 1 - confidence)
    mean_low, mean_high = bootstrap_t(diff, confidence, resamples, seed) if resamples else (math.nan,) * 2
    return PairedResult(n, helped, hurt, n - helped - hurt, float(np.median(ordered)), float(low),
                        float(high), level, sign_test_p(helped, hurt), float(diff.mean()),
                        mean_low, mean_high, float(ordered[-1] - ordered[0]))


def _t_two_sided(x: float, dof: int) -> float:
    """P(|T| <= x) for Student's t with integer `dof` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(x / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2:
        term, total = math.cos(theta), 0.0
        for k in range(1, (dof - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total) if dof > 1 else 2 * theta / math.pi
    term, total = 1.0, 0.0
    for k in range(dof // 2):
        total += term
        term *= c2 * (2 * k + 1) / (2 * k + 2)
    return s * total


def t_quantile(confidence: float, dof: int) -> float:
    """The x with P(|T| <= x) = confidence, e.g. 2.776 for 95% and 4 degrees of freedom."""
    _check_confidence(confidence)
    low, high = 0.0, 1.0
    while _t_two_sided(high, dof) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_two_sided(mid, dof) < confidence else (low, mid)
    return (low + high) / 2


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> MeanCI:
    """Mean with a Student t-interval (NaNs ignored; NaN interval for fewer than two values
    or for values without spread: a zero-width band would read as certainty)."""
    _check_confidence(confidence)
    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2 or float(x.max() - x.min()) <= TIE_TOL:
        return MeanCI(mean, math.nan, math.nan, n)
    half = t_quantile(confidence, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: reject where adjusted p <= alpha keeps the chance of any
    false claim in the family at alpha. NaNs stay NaN and do not count."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return [float(x) for x in out]


def flag_side(helped: int, hurt: int, ci_low: float, ci_high: float, adjusted_p: float,
              alpha: float = ALPHA) -> str:
    """'up' | 'down' | '': coloured only when the (Holm-adjusted) sign test is at most alpha and
    the median interval lies on the same side of 0 (both read one tie tolerance)."""
    if not (math.isfinite(adjusted_p) and adjusted_p <= alpha):
        return ""
    if helped > hurt and ci_low > 0:
        return "up"
    if hurt > helped and ci_high < 0:
        return "down"
    return ""


def flag(result: PairedResult, adjusted_p: float, alpha: float = ALPHA) -> str:
    return flag_side(result.helped, result.hurt, result.ci_low, result.ci_high, adjusted_p, alpha)


def directions(results: Sequence[PairedResult], eligible: Sequence[bool],
               alpha: float = ALPHA) -> list[tuple[str, float]]:
    """('up' | 'down' | '', Holm-adjusted p) per result: a direction only for an eligible
    result (an independent scorer, in the headline family) that `flag` allows, so the chance
    that a page with no real effect shows any coloured result stays at alpha. Ineligible
    results get ('', NaN) and do not count in the family."""
    p = [r.p_value if ok and r.n else math.nan for r, ok in zip(results, eligible, strict=True)]
    return [(flag(r, adjusted, alpha), adjusted) for r, adjusted in zip(results, holm(p), strict=True)]


def summarise(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; NaN where undefined."""
    x = _clean(values)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    return mean, std, n


def number(x: float, sign: bool = False, digits: int = 3) -> str:
    """A figure for the page and the plots: `digits` decimals, more for a small non-zero value
    (so it never reads "-0.000" or "+0.000"); exactly 0 is "0"; NaN and infinities are "–"."""
    if x is None or not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    places = max(digits, 1 - math.floor(math.log10(abs(x))))
    if places > 8:
        return f"{x:+.1e}" if sign else f"{x:.1e}"
    text = f"{x:+.{places}f}" if sign else f"{x:.{places}f}"
    return text.rstrip("0").rstrip(".") if places > digits else text
