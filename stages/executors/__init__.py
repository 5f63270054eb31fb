"""How a stage's pending items run: in this process (`local`) or across a Ray cluster (`ray`).

Both take a prepared, started stage and fill its `StageReport`; the runner is handed one and
never chooses. An executor must record each item's failure with its reason, let a
`FatalError` stop the run, and reuse finished items exactly as the other executor would
(same keys, decided by `triage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from ..config import UndeclaredSetting
from ..errors import FatalError, ItemError
from ..stage import DISK_FULL, Item, RunOptions, Stage, StageReport, in_shard


class Executor(Protocol):
    async def run(self, stage: Stage, options: RunOptions, report: StageReport) -> None:
        """Process the stage's items that are not done yet; count reuses and failures."""


def triage(stage: Stage, item: Item) -> tuple[str, str]:
    """("failed", reason), ("done", key) or ("todo", key) for one listed item.

    A listing error, or a key that cannot be computed (an unreadable tag file, a vanished
    image), fails that item only; a FatalError (and a full disk) stops the run.
    """
    if item.error:
        return "failed", item.error
    try:
        key = stage.key(item)
        return ("done" if stage.is_done(item, key) else "todo"), key
    except (FatalError, UndeclaredSetting):
        raise                                 # the run's problem, or a bug of ours: never an item's
    except ItemError as exc:
        return "failed", str(exc)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full(exc) from None
        return "failed", f"{type(exc).__name__}: {exc}"[:300]
    except Exception as exc:  # one bad item never stops a listing
        return "failed", f"{type(exc).__name__}: {exc}"[:300]


def pending(stage: Stage, options: RunOptions, report: StageReport,
            settled: Callable[[], None] | None = None) -> Iterator[tuple[Item, str]]:
    """The items of this shard that need work, with their keys, listed lazily; failures and
    reuses are counted in `report` on the way (and `settled()` called for each), and
    `--limit` ends the listing (said there)."""
    todo = failed = 0       # the listing's own counts: report.failed also gets the executor's
    for item in stage.items():
        if not in_shard(item.split_on, options.shard):
            report.outside += 1
            continue
        if options.limit and todo + report.reused + failed >= options.limit:
            report.limited = f"--limit {options.limit}"
            return
        state, key_or_reason = triage(stage, item)
        if state == "todo":
            todo += 1
            yield item, key_or_reason
            continue
        if state == "failed":
            failed += 1
            report.failed.append((item.id, key_or_reason))
        else:
            report.reused += 1
        if settled is not None:
            settled()


def disk_full(exc: OSError) -> FatalError:
    return FatalError(f"cannot write output ({exc.strerror}: {exc.filename or '?'}); free some "
                      "space and rerun: finished items are kept")


def outcome(exc: BaseException) -> tuple[str, str]:
    """("fatal", message) for a FatalError or a full disk (they stop the run), else
    ("failed", reason) for that item alone."""
    if isinstance(exc, FatalError):
        return "fatal", str(exc)
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return "fatal", str(disk_full(exc))
    return "failed", str(exc) if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"[:300]


def record(report: StageReport, item_id: str, exc: BaseException) -> None:
    """A failed item's reason in the report (FatalError and a full disk are not items' faults)."""
    if isinstance(exc, FatalError):
        raise exc
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        raise disk_full(exc) from None
    report.failed.append((item_id, outcome(exc)[1]))
