"""The figures of a refine run (`runs/RUN/plots/*.png`), drawn with matplotlib's Agg backend.

Each plot has a check that says whether the run has the data for it; a plot without data is
not drawn (and a stale file of that name is removed) and the report says why. Panels of
metrics that are not independent of the Socratic loop say so in their title.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..store import atomic_write_bytes
from .analysis import metric_dependence, round_curve
from .metrics import MetricRow, iteration_index, metric_order, paired, per_prompt, read_traces, stop_kind
from .scorers import Scorer, loop_from_traces
from .stats import DEFAULT_RESAMPLES, mean_ci, paired_test, summarise

NOT_INDEPENDENT = "\n(not independent of the loop)"

DPI = 110
COLORS = {"iter00": "#9aa5b1", "best": "#1f6feb", "original": "#9aa5b1", "upsampled": "#d9480f"}
STOP_COLORS = {"judge said it matches": "#2f9e44", "reached the round cap": "#868e96",
               "no new prompt": "#f08c00"}
TITLES = {
    "score_by_iteration.png": "Scores by Socratic round",
    "best_vs_first_by_category.png": "Best round vs first round, by category",
    "early_stop_hist.png": "When the Socratic loop stopped",
    "upsampled_vs_original.png": "Upsampled vs original prompt",
}


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


def score_by_iteration(rows: list[MetricRow], traces: list[dict], path: Path,
                       dependent: set[str], resamples: int = DEFAULT_RESAMPLES) -> Path:
    """Mean per round over a fixed cohort (every prompt with a round 0, carrying its last score
    forward after its loop stopped) with a 95% t band, one panel per metric (their scales
    differ: CLIPScore 0-2.5, cosines 0-1, the judge 1-10), and the mean of the chosen best.
    No band where there is no interval (a cohort of one prompt): never a band of zero width."""
    plt = _pyplot()
    metrics = _iter_metrics(rows)
    fig, axes = _panels(plt, len(metrics), 4.6, 3.8)
    for ax, metric in zip(axes, metrics, strict=True):
        curve = round_curve(rows, metric)
        rounds = list(curve.rounds)
        mean = np.array([s.mean for s in curve.stats])
        low = np.array([s.ci_low for s in curve.stats])
        high = np.array([s.ci_high for s in curve.stats])
        ax.fill_between(rounds, low, high, color="#1f6feb", alpha=0.18, label="95% t-interval of the mean")
        ax.plot(rounds, mean, marker="o", color="#1f6feb", label="mean over the cohort")
        best_mean, _, best_n = summarise(list(per_prompt(rows, metric, "best").values()))
        if best_n:
            ax.axhline(best_mean, color="#d9480f", linestyle="--", label="mean of chosen best")
        ax.set_xticks(rounds, [f"{i}\n{k} ran" for i, k in zip(rounds, curve.running, strict=True)])
        ax.set_xlabel(f"round: all {curve.cohort} prompts in every round;\n"
                      "a prompt that stopped keeps its last score", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(metric + (NOT_INDEPENDENT if metric in dependent else ""), fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def best_vs_first_by_category(rows: list[MetricRow], traces: list[dict], path: Path,
                              dependent: set[str], resamples: int = DEFAULT_RESAMPLES) -> Path:
    """Horizontal grouped bars (category names stay readable however many there are); a
    category of one prompt has no interval and gets no error bar (not one of zero width)."""
    plt = _pyplot()
    metrics = [m for m in _iter_metrics(rows) if paired(rows, m, "iter00", "best")[0]]
    cats = sorted({r.category or "(none)" for r in rows if r.variant == "best"})
    fig, axes = _panels(plt, len(metrics), 4.8, 1.2 + 0.55 * len(cats))
    for ax, metric in zip(axes, metrics, strict=True):
        ids, first, best = paired(rows, metric, "iter00", "best")
        cat_of = {r.id: r.category or "(none)" for r in rows}
        y = np.arange(len(cats))
        for offset, name, values in ((0.2, "iter00", first), (-0.2, "best", best)):
            by_cat = defaultdict(list)
            for pid, v in zip(ids, values, strict=True):
                by_cat[cat_of[pid]].append(v)
            stats = [mean_ci(by_cat.get(c, [])) for c in cats]
            mean = np.array([s.mean for s in stats])
            err = np.array([[s.mean - s.ci_low, s.ci_high - s.mean] for s in stats]).T
            ax.barh(y + offset, np.nan_to_num(mean), height=0.38, color=COLORS[name],
                    xerr=err, capsize=3, label="first round" if name == "iter00" else "best")
        ax.set_yticks(y, [f"{c} (n={len([i for i in ids if cat_of[i] == c])})" for c in cats])
        ax.invert_yaxis()
        ax.set_xlabel(f"mean {metric} (95% t-interval; none for n=1)")
        ax.set_title(metric + (NOT_INDEPENDENT if metric in dependent else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def early_stop_hist(rows: list[MetricRow], traces: list[dict], path: Path, dependent: set[str],
                    resamples: int = DEFAULT_RESAMPLES) -> Path:
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
    right.bar(picks, [best.get(i, 0) for i in picks], color=COLORS["best"], width=0.7)
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
                          dependent: set[str], resamples: int = DEFAULT_RESAMPLES) -> Path:
    """Per-prompt scatter (mean over shared seeds); points above the diagonal improved. The
    test in the title is the report's (evaluate.permutations sign patterns)."""
    plt = _pyplot()
    metrics = [m for m in metric_order(r.metric for r in rows)
               if paired(rows, m, "original", "upsampled")[0]]
    fig, axes = _panels(plt, len(metrics), 4.0, 4.0)
    for ax, metric in zip(axes, metrics, strict=True):
        _, orig, up = paired(rows, metric, "original", "upsampled")
        res = paired_test(orig, up, resamples=resamples)
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
        ci = (f" [{res.ci_low:+.3f}, {res.ci_high:+.3f}]" if res.bounded
              else " (no 95% interval below 6 prompts)")
        ax.set_title(f"{metric}: mean diff {res.mean_diff:+.3f}{ci}\n"
                     f"n={res.n}, better {res.helped}, worse {res.hurt}, sign-flip p={res.p_value:.3f}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(TITLES[path.name])
    _figure_legend(fig, axes[0])
    return _save(fig, path)


def plot_plan(rows: list[MetricRow], traces: list[dict]) -> dict[str, str]:
    """Plot file name -> '' when it can be drawn, else why not."""
    traces = [t for t in traces if t["iterations"]]
    has_iter = any(round_curve(rows, m).cohort for m in _iter_metrics(rows))
    has_pairs = any(paired(rows, m, "iter00", "best")[0] for m in _iter_metrics(rows))
    has_up = any(paired(rows, m, "original", "upsampled")[0] for m in metric_order(r.metric for r in rows))
    return {
        "score_by_iteration.png": "" if has_iter else "no metric rows for Socratic round 0 (iter00)",
        "best_vs_first_by_category.png": "" if has_pairs else "no prompt has scores for both iter00 and best",
        "early_stop_hist.png": "" if traces else "no Socratic traces with finished rounds",
        "upsampled_vs_original.png": "" if has_up else "no prompt has scores for both original and "
                                                       "upsampled on the same seed",
    }


DRAW: dict[str, Callable[[list[MetricRow], list[dict], Path, set[str], int], Path]] = {
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
    `resamples`: sign patterns per test (evaluate.permutations), as in the report."""
    run_dir = Path(run_dir)
    if traces is None:
        traces = read_traces(run_dir)[0]
    loop = loop_from_traces(traces)
    dependent = {m for m in metric_order(r.metric for r in rows)
                 if metric_dependence(m, evaluation or {}, loop)}
    folder = run_dir / "plots"
    written = []
    for name, reason in plot_plan(rows, traces).items():
        path = folder / name
        if reason:
            path.unlink(missing_ok=True)
            continue
        written.append(DRAW[name](rows, traces, path, dependent, resamples))
    return written
