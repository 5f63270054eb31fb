"""What a stage is: items, keys, reports, run options and the shared run context.

A stage lists its items lazily, computes each item's key (a hash of everything its output
depends on), and processes only the items whose output is missing or was made from other
inputs. Executors (`stages/executors/`) decide how the pending items run; the runner
decides which stages run. Nothing here imports either of them.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.chat import CallStats, ChatBackend
from .config import Config
from .errors import ConfigError
from .store import CallCache
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


