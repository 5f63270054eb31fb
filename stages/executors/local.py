"""The local executor: a stage's pending items with bounded asyncio concurrency.

Items are taken from the stage's lazy listing as slots free up (never all at once), so
memory stays flat on any folder size. A failure is recorded with its reason and the batch
goes on; a `FatalError` (server unreachable, weights missing, disk full) stops the run.
"""

from __future__ import annotations

import asyncio
import sys

from ..stage import Item, RunOptions, Stage, StageReport
from . import pending, record


class LocalExecutor:
    async def run(self, stage: Stage, options: RunOptions, report: StageReport) -> None:
        await _run_stage(stage, options, report)


async def _run_stage(stage: Stage, options: RunOptions, report: StageReport) -> None:
    from tqdm import tqdm

    total = stage.count()
    if options.limit and total is not None:
        total = min(total, options.limit)
    report.total = total
    bar = tqdm(total=total, desc=stage.name, unit="item", file=sys.stderr, leave=True,
               disable=options.quiet or not stage.cfg.run.progress, dynamic_ncols=True)

    bookkeeping = type(stage).completed is not Stage.completed

    async def handle(item: Item, key: str) -> None:
        try:
            await stage.process(item, key)
            if bookkeeping:
                await asyncio.to_thread(stage.completed, item.id)
            report.ok += 1
        except Exception as exc:  # one bad item never stops a batch (record re-raises fatal ones)
            record(report, item.id, exc)
        bar.update(1)             # not when cancelled (Ctrl-C): the bar shows what finished

    running: set[asyncio.Task] = set()
    try:
        for item, key in pending(stage, options, report, settled=lambda: settled(bar)):
            while len(running) >= stage.in_flight:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                _settle(done)
            running.add(asyncio.create_task(handle(item, key)))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            _settle(done)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        bar.close()


def settled(bar) -> None:
    """Move the bar for an item settled at listing (reused, or failed before any work)
    without feeding tqdm's rate: the rate and the ETA come from items processed now, so
    thousands of reused items do not promise a finish in seconds. They count as tqdm's
    `initial` (what a resumed bar starts from)."""
    if bar.disable:
        return
    bar.n += 1
    bar.initial += 1
    bar.last_print_n += 1
    now = bar._time()
    if now - bar.last_print_t >= bar.mininterval:
        bar.refresh()
        bar.last_print_t = now


def _settle(done: set[asyncio.Task]) -> None:
    """Collect every finished task's outcome (none left unretrieved); raise the first error."""
    errors = [task.exception() for task in done]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
