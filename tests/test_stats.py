"""Paired bootstrap and summaries on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.stats import bootstrap_mean, paired_bootstrap, summarise


def test_constant_shift_collapses_the_interval_to_the_shift():
    a = np.random.default_rng(0).normal(size=40)
    res = paired_bootstrap(a, a + 0.25)
    assert res.mean_diff == pytest.approx(0.25)
    assert res.ci_low == pytest.approx(0.25) and res.ci_high == pytest.approx(0.25)
    assert (res.n, res.helped, res.hurt, res.tied) == (40, 40, 0, 0)


def test_symmetric_noise_interval_contains_zero_and_is_centred():
    a = np.linspace(0, 1, 60)
    noise = np.tile([-0.3, 0.3, -0.1, 0.1, -0.2, 0.2], 10)
    res = paired_bootstrap(a, a + noise)
    assert res.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert res.ci_low < 0 < res.ci_high
    assert abs(res.ci_low + res.ci_high) < 0.02
    assert (res.helped, res.hurt, res.tied) == (30, 30, 0)


def test_interval_width_matches_the_normal_theory_for_a_large_sample():
    rng = np.random.default_rng(5)
    diff = rng.normal(0.5, 1.0, size=400)
    res = paired_bootstrap(np.zeros(400), diff, n_resamples=20000)
    expected_half = 1.96 * diff.std(ddof=1) / math.sqrt(400)
    assert res.ci_high - res.ci_low == pytest.approx(2 * expected_half, rel=0.08)
    assert res.ci_low < diff.mean() < res.ci_high
    assert res.ci_low > 0.3 and res.ci_high < 0.7


def test_counts_use_the_tie_tolerance():
    a = [1.0, 1.0, 1.0, 1.0, 1.0]
    b = [1.5, 0.5, 1.0 + 1e-9, 1.0 - 1e-3, 1.0]
    res = paired_bootstrap(a, b)
    assert (res.helped, res.hurt, res.tied) == (1, 2, 2)
    loose = paired_bootstrap(a, b, tie_tol=0.01)
    assert (loose.helped, loose.hurt, loose.tied) == (1, 1, 3)
    assert res.share(res.hurt) == pytest.approx(0.4)


def test_zero_and_one_pair_give_nan_intervals_not_errors():
    empty = paired_bootstrap([], [])
    assert empty.n == 0 and math.isnan(empty.mean_diff) and math.isnan(empty.ci_low)
    assert math.isnan(empty.share(0))
    one = paired_bootstrap([1.0], [3.0])
    assert one.n == 1 and one.mean_diff == 2.0 and one.helped == 1
    assert math.isnan(one.ci_low) and math.isnan(one.ci_high)


def test_missing_values_drop_their_pair_and_lengths_must_match():
    res = paired_bootstrap([1.0, float("nan"), 2.0], [2.0, 5.0, float("nan")])
    assert res.n == 1 and res.mean_diff == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], confidence=1.5)


def test_same_seed_same_interval_and_a_wider_confidence_is_wider():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    narrow = paired_bootstrap(a, b, confidence=0.5)
    wide = paired_bootstrap(a, b, confidence=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_summarise_and_bootstrap_mean():
    assert summarise([1.0, 2.0, 3.0, float("nan")]) == (2.0, 1.0, 3)
    mean, std, n = summarise([4.0])
    assert (mean, n) == (4.0, 1) and math.isnan(std)
    assert math.isnan(summarise([])[0])
    m = bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    assert m.mean == 2.5 and m.n == 4 and 1.0 <= m.ci_low < 2.5 < m.ci_high <= 4.0
    assert bootstrap_mean([]).n == 0
