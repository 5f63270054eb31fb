"""What the report may conclude from a run's metric rows: the paired comparisons with their
tests, which of them may be coloured, per-category breakdowns, and round curves over a
fixed cohort of prompts.

Rules (the README's report section says the same in prose):
- A headline comparison is coloured only when its exact sign test, Holm-adjusted over every
  headline comparison that is allowed to be coloured, is at most 5% and the median interval
  lies on the same side of 0 (stats.flag).
- "best − first" compares the chosen and the first prompt rendered again on fresh seeds
  (variants best_fresh and first_fresh), which took no part in selection or stopping; only
  prompts whose chosen round is not round 0 are pairs (the others compare a prompt with
  itself).
- A comparison of Socratic prompts on a metric that is not independent of the loop
  (stages/report/scorers.py) is shown, flagged, never coloured and left out of the family.
- A metric scored by a test model (the random `tiny` CLIP) is shown with the page's banner,
  never coloured and left out of the family: its scores say nothing about the prompts.
- Per-category comparisons are exploratory: unadjusted and never coloured.
- Round curves show the paired change from round 0 among the prompts that reached each
  round. Which prompts reach a round is decided by the stopping rule, which looked at the
  scores' own images, so the curve is shaped by it and is no test (the plot says so).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace

from .metrics import MetricRow, categories, finite, iteration_index, metric_order, paired
from .scorers import Loop, Scorer, dependence, test_model
from .stats import DEFAULT_RESAMPLES, PairedResult, directions, paired_test

COMPARISONS = (("original", "upsampled", "upsampled − original"),
               ("first_fresh", "best_fresh", "best − first (fresh seeds)"))
LOOP_VARIANTS = ("first_fresh", "best_fresh")


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
    test_model: str = ""                      # why its scorer is a test model ('' when it is not)

    @property
    def eligible(self) -> bool:
        return not self.not_independent and not self.test_model


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
                                    paired_test(va, vb, resamples=resamples), tuple(reasons),
                                    test_model=test_model(evaluation.get(metric))))
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
class LoopChoice:
    """How many finished loops chose a round other than round 0: only those give a
    best − first pair."""

    loops: int
    moved: int


def loop_choice(traces: list[dict]) -> LoopChoice:
    done = [t for t in traces if isinstance(t.get("best"), int)]
    return LoopChoice(len(done), sum(t["best"] != 0 for t in done))


@dataclass(frozen=True)
class RoundCurve:
    """Per round i >= 1: the change from round 0 (score_i - score_0) of the prompts whose loop
    reached round i; round 0 is 0 for every prompt. Who reaches a round is decided by the
    stopping rule, so the curve is shaped by it."""

    rounds: tuple[int, ...]
    changes: tuple[PairedResult, ...]     # round 0 vs round i over the prompts that ran round i
    running: tuple[int, ...]              # prompts that ran each round
    cohort: int                           # prompts with a round 0


def round_curve(rows: list[MetricRow], metric: str, resamples: int = 1000) -> RoundCurve:
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
    mean = {pid: {i: sum(v) / len(v) for i, v in scores[pid].items()} for pid in ids}
    changes, running = [], []
    for i in rounds:
        ran = [pid for pid in ids if i in mean[pid]]
        running.append(len(ran))
        changes.append(paired_test([mean[p][0] for p in ran], [mean[p][i] for p in ran],
                                   resamples=resamples))
    return RoundCurve(rounds, tuple(changes), tuple(running), len(ids))
