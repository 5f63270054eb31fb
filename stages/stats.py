"""Small statistics for the report: paired bootstrap confidence intervals and summaries.

Prompts are the unit of comparison: two variants of one prompt (original vs upsampled, the
first vs the best Socratic round) are a pair, and the question is whether the mean of the
per-prompt differences is away from zero. A percentile bootstrap over the pairs answers it
without assuming normality; helped / hurt / tied counts show whether a mean gain comes from
many prompts or a few.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    mean_diff: float      # mean of b - a
    ci_low: float         # NaN when fewer than two pairs
    ci_high: float
    n: int
    helped: int           # b > a + tie_tol
    hurt: int             # b < a - tie_tol
    tied: int

    def share(self, count: int) -> float:
        return count / self.n if self.n else math.nan


@dataclass(frozen=True)
class MeanCI:
    mean: float
    ci_low: float
    ci_high: float
    n: int


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def _percentile_ci(x: np.ndarray, n_resamples: int, confidence: float,
                   seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `x` (NaN for n < 2: one value says nothing
    about spread)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = x.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)   # bounded memory for large n
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0, tie_tol: float = 1e-6) -> PairedResult:
    """Mean of b - a over pairs with a percentile-bootstrap CI. Pairs where either value is
    missing (NaN) are dropped."""
    a_arr = np.asarray(a, dtype=np.float64).reshape(-1)
    b_arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples need equal lengths, got {a_arr.size} and {b_arr.size}")
    diff = (b_arr - a_arr)[np.isfinite(a_arr) & np.isfinite(b_arr)]
    n = int(diff.size)
    if n == 0:
        return PairedResult(math.nan, math.nan, math.nan, 0, 0, 0, 0)
    low, high = _percentile_ci(diff, n_resamples, confidence, seed)
    helped = int(np.sum(diff > tie_tol))
    hurt = int(np.sum(diff < -tie_tol))
    return PairedResult(float(diff.mean()), low, high, n, helped, hurt, n - helped - hurt)


def bootstrap_mean(values: Sequence[float], *, n_resamples: int = 10000, confidence: float = 0.95,
                   seed: int = 0) -> MeanCI:
    """Mean with a percentile-bootstrap CI (NaNs ignored)."""
    x = _clean(values)
    if x.size == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    low, high = _percentile_ci(x, n_resamples, confidence, seed)
    return MeanCI(float(x.mean()), low, high, int(x.size))


def summarise(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; NaN where undefined."""
    x = _clean(values)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    return mean, std, n
