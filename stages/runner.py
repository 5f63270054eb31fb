"""The loop over a program's stages: skip, select, dry-run plans, and the run summary.

Which stages exist is the registry's business and how items run is the executor's; this
module only walks the stages in order, asks the executor it is handed to process each,
and reports what happened.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from .executors import Executor, pending
from .stage import MAX_LISTED_FAILURES, Context, RunOptions, Stage, StageReport
from .store import atomic_write_json


def _dry_run(stage: Stage, options: RunOptions) -> StageReport:
    """Count what a run would do, item by item, without calling or writing anything."""
    from .executors import outcome

    report = StageReport(stage.name, state="planned")
    for item, _ in pending(stage, options, report):
        try:
            stage.precheck(item)
            report.ok += 1
        except Exception as exc:  # what the run would record for this item
            state, reason = outcome(exc)
            if state == "fatal":
                raise
            report.failed.append((item.id, reason))
    return report


def _say_when_empty(stage: Stage, report: StageReport, instead: str = "") -> None:
    """A stage with no items says so (or, in a plan, that it waits for earlier stages); when
    --shard left them all to other parts, it says that, not that the input is empty."""
    if not (report.ok or report.reused or report.failed or report.limited):
        if report.outside:                # listed, but all in other parts
            index, count = stage.ctx.options.shard
            instead = (f"--shard {index}/{count} holds none of its {report.outside} items "
                       "(they are split by id; run fewer parts or without --shard)")
        report.note = "; ".join(filter(None, (instead or stage.nothing_found(), report.note)))


async def run_stages(stages: list[Stage], ctx: Context, executor: Executor,
                     reports: list[StageReport] | None = None) -> list[StageReport]:
    """Run the selected, enabled stages in order with `executor`; one report per stage,
    appended to `reports` as each stage starts (an interrupted run's caller reads them)."""
    options = ctx.options
    reports = [] if reports is None else reports
    try:
        for stage in stages:
            report = StageReport(stage.name)
            reports.append(report)
            if options.only and stage.name not in options.only:
                report.state = "not selected"
                continue
            if stage.skip:
                report.state = "skipped"
                report.note = stage.missing_inputs()
                if stage.name in options.only:    # asked for by name: say what holds it back
                    report.note = "; ".join(filter(None, (
                        f"{stage.name}.skip = true, which --only does not override: add "
                        f"--set {stage.name}.skip=false to run it", report.note)))
                continue
            stage.prepare()
            await stage.start()
            if options.dry_run:
                reports[-1] = report = _dry_run(stage, options)
                report.note = "; ".join(stage.plan())
                report.limited = "; ".join(filter(None, (stage.limited(), report.limited)))
                waiting = any(r.state == "planned" and r.ok for r in reports[:-1])
                _say_when_empty(stage, report, "its items come from the earlier stages of this plan"
                                if waiting else "")
                continue
            stage.begin()
            started = time.monotonic()
            try:
                await executor.run(stage, options, report)
            finally:
                report.seconds = time.monotonic() - started
                report.limited = "; ".join(filter(None, (stage.limited(), report.limited)))
                stage.finish(report)
                _say_when_empty(stage, report)
    finally:
        await ctx.aclose()
    return reports


def write_summary(path: Path, ctx: Context, reports: list[StageReport]) -> None:
    """Written last, so an interrupted run leaves no summary claiming success."""
    atomic_write_json(path, {
        "program": ctx.program, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"captions": str(ctx.cfg.paths.captions)} if ctx.program == "caption" else {}),
        "calls": ctx.stats.as_dict(),
        "stages": [{"name": r.name, "state": r.state, "ok": r.ok, "reused": r.reused,
                    "failed": [{"id": i, "reason": why} for i, why in r.failed],
                    "seconds": round(r.seconds, 3), "note": r.note, "limited": r.limited}
                   for r in reports],
    })


def format_interrupted(reports: list[StageReport]) -> list[str]:
    """What an interrupted run had done: per stage that ran, items finished now, kept from
    earlier runs (reused) and failed, and for the stage that was running, how many are left."""
    ran = [r for r in reports if r.state == "ran"]
    if not ran:
        return ["interrupted before any stage started"]
    lines = [f"interrupted during the {ran[-1].name} stage"]
    for r in ran:
        line = f"  {r.name}: {r.ok} finished, {r.reused} kept (reused), {len(r.failed)} failed"
        if r is ran[-1] and r.total is not None:
            left = max(r.total - r.ok - r.reused - len(r.failed), 0)
            line = (f"  {r.name}: {r.ok} of {r.total} finished, {r.reused} kept (reused), "
                    f"{len(r.failed)} failed, {left} not done")
        lines.append(line)
    return lines


def format_summary(ctx: Context, reports: list[StageReport]) -> Iterator[str]:
    dry = ctx.options.dry_run
    for r in reports:
        if r.state in ("skipped", "not selected"):
            line = f"{r.name}: {r.state}"
            if r.note:
                line += f" ({r.note})"
            yield line
        elif dry:
            yield (f"{r.name}: would process {r.ok}, reuse {r.reused}"
                   + (f", fail {len(r.failed)}" if r.failed else "")
                   + (f" (cut by {r.limited})" if r.limited else "")
                   + (f" [{r.note}]" if r.note else ""))
            for item_id, reason in r.failed[:MAX_LISTED_FAILURES]:
                yield f"  WOULD FAIL {item_id}: {reason}"
        else:
            yield (f"{r.name}: {r.ok} ok, {r.reused} reused, {len(r.failed)} failed"
                   f" ({r.seconds:.1f} s)" + (f"; cut by {r.limited}" if r.limited else "")
                   + (f"; {r.note}" if r.note else ""))
            for item_id, reason in r.failed[:MAX_LISTED_FAILURES]:
                yield f"  FAILED {item_id}: {reason}"
            if len(r.failed) > MAX_LISTED_FAILURES:
                yield f"  ... and {len(r.failed) - MAX_LISTED_FAILURES} more (see the summary file)"
    if not dry:
        s = ctx.stats
        yield f"model calls: {s.calls} made, {s.cache_hits} answered from cache, {s.retries} retries"
