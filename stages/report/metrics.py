"""Metric rows of a refine run (`metrics.csv`) and the per-prompt views the report needs.

One row per (prompt, variant, seed, metric). Seeds of one prompt are averaged before any
comparison, so the prompt is the unit of every mean, interval and helped/hurt count.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..store import atomic_write_text

METRIC_ORDER = ("clipscore", "image_similarity", "caption_score", "llm_judge")
ITER = re.compile(r"^iter(\d+)$")


@dataclass(frozen=True)
class MetricRow:
    id: str
    category: str
    variant: str      # original | upsampled | iter00, iter01... | best
    seed: int
    metric: str       # clipscore | image_similarity | caption_score | llm_judge
    value: float
    scorer: str       # short identity of the model that gave the value
    note: str = ""


COLUMNS = [f.name for f in fields(MetricRow)]


def write_metrics_csv(rows: Iterable[MetricRow], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "value": repr(float(row.value))})
    atomic_write_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> list[MetricRow]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [MetricRow(id=r["id"], category=r["category"], variant=r["variant"], seed=int(r["seed"]),
                          metric=r["metric"], value=float(r["value"]), scorer=r["scorer"],
                          note=r.get("note") or "")
                for r in csv.DictReader(fh)]


def iteration_index(variant: str) -> int | None:
    m = ITER.match(variant)
    return int(m.group(1)) if m else None


def variant_order(variants: Iterable[str]) -> list[str]:
    """original, upsampled, iter00, iter01, ..., best, first_fresh, best_fresh, then anything
    else alphabetically."""
    def key(v: str) -> tuple:
        i = iteration_index(v)
        fixed = {"original": 0, "upsampled": 1, "best": 3, "first_fresh": 4, "best_fresh": 5}
        return (fixed.get(v, 2 if i is not None else 6), i or 0, v)
    return sorted(set(variants), key=key)


def metric_order(metrics: Iterable[str]) -> list[str]:
    return sorted(set(metrics), key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))


def finite(rows: Iterable[MetricRow]) -> list[MetricRow]:
    return [r for r in rows if math.isfinite(r.value)]


def per_prompt(rows: Iterable[MetricRow], metric: str, variant: str) -> dict[str, float]:
    """Mean over seeds of one metric for one variant, by prompt id."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in finite(rows):
        if r.metric == metric and r.variant == variant:
            acc[r.id].append(r.value)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def paired(rows: Iterable[MetricRow], metric: str, a: str, b: str) -> tuple[list[str], list[float],
                                                                             list[float]]:
    """Per-prompt means of variants a and b over the seeds both have (paired by seed)."""
    values: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in finite(rows):
        if r.metric == metric and r.variant in (a, b):
            values[(r.id, r.variant)][r.seed].append(r.value)
    ids, va, vb = [], [], []
    for pid in sorted({pid for pid, _ in values}):
        sa, sb = values.get((pid, a), {}), values.get((pid, b), {})
        seeds = sorted(set(sa) & set(sb))
        if not seeds:
            continue
        ids.append(pid)
        va.append(sum(sum(sa[s]) / len(sa[s]) for s in seeds) / len(seeds))
        vb.append(sum(sum(sb[s]) / len(sb[s]) for s in seeds) / len(seeds))
    return ids, va, vb


def separate_scorers(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """Rows whose metric was scored by more than one scorer get the scorer in the metric
    name ("clipscore [CLIP a]"), so values of different scorers are never averaged."""
    rows = list(rows)
    scorers: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        scorers[r.metric].add(r.scorer)
    mixed = {m for m, s in scorers.items() if len(s) > 1}
    if not mixed:
        return rows
    return [replace(r, metric=f"{r.metric} [{r.scorer}]") if r.metric in mixed else r for r in rows]


def categories(rows: Iterable[MetricRow]) -> dict[str, str]:
    return {r.id: r.category for r in rows}


def read_traces(run_dir: Path) -> tuple[list[dict], list[str]]:
    """Socratic traces (`socratic/ID.json`) sorted by id, and the files that could not be read."""
    traces, bad = [], []
    folder = Path(run_dir) / "socratic"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            trace = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(trace.get("iterations"), list):
                raise ValueError("no iterations list")
            traces.append(trace)
        except (OSError, ValueError, AttributeError) as exc:
            bad.append(f"{path.name}: {exc}")
    return traces, bad


def stop_kind(trace: dict) -> str:
    """Why a Socratic loop ended: the judge was satisfied, the round cap, or no new prompt."""
    if trace.get("stopped_early"):
        return "judge said it matches"
    if " revision was rejected: " in str(trace.get("stop_reason", "")):
        return "revision rejected"
    if trace.get("stop_reason"):
        return "no new prompt"
    return "reached the round cap"
