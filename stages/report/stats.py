"""Statistics for the report: paired sign-flip tests with their intervals, t-intervals of
means, and Holm's adjustment.

Prompts are the unit of comparison: two variants of one prompt (original vs upsampled, the
first vs the best Socratic round) are a pair, and the question is whether the mean of the
per-prompt differences is away from zero.

Why a sign-flip (randomization) test: with no effect, the two variants of a prompt are
exchangeable, so each per-prompt difference is as likely to have either sign. Flipping the
signs in every pattern (all 2^n when that is few enough, else a seeded random sample) gives
the exact null distribution of the mean difference, whatever the scores look like (clamped
CLIPScores, integer judge ratings, ties, skew). The 95% interval is every shift the test
does not reject, so it covers zero exactly as often as the test keeps the null. The price is
honesty at small n: n prompts give 2^n patterns, the smallest two-sided p is 2 / 2^n, so
with 5 prompts or fewer no result can reach 5% and the interval is unbounded. A percentile
bootstrap of the same differences covered the truth only 83-90% of the time at n = 5-10.

Means of a single variant get a Student t-interval (descriptive; nothing is tested on them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
_CHUNK = 2_000_000            # sign-matrix cells per block, so memory stays flat for large n


@dataclass(frozen=True)
class PairedResult:
    mean_diff: float      # mean of b - a (NaN without pairs)
    ci_low: float         # -inf / +inf when n is too small for the test to reject
    ci_high: float
    p_value: float        # two-sided sign-flip p for "no difference" (NaN without pairs)
    n: int
    helped: int           # b > a + tie_tol
    hurt: int             # b < a - tie_tol
    tied: int
    patterns: int = 0     # sign patterns used
    exact: bool = True    # every pattern enumerated (else a seeded random sample)

    def share(self, count: int) -> float:
        return count / self.n if self.n else math.nan

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)


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


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs with which a two-sided sign-flip test can reach `alpha` (6 for 5%)."""
    n = 1
    while 2.0 / 2 ** n > alpha:
        n += 1
    return n


def sign_patterns(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Rows of +-1: all 2^n patterns when 2^n <= resamples (exact), else the identity row and
    `resamples` seeded random rows. Returns (patterns, exact)."""
    if n < 1:
        raise ValueError("sign patterns need at least one pair")
    if 2 ** n <= max(resamples, 2):
        return np.array(list(itertools.product((1.0, -1.0), repeat=n))), True
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 2, size=(resamples + 1, n), dtype=np.int8).astype(np.float64) * 2 - 1
    rows[0] = 1.0
    return rows, False


def _flipped_means(signs: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(signs.shape[0])
    step = max(1, _CHUNK // max(1, x.size))
    for start in range(0, signs.shape[0], step):
        out[start:start + step] = signs[start:start + step] @ x / x.size
    return out


def _signflip(diff: np.ndarray, alpha: float, signs: np.ndarray) -> tuple[float, float, float]:
    """(ci_low, ci_high, p) of the mean of `diff` by inverting the sign-flip test.

    For a shift d, pattern s counts against d when |mean(s * (diff - d))| >= |mean(diff - d)|.
    Writing t = mean(diff) - d, m = mean(s * centred) and u = mean(s), that holds for t in
    [(m u - |m|) / (1 - u^2), (m u + |m|) / (1 - u^2)] (every t when |u| = 1), so the p-value
    only falls as d leaves the mean and the interval's ends are order statistics of those
    bounds: no search, no grid.
    """
    centre = diff.mean()
    m = _flipped_means(signs, diff - centre)
    u = signs.mean(axis=1)
    scale = np.abs(diff - centre).max()
    denom = 1 - u ** 2
    full = denom <= 1e-12              # the all-plus and all-minus patterns: never rejected
    safe = np.where(full, 1.0, denom)
    upper = np.where(full, np.inf, (m * u + np.abs(m)) / safe)
    lower = np.where(full, -np.inf, (m * u - np.abs(m)) / safe)
    k = int(math.floor(alpha * len(signs))) + 1       # p > alpha <=> at least k patterns count
    t_high = np.sort(upper)[::-1][k - 1]
    t_low = np.sort(lower)[k - 1]
    observed = abs(centre)
    tol = 1e-12 * max(1.0, observed, scale)
    p = float(np.mean(np.abs(_flipped_means(signs, diff)) >= observed - tol))
    return centre - t_high, centre - t_low, min(1.0, p)


def paired_test(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                resamples: int = DEFAULT_RESAMPLES, seed: int = 0, tie_tol: float = 1e-6,
                signs: np.ndarray | None = None) -> PairedResult:
    """Mean of b - a over pairs, its sign-flip p-value and interval. Pairs where either value
    is missing (NaN) are dropped. `signs` lets a caller reuse one pattern matrix (simulations)."""
    _check_confidence(confidence)
    a_arr = np.asarray(a, dtype=np.float64).reshape(-1)
    b_arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples need equal lengths, got {a_arr.size} and {b_arr.size}")
    diff = (b_arr - a_arr)[np.isfinite(a_arr) & np.isfinite(b_arr)]
    n = int(diff.size)
    if n == 0:
        return PairedResult(math.nan, math.nan, math.nan, math.nan, 0, 0, 0, 0, 0, True)
    exact = True
    if signs is None:
        signs, exact = sign_patterns(n, resamples, seed)
    elif signs.shape[1] != n:
        raise ValueError(f"sign patterns for {signs.shape[1]} pairs given for {n} pairs")
    else:
        exact = len(signs) == 2 ** n
    low, high, p = _signflip(diff, 1 - confidence, signs)
    helped = int(np.sum(diff > tie_tol))
    hurt = int(np.sum(diff < -tie_tol))
    return PairedResult(float(diff.mean()), float(low), float(high), p, n, helped, hurt,
                        n - helped - hurt, len(signs), exact)


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
    """Mean with a Student t-interval (NaNs ignored; NaN interval for fewer than two values)."""
    _check_confidence(confidence)
    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
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


def directions(results: Sequence[PairedResult], eligible: Sequence[bool],
               alpha: float = ALPHA) -> list[tuple[str, float]]:
    """('up' | 'down' | '', Holm-adjusted p) per result: a direction only for an eligible
    result (an independent scorer, in the headline family) whose adjusted p is at most alpha,
    so the chance that a page with no real effect shows any coloured result stays at alpha.
    Ineligible results get ('', NaN) and do not count in the family."""
    p = [r.p_value if ok else math.nan for r, ok in zip(results, eligible, strict=True)]
    out = []
    for r, adjusted in zip(results, holm(p), strict=True):
        flag = ""
        if math.isfinite(adjusted) and adjusted <= alpha and r.bounded:
            flag = "up" if r.mean_diff > 0 else "down" if r.mean_diff < 0 else ""
        out.append((flag, adjusted))
    return out


def summarise(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; NaN where undefined."""
    x = _clean(values)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    return mean, std, n
