"""The report's statistics on inputs whose answers are known: the exact sign test, the
order-statistic interval of the median difference (one tie tolerance for both), the mean's
approximate interval, Holm and the colour rule; and the coverage and false-flag rates of the
coloured statistic on skewed, discrete and heavy-tailed differences (a small version of
benchmarks/interval_coverage.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.report.stats import (
    binom_cdf_half,
    directions,
    holm,
    mean_ci,
    min_pairs,
    number,
    order_rank,
    paired_test,
    summarise,
    t_quantile,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from interval_coverage import NULLS, coverage, flag_rate, report_flag_rate  # noqa: E402


def test_sign_test_and_median_interval_on_a_known_sample():
    res = paired_test(np.zeros(10), np.arange(1.0, 11.0) - 3)      # -2 -1 0 1 ... 7
    assert (res.helped, res.hurt, res.tied, res.n_eff) == (7, 2, 1, 9)
    assert res.p_value == pytest.approx(2 * (1 + 9 + 36) / 512)   # 2 P(Bin(9, 1/2) <= 2)
    assert order_rank(10) == 2                                      # P(Bin(10, 1/2) <= 1) = 11/1024
    assert (res.ci_low, res.ci_high) == (-1.0, 6.0)                 # d(2), d(9)
    assert res.level == pytest.approx(1 - 2 * 11 / 1024)
    assert res.median_diff == 2.5 and res.mean_diff == pytest.approx(2.5)


def test_binomial_table_is_exact():
    assert binom_cdf_half(4).tolist() == pytest.approx([1 / 16, 5 / 16, 11 / 16, 15 / 16, 1.0])
    assert binom_cdf_half(400)[-1] == 1.0 and 0 < binom_cdf_half(400)[0]


def test_eight_differences_all_plus_one_are_evidence_but_not_an_estimate():
    """8 of 8 helped is what the sign test sees (p = 2/256); the interval has no spread to
    come from, so it is 'not estimable', never a zero-width certainty."""
    res = paired_test(np.zeros(8), np.ones(8))
    assert res.p_value == pytest.approx(2 / 256)
    assert not res.estimable and res.spread == 0.0
    assert math.isnan(res.mean_low) and math.isnan(res.mean_high)
    assert directions([res], [True]) == [("up", pytest.approx(2 / 256))]


def test_one_tie_tolerance_for_the_p_value_and_the_interval():
    """Integer scores averaged over seeds leave rounding noise (0.1 + 0.2 - 0.3 = 5.6e-17):
    those prompts are ties in the test and exact zeros in the interval, so the interval cannot
    exclude 0 by 1e-16 while p = 0.0625."""
    noise = (0.1 + 0.2) - 0.3
    assert noise > 0
    res = paired_test(np.zeros(10), np.r_[np.ones(5), np.full(5, noise)])
    assert (res.helped, res.tied) == (5, 5) and res.p_value == pytest.approx(0.0625)
    assert res.ci_low == 0.0 and res.excludes_zero == ""
    assert directions([res], [True])[0][0] == ""


def test_a_sign_test_that_rejects_is_not_coloured_when_the_interval_holds_zero():
    res = paired_test(np.zeros(20), np.r_[np.ones(10), np.zeros(10)])
    assert res.p_value < 0.01 and res.ci_low == 0.0
    assert directions([res], [True])[0][0] == ""


def test_five_pairs_or_fewer_can_never_reject_at_five_percent():
    assert min_pairs() == 6 and min_pairs(0.01) == 8
    same_sign = paired_test([0.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert same_sign.p_value == pytest.approx(2 / 32) and not same_sign.bounded
    assert same_sign.ci_low == -math.inf and same_sign.ci_high == math.inf
    assert directions([same_sign], [True]) == [("", pytest.approx(0.0625))]


def test_all_ties_give_p_one_and_zero_informative_pairs():
    res = paired_test(np.ones(12), np.ones(12))
    assert (res.n, res.n_eff, res.tied) == (12, 0, 12) and res.p_value == 1.0
    assert not res.estimable and directions([res], [True])[0][0] == ""


def test_zero_and_one_pair_give_no_interval_not_errors():
    empty = paired_test([], [])
    assert empty.n == 0 and math.isnan(empty.median_diff) and math.isnan(empty.ci_low)
    assert math.isnan(empty.share(0)) and math.isnan(empty.p_value)
    one = paired_test([1.0], [3.0])
    assert one.n == 1 and one.median_diff == 2.0 and one.helped == 1 and one.p_value == 1.0
    assert not one.bounded and not one.estimable


def test_missing_values_drop_their_pair_and_lengths_must_match():
    res = paired_test([1.0, float("nan"), 2.0], [2.0, 5.0, float("nan")])
    assert res.n == 1 and res.mean_diff == 1.0
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0, 2.0], confidence=1.5)


def test_the_mean_gets_an_approximate_bootstrap_t_interval_that_decides_nothing():
    rng = np.random.default_rng(2)
    diff = rng.normal(0.5, 1.0, 40)
    res = paired_test(np.zeros(40), diff, seed=3)
    assert res.mean_low < diff.mean() < res.mean_high
    half = 1.96 * diff.std(ddof=1) / math.sqrt(40)
    assert res.mean_high - res.mean_low == pytest.approx(2 * half, rel=0.25)
    assert paired_test(np.zeros(40), diff, seed=3) == res
    assert math.isnan(paired_test(np.zeros(40), diff, resamples=0).mean_low)
    wide = paired_test(np.zeros(40), diff, confidence=0.99)
    assert wide.ci_low <= res.ci_low and res.ci_high <= wide.ci_high


def test_holm_adjusts_step_down_and_skips_nan():
    assert holm([0.01, 0.04, 0.03, float("nan"), 0.5]) == pytest.approx([0.04, 0.09, 0.09, math.nan, 0.5],
                                                                         nan_ok=True)
    assert holm([]) == []


def test_directions_colour_only_eligible_results_that_survive_holm():
    strong = paired_test(np.zeros(12), np.linspace(0.5, 1.5, 12))
    weak = paired_test(np.zeros(12), np.r_[np.linspace(-1, 1.2, 11), 0.1])
    down = paired_test(np.linspace(0.5, 1.5, 12), np.zeros(12))
    flags = directions([strong, weak, down, strong], [True, True, True, False])
    assert [f for f, _ in flags] == ["up", "", "down", ""]
    assert math.isnan(flags[3][1]) and flags[0][1] == pytest.approx(3 * strong.p_value)


def test_t_quantile_and_mean_interval():
    for dof, expected in ((1, 12.7062047), (4, 2.7764451), (9, 2.2621572), (29, 2.0452296)):
        assert t_quantile(0.95, dof) == pytest.approx(expected, abs=1e-6)
    m = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.1824463 * math.sqrt(5 / 3) / 2
    assert m.mean == 2.5 and m.n == 4
    assert (m.ci_low, m.ci_high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([3.0]).ci_low)
    assert math.isnan(mean_ci([2.0, 2.0, 2.0]).ci_low)          # no spread: no band


def test_summarise():
    assert summarise([1.0, 2.0, 3.0, float("nan")]) == (2.0, 1.0, 3)
    mean, std, n = summarise([4.0])
    assert (mean, n) == (4.0, 1) and math.isnan(std)
    assert math.isnan(summarise([])[0])


def test_numbers_never_read_minus_zero():
    assert number(-0.0001, sign=True) == "-0.0001"
    assert number(0.0021, sign=True) == "+0.0021"
    assert number(0.0, sign=True) == "0" and number(-1e-20, sign=True) == "-1.0e-20"
    assert number(0.5) == "0.500" and number(float("nan")) == "–"


# Coverage: for continuous differences the interval's level is exact whatever the shape
# (1 - 2 P(Bin(n, 1/2) <= k - 1)); for discrete ones it is at least that. 4,000 datasets per
# cell: a standard error of about 0.003.
DATASETS = 4000


@pytest.mark.parametrize("n", [10, 30])
@pytest.mark.parametrize("shape", ["centred_exponential", "centred_lognormal", "heavy_tails", "normal"])
def test_median_interval_coverage_is_exact_on_skewed_and_heavy_tailed_differences(shape, n):
    level = 1 - 2 * binom_cdf_half(n)[order_rank(n) - 1]
    se = math.sqrt(level * (1 - level) / DATASETS)
    assert level >= 0.95
    assert coverage(NULLS[shape], n, DATASETS, seed=11) == pytest.approx(level, abs=4 * se)


@pytest.mark.parametrize("n", [10, 30])
@pytest.mark.parametrize("shape", ["judge_1_10", "clipscore_clamped"])
def test_median_interval_covers_at_least_95_percent_on_discrete_scores(shape, n):
    assert coverage(NULLS[shape], n, DATASETS, seed=12) >= 0.95


@pytest.mark.parametrize("shape", sorted(NULLS))
def test_no_effect_is_coloured_at_most_five_percent_of_the_time(shape):
    assert flag_rate(NULLS[shape], 30, DATASETS, seed=13) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / DATASETS)


def test_a_report_of_eight_skewed_no_effect_comparisons_colours_nothing_95_percent_of_the_time():
    """The issue's case: the sign-flip test of the mean coloured something in 36-41% of such
    reports (lognormal differences)."""
    rate = report_flag_rate(NULLS["centred_lognormal"], 30, 600, seed=14)
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 600)


def test_exact_level_by_the_binomial_for_every_n_from_6_to_60():
    """No simulation: the interval [d(k), d(n+1-k)] misses the median on one side only when
    fewer than k differences fall on that side, so its level is 1 - 2 P(Bin(n, 1/2) <= k - 1)
    for continuous differences, and at least that for discrete ones, where P(d <= m) and
    P(d >= m) are both >= 1/2. Checked in exact fractions: the level is >= 95%, k is the
    largest that keeps it so, and median_interval takes the k-th order statistics from each
    end; for three-point scores with median 0 (ties at 0, any asymmetry) the exact coverage
    is >= 95% too."""
    from fractions import Fraction
    from math import comb

    from stages.report.stats import median_interval

    def below(n: int, k: int, p: Fraction = Fraction(1, 2)) -> Fraction:     # P(Bin(n, p) <= k - 1)
        return sum((comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k)), Fraction(0))

    for n in range(6, 61):
        k = order_rank(n)
        assert 1 <= k <= (n + 1) // 2
        assert 1 - 2 * below(n, k) >= Fraction(95, 100), n
        assert k == (n + 1) // 2 or 1 - 2 * below(n, k + 1) < Fraction(95, 100), n
        low, high, level = median_interval(np.arange(float(n)))
        assert (low, high) == (k - 1, n - k) and level == pytest.approx(float(1 - 2 * below(n, k)))
        for p_low, p_tie in ((Fraction(1, 2), Fraction(1, 10)), (Fraction(3, 10), Fraction(1, 5)),
                             (Fraction(2, 5), Fraction(1, 2)), (Fraction(1, 2), Fraction(0))):
            p_high = 1 - p_low - p_tie                  # P(d < 0), P(d = 0), P(d > 0): median 0
            miss_low = below(n, k, p_low + p_tie)       # d(k) > 0: fewer than k at or below 0
            miss_high = below(n, k, p_high + p_tie)     # d(n+1-k) < 0: fewer than k at or above 0
            assert 1 - miss_low - miss_high >= Fraction(95, 100), (n, p_low, p_tie)


def test_the_sign_test_never_rejects_more_than_five_percent_over_every_sign_pattern():
    """All 2^n patterns of helped/hurt, n = 1..16, each equally likely with no effect."""
    from itertools import product

    from stages.report.stats import sign_test_p

    for n in range(1, 17):
        rejected = sum(sign_test_p(sum(s), n - sum(s)) <= 0.05 for s in product((0, 1), repeat=n))
        assert rejected / 2 ** n <= 0.05, n
        assert (rejected > 0) == (n >= min_pairs()), n


@pytest.mark.parametrize("diff", [[0.0, 0.1, 0.2], [0.03498021446942, 0.06168072821924, 0.0],
                                  [0.1, 0.1, 0.1, 0.3]])
def test_the_mean_interval_at_small_n_is_never_absurd(diff):
    """A 3-prompt refine run on the defaults printed the caption_score mean as "+0.032
    [-107231608807576.016, +0.064]": resamples of one repeated value have a rounding residue
    of spread (1e-17), so their t was 1e15. Such resamples have no t and are left out."""
    res = paired_test(np.zeros(len(diff)), diff)
    width = max(diff) - min(diff)
    assert res.mean_low <= res.mean_diff <= res.mean_high
    assert res.mean_diff - res.mean_low < 10 * width and res.mean_high - res.mean_diff < 10 * width
