"""Report: from per-prompt scores to the page.

One entry point per job (imported on first use, so importing the package stays light):
- `MetricRow`, `write_metrics_csv`, `read_metrics_csv`: the rows of `metrics.csv` (`metrics`);
- `paired_test`, `directions`: the paired statistic the page colours by (`stats`: exact sign
  test, order-statistic interval of the median, Holm);
- `analyse`: every headline comparison a run's rows support, tested and Holm-flagged
  (`analysis`);
- `loop_from_traces`: which models ran the Socratic loop (`scorers`);
- `write_plots`, `write_report_html`, `write_compare_html`: the figures and pages (`plots`,
  `page`).
Nothing here imports a stage module.
"""

from __future__ import annotations

from importlib import import_module

ENTRY_POINTS = {
    "MetricRow": "metrics", "write_metrics_csv": "metrics", "read_metrics_csv": "metrics",
    "paired_test": "stats", "directions": "stats",
    "analyse": "analysis",
    "loop_from_traces": "scorers",
    "write_plots": "plots",
    "write_report_html": "page", "write_compare_html": "page",
}
__all__ = sorted(ENTRY_POINTS)


def __getattr__(name: str):
    if name not in ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{ENTRY_POINTS[name]}", __name__), name)
