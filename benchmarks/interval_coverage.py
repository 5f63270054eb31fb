#!/usr/bin/env python3
"""How often the report's coloured statistic is right on simulated data: the coverage of the
median interval, how often a no-effect comparison (and a no-effect report of 8 comparisons,
Holm-adjusted) is coloured, and the power on real but uneven effects.

    python benchmarks/interval_coverage.py [--datasets 20000] [--reports 4000]

Per-prompt differences whose true median is 0, in the shapes runs produce:
- normal: symmetric noise;
- centred_exponential, centred_lognormal: genuinely skewed differences (skewness 2 and 6.2),
  centred at their MEDIAN (exponential - ln 2, lognormal - 1), because the median is what
  the report tests and colours;
- judge_1_10: two integer 1-10 ratings of one prompt, each the prompt's level plus noise,
  rounded and clamped (many ties, differences on a few integers);
- clipscore_clamped: two CLIPScores clamped at 0 (many zero differences);
- heavy_tails: Student t with 1 degree of freedom (Cauchy: no mean at all);
- uneven_effect: a real effect that differs by prompt (noise N(0, 1) plus an exponential
  effect of mean 0.5 per prompt); its coverage is of its true median (from 2 million draws),
  and `power_uneven_effect_n30` is how often it is coloured at n = 30, beside a t-test of
  the mean on the same data, so the cost of exactness is visible.
For contrast, `t_test_null_flag_rate_nN_lognormal_mean_0` is how often a t-test of the mean
rejects on lognormal differences centred at their mean (a null for the mean): the reason the
report no longer colours means.
Everything goes through `stages.report.stats`, the code the report uses (its tie tolerance,
its sign test, its order-statistic interval, its Holm and its colour rule).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.report.stats import (  # noqa: E402
    flag_side,
    holm,
    median_interval,
    sign_test_p,
    snap,
    t_quantile,
)

Diffs = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
SIZES = (10, 30, 50)
FAMILY = 8           # headline comparisons on a report: 4 metrics x 2 contrasts


def _judge(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    level = rng.uniform(3, 8, shape)
    draw = lambda: np.clip(np.rint(level + rng.normal(0, 1.2, shape)), 1, 10)  # noqa: E731
    return draw() - draw()


def _clipscore(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    level = rng.normal(0.02, 0.05, shape)
    draw = lambda: 2.5 * np.maximum(level + rng.normal(0, 0.05, shape), 0)  # noqa: E731
    return draw() - draw()


NULLS: dict[str, Diffs] = {
    "normal": lambda rng, shape: rng.normal(0, 1, shape),
    "centred_exponential": lambda rng, shape: rng.exponential(1.0, shape) - math.log(2),
    "centred_lognormal": lambda rng, shape: rng.lognormal(0, 1, shape) - 1.0,
    "judge_1_10": _judge,
    "clipscore_clamped": _clipscore,
    "heavy_tails": lambda rng, shape: rng.standard_t(1, shape),
}


def lognormal_mean_0(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Lognormal differences centred at their mean: a no-effect null for a test of the mean."""
    return rng.lognormal(0, 1, shape) - math.exp(0.5)


