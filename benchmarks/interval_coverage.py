#!/usr/bin/env python3
"""How often the report's paired intervals cover the truth, and how often a report of a run
with no real effect colours anything, on simulated null data.

    python benchmarks/interval_coverage.py [--datasets 3000]

Null data: every prompt has its own level, and its two variants are two independent draws
around it (no effect, so the variants are exchangeable). Score shapes that runs produce:
normal noise, strongly skewed noise, integer 1-10 judge ratings (many ties), CLIPScores
clamped at 0 (many zeros), heavy tails. Everything goes through `stages.report.stats`, the code the
report uses. `skewed_differences` is not a no-effect null but a stress case: differences
with mean 0 and a long right tail (a change of shape without a change of mean); no
small-sample interval is exact there, and its coverage is printed apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.report.stats import directions, paired_test, sign_patterns, t_quantile  # noqa: E402

Pairs = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _around(level: np.ndarray, noise: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return level + noise(), level + noise()


def _judge(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    level = rng.uniform(3, 8, n)
    draw = lambda: np.clip(np.rint(level + rng.normal(0, 1.2, n)), 1, 10)  # noqa: E731
    return draw(), draw()


def _clipscore(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    level = rng.normal(0.02, 0.05, n)
    draw = lambda: 2.5 * np.maximum(level + rng.normal(0, 0.05, n), 0)  # noqa: E731
    return draw(), draw()


NULLS: dict[str, Pairs] = {
    "normal": lambda rng, n: _around(rng.normal(0, 1, n), lambda: rng.normal(0, 0.3, n)),
    "skewed": lambda rng, n: _around(rng.normal(0, 1, n), lambda: rng.gamma(0.3, 1.0, n)),
    "judge_1_10": _judge,
    "clipscore_clamped": _clipscore,
    "heavy_tails": lambda rng, n: _around(rng.normal(0, 1, n), lambda: rng.standard_t(2, n)),
}


def skewed_differences(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n), rng.lognormal(0, 1, n) - np.exp(0.5)


def coverage(pairs: Pairs, n: int, datasets: int, seed: int = 0) -> tuple[float, float]:
    """(share of 95% intervals that contain 0, share that are bounded) over null datasets."""
    rng = np.random.default_rng(seed)
    signs, _ = sign_patterns(n)
    covered = bounded = 0
    for _ in range(datasets):
        res = paired_test(*pairs(rng, n), signs=signs)
        covered += res.ci_low <= 0 <= res.ci_high
        bounded += res.bounded
    return covered / datasets, bounded / datasets


def false_flag_rate(n: int, reports: int, family: int = 8, seed: int = 0) -> float:
    """Share of simulated no-effect reports (`family` headline comparisons: 4 metrics x 2
    contrasts, cycling through the null shapes) in which the report colours anything."""
    rng = np.random.default_rng(seed)
    signs, _ = sign_patterns(n)
    shapes = list(NULLS.values())
    flagged = 0
    for _ in range(reports):
        results = [paired_test(*shapes[k % len(shapes)](rng, n), signs=signs) for k in range(family)]
        flagged += any(flag for flag, _ in directions(results, [True] * family))
    return flagged / reports


def reference_coverage(n: int, datasets: int, seed: int = 0) -> dict[str, float]:
    """For comparison, on the normal null: the percentile bootstrap the report used before
    (2,000 resamples) and a Student t-interval of the mean difference."""
    rng = np.random.default_rng(seed)
    q = t_quantile(0.95, n - 1)
    boot = t = 0
    for _ in range(datasets):
        a, b = NULLS["normal"](rng, n)
        d = b - a
        means = d[rng.integers(0, n, size=(2000, n))].mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        boot += low <= 0 <= high
        half = q * d.std(ddof=1) / np.sqrt(n)
        t += abs(d.mean()) <= half
    return {f"percentile_bootstrap_coverage_n{n}": round(boot / datasets, 4),
            f"t_interval_coverage_n{n}": round(t / datasets, 4)}


def simulate(datasets: int, sizes: tuple[int, ...] = (5, 10, 30), seed: int = 0) -> dict:
    """Every figure: `ci_coverage_nN` is the lowest coverage over the null shapes."""
    out: dict = {}
    for n in sizes:
        per_shape = {name: coverage(fn, n, datasets, seed + k) for k, (name, fn) in enumerate(NULLS.items())}
        for name, (cov, _) in per_shape.items():
            out[f"ci_coverage_n{n}_{name}"] = round(cov, 4)
        out[f"ci_coverage_n{n}"] = round(min(cov for cov, _ in per_shape.values()), 4)
        out[f"ci_bounded_share_n{n}"] = round(min(b for _, b in per_shape.values()), 4)
        out[f"false_flag_rate_n{n}"] = round(false_flag_rate(n, max(200, datasets // 5), seed=seed), 4)
        out.update(reference_coverage(n, datasets, seed))
    out["ci_coverage_n30_skewed_differences"] = round(coverage(skewed_differences, 30, datasets, seed)[0], 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=3000, help="null datasets per shape and size")
    args = parser.parse_args()
    for key, value in simulate(args.datasets).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
