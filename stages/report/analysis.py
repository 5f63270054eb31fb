"""What the report may conclude from a run's metric rows: the paired comparisons with their
tests, which of them may be coloured, per-category breakdowns, and round curves over a
fixed cohort of prompts.

Rules (the README's report section says the same in prose):
- A headline comparison is coloured only when its sign-flip p, Holm-adjusted over every
  headline comparison that is allowed to be coloured, is at most 5%.
- A comparison of Socratic rounds (best vs first) on a metric that is not independent of
  the loop (stages/report/scorers.py) is shown, flagged, never coloured and left out of the family.
- Per-category comparisons are exploratory: unadjusted and never coloured.
- Round curves cover every prompt in every round: a prompt that stopped keeps its last
  score (carried forward), so early stopping cannot shape the curve by who is left.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace

from .metrics import MetricRow, categories, finite, iteration_index, metric_order, paired
from .scorers import Loop, Scorer, dependence
from .stats import DEFAULT_RESAMPLES, MeanCI, PairedResult, directions, mean_ci, paired_test

COMPARISONS = (("original", "upsampled", "upsampled − original"),
               ("iter00", "best", "best − first round"))
LOOP_VARIANTS = ("iter00", "best")


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    label: str
    metric: str
    ids: tuple[str, ...]
    va: tuple[float, ...]
    vb: tuple[float, ...]
    result: PairedResult
    not_independent: tuple[str, ...] = ()     # why it may not be coloured (loop contrasts only)
    flag: str = ""                            # up | down | "" after Holm
    holm_p: float = math.nan

    @property
    def eligible(self) -> bool:
        return not self.not_independent


def metric_dependence(metric: str, evaluation: dict[str, Scorer], loop: Loop) -> list[str]:
    """Why `metric` cannot judge the loop independently (empty when it can)."""
    if not loop.traces:
        return []
    scorer = evaluation.get(metric)
    if scorer is None:
        return ["the report was not told which model scored this metric"]
    return dependence(scorer, loop)


def analyse(rows: list[MetricRow], evaluation: dict[str, Scorer], loop: Loop, *,
            resamples: int = DEFAULT_RESAMPLES) -> list[Comparison]:
    """Every headline comparison the rows support, tested, with Holm-adjusted flags."""
    comps = []
    for a, b, label in COMPARISONS:
        for metric in metric_order(r.metric for r in rows):
            ids, va, vb = paired(rows, metric, a, b)
            if not ids:
                continue
            reasons = metric_dependence(metric, evaluation, loop) if a in LOOP_VARIANTS else []
            comps.append(Comparison(a, b, label, metric, tuple(ids), tuple(va), tuple(vb),
                                    paired_test(va, vb, resamples=resamples), tuple(reasons)))
    flags = directions([c.result for c in comps], [c.eligible for c in comps])
    return [replace(c, flag=flag, holm_p=p) for c, (flag, p) in zip(comps, flags, strict=True)]


def by_category(rows: list[MetricRow], comps: list[Comparison], *,
                resamples: int = DEFAULT_RESAMPLES) -> dict[str, list[PairedResult | None]]:
    """category -> one unadjusted result per comparison (None where the category has none)."""
    cat_of = categories(rows)
    cats = sorted({cat_of.get(i, "") for c in comps for i in c.ids})
    out: dict[str, list[PairedResult | None]] = {}
    for cat in cats:
        cells: list[PairedResult | None] = []
        for c in comps:
            pick = [k for k, i in enumerate(c.ids) if cat_of.get(i, "") == cat]
            cells.append(paired_test([c.va[k] for k in pick], [c.vb[k] for k in pick],
                                     resamples=resamples) if pick else None)
        out[cat] = cells
    return out


@dataclass(frozen=True)
class RoundCurve:
    """Mean score per round over a fixed cohort: every prompt with a round 0, each carrying
    its last score forward after its loop stopped."""

    rounds: tuple[int, ...]
    stats: tuple[MeanCI, ...]
    running: tuple[int, ...]      # prompts that actually ran each round
    cohort: int


def round_curve(rows: list[MetricRow], metric: str) -> RoundCurve:
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in finite(rows):
        i = iteration_index(r.variant)
        if r.metric == metric and i is not None:
            scores[r.id][i].append(r.value)
    ids = sorted(pid for pid, by_round in scores.items() if 0 in by_round)
    if not ids:
        return RoundCurve((), (), (), 0)
    last = max(i for pid in ids for i in scores[pid])
    rounds = tuple(range(last + 1))
    columns: list[list[float]] = [[] for _ in rounds]
    running = [0] * len(rounds)
    for pid in ids:
        value = math.nan
        for i in rounds:
            if i in scores[pid]:
                value = sum(scores[pid][i]) / len(scores[pid][i])
                running[i] += 1
            columns[i].append(value)
    return RoundCurve(rounds, tuple(mean_ci(col) for col in columns), tuple(running), len(ids))