def uneven_effect(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.normal(0, 1, shape) + rng.exponential(0.5, shape)


def true_median(diffs: Diffs, draws: int = 2_000_000, seed: int = 99) -> float:
    return float(np.median(diffs(np.random.default_rng(seed), (1, draws))))


def tested(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(helped, hurt, low, high, p) per row of differences, as stats.paired_test computes them."""
    d = np.sort(snap(d), axis=1)
    helped, hurt = (d > 0).sum(axis=1), (d < 0).sum(axis=1)
    low, high, _ = median_interval(d)
    p = np.array([sign_test_p(int(h), int(u)) for h, u in zip(helped, hurt, strict=True)])
    return helped, hurt, low, high, p


def coverage(diffs: Diffs, n: int, datasets: int, seed: int = 0, median: float = 0.0) -> float:
    """Share of 95% median intervals that contain the true median."""
    d = diffs(np.random.default_rng(seed), (datasets, n))
    _, _, low, high, _ = tested(d - median)
    return float(np.mean((low <= 0) & (0 <= high)))


def flag_rate(diffs: Diffs, n: int, datasets: int, seed: int = 0) -> float:
    """Share of single comparisons that the report would colour (unadjusted)."""
    helped, hurt, low, high, p = tested(diffs(np.random.default_rng(seed), (datasets, n)))
    return float(np.mean([bool(flag_side(*row)) for row in zip(helped, hurt, low, high, p, strict=True)]))


def report_flag_rate(diffs: Diffs, n: int, reports: int, seed: int = 0) -> float:
    """Share of no-effect reports of FAMILY comparisons, Holm-adjusted, that colour anything."""
    helped, hurt, low, high, p = tested(diffs(np.random.default_rng(seed), (reports * FAMILY, n)))
    flagged = 0
    for r in range(reports):
        rows = slice(r * FAMILY, (r + 1) * FAMILY)
        adjusted = holm(p[rows])
        flagged += any(flag_side(int(h), int(u), lo, hi, q) for h, u, lo, hi, q in zip(
            helped[rows], hurt[rows], low[rows], high[rows], adjusted, strict=True))
    return flagged / reports


def t_test_rate(diffs: Diffs, n: int, datasets: int, seed: int = 0) -> float:
    """For comparison: how often a two-sided t-test of the mean rejects (5%) on the same data."""
    d = diffs(np.random.default_rng(seed), (datasets, n))
    t = np.abs(d.mean(axis=1)) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    return float(np.mean(t > t_quantile(0.95, n - 1)))


def simulate(datasets: int = 20_000, reports: int = 4_000, sizes: tuple[int, ...] = SIZES,
             seed: int = 0) -> dict:
    """Every figure; the unsuffixed keys are the worst over the no-effect shapes."""
    out: dict = {}
    shift = true_median(uneven_effect)
    for n in sizes:
        covs, flags, report_flags = {}, {}, {}
        for k, (name, fn) in enumerate(NULLS.items()):
            covs[name] = coverage(fn, n, datasets, seed + k)
            flags[name] = flag_rate(fn, n, datasets, seed + 100 + k)
            report_flags[name] = report_flag_rate(fn, n, reports, seed + 200 + k)
            out[f"median_coverage_n{n}_{name}"] = round(covs[name], 4)
            out[f"null_flag_rate_n{n}_{name}"] = round(flags[name], 4)
            out[f"report_null_flag_rate_n{n}_{name}"] = round(report_flags[name], 4)
        covs["uneven_effect"] = coverage(uneven_effect, n, datasets, seed + 300, median=shift)
        out[f"median_coverage_n{n}_uneven_effect"] = round(covs["uneven_effect"], 4)
        out[f"median_coverage_n{n}"] = round(min(covs.values()), 4)
        out[f"null_flag_rate_n{n}"] = round(max(flags.values()), 4)
        out[f"report_null_flag_rate_n{n}"] = round(max(report_flags.values()), 4)
        out[f"t_test_null_flag_rate_n{n}_lognormal_mean_0"] = round(
            t_test_rate(lognormal_mean_0, n, datasets, seed + 400), 4)
    out["power_uneven_effect_n30"] = round(flag_rate(uneven_effect, 30, datasets, seed + 500), 4)
    out["t_test_power_uneven_effect_n30"] = round(t_test_rate(uneven_effect, 30, datasets, seed + 500), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=20_000, help="datasets per shape and size")
    parser.add_argument("--reports", type=int, default=4_000,
                        help="reports of 8 comparisons per shape and size")
    args = parser.parse_args()
    for key, value in simulate(args.datasets, args.reports).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
