"""The stage interface and the loop that runs stages: skip, resume, shard, concurrency.

A stage lists its items lazily, computes each item's key (a hash of everything its output
depends on), and processes only the items whose output is missing or was made from other
inputs. Items run with bounded concurrency; a failure is recorded with its reason and the
batch goes on. A `FatalError` (server unreachable, weights missing) stops the run at once.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.chat import CallStats, ChatBackend
from .config import Config
from .errors import ConfigError, FatalError, ItemError
from .store import CallCache, atomic_write_json
from .templates import PromptTemplate, load_template

MAX_LISTED_FAILURES = 50
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class Item:
    """One unit of work: `id` is stable across runs and is what shards split on."""

    id: str
    data: Any = None


@dataclass
class StageReport:
    name: str
    state: str = "ran"                    # ran | skipped | not selected
    ok: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class RunOptions:
    only: tuple[str, ...] = ()
    limit: int = 0
    shard: tuple[int, int] = (0, 1)
    dry_run: bool = False
    quiet: bool = False


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < N, e.g. 0/4 ... 3/4")
    return index, count


def in_shard(item_id: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    if count == 1:
        return True
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class Context:
    """Everything a run shares: config, caches, counters and lazily built backends."""

    def __init__(self, cfg: Config, *, program: str, options: RunOptions,
                 overrides: tuple[str, ...] = ()):
        self.cfg = cfg
        self.program = program
        self.options = options
        self.overrides = overrides          # --set values, for executors that rebuild the config
        self.stats = CallStats()
        self.calls = CallCache(cfg.paths.cache / "calls")
        self._resources: dict[str, Any] = {}
        self._templates: dict[Path, PromptTemplate] = {}

    @property
    def run_dir(self) -> Path:
        return self.cfg.paths.runs / self.cfg.run.name

    def template(self, path: Path, key: str, allowed: set[str] | None = None) -> PromptTemplate:
        if path not in self._templates:
            self._templates[path] = load_template(path, key, allowed)
        return self._templates[path]

    def resource(self, name: str, factory: Callable[[], Any]) -> Any:
        """Build a backend on first use and keep it for the run (closed at the end)."""
        if name not in self._resources:
            self._resources[name] = factory()
        return self._resources[name]

    def chat(self) -> ChatBackend:
        def build() -> ChatBackend:
            cls = ChatBackend
            if self.cfg.llm.backend == "vllm":
                from .backends.vllm_local import VllmChat as cls
            return cls(self.cfg.llm, self.calls, self.stats, cache_dir=self.cfg.paths.cache)
        return self.resource("chat", build)

    async def aclose(self) -> None:
        for resource in reversed(list(self._resources.values())):
            closer = getattr(resource, "aclose", None) or getattr(resource, "close", None)
            if closer is None:
                continue
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self._resources.clear()


class Stage(ABC):
    """A step that turns files on disk into other files on disk, item by item."""

    name: str = ""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.cfg = ctx.cfg

    @property
    def skip(self) -> bool:
        return bool(getattr(self.cfg.section(self.name), "skip", False))

    llm_bound = False       # True when items mostly wait on LLM requests

    @property
    def concurrency(self) -> int:
        return self.cfg.llm.concurrency

    @property
    def in_flight(self) -> int:
        """Items processed at once. LLM-bound stages keep twice as many items as request
        slots (the backend bounds requests to llm.concurrency), so one item's file work
        overlaps the others' requests and the server never waits for us."""
        return self.concurrency * 2 if self.llm_bound else self.concurrency

    @abstractmethod
    def items(self) -> Iterable[Item]:
        """The stage's inputs, lazily, in a stable order."""

    def count(self) -> int | None:
        """Number of items if cheap to know (for the progress bar), else None."""
        return None

    @abstractmethod
    def key(self, item: Item) -> str:
        """Hash of everything the item's output depends on."""

    @abstractmethod
    def is_done(self, item: Item, key: str) -> bool:
        """True when the item's output exists and was made from `key`."""

    @abstractmethod
    async def process(self, item: Item, key: str) -> None:
        """Make the item's output; raise ItemError with a reason when it cannot."""

    def prepare(self) -> None:
        """Checks and set-up before the first item (load templates, validate inputs)."""

    def missing_inputs(self) -> str:
        """Why this stage could not run now (used to warn when an earlier stage is skipped)."""
        return ""

    def plan(self) -> list[str]:
        """Lines for --dry-run: which backends and settings the stage would use."""
        return []

    def flush(self) -> None:
        """Persist anything buffered in memory (called after each batch by executors)."""

    def finish(self, report: StageReport) -> None:
        """Work after all items (indexes, reports). Runs also when some items failed."""


