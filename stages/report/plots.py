"""The figures of a refine run (`runs/RUN/plots/*.png`), drawn with matplotlib's Agg backend.

Each plot has a check that says whether the run has the data for it; a plot without data is
not drawn (and a stale file of that name is removed) and the report says why. Panels of
metrics that are not independent of the Socratic loop say so in their title. A p-value in a
title is the report's Holm-adjusted one (stages/report/analysis.py), never a raw one.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..store import atomic_write_bytes
from .analysis import Comparison, analyse, metric_dependence, round_curve
from .metrics import (
    MetricRow,
    iteration_index,
    metric_order,
    paired,
    read_traces,
    separate_scorers,
    stop_kind,
)
from .scorers import Scorer, loop_from_traces
from .stats import DEFAULT_RESAMPLES, mean_ci, number

NOT_INDEPENDENT = "\n(not independent of the loop)"

DPI = 110
COLORS = {"first_fresh": "#9aa5b1", "best_fresh": "#1f6feb", "original": "#9aa5b1",
          "upsampled": "#d9480f"}
STOP_COLORS = {"judge said it matches": "#2f9e44", "reached the round cap": "#868e96",
               "no new prompt": "#f08c00", "revision rejected": "#cf222e"}
TITLES = {
    "score_by_iteration.png": "Change from round 0, by Socratic round (shaped by the stopping rule)",
    "best_vs_first_by_category.png": "Chosen vs first prompt on fresh seeds, by category",
    "early_stop_hist.png": "When the Socratic loop stopped",
    "upsampled_vs_original.png": "Upsampled vs original prompt",
}


@dataclass(frozen=True)
class PlotInfo:
    dependent: set[str]                   # metrics not independent of the loop
    comps: tuple[Comparison, ...]         # the report's headline comparisons (Holm p)
    resamples: int = DEFAULT_RESAMPLES

    def holm_p(self, a: str, b: str, metric: str) -> float:
        return next((c.holm_p for c in self.comps if (c.a, c.b, c.metric) == (a, b, metric)),
                    float("nan"))


def holm_text(p: float) -> str:
    """A Holm p for a title, as the page writes it: "<0.001" rather than "0.000"."""
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _iter_metrics(rows: list[MetricRow]) -> list[str]:
    return metric_order(r.metric for r in rows if iteration_index(r.variant) is not None)


def _panels(plt, n: int, width: float, height: float):
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _figure_legend(fig, ax) -> None:
    """One legend under all panels, where it cannot hide data."""
    fig.tight_layout()
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def score_by_iteration(rows: list[MetricRow], traces: list[dict], path: Path, info: PlotInfo) -> Path:
    """Per round, the paired change from round 0 (median, with its order-statistic interval
    where one exists) over the prompts that reached the round, one panel per metric. Who
    reaches a round is decided by the stopping rule, which saw these images, so the curve is
    shaped by it: the plot says so, and shows how many prompts ran each round."""
    plt = _pyplot()
    metrics = _iter_metrics(rows)
    fig, axes = _panels(plt, len(metrics), 4.6, 3.9)
    for ax, metric in zip(axes, metrics, strict=True):
        curve = round_curve(rows, metric, resamples=info.resamples)
        rounds = list(curve.rounds)
        median = np.array([c.median_diff for c in curve.changes])
        low = np.array([c.ci_low if c.bounded and c.estimable else np.nan for c in curve.changes])
        high = np.array([c.ci_high if c.bounded and c.estimable else np.nan for c in curve.changes])
        ax.axhline(0, color="#495057", linewidth=1)
        ax.fill_between(rounds, low, high, color="#1f6feb", alpha=0.18,
                        label="95% interval of the median change (where one exists)")
        ax.plot(rounds, median, marker="o", color="#1f6feb", label="median change from round 0")
        ax.set_xticks(rounds, [f"{i}\n{k} ran" for i, k in zip(rounds, curve.running, strict=True)])
        ax.set_xlabel(f"round (of {curve.cohort} prompts, only those that reached it);\n"
                      "the stopping rule decides who reaches a round, so it shapes this curve", fontsize=8)
        ax.set_ylabel(f"{metric}: round − round 0")
        ax.set_title(metric + (NOT_INDEPENDENT if metric in info.dependent else ""), fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def best_vs_first_by_category(rows: list[MetricRow], traces: list[dict], path: Path,
                              info: PlotInfo) -> Path:
    """The chosen and the first prompt rendered again on fresh seeds, mean per category, as
    horizontal grouped bars (category names stay readable however many there are); a
    category of one prompt has no interval and gets no error bar (not one of zero width)."""
    plt = _pyplot()
    metrics = [m for m in metric_order(r.metric for r in rows)
               if paired(rows, m, "first_fresh", "best_fresh")[0]]
    cats = sorted({r.category or "(none)" for r in rows if r.variant == "best_fresh"})
    fig, axes = _panels(plt, len(metrics), 4.8, 1.2 + 0.55 * len(cats))
    for ax, metric in zip(axes, metrics, strict=True):
        ids, first, best = paired(rows, metric, "first_fresh", "best_fresh")
        cat_of = {r.id: r.category or "(none)" for r in rows}
        y = np.arange(len(cats))
        for offset, name, values in ((0.2, "first_fresh", first), (-0.2, "best_fresh", best)):
            by_cat = defaultdict(list)
            for pid, v in zip(ids, values, strict=True):
                by_cat[cat_of[pid]].append(v)
            stats = [mean_ci(by_cat.get(c, [])) for c in cats]
            mean = np.array([s.mean for s in stats])
            err = np.array([[s.mean - s.ci_low, s.ci_high - s.mean] for s in stats]).T
            ax.barh(y + offset, np.nan_to_num(mean), height=0.38, color=COLORS[name], xerr=err,
                    capsize=3, label="first prompt" if name == "first_fresh" else "chosen prompt")
        ax.set_yticks(y, [f"{c} (n={len([i for i in ids if cat_of[i] == c])})" for c in cats])
        ax.invert_yaxis()
        ax.set_xlabel(f"mean {metric} on fresh seeds (95% t-interval, descriptive; none for n=1)")
        holm_p = info.holm_p("first_fresh", "best_fresh", metric)
        test = f"\nHolm p{holm_text(holm_p)}" if np.isfinite(holm_p) else ""
        ax.set_title(metric + (NOT_INDEPENDENT if metric in info.dependent else test), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def early_stop_hist(rows: list[MetricRow], traces: list[dict], path: Path, info: PlotInfo) -> Path:
    """Rounds run per prompt, stacked by why the loop ended; and which round was chosen best."""
    plt = _pyplot()
    traces = [t for t in traces if t["iterations"]]
    rounds = sorted({len(t["iterations"]) for t in traces})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    bottom = np.zeros(len(rounds))
    for kind, color in STOP_COLORS.items():
        counts = Counter(len(t["iterations"]) for t in traces if stop_kind(t) == kind)
        heights = np.array([counts.get(r, 0) for r in rounds])
        if heights.any():
            left.bar(rounds, heights, bottom=bottom, color=color, label=kind, width=0.7)
            bottom += heights
    left.set_xticks(rounds)
    left.set_xlabel("rounds run before stopping")
    left.set_ylabel("prompts")
    left.set_title("Rounds per prompt")
    left.legend(fontsize=8)
    best = Counter(int(t["best"]) for t in traces if isinstance(t.get("best"), int))
    picks = list(range(max(rounds)))
    right.bar(picks, [best.get(i, 0) for i in picks], color=COLORS["best_fresh"], width=0.7)
    right.set_xticks(picks)
    right.set_xlabel("round chosen as best (0 = first)")
    right.set_ylabel("prompts")
    right.set_title("Which round was chosen")
    for ax in (left, right):
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(TITLES[path.name])
    fig.tight_layout()
    return _save(fig, path)


def upsampled_vs_original(rows: list[MetricRow], traces: list[dict], path: Path,
                          info: PlotInfo) -> Path:
    """Per-prompt scatter (mean over shared seeds); points above the diagonal improved. The
    title gives the report's figures: median difference, its interval and the Holm p."""
    plt = _pyplot()
    by_metric = {c.metric: c for c in info.comps if (c.a, c.b) == ("original", "upsampled")}
    metrics = [m for m in metric_order(r.metric for r in rows)
               if paired(rows, m, "original", "upsampled")[0] and m in by_metric]
    fig, axes = _panels(plt, len(metrics), 4.0, 4.0)
    for ax, metric in zip(axes, metrics, strict=True):
        _, orig, up = paired(rows, metric, "original", "upsampled")
        comp = by_metric[metric]
        res = comp.result
        ax.scatter(orig, up, s=18, alpha=0.7, color=COLORS["upsampled"], edgecolor="none")
        lo, hi = min(orig + up), max(orig + up)
        pad = (hi - lo) * 0.05 or 0.05
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#495057", linewidth=1,
                linestyle="--", label="no change (points above it improved)")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"{metric}, original prompt")
        ax.set_ylabel(f"{metric}, upsampled prompt")
        ci = (" (interval not estimable: no spread)" if not res.estimable
              else f" [{number(res.ci_low, True)}, {number(res.ci_high, True)}]" if res.bounded
              else " (no 95% interval below 6 prompts)")
        holm = (f"Holm p{holm_text(comp.holm_p)}" if np.isfinite(comp.holm_p)
                else "not tested: scored by a test model" if comp.test_model else "not tested")
        ax.set_title(f"{metric}: median diff {number(res.median_diff, True)}{ci}\n"
                     f"n={res.n}, better {res.helped}, worse {res.hurt}, {holm}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def plot_plan(rows: list[MetricRow], traces: list[dict]) -> dict[str, str]:
    """Plot file name -> '' when it can be drawn, else why not."""
    traces = [t for t in traces if t["iterations"]]
    has_iter = any(iteration_index(r.variant) == 0 and np.isfinite(r.value) for r in rows)
    metrics = metric_order(r.metric for r in rows)
    has_pairs = any(paired(rows, m, "first_fresh", "best_fresh")[0] for m in metrics)
    has_up = any(paired(rows, m, "original", "upsampled")[0] for m in metrics)
    return {
        "score_by_iteration.png": "" if has_iter else "no metric rows for Socratic round 0 (iter00)",
        "best_vs_first_by_category.png": "" if has_pairs else "no prompt has fresh renders of a chosen "
                                                              "prompt other than round 0",
        "early_stop_hist.png": "" if traces else "no Socratic traces with finished rounds",
        "upsampled_vs_original.png": "" if has_up else "no prompt has scores for both original and "
                                                       "upsampled on the same seed",
    }


DRAW: dict[str, Callable[[list[MetricRow], list[dict], Path, PlotInfo], Path]] = {
    "score_by_iteration.png": score_by_iteration,
    "best_vs_first_by_category.png": best_vs_first_by_category,
    "early_stop_hist.png": early_stop_hist,
    "upsampled_vs_original.png": upsampled_vs_original,
}


def write_plots(run_dir: Path, rows: list[MetricRow], *, traces: list[dict] | None = None,
                evaluation: dict[str, Scorer] | None = None,
                resamples: int = DEFAULT_RESAMPLES) -> list[Path]:
    """Draw every plot the run has data for into `run_dir/plots/`; return the files written.
    `traces`: the current Socratic traces (default: every readable one in the run folder);
    `evaluation`: each metric's scorer, to mark metrics not independent of the loop;
    `resamples`: bootstrap resamples of the mean's interval (evaluate.permutations), as in
    the report."""
    run_dir = Path(run_dir)
    rows = separate_scorers(rows)          # as the page: values of two scorers are never paired
    if traces is None:
        traces = read_traces(run_dir)[0]
    loop = loop_from_traces(traces)
    dependent = {m for m in metric_order(r.metric for r in rows)
                 if metric_dependence(m, evaluation or {}, loop)}
    info = PlotInfo(dependent, tuple(analyse(rows, evaluation or {}, loop, resamples=resamples)),
                    resamples)
    folder = run_dir / "plots"
    written = []
    for name, reason in plot_plan(rows, traces).items():
        path = folder / name
        if reason:
            path.unlink(missing_ok=True)
            continue
        written.append(DRAW[name](rows, traces, path, info))
    return written