async def _run_stage(stage: Stage, options: RunOptions, report: StageReport) -> None:
    from tqdm import tqdm

    total = stage.count()
    if options.limit and total is not None:
        total = min(total, options.limit)
    bar = tqdm(total=total, desc=stage.name, unit="item", file=sys.stderr, leave=True,
               disable=options.quiet or not stage.cfg.run.progress, dynamic_ncols=True)

    async def handle(item: Item) -> None:
        try:
            key = stage.key(item)
            if stage.is_done(item, key):
                report.reused += 1
            else:
                await stage.process(item, key)
                report.ok += 1
        except FatalError:
            raise
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise FatalError(f"cannot write output ({exc.strerror}: {exc.filename or '?'}); "
                                 "free some space and rerun: finished items are kept") from None
            report.failed.append((item.id, f"{type(exc).__name__}: {exc}"[:300]))
        except ItemError as exc:
            report.failed.append((item.id, str(exc)))
        except Exception as exc:  # one bad item never stops a batch
            report.failed.append((item.id, f"{type(exc).__name__}: {exc}"[:300]))
        finally:
            bar.update(1)

    pending: set[asyncio.Task] = set()
    taken = 0
    try:
        for item in stage.items():
            if not in_shard(item.id, options.shard):
                continue
            if options.limit and taken >= options.limit:
                break
            taken += 1
            while len(pending) >= stage.in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                _settle(done)
            pending.add(asyncio.create_task(handle(item)))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            _settle(done)
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        bar.close()


def _settle(done: set[asyncio.Task]) -> None:
    """Collect every finished task's outcome (none left unretrieved); raise the first error."""
    errors = [task.exception() for task in done]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def _dry_run(stage: Stage, options: RunOptions) -> StageReport:
    report = StageReport(stage.name, state="planned")
    todo = 0
    for item in stage.items():
        if not in_shard(item.id, options.shard):
            continue
        if options.limit and todo + report.reused >= options.limit:
            break
        if stage.is_done(item, stage.key(item)):
            report.reused += 1
        else:
            todo += 1
    report.ok = todo
    return report


async def run_stages(stages: list[Stage], ctx: Context) -> list[StageReport]:
    """Run the selected, enabled stages in order; return one report per stage."""
    options = ctx.options
    reports = []
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
                continue
            stage.prepare()
            if options.dry_run:
                reports[-1] = _dry_run(stage, options)
                reports[-1].note = "; ".join(stage.plan())
                continue
            started = time.monotonic()
            try:
                if ctx.cfg.run.executor == "ray":
                    from .ray_exec import run_stage_on_ray

                    await asyncio.to_thread(run_stage_on_ray, stage, report, options)
                else:
                    await _run_stage(stage, options, report)
            finally:
                report.seconds = time.monotonic() - started
                stage.finish(report)
    finally:
        await ctx.aclose()
    return reports


def write_summary(path: Path, ctx: Context, reports: list[StageReport]) -> None:
    """Written last, so an interrupted run leaves no summary claiming success."""
    atomic_write_json(path, {
        "program": ctx.program, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "calls": ctx.stats.as_dict(),
        "stages": [{"name": r.name, "state": r.state, "ok": r.ok, "reused": r.reused,
                    "failed": [{"id": i, "reason": why} for i, why in r.failed],
                    "seconds": round(r.seconds, 3), "note": r.note} for r in reports],
    })


def format_summary(ctx: Context, reports: list[StageReport]) -> Iterator[str]:
    dry = ctx.options.dry_run
    for r in reports:
        if r.state in ("skipped", "not selected"):
            line = f"{r.name}: {r.state}"
            if r.note:
                line += f" ({r.note})"
            yield line
        elif dry:
            yield f"{r.name}: would process {r.ok}, reuse {r.reused}" + (
                f" [{r.note}]" if r.note else "")
        else:
            yield (f"{r.name}: {r.ok} ok, {r.reused} reused, {len(r.failed)} failed"
                   f" ({r.seconds:.1f} s)" + (f"; {r.note}" if r.note else ""))
            for item_id, reason in r.failed[:MAX_LISTED_FAILURES]:
                yield f"  FAILED {item_id}: {reason}"
            if len(r.failed) > MAX_LISTED_FAILURES:
                yield f"  ... and {len(r.failed) - MAX_LISTED_FAILURES} more (see the summary file)"
    if not dry:
        s = ctx.stats
        yield f"model calls: {s.calls} made, {s.cache_hits} answered from cache, {s.retries} retries"
